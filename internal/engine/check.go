package engine

import (
	"errors"
	"fmt"
)

// ErrInconsistent wraps every finding of Check.
var ErrInconsistent = errors.New("engine state is inconsistent")

// Check verifies the engine's internal invariants and returns the first
// violation found, wrapped in ErrInconsistent: the counters (Stats) equal
// what the shards hold; no key is idle (every key has a lease, a waiter,
// a pause or a lock-delay); every queue's links, length and count of
// position watchers agree, and its request-id index names exactly its
// waiters with a RequestID; no key has waiters while a slot is free
// unless a pause or a lock-delay stops it granting; a key's holders are
// within its limit, with distinct fences and request ids; a key awaiting
// a deferred position report is in its shard's set with the position
// timer armed; every lease is in its shard's expiry heap at the index it
// records and nothing else is; every lock-delay is in the delay heap; both
// heaps are ordered; and the remembered records' map, list and count
// agree and stay within the cap. It locks every shard at once, so the
// snapshot is consistent, and is meant for tests and debugging, not for a
// hot path.
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
	var keys, held, waiters, paused, memos int64
	for i := range e.shards {
		sh := &e.shards[i]
		leases := 0
		for k, ks := range sh.keys {
			keys++
			if ks.key != k {
				return fail("key %q stored under %q", ks.key, k)
			}
			if ks.idle() {
				return fail("key %q is idle but kept", k)
			}
			if e.shardFor(k) != sh {
				return fail("key %q is in the wrong shard", k)
			}
			if ks.paused {
				paused++
			}
			n, watchers, ids := 0, 0, 0
			var prev *waiter
			for w := ks.head; w != nil; w = w.next {
				if w.prev != prev || w.ks != ks || w.resolved {
					return fail("key %q: queue entry %d is mislinked or already resolved", k, n)
				}
				if w.opts.OnPosition != nil {
					watchers++
					if w.detached {
						return fail("key %q: detached waiter %d still watches its position", k, n)
					}
				}
				if id := w.opts.RequestID; id != "" {
					ids++
					if ks.x == nil || ks.x.ids[id] != w {
						return fail("key %q: waiter %d's request id is not indexed", k, n)
					}
				}
				prev = w
				n++
			}
			if ks.tail != prev || n != int(ks.n) {
				return fail("key %q: queue has %d entries, records %d", k, n, ks.n)
			}
			if watchers != int(ks.watchers) {
				return fail("key %q: %d waiters watch their position, records %d", k, watchers, ks.watchers)
			}
			if ks.x != nil && len(ks.x.ids) != ids {
				return fail("key %q: request-id index has %d entries, the queue %d", k, len(ks.x.ids), ids)
			}
			waiters += int64(n)
			if _, ok := sh.moved[ks]; ok != ks.moved || ks.moved && !sh.posArmed {
				return fail("key %q: moved = %v, in the shard's moved set = %v, timer armed = %v", k, ks.moved, ok, sh.posArmed)
			}
			if _, ok := sh.waiting[ks]; ok != (n > 0) {
				return fail("key %q: in the waiting set = %v with %d waiters", k, ok, n)
			}
			if ks.limit < 1 || ks.limit > MaxLimit {
				return fail("key %q: limit %d", k, ks.limit)
			}
			nh := ks.nheld()
			if nh > int(ks.limit) {
				return fail("key %q: %d holders over its limit %d", k, nh, ks.limit)
			}
			delayed := ks.x != nil && ks.x.delayIdx >= 0
			if n > 0 && nh < int(ks.limit) && !ks.paused && !delayed {
				return fail("key %q: %d waiters while %d of %d slots are held and nothing stops grants", k, n, nh, ks.limit)
			}
			if !ks.held && ks.lease.heapIdx != -1 {
				return fail("key %q: free inline slot has heap index %d", k, ks.lease.heapIdx)
			}
			if ks.x != nil && ks.x.delayUntil.IsZero() != (ks.x.delayIdx < 0) {
				return fail("key %q: lock-delay until %v at delay-heap index %d", k, ks.x.delayUntil, ks.x.delayIdx)
			}
			if delayed && (ks.x.delayIdx >= len(sh.delays) || sh.delays[ks.x.delayIdx] != ks) {
				return fail("key %q: not in the delay heap at %d", k, ks.x.delayIdx)
			}
			fences := map[uint64]bool{}
			leaseIDs := map[string]bool{}
			var bad error
			ks.eachLease(func(l *lease) {
				if bad != nil {
					return
				}
				held++
				leases++
				if l.ks != ks {
					bad = fail("key %q: lease %d points at another key", k, l.fence)
				} else if l.heapIdx < 0 || int(l.heapIdx) >= len(sh.expiries) || sh.expiries[l.heapIdx] != l {
					bad = fail("key %q: lease %d is not in the expiry heap at %d", k, l.fence, l.heapIdx)
				} else if fences[l.fence] {
					bad = fail("key %q: two leases with fence %d", k, l.fence)
				} else if l.fence == 0 || l.fence > e.fence.Load() {
					bad = fail("key %q: lease fence %d was never issued", k, l.fence)
				}
				fences[l.fence] = true
				if l.ext != nil && l.ext.id != "" {
					if leaseIDs[l.ext.id] || (ks.x != nil && ks.x.ids[l.ext.id] != nil) {
						bad = fail("key %q: request id of lease %d is used twice", k, l.fence)
					}
					leaseIDs[l.ext.id] = true
				}
			})
			if bad != nil {
				return bad
			}
		}
		if leases != len(sh.expiries) {
			return fail("expiry heap holds %d leases, keys hold %d", len(sh.expiries), leases)
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
		for j, l := range sh.expiries {
			if l.ks == nil || int(l.heapIdx) != j || sh.keys[l.ks.key] != l.ks {
				return fail("expiry heap entry %d is stale", j)
			}
			if p := (j - 1) / 2; j > 0 && sh.expiries.Less(j, p) {
				return fail("expiry heap out of order at %d", j)
			}
		}
		for j, ks := range sh.delays {
			if ks.x == nil || ks.x.delayIdx != j || sh.keys[ks.key] != ks {
				return fail("delay heap entry %d (key %q) is stale", j, ks.key)
			}
			if p := (j - 1) / 2; j > 0 && sh.delays.Less(j, p) {
				return fail("delay heap out of order at %d", j)
			}
		}
		if len(sh.delays) > 0 && (sh.timerAt.IsZero() || sh.delays[0].x.delayUntil.Before(sh.timerAt)) && !sh.stopped {
			return fail("lock-delay of key %q ends before the shard's timer fires", sh.delays[0].key)
		}
		count := 0
		var older *memo
		for m := sh.memoOld; m != nil; m = m.newer {
			if m.older != older || sh.memos[m.k] != m {
				return fail("remembered record %d (key %q) is mislinked", count, m.k.key)
			}
			older = m
			count++
		}
		if sh.memoNew != older || count != len(sh.memos) {
			return fail("remembered list has %d records, map %d", count, len(sh.memos))
		}
		if count > e.memoCap {
			return fail("shard remembers %d records, cap %d", count, e.memoCap)
		}
		memos += int64(count)
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
	if got := e.paused.Load(); got != paused {
		return fail("paused counter %d, shards hold %d paused keys", got, paused)
	}
	if got := e.remembered.Load(); got != memos {
		return fail("remembered counter %d, shards hold %d records", got, memos)
	}
	return nil
}
