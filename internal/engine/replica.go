package engine

import (
	"container/heap"
	"time"
)

// What a state machine driven by a replicated log needs besides the calls
// of a standalone daemon (internal/cluster): an acquire that queues
// without blocking, a way to say that a queued caller has gone, expiry
// driven by the log's time, and deadlines restarted when the log's clock
// changes hands.

// Waiting is an acquire that Submit queued. Whoever serves the request
// waits on Done; the engine resolves it exactly as it would a blocked
// Acquire.
type Waiting struct {
	w  *waiter
	sh *shard
}

// Done is closed once the acquire is granted or has left the queue.
func (h *Waiting) Done() <-chan struct{} { return h.w.done }

// Result is the acquire's outcome; valid once Done is closed.
func (h *Waiting) Result() (Grant, error) { return h.w.grant, h.w.err }

// Position is the waiter's place in its queue (1 is next), or 0 once it
// has left it. It walks the queue: call it seldom.
func (h *Waiting) Position() int {
	w, sh := h.w, h.sh
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if w.resolved {
		return 0 // w.ks may be another key's record by now
	}
	pos := 1
	for q := w.ks.head; q != nil && q != w; q = q.next {
		pos++
	}
	return pos
}

// Submit is Acquire without the wait: it grants at once, refuses, or
// queues the caller and returns its Waiting. Nothing watches the caller:
// the waiter keeps its place until it is granted, its wait passes, or
// Detach says its caller has gone. Use it only with a RequestID, so that
// a caller who lost its answer can find its place again.
func (e *Engine) Submit(key string, opts AcquireOptions) (Grant, *Waiting, error) {
	if err := e.checkAcquire(key, &opts); err != nil {
		return Grant{}, nil, err
	}
	sh := e.shardFor(key)
	sh.mu.Lock()
	g, w, err := sh.tryLocked(key, &opts)
	sh.mu.Unlock()
	if w == nil {
		return g, nil, err
	}
	return Grant{}, &Waiting{w: w, sh: sh}, nil
}

// Detach says that the caller of key's acquire with requestID and
// attempt (AcquireOptions.Attempt; 0 matches any) has gone, whatever
// became of it: a waiter keeps its place for the detach grace (and leaves
// then unless a re-sent acquire takes it over), a lease already granted
// to it is kept for the grace for a re-sent acquire to claim, as Abandon
// keeps one. With wontReturn the caller will not send again: the waiter
// leaves at once and an unclaimed lease is released. A place or a lease
// that a later attempt took over is left alone: its caller is there.
func (e *Engine) Detach(key, requestID string, attempt uint64, wontReturn bool) {
	sh := e.shardFor(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	ks := sh.keys[key]
	if ks == nil || requestID == "" {
		return
	}
	now := e.clock.Now()
	if ks.x != nil {
		if w := ks.x.ids[requestID]; w != nil && !w.resolved {
			if attempt != 0 && w.opts.Attempt != attempt {
				return
			}
			if wontReturn || !sh.detachLocked(w, now) {
				sh.leaveLocked(w, exitCancelled, now, "")
			}
			return
		}
	}
	var l *lease
	ks.eachLease(func(m *lease) {
		if m.ext != nil && m.ext.id == requestID {
			l = m
		}
	})
	if l == nil || !l.live(now) || l.ext.claim == claimedTimer || (attempt != 0 && l.ext.attempt != attempt) {
		return // gone, or a re-sent acquire returned it or took it over: its caller has the token
	}
	if !wontReturn && e.grace > 0 && !sh.stopped {
		sh.awaitClaimLocked(l, now.Add(e.grace), now)
		return
	}
	sh.endLocked(l, OutcomeReleased, now)
}

// ExpireDue ends every lease and lock-delay whose deadline is not after
// the clock's time, as the shards' timers would, earliest first (ties by
// fence, then key). A log-driven clock calls it before it fires any other
// timer due at the same instant, so that a lease due at t always ends
// before a waiter whose wait ends at t leaves, whatever order the timers
// were armed in.
func (e *Engine) ExpireDue() {
	for i := range e.mask + 1 {
		e.shards[i].expireDue()
	}
}

// Extend restarts every lease's deadline and every lock-delay's end after
// the clock changed hands (a new Raft leader): prev is the last time the
// old owner's clock gave, and the clock now reads the new owner's. What
// was left at prev is counted again from now, plus margin, so that no
// lease ends, in real time, before the instant its holder was promised,
// whatever the offset between the two clocks. A deadline is never moved
// earlier. A deadline not after prev had passed on the old owner's clock:
// nothing was left of it, so it is kept and ends at once, as it would
// have there (a lease past its deadline is over whether or not its timer
// ran; Extend must not bring it back).
func (e *Engine) Extend(prev time.Time, margin time.Duration) {
	for i := range e.mask + 1 {
		sh := &e.shards[i]
		sh.mu.Lock()
		now := e.clock.Now()
		later := func(t time.Time) time.Time {
			if !t.After(prev) {
				return t
			}
			if u := now.Add(t.Sub(prev) + margin); u.After(t) {
				return u
			}
			return t
		}
		for _, l := range sh.expiries {
			l.expiresAt = later(l.expiresAt)
		}
		heap.Init(&sh.expiries)
		for _, ks := range sh.delays {
			ks.x.delayUntil = later(ks.x.delayUntil)
		}
		heap.Init(&sh.delays)
		if !sh.stopped {
			sh.expireDueLocked(now)
		}
		sh.mu.Unlock()
	}
}

// newToken returns a new lease's token, from Limits.Tokens when set.
func (e *Engine) newToken() Token {
	if e.limits.Tokens != nil {
		return e.limits.Tokens()
	}
	return newToken()
}
