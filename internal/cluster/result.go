package cluster

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/mutexd/mutexd/internal/engine"
)

// wireResult is a result as a leader answers a forwarded entry, so that
// the follower that forwarded it can answer its caller without waiting
// for its own replica to apply the entry. A queued acquire is the
// exception: its Waiting lives in each replica, so the follower waits for
// its own.
type wireResult struct {
	Queued  bool           `json:"queued,omitempty"`
	Grant   *engine.Grant  `json:"grant,omitempty"`
	Ended   engine.Ended   `json:"ended"`
	Renewal engine.Renewal `json:"renewal"`
	N       int            `json:"n,omitempty"`
	OK      bool           `json:"ok,omitempty"`
	Err     *wireError     `json:"err,omitempty"`
}

// wireError is an engine error with the fields its type carries.
type wireError struct {
	Code    string         `json:"code"`
	Message string         `json:"message,omitempty"`
	Waiters int            `json:"waiters,omitempty"`
	Limit   int            `json:"limit,omitempty"`
	Fence   uint64         `json:"fence,omitempty"`
	Outcome engine.Outcome `json:"outcome,omitempty"`
	At      time.Time      `json:"at"`
	Reason  string         `json:"reason,omitempty"`
}

// sentinels are the engine's errors that carry no fields, by wire code.
var sentinels = map[string]error{
	"aborted": engine.ErrAborted, "cancelled": engine.ErrCancelled, "not_holder": engine.ErrNotHolder,
	"not_held": engine.ErrNotHeld, "too_many_waiters": engine.ErrTooManyWaiters, "too_many_keys": engine.ErrTooManyKeys,
	"fences_exhausted": engine.ErrFencesExhausted, "unavailable": engine.ErrUnavailable, "superseded": engine.ErrSuperseded,
	"unpromoted": errUnpromoted,
}

func encodeResult(r *result) ([]byte, error) {
	w := wireResult{Queued: r.waiting != nil, Ended: r.ended, Renewal: r.renewal, N: r.n, OK: r.ok}
	if r.grant.Fence != 0 {
		g := r.grant
		w.Grant = &g
	}
	if r.err != nil {
		w.Err = encodeError(r.err)
	}
	return json.Marshal(w)
}

func encodeError(err error) *wireError {
	var te *engine.TimeoutError
	var le *engine.LeaseEndedError
	var lm *engine.LimitMismatchError
	var mh *engine.MaxHoldError
	var de *engine.DrainedError
	switch {
	case errors.As(err, &te):
		return &wireError{Code: "timeout", Waiters: te.Waiters}
	case errors.As(err, &le):
		return &wireError{Code: "lease_ended", Fence: le.Fence, Outcome: le.Outcome, At: le.EndedAt}
	case errors.As(err, &lm):
		return &wireError{Code: "limit_mismatch", Limit: lm.Limit}
	case errors.As(err, &mh):
		return &wireError{Code: "max_hold", At: mh.ExpiresAt}
	case errors.As(err, &de):
		return &wireError{Code: "drained", Reason: de.Reason}
	}
	for code, s := range sentinels {
		if errors.Is(err, s) {
			return &wireError{Code: code}
		}
	}
	return &wireError{Code: "other", Message: err.Error()}
}

// decodeResult is encodeResult's inverse; queued says the follower must
// wait for its own replica's result.
func decodeResult(b []byte) (r *result, queued bool, err error) {
	var w wireResult
	if err := json.Unmarshal(b, &w); err != nil {
		return nil, false, fmt.Errorf("cluster: the leader's result: %w", err)
	}
	r = &result{ended: w.Ended, renewal: w.Renewal, n: w.N, ok: w.OK}
	if w.Grant != nil {
		r.grant = *w.Grant
	}
	if e := w.Err; e != nil {
		switch e.Code {
		case "timeout":
			r.err = &engine.TimeoutError{Waiters: e.Waiters}
		case "lease_ended":
			r.err = &engine.LeaseEndedError{Fence: e.Fence, Outcome: e.Outcome, EndedAt: e.At}
		case "limit_mismatch":
			r.err = &engine.LimitMismatchError{Limit: e.Limit}
		case "max_hold":
			r.err = &engine.MaxHoldError{ExpiresAt: e.At}
		case "drained":
			r.err = &engine.DrainedError{Reason: e.Reason}
		default:
			if s, ok := sentinels[e.Code]; ok {
				r.err = s
			} else {
				r.err = errors.New(e.Message)
			}
		}
	}
	return r, w.Queued, nil
}
