// Package engine is mutexd's lock engine: keyed exclusive locks with a
// strict FIFO queue per key, granted as leases that end by release, expiry
// or force-release. It knows nothing of HTTP or metrics: time comes from an
// injected Clock and transitions are reported to an Observer.
//
// Every transition is a deterministic function of (operation, clock time):
// the engine reads the clock once per operation, under the key's shard lock.
package engine

import (
	"context"
	"fmt"
	"hash/maphash"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

const numShards = 64 // a power of two; enough that unrelated keys rarely share a mutex

// Engine is a keyed FIFO lease lock. It is safe for concurrent use.
type Engine struct {
	clock  Clock
	obs    Observer
	limits Limits
	seed   maphash.Seed

	fence   atomic.Uint64 // last fence issued
	keys    atomic.Int64  // keys with a holder or waiters
	held    atomic.Int64  // live leases
	waiters atomic.Int64  // queued waiters
	closed  atomic.Bool

	shards [numShards]shard
}

type shard struct {
	mu       sync.Mutex // guards the following
	keys     map[string]*keyState
	expiries leaseHeap              // keys whose holder has a deadline, by deadline
	waiting  map[*keyState]struct{} // keys with at least one waiter
	timer    Timer                  // fires at timerAt to expire leases
	timerAt  time.Time              // zero when the timer is not armed
	stopped  bool                   // the engine is closed: arm no timers
	free     []*keyState            // idle keyStates for reuse, at most maxFreeKeys

	_ [64]byte // keep shards on separate cache lines
}

// keyState is a key with a holder or waiters. A key with neither is deleted
// from its shard at once.
type keyState struct {
	key     string
	held    bool
	lease   lease
	heapIdx int // index in shard.expiries, -1 when not there
	// The queue: a doubly linked list of waiters in arrival order.
	head, tail *waiter
	n          int
	// watchers counts queued waiters with an OnPosition callback; the queue
	// is walked to report positions only while it is positive.
	watchers int
}

type lease struct {
	token      Token
	fence      uint64
	owner      string
	ttl        time.Duration
	acquiredAt time.Time
	expiresAt  time.Time
	onError    OnError
}

type waiter struct {
	prev, next *waiter
	ks         *keyState
	opts       AcquireOptions
	since      time.Time
	timer      Timer
	pos        int           // last position reported to opts.OnPosition
	done       chan struct{} // closed once grant/err are set
	resolved   bool          // guarded by the shard lock
	grant      Grant
	err        error
}

// New returns an engine that reads time from clock and reports transitions
// to obs (which may be nil).
func New(clock Clock, obs Observer, limits Limits) *Engine {
	if obs == nil {
		obs = nopObserver{}
	}
	e := &Engine{clock: clock, obs: obs, limits: limits, seed: maphash.MakeSeed()}
	for i := range e.shards {
		e.shards[i].keys = make(map[string]*keyState)
		e.shards[i].waiting = make(map[*keyState]struct{})
	}
	return e
}

func (e *Engine) shardFor(key string) *shard {
	return &e.shards[maphash.String(e.seed, key)&(numShards-1)]
}

// nextFence returns a fence greater than every fence issued before, and at
// least the wall clock in microseconds, so fences keep growing across a
// restart that loses all state (a hybrid logical clock).
func (e *Engine) nextFence(now time.Time) uint64 {
	wall := uint64(now.UnixMicro())
	for {
		last := e.fence.Load()
		next := max(last+1, wall)
		if e.fence.CompareAndSwap(last, next) {
			return next
		}
	}
}

// Acquire grants the key's lease to the caller, queueing behind earlier
// callers for at most opts.Wait. It blocks until the lease is granted
// (returning it), the wait passes (*TimeoutError), a failed OnErrorStop
// holder aborts the queue (ErrAborted), ctx ends (ErrCancelled), the
// engine closes (ErrUnavailable), or a limit refuses the caller
// (ErrTooManyKeys, ErrTooManyWaiters; see AcquireOptions.Reserve). A grant
// that races with ctx's end is released at once and handed on, so no lease
// is left without a holder.
func (e *Engine) Acquire(ctx context.Context, key string, opts AcquireOptions) (Grant, error) {
	if opts.TTL <= 0 {
		return Grant{}, fmt.Errorf("engine: acquire %q: ttl must be positive", key)
	}
	if e.closed.Load() {
		return Grant{}, ErrUnavailable
	}
	sh := e.shardFor(key)
	sh.mu.Lock()
	if sh.stopped {
		// Close ran between the check above and this lock: it has already
		// answered this shard's waiters and will not come back for one
		// queued now, nor expire a lease granted now.
		sh.mu.Unlock()
		return Grant{}, ErrUnavailable
	}
	now := e.clock.Now()
	ks := sh.keys[key]
	if ks == nil {
		if n := e.keys.Add(1); e.limits.MaxKeys > 0 && n > e.limits.cap(e.limits.MaxKeys, e.limits.ReservedKeys, opts.Reserve) {
			e.keys.Add(-1)
			sh.mu.Unlock()
			return Grant{}, ErrTooManyKeys
		}
		ks = sh.newKeyLocked(key)
	} else if ks.held && !now.Before(ks.lease.expiresAt) {
		// The deadline passed but the timer has not run yet: expire now, so
		// the outcome depends only on the time of this operation.
		e.endLocked(sh, ks, OutcomeExpired, now)
		if ks = sh.keys[key]; ks == nil {
			e.keys.Add(1)
			ks = sh.newKeyLocked(key)
		}
	}
	if !ks.held && ks.n == 0 { // free and nobody queued: no barging is possible
		g := e.grantLocked(sh, ks, opts, now, now, false, Previous{})
		sh.mu.Unlock()
		return g, nil
	}
	if opts.Wait <= 0 {
		n := ks.n
		sh.mu.Unlock()
		return Grant{}, &TimeoutError{Waiters: n}
	}
	if max := e.limits.MaxWaitersPerKey; max > 0 && ks.n >= max {
		sh.mu.Unlock()
		return Grant{}, ErrTooManyWaiters
	}
	if n := e.waiters.Add(1); e.limits.MaxWaiters > 0 && n > e.limits.cap(e.limits.MaxWaiters, e.limits.ReservedWaiters, opts.Reserve) {
		e.waiters.Add(-1)
		sh.mu.Unlock()
		return Grant{}, ErrTooManyWaiters
	}
	w := &waiter{ks: ks, opts: opts, since: now, done: make(chan struct{})}
	ks.push(w)
	if ks.n == 1 {
		sh.waiting[ks] = struct{}{}
	}
	e.obs.OnEvent(Event{Type: EventQueued, Key: key, Owner: opts.Owner, Time: now, Position: ks.n})
	if opts.OnPosition != nil {
		ks.watchers++
		w.pos = ks.n
		opts.OnPosition(w.pos)
	}
	w.timer = e.clock.AfterFunc(opts.Wait, func() { e.timeoutWaiter(sh, w) })
	sh.mu.Unlock()

	select {
	case <-w.done:
		return w.grant, w.err
	case <-ctx.Done():
	}
	sh.mu.Lock()
	if !w.resolved {
		e.resolveLocked(sh, w, EventCancelled, ErrCancelled, e.clock.Now())
		sh.mu.Unlock()
		return Grant{}, fmt.Errorf("%w: %w", ErrCancelled, context.Cause(ctx))
	}
	sh.mu.Unlock()
	if w.err == nil {
		// Granted just as the caller gave up: nobody will use this lease.
		_, _ = e.Release(key, w.grant.Token, false)
		return Grant{}, fmt.Errorf("%w: %w", ErrCancelled, context.Cause(ctx))
	}
	return Grant{}, w.err
}

// grantLocked makes ks's lease the caller's.
func (e *Engine) grantLocked(sh *shard, ks *keyState, opts AcquireOptions, now, since time.Time, fromQueue bool, prev Previous) Grant {
	fence := e.nextFence(now)
	ks.held = true
	ks.lease = lease{
		token:      newToken(),
		fence:      fence,
		owner:      opts.Owner,
		ttl:        opts.TTL,
		acquiredAt: now,
		expiresAt:  now.Add(opts.TTL),
		onError:    opts.OnError,
	}
	e.held.Add(1)
	sh.expiries.push(ks)
	sh.armLocked(e, ks.lease.expiresAt, now)
	waited := now.Sub(since)
	e.obs.OnEvent(Event{
		Type: EventGranted, Key: ks.key, Owner: opts.Owner, Fence: fence, Time: now,
		Waited: waited, ExpiresAt: ks.lease.expiresAt, OnError: opts.OnError, FromQueue: fromQueue, Previous: prev,
	})
	return Grant{
		Key:       ks.key,
		Token:     ks.lease.token,
		Fence:     fence,
		Owner:     opts.Owner,
		TTL:       opts.TTL,
		ExpiresAt: ks.lease.expiresAt,
		Waited:    waited,
		Previous:  prev,
	}
}

// endLocked ends ks's lease with outcome and hands the key to the next
// waiter, or aborts the queue when a failed OnErrorStop holder ends, or
// deletes the key when nobody waits.
func (e *Engine) endLocked(sh *shard, ks *keyState, outcome Outcome, now time.Time) Ended {
	l := &ks.lease
	ended := Ended{Fence: l.fence, Held: now.Sub(l.acquiredAt)}
	ks.held = false
	e.held.Add(-1)
	sh.expiries.remove(ks)
	e.obs.OnEvent(Event{
		Type: EventEnded, Key: ks.key, Owner: l.owner, Fence: l.fence, Time: now,
		Held: ended.Held, Outcome: outcome, OnError: l.onError,
	})
	prev := Previous{Fence: l.fence, Outcome: outcome}
	l.owner = "" // drop the reference; the lease is dead
	if outcome.Failure() && l.onError == OnErrorStop && ks.head != nil {
		// Abort the whole queue. Resolving the last waiter deletes the now
		// idle key (and may recycle ks), so ks is not touched after it.
		for ks.head != nil {
			e.resolveLocked(sh, ks.head, EventAborted, ErrAborted, now)
		}
		return ended
	}
	if w := ks.head; w != nil {
		w.timer.Stop()
		e.dequeueLocked(sh, w)
		w.grant = e.grantLocked(sh, ks, w.opts, now, w.since, true, prev)
		w.resolved = true
		close(w.done)
		ks.reportPositions()
	} else {
		e.deleteIfIdleLocked(sh, ks)
	}
	return ended
}

// resolveLocked takes a waiter out of the queue with an error.
func (e *Engine) resolveLocked(sh *shard, w *waiter, typ EventType, err error, now time.Time) {
	ks := w.ks
	w.timer.Stop()
	e.dequeueLocked(sh, w)
	w.resolved = true
	w.err = err
	if typ == EventTimeout {
		w.err = &TimeoutError{Waiters: ks.n}
	}
	e.obs.OnEvent(Event{Type: typ, Key: ks.key, Owner: w.opts.Owner, Time: now, Waited: now.Sub(w.since)})
	close(w.done)
	if typ == EventTimeout || typ == EventCancelled && err == ErrCancelled {
		// An abort or a close empties the whole queue: no place moves for
		// anyone who stays.
		ks.reportPositions()
	}
	e.deleteIfIdleLocked(sh, ks)
}

func (e *Engine) dequeueLocked(sh *shard, w *waiter) {
	ks := w.ks
	ks.remove(w)
	if w.opts.OnPosition != nil {
		ks.watchers--
	}
	e.waiters.Add(-1)
	if ks.n == 0 {
		delete(sh.waiting, ks)
	}
}

func (e *Engine) deleteIfIdleLocked(sh *shard, ks *keyState) {
	if !ks.held && ks.n == 0 && sh.keys[ks.key] == ks {
		delete(sh.keys, ks.key)
		e.keys.Add(-1)
		if len(sh.free) < maxFreeKeys {
			*ks = keyState{heapIdx: -1}
			sh.free = append(sh.free, ks)
		}
	}
}

// cap is the part of max an acquire may fill: all of it with reserve,
// else all but reserved.
func (l *Limits) cap(max, reserved int, reserve bool) int64 {
	if reserve {
		return int64(max)
	}
	return int64(max - reserved)
}

// maxFreeKeys bounds each shard's stock of recycled keyStates.
const maxFreeKeys = 16

// newKeyLocked adds key to the shard, recycling an idle keyState if there
// is one: an uncontended acquire+release then allocates nothing.
func (sh *shard) newKeyLocked(key string) *keyState {
	var ks *keyState
	if n := len(sh.free); n > 0 {
		ks, sh.free = sh.free[n-1], sh.free[:n-1]
		ks.key = key
	} else {
		ks = &keyState{key: key, heapIdx: -1}
	}
	sh.keys[key] = ks
	return ks
}

func (e *Engine) timeoutWaiter(sh *shard, w *waiter) {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if !w.resolved {
		e.resolveLocked(sh, w, EventTimeout, nil, e.clock.Now())
	}
}

// liveLocked returns ks's lease if token names it and it has not expired.
// A lease found past its deadline is expired on the spot.
func (e *Engine) liveLocked(sh *shard, key string, token Token, now time.Time) (*keyState, bool) {
	ks := sh.keys[key]
	if ks == nil || !ks.held || !ks.lease.token.equal(token) {
		return nil, false
	}
	if !now.Before(ks.lease.expiresAt) {
		e.endLocked(sh, ks, OutcomeExpired, now)
		return nil, false
	}
	return ks, true
}

// Release ends the lease named by token; failed marks the work as failed,
// which aborts the queue when the holder chose OnErrorStop. It returns
// ErrNotHolder when token is not the key's live lease.
func (e *Engine) Release(key string, token Token, failed bool) (Ended, error) {
	sh := e.shardFor(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	now := e.clock.Now()
	ks, ok := e.liveLocked(sh, key, token, now)
	if !ok {
		return Ended{}, ErrNotHolder
	}
	outcome := OutcomeReleased
	if failed {
		outcome = OutcomeFailed
	}
	return e.endLocked(sh, ks, outcome, now), nil
}

// Renew extends the live lease named by token to ttl from now (its own TTL
// when ttl is 0). It returns ErrNotHolder when token is not the live lease.
func (e *Engine) Renew(key string, token Token, ttl time.Duration) (Renewal, error) {
	if ttl < 0 {
		return Renewal{}, fmt.Errorf("engine: renew %q: negative ttl", key)
	}
	sh := e.shardFor(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	now := e.clock.Now()
	ks, ok := e.liveLocked(sh, key, token, now)
	if !ok {
		return Renewal{}, ErrNotHolder
	}
	if ttl == 0 {
		ttl = ks.lease.ttl
	}
	ks.lease.ttl = ttl
	ks.lease.expiresAt = now.Add(ttl)
	sh.expiries.fix(ks)
	sh.armLocked(e, ks.lease.expiresAt, now)
	e.obs.OnEvent(Event{Type: EventRenewed, Key: key, Owner: ks.lease.owner, Fence: ks.lease.fence, Time: now, ExpiresAt: ks.lease.expiresAt, OnError: ks.lease.onError})
	return Renewal{Fence: ks.lease.fence, TTL: ttl, ExpiresAt: ks.lease.expiresAt}, nil
}

// ForceRelease ends the key's lease, whoever holds it, and hands the key to
// the next waiter. It returns ErrNotHeld when nobody holds the key.
func (e *Engine) ForceRelease(key string) (Ended, error) {
	sh := e.shardFor(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	now := e.clock.Now()
	ks := sh.keys[key]
	if ks == nil || !ks.held {
		return Ended{}, ErrNotHeld
	}
	if !now.Before(ks.lease.expiresAt) {
		e.endLocked(sh, ks, OutcomeExpired, now)
		return Ended{}, ErrNotHeld
	}
	return e.endLocked(sh, ks, OutcomeForced, now), nil
}

// Inspect returns a snapshot of key listing at most maxQueue waiters.
func (e *Engine) Inspect(key string, maxQueue int) KeyInfo {
	sh := e.shardFor(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	info := KeyInfo{Key: key}
	ks := sh.keys[key]
	if ks == nil {
		return info
	}
	if ks.held && e.clock.Now().Before(ks.lease.expiresAt) {
		info.Held = true
		l := &ks.lease
		info.Holder = Holder{Owner: l.owner, Fence: l.fence, AcquiredAt: l.acquiredAt, ExpiresAt: l.expiresAt, OnError: l.onError}
	}
	info.Waiters = ks.n
	info.Queue = make([]WaiterInfo, 0, min(ks.n, maxQueue))
	for w := ks.head; w != nil && len(info.Queue) < maxQueue; w = w.next {
		info.Queue = append(info.Queue, WaiterInfo{Owner: w.opts.Owner, WaitingSince: w.since})
	}
	return info
}

// List returns up to limit active keys (held or waited on) that start with
// prefix and sort after the cursor after, in key order, and the cursor of
// the next page ("" when this page is the last).
func (e *Engine) List(prefix, after string, limit int) ([]KeySummary, string) {
	var rows []KeySummary
	for i := range e.shards {
		sh := &e.shards[i]
		sh.mu.Lock()
		for k, ks := range sh.keys {
			if k > after && strings.HasPrefix(k, prefix) {
				rows = append(rows, KeySummary{Key: k, Held: ks.held, Owner: ks.lease.owner, Waiters: ks.n})
			}
		}
		sh.mu.Unlock()
	}
	sortSummaries(rows)
	if len(rows) > limit {
		rows = rows[:limit]
		return rows, rows[limit-1].Key
	}
	return rows, ""
}

// Stats returns the engine-wide counts.
func (e *Engine) Stats() Stats {
	return Stats{Keys: int(e.keys.Load()), Held: int(e.held.Load()), Waiters: int(e.waiters.Load())}
}

// EachOldestWaiter calls fn with every key that has waiters and the arrival
// time of its first waiter. fn runs with a shard locked: it must be fast and
// must not call the engine.
func (e *Engine) EachOldestWaiter(fn func(key string, since time.Time)) {
	for i := range e.shards {
		sh := &e.shards[i]
		sh.mu.Lock()
		for ks := range sh.waiting {
			fn(ks.key, ks.head.since)
		}
		sh.mu.Unlock()
	}
}

// Close stops granting: every queued waiter and every later acquire gets
// ErrUnavailable. Live leases may still be released and renewed; their
// expiry is no longer enforced, since nobody can be waiting for them.
func (e *Engine) Close() {
	e.closed.Store(true)
	for i := range e.shards {
		sh := &e.shards[i]
		sh.mu.Lock()
		now := e.clock.Now()
		for ks := range sh.waiting {
			for ks.head != nil {
				e.resolveLocked(sh, ks.head, EventCancelled, ErrUnavailable, now)
			}
		}
		sh.stopped = true
		if sh.timer != nil {
			sh.timer.Stop()
		}
		sh.mu.Unlock()
	}
}

// armLocked makes sure the shard's timer fires no later than deadline.
func (sh *shard) armLocked(e *Engine, deadline, now time.Time) {
	if sh.stopped || (!sh.timerAt.IsZero() && !deadline.Before(sh.timerAt)) {
		return
	}
	sh.timerAt = deadline
	d := deadline.Sub(now)
	if sh.timer == nil {
		sh.timer = e.clock.AfterFunc(d, func() { e.expireDue(sh) })
		return
	}
	sh.timer.Reset(d)
}

// expireDue ends every lease of the shard whose deadline has passed, then
// re-arms the timer for the next deadline.
func (e *Engine) expireDue(sh *shard) {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	sh.timerAt = time.Time{}
	now := e.clock.Now()
	for len(sh.expiries) > 0 {
		ks := sh.expiries[0]
		if now.Before(ks.lease.expiresAt) {
			sh.armLocked(e, ks.lease.expiresAt, now)
			return
		}
		e.endLocked(sh, ks, OutcomeExpired, now)
	}
}

// reportPositions tells every waiter with an OnPosition callback its new
// place in the queue, if it moved. It walks the queue only as far as the
// last such waiter, and not at all when there is none.
func (ks *keyState) reportPositions() {
	left := ks.watchers
	pos := 0
	for w := ks.head; w != nil && left > 0; w = w.next {
		pos++
		if w.opts.OnPosition == nil {
			continue
		}
		left--
		if w.pos != pos {
			w.pos = pos
			w.opts.OnPosition(pos)
		}
	}
}

func (ks *keyState) push(w *waiter) {
	w.prev, w.next = ks.tail, nil
	if ks.tail != nil {
		ks.tail.next = w
	} else {
		ks.head = w
	}
	ks.tail = w
	ks.n++
}

func (ks *keyState) remove(w *waiter) {
	if w.prev != nil {
		w.prev.next = w.next
	} else {
		ks.head = w.next
	}
	if w.next != nil {
		w.next.prev = w.prev
	} else {
		ks.tail = w.prev
	}
	w.prev, w.next = nil, nil
	ks.n--
}
