package deploy_test

import (
	"context"
	"fmt"
	"math"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mutexd/mutexd/internal/demo"
	"github.com/mutexd/mutexd/internal/faults"
)

// TestClusterDashboardAgainstPrometheus proves the Cluster row on a real
// cluster: three servers of the binary built as the Dockerfile builds it
// (started by internal/faults' harness, each on its own loopback address)
// and a real Prometheus scraping all three with the shipped configuration
// and rules. Workers contend on a few keys through every server, so the
// followers forward to the leader; then every Cluster panel query must
// return data that is not NaN, the leader must report both followers'
// lag, each server's /metrics must pass promtool check metrics, and
// MutexdClusterNoLeader's expression must return nothing while its
// leader part says 1.
func TestClusterDashboardAgainstPrometheus(t *testing.T) {
	promBin := tool(t, "prometheus")
	promtool := tool(t, "promtool")
	dash := readDashboard(t)
	bin := filepath.Join(builtBinaries(t), "mutexd")

	h, err := faults.Start(t, bin, faults.Options{Nodes: 3, Cluster: true})
	if err != nil {
		t.Fatal(err)
	}
	var targets, servers []string
	for _, n := range h.Nodes {
		targets = append(targets, strings.TrimPrefix(n.URL, "http://"))
		servers = append(servers, n.URL)
	}
	// An app's agent in front of them, scraped in the same job: the
	// Cluster row's agent panels read it.
	ag, err := faults.StartAgent(t, bin, servers, "")
	if err != nil {
		t.Fatal(err)
	}
	targets = append(targets, strings.TrimPrefix(ag.URL, "http://"))
	prom := startPrometheus(t, promBin, targets...)
	prom.awaitQuery(t, `count(up{job="mutexd"} == 1) == 4`, 30*time.Second)

	loadStart := time.Now()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for i, n := range append(slices.Clone(h.Nodes), ag) {
		c, err := demo.New(n.URL, "")
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			cctx, ccancel := context.WithTimeout(ctx, 6*time.Second)
			defer ccancel()
			tally, err := c.Contend(cctx, demo.ContendOptions{
				Workers: 4, Keys: []string{"orders:1", "orders:2", fmt.Sprintf("billing:%d", i)},
				MaxHold: 50 * time.Millisecond, Wait: 500 * time.Millisecond, TTL: 2 * time.Second, FailEvery: 10,
			})
			if err != nil {
				t.Errorf("workers on %s: %v", n.ID, err)
			}
			if tally["acquired"] == 0 {
				t.Errorf("workers on %s acquired nothing: %v", n.ID, tally)
			}
			t.Logf("workers on %s: %v", n.ID, tally)
		})
	}
	wg.Wait()
	loadEnd := time.Now()
	// Two scrapes of every server after the load, so rates see its end.
	prom.awaitQuery(t, fmt.Sprintf(`count(timestamp(up{job="mutexd"}) > %d) == 4`, loadEnd.Add(2*time.Second).Unix()), 30*time.Second)

	t.Run("promtool check metrics", func(t *testing.T) {
		for _, n := range append(slices.Clone(h.Nodes), ag) {
			if out := runTool(t, ".", httpGet(t, n.URL+"/metrics"), promtool, "check", "metrics"); strings.TrimSpace(out) != "" {
				t.Errorf("promtool check metrics on %s found problems:\n%s", n.ID, out)
			}
		}
	})

	t.Run("panels", func(t *testing.T) {
		end := time.Now()
		start := loadStart.Add(-5 * time.Second)
		vars := map[string]string{
			"__rate_interval": "4s",
			"__interval":      "1s",
			"__range":         strconv.Itoa(int(math.Ceil(end.Sub(start).Seconds()))) + "s",
			"job":             "mutexd",
			"instance":        "", // All: the leader and the followers
			"lock_namespace":  "",
		}
		n := 0
		for _, tg := range dash.targets() {
			if tg.Row != clusterRow {
				continue
			}
			n++
			expr := substitute(t, tg.Expr, vars)
			if got := prom.finiteSamples(t, expr, start, end); got == 0 {
				t.Errorf("panel %q target %s shows no data: %s", tg.Panel, tg.RefID, expr)
			}
		}
		if n < 10 {
			t.Fatalf("the %s row has %d panel targets, want the full set", clusterRow, n)
		}
	})

	t.Run("figures", func(t *testing.T) { // logged, for the record
		window := fmt.Sprintf("[%ds]", int(math.Ceil(time.Since(loadStart).Seconds())))
		for _, q := range []string{
			`histogram_quantile(0.5, sum by (le) (increase(mutexd_raft_commit_seconds_bucket{job="mutexd"}` + window + `)))`,
			`histogram_quantile(0.99, sum by (le) (increase(mutexd_raft_commit_seconds_bucket{job="mutexd"}` + window + `)))`,
			`histogram_quantile(0.99, sum by (le) (increase(mutexd_raft_apply_seconds_bucket{job="mutexd"}` + window + `)))`,
			`max(max_over_time(mutexd_raft_follower_lag_entries{job="mutexd"}` + window + `))`,
			`sum(increase(mutexd_cluster_forwarded_total{job="mutexd"}` + window + `))`,
			`max(mutexd_raft_leader_changes_total{job="mutexd"})`,
		} {
			var r apiResult
			prom.api(t, "/api/v1/query", url.Values{"query": {q}}, &r)
			if len(r.Result) > 0 {
				t.Logf("%s = %v", q, r.Result[0].Value[1])
			}
		}
	})

	t.Run("follower lag of both followers", func(t *testing.T) {
		var r apiResult
		prom.api(t, "/api/v1/query", url.Values{"query": {`mutexd_raft_follower_lag_entries{job="mutexd"}`}}, &r)
		peers := map[string]bool{}
		for _, s := range r.Result {
			peers[s.Metric["peer"]] = true
		}
		if len(peers) != 2 {
			t.Errorf("follower lag for peers %v, want the two followers", peers)
		}
	})

	t.Run("no-leader alert quiet", func(t *testing.T) {
		expr := alertExpr(t, "MutexdClusterNoLeader")
		leader, ok := strings.CutSuffix(strings.TrimSpace(expr), "< 1")
		if !ok {
			t.Fatalf("MutexdClusterNoLeader: expression %q does not end in \"< 1\"", expr)
		}
		if v := prom.instant(t, leader); v != 1 {
			t.Errorf("%s = %v while a leader exists, want 1", leader, v)
		}
		var r apiResult
		prom.api(t, "/api/v1/query", url.Values{"query": {expr}}, &r)
		if len(r.Result) != 0 {
			t.Errorf("MutexdClusterNoLeader's expression %s returns %v while a leader exists, want nothing", expr, r.Result)
		}
	})

	t.Run("cluster alert rules evaluate", func(t *testing.T) {
		deadline := time.Now().Add(15 * time.Second)
		for {
			health := prom.ruleHealth(t)
			var bad []string
			for _, name := range alertNames(t) {
				if strings.HasPrefix(name, "MutexdCluster") && health[name] != "ok" {
					bad = append(bad, fmt.Sprintf("%s: %q", name, health[name]))
				}
			}
			if len(bad) == 0 {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("cluster alert rules not evaluating cleanly: %v", bad)
			}
			time.Sleep(500 * time.Millisecond)
		}
	})
}

// alertExpr is the expression of the alert named in alerts.yml.
func alertExpr(t *testing.T, name string) string {
	t.Helper()
	var f struct {
		Groups []struct {
			Rules []struct{ Alert, Expr string }
		}
	}
	unmarshalYAML(t, "deploy/prometheus/alerts.yml", &f)
	for _, g := range f.Groups {
		for _, r := range g.Rules {
			if r.Alert == name {
				return r.Expr
			}
		}
	}
	t.Fatalf("alerts.yml has no alert %s", name)
	return ""
}
