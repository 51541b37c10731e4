package client

import (
	"context"
	"errors"
	"fmt"
	"net/http"
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

// acquireBody is an acquire's parameters; empty ones are left to the
// server.
type acquireBody struct {
	TTL     string `json:"ttl,omitempty"`
	Wait    string `json:"wait,omitempty"`
	Owner   string `json:"owner,omitempty"`
	OnError string `json:"on_error,omitempty"`
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
}

// releaseOrphanTimeout bounds the release of a grant that arrived after
// the caller gave up.
const releaseOrphanTimeout = 5 * time.Second

// Acquire waits in the key's FIFO queue until the lock is granted, the wait
// passes (ErrTimeout), the queue is aborted (ErrAborted), or ctx ends.
// Cancelling ctx while waiting half-closes the connection, and the server
// removes the waiter from the queue at once; if the grant raced with the
// cancellation, the lease is released and ctx's error returned (see
// longpoll.go; over HTTP/2 the request is reset instead, and such a grant
// expires after its TTL).
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
	// Only attempts that never reached the server, or were refused with
	// 503, are retried (see do): neither can have granted anything.
	resp, err := c.do(ctx, request{method: http.MethodPost, path: path, body: body, longPoll: true})
	if err != nil {
		return nil, fmt.Errorf("acquire %s: %w", key, err)
	}
	var g grantJSON
	if err := decode(resp, &g); err != nil || g.Token == "" {
		if ctx.Err() != nil {
			// The server's empty answer to a waiter that left.
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
