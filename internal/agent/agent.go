// Package agent is mutexd's agent role: a stateless daemon in front of a
// cluster's servers, the sidecar an app calls on localhost (Consul's client
// agents, Dapr's sidecar). It has no Raft and no lock state: the API
// (internal/api, with Options.Forward) sends every /v1 call on to a server
// and copies the server's answer back as it is, so an app sees through an
// agent exactly what a server says, codes and bodies alike.
//
// What the agent adds is riding out a server's failure. Any server answers
// every call (followers forward to the leader), so the agent follows the
// leader implicitly: it keeps sending to the server that answered last and
// moves to the next one when a call cannot reach it, is cut, or is refused
// 503. Calls that are harmless to send twice (reads, acquires with their
// request_id, releases, renewals, pauses) are sent again; others only when
// they certainly did not reach a server. Every acquire carries a request_id
// (the agent makes one when the app sent none), so an acquire re-sent to
// another server takes over its place in line or receives its grant: an
// app's waiting acquire survives a failover without the app seeing an error.
package agent

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mutexd/mutexd/internal/engine"
)

// Defaults of Config.
const (
	// DefaultFailoverBound is how long a call keeps looking for a server
	// that answers it (beyond an acquire's wait): longer than a cluster's
	// failover (a server itself answers 503 after about 5s without a
	// leader, with the default Raft timeouts).
	DefaultFailoverBound = 10 * time.Second
	// DefaultProbeInterval is how often the agent asks the servers whether
	// they are ready (its own /readyz).
	DefaultProbeInterval = time.Second
)

// Errors the agent answers with when no server gave an answer; both are
// engine.ErrUnavailable, which the API maps to 503 unavailable as a server
// does.
var (
	// ErrNoServer means no server could be reached or every one refused
	// the call (503) within the failover bound.
	ErrNoServer = fmt.Errorf("%w: no mutexd server answered", engine.ErrUnavailable)
	// ErrUnknownOutcome means a call that is not safe to send twice
	// (force-release, drains, prefix calls) reached a server that went
	// away before answering: it may have been applied.
	ErrUnknownOutcome = fmt.Errorf("%w: the server was lost before it answered; the call may have been applied", engine.ErrUnavailable)
)

// Config configures an Agent.
type Config struct {
	// Servers are the servers' API URLs (http:// or https://); at least
	// one.
	Servers []string
	// DefaultWait is the wait of an acquire that names none (the
	// servers' lock.default_wait), which bounds its re-sends.
	DefaultWait time.Duration
	// FailoverBound: 0 is DefaultFailoverBound.
	FailoverBound time.Duration
	// ProbeInterval: 0 is DefaultProbeInterval.
	ProbeInterval time.Duration
	// Registerer receives the agent's metrics; nil registers none.
	Registerer prometheus.Registerer
	Log        *slog.Logger
}

// Agent forwards API calls to a cluster's servers. It is an api.Forwarder.
// Start its readiness probe with Start and stop it with Close.
type Agent struct {
	servers    []string // base URLs, without a trailing slash
	hc         *http.Client
	wait       time.Duration
	bound      time.Duration
	probeEvery time.Duration
	log        *slog.Logger
	metrics    *agentMetrics

	// current is the index of the server every call tries first: the one
	// that answered last, or a ready one when the probe finds it is not.
	current atomic.Int32
	ready   atomic.Bool

	stop      chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup
}

// New builds an agent for c.Servers. It reaches none of them yet.
func New(c Config) (*Agent, error) {
	if len(c.Servers) == 0 {
		return nil, errors.New("agent: no servers")
	}
	a := &Agent{wait: c.DefaultWait, bound: c.FailoverBound, probeEvery: c.ProbeInterval, log: c.Log, stop: make(chan struct{})}
	if a.bound <= 0 {
		a.bound = DefaultFailoverBound
	}
	if a.probeEvery <= 0 {
		a.probeEvery = DefaultProbeInterval
	}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	for _, s := range c.Servers {
		a.servers = append(a.servers, strings.TrimSuffix(s, "/"))
	}
	a.hc = &http.Client{
		Transport: newTransport(len(a.servers)),
		// A redirect is a server's answer for the app to see (none of the
		// API's routes redirect).
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	a.metrics = newMetrics(c.Registerer)
	return a, nil
}

// newTransport is the agent's keep-alive pool: connections to the servers
// are kept idle for reuse, so a call through the agent does not pay a
// TCP (or TLS) handshake. Long polls each hold a connection while they
// wait; the pool keeps up to 64 idle ones per server for the next calls.
func newTransport(servers int) *http.Transport {
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 2 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:          64 * servers,
		MaxIdleConnsPerHost:   64,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   5 * time.Second,
		ExpectContinueTimeout: time.Second,
		ForceAttemptHTTP2:     false, // one connection per waiting call: a dead server cuts only its own
	}
}

// Start runs the readiness probe until Close.
func (a *Agent) Start() {
	a.wg.Go(a.probeLoop)
}

// Close stops the probe, waits for it and drops the idle connections.
// Calls in flight end with their callers.
func (a *Agent) Close() {
	a.closeOnce.Do(func() { close(a.stop) })
	a.wg.Wait()
	a.hc.CloseIdleConnections()
}

// Ready reports whether, at the last probe, some server reported a leader
// (its /readyz answered 200: it knows a leader and has caught up).
func (a *Agent) Ready() bool { return a.ready.Load() }

// Servers returns the servers' base URLs.
func (a *Agent) Servers() []string { return a.servers }

func (a *Agent) probeLoop() {
	t := time.NewTicker(a.probeEvery)
	defer t.Stop()
	for {
		a.probe()
		select {
		case <-a.stop:
			return
		case <-t.C:
		}
	}
}

// probe asks the servers, starting with the current one, for /readyz
// until one says ready. When the current one is not, the ready one
// becomes current: the next calls go where a leader is known.
func (a *Agent) probe() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-a.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	start := int(a.current.Load())
	for i := range a.servers {
		idx := (start + i) % len(a.servers)
		if a.probeOne(ctx, idx) {
			if idx != start {
				a.current.CompareAndSwap(int32(start), int32(idx))
			}
			if !a.ready.Swap(true) {
				a.log.Info("agent ready: a server reports a leader", "server", a.servers[idx])
			}
			return
		}
	}
	if a.ready.Swap(false) {
		a.log.Warn("agent not ready: no server reports a leader", "servers", len(a.servers))
	}
}

func (a *Agent) probeOne(ctx context.Context, idx int) bool {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.servers[idx]+"/readyz", nil)
	if err != nil {
		return false
	}
	resp, err := a.hc.Do(req)
	if err != nil {
		return false
	}
	drain(resp)
	return resp.StatusCode == http.StatusOK
}

// newRequestID is the request_id the agent gives an acquire that has none.
func newRequestID() string {
	var b [16]byte
	rand.Read(b[:])
	return "agent-" + hex.EncodeToString(b[:])
}

// notSent reports transport errors that prove the server never processed
// the request: the connection could not be made, or a pooled connection
// turned out closed before a byte of an answer (net/http's unexported
// errServerClosedIdle). The same rule as the Go client's.
func notSent(err error) bool {
	var op *net.OpError
	return (errors.As(err, &op) && op.Op == "dial") || errors.Is(err, syscall.ECONNREFUSED) ||
		strings.Contains(err.Error(), "server closed idle connection")
}
