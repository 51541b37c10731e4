// Package metrics exports mutexd's Prometheus metrics on a private registry:
// the lock engine's transitions (as an engine.Observer), its live counts
// (read at scrape time), HTTP traffic per route template, build info and the
// Go runtime and process collectors.
//
// Keys are unbounded user data and never become labels; the namespace label
// is the part of a key before the separator, capped at a fixed number of
// distinct values.
package metrics

import (
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/mutexd/mutexd/internal/engine"
)

// Label values for keys without a namespace and for namespaces past the cap.
const (
	NoNamespace    = "_none"
	OtherNamespace = "_other"
)

// DurationBuckets resolve sub-millisecond hand-offs and multi-minute waits.
var DurationBuckets = []float64{
	0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
	0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600,
}

// Options configure the metrics.
type Options struct {
	// NamespaceSeparator ends a key's namespace (":" in "user:42").
	NamespaceSeparator string
	// MaxNamespaces caps the distinct namespace label values.
	MaxNamespaces int
	// Version is reported by mutexd_build_info.
	Version string
}

// Source is what the metrics read from the engine at scrape time.
type Source interface {
	Stats() engine.Stats
	EachOldestWaiter(fn func(key string, since time.Time))
}

// Metrics is the metrics of one daemon. It implements engine.Observer.
type Metrics struct {
	reg     *prometheus.Registry
	version string
	sep     string
	maxNS   int32

	queueDepth *prometheus.GaugeVec
	locksHeld  *prometheus.GaugeVec
	wait       *prometheus.HistogramVec
	hold       *prometheus.HistogramVec
	httpReqs   *prometheus.CounterVec
	httpDur    *prometheus.HistogramVec

	namespaces sync.Map     // namespace label -> *nsMetrics
	nsCount    atomic.Int32 // entries in namespaces, besides _other
	nsMu       sync.Mutex   // serialises adding a namespace
}

var _ engine.Observer = (*Metrics)(nil)

// nsMetrics are one namespace's children, resolved once.
type nsMetrics struct {
	name       string
	queueDepth prometheus.Gauge
	locksHeld  prometheus.Gauge
	wait       [engine.EventCancelled + 1]prometheus.Observer // by event type
	hold       [engine.OutcomeForced + 1]prometheus.Observer  // by outcome
}

// New builds the metrics on a fresh private registry.
func New(o Options) *Metrics {
	m := &Metrics{
		reg:     prometheus.NewRegistry(),
		version: o.Version,
		sep:     o.NamespaceSeparator,
		maxNS:   int32(o.MaxNamespaces),
		queueDepth: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "mutexd_queue_depth", Help: "Waiters queued now.",
		}, []string{"namespace"}),
		locksHeld: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "mutexd_locks_held", Help: "Leases live now.",
		}, []string{"namespace"}),
		wait: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "mutexd_wait_duration_seconds",
			Help:    "Time from an acquire's arrival to the end of its wait, by outcome (acquired, timeout, aborted, cancelled); immediate grants count as 0.",
			Buckets: DurationBuckets,
		}, []string{"namespace", "outcome"}),
		hold: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "mutexd_hold_duration_seconds",
			Help:    "Time from a grant to the lease's end, by outcome (released, failed, expired, forced).",
			Buckets: DurationBuckets,
		}, []string{"namespace", "outcome"}),
		httpReqs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mutexd_http_requests_total", Help: "HTTP requests by route template, method and status code.",
		}, []string{"route", "method", "code"}),
		httpDur: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "mutexd_http_request_duration_seconds",
			Help:    "HTTP request latency by route template and method, long-poll waits included.",
			Buckets: DurationBuckets,
		}, []string{"route", "method"}),
	}
	buildInfo := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "mutexd_build_info", Help: "Always 1; labels carry the build's version.",
	}, []string{"version", "goversion"})
	buildInfo.WithLabelValues(o.Version, runtime.Version()).Set(1)
	m.reg.MustRegister(m.queueDepth, m.locksHeld, m.wait, m.hold, m.httpReqs, m.httpDur, buildInfo,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	m.namespaces.Store(OtherNamespace, m.newNS(OtherNamespace))
	return m
}

// Version returns the version reported by mutexd_build_info.
func (m *Metrics) Version() string { return m.version }

// Registry returns the private registry, for tests and extra collectors.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the registry in the Prometheus exposition formats.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// EventSource is what the metrics read from the event hub at scrape time.
type EventSource interface {
	Subscribers() int
	Overflows() uint64
}

// WatchEvents exports the /v1/events streams: how many are open, and how
// many were cut off because their reader fell behind.
func (m *Metrics) WatchEvents(src EventSource) {
	m.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "mutexd_event_subscribers", Help: "Open /v1/events streams (the console holds one per tab).",
		}, func() float64 { return float64(src.Subscribers()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "mutexd_event_overflows_total", Help: "Event streams cut off with an overflow event because their reader fell behind.",
		}, func() float64 { return float64(src.Overflows()) }),
	)
}

// Watch registers the gauges read from src at scrape time: mutexd_keys and
// mutexd_oldest_waiter_age_seconds.
func (m *Metrics) Watch(src Source) {
	m.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "mutexd_keys", Help: "Keys with a holder or waiters.",
		}, func() float64 { return float64(src.Stats().Keys) }),
		&oldestCollector{m: m, src: src, desc: prometheus.NewDesc("mutexd_oldest_waiter_age_seconds",
			"How long the longest-waiting waiter of the namespace has waited; 0 when none waits.",
			[]string{"namespace"}, nil)},
	)
}

// Conns is what the connection metrics read at scrape time: the daemon's
// connection cap (limits.max_connections).
type Conns interface {
	// Open is the number of client connections open now.
	Open() int
	// Refused is the number of connections refused at the cap so far.
	Refused() int64
}

// WatchConnections registers mutexd_connections_open and
// mutexd_connections_refused_total, read from src at scrape time.
func (m *Metrics) WatchConnections(src Conns) {
	m.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "mutexd_connections_open", Help: "Client connections open now (limits.max_connections caps them).",
		}, func() float64 { return float64(src.Open()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "mutexd_connections_refused_total", Help: "Connections refused because limits.max_connections were open.",
		}, func() float64 { return float64(src.Refused()) }),
	)
}

// Namespace returns the namespace label of key.
func (m *Metrics) Namespace(key string) string { return m.ns(key).name }

func (m *Metrics) ns(key string) *nsMetrics {
	name := NoNamespace
	if i := strings.Index(key, m.sep); i > 0 {
		name = key[:i]
	}
	if v, ok := m.namespaces.Load(name); ok {
		return v.(*nsMetrics)
	}
	other, _ := m.namespaces.Load(OtherNamespace)
	if m.nsCount.Load() >= m.maxNS {
		return other.(*nsMetrics)
	}
	m.nsMu.Lock()
	defer m.nsMu.Unlock()
	if v, ok := m.namespaces.Load(name); ok {
		return v.(*nsMetrics)
	}
	if m.nsCount.Load() >= m.maxNS {
		return other.(*nsMetrics)
	}
	n := m.newNS(strings.Clone(name)) // do not pin the whole key in memory
	m.namespaces.Store(n.name, n)
	m.nsCount.Add(1)
	return n
}

func (m *Metrics) newNS(name string) *nsMetrics {
	n := &nsMetrics{
		name:       name,
		queueDepth: m.queueDepth.WithLabelValues(name),
		locksHeld:  m.locksHeld.WithLabelValues(name),
	}
	n.wait[engine.EventGranted] = m.wait.WithLabelValues(name, "acquired")
	n.wait[engine.EventTimeout] = m.wait.WithLabelValues(name, "timeout")
	n.wait[engine.EventAborted] = m.wait.WithLabelValues(name, "aborted")
	n.wait[engine.EventCancelled] = m.wait.WithLabelValues(name, "cancelled")
	for o := engine.OutcomeReleased; o <= engine.OutcomeForced; o++ {
		n.hold[o] = m.hold.WithLabelValues(name, o.String())
	}
	return n
}

// OnEvent updates the metrics for one engine transition.
func (m *Metrics) OnEvent(ev engine.Event) {
	if ev.Type == engine.EventRenewed {
		return // changes no count
	}
	n := m.ns(ev.Key)
	switch ev.Type {
	case engine.EventQueued:
		n.queueDepth.Inc()
	case engine.EventGranted:
		n.locksHeld.Inc()
		if ev.FromQueue {
			n.queueDepth.Dec()
		}
		n.wait[ev.Type].Observe(ev.Waited.Seconds())
	case engine.EventTimeout, engine.EventAborted, engine.EventCancelled:
		n.queueDepth.Dec()
		n.wait[ev.Type].Observe(ev.Waited.Seconds())
	case engine.EventEnded:
		n.locksHeld.Dec()
		n.hold[ev.Outcome].Observe(ev.Held.Seconds())
	}
}

// RouteObserver records the requests of one route and method.
type RouteObserver struct {
	m           *Metrics
	route, verb string
	dur         prometheus.Observer
	byCode      map[int]prometheus.Counter // read-only after creation
}

// commonCodes get their counters resolved up front: no lookup per request.
var commonCodes = []int{200, 400, 401, 403, 404, 405, 409, 413, 423, 429, 500, 503}

// Route returns the observer of route (a template such as
// /v1/locks/:key/acquire, never a raw path) and method.
func (m *Metrics) Route(route, method string) *RouteObserver {
	r := &RouteObserver{m: m, route: route, verb: method, dur: m.httpDur.WithLabelValues(route, method), byCode: map[int]prometheus.Counter{}}
	for _, c := range commonCodes {
		r.byCode[c] = m.httpReqs.WithLabelValues(route, method, strconv.Itoa(c))
	}
	return r
}

// Observe records one request.
func (r *RouteObserver) Observe(code int, d time.Duration) {
	c, ok := r.byCode[code]
	if !ok {
		c = r.m.httpReqs.WithLabelValues(r.route, r.verb, strconv.Itoa(code))
	}
	c.Inc()
	r.dur.Observe(d.Seconds())
}

// oldestCollector computes mutexd_oldest_waiter_age_seconds at scrape time
// from the engine's queues.
type oldestCollector struct {
	m    *Metrics
	src  Source
	desc *prometheus.Desc
}

func (c *oldestCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *oldestCollector) Collect(ch chan<- prometheus.Metric) {
	now := time.Now()
	ages := map[string]float64{}
	c.m.namespaces.Range(func(k, _ any) bool {
		ages[k.(string)] = 0
		return true
	})
	c.src.EachOldestWaiter(func(key string, since time.Time) {
		ns := c.m.ns(key).name
		if age := now.Sub(since).Seconds(); age > ages[ns] {
			ages[ns] = age
		}
	})
	for ns, age := range ages {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, age, ns)
	}
}
