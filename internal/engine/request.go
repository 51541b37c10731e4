package engine

import "time"

// Request ids, detached waiters and remembered outcomes: what lets a
// caller whose reply was lost send its acquire again, and lets a key that
// went idle tell its next holder how its last lease ended. DESIGN.md
// explains the rules.

// memoKey names a memo: a key's last outcome (id "") or the lease of one
// request id on a key.
type memoKey struct {
	key, id string
}

// memo is a record kept after a lease ended, for Limits.RememberOutcome.
// A shard keeps its memos in a map and in a list, oldest first, so that
// the oldest is evicted when the shard's share of MaxRemembered is full
// and expired ones are found from the front.
type memo struct {
	k            memoKey
	prev         Previous
	older, newer *memo
}

// rememberLocked records prev under k (replacing an older record of k),
// expiring at most two stale records on the way and evicting the oldest
// beyond the shard's share of MaxRemembered: bounded work per call.
func (sh *shard) rememberLocked(k memoKey, prev Previous, now time.Time) {
	e := sh.e
	if e.limits.RememberOutcome <= 0 {
		return
	}
	if sh.memos == nil {
		sh.memos = make(map[memoKey]*memo)
	}
	for i := 0; i < 2 && sh.memoOld != nil && sh.memoExpired(sh.memoOld, now); i++ {
		sh.forgetLocked(sh.memoOld)
	}
	m := sh.memos[k]
	if m != nil {
		sh.unlinkMemo(m)
	} else {
		// A forgotten memo is reused: a key acquired and released again
		// and again forgets its memo at each grant and remembers one at
		// each release, which would otherwise allocate every cycle.
		if n := len(sh.freeMemos); n > 0 {
			m, sh.freeMemos = sh.freeMemos[n-1], sh.freeMemos[:n-1]
			m.k = k
		} else {
			m = &memo{k: k}
		}
		sh.memos[k] = m
		e.remembered.Add(1)
	}
	m.prev = prev
	m.older = sh.memoNew
	if sh.memoNew != nil {
		sh.memoNew.newer = m
	} else {
		sh.memoOld = m
	}
	sh.memoNew = m
	for len(sh.memos) > e.memoCap {
		sh.forgetLocked(sh.memoOld)
	}
}

func (sh *shard) memoExpired(m *memo, now time.Time) bool {
	return !now.Before(m.prev.EndedAt.Add(sh.e.limits.RememberOutcome))
}

// recallLocked returns the live memo under k, or nil. An expired one is
// forgotten on the spot, so the answer depends only on now.
func (sh *shard) recallLocked(k memoKey, now time.Time) *memo {
	if sh.memos == nil {
		return nil
	}
	m := sh.memos[k]
	if m == nil {
		return nil
	}
	if sh.memoExpired(m, now) {
		sh.forgetLocked(m)
		return nil
	}
	return m
}

// forgetLocked drops m; the caller must not use m afterwards (it is
// recycled).
func (sh *shard) forgetLocked(m *memo) {
	sh.unlinkMemo(m)
	delete(sh.memos, m.k)
	sh.e.remembered.Add(-1)
	*m = memo{}
	if len(sh.freeMemos) < maxFreeKeys {
		sh.freeMemos = append(sh.freeMemos, m)
	}
}

func (sh *shard) unlinkMemo(m *memo) {
	if m.older != nil {
		m.older.newer = m.newer
	} else {
		sh.memoOld = m.newer
	}
	if m.newer != nil {
		m.newer.older = m.older
	} else {
		sh.memoNew = m.older
	}
	m.older, m.newer = nil, nil
}

// resendLocked answers an acquire whose RequestID the key already knows:
// with the same Grant while its lease lives, by taking over its place
// while it waits, or with a *LeaseEndedError after its lease ended. done
// is false when the id is new. ks (nil for an absent key) is settled.
func (sh *shard) resendLocked(ks *keyState, key string, opts *AcquireOptions, now time.Time) (g Grant, w *waiter, err error, done bool) {
	id := opts.RequestID
	if ks != nil {
		var found *lease
		ks.eachLease(func(l *lease) {
			if l.ext != nil && l.ext.id == id {
				found = l
			}
		})
		if found != nil {
			if x := found.ext; x.claim != claimedTimer {
				if x.claim != nil {
					x.claim.Stop()
				}
				x.claim = claimedTimer
			}
			return found.grant(key, found.ext.waited, found.ext.prev), nil, nil, true
		}
		if ks.x != nil {
			if old := ks.x.ids[id]; old != nil {
				if limitOf(opts) != ks.limit {
					return Grant{}, nil, &LimitMismatchError{Limit: int(ks.limit)}, true
				}
				if opts.Wait <= 0 {
					// A try-once re-send is not granted now; it leaves the
					// first request's place alone.
					return Grant{}, nil, &TimeoutError{Waiters: int(ks.n)}, true
				}
				return Grant{}, sh.supersedeLocked(old, *opts, now), nil, true
			}
		}
	}
	if m := sh.recallLocked(memoKey{key: key, id: id}, now); m != nil {
		return Grant{}, nil, &LeaseEndedError{Fence: m.prev.Fence, Outcome: m.prev.Outcome, EndedAt: m.prev.EndedAt}, true
	}
	return Grant{}, nil, nil, false
}

// supersedeLocked puts a new waiter for opts in old's place in the queue
// and answers old with ErrSuperseded. The new waiter keeps old's arrival
// time; its wait runs opts.Wait from now. The queue's length and the
// waiter count do not change.
func (sh *shard) supersedeLocked(old *waiter, opts AcquireOptions, now time.Time) *waiter {
	ks := old.ks
	wait := opts.Wait
	opts.Wait += now.Sub(old.since) // until() = now + the new wait
	w := &waiter{ks: ks, opts: opts, since: old.since, done: make(chan struct{})}
	w.prev, w.next = old.prev, old.next
	if old.prev != nil {
		old.prev.next = w
	} else {
		ks.head = w
	}
	if old.next != nil {
		old.next.prev = w
	} else {
		ks.tail = w
	}
	old.prev, old.next = nil, nil
	ks.x.ids[opts.RequestID] = w
	if old.opts.OnPosition != nil {
		ks.watchers--
	}
	old.timer.Stop()
	old.resolved = true
	old.err = ErrSuperseded
	close(old.done)
	pos := 1
	for q := ks.head; q != w; q = q.next {
		pos++
	}
	sh.e.obs.OnEvent(Event{Type: EventSuperseded, Key: ks.key, Owner: old.opts.Owner, Time: now, Waited: now.Sub(old.since), Position: pos})
	if opts.OnPosition != nil {
		ks.watchers++
		w.pos = pos
		opts.OnPosition(pos)
	}
	w.timer = sh.e.clock.AfterFunc(wait, func() { sh.timeout(w) })
	return w
}

// detachLocked keeps w in its queue after its caller's context ended, for
// the detach grace (at most what is left of its wait), so that a re-sent
// acquire with its RequestID can take its place. It reports false when w
// must leave now instead: no RequestID, detaching off, or the engine
// closing.
func (sh *shard) detachLocked(w *waiter, now time.Time) bool {
	if w.opts.RequestID == "" || sh.e.grace <= 0 || sh.stopped {
		return false
	}
	g := min(sh.e.grace, w.until().Sub(now))
	if g <= 0 {
		return false
	}
	w.timer.Stop()
	w.detached = true
	w.opts.Wait = now.Add(g).Sub(w.since) // until() = the end of the grace
	if w.opts.OnPosition != nil {
		// The callback belongs to the caller that has gone.
		w.opts.OnPosition = nil
		w.ks.watchers--
	}
	w.timer = sh.e.clock.AfterFunc(g, func() { sh.detachOver(w) })
	return true
}

// detachOver takes a detached waiter that nobody re-attached out of its
// queue.
func (sh *shard) detachOver(w *waiter) {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if !w.resolved && w.detached {
		sh.leaveLocked(w, exitCancelled, sh.e.clock.Now(), "")
	}
}

// awaitClaimLocked keeps l, granted to a caller that has gone, until
// until: a re-sent acquire with its RequestID claims it (resendLocked);
// otherwise it is released, as no work can have been done under it.
func (sh *shard) awaitClaimLocked(l *lease, until, now time.Time) {
	if l.ext.claim != nil {
		// Already waiting for its claim, or claimed (claimedTimer): a
		// re-sent acquire may return the lease before the cancelled
		// caller's await sees its grant, and then a caller knows its token.
		return
	}
	key, fence := l.ks.key, l.fence
	until = maxTime(until, now)
	l.ext.claim = &claimWait{Timer: sh.e.clock.AfterFunc(until.Sub(now), func() { sh.claimOver(key, fence) }), until: until}
}

// claimWait is the timer of a lease awaiting its claim, with its deadline,
// which a snapshot records. It is allocated only for such a lease (rare),
// so leaseExt keeps its size.
type claimWait struct {
	Timer
	until time.Time
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// claimOver releases the lease of key with fence if it is still unclaimed.
func (sh *shard) claimOver(key string, fence uint64) {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	ks := sh.keys[key]
	if ks == nil {
		return
	}
	l := ks.leaseByFence(fence)
	if l == nil || l.ext == nil || l.ext.claim == nil || l.ext.claim == claimedTimer {
		return
	}
	l.ext.claim = nil
	now := sh.e.clock.Now()
	outcome := OutcomeReleased
	if !l.live(now) {
		outcome = OutcomeExpired
	}
	sh.endLocked(l, outcome, now)
}

// claimedTimer marks a lease's claim as taken: a re-sent acquire returned
// the lease. It is a Timer that does nothing, so a lease stays 96 bytes.
var claimedTimer Timer = claimed{}

type claimed struct{}

func (claimed) Stop() bool               { return false }
func (claimed) Reset(time.Duration) bool { return false }
