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

// shard owns the keys that hash to it. Its e gives it the engine's clock,
// observer, limits and counters; everything below mu is its own.
type shard struct {
	e *Engine

	mu       sync.Mutex // guards the following
	keys     map[string]*keyState
	expiries leaseHeap              // keys whose holder has a deadline, by deadline
	waiting  map[*keyState]struct{} // keys with at least one waiter
	timer    Timer                  // fires at timerAt to expire leases
	timerAt  time.Time              // zero when the timer is not armed
	stopped  bool                   // the engine is closed: arm no timers
	free     []*keyState            // idle keyStates for reuse, at most maxFreeKeys
	// moved holds keys whose waiters past the first positionsAtOnce places
	// have not yet been told that their place moved; posTimer tells them.
	moved    map[*keyState]struct{}
	posTimer Timer
	posArmed bool

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
	moved    bool // in shard.moved
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
		e.shards[i].e = e
		e.shards[i].keys = make(map[string]*keyState)
		e.shards[i].waiting = make(map[*keyState]struct{})
		e.shards[i].moved = make(map[*keyState]struct{})
	}
	return e
}

func (e *Engine) shardFor(key string) *shard {
	return &e.shards[maphash.String(e.seed, key)&(numShards-1)]
}

// MaxFence is the largest fence the engine issues, 2^53-1, so that every
// fence is exact as a JSON number in JavaScript.
const MaxFence = 1<<53 - 1

// nextFence returns a fence greater than every fence issued before, and at
// least the wall clock in microseconds, so fences keep growing across a
// restart that loses all state (a hybrid logical clock). A wall clock
// before 1970 or past MaxFence (the year 2255) is ignored rather than let
// it wrap or push fences past MaxFence. ok is false once MaxFence has been
// issued: 2^53 grants, never reached in practice.
func (e *Engine) nextFence(now time.Time) (fence uint64, ok bool) {
	var wall uint64
	if us := now.UnixMicro(); us > 0 && us <= MaxFence {
		wall = uint64(us)
	}
	for {
		last := e.fence.Load()
		if last >= MaxFence {
			return 0, false
		}
		next := max(last+1, wall)
		if e.fence.CompareAndSwap(last, next) {
			return next, true
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
	g, w, err := sh.tryLocked(key, opts)
	sh.mu.Unlock()
	if w == nil {
		return g, err
	}
	return sh.await(ctx, w)
}

// tryLocked grants key at once when nobody holds it or waits for it,
// refuses the caller, or queues it and returns its waiter.
func (sh *shard) tryLocked(key string, opts AcquireOptions) (Grant, *waiter, error) {
	e := sh.e
	if sh.stopped {
		// Close ran between Acquire's check and this lock: it has already
		// answered this shard's waiters and will not come back for one
		// queued now, nor expire a lease granted now.
		return Grant{}, nil, ErrUnavailable
	}
	now := e.clock.Now()
	ks := sh.keys[key]
	if ks != nil && ks.held && !now.Before(ks.lease.expiresAt) {
		// The deadline passed but the timer has not run yet: expire now, so
		// the outcome depends only on the time of this operation.
		sh.endLocked(ks, OutcomeExpired, now)
		ks = sh.keys[key]
	}
	if ks == nil {
		if n := e.keys.Add(1); e.limits.MaxKeys > 0 && n > e.limits.cap(e.limits.MaxKeys, e.limits.ReservedKeys, opts.Reserve) {
			e.keys.Add(-1)
			return Grant{}, nil, ErrTooManyKeys
		}
		ks = sh.newKeyLocked(key)
	}
	if !ks.held && ks.n == 0 { // free and nobody queued: no barging is possible
		fence, ok := e.nextFence(now)
		if !ok {
			sh.deleteIfIdleLocked(ks)
			return Grant{}, nil, ErrFencesExhausted
		}
		return sh.grantLocked(ks, grantOf{opts: opts, since: now, fence: fence}, now), nil, nil
	}
	if opts.Wait <= 0 {
		return Grant{}, nil, &TimeoutError{Waiters: ks.n}
	}
	if max := e.limits.MaxWaitersPerKey; max > 0 && ks.n >= max {
		return Grant{}, nil, ErrTooManyWaiters
	}
	if n := e.waiters.Add(1); e.limits.MaxWaiters > 0 && n > e.limits.cap(e.limits.MaxWaiters, e.limits.ReservedWaiters, opts.Reserve) {
		e.waiters.Add(-1)
		return Grant{}, nil, ErrTooManyWaiters
	}
	return Grant{}, sh.enqueueLocked(ks, opts, now), nil
}

// enqueueLocked puts a new waiter at the tail of ks's queue and starts its
// wait timer. The caller has counted it in e.waiters.
func (sh *shard) enqueueLocked(ks *keyState, opts AcquireOptions, now time.Time) *waiter {
	w := &waiter{ks: ks, opts: opts, since: now, done: make(chan struct{})}
	ks.push(w)
	if ks.n == 1 {
		sh.waiting[ks] = struct{}{}
	}
	sh.e.obs.OnEvent(Event{Type: EventQueued, Key: ks.key, Owner: opts.Owner, Time: now, Position: ks.n})
	if opts.OnPosition != nil {
		ks.watchers++
		w.pos = ks.n
		opts.OnPosition(w.pos)
	}
	w.timer = sh.e.clock.AfterFunc(opts.Wait, func() { sh.timeout(w) })
	return w
}

// await blocks until w is granted or leaves the queue, or ctx ends.
func (sh *shard) await(ctx context.Context, w *waiter) (Grant, error) {
	select {
	case <-w.done:
		return w.grant, w.err
	case <-ctx.Done():
	}
	sh.mu.Lock()
	if !w.resolved {
		sh.leaveLocked(w, exitCancelled, sh.e.clock.Now())
		sh.mu.Unlock()
		return Grant{}, fmt.Errorf("%w: %w", ErrCancelled, context.Cause(ctx))
	}
	sh.mu.Unlock()
	if w.err == nil {
		// Granted just as the caller gave up: nobody will use this lease.
		_, _ = sh.e.Release(w.ks.key, w.grant.Token, false)
		return Grant{}, fmt.Errorf("%w: %w", ErrCancelled, context.Cause(ctx))
	}
	return Grant{}, w.err
}

// grantOf is what a grant needs to know besides the key and the time.
type grantOf struct {
	opts      AcquireOptions
	since     time.Time // arrival
	fromQueue bool      // the caller had been queued
	prev      Previous  // the lease that ended just before
	fence     uint64    // from nextFence
}

// grantLocked makes ks's lease the caller's.
func (sh *shard) grantLocked(ks *keyState, g grantOf, now time.Time) Grant {
	e := sh.e
	opts, fence := &g.opts, g.fence
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
	sh.armLocked(ks.lease.expiresAt, now)
	waited := now.Sub(g.since)
	e.obs.OnEvent(Event{
		Type: EventGranted, Key: ks.key, Owner: opts.Owner, Fence: fence, Time: now,
		Waited: waited, ExpiresAt: ks.lease.expiresAt, OnError: opts.OnError, FromQueue: g.fromQueue, Previous: g.prev,
	})
	return Grant{
		Key:       ks.key,
		Token:     ks.lease.token,
		Fence:     fence,
		Owner:     opts.Owner,
		TTL:       opts.TTL,
		ExpiresAt: ks.lease.expiresAt,
		Waited:    waited,
		Previous:  g.prev,
	}
}

// endLocked ends ks's lease with outcome and hands the key to the next
// waiter, or aborts the queue when a failed OnErrorStop holder ends, or
// deletes the key when nobody waits.
func (sh *shard) endLocked(ks *keyState, outcome Outcome, now time.Time) Ended {
	e := sh.e
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
	if ks.head == nil {
		sh.deleteIfIdleLocked(ks)
		return ended
	}
	if outcome.Failure() && l.onError == OnErrorStop {
		sh.emptyQueueLocked(ks, exitAborted, now)
		return ended
	}
	fence, ok := e.nextFence(now)
	if !ok {
		sh.emptyQueueLocked(ks, exitExhausted, now)
		return ended
	}
	w := ks.head
	w.timer.Stop()
	sh.dequeueLocked(w)
	w.grant = sh.grantLocked(ks, grantOf{opts: w.opts, since: w.since, fromQueue: true, prev: prev, fence: fence}, now)
	w.resolved = true
	close(w.done)
	sh.queueMovedLocked(ks)
	return ended
}

// emptyQueueLocked answers every waiter of ks for reason x. The last one to
// leave deletes the key if it is idle (and may recycle ks), so the caller
// must not touch ks afterwards.
func (sh *shard) emptyQueueLocked(ks *keyState, x exit, now time.Time) {
	for ks.head != nil {
		sh.leaveLocked(ks.head, x, now)
	}
}

// exit is why a waiter leaves its queue without a grant. It fixes the event,
// the error the waiter gets, and whether the places behind it move up.
type exit uint8

const (
	exitTimeout   exit = iota // the wait passed
	exitCancelled             // the caller gave up
	exitAborted               // a failed OnErrorStop holder ended: the whole queue goes
	exitClosed                // the engine closed: the whole queue goes
	exitExhausted             // no fence is left to grant with: the whole queue goes
)

var exitEvents = [...]EventType{exitTimeout: EventTimeout, exitCancelled: EventCancelled, exitAborted: EventAborted,
	exitClosed: EventCancelled, exitExhausted: EventCancelled}

// othersStay reports whether the rest of the queue stays, so their places
// move up; after an abort or a close nobody stays.
func (x exit) othersStay() bool { return x == exitTimeout || x == exitCancelled }

// leaveLocked takes w out of its queue without a grant, for reason x.
func (sh *shard) leaveLocked(w *waiter, x exit, now time.Time) {
	ks := w.ks
	w.timer.Stop()
	sh.dequeueLocked(w)
	w.resolved = true
	switch x {
	case exitTimeout:
		w.err = &TimeoutError{Waiters: ks.n}
	case exitCancelled:
		w.err = ErrCancelled
	case exitAborted:
		w.err = ErrAborted
	case exitClosed:
		w.err = ErrUnavailable
	case exitExhausted:
		w.err = ErrFencesExhausted
	}
	sh.e.obs.OnEvent(Event{Type: exitEvents[x], Key: ks.key, Owner: w.opts.Owner, Time: now, Waited: now.Sub(w.since)})
	close(w.done)
	if x.othersStay() {
		sh.queueMovedLocked(ks)
	}
	sh.deleteIfIdleLocked(ks)
}

func (sh *shard) dequeueLocked(w *waiter) {
	ks := w.ks
	ks.remove(w)
	if w.opts.OnPosition != nil {
		ks.watchers--
	}
	sh.e.waiters.Add(-1)
	if ks.n == 0 {
		delete(sh.waiting, ks)
	}
}

func (sh *shard) deleteIfIdleLocked(ks *keyState) {
	if !ks.held && ks.n == 0 && sh.keys[ks.key] == ks {
		if ks.moved {
			delete(sh.moved, ks)
		}
		delete(sh.keys, ks.key)
		sh.e.keys.Add(-1)
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

// timeout ends w's wait when its timer fires, unless it was resolved first.
func (sh *shard) timeout(w *waiter) {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if !w.resolved {
		sh.leaveLocked(w, exitTimeout, sh.e.clock.Now())
	}
}

// liveLocked returns ks's lease if token names it and it has not expired.
// A lease found past its deadline is expired on the spot.
func (sh *shard) liveLocked(key string, token Token, now time.Time) (*keyState, bool) {
	ks := sh.keys[key]
	if ks == nil || !ks.held || !ks.lease.token.equal(token) {
		return nil, false
	}
	if !now.Before(ks.lease.expiresAt) {
		sh.endLocked(ks, OutcomeExpired, now)
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
	ks, ok := sh.liveLocked(key, token, now)
	if !ok {
		return Ended{}, ErrNotHolder
	}
	outcome := OutcomeReleased
	if failed {
		outcome = OutcomeFailed
	}
	return sh.endLocked(ks, outcome, now), nil
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
	ks, ok := sh.liveLocked(key, token, now)
	if !ok {
		return Renewal{}, ErrNotHolder
	}
	if ttl == 0 {
		ttl = ks.lease.ttl
	}
	ks.lease.ttl = ttl
	ks.lease.expiresAt = now.Add(ttl)
	sh.expiries.fix(ks)
	sh.armLocked(ks.lease.expiresAt, now)
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
		sh.endLocked(ks, OutcomeExpired, now)
		return Ended{}, ErrNotHeld
	}
	return sh.endLocked(ks, OutcomeForced, now), nil
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
	if ks.live(e.clock.Now()) {
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

// List returns up to limit active keys (with a live lease or waiters) that
// start with prefix and sort after the cursor after, in key order, and the
// cursor of the next page ("" when this page is the last). A lease past its
// deadline is over, as in Inspect, even if its timer has not run yet.
func (e *Engine) List(prefix, after string, limit int) ([]KeySummary, string) {
	var rows []KeySummary
	for i := range e.shards {
		sh := &e.shards[i]
		sh.mu.Lock()
		now := e.clock.Now()
		for k, ks := range sh.keys {
			if k <= after || !strings.HasPrefix(k, prefix) {
				continue
			}
			row := KeySummary{Key: k, Waiters: ks.n}
			if ks.live(now) {
				row.Held, row.Owner = true, ks.lease.owner
			} else if ks.n == 0 {
				continue // its lease is over and nobody waits: idle
			}
			rows = append(rows, row)
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
			sh.emptyQueueLocked(ks, exitClosed, now)
		}
		sh.stopped = true
		if sh.timer != nil {
			sh.timer.Stop()
		}
		if sh.posTimer != nil {
			sh.posTimer.Stop()
		}
		sh.mu.Unlock()
	}
}

// armLocked makes sure the shard's timer fires no later than deadline.
func (sh *shard) armLocked(deadline, now time.Time) {
	if sh.stopped || (!sh.timerAt.IsZero() && !deadline.Before(sh.timerAt)) {
		return
	}
	sh.timerAt = deadline
	d := deadline.Sub(now)
	if sh.timer == nil {
		sh.timer = sh.e.clock.AfterFunc(d, sh.expireDue)
		return
	}
	sh.timer.Reset(d)
}

// expireDue ends every lease of the shard whose deadline has passed, then
// re-arms the timer for the next deadline.
func (sh *shard) expireDue() {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	sh.timerAt = time.Time{}
	now := sh.e.clock.Now()
	for len(sh.expiries) > 0 {
		ks := sh.expiries[0]
		if now.Before(ks.lease.expiresAt) {
			sh.armLocked(ks.lease.expiresAt, now)
			return
		}
		sh.endLocked(ks, OutcomeExpired, now)
	}
}

// Positions are reported in two tiers, so that a departure costs O(1)
// however long the queue: a move tells the first positionsAtOnce places at
// once (the ones about to be served), and the places behind them at most
// once per positionInterval, in one walk per key. Telling every watcher on
// every departure would cost O(n) per departure and O(n²) to drain a queue
// of n watchers, all of it under the shard lock.
const (
	positionsAtOnce  = 64
	positionInterval = time.Second
)

// queueMovedLocked reports the new places of ks's watchers after a waiter
// left: the first positionsAtOnce now, the rest by the shard's position
// timer.
func (sh *shard) queueMovedLocked(ks *keyState) {
	if !ks.reportPositions(positionsAtOnce) || ks.moved || sh.stopped {
		return
	}
	ks.moved = true
	sh.moved[ks] = struct{}{}
	if sh.posArmed {
		return
	}
	sh.posArmed = true
	if sh.posTimer == nil {
		sh.posTimer = sh.e.clock.AfterFunc(positionInterval, sh.reportMoved)
		return
	}
	sh.posTimer.Reset(positionInterval)
}

// reportMoved tells the watchers of every key in sh.moved their places.
func (sh *shard) reportMoved() {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	sh.posArmed = false
	for ks := range sh.moved {
		ks.moved = false
		ks.reportPositions(ks.n)
	}
	clear(sh.moved)
}

// reportPositions tells every waiter with an OnPosition callback among the
// first limit places its new place in the queue, if it moved. It walks the
// queue only as far as the last such waiter, and not at all when there is
// none. It returns whether watchers beyond limit were left untold.
func (ks *keyState) reportPositions(limit int) bool {
	left := ks.watchers
	pos := 0
	for w := ks.head; w != nil && left > 0; w = w.next {
		if pos == limit {
			return true
		}
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
	return false
}

// live reports whether ks has a lease whose deadline is after now.
func (ks *keyState) live(now time.Time) bool { return ks.held && now.Before(ks.lease.expiresAt) }

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
