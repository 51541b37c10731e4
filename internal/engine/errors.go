package engine

import (
	"errors"
	"fmt"
	"time"
)

// Errors returned by the engine. Callers compare them with errors.Is; the API
// maps each to one status code in one place.
var (
	// ErrTimeout means the lock was not granted within the acquire's wait.
	// The returned error is a *TimeoutError carrying the queue length.
	ErrTimeout = errors.New("lock not granted within the wait")
	// ErrAborted means the waiter's queue was cancelled because a holder
	// that acquired with OnErrorStop ended in failure.
	ErrAborted = errors.New("queue aborted by a failed holder with on_error=stop")
	// ErrCancelled means the caller's context ended while it waited.
	ErrCancelled = errors.New("wait cancelled by the caller")
	// ErrNotHolder means the token does not name the key's live lease: it
	// expired, was released, was force-released, or never existed.
	ErrNotHolder = errors.New("token is not the live lease of this key")
	// ErrNotHeld means a force-release found no holder.
	ErrNotHeld = errors.New("key is not held")
	// ErrTooManyWaiters means a waiter limit (per key or in total) is reached.
	ErrTooManyWaiters = errors.New("too many waiters")
	// ErrTooManyKeys means the key limit is reached and the key is new.
	ErrTooManyKeys = errors.New("too many keys")
	// ErrFencesExhausted means MaxFence has been issued, so no lease can be
	// granted with a greater fence.
	ErrFencesExhausted = errors.New("every fence up to 2^53-1 has been issued")
	// ErrUnavailable means the engine is closed (the daemon is shutting
	// down) and grants nothing more.
	ErrUnavailable = errors.New("lock engine is shutting down")
	// ErrWontReturn, as (or wrapped in) the cause of an acquire's context,
	// says its caller will not send the acquire again (its token was
	// revoked, say): a waiter with a RequestID then leaves the queue at
	// once instead of keeping its place for Limits.DetachGrace.
	ErrWontReturn = errors.New("the caller will not send this acquire again")
	// ErrSuperseded means a later acquire with the same RequestID took
	// this waiter's place in the queue.
	ErrSuperseded = errors.New("superseded by a later acquire with the same request id")
	// ErrLeaseEnded means the lease granted to this RequestID has ended.
	// The returned error is a *LeaseEndedError saying how.
	ErrLeaseEnded = errors.New("the lease of this request id has ended")
	// ErrLimitMismatch means the acquire's limit differs from the one the
	// key's holders and waiters agreed on. The error is a *LimitMismatchError.
	ErrLimitMismatch = errors.New("limit differs from the key's")
	// ErrMaxHoldReached means a renewal hit the lease's MaxHold: the lease
	// now ends at the cap. The error is a *MaxHoldError.
	ErrMaxHoldReached = errors.New("the lease reached its max hold")
	// ErrDrained means an operator emptied the key's queue. The error is a
	// *DrainedError carrying the operator's reason.
	ErrDrained = errors.New("queue drained by an operator")
)

// LeaseEndedError is the answer to a re-sent acquire whose lease has
// ended. It unwraps to ErrLeaseEnded.
type LeaseEndedError struct {
	Fence   uint64
	Outcome Outcome
	EndedAt time.Time
}

// Error says which lease ended and how.
func (e *LeaseEndedError) Error() string {
	return fmt.Sprintf("%s (fence %d, %s)", ErrLeaseEnded, e.Fence, e.Outcome)
}

// Unwrap returns ErrLeaseEnded.
func (e *LeaseEndedError) Unwrap() error { return ErrLeaseEnded }

// LimitMismatchError names the key's current limit. It unwraps to
// ErrLimitMismatch.
type LimitMismatchError struct {
	Limit int
}

// Error names the key's limit.
func (e *LimitMismatchError) Error() string {
	return fmt.Sprintf("%s (the key's limit is %d)", ErrLimitMismatch, e.Limit)
}

// Unwrap returns ErrLimitMismatch.
func (e *LimitMismatchError) Unwrap() error { return ErrLimitMismatch }

// MaxHoldError carries the lease's final deadline. It unwraps to
// ErrMaxHoldReached.
type MaxHoldError struct {
	ExpiresAt time.Time
}

// Error says when the lease ends.
func (e *MaxHoldError) Error() string {
	return fmt.Sprintf("%s (it ends at %s)", ErrMaxHoldReached, e.ExpiresAt.UTC().Format(time.RFC3339Nano))
}

// Unwrap returns ErrMaxHoldReached.
func (e *MaxHoldError) Unwrap() error { return ErrMaxHoldReached }

// DrainedError carries the reason an operator gave for draining the
// queue. It unwraps to ErrDrained.
type DrainedError struct {
	Reason string
}

// Error includes the reason.
func (e *DrainedError) Error() string {
	if e.Reason == "" {
		return ErrDrained.Error()
	}
	return fmt.Sprintf("%s: %s", ErrDrained, e.Reason)
}

// Unwrap returns ErrDrained.
func (e *DrainedError) Unwrap() error { return ErrDrained }

// TimeoutError is the error of an acquire that was not granted within its
// wait. It unwraps to ErrTimeout.
type TimeoutError struct {
	// Waiters is the number of waiters queued on the key when the wait ended.
	Waiters int
}

// Error says the wait passed and how many were waiting.
func (e *TimeoutError) Error() string {
	return fmt.Sprintf("%s (%d waiting)", ErrTimeout, e.Waiters)
}

// Unwrap returns ErrTimeout.
func (e *TimeoutError) Unwrap() error { return ErrTimeout }
