package api

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/mutexd/mutexd/internal/auth"
	"github.com/mutexd/mutexd/internal/engine"
	"github.com/mutexd/mutexd/internal/events"
)

// Error is an API error: an HTTP status and the JSON body
// {"error": Code, "message": Message}.
type Error struct {
	Status  int
	Code    string
	Message string
	// Waiters, when set, is added to the body (423 timeout).
	Waiters *int
	// Limit, when set, is the key's limit (409 limit_mismatch).
	Limit *int
	// Fence, Outcome and EndedAt say how a request_id's lease ended (409
	// lease_ended).
	Fence   *uint64
	Outcome string
	EndedAt time.Time
	// ExpiresAt, when set, is when a lease capped by its max_hold ends
	// (409 max_hold_reached).
	ExpiresAt time.Time
	// Reason, when set, is an operator's reason (409 drained).
	Reason string
	// CurrentFences, when set, are the key's live fences (409 stale_fence).
	CurrentFences *[]uint64
	// RetryAfter, when positive, is sent as a Retry-After header in seconds.
	RetryAfter int
	// Challenge, when set, is sent as the WWW-Authenticate header (401).
	Challenge string
}

// Error returns "code: message".
func (e *Error) Error() string { return e.Code + ": " + e.Message }

func badRequest(code, format string, args ...any) *Error {
	return &Error{Status: http.StatusBadRequest, Code: code, Message: fmt.Sprintf(format, args...)}
}

// staleFenceError answers a fence check whose fence is not a live lease of
// the key; current are the key's live fences.
type staleFenceError struct{ current []uint64 }

func (e staleFenceError) Error() string { return "fence is not a live lease of this key" }

// statusClientClosed is recorded (never seen by anyone) when the client
// went away before its answer; nginx uses the same number.
const statusClientClosed = 499

// toError maps any error to its API error. It is the one place where
// engine errors meet HTTP status codes.
func toError(err error) *Error {
	var ae *Error
	var te *engine.TimeoutError
	var he *echo.HTTPError
	var le *engine.LeaseEndedError
	var lm *engine.LimitMismatchError
	var mh *engine.MaxHoldError
	var de *engine.DrainedError
	var sf staleFenceError
	switch {
	case errors.As(err, &ae):
		return ae
	case errors.As(err, &le):
		f := le.Fence
		return &Error{Status: http.StatusConflict, Code: "lease_ended", Fence: &f, Outcome: le.Outcome.String(), EndedAt: le.EndedAt,
			Message: "The lease granted to this request_id has ended (" + le.Outcome.String() + "); acquire again with a new request_id."}
	case errors.As(err, &lm):
		n := lm.Limit
		return &Error{Status: http.StatusConflict, Code: "limit_mismatch", Limit: &n,
			Message: "limit must match the one the key's holders and waiters use: " + strconv.Itoa(n) + "."}
	case errors.As(err, &mh):
		return &Error{Status: http.StatusConflict, Code: "max_hold_reached", ExpiresAt: mh.ExpiresAt,
			Message: "The lease reached its max_hold: it was renewed only up to expires_at, when it ends."}
	case errors.As(err, &de):
		return &Error{Status: http.StatusConflict, Code: "drained", Reason: de.Reason,
			Message: "An operator drained the key's queue: " + de.Reason}
	case errors.Is(err, engine.ErrSuperseded):
		return &Error{Status: http.StatusConflict, Code: "superseded", Message: "A later acquire with the same request_id took this one's place in the queue."}
	case errors.As(err, &sf):
		cur := sf.current
		if cur == nil {
			cur = []uint64{}
		}
		return &Error{Status: http.StatusConflict, Code: "stale_fence", CurrentFences: &cur,
			Message: "The fence is not a live lease of this key; current_fences lists those that are."}
	case errors.As(err, &te):
		n := te.Waiters
		return &Error{Status: http.StatusLocked, Code: "timeout", Message: "The lock was not granted within the wait.", Waiters: &n}
	case errors.Is(err, engine.ErrAborted):
		return &Error{Status: http.StatusConflict, Code: "aborted", Message: "The queue was aborted because a holder with on_error=stop failed."}
	case errors.Is(err, engine.ErrNotHolder):
		return &Error{Status: http.StatusConflict, Code: "not_holder", Message: "The token is not the live lease of this key: it expired, was released, or is wrong."}
	case errors.Is(err, engine.ErrNotHeld):
		return &Error{Status: http.StatusNotFound, Code: "not_held", Message: "Nobody holds this key."}
	case errors.Is(err, engine.ErrTooManyWaiters):
		return &Error{Status: http.StatusTooManyRequests, Code: "too_many_waiters", Message: "Too many waiters are queued; retry later.", RetryAfter: 1}
	case errors.Is(err, engine.ErrTooManyKeys):
		return &Error{Status: http.StatusTooManyRequests, Code: "too_many_keys", Message: "Too many keys are active; retry later.", RetryAfter: 1}
	case errors.Is(err, engine.ErrFencesExhausted):
		return &Error{Status: http.StatusServiceUnavailable, Code: "fences_exhausted", Message: "Every fence up to 2^53-1 has been issued; no lease can be granted."}
	case errors.Is(err, ErrMemberExists):
		return &Error{Status: http.StatusConflict, Code: "member_exists", Message: "Nothing was changed: " + err.Error() + "."}
	case errors.Is(err, ErrUnknownMember):
		return &Error{Status: http.StatusNotFound, Code: "unknown_member", Message: "No member of the cluster has this id; nothing was changed."}
	case errors.Is(err, ErrLastVoter):
		return &Error{Status: http.StatusConflict, Code: "last_voter", Message: "It is the cluster's only voter: the cluster would have nobody to lead; nothing was changed."}
	case errors.Is(err, ErrNotVoter):
		return &Error{Status: http.StatusConflict, Code: "not_voter", Message: "The member is a non-voter, which cannot lead; nothing was changed."}
	case errors.Is(err, ErrClusterRunning):
		return &Error{Status: http.StatusConflict, Code: "cluster_running",
			Message: "The cluster holds lock state, which a restore would replace (a disaster-recovery step); nothing was changed. Send force=true to replace it."}
	case errors.Is(err, ErrBadSnapshot):
		return &Error{Status: http.StatusBadRequest, Code: "invalid_snapshot", Message: "The body is not a snapshot file of GET /v1/cluster/snapshot (" + err.Error() + "); nothing was changed."}
	case errors.Is(err, ErrNotLeader):
		return &Error{Status: http.StatusMisdirectedRequest, Code: "not_leader", Message: "This node is not the cluster leader."}
	case errors.Is(err, ErrBadEntry):
		return &Error{Status: http.StatusBadRequest, Code: "bad_entry", Message: err.Error()}
	case errors.Is(err, engine.ErrUnavailable), errors.Is(err, errNotReady):
		retry := 1
		if nr := (notReadyError{}); errors.As(err, &nr) {
			retry = nr.retryAfter
		}
		return &Error{Status: http.StatusServiceUnavailable, Code: "unavailable", Message: "The server is not accepting acquires right now; retry shortly.", RetryAfter: retry}
	case errors.Is(err, auth.ErrUnauthorized):
		return &Error{Status: http.StatusUnauthorized, Code: "unauthorized", Message: "A valid bearer token is required: send Authorization: Bearer <token>.", Challenge: "Bearer"}
	case errors.Is(err, auth.ErrForbidden):
		return &Error{Status: http.StatusForbidden, Code: "forbidden", Message: "This call needs an admin token (auth.admin_tokens)."}
	case errors.Is(err, errForeignOrigin):
		return &Error{Status: http.StatusForbidden, Code: "forbidden_origin", Message: "This server has no auth tokens, so it refuses requests that a web page of another site made a browser send (a foreign Origin or Sec-Fetch-Site)."}
	case errors.Is(err, errForeignHost):
		return &Error{Status: http.StatusForbidden, Code: "forbidden_host", Message: "This server has no auth tokens, so it answers only requests addressed to an IP address, localhost, its listen address or a name in http.allowed_hosts (a guard against DNS rebinding)."}
	case errors.Is(err, events.ErrTooManySubscribers):
		return &Error{Status: http.StatusTooManyRequests, Code: "too_many_subscribers", Message: "Too many event streams are open; retry later.", RetryAfter: 5}
	case errors.Is(err, errTooManyRequests):
		return &Error{Status: http.StatusServiceUnavailable, Code: "too_many_requests", Message: "The server is serving too many requests at once; retry shortly.", RetryAfter: 1}
	case errors.Is(err, events.ErrClosed):
		return &Error{Status: http.StatusServiceUnavailable, Code: "unavailable", Message: "The server is shutting down; retry shortly.", RetryAfter: 1}
	case errors.Is(err, engine.ErrCancelled):
		return &Error{Status: statusClientClosed, Code: "cancelled", Message: "The client went away while waiting."}
	case errors.As(err, &he):
		return httpError(he)
	}
	return &Error{Status: http.StatusInternalServerError, Code: "internal", Message: "An internal error occurred; it has been logged."}
}

func httpError(he *echo.HTTPError) *Error {
	switch he.Code {
	case http.StatusNotFound:
		return &Error{Status: he.Code, Code: "not_found", Message: "No such route; see the API table in the README."}
	case http.StatusMethodNotAllowed:
		return &Error{Status: he.Code, Code: "method_not_allowed", Message: "This route does not accept that method."}
	case http.StatusRequestEntityTooLarge:
		return &Error{Status: he.Code, Code: "body_too_large", Message: "The request body is over 64 KiB."}
	}
	if he.Code >= 400 && he.Code < 500 {
		return &Error{Status: he.Code, Code: "bad_request", Message: http.StatusText(he.Code) + "."}
	}
	return &Error{Status: http.StatusInternalServerError, Code: "internal", Message: "An internal error occurred; it has been logged."}
}

// handleError is the echo HTTPErrorHandler: every error response goes
// through here.
func (s *Server) handleError(err error, c echo.Context) {
	ae := s.logged(c, err) // logged even when too late to answer
	if c.Response().Committed {
		return
	}
	if ae.Status == statusClientClosed {
		c.Response().Status = ae.Status // recorded in metrics; nothing is written
		return
	}
	if ae.Challenge != "" {
		c.Response().Header().Set("WWW-Authenticate", ae.Challenge)
	}
	if ae.RetryAfter > 0 {
		c.Response().Header().Set("Retry-After", strconv.Itoa(ae.RetryAfter))
	}
	buf := getBuf()
	defer putBuf(buf)
	*buf = appendErrorBody(*buf, ae)
	_ = writeJSON(c, ae.Status, *buf)
}

// logged maps err to its API error, logging it with the request id when it
// is an internal one: a bug, which only the log explains.
func (s *Server) logged(c echo.Context, err error) *Error {
	ae := toError(err)
	if ae.Status == http.StatusInternalServerError {
		s.log.Error("internal error", "request_id", c.Response().Header().Get(echo.HeaderXRequestID),
			"method", c.Request().Method, "route", c.Path(), "err", err)
	}
	return ae
}

// appendErrorBody encodes ae's JSON body.
func appendErrorBody(b []byte, ae *Error) []byte {
	b = append(b, `{"error":`...)
	b = appendString(b, ae.Code)
	b = append(b, `,"message":`...)
	b = appendString(b, ae.Message)
	if ae.Waiters != nil {
		b = append(b, `,"waiters":`...)
		b = strconv.AppendInt(b, int64(*ae.Waiters), 10)
	}
	if ae.Limit != nil {
		b = append(b, `,"limit":`...)
		b = strconv.AppendInt(b, int64(*ae.Limit), 10)
	}
	if ae.Fence != nil {
		b = append(b, `,"fence":`...)
		b = strconv.AppendUint(b, *ae.Fence, 10)
	}
	if ae.Outcome != "" {
		b = append(b, `,"outcome":`...)
		b = appendString(b, ae.Outcome)
	}
	if !ae.EndedAt.IsZero() {
		b = append(b, `,"ended_at":`...)
		b = appendTime(b, ae.EndedAt)
	}
	if !ae.ExpiresAt.IsZero() {
		b = append(b, `,"expires_at":`...)
		b = appendTime(b, ae.ExpiresAt)
	}
	if ae.Reason != "" {
		b = append(b, `,"reason":`...)
		b = appendString(b, ae.Reason)
	}
	if ae.CurrentFences != nil {
		b = append(b, `,"current_fences":[`...)
		for i, f := range *ae.CurrentFences {
			if i > 0 {
				b = append(b, ',')
			}
			b = strconv.AppendUint(b, f, 10)
		}
		b = append(b, ']')
	}
	return append(b, "}\n"...)
}
