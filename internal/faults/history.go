package faults

import (
	"fmt"
	"slices"
	"sync"
	"time"
)

// OpKind is what a client asked the server to do.
type OpKind uint8

// The operations of the workload.
const (
	OpAcquire OpKind = iota + 1
	OpRelease
	OpRenew
	OpForce // DELETE /v1/locks/{key}: an operator's force-release
)

func (k OpKind) String() string {
	switch k {
	case OpAcquire:
		return "acquire"
	case OpRelease:
		return "release"
	case OpRenew:
		return "renew"
	case OpForce:
		return "force"
	}
	return fmt.Sprintf("op(%d)", uint8(k))
}

// Result is how an operation ended, as far as the client can tell.
type Result uint8

// The results. Unknown means the client cannot tell whether the operation
// took effect (its connection was cut, the node died or answered 503, or
// the client gave up): checkers must allow both.
const (
	ResOK         Result = iota + 1 // granted, released, renewed or forced
	ResTimeout                      // acquire: 423 timeout
	ResNotHolder                    // release, renew: 409 not_holder
	ResNotHeld                      // force: 404 not_held
	ResLeaseEnded                   // acquire re-sent by request_id: 409 lease_ended (Fence says which lease)
	ResUnknown
)

func (r Result) String() string {
	switch r {
	case ResOK:
		return "ok"
	case ResTimeout:
		return "timeout"
	case ResNotHolder:
		return "not_holder"
	case ResNotHeld:
		return "not_held"
	case ResLeaseEnded:
		return "lease_ended"
	case ResUnknown:
		return "unknown"
	}
	return fmt.Sprintf("result(%d)", uint8(r))
}

// Op is one operation of the history. Times are nanoseconds on the
// history's monotonic clock: Call is taken before the first byte is sent,
// Return after the answer was read. An acquire re-sent by its request_id
// (after a disconnect or a dead node) is one Op from the first send to the
// last answer: that is the idempotency the server promises.
type Op struct {
	Client int
	Key    string
	Kind   OpKind
	Call   int64
	Return int64
	Result Result

	// Token is the lease's token: the one granted (acquire) or used
	// (release, renew).
	Token string
	// Fence is the granted fence (acquire, lease_ended) or the
	// force-released one (force).
	Fence uint64
	// TTL is the lease time asked for (acquire, renew).
	TTL time.Duration
	// Wait is the acquire's wait (0: try once).
	Wait time.Duration
	// Enqueued is when the first `queued` event of a streaming acquire
	// arrived (0 if none): the acknowledgement that the waiter is in line.
	Enqueued int64
	// Resent says the acquire was sent more than once under its
	// request_id (a disconnect or a failed node): its place in line is
	// the server's promise, not something the history shows, so FIFO
	// does not judge it.
	Resent bool
	// Outcome is the release's outcome (ok or failed).
	Outcome string
	// Node is the node that gave the last answer.
	Node int
}

func (o Op) String() string {
	s := fmt.Sprintf("c%d %s %s [%s..%s] %s", o.Client, o.Kind, o.Key, ms(o.Call), ms(o.Return), o.Result)
	if o.Fence != 0 {
		s += fmt.Sprintf(" fence=%d", o.Fence)
	}
	if o.Token != "" {
		s += " token=" + short(o.Token)
	}
	if o.Kind == OpAcquire {
		s += fmt.Sprintf(" wait=%s ttl=%s", o.Wait, o.TTL)
		if o.Enqueued != 0 {
			s += " enqueued=" + ms(o.Enqueued)
		}
		if o.Resent {
			s += " resent"
		}
	}
	return s
}

func ms(ns int64) string { return fmt.Sprintf("%.3fs", float64(ns)/1e9) }

func short(token string) string {
	if len(token) > 8 {
		return token[:8]
	}
	return token
}

// History records operations from many goroutines.
type History struct {
	start time.Time

	mu  sync.Mutex // guards ops
	ops []Op
}

// NewHistory starts a history's clock now.
func NewHistory() *History { return &History{start: time.Now()} }

// Now is the history's monotonic time in nanoseconds.
func (h *History) Now() int64 { return int64(time.Since(h.start)) }

// Add records a finished operation.
func (h *History) Add(op Op) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.ops = append(h.ops, op)
}

// Ops returns the operations recorded so far, sorted by Call.
func (h *History) Ops() []Op {
	h.mu.Lock()
	ops := slices.Clone(h.ops)
	h.mu.Unlock()
	slices.SortStableFunc(ops, func(a, b Op) int { return cmpInt(a.Call, b.Call) })
	return ops
}

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// byKey groups ops by key, keeping their order.
func byKey(ops []Op) map[string][]Op {
	m := map[string][]Op{}
	for _, o := range ops {
		m[o.Key] = append(m[o.Key], o)
	}
	return m
}

// sortedKeys returns m's keys in order, so reports are stable.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
