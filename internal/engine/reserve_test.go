package engine_test

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/mutexd/mutexd/internal/engine"
)

// TestReservedShare: the last ReservedKeys of MaxKeys and ReservedWaiters
// of MaxWaiters go only to acquires with Reserve, and a Reserve acquire is
// still bounded by the whole limit.
func TestReservedShare(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e, _, _ := newEngine(t, engine.Limits{MaxKeys: 3, ReservedKeys: 1, MaxWaiters: 3, ReservedWaiters: 2})
		reserve := func(o engine.AcquireOptions) engine.AcquireOptions { o.Reserve = true; return o }
		mustAcquire(t, e, "a", opts("client", time.Minute, 0))
		mustAcquire(t, e, "b", opts("client", time.Minute, 0))
		if _, err := e.Acquire(t.Context(), "c", opts("client", time.Minute, 0)); !errors.Is(err, engine.ErrTooManyKeys) {
			t.Fatalf("client's third key of 3 with 1 reserved: err = %v, want ErrTooManyKeys", err)
		}
		mustAcquire(t, e, "c", reserve(opts("admin", time.Minute, 0)))
		if _, err := e.Acquire(t.Context(), "d", reserve(opts("admin", time.Minute, 0))); !errors.Is(err, engine.ErrTooManyKeys) {
			t.Fatalf("admin's fourth key of 3: err = %v, want ErrTooManyKeys", err)
		}

		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		queue(ctx, e, "a", 1, opts("client", time.Minute, time.Hour))
		if _, err := e.Acquire(ctx, "a", opts("client", time.Minute, time.Hour)); !errors.Is(err, engine.ErrTooManyWaiters) {
			t.Fatalf("client's second waiter of 3 with 2 reserved: err = %v, want ErrTooManyWaiters", err)
		}
		queue(ctx, e, "b", 2, reserve(opts("admin", time.Minute, time.Hour)))
		if _, err := e.Acquire(ctx, "c", reserve(opts("admin", time.Minute, time.Hour))); !errors.Is(err, engine.ErrTooManyWaiters) {
			t.Fatalf("admin's fourth waiter of 3: err = %v, want ErrTooManyWaiters", err)
		}
		wantStats(t, e, engine.Stats{Keys: 3, Held: 3, Waiters: 3})
		cancel()
		synctest.Wait()
		wantStats(t, e, engine.Stats{Keys: 3, Held: 3})
	})
}
