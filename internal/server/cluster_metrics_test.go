package server_test

import (
	"bufio"
	"encoding/json"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

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

// TestRestartedServerCountsRestoredLeases: a cluster server started again
// on its data directory restores its state from a snapshot, which reports
// no engine events; its live gauges must still count the leases the
// snapshot brought, and go down, not below zero, as they end. (A restored
// lease's end once drove the count negative, and the next waiter's
// arrival spun the apply goroutine for a minute.)
func TestRestartedServerCountsRestoredLeases(t *testing.T) {
	cfg := oneNodeCluster(t)
	cfg.Cluster.SnapshotThreshold, cfg.Cluster.SnapshotInterval = 1, 10*time.Millisecond
	_, base, stop, wait := start(t, cfg)
	tokens := map[string]string{}
	for _, k := range []string{"orders:1", "orders:2"} {
		code, body := post(t, base+"/v1/locks/"+k+"/acquire?ttl=1h&wait=0")
		if code != http.StatusOK {
			t.Fatalf("acquire %s: %d %v", k, code, body)
		}
		tokens[k] = body["token"].(string)
	}
	applied := scrape(t, base)["mutexd_raft_applied_index"]
	// Wait for a snapshot that holds both grants.
	for end := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		var newest uint64
		filepath.WalkDir(cfg.Cluster.DataDir, func(path string, d fs.DirEntry, err error) error {
			var meta struct{ Index uint64 }
			if err == nil && d.Name() == "meta.json" {
				if b, err := os.ReadFile(path); err == nil && json.Unmarshal(b, &meta) == nil {
					newest = max(newest, meta.Index)
				}
			}
			return nil
		})
		if float64(newest) >= applied {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("no snapshot at index %v or later within 10s (newest %d)", applied, newest)
		}
	}
	stop()
	if err := wait(); err != nil {
		t.Fatal(err)
	}

	_, base, _, _ = start(t, cfg)
	held := func() float64 { return scrape(t, base)[`mutexd_locks_held{lock_namespace="orders"}`] }
	if got := held(); got != 2 {
		t.Fatalf("restarted: mutexd_locks_held{orders} = %v, want the 2 restored leases", got)
	}
	if code, body := post(t, base+"/v1/locks/orders:1/release?token="+tokens["orders:1"]); code != http.StatusOK && code != http.StatusNoContent {
		t.Fatalf("release of a restored lease: %d %v", code, body)
	}
	// A waiter in the namespace, queued and timed out: it once found the
	// count below zero and spun.
	if code, body := post(t, base+"/v1/locks/orders:2/acquire?ttl=1m&wait=50ms"); code == http.StatusOK {
		t.Fatalf("acquire of a held key: %d %v, want a timeout", code, body)
	}
	if got, q := held(), scrape(t, base)[`mutexd_queue_depth{lock_namespace="orders"}`]; got != 1 || q != 0 {
		t.Fatalf("after one release and a timed-out waiter: held %v, queued %v; want 1 and 0", got, q)
	}
}
