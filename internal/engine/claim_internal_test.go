package engine

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// manualClock is a clock whose time moves only by advance, which runs the
// timers that come due (outside any engine lock).
type manualClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*manualTimer
}

type manualTimer struct {
	c       *manualClock
	at      time.Time
	f       func()
	pending bool
}

func (c *manualClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *manualClock) AfterFunc(d time.Duration, f func()) Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &manualTimer{c: c, at: c.now.Add(d), f: f, pending: true}
	c.timers = append(c.timers, t)
	return t
}

func (t *manualTimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	was := t.pending
	t.pending = false
	return was
}

func (t *manualTimer) Reset(d time.Duration) bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	was := t.pending
	t.at, t.pending = t.c.now.Add(d), true
	return was
}

func (c *manualClock) advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
	for {
		c.mu.Lock()
		var due *manualTimer
		for _, t := range c.timers {
			if t.pending && !t.at.After(c.now) && (due == nil || t.at.Before(due.at)) {
				due = t
			}
		}
		if due != nil {
			due.pending = false
		}
		c.mu.Unlock()
		if due == nil {
			return
		}
		due.f()
	}
}

// TestResendBeforeCancelSeenKeepsClaimedLease: a waiter with a request id
// is granted while its caller's context ends; before its Acquire takes the
// shard lock to see the cancellation, the caller's re-sent acquire claims
// the lease (and gets its token). The cancelled Acquire must not then set
// a claim timer on that lease: the lease now has a holder who knows its
// token, and releasing it at the end of the grace ends a live lease before
// its deadline behind its holder's back.
func TestResendBeforeCancelSeenKeepsClaimedLease(t *testing.T) {
	clk := &manualClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	e := New(clk, nil, Limits{DetachGrace: 10 * time.Second})
	h, err := e.Acquire(t.Context(), "k", AcquireOptions{Owner: "h", TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	racerOpts := AcquireOptions{Owner: "racer", TTL: time.Hour, Wait: time.Hour, RequestID: "r"}
	ctx, cancel := context.WithCancel(t.Context())
	type result struct {
		g   Grant
		err error
	}
	racer := make(chan result, 1)
	go func() {
		g, err := e.Acquire(ctx, "k", racerOpts)
		racer <- result{g, err}
	}()
	for e.Inspect("k", 0).Waiters != 1 {
		time.Sleep(time.Millisecond)
	}

	sh := e.shardFor("k")
	sh.mu.Lock()
	// The caller's connection drops: its Acquire wakes on ctx.Done and
	// waits for the shard lock. Meanwhile the holder releases (the racer
	// is granted) and the caller's re-sent acquire gets the lease.
	cancel()
	time.Sleep(20 * time.Millisecond) // let the racer block on the lock (not needed for the outcome)
	now := clk.Now()
	l, ok := sh.findLocked("k", h.Token, now)
	if !ok {
		t.Fatal("holder lease not found")
	}
	sh.endLocked(l, OutcomeReleased, now)
	resend := racerOpts
	resend.Wait = 0
	again, w, err := sh.tryLocked("k", &resend)
	sh.mu.Unlock()
	if err != nil || w != nil {
		t.Fatalf("re-sent acquire: waiter %v, err %v; want the racer's grant", w, err)
	}
	if r := <-racer; !errors.Is(r.err, ErrCancelled) {
		t.Fatalf("racer: %+v, want ErrCancelled", r)
	}

	// The re-sender holds the lease and works under it, well within its
	// TTL; the grace of the gone caller passes.
	clk.advance(20 * time.Second)
	if info := e.Inspect("k", 0); info.Holder.Fence != again.Fence {
		t.Fatalf("claimed lease (fence %d) ended before its deadline: %+v", again.Fence, info)
	}
	if _, err := e.Release("k", again.Token, false); err != nil {
		t.Fatalf("release by the re-sender who holds the token: %v", err)
	}
	if err := e.Check(); err != nil {
		t.Fatal(err)
	}
}
