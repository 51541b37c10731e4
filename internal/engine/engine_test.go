package engine_test

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/mutexd/mutexd/internal/engine"
	"github.com/mutexd/mutexd/internal/fakeclock"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// recorder is an Observer that keeps every event.
type recorder struct {
	mu     sync.Mutex
	events []engine.Event
}

func (r *recorder) OnEvent(ev engine.Event) {
	r.mu.Lock()
	r.events = append(r.events, ev)
	r.mu.Unlock()
}

func (r *recorder) types() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, ev := range r.events {
		s := ev.Type.String()
		if ev.Type == engine.EventEnded {
			s += ":" + ev.Outcome.String()
		}
		out = append(out, s)
	}
	return out
}

func newEngine(t *testing.T, limits engine.Limits) (*engine.Engine, *fakeclock.Clock, *recorder) {
	t.Helper()
	clk := fakeclock.New(t0)
	rec := &recorder{}
	return engine.New(clk, rec, limits), clk, rec
}

func opts(owner string, ttl, wait time.Duration) engine.AcquireOptions {
	return engine.AcquireOptions{Owner: owner, TTL: ttl, Wait: wait}
}

type result struct {
	i   int
	g   engine.Grant
	err error
}

// queue starts n waiters on key one after another, so their arrival order
// is 0..n-1, and returns the channel their results arrive on. Call inside a
// synctest bubble.
func queue(ctx context.Context, e *engine.Engine, key string, n int, o engine.AcquireOptions) <-chan result {
	out := make(chan result, n)
	for i := range n {
		go func() {
			oo := o
			oo.Owner = fmt.Sprintf("w%d", i)
			g, err := e.Acquire(ctx, key, oo)
			out <- result{i, g, err}
		}()
		synctest.Wait()
	}
	return out
}

func mustAcquire(t *testing.T, e *engine.Engine, key string, o engine.AcquireOptions) engine.Grant {
	t.Helper()
	g, err := e.Acquire(t.Context(), key, o)
	if err != nil {
		t.Fatalf("Acquire(%q) error = %v, want grant", key, err)
	}
	return g
}

func wantStats(t *testing.T, e *engine.Engine, want engine.Stats) {
	t.Helper()
	if got := e.Stats(); got != want {
		t.Fatalf("Stats() = %+v, want %+v", got, want)
	}
}

func TestFIFOWithThousandWaiters(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e, _, _ := newEngine(t, engine.Limits{})
		holder := mustAcquire(t, e, "k", opts("h", time.Minute, 0))
		const n = 1000
		results := queue(t.Context(), e, "k", n, opts("", time.Minute, time.Hour))
		wantStats(t, e, engine.Stats{Keys: 1, Held: 1, Waiters: n})

		token, fence := holder.Token, holder.Fence
		for want := range n {
			if _, err := e.Release("k", token, false); err != nil {
				t.Fatalf("release before waiter %d: %v", want, err)
			}
			r := <-results
			if r.err != nil || r.i != want {
				t.Fatalf("grant %d went to waiter %d (err %v), want waiter %d", want, r.i, r.err, want)
			}
			if r.g.Fence <= fence {
				t.Fatalf("fence %d after %d, want strictly increasing", r.g.Fence, fence)
			}
			if r.g.Previous.Outcome != engine.OutcomeReleased {
				t.Fatalf("previous outcome %v, want released", r.g.Previous.Outcome)
			}
			token, fence = r.g.Token, r.g.Fence
		}
		if _, err := e.Release("k", token, false); err != nil {
			t.Fatal(err)
		}
		wantStats(t, e, engine.Stats{})
	})
}

func TestImmediateGrantAndTryLock(t *testing.T) {
	e, _, _ := newEngine(t, engine.Limits{})
	g := mustAcquire(t, e, "k", opts("a", 10*time.Second, 0))
	if g.Waited != 0 || g.Previous.Outcome != engine.OutcomeNone || g.Owner != "a" || g.TTL != 10*time.Second {
		t.Fatalf("grant = %+v, want immediate grant to a for 10s with no previous", g)
	}
	if !g.ExpiresAt.Equal(t0.Add(10 * time.Second)) {
		t.Fatalf("ExpiresAt = %v, want %v", g.ExpiresAt, t0.Add(10*time.Second))
	}
	_, err := e.Acquire(t.Context(), "k", opts("b", time.Second, 0))
	var te *engine.TimeoutError
	if !errors.As(err, &te) || !errors.Is(err, engine.ErrTimeout) || te.Waiters != 0 {
		t.Fatalf("try-lock on held key: err = %v, want TimeoutError with 0 waiters", err)
	}
	// A different key never waits on this one.
	mustAcquire(t, e, "other", opts("b", time.Second, 0))
	wantStats(t, e, engine.Stats{Keys: 2, Held: 2})
}

func TestWaitTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e, clk, rec := newEngine(t, engine.Limits{})
		mustAcquire(t, e, "k", opts("h", time.Minute, 0))
		results := queue(t.Context(), e, "k", 2, opts("", time.Minute, 5*time.Second))
		clk.Advance(5 * time.Second)
		for range 2 {
			r := <-results
			if !errors.Is(r.err, engine.ErrTimeout) {
				t.Fatalf("waiter %d: err = %v, want ErrTimeout", r.i, r.err)
			}
		}
		wantStats(t, e, engine.Stats{Keys: 1, Held: 1})
		got := strings.Join(rec.types(), ",")
		if want := "granted,queued,queued,timeout,timeout"; got != want {
			t.Fatalf("events = %s, want %s", got, want)
		}
	})
}

func TestExpiryHandsOver(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e, clk, _ := newEngine(t, engine.Limits{})
		holder := mustAcquire(t, e, "k", opts("h", 10*time.Second, 0))
		results := queue(t.Context(), e, "k", 1, opts("", time.Minute, time.Minute))
		clk.Advance(10*time.Second - time.Nanosecond)
		synctest.Wait()
		select {
		case r := <-results:
			t.Fatalf("granted %+v before the lease deadline", r)
		default:
		}
		clk.Advance(time.Nanosecond)
		r := <-results
		if r.err != nil {
			t.Fatal(r.err)
		}
		if r.g.Previous != (engine.Previous{Fence: holder.Fence, Outcome: engine.OutcomeExpired, EndedAt: t0.Add(10 * time.Second)}) {
			t.Fatalf("previous = %+v, want expired fence %d", r.g.Previous, holder.Fence)
		}
		if r.g.Waited != 10*time.Second {
			t.Fatalf("waited = %v, want 10s", r.g.Waited)
		}
		if _, err := e.Release("k", holder.Token, false); !errors.Is(err, engine.ErrNotHolder) {
			t.Fatalf("release by expired holder: err = %v, want ErrNotHolder", err)
		}
		if _, err := e.Renew("k", holder.Token, 0); !errors.Is(err, engine.ErrNotHolder) {
			t.Fatalf("renew by expired holder: err = %v, want ErrNotHolder", err)
		}
	})
}

func TestExpiryWithoutWaitersRemovesKey(t *testing.T) {
	e, clk, rec := newEngine(t, engine.Limits{})
	for i := range 100 {
		mustAcquire(t, e, fmt.Sprintf("k%d", i), opts("h", time.Duration(i+1)*time.Second, 0))
	}
	clk.Advance(50 * time.Second)
	wantStats(t, e, engine.Stats{Keys: 50, Held: 50})
	clk.Advance(50 * time.Second)
	wantStats(t, e, engine.Stats{})
	if n := strings.Count(strings.Join(rec.types(), ","), "ended:expired"); n != 100 {
		t.Fatalf("%d expiries, want 100", n)
	}
}

func TestRenew(t *testing.T) {
	e, clk, _ := newEngine(t, engine.Limits{})
	g := mustAcquire(t, e, "k", opts("h", 10*time.Second, 0))
	clk.Advance(8 * time.Second)
	r, err := e.Renew("k", g.Token, 0)
	if err != nil {
		t.Fatal(err)
	}
	if r.TTL != 10*time.Second || !r.ExpiresAt.Equal(t0.Add(18*time.Second)) || r.Fence != g.Fence {
		t.Fatalf("renewal = %+v, want ttl 10s until t0+18s with the same fence", r)
	}
	clk.Advance(8 * time.Second) // past the first deadline
	if r, err = e.Renew("k", g.Token, time.Minute); err != nil || r.TTL != time.Minute {
		t.Fatalf("renew with ttl: %+v, %v; want ttl 1m", r, err)
	}
	clk.Advance(59 * time.Second)
	if info := e.Inspect("k", 10); !info.Held {
		t.Fatal("renewed lease is not held")
	}
	var other engine.Token
	if _, err := e.Renew("k", other, 0); !errors.Is(err, engine.ErrNotHolder) {
		t.Fatalf("renew with a wrong token: err = %v, want ErrNotHolder", err)
	}
	clk.Advance(time.Second)
	if _, err := e.Renew("k", g.Token, 0); !errors.Is(err, engine.ErrNotHolder) {
		t.Fatalf("renew after expiry: err = %v, want ErrNotHolder", err)
	}
	wantStats(t, e, engine.Stats{})
}

func TestOnErrorStopAndContinue(t *testing.T) {
	tests := []struct {
		name        string
		onError     engine.OnError
		failed      bool
		expire      bool
		wantAborted bool
	}{
		{"stop+failed aborts", engine.OnErrorStop, true, false, true},
		{"stop+expired aborts", engine.OnErrorStop, false, true, true},
		{"stop+ok hands over", engine.OnErrorStop, false, false, false},
		{"continue+failed hands over", engine.OnErrorContinue, true, false, false},
		{"continue+expired hands over", engine.OnErrorContinue, false, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				e, clk, _ := newEngine(t, engine.Limits{})
				h := engine.AcquireOptions{Owner: "h", TTL: 10 * time.Second, OnError: tt.onError}
				g := mustAcquire(t, e, "k", h)
				results := queue(t.Context(), e, "k", 3, opts("", time.Minute, time.Hour))
				switch {
				case tt.expire:
					clk.Advance(10 * time.Second)
				default:
					if _, err := e.Release("k", g.Token, tt.failed); err != nil {
						t.Fatal(err)
					}
				}
				if tt.wantAborted {
					for range 3 {
						if r := <-results; !errors.Is(r.err, engine.ErrAborted) {
							t.Fatalf("waiter %d: err = %v, want ErrAborted", r.i, r.err)
						}
					}
					wantStats(t, e, engine.Stats{})
					// The key resets: later acquires are served normally.
					g2 := mustAcquire(t, e, "k", opts("later", time.Second, 0))
					if g2.Previous.Outcome != engine.OutcomeNone {
						t.Fatalf("previous after reset = %+v, want none", g2.Previous)
					}
					return
				}
				r := <-results
				if r.err != nil || r.i != 0 {
					t.Fatalf("first result: waiter %d err %v, want grant to waiter 0", r.i, r.err)
				}
				wantStats(t, e, engine.Stats{Keys: 1, Held: 1, Waiters: 2})
			})
		})
	}
}

func TestStopAbortsOnlyThoseQueuedAtThatMoment(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e, _, _ := newEngine(t, engine.Limits{})
		g := mustAcquire(t, e, "k", engine.AcquireOptions{Owner: "h", TTL: time.Minute, OnError: engine.OnErrorStop})
		results := queue(t.Context(), e, "k", 2, engine.AcquireOptions{TTL: time.Minute, Wait: time.Hour, OnError: engine.OnErrorStop})
		if _, err := e.Release("k", g.Token, true); err != nil {
			t.Fatal(err)
		}
		for range 2 {
			if r := <-results; !errors.Is(r.err, engine.ErrAborted) {
				t.Fatalf("err = %v, want ErrAborted", r.err)
			}
		}
		// A waiter that arrives after the abort queues normally behind a new holder.
		g = mustAcquire(t, e, "k", opts("h2", time.Minute, 0))
		late := queue(t.Context(), e, "k", 1, opts("", time.Minute, time.Hour))
		if _, err := e.Release("k", g.Token, true); err != nil {
			t.Fatal(err)
		}
		if r := <-late; r.err != nil || r.g.Previous.Outcome != engine.OutcomeFailed {
			t.Fatalf("late waiter: %+v, want a grant after a failed continue holder", r)
		}
	})
}

func TestCancelLeavesQueue(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e, _, rec := newEngine(t, engine.Limits{})
		g := mustAcquire(t, e, "k", opts("h", time.Minute, 0))
		ctx, cancel := context.WithCancel(t.Context())
		first := queue(ctx, e, "k", 1, opts("", time.Minute, time.Hour))
		second := queue(t.Context(), e, "k", 1, opts("", time.Minute, time.Hour))
		cancel()
		if r := <-first; !errors.Is(r.err, engine.ErrCancelled) || !errors.Is(r.err, context.Canceled) {
			t.Fatalf("cancelled waiter: err = %v, want ErrCancelled wrapping context.Canceled", r.err)
		}
		wantStats(t, e, engine.Stats{Keys: 1, Held: 1, Waiters: 1})
		if _, err := e.Release("k", g.Token, false); err != nil {
			t.Fatal(err)
		}
		if r := <-second; r.err != nil {
			t.Fatalf("second waiter: %v, want the grant", r.err)
		}
		if got := strings.Join(rec.types(), ","); got != "granted,queued,queued,cancelled,ended:released,granted" {
			t.Fatalf("events = %s", got)
		}
	})
}

// cancelOnGrant cancels a context the moment the engine grants to a queued
// waiter, inside the engine's critical section: the waiter, parked in its
// select, wakes for the cancellation while the grant is already made. This
// is the race the engine must resolve by releasing the orphaned lease.
type cancelOnGrant struct {
	cancel context.CancelFunc
	fence  *uint64
}

func (c cancelOnGrant) OnEvent(ev engine.Event) {
	if ev.Type == engine.EventGranted && ev.FromQueue && *c.fence == 0 {
		*c.fence = ev.Fence
		c.cancel()
	}
}

func TestCancelGrantRaceNeverStrandsALease(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		var racerFence uint64
		e := engine.New(fakeclock.New(t0), cancelOnGrant{cancel, &racerFence}, engine.Limits{})
		g := mustAcquire(t, e, "k", opts("h", time.Minute, 0))
		racer := queue(ctx, e, "k", 1, opts("racer", time.Minute, time.Hour))
		next := queue(t.Context(), e, "k", 1, opts("next", time.Minute, time.Hour))
		if _, err := e.Release("k", g.Token, false); err != nil {
			t.Fatal(err)
		}
		if r := <-racer; !errors.Is(r.err, engine.ErrCancelled) {
			t.Fatalf("racer: %+v, want ErrCancelled", r)
		}
		// The racer's lease was released at once and handed on.
		n := <-next
		want := engine.Previous{Fence: racerFence, Outcome: engine.OutcomeReleased, EndedAt: t0}
		if n.err != nil || racerFence == 0 || n.g.Previous != want {
			t.Fatalf("next waiter: %+v, want a grant after the racer's lease %+v", n, want)
		}
		if _, err := e.Release("k", n.g.Token, false); err != nil {
			t.Fatal(err)
		}
		wantStats(t, e, engine.Stats{})
	})
}

func TestForceRelease(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e, _, _ := newEngine(t, engine.Limits{})
		if _, err := e.ForceRelease("k"); !errors.Is(err, engine.ErrNotHeld) {
			t.Fatalf("force-release of a free key: err = %v, want ErrNotHeld", err)
		}
		g := mustAcquire(t, e, "k", engine.AcquireOptions{Owner: "h", TTL: time.Minute, OnError: engine.OnErrorStop})
		results := queue(t.Context(), e, "k", 1, opts("", time.Minute, time.Hour))
		ended, err := e.ForceRelease("k")
		if err != nil || ended.Fence != g.Fence {
			t.Fatalf("ForceRelease = %+v, %v; want fence %d", ended, err, g.Fence)
		}
		r := <-results
		if r.err != nil || r.g.Previous.Outcome != engine.OutcomeForced {
			t.Fatalf("waiter after force-release: %+v, want a grant with previous forced", r)
		}
		if _, err := e.Release("k", g.Token, false); !errors.Is(err, engine.ErrNotHolder) {
			t.Fatalf("release by the forced holder: err = %v, want ErrNotHolder", err)
		}
	})
}

func TestIdleKeysHoldNoMemory(t *testing.T) {
	e, _, _ := newEngine(t, engine.Limits{})
	for i := range 100_000 {
		key := fmt.Sprintf("key-%d", i)
		g := mustAcquire(t, e, key, opts("o", time.Minute, 0))
		if _, err := e.Release(key, g.Token, i%2 == 0); err != nil {
			t.Fatal(err)
		}
	}
	wantStats(t, e, engine.Stats{})
	if rows, _ := e.List("", "", 10); len(rows) != 0 {
		t.Fatalf("List after all released = %v, want none", rows)
	}
}

func TestFencesGrowAcrossRestart(t *testing.T) {
	clk := fakeclock.New(t0)
	e := engine.New(clk, nil, engine.Limits{})
	var last uint64
	for i := range 1000 {
		g := mustAcquire(t, e, fmt.Sprint(i%7), opts("o", time.Minute, 0))
		if g.Fence <= last {
			t.Fatalf("fence %d after %d", g.Fence, last)
		}
		if g.Fence < uint64(t0.UnixMicro()) {
			t.Fatalf("fence %d below the wall clock in µs %d", g.Fence, t0.UnixMicro())
		}
		last = g.Fence
		if _, err := e.Release(g.Key, g.Token, false); err != nil {
			t.Fatal(err)
		}
	}
	// A restart loses all state; a millisecond later the new engine's fences
	// still exceed every fence the old one issued (1000 grants in 1 ms).
	clk.Advance(time.Millisecond)
	restarted := engine.New(clk, nil, engine.Limits{})
	if g := mustAcquire(t, restarted, "0", opts("o", time.Minute, 0)); g.Fence <= last {
		t.Fatalf("fence after restart %d, want > %d", g.Fence, last)
	}
}

func TestLimits(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e, _, _ := newEngine(t, engine.Limits{MaxKeys: 2, MaxWaitersPerKey: 2, MaxWaiters: 3})
		mustAcquire(t, e, "a", opts("o", time.Minute, 0))
		mustAcquire(t, e, "b", opts("o", time.Minute, 0))
		if _, err := e.Acquire(t.Context(), "c", opts("o", time.Minute, 0)); !errors.Is(err, engine.ErrTooManyKeys) {
			t.Fatalf("third key: err = %v, want ErrTooManyKeys", err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		queue(ctx, e, "a", 2, opts("", time.Minute, time.Hour))
		if _, err := e.Acquire(ctx, "a", opts("o", time.Minute, time.Hour)); !errors.Is(err, engine.ErrTooManyWaiters) {
			t.Fatalf("third waiter on a: err = %v, want ErrTooManyWaiters", err)
		}
		queue(ctx, e, "b", 1, opts("", time.Minute, time.Hour))
		if _, err := e.Acquire(ctx, "b", opts("o", time.Minute, time.Hour)); !errors.Is(err, engine.ErrTooManyWaiters) {
			t.Fatalf("fourth waiter in all: err = %v, want ErrTooManyWaiters", err)
		}
		wantStats(t, e, engine.Stats{Keys: 2, Held: 2, Waiters: 3})
		cancel()
		synctest.Wait()
		wantStats(t, e, engine.Stats{Keys: 2, Held: 2})
	})
}

func TestCloseAnswersWaiters(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e, _, _ := newEngine(t, engine.Limits{})
		g := mustAcquire(t, e, "k", opts("h", time.Minute, 0))
		results := queue(t.Context(), e, "k", 3, opts("", time.Minute, time.Hour))
		e.Close()
		for range 3 {
			if r := <-results; !errors.Is(r.err, engine.ErrUnavailable) {
				t.Fatalf("waiter after close: err = %v, want ErrUnavailable", r.err)
			}
		}
		if _, err := e.Acquire(t.Context(), "x", opts("o", time.Minute, 0)); !errors.Is(err, engine.ErrUnavailable) {
			t.Fatalf("acquire after close: err = %v, want ErrUnavailable", err)
		}
		if _, err := e.Release("k", g.Token, false); err != nil {
			t.Fatalf("release after close: %v, want ok", err)
		}
		wantStats(t, e, engine.Stats{})
	})
}

func TestInspectAndList(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e, clk, _ := newEngine(t, engine.Limits{})
		mustAcquire(t, e, "user:1", engine.AcquireOptions{Owner: "h", TTL: time.Minute, OnError: engine.OnErrorStop})
		clk.Advance(time.Second)
		queue(t.Context(), e, "user:1", 3, opts("", time.Minute, time.Hour))
		info := e.Inspect("user:1", 2)
		if !info.Held || info.Holder.Owner != "h" || info.Holder.OnError != engine.OnErrorStop || info.Waiters != 3 || len(info.Queue) != 2 {
			t.Fatalf("Inspect = %+v", info)
		}
		if info.Queue[0].Owner != "w0" || info.Queue[1].Owner != "w1" || !info.Queue[0].WaitingSince.Equal(t0.Add(time.Second)) {
			t.Fatalf("queue = %+v, want w0, w1 in arrival order", info.Queue)
		}
		if idle := e.Inspect("nope", 10); idle.Held || idle.Waiters != 0 {
			t.Fatalf("idle key = %+v", idle)
		}
		for _, k := range []string{"user:3", "user:2", "job:1", "user:4"} {
			mustAcquire(t, e, k, opts("o-"+k, time.Minute, 0))
		}
		rows, next := e.List("user:", "", 2)
		if len(rows) != 2 || rows[0].Key != "user:1" || rows[1].Key != "user:2" || next != "user:2" || rows[0].Waiters != 3 {
			t.Fatalf("page 1 = %+v next %q", rows, next)
		}
		rows, next = e.List("user:", next, 2)
		if len(rows) != 2 || rows[0].Key != "user:3" || rows[1].Key != "user:4" || rows[1].Owner != "o-user:4" || next != "" {
			t.Fatalf("page 2 = %+v next %q, want user:3, user:4 and no next page", rows, next)
		}
		if rows, next = e.List("user:", "user:4", 2); len(rows) != 0 || next != "" {
			t.Fatalf("after the last key = %+v next %q, want empty", rows, next)
		}
		var oldest []string
		e.EachOldestWaiter(func(key string, since time.Time) { oldest = append(oldest, key+"@"+since.Sub(t0).String()) })
		if len(oldest) != 1 || oldest[0] != "user:1@1s" {
			t.Fatalf("oldest waiters = %v", oldest)
		}
	})
}

func TestEngineImportsNoFrameworks(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, banned := range []string{"labstack/echo", "prometheus", "spf13/viper", "net/http"} {
		if strings.Contains(string(out), banned) {
			t.Errorf("internal/engine depends on %s; the engine must stay pure", banned)
		}
	}
}

// TestRecycledKeyStateStartsClean reuses the record of a released key for
// another key and checks that nothing of the first key's lease, queue or
// expiry leaks into the second.
func TestRecycledKeyStateStartsClean(t *testing.T) {
	e, clk, rec := newEngine(t, engine.Limits{})
	g := mustAcquire(t, e, "a", opts("first", time.Second, 0))
	if _, err := e.Release("a", g.Token, false); err != nil {
		t.Fatal(err)
	}
	g2 := mustAcquire(t, e, "b", opts("second", time.Minute, 0))
	if info := e.Inspect("a", 10); info.Held || info.Waiters != 0 {
		t.Fatalf("Inspect(a) after release = %+v, want idle", info)
	}
	if info := e.Inspect("b", 10); !info.Held || info.Holder.Owner != "second" || info.Key != "b" {
		t.Fatalf("Inspect(b) = %+v, want held by second", info)
	}
	if _, err := e.Release("a", g2.Token, false); !errors.Is(err, engine.ErrNotHolder) {
		t.Fatalf("Release(a, b's token) = %v, want ErrNotHolder", err)
	}
	clk.Advance(2 * time.Second) // past a's old deadline, not b's
	if info := e.Inspect("b", 10); !info.Held {
		t.Fatalf("b expired at a's old deadline: %+v", info)
	}
	clk.Advance(time.Minute)
	wantStats(t, e, engine.Stats{})
	if got := rec.types(); got[len(got)-1] != "ended:expired" {
		t.Fatalf("last event = %v, want b's expiry", got[len(got)-1])
	}
}
