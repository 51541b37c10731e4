package api

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/labstack/echo/v4"

	"github.com/mutexd/mutexd/internal/auth"
	"github.com/mutexd/mutexd/internal/engine"
)

// errRevoked is the cause that ends a long-lived request (a long poll, an
// event stream) whose token a reload of the tokens no longer accepts. It
// wraps the new check's error, which is what the client is answered
// (401 unauthorized).
// It wraps engine.ErrWontReturn: a revoked caller cannot send its
// acquire again, so its waiter leaves the queue even with a request_id.
var errRevoked = fmt.Errorf("token revoked by a reload (%w)", engine.ErrWontReturn)

// revocable is a request's context that a reload of the tokens also ends
// when it revokes the request's token (see Server.revocable). It is
// armed, and costs anything, only once Done is called: the engine calls it
// only when an acquire has to wait, so an acquire granted at once runs as
// if it were the request's own context, and the struct goes back to a
// pool.
type revocable struct {
	context.Context // the request's; answers everything until armed
	guard           *auth.Guard
	authorization   string
	level           auth.Level

	mu     sync.Mutex              // guards the following
	armed  context.Context         // the request's, ended also by a revocation; nil until armed
	cancel context.CancelCauseFunc // ends armed
	stop   func() bool             // unregisters the watch of the next reload
	closed bool                    // release ran: watch no more
}

var revocables = sync.Pool{New: func() any { return new(revocable) }}

// revocable returns the context a long-lived request should wait on: the
// request's own, which, when tokens are configured, also ends with cause
// errRevoked as soon as a reload no longer accepts the request's token for
// its route. Call release on the second result (nil-safe) once nothing
// uses the context any more.
func (s *Server) revocable(c echo.Context) (context.Context, *revocable) {
	r := c.Request()
	if !s.auth.Tokens().Enabled() {
		return r.Context(), nil
	}
	rc := revocables.Get().(*revocable)
	rc.Context, rc.guard, rc.authorization, rc.level = r.Context(), s.auth, r.Header.Get(echo.HeaderAuthorization), s.levelOf(c)
	return rc, rc
}

// Done arms the watch and returns the channel that closes when the request
// ends or its token is revoked.
func (r *revocable) Done() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.armLocked().Done()
}

// arm starts watching reloads now, as Done would (nil-safe).
func (r *revocable) arm() {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.armLocked()
}

func (r *revocable) armLocked() context.Context {
	if r.armed == nil {
		r.armed, r.cancel = context.WithCancelCause(r.Context)
		r.watchLocked()
	}
	return r.armed
}

// watchLocked checks the token and, while it passes, arranges to check it
// again at the next reload. Changed is taken before the check, so a reload
// between the two is never missed.
func (r *revocable) watchLocked() {
	if r.closed {
		return
	}
	next := r.guard.Changed()
	if err := r.guard.Check(r.authorization, r.level); err != nil {
		r.cancel(fmt.Errorf("%w: %w", errRevoked, err))
		return
	}
	r.stop = context.AfterFunc(next, r.rewatch)
}

func (r *revocable) rewatch() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.watchLocked()
}

// Err is the armed context's error, else the request's.
func (r *revocable) Err() error {
	r.mu.Lock()
	a := r.armed
	r.mu.Unlock()
	if a != nil {
		return a.Err()
	}
	return r.Context.Err()
}

// Value is the armed context's value (context.Cause finds the revocation
// through it), else the request's.
func (r *revocable) Value(key any) any {
	r.mu.Lock()
	a := r.armed
	r.mu.Unlock()
	if a != nil {
		return a.Value(key)
	}
	return r.Context.Value(key)
}

// release stops watching reloads. An unarmed context goes back to the
// pool; an armed one is left to the garbage collector, since a watch that
// fired just now may still be about to look at it.
func (r *revocable) release() {
	if r == nil {
		return
	}
	r.mu.Lock()
	r.closed = true
	armed := r.armed != nil
	if armed {
		if r.stop != nil {
			r.stop()
		}
		r.cancel(context.Canceled)
	}
	r.mu.Unlock()
	if !armed {
		r.Context, r.guard, r.authorization = nil, nil, ""
		r.closed = false
		revocables.Put(r)
	}
}

// revoked returns the revocation that ended ctx, or nil.
func revoked(ctx context.Context) error {
	if err := context.Cause(ctx); errors.Is(err, errRevoked) {
		return err
	}
	return nil
}
