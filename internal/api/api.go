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
	"log/slog"
	"net/http"
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
	Abandon(key string, fence uint64)
	Renew(key string, token engine.Token, ttl time.Duration) (engine.Renewal, error)
	ForceRelease(key string) (engine.Ended, error)
	Inspect(key string, maxQueue int) engine.KeyInfo
	List(prefix, after string, limit int) ([]engine.KeySummary, string)
	// Stats is the live counts of GET /v1/stats.
	Stats() engine.Stats
	CheckFence(key string, fence uint64) engine.FenceStatus
}

var _ Locker = (*engine.Engine)(nil)

// Operator is the operators' calls. A standalone engine's cannot fail
// (Options.Operator may be left nil for one); a cluster's fail while it
// has no leader.
type Operator interface {
	Pause(key string) (bool, error)
	Resume(key string) (bool, error)
	PausePrefix(prefix string) (int, error)
	ResumePrefix(prefix string) (int, error)
	Drain(key, reason string) (int, error)
	DrainPrefix(prefix, reason string) (int, error)
}

// engineOperator is a standalone engine's Operator.
type engineOperator struct{ e *engine.Engine }

func (o engineOperator) Pause(key string) (bool, error)         { return o.e.Pause(key), nil }
func (o engineOperator) Resume(key string) (bool, error)        { return o.e.Resume(key), nil }
func (o engineOperator) PausePrefix(prefix string) (int, error) { return o.e.PausePrefix(prefix), nil }
func (o engineOperator) ResumePrefix(prefix string) (int, error) {
	return o.e.ResumePrefix(prefix), nil
}
func (o engineOperator) Drain(key, reason string) (int, error) { return o.e.Drain(key, reason), nil }
func (o engineOperator) DrainPrefix(prefix, reason string) (int, error) {
	return o.e.DrainPrefix(prefix, reason), nil
}

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
	// MaxHold bounds an acquire's max_hold; 0 is no bound.
	MaxHold time.Duration
	// DefaultLockDelay is the lock_delay of an acquire that names none
	// (at most MaxLockDelay).
	DefaultLockDelay time.Duration
}

// Options configure a Server.
type Options struct {
	Locker Locker
	// Operator serves the operators' calls; nil uses Locker, which must
	// then be an *engine.Engine.
	Operator Operator
	// Cluster serves the cluster's routes and makes reads linearizable;
	// nil for a standalone engine.
	Cluster Cluster
	// Forward, when set, makes this an agent's API: every /v1 route (but
	// the servers' internal ones) is answered by Forward, not by Locker,
	// Operator, Cluster or Events, which may be nil. Health, readiness,
	// metrics, the console and the error mapping stay local.
	Forward Forwarder
	// ClusterAdmin serves the membership and snapshot routes
	// (/v1/cluster/members, transfer-leadership, snapshot) when set, with
	// Cluster.
	ClusterAdmin ClusterAdmin
	Bounds       Bounds
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
	// CheckBrowsers makes a server without tokens refuse, on the routes a
	// token would guard, requests a page of another site could have made
	// a browser send: a foreign Origin or Sec-Fetch-Site, or a Host that
	// names neither an IP address, localhost nor one of AllowedHosts (DNS
	// rebinding). See checkBrowser. With tokens the checks are off: a
	// browser cannot attach a bearer token to a cross-site request
	// without a CORS preflight, which this server never grants.
	CheckBrowsers bool
	// AllowedHosts are the host names (no port) a server without tokens
	// answers to besides IP addresses and localhost; "*" allows any.
	AllowedHosts []string
	// Events serves GET /v1/events, GET /v1/stats and streaming acquires
	// when set.
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
	ops      Operator
	cluster  Cluster
	forward  Forwarder    // nil but in an agent
	admin    ClusterAdmin // nil: no membership routes
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
	hosts        *hostRule // nil: no browser checks
	metricsPath  string
	metricsLevel auth.Level

	maxRequests  int64
	writeTimeout time.Duration
	inFlight     atomic.Int64 // requests in frame, refusals included

	routes    map[routeKey]routeInfo // every route's tier and metrics
	unmatched RouteObserver          // records unrouted requests; nil without an Observer
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
	if o.Operator == nil {
		if e, ok := o.Locker.(*engine.Engine); ok {
			o.Operator = engineOperator{e}
		}
	}
	s := &Server{echo: echo.New(), locker: o.Locker, ops: o.Operator, cluster: o.Cluster, forward: o.Forward, admin: o.ClusterAdmin, bounds: o.Bounds, log: o.Logger, idPrefix: hex.EncodeToString(seed[:]) + "-",
		auth: o.Auth, metricsPath: o.MetricsPath, source: o.Events, heartbeat: o.Heartbeat, bodyTimeout: o.BodyTimeout,
		maxRequests: int64(o.MaxRequests), writeTimeout: o.WriteTimeout}
	if s.bodyTimeout <= 0 {
		s.bodyTimeout = DefaultBodyTimeout
	}
	if s.auth == nil {
		s.auth = &auth.Guard{}
	}
	if o.CheckBrowsers {
		s.hosts = newHostRule(o.AllowedHosts)
	}
	if o.MetricsNeedToken {
		s.metricsLevel = auth.Client
	}
	e := s.echo
	e.HideBanner, e.HidePort = true, true
	e.HTTPErrorHandler = s.handleError

	routes := s.routeTable(o)
	if o.Forward != nil {
		routes = forwarded(routes, o.Forward)
	}
	s.routes = make(map[routeKey]routeInfo, len(routes))
	for _, r := range routes {
		info := routeInfo{tier: r.tier}
		if o.Observer != nil {
			info.obs = o.Observer.Route(r.path, r.method, s.codes(r))
		}
		s.routes[routeKey{r.path, r.method}] = info
	}
	if o.Observer != nil {
		// Unknown paths, and known ones with a method they do not take
		// (echo answers OPTIONS on those with 204 and an Allow header);
		// under /v1 and /debug they need a token first.
		s.unmatched = o.Observer.Route(UnmatchedRoute, UnmatchedMethod, s.codes(route{tier: tierAdmin, codes: answers(204, 404, 405)}))
	}
	e.Use(s.frame)
	for _, r := range routes {
		e.Add(r.method, r.path, r.h)
	}
	return s
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

func (s *Server) healthz(c echo.Context) error {
	return c.JSON(http.StatusOK, statusJSON{Status: "ok"})
}

func (s *Server) readyz(c echo.Context) error {
	if !s.ready.Load() {
		return s.notReady()
	}
	return c.JSON(http.StatusOK, statusJSON{Status: "ready"})
}
