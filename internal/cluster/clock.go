package cluster

import (
	"container/heap"
	"sync"
	"time"

	"github.com/mutexd/mutexd/internal/engine"
)

// logClock is the engine's clock on a replica: it reads the time of the
// log entry being applied and fires timers only when an entry's time
// passes them, in (deadline, arming order) order, so that every replica
// makes the same transitions at the same points of the log. It never
// reads a real clock.
type logClock struct {
	mu      sync.Mutex // guards the following
	now     time.Time
	seq     uint64
	timers  timerHeap
	changed chan struct{} // signalled when the earliest deadline moves earlier

	// expireDue runs before each timer fires, at the timer's deadline, so
	// that leases due at an instant end before anything else due then.
	expireDue func()
}

var _ engine.Clock = (*logClock)(nil)

func newLogClock() *logClock {
	return &logClock{changed: make(chan struct{}, 1)}
}

// Now returns the time of the entry being applied (or of the last one).
func (c *logClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// AfterFunc arms f for the first entry whose time is at least now+d.
func (c *logClock) AfterFunc(d time.Duration, f func()) engine.Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &logTimer{c: c, f: f, idx: -1}
	c.scheduleLocked(t, d)
	return t
}

func (c *logClock) scheduleLocked(t *logTimer, d time.Duration) {
	c.seq++
	t.when, t.seq = c.now.Add(max(d, 0)), c.seq
	heap.Push(&c.timers, t)
	if c.timers[0] == t {
		select {
		case c.changed <- struct{}{}:
		default:
		}
	}
}

// next returns the earliest deadline, and false when no timer is armed.
func (c *logClock) next() (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.timers) == 0 {
		return time.Time{}, false
	}
	return c.timers[0].when, true
}

// advance moves the clock to t (never backwards), firing every timer due
// by then at its own deadline.
func (c *logClock) advance(t time.Time) {
	c.mu.Lock()
	for len(c.timers) > 0 && !c.timers[0].when.After(t) {
		next := heap.Pop(&c.timers).(*logTimer)
		if next.when.After(c.now) {
			c.now = next.when
		}
		c.mu.Unlock()
		if c.expireDue != nil {
			c.expireDue()
		}
		next.f()
		c.mu.Lock()
	}
	if t.After(c.now) {
		c.now = t
	}
	c.mu.Unlock()
}

// set moves the clock to t (never backwards) without firing anything.
func (c *logClock) set(t time.Time) {
	c.mu.Lock()
	if t.After(c.now) {
		c.now = t
	}
	c.mu.Unlock()
}

type logTimer struct {
	c    *logClock
	f    func()
	when time.Time
	seq  uint64
	idx  int // in c.timers; -1 when not armed
}

// Stop disarms the timer; it reports whether it was armed.
func (t *logTimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	if t.idx < 0 {
		return false
	}
	heap.Remove(&t.c.timers, t.idx)
	return true
}

// Reset re-arms the timer for d from the clock's time.
func (t *logTimer) Reset(d time.Duration) bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	armed := t.idx >= 0
	if armed {
		heap.Remove(&t.c.timers, t.idx)
	}
	t.c.scheduleLocked(t, d)
	return armed
}

// Seq is the timer's place in the arming order, which an engine snapshot
// keeps so that a restored replica fires timers due at one instant in the
// order the others do.
func (t *logTimer) Seq() uint64 {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	return t.seq
}

type timerHeap []*logTimer

func (h timerHeap) Len() int { return len(h) }
func (h timerHeap) Less(i, j int) bool {
	if c := h[i].when.Compare(h[j].when); c != 0 {
		return c < 0
	}
	return h[i].seq < h[j].seq
}
func (h timerHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].idx, h[j].idx = i, j
}
func (h *timerHeap) Push(x any) {
	t := x.(*logTimer)
	t.idx = len(*h)
	*h = append(*h, t)
}
func (h *timerHeap) Pop() any {
	old := *h
	t := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	t.idx = -1
	return t
}
