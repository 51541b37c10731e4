package engine

import (
	"errors"
	"fmt"
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
)

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
