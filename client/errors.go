package client

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// The errors a call can return. Each one matches, with errors.Is, the
// *APIError the server answered with (or, for ErrUnavailable, a server that
// could not be reached), so callers never compare codes or statuses.
var (
	// ErrTimeout: the lock was not granted within the acquire's wait
	// (423 timeout). A try-lock (Wait(0)) on a held key returns it at once.
	ErrTimeout = errors.New("lock not granted within the wait")
	// ErrAborted: the wait was aborted because the holder of an
	// on_error=stop key failed (409 aborted).
	ErrAborted = errors.New("wait aborted: the holder of an on_error=stop key failed")
	// ErrNotHolder: the token is not the live lease of the key any more: it
	// expired, was released or force-released, or is wrong (409 not_holder).
	ErrNotHolder = errors.New("not the holder: the lease expired, was released, or the token is wrong")
	// ErrTooManyWaiters: the server's waiter limit is reached (429
	// too_many_waiters).
	ErrTooManyWaiters = errors.New("too many waiters")
	// ErrTooManyKeys: the server's active-key limit is reached (429
	// too_many_keys).
	ErrTooManyKeys = errors.New("too many active keys")
	// ErrUnavailable: the server is shutting down or starting (503
	// unavailable), or could not be reached at all; retries (see RetryPolicy)
	// were exhausted or the context ended.
	ErrUnavailable = errors.New("mutexd unavailable")
	// ErrInvalid: the server rejected a parameter (any 400: invalid_key,
	// invalid_ttl, ...), or the client refused to send it.
	ErrInvalid = errors.New("invalid request")
	// ErrUnauthorized: the server requires a bearer token and got none or a
	// wrong one (401).
	ErrUnauthorized = errors.New("unauthorized: missing or wrong token")
	// ErrForbidden: the token may not make this call (403).
	ErrForbidden = errors.New("forbidden for this token")
	// ErrLeaseLost: the lease can no longer be proven live: a renew was
	// refused, or no renew succeeded before its deadline. Lease.Err and Do
	// return errors that wrap it.
	ErrLeaseLost = errors.New("lease lost")
	// ErrSuperseded: a later acquire with the same request id took this
	// one's place in the queue (409 superseded). Only a caller that sends
	// one RequestID from two places sees it.
	ErrSuperseded = errors.New("superseded by a later acquire with the same request id")
	// ErrLeaseEnded: the acquire was sent again with its request id (a
	// retry after a lost answer) and the lease it had been granted has
	// already ended (409 lease_ended). APIError.Fence, Outcome and EndedAt
	// say which lease and how it ended.
	ErrLeaseEnded = errors.New("the lease granted to this request id has ended")
	// ErrLimitMismatch: the acquire's Limit differs from the one the key's
	// holders and waiters use (409 limit_mismatch); APIError.Limit is the
	// key's.
	ErrLimitMismatch = errors.New("limit differs from the key's")
	// ErrMaxHoldReached: a renewal would push the lease past its MaxHold
	// (409 max_hold_reached). The lease stays live until APIError.ExpiresAt
	// and is not renewed any more.
	ErrMaxHoldReached = errors.New("the lease reached its max hold")
	// ErrDrained: an operator emptied the key's queue (409 drained);
	// APIError.Reason is theirs.
	ErrDrained = errors.New("queue drained by an operator")
	// ErrStaleFence: the fence is not a live lease of the key (409
	// stale_fence); APIError.CurrentFences lists the live ones.
	ErrStaleFence = errors.New("stale fence: not a live lease of the key")
	// ErrMemberExists: a join named an id, Raft address or API URL that a
	// member of the cluster already has (409 member_exists).
	ErrMemberExists = errors.New("a cluster member already has this id or address")
	// ErrUnknownMember: no member of the cluster has this id (404
	// unknown_member).
	ErrUnknownMember = errors.New("no such cluster member")
	// ErrLastVoter: the call would leave the cluster without a voter to
	// lead it (409 last_voter).
	ErrLastVoter = errors.New("the cluster's only voter")
	// ErrNotVoter: leadership cannot go to a non-voter (409 not_voter).
	ErrNotVoter = errors.New("the member is not a voter")
	// ErrClusterRunning: a restore was refused because the cluster holds
	// lock state, which it would replace; RestoreSnapshot with force
	// replaces it (409 cluster_running).
	ErrClusterRunning = errors.New("the cluster holds lock state")
)

// APIError is an error answer from the server: the HTTP status and the
// {"error","message"} body. errors.Is matches it against the sentinel of
// its code (ErrTimeout for 423 timeout, and so on).
type APIError struct {
	// Status is the HTTP status code.
	Status int
	// Code is the body's "error" field ("timeout", "not_holder", ...), or
	// "http_<status>" when the body was not a mutexd error (a proxy's page).
	Code string
	// Message is the body's human-readable sentence.
	Message string
	// Waiters is the queue length a 423 timeout reports; 0 otherwise.
	Waiters int
	// RetryAfter is the Retry-After header as a duration; 0 when absent.
	RetryAfter time.Duration
	// RequestID is the X-Request-Id the server answered with, for its logs.
	RequestID string

	// Fence, Outcome and EndedAt describe the ended lease of a 409
	// lease_ended.
	Fence   uint64
	Outcome string
	EndedAt time.Time
	// Limit is the key's limit in a 409 limit_mismatch.
	Limit int
	// ExpiresAt is a lease's final expiry in a 409 max_hold_reached (the
	// server's clock).
	ExpiresAt time.Time
	// Reason is the operator's reason in a 409 drained.
	Reason string
	// CurrentFences are the key's live fences in a 409 stale_fence, oldest
	// first (empty when nobody holds the key).
	CurrentFences []uint64
}

// Error returns the server's message with status and code.
func (e *APIError) Error() string {
	return fmt.Sprintf("%s (%d %s)", strings.TrimSuffix(e.Message, "."), e.Status, e.Code)
}

// Is reports whether target is the sentinel for e's code or status.
func (e *APIError) Is(target error) bool {
	s := e.sentinel()
	return s != nil && s == target
}

// sentinel maps the API's codes to the package's errors: the one place
// where they meet.
func (e *APIError) sentinel() error {
	switch e.Code {
	case "timeout":
		return ErrTimeout
	case "aborted":
		return ErrAborted
	case "not_holder":
		return ErrNotHolder
	case "too_many_waiters":
		return ErrTooManyWaiters
	case "too_many_keys":
		return ErrTooManyKeys
	case "superseded":
		return ErrSuperseded
	case "lease_ended":
		return ErrLeaseEnded
	case "limit_mismatch":
		return ErrLimitMismatch
	case "max_hold_reached":
		return ErrMaxHoldReached
	case "drained":
		return ErrDrained
	case "stale_fence":
		return ErrStaleFence
	case "member_exists":
		return ErrMemberExists
	case "unknown_member":
		return ErrUnknownMember
	case "last_voter":
		return ErrLastVoter
	case "not_voter":
		return ErrNotVoter
	case "cluster_running":
		return ErrClusterRunning
	}
	switch e.Status {
	case http.StatusServiceUnavailable:
		return ErrUnavailable
	case http.StatusBadRequest:
		return ErrInvalid
	case http.StatusUnauthorized:
		return ErrUnauthorized
	case http.StatusForbidden:
		return ErrForbidden
	}
	return nil
}

// maxErrorBody bounds how much of an error body is read.
const maxErrorBody = 16 << 10

// decodeAPIError builds the APIError for a non-2xx response from its
// status, headers and (at most maxErrorBody bytes of) body.
func decodeAPIError(status int, h http.Header, body []byte) *APIError {
	e := &APIError{Status: status, RetryAfter: parseRetryAfter(h.Get("Retry-After"), time.Now()), RequestID: h.Get("X-Request-Id")}
	var b struct {
		Error   string `json:"error"`
		Message string `json:"message"`
		Waiters int    `json:"waiters"`
	}
	if json.Unmarshal(body, &b) == nil && b.Error != "" {
		e.Code, e.Message, e.Waiters = b.Error, b.Message, b.Waiters
		// The details of the codes that carry some, decoded apart so that
		// a malformed one spoils neither the code nor the message.
		var d struct {
			Fence         uint64    `json:"fence"`
			Outcome       string    `json:"outcome"`
			EndedAt       time.Time `json:"ended_at"`
			Limit         int       `json:"limit"`
			ExpiresAt     time.Time `json:"expires_at"`
			Reason        string    `json:"reason"`
			CurrentFences []uint64  `json:"current_fences"`
		}
		_ = json.Unmarshal(body, &d)
		e.Fence, e.Outcome, e.EndedAt, e.Limit = d.Fence, d.Outcome, d.EndedAt, d.Limit
		e.ExpiresAt, e.Reason, e.CurrentFences = d.ExpiresAt, d.Reason, d.CurrentFences
	} else {
		e.Code = "http_" + strconv.Itoa(status)
	}
	if e.Message == "" {
		e.Message = http.StatusText(status)
		if e.Message == "" {
			e.Message = "unexpected status"
		}
	}
	return e
}

// parseRetryAfter reads a Retry-After header: delay seconds or an HTTP
// date. Anything else, or a time in the past, is 0.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if n, err := strconv.ParseUint(v, 10, 32); err == nil {
		return time.Duration(n) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}
