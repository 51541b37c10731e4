package engine_test

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mutexd/mutexd/internal/engine"
)

// Longer or differently seeded runs than CI's: go test -run Stress
// ./internal/engine -stress.duration 2m -stress.seed 7 (the schedule is
// the machine's, so a seed narrows a failure down rather than replays it).
var (
	stressDuration = flag.Duration("stress.duration", 2*time.Second, "how long the stress test runs its workers")
	stressSeed     = flag.Uint64("stress.seed", 1, "seed of the stress test's random choices")
)

// invariants checks, from the engine's own transitions, that a key never has
// more live leases than its limit and that its fences only grow.
type invariants struct {
	mu         sync.Mutex
	limit      map[string]int             // key -> its limit (1 when absent)
	holders    map[string]map[uint64]bool // key -> fences of its live leases
	lastFence  map[string]uint64
	forced     map[uint64]bool // fences ended by a force-release
	violations []string
}

func (v *invariants) OnEvent(ev engine.Event) {
	v.mu.Lock()
	defer v.mu.Unlock()
	switch ev.Type {
	case engine.EventGranted:
		limit := max(1, v.limit[ev.Key])
		if hs := v.holders[ev.Key]; len(hs) >= limit {
			v.violations = append(v.violations, fmt.Sprintf("%s granted fence %d while %d of %d leases live", ev.Key, ev.Fence, len(hs), limit))
		}
		if ev.Fence <= v.lastFence[ev.Key] {
			v.violations = append(v.violations, fmt.Sprintf("%s fence %d after %d", ev.Key, ev.Fence, v.lastFence[ev.Key]))
		}
		if v.holders[ev.Key] == nil {
			v.holders[ev.Key] = map[uint64]bool{}
		}
		v.holders[ev.Key][ev.Fence], v.lastFence[ev.Key] = true, ev.Fence
	case engine.EventEnded:
		if !v.holders[ev.Key][ev.Fence] {
			v.violations = append(v.violations, fmt.Sprintf("%s ended fence %d, which was not live", ev.Key, ev.Fence))
		}
		if ev.Outcome == engine.OutcomeForced {
			v.forced[ev.Fence] = true
		}
		delete(v.holders[ev.Key], ev.Fence)
	}
}

// TestStressRandomized runs 64 goroutines doing random acquires (some with
// request ids they re-send, some with a max hold or a lock-delay, on
// mutexes and on a semaphore), releases, renewals, force-releases,
// give-ups, pauses, resumes and drains over a few keys on the real clock,
// and checks mutual exclusion both from the engine's events (no more live
// leases than the key's limit) and from the callers' side: nobody enters a
// mutex's critical section while another caller's live lease is inside
// it.
func TestStressRandomized(t *testing.T) {
	limits := map[string]int{"s": 3}
	inv := &invariants{limit: limits, holders: map[string]map[uint64]bool{}, lastFence: map[string]uint64{}, forced: map[uint64]bool{}}
	e := engine.New(engine.SystemClock{}, inv, engine.Limits{DetachGrace: 5 * time.Millisecond, RememberOutcome: time.Second, MaxRemembered: 128})
	keys := []string{"a", "b", "c", "s"}
	// cs[k] is key k's critical section: who is inside (by fence) and until
	// when their lease lasts. Entering while a live lease is inside is a
	// violation; a lease ended by a force-release no longer counts as live
	// (its holder carries on unaware: that is what fences are for).
	var cs [4]struct {
		sync.Mutex
		occupied bool
		fence    uint64
		until    time.Time
	}
	forced := func(fence uint64) bool {
		inv.mu.Lock()
		defer inv.mu.Unlock()
		return inv.forced[fence]
	}
	var grants, overlaps atomic.Int64
	deadline := time.Now().Add(*stressDuration)
	if testing.Short() {
		deadline = time.Now().Add(300 * time.Millisecond)
	}
	var wg sync.WaitGroup
	for w := range 64 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), *stressSeed))
			for time.Now().Before(deadline) {
				ki := rng.IntN(len(keys))
				key := keys[ki]
				ctx, cancel := context.WithTimeout(context.Background(), time.Duration(rng.IntN(20))*time.Millisecond)
				ttl := time.Duration(5+rng.IntN(50)) * time.Millisecond
				o := engine.AcquireOptions{
					Owner: fmt.Sprint(w), TTL: ttl, Wait: time.Duration(rng.IntN(30)) * time.Millisecond,
					OnError: engine.OnError(rng.IntN(2)), Limit: limits[key],
				}
				if rng.IntN(3) == 0 {
					o.RequestID = fmt.Sprint(w, "-", rng.IntN(1000))
				}
				if rng.IntN(5) == 0 {
					o.MaxHold = time.Duration(1+rng.IntN(30)) * time.Millisecond
				}
				if rng.IntN(5) == 0 {
					o.LockDelay = time.Duration(rng.IntN(5)) * time.Millisecond
				}
				g, err := e.Acquire(ctx, key, o)
				cancel()
				if err != nil && o.RequestID != "" && errors.Is(err, engine.ErrCancelled) {
					// The reply was lost: send again with the same id,
					// as a client would.
					ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
					g, err = e.Acquire(ctx, key, o)
					cancel()
				}
				switch rng.IntN(40) {
				case 0:
					e.Pause(key)
					e.Resume(key)
				case 1:
					e.Drain(key, "stress")
				}
				if err != nil {
					if !errors.Is(err, engine.ErrTimeout) && !errors.Is(err, engine.ErrCancelled) && !errors.Is(err, engine.ErrAborted) &&
						!errors.Is(err, engine.ErrLeaseEnded) && !errors.Is(err, engine.ErrDrained) && !errors.Is(err, engine.ErrSuperseded) {
						t.Errorf("acquire: unexpected error %v", err)
					}
					continue
				}
				grants.Add(1)
				if limits[key] > 1 {
					time.Sleep(time.Duration(rng.IntN(500)) * time.Microsecond)
					_, _ = e.Release(key, g.Token, rng.IntN(3) == 0)
					continue
				}
				c := &cs[ki]
				c.Lock()
				// Both leases must be live for an overlap to count: the
				// entrant may itself be stale (descheduled past its TTL, or
				// force-released before it got here).
				now := time.Now()
				if c.occupied && now.Before(c.until) && !forced(c.fence) && now.Before(g.ExpiresAt) && !forced(g.Fence) {
					overlaps.Add(1)
				}
				c.occupied, c.fence, c.until = true, g.Fence, g.ExpiresAt
				c.Unlock()
				time.Sleep(time.Duration(rng.IntN(500)) * time.Microsecond)
				c.Lock()
				if c.fence == g.Fence {
					c.occupied = false
				}
				c.Unlock()
				switch rng.IntN(6) {
				case 0: // vanish: let the lease expire
				case 1:
					_, _ = e.Renew(key, g.Token, ttl)
					_, _ = e.Release(key, g.Token, false)
				case 2:
					_, _ = e.ForceRelease(key)
				default:
					_, _ = e.Release(key, g.Token, rng.IntN(3) == 0)
				}
			}
		})
	}
	wg.Wait()
	// Let the vanished holders' leases run out.
	for end := time.Now().Add(5 * time.Second); e.Stats().Keys != 0 && time.Now().Before(end); {
		time.Sleep(10 * time.Millisecond)
	}
	if s := e.Stats(); s != (engine.Stats{Remembered: s.Remembered}) {
		t.Errorf("after the run: %+v, want all zero", s)
	}
	if err := e.Check(); err != nil {
		t.Error(err)
	}
	inv.mu.Lock()
	defer inv.mu.Unlock()
	for _, v := range inv.violations {
		t.Error(v)
	}
	if n := overlaps.Load(); n > 0 {
		t.Errorf("%d overlapping critical sections", n)
	}
	if grants.Load() < 100 {
		t.Errorf("only %d grants; the stress test did not stress", grants.Load())
	}
	t.Logf("grants %d, violations %d", grants.Load(), len(inv.violations))
}
