package engine_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"github.com/mutexd/mutexd/internal/engine"
)

func withLimit(o engine.AcquireOptions, n int) engine.AcquireOptions {
	o.Limit = n
	return o
}

// TestSemaphoreAdmitsLimitHolders: a key with limit 3 grants three leases
// at once, each with its own token and a server-unique fence, queues the
// fourth, and hands a freed slot to the head of the queue.
func TestSemaphoreAdmitsLimitHolders(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e, _, _ := newEngine(t, engine.Limits{})
		var gs []engine.Grant
		fences := map[uint64]bool{}
		for i := range 3 {
			g := mustAcquire(t, e, "pool", withLimit(opts("h", time.Minute, 0), 3))
			if fences[g.Fence] || slices.ContainsFunc(gs, func(o engine.Grant) bool { return o.Token == g.Token }) {
				t.Fatalf("grant %d repeats a fence or token: %+v", i, g)
			}
			fences[g.Fence] = true
			gs = append(gs, g)
		}
		if _, err := e.Acquire(t.Context(), "pool", withLimit(opts("x", time.Minute, 0), 3)); !errors.Is(err, engine.ErrTimeout) {
			t.Fatalf("fourth try-lock: err = %v, want ErrTimeout", err)
		}
		results := queue(t.Context(), e, "pool", 2, withLimit(opts("", time.Minute, time.Hour), 3))
		wantStats(t, e, engine.Stats{Keys: 1, Held: 3, Waiters: 2})
		info := e.Inspect("pool", 10)
		if info.Limit != 3 || len(info.Holders) != 3 || info.Holder.Fence != gs[0].Fence || info.Holders[2].Fence != gs[2].Fence {
			t.Fatalf("Inspect = %+v, want limit 3 and the three holders oldest first", info)
		}
		if st := e.CheckFence("pool", gs[1].Fence); !st.Live || len(st.Current) != 3 {
			t.Fatalf("CheckFence(second holder) = %+v, want live among 3", st)
		}
		checkEngine(t, e)
		// Release the middle one (not the inline slot).
		if _, err := e.Release("pool", gs[1].Token, false); err != nil {
			t.Fatal(err)
		}
		r := <-results
		if r.err != nil || r.i != 0 || r.g.Previous.Fence != gs[1].Fence {
			t.Fatalf("first waiter = %+v, want the freed slot after fence %d", r, gs[1].Fence)
		}
		if _, err := e.Release("pool", gs[1].Token, false); !errors.Is(err, engine.ErrNotHolder) {
			t.Fatalf("second release of the same token: err = %v, want ErrNotHolder", err)
		}
		if _, err := e.Renew("pool", gs[2].Token, 0); err != nil {
			t.Fatalf("renew of a holder in a further slot: %v", err)
		}
		wantStats(t, e, engine.Stats{Keys: 1, Held: 3, Waiters: 1})
		checkEngine(t, e)
		if st := e.CheckFence("pool", gs[1].Fence); st.Live || slices.Contains(st.Current, gs[1].Fence) || len(st.Current) != 3 {
			t.Fatalf("CheckFence(released) = %+v, want stale with the 3 live fences", st)
		}
		// Free the inline slot: the second waiter takes it.
		if _, err := e.Release("pool", gs[0].Token, false); err != nil {
			t.Fatal(err)
		}
		if r := <-results; r.err != nil || r.i != 1 {
			t.Fatalf("second waiter = %+v, want a grant", r)
		}
		checkEngine(t, e)
	})
}

// TestSemaphoreExpiriesServeTheQueueInOrder: when every slot ends at once
// (expiry), the queue is served in order, and a newcomer never overtakes
// the waiters left.
func TestSemaphoreExpiriesServeTheQueueInOrder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e, clk, _ := newEngine(t, engine.Limits{})
		for range 2 {
			mustAcquire(t, e, "s", withLimit(opts("h", 10*time.Second, 0), 2))
		}
		results := queue(t.Context(), e, "s", 3, withLimit(opts("", time.Minute, time.Hour), 2))
		clk.Advance(10 * time.Second)
		got := []int{(<-results).i, (<-results).i}
		slices.Sort(got)
		if !slices.Equal(got, []int{0, 1}) {
			t.Fatalf("after both expired the grants went to %v, want waiters 0 and 1", got)
		}
		if _, err := e.Acquire(t.Context(), "s", withLimit(opts("new", time.Minute, 0), 2)); !errors.Is(err, engine.ErrTimeout) {
			t.Fatalf("newcomer with waiter 2 queued: err = %v, want ErrTimeout", err)
		}
		wantStats(t, e, engine.Stats{Keys: 1, Held: 2, Waiters: 1})
		checkEngine(t, e)
	})
}

func TestLimitMismatch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e, _, _ := newEngine(t, engine.Limits{})
		g := mustAcquire(t, e, "k", withLimit(opts("h", time.Minute, 0), 5))
		_, err := e.Acquire(t.Context(), "k", opts("m", time.Minute, 0)) // limit 1
		var lm *engine.LimitMismatchError
		if !errors.As(err, &lm) || !errors.Is(err, engine.ErrLimitMismatch) || lm.Limit != 5 {
			t.Fatalf("mutex acquire of a semaphore: err = %v, want LimitMismatchError{5}", err)
		}
		if _, err := e.Acquire(t.Context(), "k", withLimit(opts("m", time.Minute, 0), 1)); !errors.As(err, &lm) {
			t.Fatalf("limit 1 on a limit-5 key: err = %v, want LimitMismatchError", err)
		}
		if _, err := e.Release("k", g.Token, false); err != nil {
			t.Fatal(err)
		}
		// Nobody holds or waits: the next acquire sets the limit.
		mustAcquire(t, e, "k", withLimit(opts("m", time.Minute, 0), 0))
		if info := e.Inspect("k", 0); info.Limit != 1 {
			t.Fatalf("limit after the key went idle and was taken as a mutex = %d, want 1", info.Limit)
		}
		if _, err := e.Acquire(t.Context(), "k", engine.AcquireOptions{TTL: time.Minute, Limit: engine.MaxLimit + 1}); err == nil || errors.Is(err, engine.ErrLimitMismatch) {
			t.Fatalf("limit over MaxLimit: err = %v, want a parameter error", err)
		}
	})
}

// TestSemaphoreStopAbortsOnAnyFailingHolder: on_error=stop on a semaphore
// aborts the waiters queued when any such holder fails; the other holders
// keep their leases.
func TestSemaphoreStopAbortsOnAnyFailingHolder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e, _, _ := newEngine(t, engine.Limits{})
		stop := withLimit(engine.AcquireOptions{Owner: "s", TTL: time.Minute, OnError: engine.OnErrorStop}, 2)
		a := mustAcquire(t, e, "k", withLimit(opts("a", time.Minute, 0), 2))
		b := mustAcquire(t, e, "k", stop)
		results := queue(t.Context(), e, "k", 2, withLimit(opts("", time.Minute, time.Hour), 2))
		if _, err := e.Release("k", b.Token, true); err != nil {
			t.Fatal(err)
		}
		for range 2 {
			if r := <-results; !errors.Is(r.err, engine.ErrAborted) {
				t.Fatalf("waiter %d: err = %v, want ErrAborted", r.i, r.err)
			}
		}
		if st := e.CheckFence("k", a.Fence); !st.Live {
			t.Fatalf("the other holder lost its lease: %+v", st)
		}
		wantStats(t, e, engine.Stats{Keys: 1, Held: 1})
		checkEngine(t, e)
	})
}

func TestCheckFence(t *testing.T) {
	e, clk, _ := newEngine(t, engine.Limits{})
	if st := e.CheckFence("k", 1); st.Live || len(st.Current) != 0 {
		t.Fatalf("CheckFence on a free key = %+v", st)
	}
	g := mustAcquire(t, e, "k", opts("h", 10*time.Second, 0))
	if st := e.CheckFence("k", g.Fence); !st.Live || !st.ExpiresAt.Equal(g.ExpiresAt) || !slices.Equal(st.Current, []uint64{g.Fence}) {
		t.Fatalf("CheckFence(live) = %+v", st)
	}
	if st := e.CheckFence("k", g.Fence-1); st.Live || !slices.Equal(st.Current, []uint64{g.Fence}) {
		t.Fatalf("CheckFence(older fence) = %+v, want stale with the current fence", st)
	}
	clk.Advance(10 * time.Second)
	if st := e.CheckFence("k", g.Fence); st.Live {
		t.Fatalf("CheckFence after expiry = %+v", st)
	}
}

// TestMaxHold: renewals never push a lease past acquisition + MaxHold; the
// one that would is cut to the cap and says so, and the lease ends there.
func TestMaxHold(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e, clk, rec := newEngine(t, engine.Limits{})
		o := opts("h", 10*time.Second, 0)
		o.MaxHold = 25 * time.Second
		g := mustAcquire(t, e, "k", o)
		next := queue(t.Context(), e, "k", 1, opts("", time.Minute, time.Hour))
		clk.Advance(8 * time.Second)
		if r, err := e.Renew("k", g.Token, 0); err != nil || !r.ExpiresAt.Equal(t0.Add(18*time.Second)) {
			t.Fatalf("renew within the cap = %+v, %v", r, err)
		}
		clk.Advance(8 * time.Second)
		r, err := e.Renew("k", g.Token, 0)
		var mh *engine.MaxHoldError
		capAt := t0.Add(25 * time.Second)
		if !errors.As(err, &mh) || !errors.Is(err, engine.ErrMaxHoldReached) || !mh.ExpiresAt.Equal(capAt) || !r.ExpiresAt.Equal(capAt) {
			t.Fatalf("renew past the cap = %+v, %v; want cut to %v with MaxHoldError", r, err, capAt)
		}
		clk.Advance(9*time.Second - time.Nanosecond)
		if _, err := e.Renew("k", g.Token, time.Hour); !errors.As(err, &mh) {
			t.Fatalf("renew at the cap: err = %v, want MaxHoldError", err)
		}
		clk.Advance(time.Nanosecond)
		if n := <-next; n.err != nil || n.g.Previous.Outcome != engine.OutcomeExpired {
			t.Fatalf("next = %+v, want a grant after the capped lease expired", n)
		}
		// A TTL longer than MaxHold is cut at the grant.
		o.TTL = time.Hour
		if g := mustAcquire(t, e, "other", o); !g.ExpiresAt.Equal(clk.Now().Add(25 * time.Second)) {
			t.Fatalf("grant with ttl > max hold expires at %v, want now+25s", g.ExpiresAt)
		}
		if got := rec.types(); !slices.Contains(got, "ended:expired") {
			t.Fatalf("events = %v, want the capped lease to expire", got)
		}
		checkEngine(t, e)
	})
}

// TestLockDelay: after a lease with a lock-delay expires or is
// force-released, nobody gets the key until the delay ends: waiters keep
// their places, a newcomer on the idle key cannot take it early; a release
// starts no delay.
func TestLockDelay(t *testing.T) {
	tests := []struct {
		name  string
		end   func(t *testing.T, e *engine.Engine, clk interface{ Advance(time.Duration) }, g engine.Grant)
		delay bool
	}{
		{"expiry", func(t *testing.T, e *engine.Engine, clk interface{ Advance(time.Duration) }, g engine.Grant) {
			clk.Advance(10 * time.Second)
		}, true},
		{"force-release", func(t *testing.T, e *engine.Engine, clk interface{ Advance(time.Duration) }, g engine.Grant) {
			if _, err := e.ForceRelease("k"); err != nil {
				t.Fatal(err)
			}
		}, true},
		{"release", func(t *testing.T, e *engine.Engine, clk interface{ Advance(time.Duration) }, g engine.Grant) {
			if _, err := e.Release("k", g.Token, true); err != nil {
				t.Fatal(err)
			}
		}, false},
	}
	for _, tt := range tests {
		for _, waiter := range []bool{true, false} {
			t.Run(tt.name+map[bool]string{true: "/waiter", false: "/idle"}[waiter], func(t *testing.T) {
				synctest.Test(t, func(t *testing.T) {
					e, clk, rec := newEngine(t, engine.Limits{})
					o := opts("h", 10*time.Second, 0)
					o.LockDelay = 15 * time.Second
					g := mustAcquire(t, e, "k", o)
					var results <-chan result
					if waiter {
						results = queue(t.Context(), e, "k", 1, opts("", time.Minute, time.Hour))
					}
					tt.end(t, e, clk, g)
					synctest.Wait()
					if !tt.delay {
						if waiter {
							if r := <-results; r.err != nil {
								t.Fatalf("waiter after a release: %v", r.err)
							}
						} else {
							mustAcquire(t, e, "k", opts("new", time.Minute, 0))
						}
						return
					}
					info := e.Inspect("k", 10)
					if info.Held || info.DelayUntil.IsZero() {
						t.Fatalf("Inspect during the delay = %+v, want free with a delay", info)
					}
					until := info.DelayUntil
					if _, err := e.Acquire(t.Context(), "k", opts("new", time.Minute, 0)); !errors.Is(err, engine.ErrTimeout) {
						t.Fatalf("try-lock during the delay: err = %v, want ErrTimeout", err)
					}
					checkEngine(t, e)
					clk.Advance(until.Sub(clk.Now()) - time.Nanosecond)
					if waiter {
						select {
						case r := <-results:
							t.Fatalf("granted during the delay: %+v", r)
						default:
						}
						clk.Advance(time.Nanosecond)
						if r := <-results; r.err != nil || r.i != 0 {
							t.Fatalf("waiter after the delay: %+v", r)
						}
					} else {
						wantStats(t, e, engine.Stats{Keys: 1})
						clk.Advance(time.Nanosecond)
						wantStats(t, e, engine.Stats{})
						mustAcquire(t, e, "k", opts("new", time.Minute, 0))
					}
					if types := rec.types(); !slices.Contains(types, "delayed") {
						t.Fatalf("events = %v, want a delayed event", types)
					}
					checkEngine(t, e)
				})
			})
		}
	}
}

// TestPauseResume: a paused key grants nothing (the holder keeps its lease,
// waiters their places, acquires queue); resuming serves the queue.
func TestPauseResume(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e, _, rec := newEngine(t, engine.Limits{})
		if !e.Pause("k") || e.Pause("k") {
			t.Fatal("Pause of a new key: want true, then false")
		}
		wantStats(t, e, engine.Stats{Keys: 1, Paused: 1})
		if _, err := e.Acquire(t.Context(), "k", opts("a", time.Minute, 0)); !errors.Is(err, engine.ErrTimeout) {
			t.Fatalf("try-lock on a paused free key: err = %v, want ErrTimeout", err)
		}
		results := queue(t.Context(), e, "k", 2, opts("", time.Minute, time.Hour))
		if info := e.Inspect("k", 10); !info.Paused || info.Waiters != 2 || info.Held {
			t.Fatalf("Inspect = %+v, want paused, free, 2 waiters", info)
		}
		checkEngine(t, e)
		if !e.Resume("k") || e.Resume("k") {
			t.Fatal("Resume: want true, then false")
		}
		r := <-results
		if r.err != nil || r.i != 0 {
			t.Fatalf("after resume: %+v, want waiter 0 granted", r)
		}
		// Paused while held: the holder may release; nobody is granted.
		e.Pause("k")
		if _, err := e.Release("k", r.g.Token, false); err != nil {
			t.Fatal(err)
		}
		wantStats(t, e, engine.Stats{Keys: 1, Waiters: 1, Paused: 1})
		checkEngine(t, e)
		e.Resume("k")
		if r := <-results; r.err != nil {
			t.Fatal(r.err)
		}
		if got := rec.types(); !slices.Contains(got, "paused") || !slices.Contains(got, "resumed") {
			t.Fatalf("events = %v", got)
		}
		// Resuming an idle paused key deletes it.
		e.Pause("idle")
		e.Resume("idle")
		wantStats(t, e, engine.Stats{Keys: 1, Held: 1})
		checkEngine(t, e)
	})
}

func TestPausePrefix(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e, _, _ := newEngine(t, engine.Limits{})
		g := mustAcquire(t, e, "job:1", opts("h", time.Minute, 0))
		mustAcquire(t, e, "other", opts("h", time.Minute, 0))
		if n := e.PausePrefix("job:"); n != 1 {
			t.Fatalf("PausePrefix = %d, want 1 existing key", n)
		}
		if _, err := e.Acquire(t.Context(), "job:2", opts("x", time.Minute, 0)); !errors.Is(err, engine.ErrTimeout) {
			t.Fatalf("new key under a paused prefix: err = %v, want ErrTimeout", err)
		}
		mustAcquire(t, e, "jobs", opts("x", time.Minute, 0)) // not under "job:"
		waiting := queue(t.Context(), e, "job:1", 1, opts("", time.Minute, time.Hour))
		if _, err := e.Release("job:1", g.Token, false); err != nil {
			t.Fatal(err)
		}
		wantStats(t, e, engine.Stats{Keys: 4, Held: 2, Waiters: 1, Paused: 2})
		checkEngine(t, e)
		if n := e.ResumePrefix("job:"); n != 2 {
			t.Fatalf("ResumePrefix = %d, want 2", n)
		}
		if r := <-waiting; r.err != nil {
			t.Fatal(r.err)
		}
		mustAcquire(t, e, "job:3", opts("x", time.Minute, 0))
		wantStats(t, e, engine.Stats{Keys: 4, Held: 4})
		checkEngine(t, e)
	})
}

// TestDrain: every waiter gets a DrainedError with the reason; holders
// keep their leases.
func TestDrain(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e, _, rec := newEngine(t, engine.Limits{})
		g := mustAcquire(t, e, "a:1", opts("h", time.Minute, 0))
		mustAcquire(t, e, "a:2", opts("h", time.Minute, 0))
		mustAcquire(t, e, "b", opts("h", time.Minute, 0))
		r1 := queue(t.Context(), e, "a:1", 2, opts("", time.Minute, time.Hour))
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		queue(ctx, e, "a:2", 1, withID(opts("", time.Minute, time.Hour), "x"))
		queue(t.Context(), e, "b", 1, opts("", time.Minute, time.Hour))
		cancel() // a:2's waiter is detached; a drain takes it too
		synctest.Wait()
		if n := e.Drain("a:1", "maintenance"); n != 2 {
			t.Fatalf("Drain = %d, want 2", n)
		}
		for range 2 {
			r := <-r1
			var de *engine.DrainedError
			if !errors.As(r.err, &de) || !errors.Is(r.err, engine.ErrDrained) || de.Reason != "maintenance" {
				t.Fatalf("drained waiter: err = %v, want DrainedError{maintenance}", r.err)
			}
		}
		if n := e.DrainPrefix("a:", "window"); n != 1 {
			t.Fatalf("DrainPrefix = %d, want 1", n)
		}
		if st := e.CheckFence("a:1", g.Fence); !st.Live {
			t.Fatal("drain ended the holder's lease")
		}
		wantStats(t, e, engine.Stats{Keys: 3, Held: 3, Waiters: 1})
		if got := rec.types(); slices.Index(got, "drained") < 0 {
			t.Fatalf("events = %v, want drained", got)
		}
		checkEngine(t, e)
	})
}
