package engine_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/mutexd/mutexd/internal/engine"
	"github.com/mutexd/mutexd/internal/fakeclock"
)

// positions records what OnPosition reports.
type positions struct {
	mu  sync.Mutex
	got []int
}

func (p *positions) report(n int) {
	p.mu.Lock()
	p.got = append(p.got, n)
	p.mu.Unlock()
}

func (p *positions) take() []int {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := p.got
	p.got = nil
	return out
}

func wantPositions(t *testing.T, p *positions, want ...int) {
	t.Helper()
	if got := p.take(); !slices.Equal(got, want) {
		t.Fatalf("positions = %v, want %v", got, want)
	}
}

func TestPositionsFollowTheQueue(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e, _, _ := newEngine(t, engine.Limits{})
		h := mustAcquire(t, e, "k", opts("h", time.Minute, 0))
		ahead := queue(t.Context(), e, "k", 2, opts("", time.Minute, time.Hour))
		var p positions
		o := opts("me", time.Minute, time.Hour)
		o.OnPosition = p.report
		mine := queue(t.Context(), e, "k", 1, o)
		wantPositions(t, &p, 3)
		// Someone behind arrives and leaves: no move.
		ctx, cancel := context.WithCancel(t.Context())
		behind := queue(ctx, e, "k", 1, opts("", time.Minute, time.Hour))
		cancel()
		<-behind
		wantPositions(t, &p)

		token := h.Token
		for want := 2; want >= 1; want-- {
			if _, err := e.Release("k", token, false); err != nil {
				t.Fatal(err)
			}
			r := <-ahead
			wantPositions(t, &p, want)
			token = r.g.Token
		}
		if _, err := e.Release("k", token, false); err != nil {
			t.Fatal(err)
		}
		if r := <-mine; r.err != nil {
			t.Fatalf("streaming waiter: %+v, want its grant", r)
		}
		wantPositions(t, &p) // nothing after it left the queue
	})
}

func TestPositionsMoveOnTimeoutAndCancelAhead(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e, clk, _ := newEngine(t, engine.Limits{})
		mustAcquire(t, e, "k", opts("h", time.Hour, 0))
		short := queue(t.Context(), e, "k", 1, opts("", time.Hour, time.Second))
		ctx, cancel := context.WithCancel(t.Context())
		gone := queue(ctx, e, "k", 1, opts("", time.Hour, time.Hour))
		var p positions
		o := opts("me", time.Hour, time.Hour)
		o.OnPosition = p.report
		queue(t.Context(), e, "k", 1, o)
		wantPositions(t, &p, 3)
		clk.Advance(time.Second)
		if r := <-short; !errors.Is(r.err, engine.ErrTimeout) {
			t.Fatalf("short waiter: %v, want timeout", r.err)
		}
		wantPositions(t, &p, 2)
		cancel()
		<-gone
		wantPositions(t, &p, 1)
	})
}

func TestPositionsNotReportedOnAbort(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e, _, _ := newEngine(t, engine.Limits{})
		g := mustAcquire(t, e, "k", engine.AcquireOptions{Owner: "h", TTL: time.Minute, OnError: engine.OnErrorStop})
		queue(t.Context(), e, "k", 1, opts("", time.Minute, time.Hour))
		var p positions
		o := opts("me", time.Minute, time.Hour)
		o.OnPosition = p.report
		mine := queue(t.Context(), e, "k", 1, o)
		wantPositions(t, &p, 2)
		if _, err := e.Release("k", g.Token, true); err != nil {
			t.Fatal(err)
		}
		if r := <-mine; !errors.Is(r.err, engine.ErrAborted) {
			t.Fatalf("err = %v, want ErrAborted", r.err)
		}
		wantPositions(t, &p)
	})
}

func TestRenewIsReported(t *testing.T) {
	e, clk, rec := newEngine(t, engine.Limits{})
	g := mustAcquire(t, e, "k", opts("h", time.Minute, 0))
	clk.Advance(10 * time.Second)
	r, err := e.Renew("k", g.Token, 2*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if n := len(rec.events); n != 2 {
		t.Fatalf("%d events, want granted and renewed", n)
	}
	granted, renewed := rec.events[0], rec.events[1]
	if !granted.ExpiresAt.Equal(t0.Add(time.Minute)) {
		t.Fatalf("granted ExpiresAt = %v, want %v", granted.ExpiresAt, t0.Add(time.Minute))
	}
	want := engine.Event{Type: engine.EventRenewed, Key: "k", Owner: "h", Fence: g.Fence, Time: t0.Add(10 * time.Second), ExpiresAt: r.ExpiresAt}
	if renewed != want {
		t.Fatalf("renewed = %+v, want %+v", renewed, want)
	}
}

// TestPositionsFarBackAreCoalesced: a departure tells the first places at
// once and the places behind them on the next position tick, each with its
// exact place.
func TestPositionsFarBackAreCoalesced(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e, clk, _ := newEngine(t, engine.Limits{})
		h := mustAcquire(t, e, "k", opts("h", time.Hour, 0))
		const n = 200
		got := make([]positions, n)
		done := make(chan result, n)
		for i := range n {
			o := opts(fmt.Sprint(i), time.Hour, time.Hour)
			o.OnPosition = got[i].report
			go func() {
				g, err := e.Acquire(t.Context(), "k", o)
				done <- result{i, g, err}
			}()
			synctest.Wait()
			wantPositions(t, &got[i], i+1)
		}
		if _, err := e.Release("k", h.Token, false); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if r := <-done; r.i != 0 || r.err != nil {
			t.Fatalf("first grant: %+v, want waiter 0", r)
		}
		for i := 1; i <= 64; i++ {
			wantPositions(t, &got[i], i)
		}
		for i := 65; i < n; i++ {
			wantPositions(t, &got[i]) // not yet: on the next tick
		}
		clk.Advance(time.Second)
		synctest.Wait()
		for i := 65; i < n; i++ {
			wantPositions(t, &got[i], i)
		}
		if err := e.Check(); err != nil {
			t.Fatal(err)
		}
		clk.Advance(time.Second) // nothing moved: nothing reported
		for i := 1; i < n; i++ {
			wantPositions(t, &got[i])
		}
	})
}

// TestPositionReportsAreLinear: draining a queue of n position watchers
// costs O(n) reports, not one report per watcher per departure (O(n²):
// 10,000 streaming waiters once took 52 s of CPU under the shard lock).
func TestPositionReportsAreLinear(t *testing.T) {
	const n = 5_000 // under -race, at most 8,128 goroutines may live
	for _, tc := range []struct {
		name  string
		drain func(e *engine.Engine, clk *fakeclock.Clock, h engine.Grant)
	}{
		{"timeouts", func(e *engine.Engine, clk *fakeclock.Clock, _ engine.Grant) {
			clk.Advance(time.Minute)
		}},
		{"grants", func(e *engine.Engine, _ *fakeclock.Clock, h engine.Grant) {
			_, _ = e.Release("k", h.Token, false)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				e, clk, _ := newEngine(t, engine.Limits{})
				h := mustAcquire(t, e, "k", opts("h", time.Hour, 0))
				var reports atomic.Int64
				o := opts("w", time.Hour, time.Minute)
				o.OnPosition = func(int) { reports.Add(1) }
				var wg sync.WaitGroup
				for range n {
					wg.Go(func() {
						g, err := e.Acquire(t.Context(), "k", o)
						if err == nil {
							_, _ = e.Release("k", g.Token, false) // hand on at once
						}
					})
				}
				synctest.Wait()
				reports.Store(0)
				tc.drain(e, clk, h)
				wg.Wait()
				if got, limit := reports.Load(), int64(100*n); got > limit {
					t.Fatalf("draining %d watchers took %d position reports, want at most %d", n, got, limit)
				}
				if s := e.Stats(); s.Waiters != 0 {
					t.Fatalf("Stats() = %+v after the drain, want no waiters", s)
				}
				if err := e.Check(); err != nil {
					t.Fatal(err)
				}
			})
		})
	}
}
