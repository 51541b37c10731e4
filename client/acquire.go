package client

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"sync/atomic"
	"time"
)

// ErrorPolicy is what a key's queue does when a holder fails (see OnError).
type ErrorPolicy int

const (
	// Continue hands the lock to the next waiter after a failure (the
	// server's default).
	Continue ErrorPolicy = iota
	// Stop answers every waiter queued at the moment of a failure with
	// ErrAborted.
	Stop
)

// String returns the policy's API name.
func (p ErrorPolicy) String() string {
	if p == Stop {
		return "stop"
	}
	return "continue"
}

// AcquireOption configures one Acquire or Do.
type AcquireOption func(*acquireOptions)

type acquireOptions struct {
	ttl, wait       time.Duration
	hasTTL, hasWait bool
	owner           string
	onError         ErrorPolicy
	hasOnError      bool
	requestID       string
	hasRequestID    bool
	limit           int
	maxHold         time.Duration
	hasMaxHold      bool
	lockDelay       time.Duration
	hasLockDelay    bool
}

// TTL sets the lease's time to live (the server's lock.default_ttl
// otherwise; at least 1 s). Renewals keep the same TTL.
func TTL(d time.Duration) AcquireOption {
	return func(o *acquireOptions) { o.ttl, o.hasTTL = d, true }
}

// Wait sets how long to wait in the queue (the server's lock.default_wait
// otherwise); Wait(0) tries once and returns ErrTimeout if the key is held.
func Wait(d time.Duration) AcquireOption {
	return func(o *acquireOptions) { o.wait, o.hasWait = d, true }
}

// Owner names the holder in the server's inspection and logs (the client's
// WithOwner, else its address, otherwise).
func Owner(name string) AcquireOption {
	return func(o *acquireOptions) { o.owner = name }
}

// OnError sets the key's failure policy for this holder: with Stop, if this
// lease ends in failure (Fail, or expiry), every waiter queued at that
// moment is answered ErrAborted.
func OnError(p ErrorPolicy) AcquireOption {
	return func(o *acquireOptions) { o.onError, o.hasOnError = p, true }
}

// RequestID makes the acquire idempotent under id (1 to 64 printable
// ASCII characters, unique per caller and key): sent again with the same
// id, an acquire gets the lease the first one was granted, or the first
// one's place in the queue, or ErrLeaseEnded when that lease has already
// ended. Acquire picks a fresh random id when none is given (unless the
// client was built WithoutRequestIDs); give one to make an acquire that
// survives the process that sent it, such as a job that restarts.
func RequestID(id string) AcquireOption {
	return func(o *acquireOptions) { o.requestID, o.hasRequestID = id, true }
}

// Limit makes the key a semaphore of n slots (1 to 10,000; 1, a mutex, by
// default): up to n leases hold it at once, each with its own token and
// fence, and waiters are served first come, first served. Every holder
// and waiter of a key must ask for the same limit (ErrLimitMismatch
// otherwise).
func Limit(n int) AcquireOption {
	return func(o *acquireOptions) { o.limit = n }
}

// MaxHold caps the lease's life at d after its grant, whatever its
// renewals (0, the default, is no cap; the server's lock.max_hold bounds
// it): a renewal past the cap fails with ErrMaxHoldReached and the lease
// ends at the cap. It keeps a holder that is stuck, yet alive and
// renewing, from holding the key forever.
func MaxHold(d time.Duration) AcquireOption {
	return func(o *acquireOptions) { o.maxHold, o.hasMaxHold = d, true }
}

// LockDelay keeps the key from being granted to anyone for d (0 to 60 s;
// the server's lock.default_lock_delay otherwise) after this lease ends by
// expiry or force-release, not by a release: time for a holder that lost
// its lease unaware to notice and stop before the next one starts.
func LockDelay(d time.Duration) AcquireOption {
	return func(o *acquireOptions) { o.lockDelay, o.hasLockDelay = d, true }
}

// acquireBody is an acquire's parameters; empty ones are left to the
// server.
type acquireBody struct {
	TTL       string `json:"ttl,omitempty"`
	Wait      string `json:"wait,omitempty"`
	Owner     string `json:"owner,omitempty"`
	OnError   string `json:"on_error,omitempty"`
	RequestID string `json:"request_id,omitempty"`
	Limit     int    `json:"limit,omitempty"`
	MaxHold   string `json:"max_hold,omitempty"`
	LockDelay string `json:"lock_delay,omitempty"`
}

type grantJSON struct {
	Key       string    `json:"key"`
	Token     string    `json:"token"`
	Fence     uint64    `json:"fence"`
	Owner     string    `json:"owner"`
	TTLMS     int64     `json:"ttl_ms"`
	ExpiresAt time.Time `json:"expires_at"`
	WaitedMS  int64     `json:"waited_ms"`
	Previous  *Previous `json:"previous"`
	Limit     int       `json:"limit"`
	RequestID string    `json:"request_id"`
}

// newRequestID returns 16 random bytes in hex: unique without
// coordination.
func newRequestID() string {
	var b [16]byte
	rand.Read(b[:]) // never fails (crypto/rand)
	return hex.EncodeToString(b[:])
}

// validRequestID checks what the server checks: 1 to 64 bytes from '!'
// to '~'.
func validRequestID(id string) bool {
	if len(id) < 1 || len(id) > 64 {
		return false
	}
	for i := 0; i < len(id); i++ {
		if id[i] < 0x21 || id[i] > 0x7e {
			return false
		}
	}
	return true
}

// releaseOrphanTimeout bounds the release of a grant that arrived after
// the caller gave up.
const releaseOrphanTimeout = 5 * time.Second

// Acquire waits in the key's FIFO queue until the lock is granted, the wait
// passes (ErrTimeout), the queue is aborted (ErrAborted) or drained
// (ErrDrained), or ctx ends.
//
// Every acquire carries a request id (see RequestID), so an attempt whose
// answer was lost (the connection was cut or timed out, a proxy answered
// 502 or 504) is sent again with it, to the next server of a cluster,
// within ctx and the RetryPolicy: the server answers with the lease it
// granted, or moves the retry into the first attempt's place, with the
// wait shortened by the time already spent. ErrLeaseEnded then means the
// lease granted meanwhile has already ended.
//
// Cancelling ctx while waiting half-closes the connection and the server
// stops waiting for this caller; if the grant raced with the
// cancellation, the lease is released and ctx's error returned (see
// longpoll.go; over HTTP/2 the request is reset instead). The server keeps
// a waiter with a request id in its place for a while in case the caller
// comes back, so Acquire also withdraws it (it sends the acquire once more
// with a wait of 1 ms, which takes the waiter's place and times out, or
// claims a grant it then releases).
//
// The lease lives for its TTL; renew it with Renew or KeepAlive, and end it
// with Release or Fail.
func (c *Client) Acquire(ctx context.Context, key string, opts ...AcquireOption) (*Lease, error) {
	o := acquireOptions{owner: c.owner}
	for _, opt := range opts {
		opt(&o)
	}
	path, err := keyPath(key, "/acquire")
	if err != nil {
		return nil, fmt.Errorf("acquire: %w", err)
	}
	var body acquireBody
	if o.hasTTL {
		if o.ttl <= 0 {
			return nil, fmt.Errorf("acquire %s: %w: TTL must be positive, got %s", key, ErrInvalid, o.ttl)
		}
		body.TTL = millis(o.ttl)
	}
	if o.hasWait {
		if o.wait < 0 {
			return nil, fmt.Errorf("acquire %s: %w: Wait must not be negative, got %s", key, ErrInvalid, o.wait)
		}
		body.Wait = millis(o.wait)
	}
	body.Owner = o.owner
	if o.hasOnError {
		body.OnError = o.onError.String()
	}
	switch {
	case o.hasRequestID && !validRequestID(o.requestID):
		return nil, fmt.Errorf("acquire %s: %w: RequestID must be 1 to 64 printable ASCII characters, got %q", key, ErrInvalid, o.requestID)
	case o.hasRequestID:
		body.RequestID = o.requestID
	case !c.noIDs:
		body.RequestID = newRequestID()
	}
	if o.limit != 0 {
		if o.limit < 1 {
			return nil, fmt.Errorf("acquire %s: %w: Limit must be at least 1, got %d", key, ErrInvalid, o.limit)
		}
		body.Limit = o.limit
	}
	if o.hasMaxHold {
		if o.maxHold < 0 {
			return nil, fmt.Errorf("acquire %s: %w: MaxHold must not be negative, got %s", key, ErrInvalid, o.maxHold)
		}
		body.MaxHold = millis(o.maxHold)
	}
	if o.hasLockDelay {
		if o.lockDelay < 0 {
			return nil, fmt.Errorf("acquire %s: %w: LockDelay must not be negative, got %s", key, ErrInvalid, o.lockDelay)
		}
		body.LockDelay = millis(o.lockDelay)
	}
	var written atomic.Bool
	r := request{method: http.MethodPost, path: path, body: body, longPoll: true, written: &written}
	if body.RequestID != "" {
		// A cut attempt may be sent again: the id makes the server answer
		// it as the first one (see do). Its wait counts from the first.
		r.resend = true
		r.bodyFor = func(elapsed time.Duration) any {
			b := body
			if o.hasWait && o.wait > 0 {
				// At least 1ms: a re-sent try-once (wait 0) would leave
				// the first attempt's place alone.
				b.Wait = millis(max(o.wait-elapsed, time.Millisecond))
			}
			return b
		}
	}
	resp, err := c.do(ctx, r)
	if err != nil {
		if body.RequestID != "" && written.Load() && mayBeQueued(err) {
			c.withdraw(ctx, path, body)
		}
		return nil, fmt.Errorf("acquire %s: %w", key, err)
	}
	var g grantJSON
	if err := decode(resp, &g); err != nil || g.Token == "" {
		if ctx.Err() != nil {
			// The server's empty answer to a waiter that left.
			if body.RequestID != "" {
				c.withdraw(ctx, path, body)
			}
			return nil, fmt.Errorf("acquire %s: %w", key, context.Cause(ctx))
		}
		if err == nil {
			err = errors.New("malformed answer from the server: no token")
		}
		return nil, fmt.Errorf("acquire %s: %w (the lease, if granted, expires after its TTL)", key, err)
	}
	l := newLease(c, g, resp.sentAt)
	if ctx.Err() != nil {
		// Granted as the caller gave up: nobody would release it.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), releaseOrphanTimeout)
		defer cancel()
		_ = l.Release(rctx)
		return nil, fmt.Errorf("acquire %s: %w", key, context.Cause(ctx))
	}
	return l, nil
}

// mayBeQueued reports whether an acquire that was sent and failed with err
// may have left a waiter or an unclaimed grant on the server: no answer
// said what became of it.
func mayBeQueued(err error) bool {
	var ae *APIError
	return !errors.As(err, &ae) && !errors.As(err, new(unreachableError))
}

// withdraw takes back an acquire with a request id whose caller gave up
// (or whose answer never came), so that the server does not keep its
// place for the id's return, nor hold a grant for it: it sends the
// acquire again with a wait of 1 ms, which takes the waiter's place and
// times out at once, or claims the lease, which it then releases. Best
// effort: if it fails, the server ends the waiter or the grant by itself
// after lock.detach_grace.
func (c *Client) withdraw(ctx context.Context, path string, body acquireBody) {
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), releaseOrphanTimeout)
	defer cancel()
	if body.Wait != "0ms" {
		body.Wait = "1ms"
	}
	resp, err := c.do(wctx, request{method: http.MethodPost, path: path, body: body, resend: true})
	if err != nil {
		return
	}
	var g grantJSON
	if decode(resp, &g) != nil || g.Token == "" {
		return
	}
	_ = newLease(c, g, resp.sentAt).Release(wctx)
}

// releaseTimeout bounds the release at the end of Do, which runs even when
// the caller's context has ended.
const releaseTimeout = 10 * time.Second

// Do runs fn while holding the lock on key: it acquires (see Acquire for
// opts), keeps the lease alive in the background, and calls fn with a
// context that is cancelled, with cause wrapping ErrLeaseLost, if the
// lease is lost. When fn returns, Do releases the lease with outcome ok,
// or failed when fn returned an error or panicked; a panic is re-raised
// after the release. If fn ended the lease itself (Release or Fail), Do
// leaves it at that.
//
// Do returns fn's error. If the lease was lost meanwhile it returns an
// error wrapping ErrLeaseLost too (fn may no longer have been alone), and
// a failed release is reported when fn succeeded. If the lock is not
// acquired, fn does not run and Do returns the acquire's error.
func (c *Client) Do(ctx context.Context, key string, fn func(ctx context.Context, l *Lease) error, opts ...AcquireOption) (err error) {
	l, err := c.Acquire(ctx, key, opts...)
	if err != nil {
		return err
	}
	fctx, cancel := context.WithCancelCause(ctx)
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		select {
		case <-l.Lost():
			cancel(l.Err())
		case <-fctx.Done():
		}
	}()
	defer func() { cancel(nil); <-watched }()
	l.KeepAlive(fctx)

	panicked := true
	defer func() {
		rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
		defer rcancel()
		var relErr error
		switch {
		case l.released(): // fn released it itself
		case panicked || err != nil:
			relErr = l.Fail(rctx)
		default:
			relErr = l.Release(rctx)
		}
		if panicked {
			return // the panic continues up the stack
		}
		switch lost := l.Err(); {
		case lost != nil && err == nil:
			err = lost
		case lost != nil:
			err = fmt.Errorf("%w (%w)", err, lost)
		case relErr != nil && err == nil:
			err = relErr
		}
	}()
	err = fn(fctx, l)
	panicked = false
	return err
}
