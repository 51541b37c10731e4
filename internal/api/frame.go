package api

import (
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/mutexd/mutexd/internal/auth"
)

// frame is the API's one middleware. Around every request, routed or not,
// it counts the request against MaxRequests, bounds its response writes
// by WriteTimeout, sets the X-Request-Id, checks the caller's token, turns
// a handler panic into an error, answers any error through the one error
// mapping and records the request's metrics. It is one middleware rather
// than a chain because echo re-wraps the chain on every request: each link
// would cost an allocation and a call on the hot path.
func (s *Server) frame(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		refuse := s.admit()
		defer s.done()
		res := c.Response()
		g := s.guardWrites(res.Writer, c.Request())
		if g != nil {
			res.Writer = g
		}
		s.requestID(c)
		route, routed := s.routes[routeKey{c.Path(), c.Request().Method}]
		start := time.Now()
		err := errTooManyRequests
		if !refuse {
			err = s.guarded(c, next, s.level(c, route, routed))
		}
		if err != nil {
			c.Error(err)
		}
		g.finish(res.Committed)
		if s.unmatched != nil {
			o := route.obs
			if !routed {
				o = s.unmatched
			}
			o.Observe(c.Response().Status, time.Since(start))
		}
		return nil
	}
}

// requestID echoes a sane X-Request-Id or assigns one.
func (s *Server) requestID(c echo.Context) {
	id := c.Request().Header.Get(echo.HeaderXRequestID)
	if id == "" || len(id) > 128 || !printable(id) {
		var buf [64]byte
		id = string(strconv.AppendUint(append(buf[:0], s.idPrefix...), s.idSeq.Add(1), 36))
	}
	c.Response().Header()[echo.HeaderXRequestID] = []string{id}
}

// guarded runs next if the caller's token suffices for the route (see
// authorize), and turns a panic in it into a logged JSON 500. The engine
// never panics with a shard locked on a request's behalf, so it stays
// consistent.
func (s *Server) guarded(c echo.Context, next echo.HandlerFunc, need auth.Level) (err error) {
	defer func() {
		if r := recover(); r != nil {
			if r == http.ErrAbortHandler {
				panic(r)
			}
			err = fmt.Errorf("panic in handler: %v", r)
		}
	}()
	if err := s.authorize(c, need); err != nil {
		return err
	}
	return next(c)
}

// authorize lets a request through when its token suffices for need, the
// level its route's tier asks (see tier). Without tokens, the routes a
// token would guard are refused to requests a browser was tricked into
// sending (checkBrowser), when CheckBrowsers is set.
func (s *Server) authorize(c echo.Context, need auth.Level) error {
	if t := s.auth.Tokens(); t.Enabled() {
		return t.Check(c.Request().Header.Get(echo.HeaderAuthorization), need)
	}
	if s.hosts != nil && need != auth.Public {
		return s.checkBrowser(c.Request())
	}
	return nil
}
