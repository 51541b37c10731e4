// Package engine is mutexd's lock engine: keyed exclusive locks with a
// strict FIFO queue per key, granted as leases that end by release, expiry
// or force-release. It knows nothing of HTTP or metrics: time comes from an
// injected Clock and transitions are reported to an Observer.
//
// Every transition is a deterministic function of (operation, clock time):
// the engine reads the clock once per operation, under the key's shard lock.
package engine

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"slices"
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
	mask   uint64        // numShards-1, or 0 for a Deterministic engine's one shard
	grace  time.Duration // detach grace; 0 when detaching is off
	// memoCap is each shard's share of Limits.MaxRemembered.
	memoCap int

	fence      atomic.Uint64 // last fence issued
	keys       atomic.Int64  // keys with a holder, waiters, a pause or a lock-delay
	held       atomic.Int64  // live leases
	waiters    atomic.Int64  // queued waiters
	paused     atomic.Int64  // paused keys
	remembered atomic.Int64  // remembered records (memos)
	closed     atomic.Bool

	// pausedPrefixes is read when a key is created, but only while
	// nPrefixes is positive, so an engine with no paused prefix pays one
	// atomic load.
	nPrefixes      atomic.Int32
	prefixMu       sync.Mutex // guards pausedPrefixes
	pausedPrefixes []string

	shards [numShards]shard
}

// shard owns the keys that hash to it. Its e gives it the engine's clock,
// observer, limits and counters; everything below mu is its own.
type shard struct {
	e *Engine

	mu       sync.Mutex // guards the following
	keys     map[string]*keyState
	expiries leaseHeap              // live leases, by deadline
	delays   delayHeap              // keys in a lock-delay, by its end
	waiting  map[*keyState]struct{} // keys with at least one waiter
	timer    Timer                  // fires at timerAt to expire leases and delays
	timerAt  time.Time              // zero when the timer is not armed
	stopped  bool                   // the engine is closed: arm no timers
	free     []*keyState            // idle keyStates for reuse, at most maxFreeKeys
	// moved holds keys whose waiters past the first positionsAtOnce places
	// have not yet been told that their place moved; posTimer tells them.
	moved    map[*keyState]struct{}
	posTimer Timer
	posArmed bool
	// memos are the records kept after a lease ended (request.go), oldest
	// first in the list from memoOld; nil until the first one.
	memos            map[memoKey]*memo
	memoOld, memoNew *memo
	freeMemos        []*memo // forgotten memos for reuse, at most maxFreeKeys

	_ [64]byte // keep shards on separate cache lines
}

// keyState is a key with a holder, waiters, a pause or a lock-delay. A key
// with none of them is deleted from its shard at once.
type keyState struct {
	key string
	// lease is the key's first holder slot, inline so that a mutex grant
	// allocates nothing; held says it is in use. A semaphore's further
	// holders are in x.more.
	lease lease
	// The queue: a doubly linked list of waiters in arrival order.
	head, tail *waiter
	n          int32
	// watchers counts queued waiters with an OnPosition callback; the queue
	// is walked to report positions only while it is positive.
	watchers int32
	limit    uint16 // holders admitted; fixed while anyone holds or waits
	held     bool
	moved    bool // in shard.moved
	paused   bool
	// x holds what only some keys need (a semaphore's other holders, the
	// last outcome, a lock-delay, request ids); nil for a plain mutex
	// that was never contended. It stays with the record when recycled.
	x *keyExt
}

// keyExt is the part of a key that the plain acquire/release path never
// touches.
type keyExt struct {
	more       []*lease // holders besides the inline one, unordered
	last       Previous // how the key's last lease ended
	delayUntil time.Time
	delayIdx   int                // index in shard.delays, -1 when not there
	ids        map[string]*waiter // queued waiters with a RequestID
}

type lease struct {
	token      Token
	fence      uint64
	owner      string
	ttl        time.Duration
	acquiredAt time.Time
	expiresAt  time.Time
	onError    OnError
	heapIdx    int32 // index in shard.expiries, -1 when not there
	ks         *keyState
	ext        *leaseExt // nil unless RequestID, MaxHold or LockDelay
}

// leaseExt is what a lease with the newer options carries.
type leaseExt struct {
	id        string
	attempt   uint64 // AcquireOptions.Attempt of the call it was granted to
	maxHold   time.Duration
	lockDelay time.Duration
	// waited and prev repeat the Grant to a re-sent acquire.
	waited time.Duration
	prev   Previous
	// claim, while set (a *claimWait), releases the lease unless a
	// re-sent acquire claims it first: it was granted to a waiter whose
	// caller had gone. Once a re-sent acquire has returned the lease it is
	// claimedTimer, so that no claim is ever set on it again (its caller
	// knows the token).
	claim Timer
}

type waiter struct {
	prev, next *waiter
	ks         *keyState
	// opts.Wait is kept so that since + opts.Wait is when the waiter's stay
	// ends: supersedeLocked and detachLocked adjust it (the waiter stays
	// the size it was before they existed).
	opts     AcquireOptions
	since    time.Time
	timer    Timer
	pos      int           // last position reported to opts.OnPosition
	done     chan struct{} // closed once grant/err are set
	resolved bool          // guarded by the shard lock
	detached bool          // its caller has gone; it keeps its place until until()
	grant    Grant
	err      error
}

// until is when w's stay in the queue ends: its wait, or, detached, its
// detach grace.
func (w *waiter) until() time.Time { return w.since.Add(w.opts.Wait) }

// New returns an engine that reads time from clock and reports transitions
// to obs (which may be nil).
func New(clock Clock, obs Observer, limits Limits) *Engine {
	if obs == nil {
		obs = nopObserver{}
	}
	e := &Engine{clock: clock, obs: obs, limits: limits, seed: maphash.MakeSeed(), mask: numShards - 1}
	shards := numShards
	if limits.Deterministic {
		e.mask, shards = 0, 1
	}
	switch {
	case limits.DetachGrace == 0:
		e.grace = DefaultDetachGrace
	case limits.DetachGrace > 0:
		e.grace = limits.DetachGrace
	}
	maxMemos := limits.MaxRemembered
	if maxMemos <= 0 {
		maxMemos = DefaultMaxRemembered
	}
	e.memoCap = max(1, (maxMemos+shards-1)/shards)
	for i := range e.shards {
		e.shards[i].e = e
		e.shards[i].keys = make(map[string]*keyState)
		e.shards[i].waiting = make(map[*keyState]struct{})
		e.shards[i].moved = make(map[*keyState]struct{})
	}
	return e
}

func (e *Engine) shardFor(key string) *shard {
	return &e.shards[maphash.String(e.seed, key)&e.mask&(numShards-1)]
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
// holder aborts the queue (ErrAborted), an operator drains it
// (*DrainedError), ctx ends (ErrCancelled), a later acquire with the same
// RequestID takes its place (ErrSuperseded), the engine closes
// (ErrUnavailable), or the caller is refused (ErrTooManyKeys,
// ErrTooManyWaiters, *LimitMismatchError, *LeaseEndedError). A grant that
// races with ctx's end is released at once and handed on, so no lease is
// left without a holder; with a RequestID it is kept for DetachGrace
// instead, for the caller's re-sent acquire to claim.
func (e *Engine) Acquire(ctx context.Context, key string, opts AcquireOptions) (Grant, error) {
	if err := e.checkAcquire(key, &opts); err != nil {
		return Grant{}, err
	}
	sh := e.shardFor(key)
	sh.mu.Lock()
	g, w, err := sh.tryLocked(key, &opts)
	sh.mu.Unlock()
	if w == nil {
		if err == nil && ctx.Err() != nil {
			// Granted to a caller already gone.
			e.Abandon(key, g.Fence)
			return Grant{}, fmt.Errorf("%w: %w", ErrCancelled, context.Cause(ctx))
		}
		return g, err
	}
	return sh.await(ctx, w)
}

// checkAcquire refuses options the engine cannot act on, and every
// acquire once the engine is closed.
func (e *Engine) checkAcquire(key string, opts *AcquireOptions) error {
	if opts.TTL <= 0 {
		return fmt.Errorf("engine: acquire %q: ttl must be positive", key)
	}
	if opts.Limit < 0 || opts.Limit > MaxLimit || opts.MaxHold < 0 || opts.LockDelay < 0 {
		return fmt.Errorf("engine: acquire %q: limit, max hold or lock delay out of range", key)
	}
	if e.closed.Load() {
		return ErrUnavailable
	}
	return nil
}

// limitOf is the number of holders opts asks the key to admit.
func limitOf(opts *AcquireOptions) uint16 {
	if opts.Limit <= 1 {
		return 1
	}
	return uint16(opts.Limit)
}

// tryLocked grants key at once when a slot is free and nobody waits for
// it, answers a re-sent RequestID, refuses the caller, or queues it and
// returns its waiter.
func (sh *shard) tryLocked(key string, opts *AcquireOptions) (Grant, *waiter, error) {
	e := sh.e
	if sh.stopped {
		// Close ran between Acquire's check and this lock: it has already
		// answered this shard's waiters and will not come back for one
		// queued now, nor expire a lease granted now.
		return Grant{}, nil, ErrUnavailable
	}
	now := e.clock.Now()
	ks := sh.keys[key]
	if ks != nil {
		// A deadline passed but the timer has not run yet: act on it now,
		// so the outcome depends only on the time of this operation.
		ks = sh.settleLocked(ks, now)
	}
	if opts.RequestID != "" {
		if g, w, err, done := sh.resendLocked(ks, key, opts, now); done {
			return g, w, err
		}
	}
	limit := limitOf(opts)
	if ks == nil {
		if n := e.keys.Add(1); e.limits.MaxKeys > 0 && n > e.limits.cap(e.limits.MaxKeys, e.limits.ReservedKeys, opts.Reserve) {
			e.keys.Add(-1)
			return Grant{}, nil, ErrTooManyKeys
		}
		ks = sh.newKeyLocked(key, now)
		ks.limit = limit
	} else if ks.limit != limit {
		if ks.held || ks.n > 0 || (ks.x != nil && len(ks.x.more) > 0) {
			return Grant{}, nil, &LimitMismatchError{Limit: int(ks.limit)}
		}
		ks.limit = limit // nobody holds or waits: the key's limit is not fixed
	}
	if ks.n == 0 && ks.free() && ks.grantable(now) { // a slot is free and nobody queued: no barging is possible
		fence, ok := e.nextFence(now)
		if !ok {
			sh.deleteIfIdleLocked(ks)
			return Grant{}, nil, ErrFencesExhausted
		}
		var prev Previous
		if ks.x != nil {
			prev = ks.x.last
		}
		l := sh.grantLocked(ks, opts, &grantOf{since: now, fence: fence, prev: prev}, now)
		return l.grant(ks.key, 0, prev), nil, nil
	}
	if opts.Wait <= 0 {
		return Grant{}, nil, &TimeoutError{Waiters: int(ks.n)}
	}
	if max := e.limits.MaxWaitersPerKey; max > 0 && int(ks.n) >= max {
		return Grant{}, nil, ErrTooManyWaiters
	}
	if n := e.waiters.Add(1); e.limits.MaxWaiters > 0 && n > e.limits.cap(e.limits.MaxWaiters, e.limits.ReservedWaiters, opts.Reserve) {
		e.waiters.Add(-1)
		return Grant{}, nil, ErrTooManyWaiters
	}
	return Grant{}, sh.enqueueLocked(ks, *opts, now), nil
}

// settleLocked ends every lease of ks whose deadline has passed, earliest
// first, and a lock-delay that is over, as the shard's timer would have.
// It returns ks, or nil when that left the key idle and deleted it.
func (sh *shard) settleLocked(ks *keyState, now time.Time) *keyState {
	key := ks.key
	if ks.held && !now.Before(ks.lease.expiresAt) {
		if ks.x == nil || len(ks.x.more) == 0 {
			sh.endLocked(&ks.lease, OutcomeExpired, now)
			return sh.keys[key]
		}
	}
	if ks.x == nil {
		return ks
	}
	if len(ks.x.more) > 0 {
		var due []*lease
		ks.eachLease(func(l *lease) {
			if !now.Before(l.expiresAt) {
				due = append(due, l)
			}
		})
		slices.SortFunc(due, func(a, b *lease) int {
			if c := a.expiresAt.Compare(b.expiresAt); c != 0 {
				return c
			}
			return cmp.Compare(a.fence, b.fence)
		})
		for _, l := range due {
			sh.endLocked(l, OutcomeExpired, now)
			if sh.keys[key] != ks {
				return nil
			}
		}
	}
	if d := ks.x.delayUntil; !d.IsZero() && !now.Before(d) {
		sh.endDelayLocked(ks, now)
		return sh.keys[key]
	}
	return ks
}

// free reports whether ks has a holder slot free.
func (ks *keyState) free() bool { return ks.nheld() < int(ks.limit) }

// nheld is the number of ks's leases (live or past their deadline).
func (ks *keyState) nheld() int {
	n := 0
	if ks.held {
		n = 1
	}
	if ks.x != nil {
		n += len(ks.x.more)
	}
	return n
}

// grantable reports whether ks may grant at now: not paused, no lock-delay.
func (ks *keyState) grantable(now time.Time) bool {
	return !ks.paused && (ks.x == nil || ks.x.delayUntil.IsZero() || !now.Before(ks.x.delayUntil))
}

// ext returns ks.x, creating it.
func (ks *keyState) ext() *keyExt {
	if ks.x == nil {
		ks.x = &keyExt{delayIdx: -1}
	}
	return ks.x
}

// eachLease calls fn with every lease of ks, the inline one first.
func (ks *keyState) eachLease(fn func(*lease)) {
	if ks.held {
		fn(&ks.lease)
	}
	if ks.x != nil {
		for _, l := range ks.x.more {
			fn(l)
		}
	}
}

// enqueueLocked puts a new waiter at the tail of ks's queue and starts its
// wait timer. The caller has counted it in e.waiters.
func (sh *shard) enqueueLocked(ks *keyState, opts AcquireOptions, now time.Time) *waiter {
	w := &waiter{ks: ks, opts: opts, since: now, done: make(chan struct{})}
	ks.push(w)
	if ks.n == 1 {
		sh.waiting[ks] = struct{}{}
	}
	if opts.RequestID != "" {
		x := ks.ext()
		if x.ids == nil {
			x.ids = make(map[string]*waiter)
		}
		x.ids[opts.RequestID] = w
	}
	sh.e.obs.OnEvent(Event{Type: EventQueued, Key: ks.key, Owner: opts.Owner, Time: now, Position: int(ks.n)})
	if opts.OnPosition != nil {
		ks.watchers++
		w.pos = int(ks.n)
		opts.OnPosition(w.pos)
	}
	w.timer = sh.e.clock.AfterFunc(opts.Wait, func() { sh.timeout(w) })
	return w
}

// await blocks until w is granted or leaves the queue, or ctx ends.
func (sh *shard) await(ctx context.Context, w *waiter) (Grant, error) {
	select {
	case <-w.done:
		if w.err != nil || ctx.Err() == nil {
			return w.grant, w.err
		}
		// Granted, but the caller is gone too: select chose at random.
		sh.e.Abandon(w.grant.Key, w.grant.Fence)
		return Grant{}, fmt.Errorf("%w: %w", ErrCancelled, context.Cause(ctx))
	case <-ctx.Done():
	}
	cancelled := fmt.Errorf("%w: %w", ErrCancelled, context.Cause(ctx))
	sh.mu.Lock()
	if !w.resolved {
		now := sh.e.clock.Now()
		if errors.Is(context.Cause(ctx), ErrWontReturn) || !sh.detachLocked(w, now) {
			sh.leaveLocked(w, exitCancelled, now, "")
		}
		sh.mu.Unlock()
		return Grant{}, cancelled
	}
	sh.mu.Unlock()
	if w.err == nil {
		// Granted just as the caller gave up. (The key comes from the
		// grant: w.ks may be recycled once the shard is unlocked.)
		sh.e.Abandon(w.grant.Key, w.grant.Fence)
		return Grant{}, cancelled
	}
	return Grant{}, w.err
}

// Abandon tells the engine that the caller of key's lease with fence will
// never see its grant: its context ended, or its client left, as it was
// granted. A lease granted to an acquire with a RequestID is kept for the
// re-sent acquire for Limits.DetachGrace and released then if nobody
// claimed it (at once if a re-send already did, it stays theirs); any
// other is released at once, so that no lease is left that nobody can
// release.
func (e *Engine) Abandon(key string, fence uint64) {
	sh := e.shardFor(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	ks := sh.keys[key]
	if ks == nil {
		return
	}
	now := e.clock.Now()
	l := ks.leaseByFence(fence)
	if l == nil || !l.live(now) {
		return
	}
	if l.ext != nil && l.ext.id != "" && e.grace > 0 && !sh.stopped {
		sh.awaitClaimLocked(l, now.Add(e.grace), now)
		return
	}
	sh.endLocked(l, OutcomeReleased, now)
}

// grantOf is what a grant needs to know besides the key, the acquire's
// options and the time.
type grantOf struct {
	since     time.Time // arrival
	fromQueue bool      // the caller had been queued
	prev      Previous  // the lease that ended just before
	fence     uint64    // from nextFence
}

// grantLocked gives the caller a free holder slot of ks: the inline lease
// when free, else a new lease among x.more.
func (sh *shard) grantLocked(ks *keyState, opts *AcquireOptions, g *grantOf, now time.Time) *lease {
	e := sh.e
	fence := g.fence
	var l *lease
	if !ks.held {
		ks.held = true
		l = &ks.lease
	} else {
		l = new(lease)
		x := ks.ext()
		x.more = append(x.more, l)
	}
	*l = lease{
		token:      e.newToken(),
		fence:      fence,
		owner:      opts.Owner,
		ttl:        opts.TTL,
		acquiredAt: now,
		expiresAt:  now.Add(opts.TTL),
		onError:    opts.OnError,
		heapIdx:    -1,
		ks:         ks,
	}
	waited := now.Sub(g.since)
	if opts.RequestID != "" || opts.MaxHold > 0 || opts.LockDelay > 0 {
		l.ext = &leaseExt{id: opts.RequestID, attempt: opts.Attempt, maxHold: opts.MaxHold, lockDelay: opts.LockDelay, waited: waited, prev: g.prev}
		if opts.MaxHold > 0 && opts.MaxHold < opts.TTL {
			l.expiresAt = now.Add(opts.MaxHold)
		}
	}
	e.held.Add(1)
	sh.expiries.push(l)
	sh.armLocked(l.expiresAt, now)
	e.obs.OnEvent(Event{
		Type: EventGranted, Key: ks.key, Owner: opts.Owner, Fence: fence, Time: now,
		Waited: waited, ExpiresAt: l.expiresAt, OnError: opts.OnError, FromQueue: g.fromQueue, Previous: g.prev,
	})
	return l
}

// grant is l as its acquirer sees it.
func (l *lease) grant(key string, waited time.Duration, prev Previous) Grant {
	return Grant{
		Key:       key,
		Token:     l.token,
		Fence:     l.fence,
		Owner:     l.owner,
		TTL:       l.ttl,
		ExpiresAt: l.expiresAt,
		Waited:    waited,
		Previous:  prev,
	}
}

// live reports whether l's deadline is after now.
func (l *lease) live(now time.Time) bool { return now.Before(l.expiresAt) }

// endLocked ends lease l with outcome, then hands its slot to the next
// waiter, or aborts the queue when a failed OnErrorStop holder ends, or
// deletes the key when nothing keeps it. The caller must not touch l or
// its key afterwards, except through the shard's map: the record may have
// been recycled.
func (sh *shard) endLocked(l *lease, outcome Outcome, now time.Time) Ended {
	e := sh.e
	ks := l.ks
	ended := Ended{Fence: l.fence, Held: now.Sub(l.acquiredAt)}
	e.held.Add(-1)
	sh.expiries.remove(l)
	e.obs.OnEvent(Event{
		Type: EventEnded, Key: ks.key, Owner: l.owner, Fence: l.fence, Time: now,
		Held: ended.Held, Outcome: outcome, OnError: l.onError,
	})
	prev := Previous{Fence: l.fence, Outcome: outcome, EndedAt: now}
	stop := outcome.Failure() && l.onError == OnErrorStop
	if x := l.ext; x != nil {
		if x.claim != nil {
			x.claim.Stop()
		}
		if x.id != "" {
			sh.rememberLocked(memoKey{key: ks.key, id: x.id}, prev, now)
		}
		if x.lockDelay > 0 && (outcome == OutcomeExpired || outcome == OutcomeForced) {
			sh.delayLocked(ks, now.Add(x.lockDelay), now)
		}
	}
	if l == &ks.lease {
		ks.held = false
		ks.lease.owner, ks.lease.ext = "", nil // drop the references; the lease is dead
	} else {
		more := ks.x.more
		i := slices.Index(more, l)
		more[i] = more[len(more)-1]
		more[len(more)-1] = nil
		ks.x.more = more[:len(more)-1]
		l.ks = nil
	}
	if ks.idle() {
		// The common case, a mutex released with nobody waiting: the key
		// goes idle at once and only a memo (if any) remembers it.
		if ks.x == nil {
			if e.limits.RememberOutcome > 0 {
				sh.rememberLocked(memoKey{key: ks.key}, prev, now)
			}
		} else {
			ks.x.last = prev // deleteIfIdleLocked remembers it
		}
		sh.deleteIfIdleLocked(ks)
		return ended
	}
	ks.ext().last = prev
	if ks.head != nil && stop {
		sh.emptyQueueLocked(ks, exitAborted, now, "")
		return ended
	}
	sh.pumpLocked(ks, now)
	return ended
}

// pumpLocked grants ks's free slots to the waiters at the head of its
// queue, while it may grant; then deletes ks if it is idle. Every grant to
// a waiter happens here, so a free slot never coexists with a waiting
// queue that could have it.
func (sh *shard) pumpLocked(ks *keyState, now time.Time) {
	e := sh.e
	granted := false
	for ks.head != nil && ks.free() && ks.grantable(now) {
		fence, ok := e.nextFence(now)
		if !ok {
			sh.emptyQueueLocked(ks, exitExhausted, now, "")
			return
		}
		w := ks.head
		w.timer.Stop()
		sh.dequeueLocked(w)
		var prev Previous
		if ks.x != nil {
			prev = ks.x.last
		}
		l := sh.grantLocked(ks, &w.opts, &grantOf{since: w.since, fromQueue: true, prev: prev, fence: fence}, now)
		w.grant = l.grant(ks.key, now.Sub(w.since), prev)
		w.resolved = true
		if w.detached {
			// Its caller has gone: keep the lease for the caller's re-sent
			// acquire until its detach grace ends.
			sh.awaitClaimLocked(l, w.until(), now)
		}
		close(w.done)
		granted = true
	}
	if granted {
		sh.queueMovedLocked(ks)
	}
	sh.deleteIfIdleLocked(ks)
}

// emptyQueueLocked answers every waiter of ks for reason x. The last one to
// leave deletes the key if it is idle (and may recycle ks), so the caller
// must not touch ks afterwards.
func (sh *shard) emptyQueueLocked(ks *keyState, x exit, now time.Time, reason string) int {
	n := 0
	for ks.head != nil {
		sh.leaveLocked(ks.head, x, now, reason)
		n++
	}
	return n
}

// exit is why a waiter leaves its queue without a grant. It fixes the event,
// the error the waiter gets, and whether the places behind it move up.
type exit uint8

const (
	exitTimeout    exit = iota // the wait passed
	exitCancelled              // the caller gave up (and did not come back within its detach grace)
	exitAborted                // a failed OnErrorStop holder ended: the whole queue goes
	exitClosed                 // the engine closed: the whole queue goes
	exitExhausted              // no fence is left to grant with: the whole queue goes
	exitDrained                // an operator drained the queue: the whole queue goes
	exitSuperseded             // a re-sent acquire took its place (it is not dequeued)
)

var exitEvents = [...]EventType{exitTimeout: EventTimeout, exitCancelled: EventCancelled, exitAborted: EventAborted,
	exitClosed: EventCancelled, exitExhausted: EventCancelled, exitDrained: EventDrained, exitSuperseded: EventSuperseded}

// othersStay reports whether the rest of the queue stays, so their places
// move up; after an abort, a drain or a close nobody stays.
func (x exit) othersStay() bool { return x == exitTimeout || x == exitCancelled }

// leaveLocked takes w out of its queue without a grant, for reason x
// (reason is the operator's, for exitDrained).
func (sh *shard) leaveLocked(w *waiter, x exit, now time.Time, reason string) {
	ks := w.ks
	w.timer.Stop()
	sh.dequeueLocked(w)
	w.resolved = true
	switch x {
	case exitTimeout:
		w.err = &TimeoutError{Waiters: int(ks.n)}
	case exitCancelled:
		w.err = ErrCancelled
	case exitAborted:
		w.err = ErrAborted
	case exitClosed:
		w.err = ErrUnavailable
	case exitExhausted:
		w.err = ErrFencesExhausted
	case exitDrained:
		w.err = &DrainedError{Reason: reason}
	}
	sh.e.obs.OnEvent(Event{Type: exitEvents[x], Key: ks.key, Owner: w.opts.Owner, Time: now, Waited: now.Sub(w.since), Reason: reason})
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
	if id := w.opts.RequestID; id != "" && ks.x.ids[id] == w {
		delete(ks.x.ids, id)
	}
	sh.e.waiters.Add(-1)
	if ks.n == 0 {
		delete(sh.waiting, ks)
	}
}

// idle reports whether nothing keeps ks: no lease, no waiter, no pause,
// no lock-delay.
func (ks *keyState) idle() bool {
	return !ks.held && ks.n == 0 && !ks.paused && (ks.x == nil || len(ks.x.more) == 0 && ks.x.delayIdx < 0)
}

func (sh *shard) deleteIfIdleLocked(ks *keyState) {
	if !ks.idle() || sh.keys[ks.key] != ks {
		return
	}
	if ks.moved {
		delete(sh.moved, ks)
	}
	x := ks.x
	if x != nil && x.last.Outcome != OutcomeNone {
		sh.rememberLocked(memoKey{key: ks.key}, x.last, x.last.EndedAt)
	}
	delete(sh.keys, ks.key)
	sh.e.keys.Add(-1)
	if len(sh.free) < maxFreeKeys {
		if x != nil {
			clear(x.ids)
			*x = keyExt{more: x.more[:0], delayIdx: -1, ids: x.ids}
		}
		*ks = keyState{lease: lease{heapIdx: -1}, x: x}
		sh.free = append(sh.free, ks)
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
// is one: an uncontended acquire+release then allocates nothing. A key
// under a paused prefix starts paused, and one whose last outcome is
// remembered takes it back from its memo.
func (sh *shard) newKeyLocked(key string, now time.Time) *keyState {
	var ks *keyState
	if n := len(sh.free); n > 0 {
		ks, sh.free = sh.free[n-1], sh.free[:n-1]
		ks.key = key
	} else {
		ks = &keyState{key: key, lease: lease{heapIdx: -1}}
	}
	sh.keys[key] = ks
	if sh.memos != nil {
		if m := sh.recallLocked(memoKey{key: key}, now); m != nil {
			ks.ext().last = m.prev
			sh.forgetLocked(m)
		}
	}
	if sh.e.nPrefixes.Load() > 0 && sh.e.underPausedPrefix(key) {
		sh.pauseLocked(ks, now)
	}
	return ks
}

// timeout ends w's wait when its timer fires, unless it was resolved
// first or detached (its detach timer decides then).
func (sh *shard) timeout(w *waiter) {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if !w.resolved && !w.detached {
		sh.leaveLocked(w, exitTimeout, sh.e.clock.Now(), "")
	}
}

// findLocked returns the live lease of key named by token. A lease found
// past its deadline is expired on the spot.
func (sh *shard) findLocked(key string, token Token, now time.Time) (*lease, bool) {
	ks := sh.keys[key]
	if ks == nil {
		return nil, false
	}
	var l *lease
	if ks.held && ks.lease.token.equal(token) {
		l = &ks.lease
	} else if ks.x != nil {
		for _, m := range ks.x.more {
			if m.token.equal(token) {
				l = m
				break
			}
		}
	}
	if l == nil {
		return nil, false
	}
	if !l.live(now) {
		sh.endLocked(l, OutcomeExpired, now)
		return nil, false
	}
	return l, true
}

// Release ends the lease named by token; failed marks the work as failed,
// which aborts the queue when the holder chose OnErrorStop. It returns
// ErrNotHolder when token is not a live lease of the key.
func (e *Engine) Release(key string, token Token, failed bool) (Ended, error) {
	sh := e.shardFor(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	now := e.clock.Now()
	l, ok := sh.findLocked(key, token, now)
	if !ok {
		return Ended{}, ErrNotHolder
	}
	outcome := OutcomeReleased
	if failed {
		outcome = OutcomeFailed
	}
	return sh.endLocked(l, outcome, now), nil
}

// Renew extends the live lease named by token to ttl from now (its own TTL
// when ttl is 0). It returns ErrNotHolder when token is not a live lease.
// A lease with a MaxHold is never extended past acquisition + MaxHold:
// a renewal that would is cut to that instant and also returns a
// *MaxHoldError (with the Renewal, which is in force).
func (e *Engine) Renew(key string, token Token, ttl time.Duration) (Renewal, error) {
	if ttl < 0 {
		return Renewal{}, fmt.Errorf("engine: renew %q: negative ttl", key)
	}
	sh := e.shardFor(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	now := e.clock.Now()
	l, ok := sh.findLocked(key, token, now)
	if !ok {
		return Renewal{}, ErrNotHolder
	}
	if ttl == 0 {
		ttl = l.ttl
	}
	l.ttl = ttl
	l.expiresAt = now.Add(ttl)
	var err error
	if l.ext != nil && l.ext.maxHold > 0 {
		if capAt := l.acquiredAt.Add(l.ext.maxHold); l.expiresAt.After(capAt) {
			l.expiresAt = capAt
			err = &MaxHoldError{ExpiresAt: capAt}
		}
	}
	sh.expiries.fix(l)
	sh.armLocked(l.expiresAt, now)
	e.obs.OnEvent(Event{Type: EventRenewed, Key: key, Owner: l.owner, Fence: l.fence, Time: now, ExpiresAt: l.expiresAt, OnError: l.onError})
	return Renewal{Fence: l.fence, TTL: ttl, ExpiresAt: l.expiresAt}, err
}

// ForceRelease ends the key's leases, whoever holds them (every holder of
// a semaphore, oldest first), and hands the key on. Ended describes the
// oldest. It returns ErrNotHeld when nobody holds the key.
func (e *Engine) ForceRelease(key string) (Ended, error) {
	sh := e.shardFor(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	now := e.clock.Now()
	ks := sh.keys[key]
	if ks == nil {
		return Ended{}, ErrNotHeld
	}
	if ks = sh.settleLocked(ks, now); ks == nil || ks.nheld() == 0 {
		return Ended{}, ErrNotHeld
	}
	var fences []uint64
	ks.eachLease(func(l *lease) { fences = append(fences, l.fence) })
	slices.Sort(fences)
	var first Ended
	for i, f := range fences {
		ks := sh.keys[key]
		if ks == nil {
			break
		}
		l := ks.leaseByFence(f)
		if l == nil {
			continue
		}
		ended := sh.endLocked(l, OutcomeForced, now)
		if i == 0 {
			first = ended
		}
	}
	return first, nil
}

// leaseByFence returns ks's lease with fence f, or nil.
func (ks *keyState) leaseByFence(f uint64) *lease {
	var found *lease
	ks.eachLease(func(l *lease) {
		if l.fence == f {
			found = l
		}
	})
	return found
}

// holdersLocked returns ks's leases live at now, oldest first.
func (ks *keyState) holdersLocked(now time.Time) []*lease {
	var ls []*lease
	ks.eachLease(func(l *lease) {
		if l.live(now) {
			ls = append(ls, l)
		}
	})
	slices.SortFunc(ls, func(a, b *lease) int { return cmp.Compare(a.fence, b.fence) })
	return ls
}

// Inspect returns a snapshot of key listing at most maxQueue waiters.
func (e *Engine) Inspect(key string, maxQueue int) KeyInfo {
	sh := e.shardFor(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	now := e.clock.Now()
	info := KeyInfo{Key: key}
	ks := sh.keys[key]
	if ks == nil {
		if m := sh.recallLocked(memoKey{key: key}, now); m != nil {
			info.Last = m.prev
		}
		return info
	}
	for _, l := range ks.holdersLocked(now) {
		h := Holder{Owner: l.owner, Fence: l.fence, AcquiredAt: l.acquiredAt, ExpiresAt: l.expiresAt, OnError: l.onError}
		if l.ext != nil {
			h.MaxHold, h.LockDelay = l.ext.maxHold, l.ext.lockDelay
		}
		info.Holders = append(info.Holders, h)
	}
	if len(info.Holders) > 0 {
		info.Held, info.Holder = true, info.Holders[0]
	}
	if ks.held || ks.n > 0 || (ks.x != nil && len(ks.x.more) > 0) {
		info.Limit = int(ks.limit)
	}
	info.Paused = ks.paused
	if ks.x != nil {
		info.Last = ks.x.last
		if d := ks.x.delayUntil; now.Before(d) {
			info.DelayUntil = d
		}
	}
	info.Waiters = int(ks.n)
	info.Queue = make([]WaiterInfo, 0, min(int(ks.n), maxQueue))
	for w := ks.head; w != nil && len(info.Queue) < maxQueue; w = w.next {
		info.Queue = append(info.Queue, WaiterInfo{Owner: w.opts.Owner, WaitingSince: w.since})
	}
	return info
}

// List returns up to limit active keys (with a live lease, waiters, a
// pause or a lock-delay in force) that start with prefix and sort after
// the cursor after, in key order, and the cursor of the next page (""
// when this page is the last). A lease past its deadline is over, as in
// Inspect, even if its timer has not run yet.
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
			row := KeySummary{Key: k, Waiters: int(ks.n), Paused: ks.paused}
			if ks.x == nil || len(ks.x.more) == 0 {
				if ks.held && ks.lease.live(now) {
					row.Held, row.Owner, row.Holders = true, ks.lease.owner, 1
				}
			} else if hs := ks.holdersLocked(now); len(hs) > 0 {
				row.Held, row.Owner, row.Holders = true, hs[0].owner, len(hs)
			}
			if row.Held || row.Waiters > 0 {
				row.Limit = int(ks.limit)
			} else if !ks.paused && (ks.x == nil || !now.Before(ks.x.delayUntil)) {
				continue // its leases are over and nothing else keeps it: idle
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
	return Stats{Keys: int(e.keys.Load()), Held: int(e.held.Load()), Waiters: int(e.waiters.Load()),
		Paused: int(e.paused.Load()), Remembered: int(e.remembered.Load())}
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

// EachCount calls fn with every key that has leases or waiters, and how
// many of each: every lease (one past its deadline whose end has not run
// yet included) and every waiter that a later event will report ending.
// An observer that counts from events takes its counts again from it
// after a Restore, which reports no events. fn runs with a shard locked:
// it must be fast and must not call the engine.
func (e *Engine) EachCount(fn func(key string, leases, waiters int)) {
	for i := range e.shards {
		sh := &e.shards[i]
		sh.mu.Lock()
		for k, ks := range sh.keys {
			leases := 0
			ks.eachLease(func(*lease) { leases++ })
			if leases > 0 || ks.n > 0 {
				fn(k, leases, int(ks.n))
			}
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
		for _, ks := range sortedKeys(sh.waiting) {
			sh.emptyQueueLocked(ks, exitClosed, now, "")
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

// sortedKeys returns the keys of set in key order, so that a walk over
// several keys acts in an order that does not depend on map iteration.
func sortedKeys(set map[*keyState]struct{}) []*keyState {
	out := make([]*keyState, 0, len(set))
	for ks := range set {
		out = append(out, ks)
	}
	slices.SortFunc(out, func(a, b *keyState) int { return strings.Compare(a.key, b.key) })
	return out
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

// expireDue ends every lease and lock-delay of the shard whose deadline
// has passed, earliest first, then re-arms the timer for the next.
func (sh *shard) expireDue() {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	sh.expireDueLocked(sh.e.clock.Now())
}

func (sh *shard) expireDueLocked(now time.Time) {
	sh.timerAt = time.Time{}
	for {
		var next time.Time
		var l *lease
		if len(sh.expiries) > 0 {
			l = sh.expiries[0]
			next = l.expiresAt
		}
		if len(sh.delays) > 0 {
			if d := sh.delays[0].x.delayUntil; l == nil || d.Before(next) {
				l, next = nil, d
			}
		}
		if next.IsZero() {
			return
		}
		if now.Before(next) {
			sh.armLocked(next, now)
			return
		}
		if l != nil {
			sh.endLocked(l, OutcomeExpired, now)
		} else {
			sh.endDelayLocked(sh.delays[0], now)
		}
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
		ks.reportPositions(int(ks.n))
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
