package engine_test

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mutexd/mutexd/internal/engine"
	"github.com/mutexd/mutexd/internal/fakeclock"
)

// The engine's targets (see BENCHMARKS.md): uncontended acquire+release
// ≤ 300 ns with ≤ 2 allocations, no global lock on the hot path, and
// ≤ 256 bytes of heap per held lease with a 16-byte key. These are
// benchmarks, not tests: CI runs each once so none rots, and the figures
// live in BENCHMARKS.md.

// benchKeys returns n distinct 16-byte keys.
func benchKeys(n int) []string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("bench:%010d", i)
	}
	return keys
}

// BenchmarkUncontended is one acquire and one release of a free key per op.
func BenchmarkUncontended(b *testing.B) {
	e := engine.New(engine.SystemClock{}, nil, engine.Limits{})
	ctx := context.Background()
	o := engine.AcquireOptions{Owner: "bench", TTL: time.Minute}
	b.ReportAllocs()
	for b.Loop() {
		g, err := e.Acquire(ctx, "bench:0000000001", o)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := e.Release(g.Key, g.Token, false); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkUncontendedRemembering is BenchmarkUncontended as the daemon
// runs it by default: with remembered outcomes, so each release leaves a
// memo that the next grant takes back.
func BenchmarkUncontendedRemembering(b *testing.B) {
	e := engine.New(engine.SystemClock{}, nil, engine.Limits{RememberOutcome: 10 * time.Minute, MaxRemembered: 100_000})
	ctx := context.Background()
	o := engine.AcquireOptions{Owner: "bench", TTL: time.Minute}
	b.ReportAllocs()
	for b.Loop() {
		g, err := e.Acquire(ctx, "bench:0000000001", o)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := e.Release(g.Key, g.Token, false); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkUncontendedParallel is acquire+release over distinct keys from
// GOMAXPROCS goroutines: it shows whether the hot path takes a global lock.
func BenchmarkUncontendedParallel(b *testing.B) {
	e := engine.New(engine.SystemClock{}, nil, engine.Limits{})
	ctx := context.Background()
	keys := benchKeys(1024)
	var next atomic.Int64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		key := keys[int(next.Add(1))%len(keys)]
		o := engine.AcquireOptions{Owner: "bench", TTL: time.Minute}
		for pb.Next() {
			g, err := e.Acquire(ctx, key, o)
			if err != nil {
				b.Error(err)
				return
			}
			if _, err := e.Release(key, g.Token, false); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkContendedHandoff has N goroutines cycling acquire+release on one
// key, so nearly every grant is a hand-off to a queued waiter. ns/op is the
// cost of one hand-off, wake-up of the waiting goroutine included.
func BenchmarkContendedHandoff(b *testing.B) {
	for _, n := range []int{2, 16, 64} {
		b.Run(fmt.Sprintf("waiters=%d", n), func(b *testing.B) {
			e := engine.New(engine.SystemClock{}, nil, engine.Limits{})
			ctx := context.Background()
			o := engine.AcquireOptions{Owner: "bench", TTL: time.Minute, Wait: time.Minute}
			var left atomic.Int64
			left.Store(int64(b.N))
			var owners [64]atomic.Int64
			var changes atomic.Int64
			var last atomic.Int64
			last.Store(-1)
			b.ReportAllocs()
			b.ResetTimer()
			var wg sync.WaitGroup
			for i := range n {
				wg.Go(func() {
					for left.Add(-1) >= 0 {
						g, err := e.Acquire(ctx, "contended", o)
						if err != nil {
							b.Error(err)
							return
						}
						if last.Swap(int64(i)) != int64(i) {
							changes.Add(1)
						}
						owners[i].Add(1)
						if _, err := e.Release("contended", g.Token, false); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			b.StopTimer()
			b.ReportMetric(float64(changes.Load())/float64(b.N), "owner-changes/op")
		})
	}
}

// BenchmarkHeldLeaseMemory holds b.N leases on 16-byte keys and reports the
// heap they take per lease (keys included).
func BenchmarkHeldLeaseMemory(b *testing.B) {
	heldLeaseMemory(b, func(int) string { return "" })
}

// BenchmarkHeldLeaseMemoryWithRequestID is the same with a 16-byte request
// id on every acquire (the ids' own bytes included).
func BenchmarkHeldLeaseMemoryWithRequestID(b *testing.B) {
	heldLeaseMemory(b, func(i int) string { return fmt.Sprintf("req-%012d", i) })
}

func heldLeaseMemory(b *testing.B, id func(int) string) {
	n := max(b.N, 10_000) // small N would measure noise, not leases
	keys := benchKeys(n)
	e := engine.New(engine.SystemClock{}, nil, engine.Limits{})
	ctx := context.Background()
	o := engine.AcquireOptions{Owner: "", TTL: time.Hour}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	b.ResetTimer()
	for i, k := range keys {
		o.RequestID = id(i)
		if _, err := e.Acquire(ctx, k, o); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	runtime.GC()
	runtime.ReadMemStats(&after)
	if got := e.Stats().Held; got != n {
		b.Fatalf("Stats().Held = %d, want %d", got, n)
	}
	b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/float64(n), "bytes/lease")
	runtime.KeepAlive(keys)
	runtime.KeepAlive(e)
}

// BenchmarkExpiryStorm holds 100,000 leases with the same deadline on a
// fake clock and measures expiring all of them at once; ns/op is per lease.
func BenchmarkExpiryStorm(b *testing.B) {
	const leases = 100_000
	keys := benchKeys(leases)
	ctx := context.Background()
	o := engine.AcquireOptions{Owner: "bench", TTL: time.Second}
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		clk := fakeclock.New(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
		e := engine.New(clk, nil, engine.Limits{})
		for _, k := range keys {
			if _, err := e.Acquire(ctx, k, o); err != nil {
				b.Fatal(err)
			}
		}
		b.StartTimer()
		clk.Advance(time.Second)
		b.StopTimer()
		if got := e.Stats().Held; got != 0 {
			b.Fatalf("after the storm Stats().Held = %d, want 0", got)
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*leases), "ns/lease")
}
