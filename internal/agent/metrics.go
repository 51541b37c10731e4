package agent

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mutexd/mutexd/internal/metrics"
)

// agentMetrics are what the agent adds to the daemon's metrics: the API
// route metrics already say what the app saw.
type agentMetrics struct {
	forward   prometheus.Histogram
	failovers prometheus.Counter
}

// newMetrics registers the agent's metrics on reg (the daemon's private
// registry); a nil reg registers none.
func newMetrics(reg prometheus.Registerer) *agentMetrics {
	m := &agentMetrics{
		forward: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "mutexd_agent_forward_seconds",
			Help:    "Time from sending a call to a server until its answer began, per attempt; long-poll acquires (wait > 0) are left out, since they include their wait.",
			Buckets: metrics.HTTPBuckets,
		}),
		failovers: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mutexd_agent_failovers_total",
			Help: "Calls and streams the agent sent again to another server after one could not be reached, was cut, or refused with 503.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.forward, m.failovers)
	}
	return m
}

func (m *agentMetrics) observe(d time.Duration) { m.forward.Observe(d.Seconds()) }
