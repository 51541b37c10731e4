package metrics

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// CommitBuckets are the upper bounds of mutexd_raft_commit_seconds: a
// commit on a LAN takes a millisecond or a few (a round trip and a disk
// write), one through a change of leader up to a few seconds.
var CommitBuckets = []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 1, 5}

// ApplyBuckets are the upper bounds of mutexd_raft_apply_seconds: one
// batch of entries applied to the in-memory engine.
var ApplyBuckets = []float64{0.0001, 0.0005, 0.001, 0.005, 0.025, 0.1, 1}

// SnapshotBuckets are the upper bounds of mutexd_raft_snapshot_seconds.
var SnapshotBuckets = []float64{0.01, 0.1, 1, 10, 60}

// RaftStates are the values of mutexd_raft_state's state label.
var RaftStates = []string{"leader", "follower", "candidate", "shutdown"}

// MemberStates are the values of mutexd_cluster_members' state label: a
// Raft state, or unreachable when the member did not answer.
var MemberStates = []string{"leader", "follower", "candidate", "shutdown", "unreachable"}

// RaftStats is a cluster server's Raft state, read at scrape time.
type RaftStats struct {
	State                     string // one of RaftStates
	Term                      uint64
	CommitIndex, AppliedIndex uint64
	FirstIndex, LastIndex     uint64 // of the entries in the node's log
	// LastSnapshot is when the node last persisted a snapshot (zero if
	// never); StartedAt when it started, the age's origin until then.
	LastSnapshot, StartedAt time.Time
}

// Peer is a server of the cluster as it answered at scrape time.
type Peer struct {
	ID           string
	Self         bool // the node scraped
	Voter        bool
	State        string // one of MemberStates
	AppliedIndex uint64
}

// ClusterSource is what the cluster metrics read from a server's Raft
// node at scrape time.
type ClusterSource interface {
	// RaftStats is the node's own state; it must be cheap.
	RaftStats() RaftStats
	// Peers reports every server of the configuration, asking the others
	// for their state: it may take up to about half a second when one
	// does not answer.
	Peers(ctx context.Context) []Peer
}

// Cluster is a cluster server's metrics of its Raft node: what the node
// observes as it happens (it is the cluster package's Observer) and, once
// WatchCluster is called, what is read from it at scrape time. A
// standalone daemon has none of them.
type Cluster struct {
	commit        prometheus.Histogram
	apply         prometheus.Histogram
	snapshot      prometheus.Histogram
	snapFailures  prometheus.Counter
	leaderChanges prometheus.Counter
	forwarded     map[string]prometheus.Counter // read-only after creation
	forwardedVec  *prometheus.CounterVec
}

// Cluster registers the metrics of a cluster server whose node forwards
// the ops named (each counted at 0 from the start) and exports
// mutexd_cluster_role{role="server"}. Call it once, before the node
// starts, and WatchCluster once the node exists.
func (m *Metrics) Cluster(forwardOps []string) *Cluster {
	c := &Cluster{
		commit: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "mutexd_raft_commit_seconds", Buckets: CommitBuckets,
			Help: "Time from proposing a call's log entry to its result in this replica (retries through a change of leader included).",
		}),
		apply: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "mutexd_raft_apply_seconds", Buckets: ApplyBuckets,
			Help: "Time the state machine took to apply one batch of committed entries.",
		}),
		snapshot: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "mutexd_raft_snapshot_seconds", Buckets: SnapshotBuckets,
			Help: "Time from capturing a snapshot to having it persisted, for snapshots persisted.",
		}),
		snapFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mutexd_raft_snapshot_failures_total", Help: "Snapshots that failed to be captured or persisted.",
		}),
		leaderChanges: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mutexd_raft_leader_changes_total", Help: "Leaders this node learned of: elections it saw end.",
		}),
		forwardedVec: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mutexd_cluster_forwarded_total", Help: "Calls this server forwarded to the leader, by op.",
		}, []string{"op"}),
		forwarded: map[string]prometheus.Counter{},
	}
	for _, op := range forwardOps {
		c.forwarded[op] = c.forwardedVec.WithLabelValues(op)
	}
	m.reg.MustRegister(c.commit, c.apply, c.snapshot, c.snapFailures, c.leaderChanges, c.forwardedVec)
	m.Role("server")
	return c
}

// Role exports mutexd_cluster_role{role} at 1: "server" for a cluster
// server (Cluster calls it), "agent" for an agent. Call it at most once.
func (m *Metrics) Role(role string) {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "mutexd_cluster_role", Help: "Always 1; the role label says what this daemon is in a cluster (server or agent).",
	}, []string{"role"})
	g.WithLabelValues(role).Set(1)
	m.reg.MustRegister(g)
}

// Committed observes one call's commit latency.
func (c *Cluster) Committed(d time.Duration) { c.commit.Observe(d.Seconds()) }

// AppliedBatch observes one batch's apply time.
func (c *Cluster) AppliedBatch(d time.Duration) { c.apply.Observe(d.Seconds()) }

// Snapshotted observes a persisted snapshot's duration, or counts a
// failed one.
func (c *Cluster) Snapshotted(d time.Duration, err error) {
	if err != nil {
		c.snapFailures.Inc()
		return
	}
	c.snapshot.Observe(d.Seconds())
}

// Forwarded counts a call forwarded to the leader.
func (c *Cluster) Forwarded(op string) {
	if ctr, ok := c.forwarded[op]; ok {
		ctr.Inc()
		return
	}
	c.forwardedVec.WithLabelValues(op).Inc()
}

// LeaderChanged counts a leader learned of.
func (c *Cluster) LeaderChanged() { c.leaderChanges.Inc() }

// WatchCluster registers the metrics read from the node at scrape time.
// Call it once, when the node exists.
func (m *Metrics) WatchCluster(src ClusterSource) {
	m.reg.MustRegister(&clusterCollector{src: src, now: m.now})
}

var (
	raftStateDesc = prometheus.NewDesc("mutexd_raft_state",
		"1 for this node's current Raft state (leader, follower, candidate, shutdown), 0 for the others.", []string{"state"}, nil)
	raftTermDesc   = prometheus.NewDesc("mutexd_raft_term", "This node's current Raft term.", nil, nil)
	commitIdxDesc  = prometheus.NewDesc("mutexd_raft_commit_index", "The last log index this node knows committed.", nil, nil)
	appliedIdxDesc = prometheus.NewDesc("mutexd_raft_applied_index", "The last log index this node's replica applied.", nil, nil)
	logEntriesDesc = prometheus.NewDesc("mutexd_raft_log_entries",
		"Entries in this node's Raft log (last index minus first index); snapshots truncate it.", nil, nil)
	snapAgeDesc = prometheus.NewDesc("mutexd_raft_snapshot_age_seconds",
		"Time since this node last persisted a snapshot (or took the newest it holds; since it started when it holds none).", nil, nil)
	lagDesc = prometheus.NewDesc("mutexd_raft_follower_lag_entries",
		"On the leader: its last log index minus the index each other server reports applied (absent for a server that does not answer).", []string{"peer"}, nil)
	membersDesc = prometheus.NewDesc("mutexd_cluster_members",
		"Voters of the cluster (this node included) by the state each reported, as this node asked them; unreachable when one did not answer.", []string{"state"}, nil)
)

// clusterCollector reads a cluster node's state at scrape time: its own
// in one cheap call, and the other servers' by asking them, once per
// scrape.
type clusterCollector struct {
	src ClusterSource
	now func() time.Time
}

func (c *clusterCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{raftStateDesc, raftTermDesc, commitIdxDesc, appliedIdxDesc, logEntriesDesc, snapAgeDesc, lagDesc, membersDesc} {
		ch <- d
	}
}

func (c *clusterCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.src.RaftStats()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	for _, s := range RaftStates {
		gauge(raftStateDesc, b2f(s == st.State), s)
	}
	gauge(raftTermDesc, float64(st.Term))
	gauge(commitIdxDesc, float64(st.CommitIndex))
	gauge(appliedIdxDesc, float64(st.AppliedIndex))
	var entries float64
	if st.FirstIndex > 0 && st.LastIndex >= st.FirstIndex {
		entries = float64(st.LastIndex - st.FirstIndex)
	}
	gauge(logEntriesDesc, entries)
	since := st.LastSnapshot
	if since.IsZero() {
		since = st.StartedAt
	}
	gauge(snapAgeDesc, max(0, c.now().Sub(since).Seconds()))

	members := map[string]float64{}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	for _, p := range c.src.Peers(ctx) {
		if p.Voter {
			members[p.State]++
		}
		if st.State == "leader" && !p.Self && p.State != "unreachable" {
			lag := float64(0)
			if st.LastIndex > p.AppliedIndex {
				lag = float64(st.LastIndex - p.AppliedIndex)
			}
			gauge(lagDesc, lag, p.ID)
		}
	}
	for _, s := range MemberStates {
		gauge(membersDesc, members[s], s)
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
