package engine

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// TestRandomOpsOnOneShard drives random acquires (some watching their
// position, some with a request id that other acquires re-send, some with
// a max hold or a lock-delay, on mutexes and semaphores, now and then with
// a limit that disagrees), releases ok and failed, renewals,
// force-releases, give-ups, pauses and resumes of keys and prefixes,
// drains, fence checks and the passing of time over a few keys that share
// one shard, so idle keyStates are recycled between them all the time,
// and with a memory of outcomes small enough to evict. After every step
// the engine must pass Check, no key may have waiters while a slot is free
// unless paused or delayed, every watching waiter's last reported position
// must be its place in the queue, and a re-sent request id that got a
// grant must get the same lease. Time is synctest's, so each seed replays
// exactly.
func TestRandomOpsOnOneShard(t *testing.T) {
	seeds := *randomSeeds
	if testing.Short() {
		seeds = 20
	}
	for i := range seeds {
		seed := *randomBase + uint64(i)
		synctest.Test(t, func(t *testing.T) { randomOps(t, seed) })
	}
}

// More or other seeds than CI's: -random.seeds 2000 -random.base 1234
// (make stress). Each seed replays exactly.
var (
	randomSeeds = flag.Int("random.seeds", 200, "seeds TestRandomOpsOnOneShard runs")
	randomBase  = flag.Uint64("random.base", 0, "first seed of TestRandomOpsOnOneShard")
)

// watcher is one acquire's view of itself.
type watcher struct {
	mu     sync.Mutex // guards the following
	pos    int
	done   bool
	g      Grant
	id     string // the request id of a grant
	err    error
	cancel context.CancelFunc
}

func randomOps(t *testing.T, seed uint64) {
	e := New(SystemClock{}, nil, Limits{MaxWaitersPerKey: 5, DetachGrace: 2 * time.Second,
		RememberOutcome: 20 * time.Second, MaxRemembered: numShards * 3})
	defer e.Close()
	sh := e.shardFor("k0")
	var keys []string
	for i := 0; len(keys) < 4; i++ {
		if k := fmt.Sprint("k", i); e.shardFor(k) == sh {
			keys = append(keys, k)
		}
	}
	rng := rand.New(rand.NewPCG(seed, 7))
	limits := map[string]int{keys[0]: 1, keys[1]: 0, keys[2]: 2, keys[3]: 3}
	var ws []*watcher
	tokens := map[string][]Token{} // every token granted per key, live or not
	type idGrant struct {
		key, id string
	}
	granted := map[idGrant]Grant{} // the grant each request id got
	for step := range 200 {
		k := keys[rng.IntN(len(keys))]
		switch rng.IntN(12) {
		case 0, 1, 2:
			ctx, cancel := context.WithCancel(context.Background())
			w := &watcher{cancel: cancel}
			o := AcquireOptions{TTL: time.Duration(1+rng.IntN(5)) * time.Second, Wait: time.Duration(rng.IntN(6)) * time.Second,
				OnError: OnError(rng.IntN(2)), Limit: limits[k]}
			if rng.IntN(2) == 0 {
				o.OnPosition = func(n int) { w.mu.Lock(); w.pos = n; w.mu.Unlock() }
			}
			if rng.IntN(2) == 0 {
				o.RequestID = fmt.Sprint("r", rng.IntN(4))
			}
			if rng.IntN(4) == 0 {
				o.MaxHold = time.Duration(1+rng.IntN(4)) * time.Second
			}
			if rng.IntN(4) == 0 {
				o.LockDelay = time.Duration(rng.IntN(3)) * time.Second
			}
			if rng.IntN(20) == 0 {
				o.Limit = 4 // disagrees with every key
			}
			ws = append(ws, w)
			go func() {
				g, err := e.Acquire(ctx, k, o)
				w.mu.Lock()
				w.g, w.err, w.done = g, err, true
				w.mu.Unlock()
				if err != nil && !errors.Is(err, ErrTimeout) && !errors.Is(err, ErrCancelled) && !errors.Is(err, ErrAborted) &&
					!errors.Is(err, ErrSuperseded) && !errors.Is(err, ErrLeaseEnded) && !errors.Is(err, ErrLimitMismatch) &&
					!errors.Is(err, ErrDrained) && !errors.Is(err, ErrTooManyWaiters) && !errors.Is(err, ErrUnavailable) {
					t.Errorf("acquire: unexpected error %v", err)
				}
				if err == nil && o.RequestID != "" {
					w.mu.Lock()
					w.id = o.RequestID
					w.mu.Unlock()
				}
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
		case 8:
			if rng.IntN(2) == 0 {
				e.Pause(k)
			} else {
				e.Resume(k)
			}
		case 9:
			switch rng.IntN(3) {
			case 0:
				e.PausePrefix("k")
			case 1:
				e.ResumePrefix("k")
			default:
				e.Drain(k, "test")
			}
		case 10:
			if ts := tokens[k]; len(ts) > 0 {
				_ = e.CheckFence(k, uint64(rng.IntN(3)))
			}
			_ = e.Inspect(k, 3)
		case 11:
			if ts := tokens[k]; len(ts) > 0 {
				_, _ = e.Release(k, ts[len(ts)-1], false)
			}
		}
		synctest.Wait()
		for _, w := range ws {
			w.mu.Lock()
			if w.done && w.err == nil && w.g.Key != "" {
				tokens[w.g.Key] = append(tokens[w.g.Key], w.g.Token)
				if w.id != "" {
					ig := idGrant{w.g.Key, w.id}
					if first, ok := granted[ig]; ok && first.Fence != w.g.Fence && first.Token == w.g.Token {
						t.Errorf("seed %d step %d: request id %s got token of fence %d for fence %d", seed, step, w.id, first.Fence, w.g.Fence)
					}
					// A renewal in between may have moved the deadline and TTL.
					if first, ok := granted[ig]; ok && first.Fence == w.g.Fence && (first.Token != w.g.Token || first.Waited != w.g.Waited || first.Previous != w.g.Previous) {
						t.Errorf("seed %d step %d: request id %s re-sent got %+v, first %+v", seed, step, w.id, w.g, first)
					}
					granted[ig] = w.g
				}
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
			if ks.n > 0 && ks.free() && ks.grantable(time.Now()) {
				t.Errorf("seed %d step %d: key %s has %d waiters and a free slot", seed, step, k, ks.n)
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
	e.ResumePrefix("k")
	for _, k := range keys {
		e.Resume(k)
	}
	time.Sleep(time.Hour) // every lease, detach grace and lock-delay runs out
	synctest.Wait()
	if s := e.Stats(); s != (Stats{Remembered: s.Remembered}) {
		t.Fatalf("seed %d: at the end Stats() = %+v, want all zero", seed, s)
	}
	if err := e.Check(); err != nil {
		t.Fatalf("seed %d: at the end: %v", seed, err)
	}
}
