package engine

import (
	"container/heap"
	"slices"
	"strings"
	"time"
)

// Operators' tools (pause, resume, drain), lock-delays and fence checks.

// delayLocked starts (or lengthens) ks's lock-delay until until: no grant
// before then. The key is kept while the delay is in force, even with no
// holder and no waiter, so that a newcomer cannot take it early.
func (sh *shard) delayLocked(ks *keyState, until, now time.Time) {
	x := ks.ext()
	if !until.After(x.delayUntil) {
		return
	}
	x.delayUntil = until
	if x.delayIdx >= 0 {
		heap.Fix(&sh.delays, x.delayIdx)
	} else {
		heap.Push(&sh.delays, ks)
	}
	sh.armLocked(until, now)
	sh.e.obs.OnEvent(Event{Type: EventDelayed, Key: ks.key, Time: now, ExpiresAt: until})
}

// endDelayLocked ends ks's lock-delay: its waiters are served, or the key
// is deleted if nothing else keeps it.
func (sh *shard) endDelayLocked(ks *keyState, now time.Time) {
	x := ks.x
	heap.Remove(&sh.delays, x.delayIdx)
	x.delayUntil = time.Time{}
	sh.pumpLocked(ks, now)
}

func (sh *shard) pauseLocked(ks *keyState, now time.Time) {
	ks.paused = true
	sh.e.paused.Add(1)
	sh.e.obs.OnEvent(Event{Type: EventPaused, Key: ks.key, Time: now})
}

func (sh *shard) resumeLocked(ks *keyState, now time.Time) {
	ks.paused = false
	sh.e.paused.Add(-1)
	sh.e.obs.OnEvent(Event{Type: EventResumed, Key: ks.key, Time: now})
	sh.pumpLocked(ks, now)
}

// Pause stops grants on key until Resume: its holders keep their leases,
// its waiters their places, and acquires still queue. A paused key exists
// (and counts in Stats.Keys) even with no holder or waiter; it is not
// refused by MaxKeys, as pausing is an operator's act. It reports whether
// the key was not paused before.
func (e *Engine) Pause(key string) bool {
	sh := e.shardFor(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	now := e.clock.Now()
	ks := sh.keys[key]
	if ks == nil {
		e.keys.Add(1)
		ks = sh.newKeyLocked(key, now)
		ks.limit = 1
	}
	if ks.paused {
		return false
	}
	sh.pauseLocked(ks, now)
	return true
}

// Resume lets a paused key grant again, serving its queue at once. It
// reports whether the key was paused. A key under a prefix paused by
// PausePrefix is resumed all the same; the prefix still pauses keys
// created later.
func (e *Engine) Resume(key string) bool {
	sh := e.shardFor(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	ks := sh.keys[key]
	if ks == nil || !ks.paused {
		return false
	}
	sh.resumeLocked(ks, e.clock.Now())
	return true
}

// PausePrefix pauses every key that starts with prefix, those that exist
// now and those created until ResumePrefix. It returns how many existing
// keys it paused. Cost: keys are checked against the paused prefixes when
// they are created, only while there is one.
func (e *Engine) PausePrefix(prefix string) int {
	e.prefixMu.Lock()
	if !slices.Contains(e.pausedPrefixes, prefix) {
		e.pausedPrefixes = append(e.pausedPrefixes, prefix)
		e.nPrefixes.Add(1)
	}
	e.prefixMu.Unlock()
	// The prefix is listed before the walk, so a key created meanwhile in
	// a shard already walked is paused at creation.
	n := 0
	for i := range e.shards {
		sh := &e.shards[i]
		sh.mu.Lock()
		now := e.clock.Now()
		for _, ks := range sh.matching(prefix, func(ks *keyState) bool { return !ks.paused }) {
			sh.pauseLocked(ks, now)
			n++
		}
		sh.mu.Unlock()
	}
	return n
}

// ResumePrefix stops pausing new keys under prefix and resumes every
// paused key under it that no other paused prefix covers. It returns how
// many keys it resumed.
func (e *Engine) ResumePrefix(prefix string) int {
	e.prefixMu.Lock()
	if i := slices.Index(e.pausedPrefixes, prefix); i >= 0 {
		e.pausedPrefixes = slices.Delete(e.pausedPrefixes, i, i+1)
		e.nPrefixes.Add(-1)
	}
	e.prefixMu.Unlock()
	n := 0
	for i := range e.shards {
		sh := &e.shards[i]
		sh.mu.Lock()
		now := e.clock.Now()
		for _, ks := range sh.matching(prefix, func(ks *keyState) bool { return ks.paused }) {
			if e.nPrefixes.Load() > 0 && e.underPausedPrefix(ks.key) {
				continue
			}
			sh.resumeLocked(ks, now)
			n++
		}
		sh.mu.Unlock()
	}
	return n
}

// underPausedPrefix reports whether a paused prefix covers key.
func (e *Engine) underPausedPrefix(key string) bool {
	e.prefixMu.Lock()
	defer e.prefixMu.Unlock()
	for _, p := range e.pausedPrefixes {
		if strings.HasPrefix(key, p) {
			return true
		}
	}
	return false
}

// matching returns the shard's keys under prefix for which ok holds, in
// key order, so that a walk acts in an order independent of the map's.
func (sh *shard) matching(prefix string, ok func(*keyState) bool) []*keyState {
	var out []*keyState
	for k, ks := range sh.keys {
		if strings.HasPrefix(k, prefix) && ok(ks) {
			out = append(out, ks)
		}
	}
	slices.SortFunc(out, func(a, b *keyState) int { return strings.Compare(a.key, b.key) })
	return out
}

// Drain answers every waiter of key with a *DrainedError carrying reason,
// leaving its holders alone. It returns how many waiters it answered.
func (e *Engine) Drain(key, reason string) int {
	sh := e.shardFor(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	ks := sh.keys[key]
	if ks == nil || ks.n == 0 {
		return 0
	}
	return sh.emptyQueueLocked(ks, exitDrained, e.clock.Now(), reason)
}

// DrainPrefix drains every key that starts with prefix, as Drain. It
// returns how many waiters it answered.
func (e *Engine) DrainPrefix(prefix, reason string) int {
	n := 0
	for i := range e.shards {
		sh := &e.shards[i]
		sh.mu.Lock()
		now := e.clock.Now()
		for _, ks := range sh.matching(prefix, func(ks *keyState) bool { return ks.n > 0 }) {
			n += sh.emptyQueueLocked(ks, exitDrained, now, reason)
		}
		sh.mu.Unlock()
	}
	return n
}

// CheckFence reports whether fence is a live lease of key (a store that
// cannot keep the highest fence itself asks this right before acting),
// with that lease's deadline and the fences of all the key's live leases.
func (e *Engine) CheckFence(key string, fence uint64) FenceStatus {
	sh := e.shardFor(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	var st FenceStatus
	ks := sh.keys[key]
	if ks == nil {
		return st
	}
	for _, l := range ks.holdersLocked(e.clock.Now()) {
		st.Current = append(st.Current, l.fence)
		if l.fence == fence {
			st.Live, st.ExpiresAt = true, l.expiresAt
		}
	}
	return st
}
