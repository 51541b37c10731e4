package engine_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	"github.com/mutexd/mutexd/internal/engine"
)

// TestGrantToAGoneCaller: a grant whose caller's context had already
// ended is abandoned, never left held for its whole TTL with nobody able
// to release it: released at once without a request id, kept for a
// re-send for the detach grace with one, and released then if unclaimed.
func TestGrantToAGoneCaller(t *testing.T) {
	gone, cancel := context.WithCancel(t.Context())
	cancel()
	ttl := time.Hour
	t.Run("without a request id", func(t *testing.T) {
		e, _, _ := newEngine(t, engine.Limits{})
		if _, err := e.Acquire(gone, "k", opts("o", ttl, 0)); !errors.Is(err, engine.ErrCancelled) {
			t.Fatalf("err = %v, want ErrCancelled", err)
		}
		wantStats(t, e, engine.Stats{})
	})
	t.Run("with a request id, unclaimed", func(t *testing.T) {
		e, clk, _ := newEngine(t, engine.Limits{})
		o := opts("o", ttl, 0)
		o.RequestID = "r1"
		if _, err := e.Acquire(gone, "k", o); !errors.Is(err, engine.ErrCancelled) {
			t.Fatalf("err = %v, want ErrCancelled", err)
		}
		if s := e.Stats(); s.Held != 1 {
			t.Fatalf("Stats() = %+v, want the lease kept for a re-send", s)
		}
		clk.Advance(engine.DefaultDetachGrace)
		if s := e.Stats(); s.Held != 0 {
			t.Fatalf("after the detach grace: Stats() = %+v, want the unclaimed lease released", s)
		}
		if err := e.Check(); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("with a request id, claimed by a re-send", func(t *testing.T) {
		e, clk, _ := newEngine(t, engine.Limits{})
		o := opts("o", ttl, 0)
		o.RequestID = "r1"
		if _, err := e.Acquire(gone, "k", o); !errors.Is(err, engine.ErrCancelled) {
			t.Fatalf("err = %v, want ErrCancelled", err)
		}
		g, err := e.Acquire(t.Context(), "k", o)
		if err != nil {
			t.Fatalf("re-send: %v, want the kept lease", err)
		}
		clk.Advance(2 * engine.DefaultDetachGrace)
		if _, err := e.Release("k", g.Token, false); err != nil {
			t.Fatalf("release by the re-sender after the grace: %v, want its lease still live", err)
		}
		if err := e.Check(); err != nil {
			t.Fatal(err)
		}
	})
}

// TestWaiterThatWontReturnLeaves: a waiter with a request id whose
// context ends with ErrWontReturn (its token was revoked) leaves the
// queue at once instead of keeping its place for the detach grace.
func TestWaiterThatWontReturnLeaves(t *testing.T) {
	for _, tt := range []struct {
		name  string
		cause error
		want  int // waiters left right after the cancellation
	}{
		{"cut connection", context.Canceled, 1},
		{"revoked", fmt.Errorf("revoked: %w", engine.ErrWontReturn), 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				e, _, _ := newEngine(t, engine.Limits{})
				mustAcquire(t, e, "k", opts("h", time.Hour, 0))
				ctx, cancel := context.WithCancelCause(t.Context())
				o := opts("w", time.Hour, time.Hour)
				o.RequestID = "r1"
				done := make(chan error, 1)
				go func() {
					_, err := e.Acquire(ctx, "k", o)
					done <- err
				}()
				synctest.Wait()
				cancel(tt.cause)
				if err := <-done; !errors.Is(err, engine.ErrCancelled) {
					t.Fatalf("err = %v, want ErrCancelled", err)
				}
				if got := e.Stats().Waiters; got != tt.want {
					t.Fatalf("waiters = %d, want %d", got, tt.want)
				}
				if err := e.Check(); err != nil {
					t.Fatal(err)
				}
			})
		})
	}
}
