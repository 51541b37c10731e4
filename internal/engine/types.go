package engine

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"time"
)

// Clock is the engine's only source of time. Implementations must be safe
// for concurrent use. AfterFunc calls f once, in its own goroutine or in the
// goroutine that advances a fake clock, never while holding engine locks.
type Clock interface {
	Now() time.Time
	AfterFunc(d time.Duration, f func()) Timer
}

// Timer is a stoppable, resettable one-shot timer created by a Clock.
type Timer interface {
	Stop() bool
	Reset(d time.Duration) bool
}

// SystemClock is the wall clock.
type SystemClock struct{}

// Now returns time.Now().
func (SystemClock) Now() time.Time { return time.Now() }

// AfterFunc wraps time.AfterFunc.
func (SystemClock) AfterFunc(d time.Duration, f func()) Timer { return time.AfterFunc(d, f) }

// OnError is a holder's error strategy, chosen at acquire.
type OnError uint8

const (
	// OnErrorContinue hands the lock to the next waiter whatever the outcome.
	OnErrorContinue OnError = iota
	// OnErrorStop aborts every waiter queued at that moment when the lease
	// ends in failure (released as failed, or expired).
	OnErrorStop
)

// String returns "continue" or "stop".
func (o OnError) String() string {
	if o == OnErrorStop {
		return "stop"
	}
	return "continue"
}

// Outcome says how a lease ended.
type Outcome uint8

const (
	// OutcomeNone is the zero value: no lease (a key that was free).
	OutcomeNone Outcome = iota
	// OutcomeReleased is a release by the holder with outcome ok.
	OutcomeReleased
	// OutcomeFailed is a release by the holder with outcome failed.
	OutcomeFailed
	// OutcomeExpired is a lease whose TTL passed without renewal.
	OutcomeExpired
	// OutcomeForced is a force-release by an operator.
	OutcomeForced
)

var outcomeNames = [...]string{"", "released", "failed", "expired", "forced"}

// String returns the outcome's API name ("released", "failed", ...).
func (o Outcome) String() string { return outcomeNames[o] }

// Failure reports whether the outcome counts as a failure for OnErrorStop.
func (o Outcome) Failure() bool { return o == OutcomeFailed || o == OutcomeExpired }

// Token is a lease's secret: 128 random bits. Only the holder knows it.
type Token [16]byte

func newToken() Token {
	var t Token
	rand.Read(t[:]) // never returns an error (crypto/rand, Go 1.24+)
	return t
}

// String returns the token as 32 lower-case hex digits.
func (t Token) String() string { return hex.EncodeToString(t[:]) }

// AppendHex appends the token's 32 hex digits to b.
func (t Token) AppendHex(b []byte) []byte { return hex.AppendEncode(b, t[:]) }

// ParseToken parses 32 hex digits. ok is false for anything else.
func ParseToken(s string) (t Token, ok bool) {
	if len(s) != 2*len(t) {
		return t, false
	}
	if _, err := hex.Decode(t[:], []byte(s)); err != nil {
		return Token{}, false
	}
	return t, true
}

func (t Token) equal(u Token) bool { return subtle.ConstantTimeCompare(t[:], u[:]) == 1 }

// AcquireOptions are the parameters of one acquire. The API validates them
// against its configured bounds; the engine needs TTL > 0.
type AcquireOptions struct {
	// Owner is free text shown in inspection and events.
	Owner string
	// TTL is the lease's lifetime without renewal.
	TTL time.Duration
	// Wait is how long to queue; 0 tries once and never queues.
	Wait time.Duration
	// OnError is the holder's error strategy.
	OnError OnError
	// OnPosition, when set, is told the caller's place in the queue (1 =
	// next) when it queues and whenever that place changes because a waiter
	// ahead of it left; never after it leaves the queue itself. It is called
	// with the key's shard locked, in the order of the queue's transitions,
	// so it must be fast, must not block and must not call the engine.
	// A waiter without it costs the queue nothing extra.
	OnPosition func(position int)
	// Reserve lets this acquire use the share of MaxKeys and MaxWaiters
	// that Limits keeps back (ReservedKeys, ReservedWaiters). The caller
	// decides who may: the API lets admin tokens, so that clients that
	// take every key they can still leave operators room.
	Reserve bool
	// RequestID, when set, makes the acquire idempotent per key: an
	// acquire of the same key with the same RequestID takes over the first
	// one's place in the queue (the first call gets ErrSuperseded), returns
	// the same Grant while that lease lives, and a *LeaseEndedError after
	// it ended (for as long as Limits.RememberOutcome keeps the record). A
	// waiter with a RequestID whose context ends keeps its place for
	// Limits.DetachGrace, so that a caller whose reply was lost can send
	// again. The API validates it (1-64 printable ASCII bytes); the engine
	// compares bytes.
	RequestID string
	// Attempt, when set, names this call among the calls that carry its
	// RequestID (a replicated log's entry): Detach with it concerns only
	// this call's place or grant, not one a later re-send took over.
	Attempt uint64
	// Limit is how many holders the key admits at once: 0 or 1 make it a
	// mutex, up to MaxLimit a counting semaphore. Every live holder and
	// waiter of a key must ask for the same limit (*LimitMismatchError).
	Limit int
	// MaxHold, when positive, caps the lease's life: no renewal takes it
	// past acquisition + MaxHold (*MaxHoldError), so a holder that renews
	// forever cannot keep the key forever.
	MaxHold time.Duration
	// LockDelay, when positive, keeps the key from being granted to anyone
	// for that long after this lease ends by expiry or force-release (not
	// by a release): its holder may still be acting without knowing it
	// lost the lease. Waiters keep their places meanwhile.
	LockDelay time.Duration
}

// MaxLimit is the largest AcquireOptions.Limit: a semaphore's holders are
// scanned when a token is looked up, so the bound keeps that cheap.
const MaxLimit = 10_000

// Previous describes how the key's last lease ended, as the engine
// remembers it: the lease that ended just before a grant from the queue,
// or, with Limits.RememberOutcome, the last lease of a key that had gone
// idle. Outcome is OutcomeNone when the engine knows of none.
type Previous struct {
	Fence   uint64
	Outcome Outcome
	// EndedAt is when that lease ended (zero with OutcomeNone).
	EndedAt time.Time
}

// Grant is a granted lease as the acquirer sees it.
type Grant struct {
	Key       string
	Token     Token
	Fence     uint64
	Owner     string
	TTL       time.Duration
	ExpiresAt time.Time
	// Waited is the time from arrival to grant (0 for an immediate grant).
	Waited   time.Duration
	Previous Previous
}

// Renewal is the result of a renew.
type Renewal struct {
	Fence     uint64
	TTL       time.Duration
	ExpiresAt time.Time
}

// Ended is the result of a release or force-release.
type Ended struct {
	Fence uint64
	Held  time.Duration
}

// Holder describes a live lease without its token.
type Holder struct {
	Owner      string
	Fence      uint64
	AcquiredAt time.Time
	ExpiresAt  time.Time
	OnError    OnError
	// MaxHold and LockDelay are the lease's options (0 when unset).
	MaxHold   time.Duration
	LockDelay time.Duration
}

// WaiterInfo describes one queued waiter.
type WaiterInfo struct {
	Owner        string
	WaitingSince time.Time
}

// KeyInfo is a snapshot of one key. An idle key has Held false, no waiters.
type KeyInfo struct {
	Key string
	// Held and Holder describe the oldest live lease (lowest fence); Holders
	// lists every live lease, oldest first.
	Held    bool
	Holder  Holder
	Holders []Holder
	// Limit is the number of holders the key admits (1 for a mutex; 0 for
	// a key with neither holders nor waiters, whose limit is not fixed).
	Limit   int
	Waiters int
	// Queue lists the first waiters in arrival order, at most the limit
	// passed to Inspect.
	Queue []WaiterInfo
	// Paused is true while Pause or PausePrefix keeps the key from
	// granting.
	Paused bool
	// DelayUntil is the end of a lock-delay in force (zero when none).
	DelayUntil time.Time
	// Last is how the key's last lease ended, when the engine remembers.
	Last Previous
}

// KeySummary is one row of List.
type KeySummary struct {
	Key string
	// Held and Owner describe the oldest live lease; Holders counts them all.
	Held    bool
	Owner   string
	Holders int
	Limit   int
	Waiters int
	Paused  bool
}

// Stats are engine-wide counts.
type Stats struct {
	Keys    int
	Held    int
	Waiters int
	// Paused counts keys that are paused.
	Paused int
	// Remembered counts records kept after their lease ended (a key's last
	// outcome or a request id's lease), bounded by Limits.MaxRemembered.
	Remembered int
}

// FenceStatus is the answer of CheckFence.
type FenceStatus struct {
	// Live is true when the fence is a live lease of the key.
	Live bool
	// ExpiresAt is that lease's deadline (zero when not live).
	ExpiresAt time.Time
	// Current lists the fences of the key's live leases, ascending.
	Current []uint64
}

// Limits bound the engine's memory and say how long it remembers. Zero
// means unlimited, except where a field says otherwise.
type Limits struct {
	MaxKeys          int
	MaxWaitersPerKey int
	MaxWaiters       int
	// ReservedKeys and ReservedWaiters are the last of MaxKeys and
	// MaxWaiters, which only an acquire with AcquireOptions.Reserve may
	// take. Zero reserves nothing.
	ReservedKeys    int
	ReservedWaiters int
	// DetachGrace is how long a waiter with a RequestID keeps its place
	// after its caller's context ended (capped by what is left of its
	// wait), and how long a lease granted to such a waiter is kept for a
	// re-sent acquire to claim before it is released. Zero means
	// DefaultDetachGrace; negative turns detaching off.
	DetachGrace time.Duration
	// RememberOutcome is how long the engine remembers, after a lease
	// ended, its key's last outcome (returned as Grant.Previous and in
	// KeyInfo.Last when the key had gone idle) and its RequestID (so that
	// a re-sent acquire learns the lease ended). Zero remembers nothing.
	RememberOutcome time.Duration
	// MaxRemembered caps those records, oldest evicted first. Zero means
	// DefaultMaxRemembered.
	MaxRemembered int
	// Deterministic makes the engine a state machine that a replicated
	// log can drive: every key shares one shard, so that walks over keys
	// go in key order and MaxRemembered evicts in one global order, not
	// in an order that depends on a per-process hash seed. Its Clock must
	// then be driven by the log too (internal/cluster).
	Deterministic bool
	// Tokens, when set, makes lease tokens: a replicated engine needs the
	// same token on every replica. nil draws them from crypto/rand.
	Tokens func() Token
}

// Defaults for the Limits fields whose zero value is not "none".
const (
	DefaultDetachGrace   = 10 * time.Second
	DefaultMaxRemembered = 100_000
)
