package engine

import (
	"errors"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// stillClock is a clock whose time moves only when set and whose timers
// never fire, so a test can look at a lease past its deadline before any
// timer has expired it.
type stillClock struct {
	mu  sync.Mutex // guards now
	now time.Time
}

func (c *stillClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *stillClock) set(t time.Time) {
	c.mu.Lock()
	c.now = t
	c.mu.Unlock()
}

func (c *stillClock) AfterFunc(time.Duration, func()) Timer { return stillTimer{} }

type stillTimer struct{}

func (stillTimer) Stop() bool               { return true }
func (stillTimer) Reset(time.Duration) bool { return true }

func TestFencesIgnoreAWallClockOutOfRange(t *testing.T) {
	tests := []struct {
		name string
		now  time.Time
		want []uint64 // the first fences issued
	}{
		{"before 1970", time.Date(1969, 7, 20, 20, 17, 0, 0, time.UTC), []uint64{1, 2}},
		{"past MaxFence", time.UnixMicro(MaxFence).Add(time.Hour), []uint64{1, 2}},
		{"at MaxFence", time.UnixMicro(MaxFence), []uint64{MaxFence}},
		{"ordinary", time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), []uint64{1767225600000000, 1767225600000001}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := New(&stillClock{now: tt.now}, nil, Limits{})
			for i, want := range tt.want {
				g, err := e.Acquire(t.Context(), "k", AcquireOptions{TTL: time.Minute})
				if err != nil {
					t.Fatalf("grant %d: %v", i, err)
				}
				if g.Fence != want {
					t.Errorf("grant %d: fence %d, want %d", i, g.Fence, want)
				}
				if _, err := e.Release("k", g.Token, false); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

// TestFencesStopAtMaxFence: once MaxFence is issued, acquires and queued
// waiters are refused with ErrFencesExhausted rather than given a fence
// that JavaScript cannot read exactly or that does not grow.
func TestFencesStopAtMaxFence(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := New(SystemClock{}, nil, Limits{})
		e.fence.Store(MaxFence - 1)
		g, err := e.Acquire(t.Context(), "k", AcquireOptions{TTL: time.Minute})
		if err != nil || g.Fence != MaxFence {
			t.Fatalf("last grant: fence %d, err %v, want fence %d", g.Fence, err, uint64(MaxFence))
		}
		waited := make(chan error, 1)
		go func() {
			_, err := e.Acquire(t.Context(), "k", AcquireOptions{TTL: time.Minute, Wait: time.Hour})
			waited <- err
		}()
		synctest.Wait()
		if _, err := e.Acquire(t.Context(), "other", AcquireOptions{TTL: time.Minute}); !errors.Is(err, ErrFencesExhausted) {
			t.Errorf("new key after MaxFence: err = %v, want ErrFencesExhausted", err)
		}
		if _, err := e.Release("k", g.Token, false); err != nil {
			t.Fatal(err)
		}
		if err := <-waited; !errors.Is(err, ErrFencesExhausted) {
			t.Errorf("queued waiter after MaxFence: err = %v, want ErrFencesExhausted", err)
		}
		if s := e.Stats(); s != (Stats{}) {
			t.Errorf("Stats() = %+v, want all zero", s)
		}
		if err := e.Check(); err != nil {
			t.Error(err)
		}
	})
}

// TestListAgreesWithInspectPastTheDeadline: a lease whose deadline has
// passed is over for listing as for inspection, before its timer runs.
func TestListAgreesWithInspectPastTheDeadline(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clk := &stillClock{now: t0}
	e := New(clk, nil, Limits{})
	if _, err := e.Acquire(t.Context(), "k", AcquireOptions{Owner: "h", TTL: time.Second}); err != nil {
		t.Fatal(err)
	}
	if rows, _ := e.List("", "", 10); len(rows) != 1 || !rows[0].Held || rows[0].Owner != "h" {
		t.Fatalf("List before the deadline = %+v, want k held by h", rows)
	}
	clk.set(t0.Add(time.Second))
	if info := e.Inspect("k", 10); info.Held {
		t.Fatalf("Inspect at the deadline = %+v, want not held", info)
	}
	if rows, _ := e.List("", "", 10); len(rows) != 0 {
		t.Fatalf("List at the deadline = %+v, want no active key (Inspect says it is free)", rows)
	}
}
