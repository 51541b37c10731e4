package metrics_test

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/mutexd/mutexd/internal/engine"
	"github.com/mutexd/mutexd/internal/metrics"
)

type fakeSource struct {
	stats  engine.Stats
	oldest map[string]time.Time
}

func (f fakeSource) Stats() engine.Stats { return f.stats }
func (f fakeSource) EachOldestWaiter(fn func(string, time.Time)) {
	for k, t := range f.oldest {
		fn(k, t)
	}
}

func newMetrics(maxNS int) *metrics.Metrics {
	return metrics.New(metrics.Options{NamespaceSeparator: ":", MaxNamespaces: maxNS, Version: "v-test"})
}

func TestNamespaces(t *testing.T) {
	m := newMetrics(3) // user, _none and job; then _other
	tests := []struct{ key, want string }{
		{"user:1", "user"},
		{"user:2:x", "user"},
		{"plain", metrics.NoNamespace},
		{":leading", metrics.NoNamespace},
		{"job:1", "job"},
		{"third:1", metrics.OtherNamespace}, // past the cap
		{"user:3", "user"},
	}
	for _, tt := range tests {
		if got := m.Namespace(tt.key); got != tt.want {
			t.Errorf("Namespace(%q) = %q, want %q", tt.key, got, tt.want)
		}
	}
}

func TestEventsDriveGaugesAndHistograms(t *testing.T) {
	m := newMetrics(10)
	for _, ev := range []engine.Event{
		{Type: engine.EventGranted, Key: "user:1"},
		{Type: engine.EventQueued, Key: "user:1"},
		{Type: engine.EventQueued, Key: "user:1"},
		{Type: engine.EventTimeout, Key: "user:1", Waited: time.Second},
		{Type: engine.EventEnded, Key: "user:1", Outcome: engine.OutcomeExpired, Held: 30 * time.Second},
		{Type: engine.EventGranted, Key: "user:1", FromQueue: true, Waited: 2 * time.Second},
	} {
		m.OnEvent(ev)
	}
	m.Watch(metrics.Sources{Engine: fakeSource{stats: engine.Stats{Keys: 7}, oldest: map[string]time.Time{"user:9": time.Now().Add(-time.Minute)}}})
	want := `
# HELP mutexd_keys Keys with a holder or waiters.
# TYPE mutexd_keys gauge
mutexd_keys 7
# HELP mutexd_locks_held Leases live now.
# TYPE mutexd_locks_held gauge
mutexd_locks_held{lock_namespace="_other"} 0
mutexd_locks_held{lock_namespace="user"} 1
# HELP mutexd_queue_depth Waiters queued now.
# TYPE mutexd_queue_depth gauge
mutexd_queue_depth{lock_namespace="_other"} 0
mutexd_queue_depth{lock_namespace="user"} 0
`
	if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(want), "mutexd_keys", "mutexd_locks_held", "mutexd_queue_depth"); err != nil {
		t.Fatal(err)
	}
	checks := map[string]float64{
		`mutexd_wait_duration_seconds_count{lock_namespace="user",outcome="acquired"}`: 2,
		`mutexd_wait_duration_seconds_sum{lock_namespace="user",outcome="acquired"}`:   2,
		`mutexd_wait_duration_seconds_count{lock_namespace="user",outcome="timeout"}`:  1,
		`mutexd_hold_duration_seconds_sum{lock_namespace="user",outcome="expired"}`:    30,
	}
	text := gather(t, m)
	for series, v := range checks {
		if !strings.Contains(text, series+" "+trim(v)) {
			t.Errorf("exposition lacks %s %v", series, v)
		}
	}
	if !strings.Contains(text, `mutexd_oldest_waiter_age_seconds{lock_namespace="user"} 6`) {
		t.Errorf("oldest waiter age not about 60s:\n%s", grep(text, "oldest"))
	}
	if !strings.Contains(text, `mutexd_build_info{goversion="go`) || !strings.Contains(text, `version="v-test"} 1`) {
		t.Error("build info missing")
	}
}

func TestRouteObserver(t *testing.T) {
	m := newMetrics(10)
	r := m.Route("/v1/locks/:key/acquire", "POST", []int{200, 423})
	r.Observe(200, time.Millisecond)
	r.Observe(200, time.Millisecond)
	r.Observe(418, time.Millisecond) // an uncommon code still counts
	text := gather(t, m)
	for _, want := range []string{
		`mutexd_http_requests_total{code="200",method="POST",route="/v1/locks/:key/acquire"} 2`,
		`mutexd_http_requests_total{code="418",method="POST",route="/v1/locks/:key/acquire"} 1`,
		`mutexd_http_request_duration_seconds_count{method="POST",route="/v1/locks/:key/acquire"} 3`,
		// A code the route can answer exists at 0 before it happens.
		`mutexd_http_requests_total{code="423",method="POST",route="/v1/locks/:key/acquire"} 0`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("exposition lacks %s", want)
		}
	}
	// A code the route cannot answer is not exported at all.
	if strings.Contains(text, `code="404"`) {
		t.Errorf("exposition has a 404 series the route was not given:\n%s", grep(text, "http_requests"))
	}
}

func TestLint(t *testing.T) {
	m := newMetrics(10)
	m.Watch(metrics.Sources{Engine: fakeSource{}})
	m.OnEvent(engine.Event{Type: engine.EventGranted, Key: "a:b"})
	problems, err := testutil.GatherAndLint(m.Registry())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		if strings.HasPrefix(p.Metric, "mutexd_") {
			t.Errorf("lint: %s: %s", p.Metric, p.Text)
		}
	}
}

// TestNoTargetLabels: no series carries a label that Prometheus' service
// discovery or the Prometheus Operator attach to every target (the key's
// namespace was once "namespace", which Kubernetes discovery took over).
func TestNoTargetLabels(t *testing.T) {
	m := newMetrics(10)
	m.Watch(metrics.Sources{Engine: fakeSource{oldest: map[string]time.Time{"a:1": time.Now()}}})
	m.OnEvent(engine.Event{Type: engine.EventGranted, Key: "a:b"})
	m.Route("/healthz", "GET", []int{200}).Observe(200, time.Millisecond)
	mfs, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	target := map[string]bool{"namespace": true, "job": true, "instance": true, "pod": true, "service": true, "container": true, "endpoint": true, "node": true}
	seen := false
	for _, mf := range mfs {
		for _, mt := range mf.GetMetric() {
			for _, l := range mt.GetLabel() {
				if target[l.GetName()] {
					t.Errorf("%s has the label %q, which a scrape's target labels take over", mf.GetName(), l.GetName())
				}
				seen = seen || l.GetName() == metrics.NamespaceLabel
			}
		}
	}
	if !seen {
		t.Errorf("no series has the label %q", metrics.NamespaceLabel)
	}
}

func gather(t *testing.T, m *metrics.Metrics) string {
	t.Helper()
	mfs, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, mf := range mfs {
		for _, mt := range mf.GetMetric() {
			labels := []string{}
			for _, l := range mt.GetLabel() {
				labels = append(labels, l.GetName()+`="`+l.GetValue()+`"`)
			}
			name := mf.GetName()
			lbl := ""
			if len(labels) > 0 {
				lbl = "{" + strings.Join(labels, ",") + "}"
			}
			switch {
			case mt.Gauge != nil:
				b.WriteString(name + lbl + " " + trim(mt.Gauge.GetValue()) + "\n")
			case mt.Counter != nil:
				b.WriteString(name + lbl + " " + trim(mt.Counter.GetValue()) + "\n")
			case mt.Histogram != nil:
				b.WriteString(name + "_count" + lbl + " " + trim(float64(mt.Histogram.GetSampleCount())) + "\n")
				b.WriteString(name + "_sum" + lbl + " " + trim(mt.Histogram.GetSampleSum()) + "\n")
			}
		}
	}
	return b.String()
}

func trim(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }

func grep(text, s string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, s) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

type fakeEvents struct{}

func (fakeEvents) Subscribers() int  { return 3 }
func (fakeEvents) Overflows() uint64 { return 2 }

func TestWatchEvents(t *testing.T) {
	m := newMetrics(10)
	m.Watch(metrics.Sources{Events: fakeEvents{}})
	want := `# HELP mutexd_event_overflows_total Event streams cut off with an overflow event because their reader fell behind.
# TYPE mutexd_event_overflows_total counter
mutexd_event_overflows_total 2
# HELP mutexd_event_subscribers Open /v1/events streams (the console holds one per tab).
# TYPE mutexd_event_subscribers gauge
mutexd_event_subscribers 3
`
	if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(want), "mutexd_event_subscribers", "mutexd_event_overflows_total"); err != nil {
		t.Fatal(err)
	}
	problems, err := testutil.GatherAndLint(m.Registry(), "mutexd_event_subscribers", "mutexd_event_overflows_total")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}

// TestDrainedWaitersLeaveTheQueue: a waiter an operator drained leaves the
// queue gauge (counted, for its wait, as cancelled); a superseded one is
// replaced in place, so the gauge does not move.
func TestDrainedWaitersLeaveTheQueue(t *testing.T) {
	m := newMetrics(10)
	for _, ev := range []engine.Event{
		{Type: engine.EventGranted, Key: "job:1"},
		{Type: engine.EventQueued, Key: "job:1"},
		{Type: engine.EventQueued, Key: "job:1"},
		{Type: engine.EventSuperseded, Key: "job:1", Position: 2},
		{Type: engine.EventPaused, Key: "job:1"},
		{Type: engine.EventDrained, Key: "job:1", Waited: time.Second, Reason: "deploy"},
		{Type: engine.EventDrained, Key: "job:1", Waited: time.Second, Reason: "deploy"},
		{Type: engine.EventResumed, Key: "job:1"},
		{Type: engine.EventDelayed, Key: "job:1"},
	} {
		m.OnEvent(ev)
	}
	want := `
# HELP mutexd_queue_depth Waiters queued now.
# TYPE mutexd_queue_depth gauge
mutexd_queue_depth{lock_namespace="_other"} 0
mutexd_queue_depth{lock_namespace="job"} 0
`
	if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(want), "mutexd_queue_depth"); err != nil {
		t.Fatal(err)
	}
	if n := testutil.CollectAndCount(m.Registry(), "mutexd_wait_duration_seconds"); n == 0 {
		t.Fatal("no wait histogram")
	}
	if got := histCount(t, m, "job", "cancelled"); got != 2 {
		t.Fatalf("cancelled waits %d, want the 2 drained", got)
	}
}

// TestPausedKeysGauge: mutexd_paused_keys reads the engine's count.
func TestPausedKeysGauge(t *testing.T) {
	m := newMetrics(10)
	m.Watch(metrics.Sources{Engine: fakeSource{stats: engine.Stats{Keys: 4, Paused: 3}}})
	want := `
# HELP mutexd_paused_keys Keys an operator paused (no grants until resumed).
# TYPE mutexd_paused_keys gauge
mutexd_paused_keys 3
`
	if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(want), "mutexd_paused_keys"); err != nil {
		t.Fatal(err)
	}
}

func histCount(t *testing.T, m *metrics.Metrics, ns, outcome string) uint64 {
	t.Helper()
	mfs, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "mutexd_wait_duration_seconds" {
			continue
		}
		for _, mt := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range mt.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["lock_namespace"] == ns && labels["outcome"] == outcome {
				return mt.GetHistogram().GetSampleCount()
			}
		}
	}
	return 0
}

// TestRecount: after an engine's state is replaced (a cluster replica
// restored from a snapshot, which reports no events), Recount makes the
// live gauges the new state's: what was counted before is gone, and
// later events of the restored leases and waiters count from there.
func TestRecount(t *testing.T) {
	m := newMetrics(10)
	for _, ev := range []engine.Event{
		{Type: engine.EventGranted, Key: "gone:1"},
		{Type: engine.EventQueued, Key: "gone:1"},
		{Type: engine.EventGranted, Key: "user:9"},
	} {
		m.OnEvent(ev)
	}
	restored := map[string][2]int{"user:1": {1, 2}, "user:2": {2, 0}, "plain": {0, 1}}
	m.Recount(func(fn func(string, int, int)) {
		for k, c := range restored {
			fn(k, c[0], c[1])
		}
	})
	gauges := func() string {
		text := gather(t, m)
		return grep(text, "mutexd_locks_held{") + "\n" + grep(text, "mutexd_queue_depth{")
	}
	want := strings.Join([]string{
		`mutexd_locks_held{lock_namespace="_none"} 0`,
		`mutexd_locks_held{lock_namespace="_other"} 0`,
		`mutexd_locks_held{lock_namespace="gone"} 0`,
		`mutexd_locks_held{lock_namespace="user"} 3`,
		`mutexd_queue_depth{lock_namespace="_none"} 1`,
		`mutexd_queue_depth{lock_namespace="_other"} 0`,
		`mutexd_queue_depth{lock_namespace="gone"} 0`,
		`mutexd_queue_depth{lock_namespace="user"} 2`,
	}, "\n")
	if got := gauges(); got != want {
		t.Fatalf("after Recount:\n%s\nwant\n%s", got, want)
	}
	for _, ev := range []engine.Event{
		{Type: engine.EventEnded, Key: "user:1", Outcome: engine.OutcomeReleased},
		{Type: engine.EventGranted, Key: "user:1", FromQueue: true},
		{Type: engine.EventQueued, Key: "user:2"},
		{Type: engine.EventCancelled, Key: "plain"},
	} {
		m.OnEvent(ev)
	}
	// user: a lease ended, a waiter took it, another came; _none's waiter left.
	want = strings.Replace(want, `mutexd_queue_depth{lock_namespace="_none"} 1`, `mutexd_queue_depth{lock_namespace="_none"} 0`, 1)
	if got := gauges(); got != want {
		t.Fatalf("after the restored leases' and waiters' events:\n%s\nwant\n%s", got, want)
	}
}

// TestCountsOutOfStepDoNotSpin: a lease ended that was never counted (as
// a replica's restored lease was before Recount existed) leaves its
// namespace's count negative; the next arrival there must still return
// at once. It once spun for about 2^32 rounds in the apply goroutine of
// a cluster server, with the engine's shard locked, stalling Raft for a
// minute.
func TestCountsOutOfStepDoNotSpin(t *testing.T) {
	m := newMetrics(10)
	m.OnEvent(engine.Event{Type: engine.EventQueued, Key: "user:1"})
	m.OnEvent(engine.Event{Type: engine.EventEnded, Key: "user:2", Outcome: engine.OutcomeReleased})
	done := make(chan struct{})
	go func() {
		defer close(done)
		m.OnEvent(engine.Event{Type: engine.EventQueued, Key: "user:3"})
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("an arrival in a namespace counted below zero did not return")
	}
}
