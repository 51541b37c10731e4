package metrics_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/mutexd/mutexd/internal/metrics"
)

// fakeCluster is a node as the cluster metrics read it.
type fakeCluster struct {
	stats metrics.RaftStats
	peers []metrics.Peer
}

func (f fakeCluster) RaftStats() metrics.RaftStats         { return f.stats }
func (f fakeCluster) Peers(context.Context) []metrics.Peer { return f.peers }

var _ metrics.ClusterSource = fakeCluster{}

// TestClusterMetrics checks what a cluster server exports: the state,
// indexes, log size and snapshot age read at scrape time; follower lag
// only on the leader and only for followers that answered; voters by the
// state they reported; and the observed latencies and counts.
func TestClusterMetrics(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	m := metrics.New(metrics.Options{NamespaceSeparator: ":", MaxNamespaces: 5, Now: func() time.Time { return now }})
	c := m.Cluster([]string{"acquire", "read_index"})
	src := &fakeCluster{
		stats: metrics.RaftStats{State: "leader", Term: 4, CommitIndex: 90, AppliedIndex: 88, FirstIndex: 11, LastIndex: 100,
			StartedAt: now.Add(-time.Hour)},
		peers: []metrics.Peer{
			{ID: "n1", Self: true, Voter: true, State: "leader", AppliedIndex: 88},
			{ID: "n2", Voter: true, State: "follower", AppliedIndex: 70},
			{ID: "n3", Voter: true, State: "unreachable"},
			{ID: "n4", State: "follower", AppliedIndex: 101}, // a non-voter, ahead of the leader's read
		},
	}
	m.WatchCluster(src)
	c.Committed(2 * time.Millisecond)
	c.AppliedBatch(time.Millisecond)
	c.Snapshotted(time.Second, nil)
	c.Snapshotted(time.Second, errors.New("disk full"))
	c.Forwarded("acquire")
	c.Forwarded("acquire")
	c.LeaderChanged()

	want := `
# HELP mutexd_cluster_members Voters of the cluster (this node included) by the state each reported, as this node asked them; unreachable when one did not answer.
# TYPE mutexd_cluster_members gauge
mutexd_cluster_members{state="candidate"} 0
mutexd_cluster_members{state="follower"} 1
mutexd_cluster_members{state="leader"} 1
mutexd_cluster_members{state="shutdown"} 0
mutexd_cluster_members{state="unreachable"} 1
# HELP mutexd_raft_follower_lag_entries On the leader: its last log index minus the index each other server reports applied (absent for a server that does not answer).
# TYPE mutexd_raft_follower_lag_entries gauge
mutexd_raft_follower_lag_entries{peer="n2"} 30
mutexd_raft_follower_lag_entries{peer="n4"} 0
# HELP mutexd_raft_log_entries Entries in this node's Raft log (last index minus first index); snapshots truncate it.
# TYPE mutexd_raft_log_entries gauge
mutexd_raft_log_entries 89
# HELP mutexd_raft_snapshot_age_seconds Time since this node last persisted a snapshot (or took the newest it holds; since it started when it holds none).
# TYPE mutexd_raft_snapshot_age_seconds gauge
mutexd_raft_snapshot_age_seconds 3600
# HELP mutexd_raft_state 1 for this node's current Raft state (leader, follower, candidate, shutdown), 0 for the others.
# TYPE mutexd_raft_state gauge
mutexd_raft_state{state="candidate"} 0
mutexd_raft_state{state="follower"} 0
mutexd_raft_state{state="leader"} 1
mutexd_raft_state{state="shutdown"} 0
# HELP mutexd_raft_term This node's current Raft term.
# TYPE mutexd_raft_term gauge
mutexd_raft_term 4
# HELP mutexd_raft_snapshot_failures_total Snapshots that failed to be captured or persisted.
# TYPE mutexd_raft_snapshot_failures_total counter
mutexd_raft_snapshot_failures_total 1
# HELP mutexd_raft_leader_changes_total Leaders this node learned of: elections it saw end.
# TYPE mutexd_raft_leader_changes_total counter
mutexd_raft_leader_changes_total 1
# HELP mutexd_cluster_forwarded_total Calls this server forwarded to the leader, by op.
# TYPE mutexd_cluster_forwarded_total counter
mutexd_cluster_forwarded_total{op="acquire"} 2
mutexd_cluster_forwarded_total{op="read_index"} 0
# HELP mutexd_cluster_role Always 1; the role label says what this daemon is in a cluster (server or agent).
# TYPE mutexd_cluster_role gauge
mutexd_cluster_role{role="server"} 1
`
	names := []string{"mutexd_cluster_members", "mutexd_raft_follower_lag_entries", "mutexd_raft_log_entries", "mutexd_raft_snapshot_age_seconds",
		"mutexd_raft_state", "mutexd_raft_term", "mutexd_raft_snapshot_failures_total", "mutexd_raft_leader_changes_total",
		"mutexd_cluster_forwarded_total", "mutexd_cluster_role"}
	if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(want), names...); err != nil {
		t.Error(err)
	}
	for name, want := range map[string]int{"mutexd_raft_commit_seconds": 1, "mutexd_raft_apply_seconds": 1, "mutexd_raft_snapshot_seconds": 1} {
		if got := histogramCount(t, m, name); got != want {
			t.Errorf("%s_count = %d, want %d", name, got, want)
		}
	}

	// A follower reports no lag; a snapshot taken sets the age's origin.
	src.stats.State, src.stats.LastSnapshot = "follower", now.Add(-10*time.Second)
	want = `
# HELP mutexd_raft_snapshot_age_seconds Time since this node last persisted a snapshot (or took the newest it holds; since it started when it holds none).
# TYPE mutexd_raft_snapshot_age_seconds gauge
mutexd_raft_snapshot_age_seconds 10
`
	if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(want), "mutexd_raft_snapshot_age_seconds", "mutexd_raft_follower_lag_entries"); err != nil {
		t.Error(err)
	}
}

// TestStandaloneHasNoClusterMetrics: without Cluster and WatchCluster, a
// daemon's exposition stays as it was.
func TestStandaloneHasNoClusterMetrics(t *testing.T) {
	m := newMetrics(5)
	m.Watch(metrics.Sources{Engine: fakeSource{}})
	fams, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if n := f.GetName(); strings.HasPrefix(n, "mutexd_raft_") || strings.HasPrefix(n, "mutexd_cluster_") {
			t.Errorf("a standalone daemon exports %s", n)
		}
	}
}

func histogramCount(t *testing.T, m *metrics.Metrics, name string) int {
	t.Helper()
	fams, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() == name {
			return int(f.GetMetric()[0].GetHistogram().GetSampleCount())
		}
	}
	t.Fatalf("%s not exported", name)
	return 0
}
