package engine_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/mutexd/mutexd/internal/engine"
)

// Tests of the calls a log-driven replica makes (replica.go), on a fake
// clock: no goroutines, no synctest, every step exact.

func isDone(h *engine.Waiting) bool {
	select {
	case <-h.Done():
		return true
	default:
		return false
	}
}

func mustSubmit(t *testing.T, e *engine.Engine, key string, o engine.AcquireOptions) engine.Grant {
	t.Helper()
	g, h, err := e.Submit(key, o)
	if err != nil || h != nil {
		t.Fatalf("Submit(%q) = %v, %v, want an immediate grant", key, h, err)
	}
	return g
}

func mustQueue(t *testing.T, e *engine.Engine, key string, o engine.AcquireOptions) *engine.Waiting {
	t.Helper()
	_, h, err := e.Submit(key, o)
	if err != nil || h == nil {
		t.Fatalf("Submit(%q) = %v, %v, want it queued", key, h, err)
	}
	if isDone(h) {
		t.Fatal("a queued Submit is already done")
	}
	return h
}

func TestSubmit(t *testing.T) {
	e, clk, _ := newEngine(t, engine.Limits{MaxWaitersPerKey: 1})
	h := mustSubmit(t, e, "k", opts("h", 10*time.Second, 0))
	if h.Waited != 0 || !h.ExpiresAt.Equal(t0.Add(10*time.Second)) {
		t.Fatalf("immediate grant = %+v", h)
	}
	// Try-once refused, then one queued, then the queue is full.
	if _, w, err := e.Submit("k", opts("try", time.Second, 0)); w != nil || !errors.Is(err, engine.ErrTimeout) {
		t.Fatalf("try-once Submit = %v, %v, want ErrTimeout", w, err)
	}
	w := mustQueue(t, e, "k", withID(opts("w", 5*time.Second, time.Minute), "r1"))
	if _, w2, err := e.Submit("k", opts("full", time.Second, time.Minute)); w2 != nil || !errors.Is(err, engine.ErrTooManyWaiters) {
		t.Fatalf("Submit past MaxWaitersPerKey = %v, %v, want ErrTooManyWaiters", w2, err)
	}
	if _, _, err := e.Submit("k", engine.AcquireOptions{}); err == nil {
		t.Fatal("Submit with no TTL was accepted")
	}
	clk.Advance(3 * time.Second)
	if isDone(w) {
		t.Fatal("waiter done while the key is held")
	}
	if _, err := e.Release("k", h.Token, false); err != nil {
		t.Fatal(err)
	}
	if !isDone(w) {
		t.Fatal("waiter not done after the release")
	}
	g, err := w.Result()
	if err != nil || g.Owner != "w" || g.Waited != 3*time.Second || g.Previous.Fence != h.Fence || g.Previous.Outcome != engine.OutcomeReleased {
		t.Fatalf("Result() = %+v, %v, want a grant after 3s following fence %d", g, err, h.Fence)
	}
	// A waiter whose wait passes is answered with a timeout.
	w3 := mustQueue(t, e, "k", opts("w3", time.Second, 2*time.Second))
	clk.Advance(2 * time.Second)
	if _, err := w3.Result(); !isDone(w3) || !errors.Is(err, engine.ErrTimeout) {
		t.Fatalf("after its wait: done %v, err %v, want ErrTimeout", isDone(w3), err)
	}
	checkEngine(t, e)
}

func TestDetachWaiterKeepsItsPlaceForTheGrace(t *testing.T) {
	e, clk, rec := newEngine(t, engine.Limits{DetachGrace: 5 * time.Second})
	mustSubmit(t, e, "k", opts("h", time.Minute, 0))
	w1 := mustQueue(t, e, "k", withID(opts("w1", time.Minute, time.Minute), "r1"))
	w2 := mustQueue(t, e, "k", withID(opts("w2", time.Minute, time.Minute), "r2"))
	clk.Advance(time.Second)
	e.Detach("k", "r1", 0, false)
	e.Detach("k", "nobody", 0, false)
	e.Detach("absent", "r1", 0, false)
	clk.Advance(5*time.Second - time.Nanosecond)
	if isDone(w1) || e.Inspect("k", 0).Waiters != 2 {
		t.Fatal("a detached waiter left before its grace ended")
	}
	clk.Advance(time.Nanosecond)
	if _, err := w1.Result(); !isDone(w1) || !errors.Is(err, engine.ErrCancelled) {
		t.Fatalf("after the grace: done %v, err %v, want ErrCancelled", isDone(w1), err)
	}
	if n := e.Inspect("k", 0).Waiters; n != 1 {
		t.Fatalf("%d waiters after the grace, want 1", n)
	}
	// wontReturn: the waiter leaves at once.
	e.Detach("k", "r2", 0, true)
	if _, err := w2.Result(); !isDone(w2) || !errors.Is(err, engine.ErrCancelled) {
		t.Fatalf("wontReturn: done %v, err %v, want ErrCancelled at once", isDone(w2), err)
	}
	if got, want := rec.types(), []string{"granted", "queued", "queued", "cancelled", "cancelled"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("events %v, want %v", got, want)
	}
	checkEngine(t, e)
}

func TestDetachWaiterReSentKeepsItsPlace(t *testing.T) {
	e, clk, _ := newEngine(t, engine.Limits{DetachGrace: 5 * time.Second})
	h := mustSubmit(t, e, "k", opts("h", time.Minute, 0))
	w1 := mustQueue(t, e, "k", withID(opts("w1", time.Minute, time.Minute), "r1"))
	mustQueue(t, e, "k", opts("w2", time.Minute, time.Minute))
	e.Detach("k", "r1", 0, false)
	clk.Advance(3 * time.Second)
	again := mustQueue(t, e, "k", withID(opts("w1", time.Minute, time.Minute), "r1"))
	if _, err := w1.Result(); !errors.Is(err, engine.ErrSuperseded) {
		t.Fatalf("first waiter: %v, want ErrSuperseded", err)
	}
	clk.Advance(10 * time.Second) // past the old grace: the re-sent one stays
	if _, err := e.Release("k", h.Token, false); err != nil {
		t.Fatal(err)
	}
	if g, err := again.Result(); err != nil || g.Owner != "w1" {
		t.Fatalf("re-sent waiter got %+v, %v, want the next grant", g, err)
	}
	checkEngine(t, e)
}

func TestDetachGrantedLease(t *testing.T) {
	e, clk, rec := newEngine(t, engine.Limits{DetachGrace: 5 * time.Second})
	// Granted but not yet picked up: kept for a re-send for the grace,
	// then released.
	g := mustSubmit(t, e, "a", withID(opts("a", time.Minute, 0), "ra"))
	e.Detach("a", "ra", 0, false)
	clk.Advance(5*time.Second - time.Nanosecond)
	if !e.Inspect("a", 0).Held {
		t.Fatal("an unclaimed lease ended before the grace")
	}
	clk.Advance(time.Nanosecond)
	if info := e.Inspect("a", 0); info.Held {
		t.Fatal("an unclaimed lease outlived the grace")
	}
	if evs := rec.types(); evs[len(evs)-1] != "ended:released" {
		t.Fatalf("events %v, want the lease released", evs)
	}
	// A re-send within the grace claims it: it stays, also past the grace.
	g = mustSubmit(t, e, "b", withID(opts("b", time.Minute, 0), "rb"))
	e.Detach("b", "rb", 0, false)
	clk.Advance(time.Second)
	if again := mustSubmit(t, e, "b", withID(opts("b", time.Minute, 0), "rb")); again.Token != g.Token {
		t.Fatalf("re-send got fence %d, want the detached grant %d", again.Fence, g.Fence)
	}
	clk.Advance(10 * time.Second)
	if st := e.CheckFence("b", g.Fence); !st.Live {
		t.Fatal("a claimed lease ended at the end of the grace")
	}
	// Once claimed, Detach leaves it alone.
	e.Detach("b", "rb", 0, false)
	e.Detach("b", "rb", 0, true)
	clk.Advance(10 * time.Second)
	if st := e.CheckFence("b", g.Fence); !st.Live {
		t.Fatal("Detach ended a claimed lease")
	}
	// wontReturn releases an unclaimed one at once.
	g = mustSubmit(t, e, "c", withID(opts("c", time.Minute, 0), "rc"))
	e.Detach("c", "rc", 0, true)
	if e.Inspect("c", 0).Held {
		t.Fatal("wontReturn left an unclaimed lease")
	}
	// A grant to a detached waiter awaits its claim until the waiter's
	// grace ends.
	h := mustSubmit(t, e, "d", opts("h", time.Minute, 0))
	mustQueue(t, e, "d", withID(opts("w", time.Minute, time.Minute), "rd"))
	e.Detach("d", "rd", 0, false) // the grace ends at now+5s
	clk.Advance(2 * time.Second)
	if _, err := e.Release("d", h.Token, false); err != nil {
		t.Fatal(err)
	}
	if !e.Inspect("d", 0).Held {
		t.Fatal("the detached waiter was not granted")
	}
	clk.Advance(3 * time.Second)
	if e.Inspect("d", 0).Held {
		t.Fatal("the detached waiter's grant outlived its grace")
	}
	checkEngine(t, e)
}

// setClock is a clock whose time the test sets and whose timers never
// fire: a replica's clock between two entries, when only the calls the
// test makes act.
type setClock struct{ now time.Time }

func (c *setClock) Now() time.Time                               { return c.now }
func (c *setClock) AfterFunc(time.Duration, func()) engine.Timer { return idleTimer{} }

type idleTimer struct{}

func (idleTimer) Stop() bool               { return true }
func (idleTimer) Reset(time.Duration) bool { return true }

func TestExpireDue(t *testing.T) {
	clk := &setClock{now: t0}
	rec := &recorder{}
	e := engine.New(clk, rec, engine.Limits{Deterministic: true})
	mustSubmit(t, e, "b", engine.AcquireOptions{TTL: time.Second, LockDelay: time.Second})
	mustSubmit(t, e, "a", engine.AcquireOptions{TTL: time.Second, LockDelay: time.Second})
	mustSubmit(t, e, "c", opts("c", 2*time.Second, 0))
	w := mustQueue(t, e, "c", opts("w", time.Minute, time.Minute))
	clk.now = t0.Add(time.Second - time.Nanosecond)
	e.ExpireDue()
	if s := e.Stats(); s.Held != 3 {
		t.Fatalf("ExpireDue before any deadline: %d held, want 3", s.Held)
	}
	// Due at the same instant: they end in fence order, each starting its
	// lock-delay.
	clk.now = t0.Add(time.Second)
	e.ExpireDue()
	if got, want := rec.types()[4:], []string{"ended:expired", "delayed", "ended:expired", "delayed"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("events %v, want %v", got, want)
	}
	if rec.events[4].Key != "b" || rec.events[6].Key != "a" {
		t.Fatalf("ended %s then %s, want b (the lower fence) then a", rec.events[4].Key, rec.events[6].Key)
	}
	// Past the lease of c and the lock-delays: c's lease ends and its
	// waiter is granted; the delays end and their keys go.
	clk.now = t0.Add(2 * time.Second)
	e.ExpireDue()
	if g, err := w.Result(); !isDone(w) || err != nil || g.Owner != "w" {
		t.Fatalf("waiter: %+v, %v, want granted by ExpireDue", g, err)
	}
	if s := e.Stats(); s.Keys != 1 || s.Held != 1 {
		t.Fatalf("Stats() = %+v, want only c, held", s)
	}
	checkEngine(t, e)
}

// TestExpireDueBeforeTimers: on a replica's clock, which calls ExpireDue
// at a deadline before any timer due then, a lease due at the instant a
// waiter's wait ends ends first, whatever order their timers were armed
// in.
func TestExpireDueBeforeTimers(t *testing.T) {
	e, clk, rec := newEngine(t, engine.Limits{})
	clk.BeforeDeadline(e.ExpireDue)
	mustSubmit(t, e, "k", engine.AcquireOptions{TTL: time.Second, LockDelay: 2 * time.Second})
	w := mustQueue(t, e, "k", opts("w", time.Minute, time.Second))
	clk.Advance(time.Second)
	if _, err := w.Result(); !errors.Is(err, engine.ErrTimeout) {
		t.Fatalf("waiter: %v, want ErrTimeout (the lease's lock-delay holds the key)", err)
	}
	if got, want := rec.types(), []string{"granted", "queued", "ended:expired", "delayed", "timeout"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("events %v, want %v", got, want)
	}
	checkEngine(t, e)
}

func TestExtend(t *testing.T) {
	const margin = 2 * time.Second
	tests := []struct {
		name     string
		left     time.Duration // of the lease (and of the lock-delay) at prev
		clockGap time.Duration // now - prev
		want     time.Duration // the new deadline - now, or -1: ended by Extend
	}{
		{"counted again from now", 10 * time.Second, 30 * time.Second, 10*time.Second + margin},
		{"same clock", 10 * time.Second, 0, 10*time.Second + margin},
		{"new clock behind: never earlier", 10 * time.Second, -20 * time.Second, 30 * time.Second},
		{"new clock behind by less than the margin", 10 * time.Second, -time.Second, 10*time.Second + margin},
		{"past prev: ends at once", -time.Second, 30 * time.Second, -1},
		{"due at prev: ends at once", 0, 30 * time.Second, -1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// The lease's deadline is prev+left; the clock reads prev+gap
			// when Extend runs, before any timer ran (a new leader's first
			// entry).
			clk := &setClock{now: t0}
			rec := &recorder{}
			e := engine.New(clk, rec, engine.Limits{Deterministic: true})
			const ttl = 100 * time.Second
			g := mustSubmit(t, e, "k", engine.AcquireOptions{TTL: ttl, LockDelay: time.Second})
			// A lock-delay on another key, ending at prev+left too.
			d := mustSubmit(t, e, "d", engine.AcquireOptions{TTL: ttl - time.Second, LockDelay: time.Second})
			clk.now = t0.Add(ttl - time.Second)
			e.ExpireDue()
			if e.Inspect("d", 0).DelayUntil.IsZero() {
				t.Fatalf("no lock-delay on d after fence %d expired", d.Fence)
			}
			prev := t0.Add(ttl - tc.left)
			clk.now = prev.Add(tc.clockGap)
			e.Extend(prev, margin)
			st, delay := e.CheckFence("k", g.Fence), e.Inspect("d", 0).DelayUntil
			if tc.want < 0 {
				if st.Live || !delay.IsZero() {
					t.Fatalf("after Extend: lease live until %v, lock-delay until %v; want both over", st.ExpiresAt, delay)
				}
				if evs := rec.types(); fmt.Sprint(evs[len(evs)-2:]) != "[ended:expired delayed]" {
					t.Fatalf("events %v, want the lease expired by Extend", evs)
				}
			} else {
				want := clk.now.Add(tc.want)
				if !st.Live || !st.ExpiresAt.Equal(want) || !delay.Equal(want) {
					t.Fatalf("after Extend: lease live %v until %v, lock-delay until %v; want both until %v", st.Live, st.ExpiresAt, delay, want)
				}
			}
			checkEngine(t, e)
		})
	}
}

// TestDeterministic: a Deterministic engine keeps every key in one shard,
// so MaxRemembered evicts the oldest record of all keys, not of a shard.
func TestDeterministic(t *testing.T) {
	for _, det := range []bool{true, false} {
		t.Run(fmt.Sprint("deterministic=", det), func(t *testing.T) {
			e, clk, _ := newEngine(t, engine.Limits{Deterministic: det, RememberOutcome: time.Hour, MaxRemembered: 3})
			for i := range 5 {
				g := mustSubmit(t, e, fmt.Sprint("k", i), opts("", time.Minute, 0))
				clk.Advance(time.Second)
				if _, err := e.Release(g.Key, g.Token, false); err != nil {
					t.Fatal(err)
				}
			}
			remembered := 0
			for i := range 5 {
				if e.Inspect(fmt.Sprint("k", i), 0).Last.Outcome != engine.OutcomeNone {
					remembered++
					if det && i < 2 {
						t.Errorf("k%d is still remembered; the two oldest should be evicted", i)
					}
				} else if det && i >= 2 {
					t.Errorf("k%d is forgotten; only the two oldest should be", i)
				}
			}
			if det && remembered != 3 {
				t.Fatalf("%d remembered, want MaxRemembered = 3", remembered)
			}
			if !det && remembered != 5 {
				// 64 shards, each with a share of at least 1: five keys
				// in different shards all stay (and which would go when
				// two share a shard depends on the hash seed).
				t.Logf("sharded engine remembers %d of 5", remembered)
			}
			checkEngine(t, e)
		})
	}
}
