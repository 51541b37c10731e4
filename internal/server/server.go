// Package server assembles the mutexd daemon from its parts (engine,
// metrics, API, HTTP server) in order, runs it, and takes it down in
// reverse order on shutdown. cmd/mutexd and end-to-end tests both use it.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"slices"
	"sync"
	"time"

	"github.com/mutexd/mutexd/internal/agent"
	"github.com/mutexd/mutexd/internal/api"
	"github.com/mutexd/mutexd/internal/auth"
	"github.com/mutexd/mutexd/internal/cluster"
	"github.com/mutexd/mutexd/internal/config"
	"github.com/mutexd/mutexd/internal/engine"
	"github.com/mutexd/mutexd/internal/events"
	"github.com/mutexd/mutexd/internal/metrics"
	"github.com/mutexd/mutexd/internal/ui"
)

// Server is one running daemon.
type Server struct {
	cfg      config.Config
	log      *slog.Logger
	engine   *engine.Engine // nil in cluster mode
	node     *cluster.Node  // nil standalone
	agent    *agent.Agent   // set only for cluster.role agent (no engine, no node)
	locker   api.Locker     // engine or node; nil in an agent
	metrics  *metrics.Metrics
	api      *api.Server
	http     *http.Server
	ln       net.Listener
	leaseLog *leaseLog // logs failed, expired and force-released leases
	guard    *auth.Guard
	conns    *limitListener
	cert     *certificate // nil without TLS
	hub      *events.Hub
}

// subscriberBuffer is how many events one /v1/events stream may fall
// behind before it is cut off with a final "overflow" event.
const subscriberBuffer = 1024

// HTTP server limits. A long-poll acquire is bounded by its own wait, so
// there is no whole-request read or write timeout (it would cut a
// legitimate 10-minute wait). Instead: a connection must bring its first
// request within limits.read_header_timeout (slow or trickling headers are
// cut off by the same), idle connections go after limits.idle_timeout,
// each response write that makes no progress for limits.write_timeout
// closes its connection, and limits.max_requests bounds the requests (HTTP/2
// streams included) served at once.
const (
	maxHeaderBytes = 64 << 10
	// maxStreams bounds the concurrent requests (waits) on one HTTP/2
	// connection: the 100 that RFC 9113 recommends as a minimum. The
	// streams of all connections together are bounded by
	// limits.max_requests.
	maxStreams = 100
)

// New builds the daemon and binds its listener, so Addr is known and
// clients can connect as soon as New returns. Nothing is served until Run.
// The parts are built in dependency order: secrets (a bad file is a
// configuration error), then the engine with its observers (metrics, the
// lease log, the events hub), the API over it, and last the listener,
// whose connections the metrics count.
func New(cfg config.Config, version string, log *slog.Logger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{cfg: cfg, log: log, guard: &auth.Guard{}}
	if err := s.loadSecrets(); err != nil {
		return nil, fmt.Errorf("%w: %w", config.ErrInvalid, err)
	}
	if err := s.buildEngine(version); err != nil {
		return nil, err
	}
	s.buildAPI()
	if err := s.listen(); err != nil {
		if s.node != nil {
			s.node.Close()
		}
		return nil, err
	}
	return s, nil
}

// loadSecrets reads the tokens and the TLS certificate.
func (s *Server) loadSecrets() error {
	if err := s.loadTokens(); err != nil {
		return err
	}
	if c := s.cfg.TLS; c.Enabled() {
		s.cert = &certificate{certFile: c.CertFile, keyFile: c.KeyFile, log: s.log}
		return s.cert.load(time.Now())
	}
	return nil
}

// buildEngine makes the engine and what observes it: the metrics, the log
// of failed and expired leases, and the hub behind /v1/events.
func (s *Server) buildEngine(version string) error {
	cfg := s.cfg
	s.metrics = metrics.New(metrics.Options{
		NamespaceSeparator: cfg.Metrics.NamespaceSeparator,
		MaxNamespaces:      cfg.Metrics.MaxNamespaces,
		Namespaces:         cfg.Metrics.Namespaces,
		NamespaceIdle:      cfg.Metrics.NamespaceIdle,
		Version:            version,
	})
	s.leaseLog = newLeaseLog(s.log)
	l := cfg.Limits
	s.hub = events.New(l.MaxSubscribers, l.Reserved(l.MaxSubscribers), subscriberBuffer)
	obs := engine.Observers{s.metrics, s.leaseLog, s.hub}
	limits := engine.Limits{
		MaxKeys:          l.MaxKeys,
		MaxWaitersPerKey: l.MaxWaitersPerKey,
		MaxWaiters:       l.MaxWaiters,
		ReservedKeys:     l.Reserved(l.MaxKeys),
		ReservedWaiters:  l.Reserved(l.MaxWaiters),
		DetachGrace:      detachGrace(cfg.Lock.DetachGrace),
		RememberOutcome:  cfg.Lock.RememberOutcome,
		MaxRemembered:    cfg.Lock.MaxRemembered,
	}
	if cfg.Cluster.Agent() {
		return s.openAgent()
	}
	if cfg.Cluster.Enabled() {
		if err := s.openCluster(limits, obs, s.metrics.Cluster(cluster.ForwardOps())); err != nil {
			return err
		}
		s.locker = s.node
		return nil
	}
	s.engine = engine.New(engine.SystemClock{}, obs, limits)
	s.locker = s.engine
	return nil
}

// detachGrace is lock.detach_grace as the engine takes it: there 0 means
// the default and a negative value off; in the configuration 0 is off.
func detachGrace(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}

// buildAPI makes the HTTP API over the engine and the http.Server that
// serves it.
func (s *Server) buildAPI() {
	cfg := s.cfg
	var console http.Handler
	if cfg.UI.Enabled {
		console = ui.Handler()
	}
	var cl api.Cluster
	var ops api.Operator
	var admin api.ClusterAdmin
	if s.node != nil {
		cl, ops, admin = clusterAPI{s.node}, s.node, clusterAdmin{s.node}
	}
	var fwd api.Forwarder
	var events api.EventSource = s.hub
	if s.agent != nil {
		fwd, events = s.agent, nil // an agent's events are a server's
	}
	s.api = api.New(api.Options{
		Locker:   s.locker,
		Operator: ops,
		Cluster:  cl,
		Forward:  fwd,
		// ClusterAdmin: the membership and snapshot routes.
		ClusterAdmin: admin,
		Bounds: api.Bounds{
			DefaultTTL:       cfg.Lock.DefaultTTL,
			MinTTL:           config.MinTTL,
			MaxTTL:           cfg.Lock.MaxTTL,
			DefaultWait:      cfg.Lock.DefaultWait,
			MaxWait:          cfg.Lock.MaxWait,
			MaxHold:          cfg.Lock.MaxHold,
			DefaultLockDelay: cfg.Lock.DefaultLockDelay,
		},
		Observer:         routeMetrics{s.metrics},
		Metrics:          s.metrics.Handler(),
		MetricsPath:      cfg.Metrics.Path,
		MetricsNeedToken: cfg.Metrics.RequireAuth,
		Debug:            debugHandler(cfg.Debug),
		Auth:             s.guard,
		CheckBrowsers:    true,
		AllowedHosts:     allowedHosts(cfg),
		Events:           events,
		UI:               console,
		MaxRequests:      cfg.Limits.MaxRequests,
		WriteTimeout:     cfg.Limits.WriteTimeout,
		Logger:           s.log,
	})
	// HTTP/1.1 and HTTP/2 (over TLS, or cleartext with prior knowledge): a
	// program may multiplex many waits over one connection.
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	if s.cert != nil {
		protocols.SetHTTP2(true)
	} else {
		protocols.SetUnencryptedHTTP2(true)
	}
	s.http = &http.Server{
		Handler:           firstRequest{s.api},
		ConnContext:       connContext,
		ReadHeaderTimeout: cfg.Limits.ReadHeaderTimeout,
		IdleTimeout:       cfg.Limits.IdleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		Protocols:         &protocols,
		HTTP2: &http.HTTP2Config{
			MaxConcurrentStreams: maxStreams,
			// A peer that stops reading the socket stalls the
			// connection's writer, which this closes.
			WriteByteTimeout: cfg.Limits.WriteTimeout,
		},
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
}

// listen binds the listener behind the connection cap (and TLS).
func (s *Server) listen() error {
	l := s.cfg.Limits
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", s.cfg.Listen, err)
	}
	// Order matters: the cap counts TCP connections, and a refusal is
	// written in the clear, so TLS wraps the capped listener, and a TLS
	// client past the cap just sees its connection closed.
	if s.cert != nil {
		s.conns = newLimitListener(ln, l.MaxConnections, nil, l.ReadHeaderTimeout)
		s.ln = tls.NewListener(s.conns, s.cert.config())
	} else {
		s.conns = newLimitListener(ln, l.MaxConnections, refusal503, l.ReadHeaderTimeout)
		s.ln = s.conns
	}
	src := metrics.Sources{Events: s.hub, Conns: s.conns}
	switch {
	case s.node != nil:
		src.Engine = s.node
	case s.engine != nil:
		src.Engine = s.engine
	default: // an agent: no keys and no event streams of its own
		src.Events = nil
	}
	s.metrics.Watch(src)
	if s.node != nil {
		s.metrics.WatchCluster(clusterMetrics{s.node})
	}
	return nil
}

// consoleURL is where a browser on this machine finds the console: the
// listen address, with a wildcard host (0.0.0.0, ::) shown as loopback.
func consoleURL(addr net.Addr, tls bool) string {
	scheme := "http"
	if tls {
		scheme = "https"
	}
	host, port, err := net.SplitHostPort(addr.String())
	if err != nil {
		return scheme + "://" + addr.String() + "/ui/"
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return scheme + "://" + net.JoinHostPort(host, port) + "/ui/"
}

// allowedHosts are the names a token-less daemon answers to besides IP
// addresses and localhost: http.allowed_hosts and the name in listen, if
// it is one (the machine's own addresses are IP addresses, which pass).
func allowedHosts(cfg config.Config) []string {
	names := slices.Clone(cfg.HTTP.AllowedHosts)
	if host, _, err := net.SplitHostPort(cfg.Listen); err == nil && host != "" {
		names = append(names, host)
	}
	return names
}

// debugHandler returns the net/http/pprof handlers on a private mux when
// debug.pprof is on, else nil.
func debugHandler(c config.Debug) http.Handler {
	if !c.Pprof {
		return nil
	}
	mux := http.NewServeMux()
	mux.HandleFunc(api.DebugPrefix, pprof.Index)
	mux.HandleFunc(api.DebugPrefix+"cmdline", pprof.Cmdline)
	mux.HandleFunc(api.DebugPrefix+"profile", pprof.Profile)
	mux.HandleFunc(api.DebugPrefix+"symbol", pprof.Symbol)
	mux.HandleFunc(api.DebugPrefix+"trace", pprof.Trace)
	return mux
}

// Addr is the address the server listens on.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Engine returns the lock engine, for tests that check its state.
func (s *Server) Engine() *engine.Engine { return s.engine }

// Run serves until ctx ends, then shuts down gracefully: /readyz turns 503,
// queued waiters and new acquires are answered 503 unavailable, in-flight
// requests get up to shutdown_timeout to finish. It returns nil after a
// clean shutdown.
func (s *Server) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	s.leaseLog.start(&wg)
	defer s.leaseLog.stop()

	serveErr := make(chan error, 1)
	c := s.cfg
	// During the restart grace every lease granted before a restart may
	// still be believed held by its client: grant nothing until they have
	// all run out.
	var graceOver <-chan time.Time
	var readyPoll <-chan time.Time // a cluster server is ready while its node is
	if s.agent != nil {
		s.agent.Start()
	}
	if s.node != nil || s.agent != nil {
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		readyPoll = t.C
	} else if g := c.Lock.RestartGrace; g > 0 {
		t := time.NewTimer(g)
		defer t.Stop()
		graceOver = t.C
		s.api.SetReadyAt(time.Now().Add(g))
	} else {
		s.api.SetReady(true)
	}
	wg.Go(func() { serveErr <- s.http.Serve(s.ln) })
	ready := false
	s.log.Info("mutexd started", "addr", s.ln.Addr().String(), "version", s.metrics.Version(),
		"default_ttl", c.Lock.DefaultTTL.String(), "max_ttl", c.Lock.MaxTTL.String(),
		"default_wait", c.Lock.DefaultWait.String(), "max_wait", c.Lock.MaxWait.String(),
		"restart_grace", c.Lock.RestartGrace.String(), "max_hold", c.Lock.MaxHold.String(),
		"default_lock_delay", c.Lock.DefaultLockDelay.String(), "remember_outcome", c.Lock.RememberOutcome.String(),
		"max_remembered", c.Lock.MaxRemembered, "detach_grace", c.Lock.DetachGrace.String(),
		"max_keys", c.Limits.MaxKeys, "max_waiters_per_key", c.Limits.MaxWaitersPerKey,
		"max_waiters", c.Limits.MaxWaiters, "max_connections", c.Limits.MaxConnections,
		"max_requests", c.Limits.MaxRequests, "write_timeout", c.Limits.WriteTimeout.String(),
		"max_subscribers", c.Limits.MaxSubscribers, "admin_reserve", c.Limits.AdminReserve, "ui", c.UI.Enabled,
		"auth", s.guard.Tokens().Enabled(), "tls", s.cert != nil)
	if c.UI.Enabled {
		s.log.Info("console", "url", consoleURL(s.ln.Addr(), s.cert != nil))
	}
	s.warnExposure()
	if l := c.Limits; l.MaxRequests < l.MaxWaiters+l.MaxSubscribers {
		s.log.Warn("limits.max_requests is below limits.max_waiters + limits.max_subscribers: waits and event streams can be refused 503 too_many_requests before their own limits",
			"max_requests", l.MaxRequests, "max_waiters", l.MaxWaiters, "max_subscribers", l.MaxSubscribers)
	}
	if g := c.Lock.RestartGrace; g > 0 && s.node != nil {
		s.log.Warn("lock.restart_grace is ignored in cluster mode: leases and queues survive a restart in the Raft log", "restart_grace", g.String())
	} else if g > 0 && g < c.Lock.MaxTTL {
		s.log.Warn("lock.restart_grace is shorter than lock.max_ttl: a lease granted before a restart with a longer TTL can outlive the grace",
			"restart_grace", g.String(), "max_ttl", c.Lock.MaxTTL.String())
	}

wait:
	for {
		select {
		case err := <-serveErr:
			s.closeLocker()
			s.hub.Close()
			return fmt.Errorf("serve: %w", err)
		case <-readyPoll:
			if r := s.clusterReady(); r != ready {
				ready = r
				s.api.SetReady(r)
				s.log.Info("cluster readiness", "ready", r)
			}
		case <-graceOver:
			graceOver = nil
			s.api.SetReady(true)
			s.log.Info("restart grace over: granting locks")
		case <-ctx.Done():
			break wait
		}
	}
	s.log.Info("shutting down", "timeout", c.ShutdownTimeout.String())
	// Order matters: stop advertising readiness, then answer every waiter
	// (their long polls end at once) and end every event stream (they
	// would never go idle), then drain the HTTP server.
	s.api.SetReady(false)
	s.closeLocker()
	s.hub.Close()
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.ShutdownTimeout)
	defer cancel()
	err := s.http.Shutdown(sctx)
	if errors.Is(err, context.DeadlineExceeded) {
		s.log.Warn("shutdown timed out; closing open connections")
		err = s.http.Close()
	}
	if serr := <-serveErr; !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = serr
	}
	s.log.Info("stopped")
	return err
}

// closeLocker answers every waiter (503, so clients go elsewhere) and, in
// a cluster, hands leadership on and leaves.
func (s *Server) closeLocker() {
	if s.agent != nil {
		s.agent.Close()
		return
	}
	if s.node != nil {
		if err := s.node.Close(); err != nil {
			s.log.Warn("cluster node close", "err", err)
		}
		return
	}
	s.engine.Close()
}

// loadTokens builds the tokens in force from the configuration and the
// tokens file, warning when the file is readable by other users. On error
// the tokens in force stay as they were.
func (s *Server) loadTokens() error {
	a := s.cfg.Auth
	client := a.Tokens
	if a.TokensFile != "" {
		warnIfShared(s.log, "auth.tokens_file", a.TokensFile)
		more, err := auth.ReadFile(a.TokensFile)
		if err != nil {
			return fmt.Errorf("auth.tokens_file: %w", err)
		}
		if len(more) == 0 {
			// An emptied file (or one caught half-written) must neither open
			// the server to everyone nor lock every client out.
			return fmt.Errorf("auth.tokens_file: %s has no tokens", a.TokensFile)
		}
		client = append(slices.Clip(client), more...)
	}
	t, err := auth.NewTokens(client, a.AdminTokens)
	if err != nil {
		return fmt.Errorf("auth: %w", err)
	}
	s.guard.Set(t)
	return nil
}

// Reload re-reads what may change while the daemon runs (the tokens
// file, the TLS certificate and key). cmd/mutexd calls it on SIGHUP. On error everything in force is
// kept, and the error is logged and returned.
func (s *Server) Reload() error {
	var errs []error
	if err := s.loadTokens(); err != nil {
		s.log.Error("reload failed; keeping the previous tokens", "err", err)
		errs = append(errs, err)
	}
	if s.cert != nil {
		if err := s.cert.load(time.Now()); err != nil {
			s.log.Error("reload failed; keeping the previous certificate", "err", err)
			errs = append(errs, err)
		}
	}
	client, admin := s.guard.Tokens().Count()
	s.log.Info("reloaded", "client_tokens", client, "admin_tokens", admin, "tls", s.cert != nil, "errors", len(errs))
	return errors.Join(errs...)
}

// warnExposure logs what an operator should know about who can reach the
// locks: an open API on a non-loopback address, or nobody able to
// force-release.
func (s *Server) warnExposure() {
	t := s.guard.Tokens()
	if !t.Enabled() {
		if a, ok := s.ln.Addr().(*net.TCPAddr); ok && !a.IP.IsLoopback() {
			s.log.Warn("listening on a non-loopback address without authentication: anyone who can reach it can take and release locks; set auth.tokens",
				"addr", a.String())
		}
		return
	}
	if _, admin := t.Count(); admin == 0 {
		s.log.Info("no auth.admin_tokens: force-release and listing keys are refused to every token")
	}
}

// connKey is the context key of a request's *limitConn.
type connKey struct{}

// connContext is the http.Server's ConnContext: it hands each
// connection's *limitConn (under TLS, the one the TLS connection wraps) to
// its requests, for firstRequest and for the API, which closes the
// connection when a response write is stuck.
func connContext(ctx context.Context, c net.Conn) context.Context {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	lc, ok := c.(*limitConn)
	if !ok {
		return ctx
	}
	return api.WithConn(context.WithValue(ctx, connKey{}, lc), lc)
}

// firstRequest tells a connection that a request has reached the handler,
// which lifts its first-request deadline (see limitListener).
type firstRequest struct{ next http.Handler }

func (h firstRequest) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if lc, ok := r.Context().Value(connKey{}).(*limitConn); ok {
		lc.served()
	}
	h.next.ServeHTTP(w, r)
}

// routeMetrics adapts metrics.Metrics to api.Observer.
type routeMetrics struct{ m *metrics.Metrics }

func (r routeMetrics) Route(route, method string, codes []int) api.RouteObserver {
	return r.m.Route(route, method, codes)
}
