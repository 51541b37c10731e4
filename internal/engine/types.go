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
}

// Previous describes the lease that ended just before a grant on the same
// key. Outcome is OutcomeNone when the key was free.
type Previous struct {
	Fence   uint64
	Outcome Outcome
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
}

// WaiterInfo describes one queued waiter.
type WaiterInfo struct {
	Owner        string
	WaitingSince time.Time
}

// KeyInfo is a snapshot of one key. An idle key has Held false, no waiters.
type KeyInfo struct {
	Key     string
	Held    bool
	Holder  Holder
	Waiters int
	// Queue lists the first waiters in arrival order, at most the limit
	// passed to Inspect.
	Queue []WaiterInfo
}

// KeySummary is one row of List.
type KeySummary struct {
	Key     string
	Held    bool
	Owner   string
	Waiters int
}

// Stats are engine-wide counts.
type Stats struct {
	Keys    int
	Held    int
	Waiters int
}

// Limits bound the engine's memory. Zero means unlimited.
type Limits struct {
	MaxKeys          int
	MaxWaitersPerKey int
	MaxWaiters       int
	// ReservedKeys and ReservedWaiters are the last of MaxKeys and
	// MaxWaiters, which only an acquire with AcquireOptions.Reserve may
	// take. Zero reserves nothing.
	ReservedKeys    int
	ReservedWaiters int
}
