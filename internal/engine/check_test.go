package engine

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// TestCheckDuringRandomOperations runs random operations on the real clock
// while another goroutine checks the invariants over and over: every
// snapshot must be consistent, and locking all shards must not deadlock
// with the operations.
func TestCheckDuringRandomOperations(t *testing.T) {
	e := New(SystemClock{}, nil, Limits{MaxWaitersPerKey: 8})
	keys := []string{"a", "b", "c"}
	stop := make(chan struct{})
	var checks int
	var checkErr error
	var checker sync.WaitGroup
	checker.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			if err := e.Check(); err != nil {
				checkErr = err
				return
			}
			checks++
		}
	})
	deadline := time.Now().Add(500 * time.Millisecond)
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 2))
			for time.Now().Before(deadline) {
				key := keys[rng.IntN(len(keys))]
				ctx, cancel := context.WithTimeout(context.Background(), time.Duration(rng.IntN(10))*time.Millisecond)
				g, err := e.Acquire(ctx, key, AcquireOptions{TTL: time.Duration(1+rng.IntN(20)) * time.Millisecond,
					Wait: time.Duration(rng.IntN(15)) * time.Millisecond, OnError: OnError(rng.IntN(2))})
				cancel()
				if err != nil {
					continue
				}
				switch rng.IntN(4) {
				case 0: // let it expire
				case 1:
					_, _ = e.ForceRelease(key)
				default:
					_, _ = e.Renew(key, g.Token, 0)
					_, _ = e.Release(key, g.Token, rng.IntN(2) == 0)
				}
			}
		})
	}
	wg.Wait()
	close(stop)
	checker.Wait()
	if checkErr != nil {
		t.Fatal(checkErr)
	}
	if checks == 0 {
		t.Fatal("the checker never ran")
	}
	if err := e.Check(); err != nil {
		t.Fatal(err)
	}
}

func TestCheckFindsCorruption(t *testing.T) {
	tests := []struct {
		name    string
		corrupt func(e *Engine, ks *keyState)
	}{
		{"keys counter", func(e *Engine, _ *keyState) { e.keys.Add(1) }},
		{"held counter", func(e *Engine, _ *keyState) { e.held.Add(-1) }},
		{"waiters counter", func(e *Engine, _ *keyState) { e.waiters.Add(2) }},
		{"queue length", func(_ *Engine, ks *keyState) { ks.n++ }},
		{"position watchers", func(_ *Engine, ks *keyState) { ks.watchers++ }},
		{"idle key kept", func(e *Engine, ks *keyState) {
			sh := e.shardFor("idle")
			sh.keys["idle"] = &keyState{key: "idle", lease: lease{heapIdx: -1}, limit: 1}
			e.keys.Add(1)
		}},
		{"held key missing from the heap", func(e *Engine, ks *keyState) {
			e.shardFor(ks.key).expiries.remove(&ks.lease)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				e := New(SystemClock{}, nil, Limits{})
				defer e.Close()
				if _, err := e.Acquire(t.Context(), "k", AcquireOptions{TTL: time.Hour}); err != nil {
					t.Fatal(err)
				}
				ctx, cancel := context.WithCancel(t.Context())
				done := make(chan struct{})
				go func() { _, _ = e.Acquire(ctx, "k", AcquireOptions{TTL: time.Hour, Wait: time.Hour}); close(done) }()
				synctest.Wait()
				if err := e.Check(); err != nil {
					t.Fatalf("before corruption: %v", err)
				}
				sh := e.shardFor("k")
				sh.mu.Lock()
				tt.corrupt(e, sh.keys["k"])
				sh.mu.Unlock()
				if err := e.Check(); !errors.Is(err, ErrInconsistent) {
					t.Fatalf("Check after corrupting the %s = %v, want ErrInconsistent", tt.name, err)
				}
				cancel()
				<-done
			})
		})
	}
}
