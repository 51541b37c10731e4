package engine

import (
	"errors"
	"fmt"
)

// ErrInconsistent wraps every finding of Check.
var ErrInconsistent = errors.New("engine state is inconsistent")

// Check verifies the engine's internal invariants and returns the first
// violation found, wrapped in ErrInconsistent: the counters (Stats) equal
// what the shards hold, no key is idle, every queue's links, length and
// count of position watchers agree, a key awaiting a deferred position
// report is in its shard's set with the position timer armed, every held
// key is in its shard's expiry heap at the index it records and no other
// key is, and the heap is ordered. It locks every shard at once, so the snapshot is
// consistent, and is meant for tests and debugging, not for a hot path.
func (e *Engine) Check() error {
	for i := range e.shards {
		e.shards[i].mu.Lock()
	}
	defer func() {
		for i := range e.shards {
			e.shards[i].mu.Unlock()
		}
	}()
	fail := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrInconsistent, fmt.Sprintf(format, args...))
	}
	var keys, held, waiters int64
	for i := range e.shards {
		sh := &e.shards[i]
		for k, ks := range sh.keys {
			keys++
			if ks.key != k {
				return fail("key %q stored under %q", ks.key, k)
			}
			if !ks.held && ks.n == 0 {
				return fail("key %q is idle but kept", k)
			}
			if e.shardFor(k) != sh {
				return fail("key %q is in the wrong shard", k)
			}
			n, watchers := 0, 0
			var prev *waiter
			for w := ks.head; w != nil; w = w.next {
				if w.prev != prev || w.ks != ks || w.resolved {
					return fail("key %q: queue entry %d is mislinked or already resolved", k, n)
				}
				if w.opts.OnPosition != nil {
					watchers++
				}
				prev = w
				n++
			}
			if ks.tail != prev || n != ks.n {
				return fail("key %q: queue has %d entries, records %d", k, n, ks.n)
			}
			if watchers != ks.watchers {
				return fail("key %q: %d waiters watch their position, records %d", k, watchers, ks.watchers)
			}
			waiters += int64(n)
			if _, ok := sh.moved[ks]; ok != ks.moved || ks.moved && !sh.posArmed {
				return fail("key %q: moved = %v, in the shard's moved set = %v, timer armed = %v", k, ks.moved, ok, sh.posArmed)
			}
			if _, ok := sh.waiting[ks]; ok != (n > 0) {
				return fail("key %q: in the waiting set = %v with %d waiters", k, ok, n)
			}
			if ks.held {
				held++
				if ks.heapIdx < 0 || ks.heapIdx >= len(sh.expiries) || sh.expiries[ks.heapIdx] != ks {
					return fail("key %q is held but not in the expiry heap at %d", k, ks.heapIdx)
				}
			} else if ks.heapIdx != -1 {
				return fail("key %q is free but has heap index %d", k, ks.heapIdx)
			}
		}
		for ks := range sh.moved {
			if sh.keys[ks.key] != ks {
				return fail("moved set holds key %q, which the shard does not", ks.key)
			}
		}
		for ks := range sh.waiting {
			if sh.keys[ks.key] != ks {
				return fail("waiting set holds key %q, which the shard does not", ks.key)
			}
		}
		for j, ks := range sh.expiries {
			if !ks.held || ks.heapIdx != j || sh.keys[ks.key] != ks {
				return fail("expiry heap entry %d (key %q) is stale", j, ks.key)
			}
			if p := (j - 1) / 2; j > 0 && sh.expiries.Less(j, p) {
				return fail("expiry heap out of order at %d", j)
			}
		}
	}
	if got := e.keys.Load(); got != keys {
		return fail("keys counter %d, shards hold %d", got, keys)
	}
	if got := e.held.Load(); got != held {
		return fail("held counter %d, shards hold %d leases", got, held)
	}
	if got := e.waiters.Load(); got != waiters {
		return fail("waiters counter %d, queues hold %d", got, waiters)
	}
	return nil
}
