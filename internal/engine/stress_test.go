package engine_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mutexd/mutexd/internal/engine"
)

// invariants checks, from the engine's own transitions, that a key never has
// two live leases and that its fences only grow.
type invariants struct {
	mu         sync.Mutex
	holder     map[string]uint64 // key -> fence of the live lease
	lastFence  map[string]uint64
	forced     map[uint64]bool // fences ended by a force-release
	violations []string
}

func (v *invariants) OnEvent(ev engine.Event) {
	v.mu.Lock()
	defer v.mu.Unlock()
	switch ev.Type {
	case engine.EventGranted:
		if f, ok := v.holder[ev.Key]; ok {
			v.violations = append(v.violations, fmt.Sprintf("%s granted fence %d while fence %d lives", ev.Key, ev.Fence, f))
		}
		if ev.Fence <= v.lastFence[ev.Key] {
			v.violations = append(v.violations, fmt.Sprintf("%s fence %d after %d", ev.Key, ev.Fence, v.lastFence[ev.Key]))
		}
		v.holder[ev.Key], v.lastFence[ev.Key] = ev.Fence, ev.Fence
	case engine.EventEnded:
		if f, ok := v.holder[ev.Key]; !ok || f != ev.Fence {
			v.violations = append(v.violations, fmt.Sprintf("%s ended fence %d, live was %d (%v)", ev.Key, ev.Fence, f, ok))
		}
		if ev.Outcome == engine.OutcomeForced {
			v.forced[ev.Fence] = true
		}
		delete(v.holder, ev.Key)
	}
}

// TestStressRandomized runs 64 goroutines doing random acquires, releases,
// renewals, force-releases and give-ups over a few keys on the real clock,
// and checks mutual exclusion both from the engine's events and from the
// callers' side: nobody enters a key's critical section while another
// caller's live lease is inside it.
func TestStressRandomized(t *testing.T) {
	inv := &invariants{holder: map[string]uint64{}, lastFence: map[string]uint64{}, forced: map[uint64]bool{}}
	e := engine.New(engine.SystemClock{}, inv, engine.Limits{})
	keys := []string{"a", "b", "c", "d"}
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
	deadline := time.Now().Add(2 * time.Second)
	if testing.Short() {
		deadline = time.Now().Add(300 * time.Millisecond)
	}
	var wg sync.WaitGroup
	for w := range 64 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			for time.Now().Before(deadline) {
				ki := rng.IntN(len(keys))
				key := keys[ki]
				ctx, cancel := context.WithTimeout(context.Background(), time.Duration(rng.IntN(20))*time.Millisecond)
				ttl := time.Duration(5+rng.IntN(50)) * time.Millisecond
				g, err := e.Acquire(ctx, key, engine.AcquireOptions{
					Owner: fmt.Sprint(w), TTL: ttl, Wait: time.Duration(rng.IntN(30)) * time.Millisecond,
					OnError: engine.OnError(rng.IntN(2)),
				})
				cancel()
				if err != nil {
					if !errors.Is(err, engine.ErrTimeout) && !errors.Is(err, engine.ErrCancelled) && !errors.Is(err, engine.ErrAborted) {
						t.Errorf("acquire: unexpected error %v", err)
					}
					continue
				}
				grants.Add(1)
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
	for end := time.Now().Add(5 * time.Second); e.Stats() != (engine.Stats{}) && time.Now().Before(end); {
		time.Sleep(10 * time.Millisecond)
	}
	if s := e.Stats(); s != (engine.Stats{}) {
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
