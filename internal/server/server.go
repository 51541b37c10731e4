// Package server assembles the mutexd daemon from its parts (engine,
// metrics, API, HTTP server) in order, runs it, and takes it down in
// reverse order on shutdown. cmd/mutexd and end-to-end tests both use it.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/mutexd/mutexd/internal/api"
	"github.com/mutexd/mutexd/internal/config"
	"github.com/mutexd/mutexd/internal/engine"
	"github.com/mutexd/mutexd/internal/metrics"
)

// Server is one running daemon.
type Server struct {
	cfg     config.Config
	log     *slog.Logger
	engine  *engine.Engine
	metrics *metrics.Metrics
	api     *api.Server
	http    *http.Server
	ln      net.Listener
	events  *eventLog
}

// HTTP server limits. A long-poll acquire is bounded by its own wait, so
// there is no write timeout; slow or trickling headers are cut off.
const (
	readHeaderTimeout = 10 * time.Second
	idleTimeout       = 120 * time.Second
	maxHeaderBytes    = 64 << 10
)

// New builds the daemon and binds its listener, so Addr is known and
// clients can connect as soon as New returns. Nothing is served until Run.
func New(cfg config.Config, version string, log *slog.Logger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: log}
	s.metrics = metrics.New(metrics.Options{
		NamespaceSeparator: cfg.Metrics.NamespaceSeparator,
		MaxNamespaces:      cfg.Metrics.MaxNamespaces,
		Version:            version,
	})
	s.events = newEventLog(log)
	s.engine = engine.New(engine.SystemClock{}, engine.Observers{s.metrics, s.events}, engine.Limits{
		MaxKeys:          cfg.Limits.MaxKeys,
		MaxWaitersPerKey: cfg.Limits.MaxWaitersPerKey,
		MaxWaiters:       cfg.Limits.MaxWaiters,
	})
	s.metrics.Watch(s.engine)
	s.api = api.New(api.Options{
		Locker: s.engine,
		Bounds: api.Bounds{
			DefaultTTL:  cfg.Lock.DefaultTTL,
			MinTTL:      config.MinTTL,
			MaxTTL:      cfg.Lock.MaxTTL,
			DefaultWait: cfg.Lock.DefaultWait,
			MaxWait:     cfg.Lock.MaxWait,
		},
		Observer:    routeMetrics{s.metrics},
		Metrics:     s.metrics.Handler(),
		MetricsPath: cfg.Metrics.Path,
		Logger:      log,
	})
	s.http = &http.Server{
		Handler:           s.api,
		ReadHeaderTimeout: readHeaderTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", cfg.Listen, err)
	}
	s.ln = ln
	return s, nil
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
	s.events.start(&wg)
	defer s.events.stop()

	serveErr := make(chan error, 1)
	wg.Go(func() { serveErr <- s.http.Serve(s.ln) })
	s.api.SetReady(true)
	c := s.cfg
	s.log.Info("mutexd started", "addr", s.ln.Addr().String(), "version", s.metrics.Version(),
		"default_ttl", c.Lock.DefaultTTL.String(), "max_ttl", c.Lock.MaxTTL.String(),
		"default_wait", c.Lock.DefaultWait.String(), "max_wait", c.Lock.MaxWait.String(),
		"max_keys", c.Limits.MaxKeys, "max_waiters_per_key", c.Limits.MaxWaitersPerKey,
		"max_waiters", c.Limits.MaxWaiters)

	select {
	case err := <-serveErr:
		s.engine.Close()
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	s.log.Info("shutting down", "timeout", c.ShutdownTimeout.String())
	// Order matters: stop advertising readiness, then answer every waiter
	// (their long polls end at once), then drain the HTTP server.
	s.api.SetReady(false)
	s.engine.Close()
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

// routeMetrics adapts metrics.Metrics to api.Observer.
type routeMetrics struct{ m *metrics.Metrics }

func (r routeMetrics) Route(route, method string) api.RouteObserver { return r.m.Route(route, method) }
