package engine_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/mutexd/mutexd/internal/engine"
	"github.com/mutexd/mutexd/internal/fakeclock"
)

func withID(o engine.AcquireOptions, id string) engine.AcquireOptions {
	o.RequestID = id
	return o
}

// one starts a single acquire with o as given (queue renames owners) and
// returns the channel its result arrives on. Call inside a synctest bubble.
func one(ctx context.Context, e *engine.Engine, key string, o engine.AcquireOptions) <-chan result {
	out := make(chan result, 1)
	go func() {
		g, err := e.Acquire(ctx, key, o)
		out <- result{0, g, err}
	}()
	synctest.Wait()
	return out
}

func checkEngine(t *testing.T, e *engine.Engine) {
	t.Helper()
	if err := e.Check(); err != nil {
		t.Fatal(err)
	}
}

// TestRequestIDLiveLeaseIsReturnedAgain: a re-sent acquire whose lease
// lives gets the same grant, not extended, with Waited as first answered;
// after the lease ended it learns how, and without remembering it is a
// new acquire.
func TestRequestIDLiveLeaseIsReturnedAgain(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e, clk, _ := newEngine(t, engine.Limits{RememberOutcome: time.Minute})
		h := mustAcquire(t, e, "k", opts("h", time.Minute, 0))
		results := queue(t.Context(), e, "k", 1, withID(opts("", 10*time.Second, time.Hour), "req-1"))
		clk.Advance(3 * time.Second)
		if _, err := e.Release("k", h.Token, false); err != nil {
			t.Fatal(err)
		}
		first := <-results
		if first.err != nil || first.g.Waited != 3*time.Second {
			t.Fatalf("first answer = %+v, want a grant after 3s", first)
		}
		clk.Advance(2 * time.Second)
		again := mustAcquire(t, e, "k", withID(opts("other", time.Hour, time.Hour), "req-1"))
		if again != first.g {
			t.Fatalf("re-sent acquire = %+v, want the first grant %+v unchanged", again, first.g)
		}
		if _, err := e.Renew("k", again.Token, 0); err != nil {
			t.Fatal(err)
		}
		if _, err := e.Release("k", again.Token, true); err != nil {
			t.Fatal(err)
		}
		endedAt := clk.Now()
		clk.Advance(30 * time.Second)
		_, err := e.Acquire(t.Context(), "k", withID(opts("w0", time.Minute, time.Hour), "req-1"))
		var le *engine.LeaseEndedError
		if !errors.As(err, &le) || !errors.Is(err, engine.ErrLeaseEnded) || le.Fence != first.g.Fence || le.Outcome != engine.OutcomeFailed || !le.EndedAt.Equal(endedAt) {
			t.Fatalf("acquire after the lease ended: err = %v, want LeaseEndedError fence %d failed at %v", err, first.g.Fence, endedAt)
		}
		checkEngine(t, e)
		// Past RememberOutcome the id is forgotten: a new acquire.
		clk.Advance(30 * time.Second)
		g := mustAcquire(t, e, "k", withID(opts("w0", time.Minute, 0), "req-1"))
		if g.Fence <= first.g.Fence {
			t.Fatalf("fence %d after the forgotten id, want a new lease", g.Fence)
		}
		checkEngine(t, e)
	})
}

// TestRequestIDSupersedesWaiter: a re-sent acquire takes over the first
// one's place (the first call ends with ErrSuperseded), keeps its arrival
// time, and is served before those who came after it.
func TestRequestIDSupersedesWaiter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e, clk, rec := newEngine(t, engine.Limits{})
		h := mustAcquire(t, e, "k", opts("h", time.Minute, 0))
		ahead := queue(t.Context(), e, "k", 1, opts("", time.Minute, time.Hour))
		first := queue(t.Context(), e, "k", 1, withID(opts("", time.Minute, time.Hour), "r"))
		behind := queue(t.Context(), e, "k", 1, opts("", time.Minute, time.Hour))
		clk.Advance(time.Second)
		var p positions
		o := withID(opts("resent", time.Minute, time.Hour), "r")
		o.OnPosition = p.report
		resent := one(t.Context(), e, "k", o)
		if r := <-first; !errors.Is(r.err, engine.ErrSuperseded) {
			t.Fatalf("first call: err = %v, want ErrSuperseded", r.err)
		}
		wantPositions(t, &p, 2)
		wantStats(t, e, engine.Stats{Keys: 1, Held: 1, Waiters: 3})
		if info := e.Inspect("k", 10); info.Queue[1].Owner != "resent" || !info.Queue[1].WaitingSince.Equal(t0) {
			t.Fatalf("queue = %+v, want resent second, waiting since t0", info.Queue)
		}
		checkEngine(t, e)
		if _, err := e.Release("k", h.Token, false); err != nil {
			t.Fatal(err)
		}
		a := <-ahead
		wantPositions(t, &p, 1)
		if _, err := e.Release("k", a.g.Token, false); err != nil {
			t.Fatal(err)
		}
		r := <-resent
		if r.err != nil || r.g.Owner != "resent" || r.g.Waited != time.Second {
			t.Fatalf("re-sent waiter = %+v, want the grant, waited 1s from the first arrival", r)
		}
		select {
		case b := <-behind:
			t.Fatalf("the waiter behind was answered first: %+v", b)
		default:
		}
		if got := strings.Join(rec.types(), ","); !strings.Contains(got, "queued,superseded,ended:released") {
			t.Fatalf("events = %s, want a superseded event and no second queued", got)
		}
	})
}

// TestDetachedWaiterKeepsItsPlace: a waiter with a request id whose caller
// goes away stays queued for the detach grace; a re-send takes its place,
// and without one it leaves as cancelled when the grace ends.
func TestDetachedWaiterKeepsItsPlace(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e, clk, rec := newEngine(t, engine.Limits{DetachGrace: 10 * time.Second})
		h := mustAcquire(t, e, "k", opts("h", time.Hour, 0))
		ctx, cancel := context.WithCancel(t.Context())
		first := queue(ctx, e, "k", 1, withID(opts("", time.Minute, time.Hour), "a"))
		lost := queue(ctx, e, "k", 1, withID(opts("", time.Minute, time.Hour), "b"))
		behind := queue(t.Context(), e, "k", 1, opts("", time.Minute, time.Hour))
		cancel()
		for range 2 {
			if r := <-first; !errors.Is(r.err, engine.ErrCancelled) {
				t.Fatalf("detached caller: err = %v, want ErrCancelled", r.err)
			}
			first = lost
		}
		wantStats(t, e, engine.Stats{Keys: 1, Held: 1, Waiters: 3})
		checkEngine(t, e)
		clk.Advance(9 * time.Second)
		back := one(t.Context(), e, "k", withID(opts("back", time.Minute, time.Hour), "a"))
		clk.Advance(time.Second) // b's grace ends; a was re-attached
		wantStats(t, e, engine.Stats{Keys: 1, Held: 1, Waiters: 2})
		if got := rec.types(); got[len(got)-1] != "cancelled" {
			t.Fatalf("events end with %v, want b cancelled", got)
		}
		if _, err := e.Release("k", h.Token, false); err != nil {
			t.Fatal(err)
		}
		if r := <-back; r.err != nil || r.g.Owner != "back" {
			t.Fatalf("re-attached waiter = %+v, want the grant", r)
		}
		select {
		case b := <-behind:
			t.Fatalf("the waiter behind was answered first: %+v", b)
		default:
		}
		checkEngine(t, e)
	})
}

// TestDetachGraceCappedByWait: a detached waiter never outlives its wait.
func TestDetachGraceCappedByWait(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e, clk, _ := newEngine(t, engine.Limits{})
		mustAcquire(t, e, "k", opts("h", time.Hour, 0))
		ctx, cancel := context.WithCancel(t.Context())
		r := queue(ctx, e, "k", 1, withID(opts("", time.Minute, 5*time.Second), "a"))
		clk.Advance(2 * time.Second)
		cancel()
		<-r
		clk.Advance(3*time.Second - time.Nanosecond)
		wantStats(t, e, engine.Stats{Keys: 1, Held: 1, Waiters: 1})
		clk.Advance(time.Nanosecond)
		wantStats(t, e, engine.Stats{Keys: 1, Held: 1})
	})
}

// TestGrantWhileDetachedIsKeptForTheClaim: a grant to a detached waiter is
// kept for a re-sent acquire; unclaimed, it is released when the grace
// ends and the key moves on.
func TestGrantWhileDetachedIsKeptForTheClaim(t *testing.T) {
	for _, claim := range []bool{true, false} {
		t.Run(map[bool]string{true: "claimed", false: "unclaimed"}[claim], func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				e, clk, _ := newEngine(t, engine.Limits{DetachGrace: 10 * time.Second})
				h := mustAcquire(t, e, "k", opts("h", time.Hour, 0))
				ctx, cancel := context.WithCancel(t.Context())
				lost := one(ctx, e, "k", withID(opts("lost", time.Minute, time.Hour), "a"))
				next := queue(t.Context(), e, "k", 1, opts("next", time.Minute, time.Hour))
				cancel()
				<-lost
				clk.Advance(4 * time.Second)
				if _, err := e.Release("k", h.Token, false); err != nil {
					t.Fatal(err)
				}
				info := e.Inspect("k", 10)
				if !info.Held || info.Holder.Owner != "lost" {
					t.Fatalf("after the release: %+v, want the detached waiter holding", info)
				}
				checkEngine(t, e)
				if claim {
					clk.Advance(5 * time.Second)
					g := mustAcquire(t, e, "k", withID(opts("back", time.Minute, time.Hour), "a"))
					if g.Owner != "lost" || g.Waited != 4*time.Second || !g.ExpiresAt.Equal(t0.Add(4*time.Second+time.Minute)) {
						t.Fatalf("claimed grant = %+v, want the lease granted at t0+4s", g)
					}
					clk.Advance(10 * time.Second) // past the grace: claimed, so kept
					if info := e.Inspect("k", 10); info.Holder.Fence != g.Fence {
						t.Fatalf("claimed lease released at the end of the grace: %+v", info)
					}
					return
				}
				clk.Advance(6*time.Second - time.Nanosecond)
				if info := e.Inspect("k", 10); info.Holder.Owner != "lost" {
					t.Fatalf("released before the grace ended: %+v", info)
				}
				clk.Advance(time.Nanosecond)
				n := <-next
				if n.err != nil || n.g.Previous.Outcome != engine.OutcomeReleased {
					t.Fatalf("next waiter = %+v, want a grant after a release", n)
				}
				checkEngine(t, e)
			})
		})
	}
}

// TestCancelGrantRaceKeepsLeaseWithRequestID: the cancel-versus-grant race
// of an acquire with a request id keeps the lease for the re-send, where
// without one it is released (TestCancelGrantRaceNeverStrandsALease).
func TestCancelGrantRaceKeepsLeaseWithRequestID(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		var racerFence uint64
		clk := fakeclock.New(t0)
		e := engine.New(clk, cancelOnGrant{cancel, &racerFence}, engine.Limits{DetachGrace: 10 * time.Second})
		g := mustAcquire(t, e, "k", opts("h", time.Minute, 0))
		racer := queue(ctx, e, "k", 1, withID(opts("racer", time.Minute, time.Hour), "r"))
		if _, err := e.Release("k", g.Token, false); err != nil {
			t.Fatal(err)
		}
		if r := <-racer; !errors.Is(r.err, engine.ErrCancelled) {
			t.Fatalf("racer: %+v, want ErrCancelled", r)
		}
		again := mustAcquire(t, e, "k", withID(opts("racer", time.Minute, 0), "r"))
		if again.Fence != racerFence || racerFence == 0 {
			t.Fatalf("re-sent acquire: fence %d, want the raced grant's %d", again.Fence, racerFence)
		}
		clk.Advance(20 * time.Second)
		if info := e.Inspect("k", 1); info.Holder.Fence != racerFence {
			t.Fatalf("claimed lease was released: %+v", info)
		}
		checkEngine(t, e)
	})
}

// TestRememberedOutcome: a key that went idle tells its next holder, even
// an immediate one, how its last lease ended, and inspection shows it,
// for RememberOutcome.
func TestRememberedOutcome(t *testing.T) {
	e, clk, _ := newEngine(t, engine.Limits{RememberOutcome: 10 * time.Minute})
	g := mustAcquire(t, e, "cron", opts("job", time.Minute, 0))
	clk.Advance(time.Minute) // it crashed: the lease expires
	want := engine.Previous{Fence: g.Fence, Outcome: engine.OutcomeExpired, EndedAt: t0.Add(time.Minute)}
	wantStats(t, e, engine.Stats{Remembered: 1})
	if info := e.Inspect("cron", 10); info.Held || info.Last != want {
		t.Fatalf("Inspect of the idle key = %+v, want last %+v", info, want)
	}
	clk.Advance(5 * time.Minute)
	g2 := mustAcquire(t, e, "cron", opts("job", time.Minute, 0))
	if g2.Previous != want {
		t.Fatalf("next grant's previous = %+v, want %+v", g2.Previous, want)
	}
	if info := e.Inspect("cron", 10); info.Last != want {
		t.Fatalf("Inspect while held: last = %+v, want %+v", info.Last, want)
	}
	checkEngine(t, e)
	if _, err := e.Release("cron", g2.Token, false); err != nil {
		t.Fatal(err)
	}
	clk.Advance(10 * time.Minute)
	if g3 := mustAcquire(t, e, "cron", opts("job", time.Minute, 0)); g3.Previous.Outcome != engine.OutcomeNone {
		t.Fatalf("previous after RememberOutcome passed = %+v, want none", g3.Previous)
	}
	checkEngine(t, e)
}
