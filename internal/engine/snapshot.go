package engine

import (
	"bytes"
	"cmp"
	"container/heap"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
)

// Snapshots: the engine's whole state as bytes, so that a replica of a
// replicated log can be rebuilt from another's state (internal/cluster
// hands them to Raft) and replicas can be compared by hashing them. The
// bytes are canonical: the same state always gives the same bytes.

// ErrBadSnapshot wraps every reason Restore refuses its input.
var ErrBadSnapshot = errors.New("engine: bad snapshot")

// snapshotVersion is the format Snapshot writes; Restore reads only it.
const snapshotVersion = 1

// The format: encoding/json of the structs below, whose field order and
// slices (never maps) make the output canonical. Times are Unix
// nanoseconds (an absent field is the zero time), durations nanoseconds,
// tokens hex.

type snapState struct {
	V        int        `json:"v"`
	Fence    uint64     `json:"fence,omitempty"`
	Keys     []snapKey  `json:"keys,omitempty"`  // in key order
	Memos    []snapMemo `json:"memos,omitempty"` // oldest first
	Prefixes []string   `json:"paused_prefixes,omitempty"`
}

type snapKey struct {
	Key        string       `json:"key"`
	Limit      int          `json:"limit"`
	Paused     bool         `json:"paused,omitempty"`
	Last       *snapPrev    `json:"last,omitempty"`
	DelayUntil *int64       `json:"delay_until,omitempty"`
	Leases     []snapLease  `json:"leases,omitempty"` // by fence
	Queue      []snapWaiter `json:"queue,omitempty"`  // in queue order
}

type snapPrev struct {
	Fence   uint64  `json:"fence,omitempty"`
	Outcome Outcome `json:"outcome,omitempty"`
	EndedAt *int64  `json:"ended_at,omitempty"`
}

type snapLease struct {
	Token      string        `json:"token"`
	Fence      uint64        `json:"fence"`
	Owner      string        `json:"owner,omitempty"`
	TTL        time.Duration `json:"ttl"`
	AcquiredAt int64         `json:"acquired_at"`
	ExpiresAt  int64         `json:"expires_at"`
	OnError    OnError       `json:"on_error,omitempty"`
	Ext        *snapLeaseExt `json:"ext,omitempty"`
}

// Claim states of a lease (leaseExt.claim).
const (
	claimNone     = 0 // nobody is waiting for a claim
	claimAwaiting = 1 // released at ClaimUntil unless a re-sent acquire claims it
	claimTaken    = 2 // a re-sent acquire returned it
)

type snapLeaseExt struct {
	ID         string        `json:"id,omitempty"`
	Attempt    uint64        `json:"attempt,omitempty"`
	MaxHold    time.Duration `json:"max_hold,omitempty"`
	LockDelay  time.Duration `json:"lock_delay,omitempty"`
	Waited     time.Duration `json:"waited,omitempty"`
	Prev       *snapPrev     `json:"prev,omitempty"`
	Claim      int           `json:"claim,omitempty"`
	ClaimUntil *int64        `json:"claim_until,omitempty"`
	// Order is the claim timer's place among the snapshot's timers.
	Order uint64 `json:"order,omitempty"`
}

// The timers of waiters and of leases awaiting a claim carry their Order:
// 1 for the first to fire, 2 for the next, and so on, by deadline and,
// between equal deadlines, by the clock's Seq when its timers have one
// (then by key and place). Restore arms them in that order, so that a
// clock that fires equal deadlines in arming order fires them as the
// snapshot's engine would have. Ranks, not the clock's own numbers, keep
// the bytes free of the clock's history.

// snapWaiter is a waiter's AcquireOptions (without OnPosition: it belongs
// to a caller, not to the state), its arrival and whether its caller has
// gone. Its stay ends at Since + Wait.
type snapWaiter struct {
	Owner     string        `json:"owner,omitempty"`
	TTL       time.Duration `json:"ttl"`
	Wait      time.Duration `json:"wait"`
	OnError   OnError       `json:"on_error,omitempty"`
	Reserve   bool          `json:"reserve,omitempty"`
	RequestID string        `json:"request_id,omitempty"`
	Attempt   uint64        `json:"attempt,omitempty"`
	Limit     int           `json:"limit,omitempty"`
	MaxHold   time.Duration `json:"max_hold,omitempty"`
	LockDelay time.Duration `json:"lock_delay,omitempty"`
	Since     int64         `json:"since"`
	Detached  bool          `json:"detached,omitempty"`
	// Order is the waiter timer's place among the snapshot's timers.
	Order uint64 `json:"order,omitempty"`
}

type snapMemo struct {
	Key  string   `json:"key"`
	ID   string   `json:"id,omitempty"`
	Prev snapPrev `json:"prev"`
}

// sequenced is what a Timer may implement to say in which order timers
// with the same deadline fire (fakeclock's and internal/cluster's do).
type sequenced interface{ Seq() uint64 }

func timerSeq(t Timer) uint64 {
	if s, ok := t.(sequenced); ok {
		return s.Seq()
	}
	return 0
}

func unixNano(t time.Time) *int64 {
	if t.IsZero() {
		return nil
	}
	n := t.UnixNano()
	return &n
}

func fromUnixNano(n *int64) time.Time {
	if n == nil {
		return time.Time{}
	}
	return time.Unix(0, *n).UTC()
}

func snapPrevOf(p Previous) *snapPrev {
	if p == (Previous{}) {
		return nil
	}
	return &snapPrev{Fence: p.Fence, Outcome: p.Outcome, EndedAt: unixNano(p.EndedAt)}
}

func (p *snapPrev) previous() Previous {
	if p == nil {
		return Previous{}
	}
	return Previous{Fence: p.Fence, Outcome: p.Outcome, EndedAt: fromUnixNano(p.EndedAt)}
}

// Snapshot writes the engine's whole state to w: the fence clock, every
// key with its leases (tokens included: the bytes are secret), queue,
// pause, lock-delay and last outcome, the remembered outcomes and the
// paused prefixes; everything that decides how the engine answers from
// now on, given the same operations at the same times. Position callbacks
// and the counters are not state (Restore recounts). The same state gives
// the same bytes. The engine is locked while the state is copied, not
// while w is written. A Deterministic engine's remembered records are
// written in their one eviction order; a sharded engine's by end time.
func (e *Engine) Snapshot(w io.Writer) error {
	st := e.snapshotState()
	b, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("engine: snapshot: %w", err)
	}
	_, err = w.Write(b)
	return err
}

func (e *Engine) snapshotState() *snapState {
	for i := range e.mask + 1 {
		e.shards[i].mu.Lock()
	}
	defer func() {
		for i := range e.mask + 1 {
			e.shards[i].mu.Unlock()
		}
	}()
	st := &snapState{V: snapshotVersion, Fence: e.fence.Load()}
	e.prefixMu.Lock()
	st.Prefixes = slices.Sorted(slices.Values(e.pausedPrefixes))
	e.prefixMu.Unlock()
	for i := range e.mask + 1 {
		sh := &e.shards[i]
		for _, ks := range sh.keys {
			st.Keys = append(st.Keys, snapKeyOf(ks))
		}
		for m := sh.memoOld; m != nil; m = m.newer {
			st.Memos = append(st.Memos, snapMemo{Key: m.k.key, ID: m.k.id, Prev: *snapPrevOrZero(m.prev)})
		}
	}
	slices.SortFunc(st.Keys, func(a, b snapKey) int { return strings.Compare(a.Key, b.Key) })
	st.rankTimers()
	if e.mask != 0 {
		// Shards keep their own eviction orders; merge them by end time.
		slices.SortStableFunc(st.Memos, func(a, b snapMemo) int {
			return cmp.Or(cmp.Compare(derefOr(a.Prev.EndedAt), derefOr(b.Prev.EndedAt)),
				strings.Compare(a.Key, b.Key), strings.Compare(a.ID, b.ID))
		})
	}
	return st
}

// rankTimers replaces the clock's Seq that snapKeyOf put in each Order by
// the timer's rank in firing order.
func (st *snapState) rankTimers() {
	type ref struct {
		at          int64
		seq         uint64
		key         string
		kind, place int
		order       *uint64
	}
	var refs []ref
	for i := range st.Keys {
		k := &st.Keys[i]
		for j := range k.Leases {
			if x := k.Leases[j].Ext; x != nil && x.Claim == claimAwaiting {
				refs = append(refs, ref{*x.ClaimUntil, x.Order, k.Key, 0, j, &x.Order})
			}
		}
		for j := range k.Queue {
			q := &k.Queue[j]
			refs = append(refs, ref{q.Since + int64(q.Wait), q.Order, k.Key, 1, j, &q.Order})
		}
	}
	slices.SortFunc(refs, func(a, b ref) int {
		return cmp.Or(cmp.Compare(a.at, b.at), cmp.Compare(a.seq, b.seq), strings.Compare(a.key, b.key),
			cmp.Compare(a.kind, b.kind), cmp.Compare(a.place, b.place))
	})
	for i, r := range refs {
		*r.order = uint64(i + 1)
	}
}

func snapPrevOrZero(p Previous) *snapPrev {
	if sp := snapPrevOf(p); sp != nil {
		return sp
	}
	return &snapPrev{}
}

func derefOr(n *int64) int64 {
	if n == nil {
		return 0
	}
	return *n
}

func snapKeyOf(ks *keyState) snapKey {
	k := snapKey{Key: ks.key, Limit: int(ks.limit), Paused: ks.paused}
	if x := ks.x; x != nil {
		k.Last = snapPrevOf(x.last)
		k.DelayUntil = unixNano(x.delayUntil)
	}
	var ls []*lease
	ks.eachLease(func(l *lease) { ls = append(ls, l) })
	slices.SortFunc(ls, func(a, b *lease) int { return cmp.Compare(a.fence, b.fence) })
	for _, l := range ls {
		sl := snapLease{Token: l.token.String(), Fence: l.fence, Owner: l.owner, TTL: l.ttl,
			AcquiredAt: l.acquiredAt.UnixNano(), ExpiresAt: l.expiresAt.UnixNano(), OnError: l.onError}
		if x := l.ext; x != nil {
			se := &snapLeaseExt{ID: x.id, Attempt: x.attempt, MaxHold: x.maxHold, LockDelay: x.lockDelay, Waited: x.waited, Prev: snapPrevOf(x.prev)}
			switch c := x.claim.(type) {
			case nil:
			case *claimWait:
				se.Claim, se.ClaimUntil, se.Order = claimAwaiting, unixNano(c.until), timerSeq(c.Timer)
			default:
				se.Claim = claimTaken
			}
			sl.Ext = se
		}
		k.Leases = append(k.Leases, sl)
	}
	for w := ks.head; w != nil; w = w.next {
		o := &w.opts
		k.Queue = append(k.Queue, snapWaiter{Owner: o.Owner, TTL: o.TTL, Wait: o.Wait, OnError: o.OnError, Reserve: o.Reserve,
			RequestID: o.RequestID, Attempt: o.Attempt, Limit: o.Limit, MaxHold: o.MaxHold, LockDelay: o.LockDelay,
			Since: w.since.UnixNano(), Detached: w.detached, Order: timerSeq(w.timer)})
	}
	return k
}

// Restore loads a state that Snapshot wrote into e, which must be new: no
// key, no remembered record, no paused prefix, no fence issued (made by
// New with the same Limits as the engine that wrote it). It emits no
// events. The timers of waiters and of leases awaiting their claim are
// armed again in the order in which they would have fired (by deadline,
// then by the Seq they had when the clock's timers have one, else by key
// and place), so that timers due at the same instant fire in the same
// order as on the engine that wrote the snapshot. Leases and lock-delays need
// no order of their own: the expiry heaps break ties by fence and key.
// Input that is not such a state is refused with an error wrapping
// ErrBadSnapshot, and e is left empty.
func (e *Engine) Restore(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return fmt.Errorf("engine: restore: %w", err)
	}
	var head struct {
		V int `json:"v"`
	}
	if err := json.Unmarshal(b, &head); err != nil {
		return fmt.Errorf("%w: %w", ErrBadSnapshot, err)
	}
	if head.V != snapshotVersion {
		return fmt.Errorf("%w: version %d, this build reads %d", ErrBadSnapshot, head.V, snapshotVersion)
	}
	var st snapState
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&st); err != nil {
		return fmt.Errorf("%w: %w", ErrBadSnapshot, err)
	}
	if dec.More() {
		return fmt.Errorf("%w: data after the state", ErrBadSnapshot)
	}
	if err := st.validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrBadSnapshot, err)
	}
	return e.install(&st)
}

// validate refuses a state that no engine could have been in, so that
// install can trust it.
func (st *snapState) validate() error {
	if st.Fence > MaxFence {
		return fmt.Errorf("fence %d past the largest", st.Fence)
	}
	if !slices.IsSorted(st.Prefixes) || len(slices.Compact(slices.Clone(st.Prefixes))) != len(st.Prefixes) {
		return errors.New("paused prefixes are not sorted and distinct")
	}
	for i := range st.Keys {
		k := &st.Keys[i]
		if i > 0 && st.Keys[i-1].Key >= k.Key {
			return fmt.Errorf("key %q is out of order or repeated", k.Key)
		}
		if err := k.validate(st.Fence); err != nil {
			return fmt.Errorf("key %q: %w", k.Key, err)
		}
	}
	seen := make(map[memoKey]bool, len(st.Memos))
	for _, m := range st.Memos {
		mk := memoKey{key: m.Key, id: m.ID}
		if seen[mk] {
			return fmt.Errorf("key %q: request id %q remembered twice", m.Key, m.ID)
		}
		seen[mk] = true
		if err := m.Prev.validate(); err != nil {
			return fmt.Errorf("remembered record of key %q: %w", m.Key, err)
		}
	}
	return nil
}

func (p *snapPrev) validate() error {
	if p != nil && p.Outcome > OutcomeForced {
		return fmt.Errorf("outcome %d", p.Outcome)
	}
	return nil
}

func (k *snapKey) validate(fence uint64) error {
	if k.Limit < 1 || k.Limit > MaxLimit {
		return fmt.Errorf("limit %d", k.Limit)
	}
	if len(k.Leases) > k.Limit {
		return fmt.Errorf("%d leases over its limit %d", len(k.Leases), k.Limit)
	}
	if err := k.Last.validate(); err != nil {
		return err
	}
	if k.DelayUntil != nil && *k.DelayUntil == 0 {
		return errors.New("lock-delay at the zero instant")
	}
	if len(k.Leases) == 0 && len(k.Queue) == 0 && !k.Paused && k.DelayUntil == nil {
		return errors.New("idle key")
	}
	if len(k.Queue) > 0 && len(k.Leases) < k.Limit && !k.Paused && k.DelayUntil == nil {
		return errors.New("waiters while a slot is free and nothing stops grants")
	}
	ids := map[string]bool{}
	tokens := map[string]bool{}
	for i, l := range k.Leases {
		if l.Fence == 0 || l.Fence > fence || (i > 0 && k.Leases[i-1].Fence >= l.Fence) {
			return fmt.Errorf("lease fence %d is out of order or was never issued", l.Fence)
		}
		if _, ok := ParseToken(l.Token); !ok || tokens[l.Token] {
			return fmt.Errorf("lease %d: bad or repeated token", l.Fence)
		}
		tokens[l.Token] = true
		if l.TTL <= 0 || l.OnError > OnErrorStop || l.AcquiredAt == 0 || l.ExpiresAt == 0 {
			return fmt.Errorf("lease %d: bad ttl, times or on_error", l.Fence)
		}
		x := l.Ext
		if x == nil {
			continue
		}
		if x.MaxHold < 0 || x.LockDelay < 0 || x.Claim < claimNone || x.Claim > claimTaken || (x.Claim == claimAwaiting) != (x.ClaimUntil != nil) {
			return fmt.Errorf("lease %d: bad options or claim", l.Fence)
		}
		if x.Claim != claimNone && x.ID == "" {
			return fmt.Errorf("lease %d: a claim without a request id", l.Fence)
		}
		if err := x.Prev.validate(); err != nil {
			return fmt.Errorf("lease %d: %w", l.Fence, err)
		}
		if x.ID != "" {
			if ids[x.ID] {
				return fmt.Errorf("request id %q used twice", x.ID)
			}
			ids[x.ID] = true
		}
	}
	for i, w := range k.Queue {
		o := AcquireOptions{TTL: w.TTL, Limit: w.Limit, MaxHold: w.MaxHold, LockDelay: w.LockDelay}
		if w.TTL <= 0 || w.Limit < 0 || w.Limit > MaxLimit || w.MaxHold < 0 || w.LockDelay < 0 || w.OnError > OnErrorStop || w.Since == 0 {
			return fmt.Errorf("waiter %d: bad options", i)
		}
		if int(limitOf(&o)) != k.Limit {
			return fmt.Errorf("waiter %d: limit %d, the key's %d", i, w.Limit, k.Limit)
		}
		if w.Detached && w.RequestID == "" {
			return fmt.Errorf("waiter %d: detached without a request id", i)
		}
		if w.RequestID != "" {
			if ids[w.RequestID] {
				return fmt.Errorf("request id %q used twice", w.RequestID)
			}
			ids[w.RequestID] = true
		}
	}
	return nil
}

// install builds the validated state st in e.
func (e *Engine) install(st *snapState) error {
	for i := range e.mask + 1 {
		e.shards[i].mu.Lock()
	}
	defer func() {
		for i := range e.mask + 1 {
			e.shards[i].mu.Unlock()
		}
	}()
	e.prefixMu.Lock()
	defer e.prefixMu.Unlock()
	if e.closed.Load() {
		return ErrUnavailable
	}
	if e.fence.Load() != 0 || len(e.pausedPrefixes) > 0 {
		return errors.New("engine: restore: the engine is not new")
	}
	for i := range e.mask + 1 {
		if sh := &e.shards[i]; len(sh.keys) > 0 || len(sh.memos) > 0 {
			return errors.New("engine: restore: the engine is not new")
		}
	}
	now := e.clock.Now()
	e.fence.Store(st.Fence)
	e.pausedPrefixes = slices.Clone(st.Prefixes)
	e.nPrefixes.Store(int32(len(st.Prefixes)))
	type armed struct {
		seq   uint64
		at    time.Time
		key   string
		kind  int    // 0 for a lease's claim, 1 for a waiter
		place uint64 // the lease's fence or the waiter's place
		arm   func()
	}
	var timers []armed
	for i := range st.Keys {
		sk := &st.Keys[i]
		sh := e.shardFor(sk.Key)
		ks := &keyState{key: sk.Key, lease: lease{heapIdx: -1}, limit: uint16(sk.Limit), paused: sk.Paused}
		sh.keys[sk.Key] = ks
		e.keys.Add(1)
		if ks.paused {
			e.paused.Add(1)
		}
		if sk.Last != nil || sk.DelayUntil != nil {
			x := ks.ext()
			x.last = sk.Last.previous()
			if sk.DelayUntil != nil {
				x.delayUntil = fromUnixNano(sk.DelayUntil)
				heap.Push(&sh.delays, ks)
			}
		}
		for _, sl := range sk.Leases {
			var l *lease
			if !ks.held {
				ks.held = true
				l = &ks.lease
			} else {
				l = new(lease)
				ks.ext().more = append(ks.ext().more, l)
			}
			tok, _ := ParseToken(sl.Token)
			*l = lease{token: tok, fence: sl.Fence, owner: sl.Owner, ttl: sl.TTL,
				acquiredAt: time.Unix(0, sl.AcquiredAt).UTC(), expiresAt: time.Unix(0, sl.ExpiresAt).UTC(),
				onError: sl.OnError, heapIdx: -1, ks: ks}
			if x := sl.Ext; x != nil {
				l.ext = &leaseExt{id: x.ID, attempt: x.Attempt, maxHold: x.MaxHold, lockDelay: x.LockDelay, waited: x.Waited, prev: x.Prev.previous()}
				switch x.Claim {
				case claimTaken:
					l.ext.claim = claimedTimer
				case claimAwaiting:
					until := fromUnixNano(x.ClaimUntil)
					timers = append(timers, armed{seq: x.Order, at: until, key: ks.key, kind: 0, place: l.fence, arm: func() {
						sh.awaitClaimLocked(l, until, now)
					}})
				}
			}
			e.held.Add(1)
			sh.expiries.push(l)
		}
		for j, sw := range sk.Queue {
			w := &waiter{ks: ks, since: time.Unix(0, sw.Since).UTC(), detached: sw.Detached, done: make(chan struct{}),
				opts: AcquireOptions{Owner: sw.Owner, TTL: sw.TTL, Wait: sw.Wait, OnError: sw.OnError, Reserve: sw.Reserve,
					RequestID: sw.RequestID, Attempt: sw.Attempt, Limit: sw.Limit, MaxHold: sw.MaxHold, LockDelay: sw.LockDelay}}
			ks.push(w)
			if id := sw.RequestID; id != "" {
				x := ks.ext()
				if x.ids == nil {
					x.ids = make(map[string]*waiter)
				}
				x.ids[id] = w
			}
			e.waiters.Add(1)
			timers = append(timers, armed{seq: sw.Order, at: w.until(), key: ks.key, kind: 1, place: uint64(j), arm: func() {
				d := max(w.until().Sub(now), 0)
				if w.detached {
					w.timer = e.clock.AfterFunc(d, func() { sh.detachOver(w) })
				} else {
					w.timer = e.clock.AfterFunc(d, func() { sh.timeout(w) })
				}
			}})
		}
		if ks.n > 0 {
			sh.waiting[ks] = struct{}{}
		}
	}
	for _, sm := range st.Memos {
		sh := e.shardFor(sm.Key)
		if sh.memos == nil {
			sh.memos = make(map[memoKey]*memo)
		}
		m := &memo{k: memoKey{key: sm.Key, id: sm.ID}, prev: sm.Prev.previous(), older: sh.memoNew}
		sh.memos[m.k] = m
		if sh.memoNew != nil {
			sh.memoNew.newer = m
		} else {
			sh.memoOld = m
		}
		sh.memoNew = m
		e.remembered.Add(1)
		for len(sh.memos) > e.memoCap {
			sh.forgetLocked(sh.memoOld)
		}
	}
	slices.SortFunc(timers, func(a, b armed) int {
		return cmp.Or(cmp.Compare(a.seq, b.seq), a.at.Compare(b.at), strings.Compare(a.key, b.key),
			cmp.Compare(a.kind, b.kind), cmp.Compare(a.place, b.place))
	})
	for _, t := range timers {
		t.arm()
	}
	for i := range e.mask + 1 {
		sh := &e.shards[i]
		if len(sh.expiries) > 0 {
			sh.armLocked(sh.expiries[0].expiresAt, now)
		}
		if len(sh.delays) > 0 {
			sh.armLocked(sh.delays[0].x.delayUntil, now)
		}
	}
	return nil
}
