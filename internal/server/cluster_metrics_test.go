package server_test

import (
	"bufio"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/mutexd/mutexd/internal/config"
)

// scrape returns base's /metrics samples by series (name{labels}).
func scrape(t *testing.T, base string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		l := sc.Text()
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		i := strings.LastIndexByte(l, ' ')
		v, err := strconv.ParseFloat(l[i+1:], 64)
		if err != nil {
			t.Fatalf("/metrics line %q: %v", l, err)
		}
		out[l[:i]] = v
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// isClusterSeries reports whether a series is one of a cluster server's
// own (docs/metrics.md's cluster table).
func isClusterSeries(series string) bool {
	return strings.HasPrefix(series, "mutexd_raft_") || strings.HasPrefix(series, "mutexd_cluster_")
}

// oneNodeCluster is a configuration of a cluster of one server.
func oneNodeCluster(t *testing.T) config.Config {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	raftAddr := ln.Addr().String()
	ln.Close()
	cfg := config.Default()
	cfg.Cluster = config.Cluster{NodeID: "n1", RaftListen: raftAddr, DataDir: t.TempDir(),
		Peers: []config.Peer{{ID: "n1", Raft: raftAddr, API: "http://127.0.0.1:1"}}}
	return cfg
}

// TestClusterMetrics checks a cluster server's Raft metrics on a real
// one-server cluster: its state, indexes and member count read at scrape
// time, commit and apply latency observed as calls are applied, forwards
// counted from 0, and its series count as docs/metrics.md states it. A
// standalone daemon exports none of them.
func TestClusterMetrics(t *testing.T) {
	_, base, _, _ := start(t, oneNodeCluster(t))
	for range 3 {
		if code, body := post(t, base+"/v1/locks/orders:1/acquire?ttl=1m&wait=0"); code != http.StatusOK {
			t.Fatalf("acquire: %d %v", code, body)
		} else if code, body := post(t, base+"/v1/locks/orders:1/release?token="+body["token"].(string)); code != http.StatusOK && code != http.StatusNoContent {
			t.Fatalf("release: %d %v", code, body)
		}
	}
	got := scrape(t, base)
	for _, c := range []struct {
		series string
		ok     func(float64) bool
		want   string
	}{
		{`mutexd_cluster_role{role="server"}`, func(v float64) bool { return v == 1 }, "1"},
		{`mutexd_raft_state{state="leader"}`, func(v float64) bool { return v == 1 }, "1"},
		{`mutexd_raft_state{state="follower"}`, func(v float64) bool { return v == 0 }, "0"},
		{`mutexd_raft_term`, func(v float64) bool { return v >= 1 }, ">= 1"},
		{`mutexd_raft_commit_index`, func(v float64) bool { return v >= 7 }, ">= 7 (promote, 6 calls)"},
		{`mutexd_raft_applied_index`, func(v float64) bool { return v >= 7 }, ">= 7"},
		{`mutexd_raft_commit_seconds_count`, func(v float64) bool { return v == 6 }, "6 (the calls)"},
		{`mutexd_raft_apply_seconds_count`, func(v float64) bool { return v >= 1 }, ">= 1"},
		{`mutexd_raft_log_entries`, func(v float64) bool { return v >= 6 }, ">= 6"},
		{`mutexd_raft_snapshot_age_seconds`, func(v float64) bool { return v > 0 && v < 60 }, "since start, under a minute"},
		{`mutexd_raft_snapshot_failures_total`, func(v float64) bool { return v == 0 }, "0"},
		{`mutexd_raft_leader_changes_total`, func(v float64) bool { return v == 1 }, "1"},
		{`mutexd_cluster_forwarded_total{op="acquire"}`, func(v float64) bool { return v == 0 }, "0 (one server forwards nothing)"},
		{`mutexd_cluster_forwarded_total{op="read_index"}`, func(v float64) bool { return v == 0 }, "0"},
		{`mutexd_cluster_members{state="leader"}`, func(v float64) bool { return v == 1 }, "1"},
		{`mutexd_cluster_members{state="unreachable"}`, func(v float64) bool { return v == 0 }, "0"},
	} {
		v, ok := got[c.series]
		if !ok || !c.ok(v) {
			t.Errorf("%s = %v (present %v), want %s", c.series, v, ok, c.want)
		}
	}
	n := 0
	for s := range got {
		if isClusterSeries(s) {
			n++
		}
	}
	if want := readmeBudget(t, "each cluster server"); n != want {
		t.Errorf("a cluster server exports %d mutexd_raft_/mutexd_cluster_ series; docs/metrics.md says %d", n, want)
	}

	_, standalone, _, _ := start(t, config.Default())
	for s := range scrape(t, standalone) {
		if isClusterSeries(s) {
			t.Errorf("a standalone daemon exports %s", s)
		}
	}
}
