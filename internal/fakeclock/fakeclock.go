// Package fakeclock is a manual clock for deterministic tests of code that
// takes an engine.Clock: time moves only when the test calls Advance, and
// timers fire synchronously, in deadline order, inside Advance.
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

// Advance moves the clock forward by d, running every timer that falls due
// at its own deadline (the clock reads that deadline while it runs).
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	target := c.now.Add(d)
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
		delete(c.timers, next)
		if next.when.After(c.now) {
			c.now = next.when
		}
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

type timer struct {
	c    *Clock
	f    func()
	when time.Time
	seq  uint64
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
