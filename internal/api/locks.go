package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/mutexd/mutexd/internal/auth"
	"github.com/mutexd/mutexd/internal/duration"
	"github.com/mutexd/mutexd/internal/engine"
)

// The lock handlers: parse and validate, one Locker call, encode. Errors
// go back to frame, which answers them through the one mapping.

func (s *Server) acquire(c echo.Context) error {
	key, err := pathKey(c)
	if err != nil {
		return err
	}
	r := c.Request()
	p, err := parseParams(c, s.bodyTimeout, pTTL, pWait, pOwner, pOnError, pRequestID, pLimit, pMaxHold, pLockDelay)
	if err != nil {
		return err
	}
	o, err := s.acquireOptions(&p, r.RemoteAddr)
	if err != nil {
		return err
	}
	// A cluster's server is not ready while it knows no leader, but an
	// acquire sent then waits for one (a failover's time) in the Locker
	// rather than failing at once: /readyz tells load balancers, and a
	// caller already connected rides the failover out.
	if !s.ready.Load() && s.cluster == nil {
		return s.notReady()
	}
	if wantsStream(r) {
		return s.acquireStream(c, key, o)
	}
	// A long poll ends when its token is revoked (answered 401): the
	// engine then takes the waiter out of the queue.
	ctx, rc := s.revocable(c)
	defer rc.release()
	g, err := s.lock(ctx, r, key, o)
	if err != nil {
		return err
	}
	if err := s.dropIfGone(ctx, g); err != nil {
		return err
	}
	buf := getBuf()
	defer putBuf(buf)
	*buf = appendGrant(*buf, g, o.Limit, o.RequestID)
	return writeJSON(c, http.StatusOK, *buf)
}

// lock is the Locker's Acquire under the admin reserve: an acquire that a
// limit refuses at the clients' share (of limits.max_keys or max_waiters)
// is tried once more with the reserve when r may use it. The token is
// looked at again only then, so an acquire below the limits pays nothing
// for the reserve; a refusal changes nothing, so the retry is safe.
func (s *Server) lock(ctx context.Context, r *http.Request, key string, o engine.AcquireOptions) (engine.Grant, error) {
	o.Reserve = !s.auth.Tokens().Enabled()
	g, err := s.locker.Acquire(ctx, key, o)
	if err != nil && !o.Reserve && (errors.Is(err, engine.ErrTooManyKeys) || errors.Is(err, engine.ErrTooManyWaiters)) && s.mayUseReserve(r) {
		o.Reserve = true
		g, err = s.locker.Acquire(ctx, key, o)
	}
	return g, err
}

// mayUseReserve reports whether r may use the share of the limits kept for
// admins: when it carries an admin token, or when no tokens are configured
// (there are no tiers then, and everyone may do what an admin may).
func (s *Server) mayUseReserve(r *http.Request) bool {
	t := s.auth.Tokens()
	return !t.Enabled() || t.Check(r.Header.Get(echo.HeaderAuthorization), auth.Admin) == nil
}

func (s *Server) acquireOptions(p *params, remote string) (engine.AcquireOptions, error) {
	b := s.bounds
	o := engine.AcquireOptions{Owner: remote}
	var err error
	if o.TTL, err = durationParam(p, pTTL, b.DefaultTTL, b.MinTTL, b.MaxTTL, "invalid_ttl"); err != nil {
		return o, err
	}
	if o.Wait, err = durationParam(p, pWait, b.DefaultWait, 0, b.MaxWait, "invalid_wait"); err != nil {
		return o, err
	}
	if owner, ok := p.get(pOwner); ok {
		if err := validOwner(owner); err != nil {
			return o, err
		}
		o.Owner = owner
	}
	switch v, _ := p.get(pOnError); v {
	case "", "continue":
	case "stop":
		o.OnError = engine.OnErrorStop
	default:
		return o, badRequest("invalid_on_error", "on_error must be continue or stop; got %q.", clip(v))
	}
	// The newer parameters: each costs a flag test when absent.
	if id, ok := p.get(pRequestID); ok {
		if err := validRequestID(id); err != nil {
			return o, err
		}
		o.RequestID = id
	}
	o.Limit = 1
	if v, ok := p.get(pLimit); ok {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > engine.MaxLimit {
			return o, badRequest("invalid_limit", "limit must be a whole number from 1 to %d; got %q.", engine.MaxLimit, clip(v))
		}
		o.Limit = n
	}
	if v, ok := p.get(pMaxHold); ok {
		d, err := duration.Parse(v)
		if err != nil || d < 0 || (d > 0 && (d < o.TTL || b.MaxHold > 0 && d > b.MaxHold)) {
			return o, maxHoldError(v, o.TTL, b.MaxHold)
		}
		o.MaxHold = d
	}
	if o.LockDelay, err = durationParam(p, pLockDelay, b.DefaultLockDelay, 0, MaxLockDelay, "invalid_lock_delay"); err != nil {
		return o, err
	}
	return o, nil
}

// maxHoldError is the 400 of a max_hold out of its bounds, which depend
// on the acquire's ttl and on lock.max_hold.
func maxHoldError(v string, ttl, bound time.Duration) error {
	if bound > 0 {
		return badRequest("invalid_max_hold", "max_hold must be 0 (none) or a duration from the ttl (%s) to %s; got %q.",
			duration.Format(ttl), duration.Format(bound), clip(v))
	}
	return badRequest("invalid_max_hold", "max_hold must be 0 (none) or a duration of at least the ttl (%s); got %q.", duration.Format(ttl), clip(v))
}

// dropIfGone hands g back to the engine (Abandon), and returns the
// cancellation, when the request's client left while g was being granted:
// nobody will see its token. The engine releases it at once, or, for an
// acquire with a request_id, keeps it for the re-sent acquire for the
// detach grace. The engine resolves the race itself when it sees the
// cancellation first; this covers a client that left just after.
func (s *Server) dropIfGone(ctx context.Context, g engine.Grant) error {
	if ctx.Err() == nil {
		return nil
	}
	s.locker.Abandon(g.Key, g.Fence)
	return fmt.Errorf("%w: %w", engine.ErrCancelled, context.Cause(ctx))
}

// leaseToken reads the required token. A malformed token cannot be the live
// lease, so it is answered like any other wrong token.
func leaseToken(p *params) (engine.Token, error) {
	s, _ := p.get(pToken)
	if s == "" {
		return engine.Token{}, badRequest("missing_token", "token is required: the token returned by acquire.")
	}
	t, ok := engine.ParseToken(s)
	if !ok {
		return engine.Token{}, engine.ErrNotHolder
	}
	return t, nil
}

func (s *Server) release(c echo.Context) error {
	key, err := pathKey(c)
	if err != nil {
		return err
	}
	p, err := parseParams(c, s.bodyTimeout, pToken, pOutcome)
	if err != nil {
		return err
	}
	var failed bool
	switch v, _ := p.get(pOutcome); v {
	case "", "ok":
	case "failed":
		failed = true
	default:
		return badRequest("invalid_outcome", "outcome must be ok or failed; got %q.", clip(v))
	}
	token, err := leaseToken(&p)
	if err != nil {
		return err
	}
	ended, err := s.locker.Release(key, token, failed)
	if err != nil {
		return err
	}
	buf := getBuf()
	defer putBuf(buf)
	*buf = appendReleased(*buf, key, ended)
	return writeJSON(c, http.StatusOK, *buf)
}

func (s *Server) renew(c echo.Context) error {
	key, err := pathKey(c)
	if err != nil {
		return err
	}
	p, err := parseParams(c, s.bodyTimeout, pToken, pTTL)
	if err != nil {
		return err
	}
	ttl, err := durationParam(&p, pTTL, 0, s.bounds.MinTTL, s.bounds.MaxTTL, "invalid_ttl")
	if err != nil {
		return err
	}
	token, err := leaseToken(&p)
	if err != nil {
		return err
	}
	r, err := s.locker.Renew(key, token, ttl)
	if err != nil {
		return err
	}
	buf := getBuf()
	defer putBuf(buf)
	*buf = appendRenewal(*buf, key, r)
	return writeJSON(c, http.StatusOK, *buf)
}

func (s *Server) inspect(c echo.Context) error {
	key, err := pathKey(c)
	if err != nil {
		return err
	}
	if err := s.readBarrier(c); err != nil {
		return err
	}
	info := s.locker.Inspect(key, MaxQueueShown)
	return c.JSON(http.StatusOK, newKeyJSON(key, info))
}

func (s *Server) list(c echo.Context) error {
	p, err := parseParams(c, s.bodyTimeout, pPrefix, pLimit, pAfter, pStale)
	if err != nil {
		return err
	}
	if err := s.barrier(c, &p); err != nil {
		return err
	}
	limit := DefaultLimit
	if v, ok := p.get(pLimit); ok {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > MaxLimit {
			return badRequest("invalid_limit", "limit must be a whole number from 1 to %d; got %q.", MaxLimit, clip(v))
		}
		limit = n
	}
	prefix, _ := p.get(pPrefix)
	after, _ := p.get(pAfter)
	return c.JSON(http.StatusOK, newListJSON(s.locker.List(prefix, after, limit)))
}

func (s *Server) forceRelease(c echo.Context) error {
	key, err := pathKey(c)
	if err != nil {
		return err
	}
	if _, err := parseParams(c, s.bodyTimeout); err != nil {
		return err
	}
	ended, err := s.locker.ForceRelease(key)
	if err != nil {
		return err
	}
	buf := getBuf()
	defer putBuf(buf)
	*buf = appendReleased(*buf, key, ended) // the same shape as a release's
	return writeJSON(c, http.StatusOK, *buf)
}

// checkFence answers whether a fence is a live lease of the key, for a
// store that cannot keep the highest fence itself and asks right before
// it acts.
func (s *Server) checkFence(c echo.Context) error {
	key, err := pathKey(c)
	if err != nil {
		return err
	}
	fence, err := pathFence(c)
	if err != nil {
		return err
	}
	if err := s.readBarrier(c); err != nil {
		return err
	}
	st := s.locker.CheckFence(key, fence)
	if !st.Live {
		return staleFenceError{current: st.Current}
	}
	return c.JSON(http.StatusOK, fenceJSON{Key: key, Fence: fence, Live: true, ExpiresAt: formatTime(st.ExpiresAt)})
}

// pathFence returns the route's {fence} segment: a whole number from 1 to
// 2^53-1, the fences the server issues.
func pathFence(c echo.Context) (uint64, error) {
	v := c.Param("fence")
	f, err := strconv.ParseUint(v, 10, 64)
	if err != nil || f < 1 || f > engine.MaxFence {
		return 0, badRequest("invalid_fence", "fence must be a whole number from 1 to %d; got %q.", uint64(engine.MaxFence), clip(v))
	}
	return f, nil
}

// pause and resume serve POST /v1/locks/{key}/pause and /resume.
func (s *Server) pause(c echo.Context) error  { return s.setPaused(c, true) }
func (s *Server) resume(c echo.Context) error { return s.setPaused(c, false) }

func (s *Server) setPaused(c echo.Context, paused bool) error {
	key, err := pathKey(c)
	if err != nil {
		return err
	}
	if _, err := parseParams(c, s.bodyTimeout); err != nil {
		return err
	}
	var changed bool
	if paused {
		changed, err = s.ops.Pause(key)
	} else {
		changed, err = s.ops.Resume(key)
	}
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, pausedJSON{Key: key, Paused: paused, Changed: changed})
}

// drain serves DELETE /v1/locks/{key}/waiters.
func (s *Server) drain(c echo.Context) error {
	key, err := pathKey(c)
	if err != nil {
		return err
	}
	p, err := parseParams(c, s.bodyTimeout, pReason)
	if err != nil {
		return err
	}
	reason, err := drainReason(&p)
	if err != nil {
		return err
	}
	n, err := s.ops.Drain(key, reason)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, drainedJSON{Key: key, Drained: n})
}

// pausePrefix, resumePrefix and drainPrefix serve the prefix forms, for
// maintenance windows.
func (s *Server) pausePrefix(c echo.Context) error {
	p, err := parseParams(c, s.bodyTimeout, pPrefix)
	if err != nil {
		return err
	}
	prefix, err := validPrefix(&p)
	if err != nil {
		return err
	}
	n, err := s.ops.PausePrefix(prefix)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, prefixPausedJSON{Prefix: prefix, Paused: n})
}

func (s *Server) resumePrefix(c echo.Context) error {
	p, err := parseParams(c, s.bodyTimeout, pPrefix)
	if err != nil {
		return err
	}
	prefix, err := validPrefix(&p)
	if err != nil {
		return err
	}
	n, err := s.ops.ResumePrefix(prefix)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, prefixResumedJSON{Prefix: prefix, Resumed: n})
}

func (s *Server) drainPrefix(c echo.Context) error {
	p, err := parseParams(c, s.bodyTimeout, pPrefix, pReason)
	if err != nil {
		return err
	}
	prefix, err := validPrefix(&p)
	if err != nil {
		return err
	}
	reason, err := drainReason(&p)
	if err != nil {
		return err
	}
	n, err := s.ops.DrainPrefix(prefix, reason)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, prefixDrainedJSON{Prefix: prefix, Drained: n})
}
