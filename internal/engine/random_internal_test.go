package engine

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// TestRandomOpsOnOneShard drives random acquires (some watching their
// position), releases ok and failed, renewals, force-releases, give-ups and
// the passing of time over a few keys that share one shard, so idle
// keyStates are recycled between them all the time. After every step the
// engine must pass Check, no key may have waiters without a holder, and
// every watching waiter's last reported position must be its place in the
// queue. Time is synctest's, so each seed replays exactly.
func TestRandomOpsOnOneShard(t *testing.T) {
	seeds := 200
	if testing.Short() {
		seeds = 20
	}
	for seed := range seeds {
		synctest.Test(t, func(t *testing.T) { randomOps(t, uint64(seed)) })
	}
}

// watcher is one acquire's view of itself.
type watcher struct {
	mu     sync.Mutex // guards the following
	pos    int
	done   bool
	g      Grant
	err    error
	cancel context.CancelFunc
}

func randomOps(t *testing.T, seed uint64) {
	e := New(SystemClock{}, nil, Limits{MaxWaitersPerKey: 5})
	defer e.Close()
	sh := e.shardFor("k0")
	var keys []string
	for i := 0; len(keys) < 4; i++ {
		if k := fmt.Sprint("k", i); e.shardFor(k) == sh {
			keys = append(keys, k)
		}
	}
	rng := rand.New(rand.NewPCG(seed, 7))
	var ws []*watcher
	tokens := map[string][]Token{} // every token granted per key, live or not
	for step := range 200 {
		k := keys[rng.IntN(len(keys))]
		switch rng.IntN(8) {
		case 0, 1, 2:
			ctx, cancel := context.WithCancel(context.Background())
			w := &watcher{cancel: cancel}
			o := AcquireOptions{TTL: time.Duration(1+rng.IntN(5)) * time.Second, Wait: time.Duration(rng.IntN(6)) * time.Second,
				OnError: OnError(rng.IntN(2))}
			if rng.IntN(2) == 0 {
				o.OnPosition = func(n int) { w.mu.Lock(); w.pos = n; w.mu.Unlock() }
			}
			ws = append(ws, w)
			go func() {
				g, err := e.Acquire(ctx, k, o)
				w.mu.Lock()
				w.g, w.err, w.done = g, err, true
				w.mu.Unlock()
			}()
		case 3:
			if ts := tokens[k]; len(ts) > 0 {
				_, _ = e.Release(k, ts[rng.IntN(len(ts))], rng.IntN(2) == 0)
			}
		case 4:
			if ts := tokens[k]; len(ts) > 0 {
				_, _ = e.Renew(k, ts[rng.IntN(len(ts))], time.Duration(rng.IntN(3))*time.Second)
			}
		case 5:
			_, _ = e.ForceRelease(k)
		case 6:
			time.Sleep(time.Duration(rng.IntN(1500)) * time.Millisecond)
		case 7:
			if len(ws) > 0 {
				ws[rng.IntN(len(ws))].cancel()
			}
		}
		synctest.Wait()
		for _, w := range ws {
			w.mu.Lock()
			if w.done && w.err == nil && w.g.Key != "" {
				tokens[w.g.Key] = append(tokens[w.g.Key], w.g.Token)
				w.g.Key = "" // collected
			}
			w.mu.Unlock()
		}
		if err := e.Check(); err != nil {
			t.Fatalf("seed %d step %d: %v", seed, step, err)
		}
		sh.mu.Lock()
		for _, k := range keys {
			ks := sh.keys[k]
			if ks == nil {
				continue
			}
			if ks.n > 0 && !ks.held {
				t.Errorf("seed %d step %d: key %s has %d waiters and no holder", seed, step, k, ks.n)
			}
			pos := 0
			for q := ks.head; q != nil; q = q.next {
				pos++
				if q.opts.OnPosition != nil && q.pos != pos {
					t.Errorf("seed %d step %d: key %s: waiter at %d was last told %d", seed, step, k, pos, q.pos)
				}
			}
		}
		sh.mu.Unlock()
		if t.Failed() {
			return
		}
	}
	for _, w := range ws {
		w.cancel()
	}
	time.Sleep(time.Hour) // every lease runs out
	synctest.Wait()
	if s := e.Stats(); s != (Stats{}) {
		t.Fatalf("seed %d: at the end Stats() = %+v, want all zero", seed, s)
	}
	if err := e.Check(); err != nil {
		t.Fatalf("seed %d: at the end: %v", seed, err)
	}
}
