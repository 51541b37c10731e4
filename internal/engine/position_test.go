package engine_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/mutexd/mutexd/internal/engine"
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
