// Package api is mutexd's HTTP JSON API v1 over a Locker. Handlers are thin:
// parse and validate parameters, make one Locker call, encode the result.
// Every error, from the engine or from validation, becomes a JSON
// {"error","message"} body in one place (handleError).
package api

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/mutexd/mutexd/internal/auth"
	"github.com/mutexd/mutexd/internal/engine"
)

// Locker is the lock engine as the API needs it.
type Locker interface {
	Acquire(ctx context.Context, key string, o engine.AcquireOptions) (engine.Grant, error)
	Release(key string, token engine.Token, failed bool) (engine.Ended, error)
	Renew(key string, token engine.Token, ttl time.Duration) (engine.Renewal, error)
	ForceRelease(key string) (engine.Ended, error)
	Inspect(key string, maxQueue int) engine.KeyInfo
	List(prefix, after string, limit int) ([]engine.KeySummary, string)
}

var _ Locker = (*engine.Engine)(nil)

// RouteObserver records the requests of one route and method.
type RouteObserver interface {
	Observe(code int, d time.Duration)
}

// Observer hands out one RouteObserver per route template and method.
// codes are the statuses the route can answer (in increasing order), so an
// Observer can count each from 0 before it first happens; a route answers
// no other code unless a bug (or a status the net/http or echo stack picks
// on its own) makes it, which an Observer must still record.
type Observer interface {
	Route(route, method string, codes []int) RouteObserver
}

// Bounds are the limits acquire and renew parameters must respect.
type Bounds struct {
	DefaultTTL  time.Duration
	MinTTL      time.Duration
	MaxTTL      time.Duration
	DefaultWait time.Duration
	MaxWait     time.Duration
}

// Options configure a Server.
type Options struct {
	Locker Locker
	Bounds Bounds
	// Observer records HTTP metrics; nil records none.
	Observer Observer
	// Metrics serves MetricsPath when both are set.
	Metrics     http.Handler
	MetricsPath string
	// MetricsNeedToken makes MetricsPath need a client token.
	MetricsNeedToken bool
	// Debug, when set, is served under DebugPrefix (net/http/pprof); with
	// auth on it needs an admin token, since profiles reveal keys and owners.
	Debug http.Handler
	// Auth decides who may call what; nil allows everyone.
	Auth *auth.Guard
	// Events serves GET /v1/events and streaming acquires when set.
	Events EventSource
	// Heartbeat is the idle interval of event streams; 0 is DefaultHeartbeat.
	Heartbeat time.Duration
	// BodyTimeout bounds reading a request body; 0 is DefaultBodyTimeout.
	BodyTimeout time.Duration
	// UI serves the console under /ui/ when set; it sees paths without
	// the /ui prefix.
	UI http.Handler
	// MaxRequests caps the requests served at once (each HTTP/2 stream is
	// one); beyond, 503 too_many_requests. 0 is no cap.
	MaxRequests int
	// WriteTimeout bounds each write of a response: one that makes no
	// progress this long closes the connection (see WithConn). 0 is no
	// bound.
	WriteTimeout time.Duration
	Logger       *slog.Logger
}

// Server is the HTTP API. It is an http.Handler.
type Server struct {
	echo     *echo.Echo
	locker   Locker
	bounds   Bounds
	log      *slog.Logger
	ready    atomic.Bool
	readyAt  atomic.Int64 // unix nanoseconds when a not-ready server expects to be ready; 0 unknown
	idPrefix string
	idSeq    atomic.Uint64

	source      EventSource
	heartbeat   time.Duration
	bodyTimeout time.Duration

	auth         *auth.Guard
	metricsPath  string
	metricsLevel auth.Level

	maxRequests  int64
	writeTimeout time.Duration
	inFlight     atomic.Int64 // requests in frame, refusals included

	// observers record each route's requests; nil without an Observer
	observers map[routeKey]RouteObserver
	unmatched RouteObserver
}

// DefaultBodyTimeout is how long a client may take to send a request body.
const DefaultBodyTimeout = 10 * time.Second

// DebugPrefix is where Options.Debug is served.
const DebugPrefix = "/debug/pprof/"

// errNotReady refuses acquires while the server is not ready.
var errNotReady = errors.New("server not ready")

// notReadyError is errNotReady with the number of seconds after which the
// server expects to be ready (the Retry-After header).
type notReadyError struct{ retryAfter int }

func (e notReadyError) Error() string { return errNotReady.Error() }
func (e notReadyError) Unwrap() error { return errNotReady }

// New builds the API. It starts not ready: call SetReady(true) once the
// listener is up.
func New(o Options) *Server {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	var seed [4]byte
	rand.Read(seed[:])
	if o.Heartbeat <= 0 {
		o.Heartbeat = DefaultHeartbeat
	}
	s := &Server{echo: echo.New(), locker: o.Locker, bounds: o.Bounds, log: o.Logger, idPrefix: hex.EncodeToString(seed[:]) + "-",
		auth: o.Auth, metricsPath: o.MetricsPath, source: o.Events, heartbeat: o.Heartbeat, bodyTimeout: o.BodyTimeout,
		maxRequests: int64(o.MaxRequests), writeTimeout: o.WriteTimeout}
	if s.bodyTimeout <= 0 {
		s.bodyTimeout = DefaultBodyTimeout
	}
	if s.auth == nil {
		s.auth = &auth.Guard{}
	}
	if o.MetricsNeedToken {
		s.metricsLevel = auth.Client
	}
	e := s.echo
	e.HideBanner, e.HidePort = true, true
	e.HTTPErrorHandler = s.handleError

	routes := []route{
		{http.MethodPost, "/v1/locks/:key/acquire", s.acquire, answers(200, 400, 409, 413, 423, 429, statusClientClosed, 503, 401)},
		{http.MethodPost, "/v1/locks/:key/release", s.release, answers(200, 400, 409, 413, 401)},
		{http.MethodPost, "/v1/locks/:key/renew", s.renew, answers(200, 400, 409, 413, 401)},
		{http.MethodGet, "/v1/locks/:key", s.inspect, answers(200, 400, 413, 401)},
		{http.MethodDelete, "/v1/locks/:key", s.forceRelease, answers(200, 400, 404, 413, 401, 403)},
		{http.MethodGet, "/v1/locks", s.list, answers(200, 400, 413, 401, 403)},
		{http.MethodGet, "/healthz", s.healthz, answers(200)},
		{http.MethodGet, "/readyz", s.readyz, answers(200, 503)},
	}
	if o.Events != nil {
		// Admin for every key's events, client for one key's.
		routes = append(routes, route{http.MethodGet, "/v1/events", s.events, answers(200, 400, 413, 429, 503, 401, 403)})
	}
	if o.UI != nil {
		ui := consoleRoute(o.UI)
		routes = append(routes,
			route{http.MethodGet, "/ui", func(c echo.Context) error { return c.Redirect(http.StatusMovedPermanently, "/ui/") }, answers(301)},
			// 302, not 301: a browser must not remember it once the console is off.
			route{http.MethodGet, "/", func(c echo.Context) error { return c.Redirect(http.StatusFound, "/ui/") }, answers(302)},
			route{http.MethodGet, "/ui/*", ui, answers(200, 404)})
	}
	if o.Metrics != nil && o.MetricsPath != "" {
		codes := answers(200)
		if o.MetricsNeedToken {
			codes = answers(200, 401)
		}
		routes = append(routes, route{http.MethodGet, o.MetricsPath, echo.WrapHandler(o.Metrics), codes})
	}
	if o.Debug != nil {
		h := echo.WrapHandler(o.Debug)
		codes := answers(200, 400, 404, 401, 403) // net/http/pprof's own errors
		routes = append(routes, route{http.MethodGet, DebugPrefix + "*", h, codes}, route{http.MethodPost, DebugPrefix + "*", h, codes})
	}
	if o.Observer != nil {
		s.observers = map[routeKey]RouteObserver{}
		for _, r := range routes {
			s.observers[routeKey{r.path, r.method}] = o.Observer.Route(r.path, r.method, s.codes(r.codes))
		}
		// Unknown paths, and known ones with a method they do not take
		// (echo answers OPTIONS on those with 204 and an Allow header);
		// under /v1 and /debug they need a token first.
		s.unmatched = o.Observer.Route(UnmatchedRoute, UnmatchedMethod, s.codes(answers(204, 401, 403, 404, 405)))
	}
	e.Use(s.frame)
	for _, r := range routes {
		e.Add(r.method, r.path, r.h)
	}
	return s
}

// consoleRoute serves the console's files from h, which sees paths without
// the /ui prefix. An error h answers (a file it does not have) is not
// written as h wrote it but goes through the one error mapping, like any
// unknown route.
func consoleRoute(h http.Handler) echo.HandlerFunc {
	h = http.StripPrefix("/ui", h)
	return func(c echo.Context) error {
		w := &errorCatcher{ResponseWriter: c.Response()}
		h.ServeHTTP(w, c.Request())
		if w.status != 0 {
			return echo.NewHTTPError(w.status)
		}
		return nil
	}
}

// errorCatcher passes a response through unless its status is an error,
// which it keeps, with its body, from the client.
type errorCatcher struct {
	http.ResponseWriter
	status int // the error status caught; 0 if none
}

func (w *errorCatcher) WriteHeader(code int) {
	if code >= http.StatusBadRequest {
		w.status = code
		return
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *errorCatcher) Write(b []byte) (int, error) {
	if w.status != 0 {
		return len(b), nil
	}
	return w.ResponseWriter.Write(b)
}

// ServeHTTP serves the API.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.echo.ServeHTTP(w, r) }

// SetReady switches /readyz and acquires on or off.
func (s *Server) SetReady(ready bool) { s.readyAt.Store(0); s.ready.Store(ready) }

// SetReadyAt switches /readyz and acquires off and tells callers, through
// Retry-After, to come back at t (the end of a restart grace). The caller
// still switches them on with SetReady(true).
func (s *Server) SetReadyAt(t time.Time) { s.ready.Store(false); s.readyAt.Store(t.UnixNano()) }

// notReady is the error of a request refused while the server is not ready.
func (s *Server) notReady() error {
	at := s.readyAt.Load()
	if at == 0 {
		return errNotReady
	}
	wait := time.Until(time.Unix(0, at))
	return notReadyError{retryAfter: max(1, int((wait+time.Second-1)/time.Second))}
}

type routeKey struct{ path, method string }

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
		start := time.Now()
		err := errTooManyRequests
		if !refuse {
			err = s.guarded(c, next)
		}
		if err != nil {
			c.Error(err)
		}
		g.finish(res.Committed)
		if s.unmatched != nil {
			o, ok := s.observers[routeKey{c.Path(), c.Request().Method}]
			if !ok {
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
func (s *Server) guarded(c echo.Context, next echo.HandlerFunc) (err error) {
	defer func() {
		if r := recover(); r != nil {
			if r == http.ErrAbortHandler {
				panic(r)
			}
			err = fmt.Errorf("panic in handler: %v", r)
		}
	}()
	if err := s.authorize(c); err != nil {
		return err
	}
	return next(c)
}

// authorize lets a request through when its token suffices for its route:
// force-release, listing and the event stream of more than one key need an
// admin token (keys may carry user ids),
// every other /v1 call (unknown ones too, so routes cannot be probed) a
// client token; health, readiness and, unless configured otherwise,
// metrics need none.
func (s *Server) authorize(c echo.Context) error {
	if t := s.auth.Tokens(); t.Enabled() {
		return t.Check(c.Request().Header.Get(echo.HeaderAuthorization), s.level(c))
	}
	return nil
}

// level is the auth.Level the request's route needs.
func (s *Server) level(c echo.Context) auth.Level {
	r := c.Request()
	switch p := c.Path(); {
	case r.Method == http.MethodGet && p == "/v1/locks", r.Method == http.MethodDelete && p == "/v1/locks/:key":
		return auth.Admin
	case r.Method == http.MethodGet && p == "/v1/events" && r.URL.Query().Get("key") == "":
		// Every key's events (or a prefix's) amount to a listing; one
		// key's events are what inspecting it shows.
		return auth.Admin
	case r.URL.Path == "/v1" || strings.HasPrefix(r.URL.Path, "/v1/"):
		return auth.Client
	case p == s.metricsPath && s.metricsPath != "":
		return s.metricsLevel
	case strings.HasPrefix(r.URL.Path, DebugPrefix):
		return auth.Admin
	}
	return auth.Public
}

func (s *Server) acquire(c echo.Context) error {
	key, err := pathKey(c)
	if err != nil {
		return err
	}
	r := c.Request()
	p, err := s.parseParams(c, pTTL, pWait, pOwner, pOnError)
	if err != nil {
		return err
	}
	o, err := s.acquireOptions(&p, r.RemoteAddr)
	if err != nil {
		return err
	}
	if !s.ready.Load() {
		return s.notReady()
	}
	if wantsStream(r) {
		return s.acquireStream(c, key, o)
	}
	g, err := s.lock(r.Context(), r, key, o)
	if err != nil {
		return err
	}
	if err := s.dropIfGone(r.Context(), g); err != nil {
		return err
	}
	buf := getBuf()
	defer putBuf(buf)
	*buf = appendGrant(*buf, g)
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
	return o, nil
}

// dropIfGone releases g, and returns the cancellation, when the request's
// client left while g was being granted: nobody will ever see its token, and
// the key's queue would stall until the lease's TTL ran out. The engine
// resolves the race when the cancellation is seen first; this covers a
// grant that woke the waiter a moment before the client left.
func (s *Server) dropIfGone(ctx context.Context, g engine.Grant) error {
	if ctx.Err() == nil {
		return nil
	}
	_, _ = s.locker.Release(g.Key, g.Token, false)
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
	p, err := s.parseParams(c, pToken, pOutcome)
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
	p, err := s.parseParams(c, pToken, pTTL)
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

type holderJSON struct {
	Owner      string `json:"owner"`
	Fence      uint64 `json:"fence"`
	AcquiredAt string `json:"acquired_at"`
	ExpiresAt  string `json:"expires_at"`
	OnError    string `json:"on_error"`
}

type waiterJSON struct {
	Owner        string `json:"owner"`
	WaitingSince string `json:"waiting_since"`
}

type keyJSON struct {
	Key     string       `json:"key"`
	Held    bool         `json:"held"`
	Holder  *holderJSON  `json:"holder"`
	Waiters int          `json:"waiters"`
	Queue   []waiterJSON `json:"queue"`
}

func formatTime(t time.Time) string { return t.UTC().Format(TimeFormat) }

func (s *Server) inspect(c echo.Context) error {
	key, err := pathKey(c)
	if err != nil {
		return err
	}
	if _, err := s.parseParams(c); err != nil {
		return err
	}
	info := s.locker.Inspect(key, MaxQueueShown)
	out := keyJSON{Key: key, Held: info.Held, Waiters: info.Waiters, Queue: make([]waiterJSON, len(info.Queue))}
	if info.Held {
		h := info.Holder
		out.Holder = &holderJSON{Owner: h.Owner, Fence: h.Fence, AcquiredAt: formatTime(h.AcquiredAt), ExpiresAt: formatTime(h.ExpiresAt), OnError: h.OnError.String()}
	}
	for i, w := range info.Queue {
		out.Queue[i] = waiterJSON{Owner: w.Owner, WaitingSince: formatTime(w.WaitingSince)}
	}
	return c.JSON(http.StatusOK, out)
}

type summaryJSON struct {
	Key     string `json:"key"`
	Held    bool   `json:"held"`
	Owner   string `json:"owner"`
	Waiters int    `json:"waiters"`
}

type listJSON struct {
	Locks []summaryJSON `json:"locks"`
	Next  string        `json:"next"`
}

func (s *Server) list(c echo.Context) error {
	p, err := s.parseParams(c, pPrefix, pLimit, pAfter)
	if err != nil {
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
	rows, next := s.locker.List(prefix, after, limit)
	out := listJSON{Locks: make([]summaryJSON, len(rows)), Next: next}
	for i, r := range rows {
		out.Locks[i] = summaryJSON{Key: r.Key, Held: r.Held, Owner: r.Owner, Waiters: r.Waiters}
	}
	return c.JSON(http.StatusOK, out)
}

func (s *Server) forceRelease(c echo.Context) error {
	key, err := pathKey(c)
	if err != nil {
		return err
	}
	if _, err := s.parseParams(c); err != nil {
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

func (s *Server) healthz(c echo.Context) error {
	return c.JSON(http.StatusOK, map[string]string{"status": "ok"})
}

func (s *Server) readyz(c echo.Context) error {
	if !s.ready.Load() {
		return s.notReady()
	}
	return c.JSON(http.StatusOK, map[string]string{"status": "ready"})
}
