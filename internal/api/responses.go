package api

import (
	"strconv"
	"time"

	"github.com/mutexd/mutexd/internal/engine"
)

// The API's response bodies, each declared once as a struct. The hot ones
// (a grant, a release, a renewal, an error) are also encoded by hand
// (append*), as the profile asked; TestHandEncodersMatchEncodingJSON holds
// each to the bytes encoding/json writes for its struct.

// grantJSON is an acquire's 200 body.
type grantJSON struct {
	Key       string        `json:"key"`
	Token     string        `json:"token"`
	Fence     uint64        `json:"fence"`
	Owner     string        `json:"owner"`
	TTLMillis int64         `json:"ttl_ms"`
	ExpiresAt string        `json:"expires_at"`
	WaitedMs  int64         `json:"waited_ms"`
	Previous  *previousJSON `json:"previous"`
	// Limit is the key's number of holders (1 for a mutex).
	Limit int `json:"limit"`
	// RequestID repeats the acquire's request_id, when it sent one.
	RequestID string `json:"request_id,omitempty"`
}

// previousJSON is how the lease before a grant ended; null when the key
// was free and the server remembers no earlier lease.
type previousJSON struct {
	Fence   uint64 `json:"fence"`
	Outcome string `json:"outcome"`
	EndedAt string `json:"ended_at"`
}

func newPreviousJSON(p engine.Previous) *previousJSON {
	if p.Outcome == engine.OutcomeNone {
		return nil
	}
	return &previousJSON{Fence: p.Fence, Outcome: p.Outcome.String(), EndedAt: formatTime(p.EndedAt)}
}

func newGrantJSON(g engine.Grant, limit int, requestID string) grantJSON {
	return grantJSON{Key: g.Key, Token: g.Token.String(), Fence: g.Fence, Owner: g.Owner, TTLMillis: g.TTL.Milliseconds(),
		ExpiresAt: formatTime(g.ExpiresAt), WaitedMs: g.Waited.Milliseconds(), Previous: newPreviousJSON(g.Previous),
		Limit: max(1, limit), RequestID: requestID}
}

// releasedJSON is the 200 body of a release and of a force-release.
type releasedJSON struct {
	Key      string `json:"key"`
	Fence    uint64 `json:"fence"`
	Released bool   `json:"released"`
	HeldMs   int64  `json:"held_ms"`
}

func newReleasedJSON(key string, e engine.Ended) releasedJSON {
	return releasedJSON{Key: key, Fence: e.Fence, Released: true, HeldMs: e.Held.Milliseconds()}
}

// renewalJSON is a renew's 200 body.
type renewalJSON struct {
	Key       string `json:"key"`
	Fence     uint64 `json:"fence"`
	TTLMillis int64  `json:"ttl_ms"`
	ExpiresAt string `json:"expires_at"`
}

func newRenewalJSON(key string, r engine.Renewal) renewalJSON {
	return renewalJSON{Key: key, Fence: r.Fence, TTLMillis: r.TTL.Milliseconds(), ExpiresAt: formatTime(r.ExpiresAt)}
}

// errorJSON is every error's body: error and message, and the fields of
// the errors that carry data (see Error).
type errorJSON struct {
	Error         string    `json:"error"`
	Message       string    `json:"message"`
	Waiters       *int      `json:"waiters,omitempty"`
	Limit         *int      `json:"limit,omitempty"`
	Fence         *uint64   `json:"fence,omitempty"`
	Outcome       string    `json:"outcome,omitempty"`
	EndedAt       string    `json:"ended_at,omitempty"`
	ExpiresAt     string    `json:"expires_at,omitempty"`
	Reason        string    `json:"reason,omitempty"`
	CurrentFences *[]uint64 `json:"current_fences,omitempty"`
}

func newErrorJSON(ae *Error) errorJSON {
	out := errorJSON{Error: ae.Code, Message: ae.Message, Waiters: ae.Waiters, Limit: ae.Limit, Fence: ae.Fence, Outcome: ae.Outcome,
		Reason: ae.Reason, CurrentFences: ae.CurrentFences}
	if !ae.EndedAt.IsZero() {
		out.EndedAt = formatTime(ae.EndedAt)
	}
	if !ae.ExpiresAt.IsZero() {
		out.ExpiresAt = formatTime(ae.ExpiresAt)
	}
	return out
}

// fenceJSON is a fence check's 200 body.
type fenceJSON struct {
	Key       string `json:"key"`
	Fence     uint64 `json:"fence"`
	Live      bool   `json:"live"`
	ExpiresAt string `json:"expires_at"`
}

// pausedJSON is the 200 body of a key's pause or resume: whether it is
// paused now, and whether the call changed that.
type pausedJSON struct {
	Key     string `json:"key"`
	Paused  bool   `json:"paused"`
	Changed bool   `json:"changed"`
}

// drainedJSON is the 200 body of a key's drain.
type drainedJSON struct {
	Key     string `json:"key"`
	Drained int    `json:"drained"`
}

// The 200 bodies of the prefix forms: the prefix and how many keys (or
// waiters, for a drain) the call acted on.
type (
	prefixPausedJSON struct {
		Prefix string `json:"prefix"`
		Paused int    `json:"paused"`
	}
	prefixResumedJSON struct {
		Prefix  string `json:"prefix"`
		Resumed int    `json:"resumed"`
	}
	prefixDrainedJSON struct {
		Prefix  string `json:"prefix"`
		Drained int    `json:"drained"`
	}
)

// statusJSON is the body of /healthz and /readyz.
type statusJSON struct {
	Status string `json:"status"`
}

// holderJSON, waiterJSON and keyJSON make an inspection's body.
type holderJSON struct {
	Owner      string `json:"owner"`
	Fence      uint64 `json:"fence"`
	AcquiredAt string `json:"acquired_at"`
	ExpiresAt  string `json:"expires_at"`
	OnError    string `json:"on_error"`
	// MaxHoldUntil is the latest the lease can be renewed to, when it
	// was acquired with a max_hold.
	MaxHoldUntil string `json:"max_hold_until,omitempty"`
}

func newHolderJSON(h engine.Holder) holderJSON {
	out := holderJSON{Owner: h.Owner, Fence: h.Fence, AcquiredAt: formatTime(h.AcquiredAt), ExpiresAt: formatTime(h.ExpiresAt), OnError: h.OnError.String()}
	if h.MaxHold > 0 {
		out.MaxHoldUntil = formatTime(h.AcquiredAt.Add(h.MaxHold))
	}
	return out
}

type waiterJSON struct {
	Owner        string `json:"owner"`
	WaitingSince string `json:"waiting_since"`
}

type keyJSON struct {
	Key  string `json:"key"`
	Held bool   `json:"held"`
	// Holder is the oldest of Holders (kept from when a key had one).
	Holder  *holderJSON  `json:"holder"`
	Waiters int          `json:"waiters"`
	Queue   []waiterJSON `json:"queue"`
	// Limit is the number of holders the key admits (1 for a mutex and
	// for an idle key, whose limit is not fixed).
	Limit   int          `json:"limit"`
	Holders []holderJSON `json:"holders"`
	Paused  bool         `json:"paused"`
	// DelayUntil is the end of a lock-delay in force; null when none.
	DelayUntil *string `json:"delay_until"`
	// Last is how the key's last lease ended, while remembered.
	Last *previousJSON `json:"last"`
}

func formatTime(t time.Time) string { return t.UTC().Format(TimeFormat) }

type summaryJSON struct {
	Key     string `json:"key"`
	Held    bool   `json:"held"`
	Owner   string `json:"owner"`
	Waiters int    `json:"waiters"`
	Holders int    `json:"holders"`
	Limit   int    `json:"limit"`
	Paused  bool   `json:"paused"`
}

type listJSON struct {
	Locks []summaryJSON `json:"locks"`
	Next  string        `json:"next"`
}

func newKeyJSON(key string, info engine.KeyInfo) keyJSON {
	out := keyJSON{Key: key, Held: info.Held, Waiters: info.Waiters, Queue: make([]waiterJSON, len(info.Queue)),
		Limit: max(1, info.Limit), Holders: make([]holderJSON, len(info.Holders)), Paused: info.Paused, Last: newPreviousJSON(info.Last)}
	if info.Held {
		h := newHolderJSON(info.Holder)
		out.Holder = &h
	}
	for i, h := range info.Holders {
		out.Holders[i] = newHolderJSON(h)
	}
	if !info.DelayUntil.IsZero() {
		d := formatTime(info.DelayUntil)
		out.DelayUntil = &d
	}
	for i, w := range info.Queue {
		out.Queue[i] = waiterJSON{Owner: w.Owner, WaitingSince: formatTime(w.WaitingSince)}
	}
	return out
}

func newListJSON(rows []engine.KeySummary, next string) listJSON {
	out := listJSON{Locks: make([]summaryJSON, len(rows)), Next: next}
	for i, r := range rows {
		out.Locks[i] = summaryJSON{Key: r.Key, Held: r.Held, Owner: r.Owner, Waiters: r.Waiters, Holders: r.Holders, Limit: max(1, r.Limit), Paused: r.Paused}
	}
	return out
}

// appendGrant encodes an acquire's 200 body: the grant, the key's limit
// and the acquire's request_id (left out when empty).
func appendGrant(b []byte, g engine.Grant, limit int, requestID string) []byte {
	b = append(b, `{"key":`...)
	b = appendString(b, g.Key)
	b = append(b, `,"token":"`...)
	b = g.Token.AppendHex(b)
	b = append(b, `","fence":`...)
	b = strconv.AppendUint(b, g.Fence, 10)
	b = append(b, `,"owner":`...)
	b = appendString(b, g.Owner)
	b = append(b, `,"ttl_ms":`...)
	b = appendMillis(b, g.TTL)
	b = append(b, `,"expires_at":`...)
	b = appendTime(b, g.ExpiresAt)
	b = append(b, `,"waited_ms":`...)
	b = appendMillis(b, g.Waited)
	b = append(b, `,"previous":`...)
	b = appendPrevious(b, g.Previous)
	b = append(b, `,"limit":`...)
	b = strconv.AppendInt(b, int64(max(1, limit)), 10)
	if requestID != "" {
		b = append(b, `,"request_id":`...)
		b = appendString(b, requestID)
	}
	return append(b, "}\n"...)
}

// appendPrevious encodes a grant's previous lease: null when the key was
// free and no earlier lease is remembered.
func appendPrevious(b []byte, p engine.Previous) []byte {
	if p.Outcome == engine.OutcomeNone {
		return append(b, "null"...)
	}
	b = append(b, `{"fence":`...)
	b = strconv.AppendUint(b, p.Fence, 10)
	b = append(b, `,"outcome":"`...)
	b = append(b, p.Outcome.String()...)
	b = append(b, `","ended_at":`...)
	b = appendTime(b, p.EndedAt)
	return append(b, '}')
}

// appendReleased encodes a release's 200 body.
func appendReleased(b []byte, key string, e engine.Ended) []byte {
	b = append(b, `{"key":`...)
	b = appendString(b, key)
	b = append(b, `,"fence":`...)
	b = strconv.AppendUint(b, e.Fence, 10)
	b = append(b, `,"released":true,"held_ms":`...)
	b = appendMillis(b, e.Held)
	return append(b, "}\n"...)
}

// appendRenewal encodes a renew's 200 body.
func appendRenewal(b []byte, key string, r engine.Renewal) []byte {
	b = append(b, `{"key":`...)
	b = appendString(b, key)
	b = append(b, `,"fence":`...)
	b = strconv.AppendUint(b, r.Fence, 10)
	b = append(b, `,"ttl_ms":`...)
	b = appendMillis(b, r.TTL)
	b = append(b, `,"expires_at":`...)
	b = appendTime(b, r.ExpiresAt)
	return append(b, "}\n"...)
}
