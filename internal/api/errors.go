package api

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"

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

// statusClientClosed is recorded (never seen by anyone) when the client
// went away before its answer; nginx uses the same number.
const statusClientClosed = 499

// toError maps any error to its API error. It is the one place where
// engine errors meet HTTP status codes.
func toError(err error) *Error {
	var ae *Error
	var te *engine.TimeoutError
	var he *echo.HTTPError
	switch {
	case errors.As(err, &ae):
		return ae
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
	return append(b, "}\n"...)
}
