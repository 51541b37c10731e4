// Package fakeclock is a manual clock for deterministic tests of code that
// takes an engine.Clock: time moves only when the test calls Advance, and
// timers fire synchronously, in deadline order (ties in the order they were
// armed), inside Advance. With BeforeDeadline it behaves as the clock of a
// replica driven by a log: a hook runs at each deadline before its timers.
package fakeclock

import (
	"sync"
	"time"

	"github.com/mutexd/mutexd/internal/engine"
)

// Clock is a fake engine.Clock. The zero value is not usable; call New.
type Clock struct {
	mu     sync.Mutex // guards the following
	now    time.Time
	seq    uint64
	timers map[*timer]struct{}
	before func() // BeforeDeadline's hook; nil when none
}

var _ engine.Clock = (*Clock)(nil)

// New returns a clock reading start.
func New(start time.Time) *Clock {
	return &Clock{now: start, timers: make(map[*timer]struct{})}
}

// Now returns the clock's current time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// AfterFunc schedules f to run inside the Advance that passes now+d.
func (c *Clock) AfterFunc(d time.Duration, f func()) engine.Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &timer{c: c, f: f}
	c.scheduleLocked(t, d)
	return t
}

func (c *Clock) scheduleLocked(t *timer, d time.Duration) {
	c.seq++
	t.when, t.seq = c.now.Add(d), c.seq
	c.timers[t] = struct{}{}
}

// BeforeDeadline makes Advance call f each time it reaches the deadline of
// a due timer, with the clock reading that deadline, before any timer due
// then runs. It is how a replica driven by a log runs its timers
// (internal/cluster calls engine.ExpireDue there), so tests of snapshots
// can drive an engine exactly as a replica does. f may use the clock.
func (c *Clock) BeforeDeadline(f func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.before = f
}

// Advance moves the clock forward by d, running every timer that falls due
// at its own deadline (the clock reads that deadline while it runs), in
// (deadline, arming order).
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	target := c.now.Add(d)
	var hooked time.Time // the last deadline the BeforeDeadline hook ran at
	hasHooked := false
	for {
		var next *timer
		for t := range c.timers {
			if !t.when.After(target) && (next == nil || t.when.Before(next.when) || (t.when.Equal(next.when) && t.seq < next.seq)) {
				next = t
			}
		}
		if next == nil {
			break
		}
		if next.when.After(c.now) {
			c.now = next.when
		}
		if f := c.before; f != nil && (!hasHooked || c.now.After(hooked)) {
			hooked, hasHooked = c.now, true
			c.mu.Unlock()
			f()
			c.mu.Lock()
			continue // f may have stopped or armed timers: look again
		}
		delete(c.timers, next)
		c.mu.Unlock()
		next.f()
		c.mu.Lock()
	}
	c.now = target
	c.mu.Unlock()
}

// Pending returns the number of armed timers.
func (c *Clock) Pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.timers)
}

// timer is an armed or stopped timer of Clock. It implements Seq, which
// the engine's snapshots use to re-arm timers in their firing order.
type timer struct {
	c    *Clock
	f    func()
	when time.Time
	seq  uint64
}

// Seq is the timer's place among timers with the same deadline: they fire
// in increasing Seq. Every AfterFunc and Reset takes the next one.
func (t *timer) Seq() uint64 {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	return t.seq
}

func (t *timer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	_, ok := t.c.timers[t]
	delete(t.c.timers, t)
	return ok
}

func (t *timer) Reset(d time.Duration) bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	_, ok := t.c.timers[t]
	t.c.scheduleLocked(t, d)
	return ok
}
