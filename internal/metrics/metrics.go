// Package metrics exports mutexd's Prometheus metrics on a private registry:
// the lock engine's transitions (as an engine.Observer), its live counts
// (read at scrape time), HTTP traffic per route template, build info and the
// Go runtime and process collectors.
//
// Keys are unbounded user data and never become labels; the lock_namespace
// label is the part of a key before the separator: either one of a configured
// allow-list, or one of a fixed number of slots that namespaces take as they
// appear and give back once they have been idle for a while (see Sweep).
package metrics

import (
	"hash/maphash"
	"math"
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

// NamespaceLabel is the label that carries a key's namespace. It is not
// "namespace": Kubernetes service discovery and the Prometheus Operator
// attach that target label (the pod's Kubernetes namespace), which would
// take the name over and leave ours as exported_namespace.
const NamespaceLabel = "lock_namespace"

// DurationBuckets are the upper bounds of the wait and hold histograms.
// Every lock namespace pays for them eight times (four outcomes, two
// histograms), so they are only what the dashboard and the alerts need:
// under a millisecond (a hand-off), the steps the p50/p95/p99 panels read,
// 5s (the MutexdSlowWaits threshold, with 1 and 10 around it), the
// default lock.max_wait (600) and an hour for long holds.
var DurationBuckets = []float64{0.001, 0.005, 0.025, 0.1, 0.5, 1, 5, 10, 60, 600, 3600}

// HTTPBuckets are the upper bounds of the request latency histogram, one
// per route and method: sub-millisecond calls up to long polls at the
// default lock.max_wait.
var HTTPBuckets = []float64{0.0005, 0.001, 0.005, 0.025, 0.1, 0.5, 1, 5, 60, 600}

// Options configure the metrics.
type Options struct {
	// NamespaceSeparator ends a key's namespace (":" in "user:42").
	NamespaceSeparator string
	// MaxNamespaces caps the distinct namespace label values (NoNamespace
	// included, OtherNamespace not) when Namespaces is empty.
	MaxNamespaces int
	// Namespaces, when not empty, are the only namespaces with a label of
	// their own (besides NoNamespace); every other one is OtherNamespace.
	// The labels then reveal no prefix a client made up, and no client can
	// take a slot from them.
	Namespaces []string
	// NamespaceIdle is how long a namespace must have had nothing held,
	// nothing queued and no transition before Sweep gives its slot back;
	// 0 keeps slots forever. Unused with Namespaces.
	NamespaceIdle time.Duration
	// Now is the clock Handler passes to Sweep; nil is time.Now.
	Now func() time.Time
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
	allow   map[string]bool // Options.Namespaces; nil when any namespace may take a slot
	idle    time.Duration
	now     func() time.Time
	seed    maphash.Seed

	wait     *prometheus.HistogramVec
	hold     *prometheus.HistogramVec
	httpReqs *prometheus.CounterVec
	httpDur  *prometheus.HistogramVec

	namespaces sync.Map     // namespace label -> *nsMetrics, _other included
	other      *nsMetrics   // the _other namespace, never given up
	nsCount    atomic.Int32 // entries in namespaces, besides _other
	nsMu       sync.Mutex   // serialises adding and retiring namespaces

	// overflow counts, by a hash of the namespace, the waiters and leases
	// counted in _other. A namespace gets a slot only while its bucket is
	// 0, so that a key never ends in a namespace other than the one it
	// began in: a lease counted in _other is also ended in _other.
	overflow [overflowBuckets]atomic.Int64
}

const overflowBuckets = 1024

var _ engine.Observer = (*Metrics)(nil)

// Units of nsMetrics.live.
const (
	liveQueued int64 = 1
	liveHeld   int64 = 1 << 32
	// liveDead marks a namespace being created or given up: an arrival
	// that adds to it sees a negative sum and looks the namespace up again.
	liveDead int64 = math.MinInt64
)

// nsMetrics are one namespace's counts and children, resolved once.
type nsMetrics struct {
	name string
	// live is the namespace's leases held (times liveHeld) plus its waiters
	// queued: one word, so that a grant from the queue moves both with one
	// add and Sweep can give an idle namespace up with one compare-and-swap
	// from 0. Negative (liveDead added) when the namespace is not in use.
	live    atomic.Int64
	touched atomic.Bool                                    // a transition happened since the last Sweep
	wait    [engine.EventCancelled + 1]prometheus.Observer // by event type
	hold    [engine.OutcomeForced + 1]prometheus.Observer  // by outcome

	lastSeen time.Time // guarded by Metrics.nsMu: when Sweep last saw it touched
}

func (n *nsMetrics) touch() {
	if !n.touched.Load() { // a read, not a write, on the common path
		n.touched.Store(true)
	}
}

// New builds the metrics on a fresh private registry.
func New(o Options) *Metrics {
	m := &Metrics{
		reg:     prometheus.NewRegistry(),
		version: o.Version,
		sep:     o.NamespaceSeparator,
		maxNS:   int32(o.MaxNamespaces),
		idle:    o.NamespaceIdle,
		now:     o.Now,
		seed:    maphash.MakeSeed(),
		wait: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "mutexd_wait_duration_seconds",
			Help:    "Time from an acquire's arrival to the end of its wait, by outcome (acquired, timeout, aborted, cancelled); immediate grants count as 0.",
			Buckets: DurationBuckets,
		}, []string{NamespaceLabel, "outcome"}),
		hold: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "mutexd_hold_duration_seconds",
			Help:    "Time from a grant to the lease's end, by outcome (released, failed, expired, forced).",
			Buckets: DurationBuckets,
		}, []string{NamespaceLabel, "outcome"}),
		httpReqs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mutexd_http_requests_total", Help: "HTTP requests by route template, method and status code.",
		}, []string{"route", "method", "code"}),
		httpDur: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "mutexd_http_request_duration_seconds",
			Help:    "HTTP request latency by route template and method, long-poll waits included.",
			Buckets: HTTPBuckets,
		}, []string{"route", "method"}),
	}
	buildInfo := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "mutexd_build_info", Help: "Always 1; labels carry the build's version.",
	}, []string{"version", "goversion"})
	buildInfo.WithLabelValues(o.Version, runtime.Version()).Set(1)
	if m.now == nil {
		m.now = time.Now
	}
	m.reg.MustRegister(liveCollector{m}, m.wait, m.hold, m.httpReqs, m.httpDur, buildInfo,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	m.other = m.newNS(OtherNamespace)
	m.namespaces.Store(OtherNamespace, m.other)
	if len(o.Namespaces) > 0 {
		// Every allowed label exists from the start, and nothing else ever
		// takes a slot: the cap is what is there.
		m.allow = map[string]bool{NoNamespace: true}
		for _, name := range o.Namespaces {
			m.allow[name] = true
		}
		m.maxNS = int32(len(m.allow))
		for name := range m.allow {
			m.add(name)
		}
	}
	return m
}

// Version returns the version reported by mutexd_build_info.
func (m *Metrics) Version() string { return m.version }

// Registry returns the private registry, for tests and extra collectors.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the registry in the Prometheus exposition formats. Each
// scrape first gives idle namespaces' slots back (Sweep).
func (m *Metrics) Handler() http.Handler {
	h := promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m.Sweep(m.now())
		h.ServeHTTP(w, r)
	})
}

// Sources are what the metrics read at scrape time; Watch registers them
// all at once. A nil field exports nothing for its part.
type Sources struct {
	// Engine gives mutexd_keys and mutexd_oldest_waiter_age_seconds.
	Engine Source
	// Events gives mutexd_event_subscribers and mutexd_event_overflows_total.
	Events EventSource
	// Conns gives mutexd_connections_open and
	// mutexd_connections_refused_total.
	Conns Conns
}

// EventSource is what the metrics read from the event hub.
type EventSource interface {
	Subscribers() int
	Overflows() uint64
}

// Conns is what the connection metrics read: the daemon's connection cap
// (limits.max_connections).
type Conns interface {
	// Open is the number of client connections open now.
	Open() int
	// Refused is the number of connections refused at the cap so far.
	Refused() int64
}

// Watch registers the metrics read from src at scrape time. It is separate
// from New because of a cycle: the engine reports its transitions to the
// metrics (so they exist first) and the metrics read the engine's queues.
// Call it once, when every source exists.
func (m *Metrics) Watch(src Sources) {
	if e := src.Engine; e != nil {
		m.reg.MustRegister(
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "mutexd_keys", Help: "Keys with a holder or waiters.",
			}, func() float64 { return float64(e.Stats().Keys) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "mutexd_paused_keys", Help: "Keys an operator paused (no grants until resumed).",
			}, func() float64 { return float64(e.Stats().Paused) }),
			&oldestCollector{m: m, src: e, desc: prometheus.NewDesc("mutexd_oldest_waiter_age_seconds",
				"How long the longest-waiting waiter of the namespace has waited; 0 when none waits.",
				[]string{NamespaceLabel}, nil)},
		)
	}
	if ev := src.Events; ev != nil {
		m.reg.MustRegister(
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "mutexd_event_subscribers", Help: "Open /v1/events streams (the console holds one per tab).",
			}, func() float64 { return float64(ev.Subscribers()) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{
				Name: "mutexd_event_overflows_total", Help: "Event streams cut off with an overflow event because their reader fell behind.",
			}, func() float64 { return float64(ev.Overflows()) }),
		)
	}
	if c := src.Conns; c != nil {
		m.reg.MustRegister(
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "mutexd_connections_open", Help: "Client connections open now (limits.max_connections caps them).",
			}, func() float64 { return float64(c.Open()) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{
				Name: "mutexd_connections_refused_total", Help: "Connections refused because limits.max_connections were open.",
			}, func() float64 { return float64(c.Refused()) }),
		)
	}
}

// Namespace returns the namespace label of key, taking a free slot for
// its namespace if it has none.
func (m *Metrics) Namespace(key string) string { return m.ns(key).name }

// nsName is the namespace part of key: up to the separator, or NoNamespace.
// It allocates nothing.
func (m *Metrics) nsName(key string) string {
	if i := strings.Index(key, m.sep); i > 0 {
		return key[:i]
	}
	return NoNamespace
}

// ns returns the namespace key is counted in now, taking a free slot for
// it if there is one: for labels of things that are not counted in live.
func (m *Metrics) ns(key string) *nsMetrics {
	name := m.nsName(key)
	if v, ok := m.namespaces.Load(name); ok {
		return v.(*nsMetrics)
	}
	if n := m.add(name); n != nil {
		return n
	}
	return m.other
}

// add gives name a slot if it has none, a slot is free, it is allowed and
// none of its keys is counted in _other. It returns the namespace, or nil
// when name stays in _other.
func (m *Metrics) add(name string) *nsMetrics {
	if m.nsCount.Load() >= m.maxNS {
		return nil // the common case once the slots are taken: no lock
	}
	m.nsMu.Lock()
	defer m.nsMu.Unlock()
	if v, ok := m.namespaces.Load(name); ok {
		return v.(*nsMetrics)
	}
	if m.nsCount.Load() >= m.maxNS || m.allow != nil && !m.allow[name] {
		return nil
	}
	n := m.newNS(strings.Clone(name)) // do not pin the whole key in memory
	// Published dead, then checked: an arrival that counted itself in
	// _other either sees n (and counts itself again here) or is seen in
	// its bucket (and n is withdrawn).
	n.live.Store(liveDead)
	m.namespaces.Store(n.name, n)
	if m.overflow[m.bucket(name)].Load() != 0 {
		m.namespaces.Delete(n.name)
		m.dropChildren(n.name)
		return nil
	}
	n.lastSeen = m.now()
	n.live.Store(0)
	m.nsCount.Add(1)
	return n
}

func (m *Metrics) bucket(name string) uint64 {
	return maphash.String(m.seed, name) % overflowBuckets
}

func (m *Metrics) newNS(name string) *nsMetrics {
	n := &nsMetrics{name: name}
	n.wait[engine.EventGranted] = m.wait.WithLabelValues(name, "acquired")
	n.wait[engine.EventTimeout] = m.wait.WithLabelValues(name, "timeout")
	n.wait[engine.EventAborted] = m.wait.WithLabelValues(name, "aborted")
	n.wait[engine.EventCancelled] = m.wait.WithLabelValues(name, "cancelled")
	for o := engine.OutcomeReleased; o <= engine.OutcomeForced; o++ {
		n.hold[o] = m.hold.WithLabelValues(name, o.String())
	}
	return n
}

// dropChildren removes a namespace's series from the vectors.
func (m *Metrics) dropChildren(name string) {
	for _, o := range []string{"acquired", "timeout", "aborted", "cancelled"} {
		m.wait.DeleteLabelValues(name, o)
	}
	for o := engine.OutcomeReleased; o <= engine.OutcomeForced; o++ {
		m.hold.DeleteLabelValues(name, o.String())
	}
}

// Sweep gives back the slot of every namespace that has had nothing held,
// nothing queued and no transition for Options.NamespaceIdle as of now:
// its series disappear from the exposition, and the next namespace to
// appear may take the slot. A namespace given up and seen again starts its
// counters from 0, which rate() and increase() read as a reset. Handler
// calls it before each scrape; idleness is measured between calls, so a
// namespace goes after between NamespaceIdle and NamespaceIdle plus one
// scrape interval.
func (m *Metrics) Sweep(now time.Time) {
	if m.idle <= 0 || m.allow != nil {
		return
	}
	m.nsMu.Lock()
	defer m.nsMu.Unlock()
	m.namespaces.Range(func(_, v any) bool {
		n := v.(*nsMetrics)
		switch {
		case n == m.other:
		case n.touched.Swap(false):
			n.lastSeen = now
		case now.Sub(n.lastSeen) >= m.idle && n.live.CompareAndSwap(0, liveDead):
			// From here an arrival sees n dead and, once nsMu is free,
			// finds it gone.
			m.namespaces.Delete(n.name)
			m.nsCount.Add(-1)
			m.dropChildren(n.name)
		}
		return true
	})
}

// arrive counts a waiter queued (d = liveQueued) or a lease granted at
// once (d = liveHeld) for key, and returns the namespace it is counted in.
func (m *Metrics) arrive(key string, d int64) *nsMetrics {
	name := m.nsName(key)
	for {
		v, ok := m.namespaces.Load(name)
		if !ok {
			if m.add(name) != nil {
				continue
			}
			b := &m.overflow[m.bucket(name)]
			b.Add(1)
			if _, ok := m.namespaces.Load(name); ok {
				b.Add(-1) // name got a slot meanwhile: count it there
				continue
			}
			m.other.touch()
			m.other.live.Add(d)
			return m.other
		}
		n := v.(*nsMetrics)
		n.touch()
		if live := n.live.Add(d); live >= 0 || live > liveDead/2 {
			// Negative but far from liveDead: counts out of step with
			// the engine, a bug that must cost a wrong gauge, never a
			// lock holder spinning here.
			return n
		}
		// Being created or given up: wait for that to finish, look again.
		m.nsMu.Lock()
		m.nsMu.Unlock() // empty: only a barrier
	}
}

// Recount takes the live counts (mutexd_locks_held, mutexd_queue_depth)
// again from each, which calls its argument with every key's leases and
// waiters (engine.EachCount): after an engine's state was replaced by a
// restore, which reports no events, so that the leases and waiters it
// brought are counted and those it dropped are not. No transition may be
// reported meanwhile.
func (m *Metrics) Recount(each func(fn func(key string, leases, waiters int))) {
	m.nsMu.Lock()
	m.namespaces.Range(func(_, v any) bool {
		v.(*nsMetrics).live.Store(0) // under nsMu, none is being created or given up
		return true
	})
	for i := range m.overflow {
		m.overflow[i].Store(0)
	}
	m.nsMu.Unlock()
	each(func(key string, leases, waiters int) {
		for range leases {
			m.arrive(key, liveHeld)
		}
		for range waiters {
			m.arrive(key, liveQueued)
		}
	})
}

// present returns the namespace an earlier arrival of key was counted in,
// and whether that is _other.
func (m *Metrics) present(key string) (n *nsMetrics, other bool) {
	if v, ok := m.namespaces.Load(m.nsName(key)); ok {
		// A live namespace holds this key's count, so it cannot be given
		// up; one not live yet (being created) cannot hold it.
		if n := v.(*nsMetrics); n.live.Load() >= 0 {
			return n, false
		}
	}
	return m.other, true
}

// depart uncounts a waiter (d = liveQueued) or a lease (d = liveHeld) of
// key from n, where present found it.
func (m *Metrics) depart(key string, n *nsMetrics, other bool, d int64) {
	n.touch()
	if other {
		m.overflow[m.bucket(m.nsName(key))].Add(-1)
	}
	n.live.Add(-d)
}

// OnEvent updates the metrics for one engine transition. A transition's
// observation is made before its count leaves the namespace, so Sweep
// never gives the namespace up under it.
func (m *Metrics) OnEvent(ev engine.Event) {
	switch ev.Type {
	case engine.EventQueued:
		m.arrive(ev.Key, liveQueued)
	case engine.EventGranted:
		var n *nsMetrics
		if ev.FromQueue {
			n, _ = m.present(ev.Key)
			n.touch()
			n.live.Add(liveHeld - liveQueued)
		} else {
			n = m.arrive(ev.Key, liveHeld)
		}
		n.wait[ev.Type].Observe(ev.Waited.Seconds())
	case engine.EventTimeout, engine.EventAborted, engine.EventCancelled:
		n, other := m.present(ev.Key)
		n.wait[ev.Type].Observe(ev.Waited.Seconds())
		m.depart(ev.Key, n, other, liveQueued)
	case engine.EventDrained:
		// An operator sent the waiter away: for its wait, a give-up like
		// a cancelled one (an outcome label of its own would add a series
		// per namespace for a rare act).
		n, other := m.present(ev.Key)
		n.wait[engine.EventCancelled].Observe(ev.Waited.Seconds())
		m.depart(ev.Key, n, other, liveQueued)
	case engine.EventEnded:
		n, other := m.present(ev.Key)
		n.hold[ev.Outcome].Observe(ev.Held.Seconds())
		m.depart(ev.Key, n, other, liveHeld)
	}
}

// liveCollector exports mutexd_queue_depth and mutexd_locks_held from the
// namespaces' live counts at scrape time.
type liveCollector struct{ m *Metrics }

var (
	queueDepthDesc = prometheus.NewDesc("mutexd_queue_depth", "Waiters queued now.", []string{NamespaceLabel}, nil)
	locksHeldDesc  = prometheus.NewDesc("mutexd_locks_held", "Leases live now.", []string{NamespaceLabel}, nil)
)

func (c liveCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- queueDepthDesc
	ch <- locksHeldDesc
}

func (c liveCollector) Collect(ch chan<- prometheus.Metric) {
	c.m.namespaces.Range(func(_, v any) bool {
		n := v.(*nsMetrics)
		live := n.live.Load()
		if live < 0 {
			return true // being created or given up
		}
		ch <- prometheus.MustNewConstMetric(queueDepthDesc, prometheus.GaugeValue, float64(live%liveHeld), n.name)
		ch <- prometheus.MustNewConstMetric(locksHeldDesc, prometheus.GaugeValue, float64(live/liveHeld), n.name)
		return true
	})
}

// RouteObserver records the requests of one route and method.
type RouteObserver struct {
	m           *Metrics
	route, verb string
	dur         prometheus.Observer
	byCode      map[int]prometheus.Counter // read-only after creation
}

// Route returns the observer of route (a template such as
// /v1/locks/:key/acquire, never a raw path) and method. The counters of
// codes, the statuses the route can answer, exist at 0 from the start, so
// that rate() and increase() see their first request; a code not among
// them is counted too, from its first request on.
func (m *Metrics) Route(route, method string, codes []int) *RouteObserver {
	r := &RouteObserver{m: m, route: route, verb: method, dur: m.httpDur.WithLabelValues(route, method), byCode: map[int]prometheus.Counter{}}
	for _, c := range codes {
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
