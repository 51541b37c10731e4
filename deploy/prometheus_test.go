package deploy_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/mutexd/mutexd/internal/demo"
)

// loadNamespaces are the namespaces the scripted load runs in.
var loadNamespaces = []string{"orders", "billing"}

// TestDashboardAgainstPrometheus is the proof that operators see data: it
// runs the mutexd binary built as the Dockerfile builds it and a real
// Prometheus (scrape interval 1s) loading the shipped scrape config and
// alert rules, drives a scripted load producing grants, waits, timeouts,
// aborts, disconnects and expirations in two namespaces, then runs every
// panel target of deploy/grafana/mutexd.json, variables substituted as
// Grafana would, against Prometheus' HTTP API and requires data that is not
// NaN. It also lints /metrics with promtool check metrics.
func TestDashboardAgainstPrometheus(t *testing.T) {
	promBin := tool(t, "prometheus")
	promtool := tool(t, "promtool")
	dash := readDashboard(t)
	bin := filepath.Join(builtBinaries(t), "mutexd")

	d := startDaemon(t, bin)
	prom := startPrometheus(t, promBin, d.listen)
	prom.awaitQuery(t, `up{job="mutexd"} == 1`, 20*time.Second)

	loadStart := time.Now()
	runLoad(t, d.url)
	loadEnd := time.Now()
	// Two scrapes after the load, so rates see its last events.
	prom.awaitQuery(t, fmt.Sprintf(`timestamp(up{job="mutexd"}) > %d`, loadEnd.Add(2*time.Second).Unix()), 20*time.Second)

	t.Run("promtool check metrics", func(t *testing.T) {
		body := httpGet(t, d.url+"/metrics")
		out := runTool(t, ".", body, promtool, "check", "metrics")
		if strings.TrimSpace(out) != "" {
			t.Errorf("promtool check metrics found problems:\n%s", out)
		}
	})

	instance := d.listen
	t.Run("variables", func(t *testing.T) {
		for _, v := range dash.Templating.List {
			if v.Type != "query" {
				continue
			}
			expr := substitute(t, v.Query.Query, map[string]string{"job": "mutexd", "instance": instance})
			m := regexp.MustCompile(`^label_values\((.+),\s*(\w+)\)$`).FindStringSubmatch(expr)
			if m == nil {
				t.Errorf("variable %s: query %q is not label_values(selector, label)", v.Name, v.Query.Query)
				continue
			}
			got := prom.labelValues(t, m[1], m[2], loadStart)
			want := map[string][]string{"job": {"mutexd"}, "instance": {instance}, "lock_namespace": loadNamespaces}[v.Name]
			for _, w := range want {
				if !slices.Contains(got, w) {
					t.Errorf("variable %s = %q, want it to offer %q", v.Name, got, w)
				}
			}
		}
	})

	t.Run("panels", func(t *testing.T) {
		// Grafana's $__rate_interval is max(4 × scrape interval, step +
		// scrape interval): 4s here. $__range is the queried range.
		end := time.Now()
		start := loadStart.Add(-5 * time.Second)
		builtin := map[string]string{
			"__rate_interval": "4s",
			"__interval":      "1s",
			"__range":         strconv.Itoa(int(math.Ceil(end.Sub(start).Seconds()))) + "s",
			"job":             "mutexd", // the job alerts.yml selects
			"instance":        instance,
		}
		namespaces := append([]string{""}, loadNamespaces...) // "" is All
		targets := dash.targets()
		if len(targets) < 20 {
			t.Fatalf("dashboard has %d panel targets, want the full set of rows", len(targets))
		}
		for _, tg := range targets {
			if tg.Row == clusterRow {
				continue // a standalone daemon has no Raft: see TestClusterDashboardAgainstPrometheus
			}
			for _, ns := range namespaces {
				vars := maps(builtin, map[string]string{"lock_namespace": ns})
				expr := substitute(t, tg.Expr, vars)
				name := fmt.Sprintf("%s/%s", tg.Panel, tg.RefID)
				if ns != "" {
					if !strings.Contains(tg.Expr, "$lock_namespace") {
						continue // the same query as for All
					}
					name += " lock_namespace=" + ns
				}
				if n := prom.finiteSamples(t, expr, start, end); n == 0 {
					t.Errorf("panel %q target %s shows no data: %s", tg.Panel, name, expr)
				}
			}
		}
	})

	t.Run("build info", func(t *testing.T) {
		if n := prom.finiteSamples(t, fmt.Sprintf(`mutexd_build_info{version=%q}`, testVersion), loadStart, time.Now()); n == 0 {
			t.Errorf("mutexd_build_info has no series with version %q", testVersion)
		}
		rss := prom.instant(t, `process_resident_memory_bytes{job="mutexd"}`)
		t.Logf("mutexd resident memory after the load: %.1f MiB", rss/(1<<20))
	})

	t.Run("alert rules evaluate", func(t *testing.T) {
		want := alertNames(t)
		deadline := time.Now().Add(15 * time.Second)
		for {
			health := prom.ruleHealth(t)
			var bad []string
			for _, name := range want {
				if health[name] != "ok" {
					bad = append(bad, fmt.Sprintf("%s: %q", name, health[name]))
				}
			}
			if len(bad) == 0 {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("alert rules not loaded or not evaluating cleanly: %v", bad)
			}
			time.Sleep(500 * time.Millisecond)
		}
	})
}

// runLoad drives the daemon at base: two scripted rounds per namespace
// (every outcome: see demo.Round) while workers contend on a few keys.
func runLoad(t *testing.T, base string) {
	t.Helper()
	c, err := demo.New(base, "")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	rounds := make([]demo.Tally, len(loadNamespaces))
	for i, ns := range loadNamespaces {
		rounds[i] = demo.Tally{}
		wg.Go(func() {
			for range 2 {
				got, err := c.Round(ctx, ns)
				rounds[i].Add(got)
				if err != nil {
					t.Errorf("round in namespace %s: %v", ns, err)
					return
				}
			}
		})
	}
	var contend demo.Tally
	wg.Go(func() {
		cctx, ccancel := context.WithTimeout(ctx, 3*time.Second)
		defer ccancel()
		var err error
		contend, err = c.Contend(cctx, demo.ContendOptions{
			Workers: 6, Keys: []string{"orders:1", "orders:2", "billing:1", "reports:1"},
			MaxHold: 100 * time.Millisecond, Wait: 150 * time.Millisecond, TTL: time.Second,
			FailEvery: 10, CrashEvery: 20,
		})
		if err != nil {
			t.Errorf("contending workers: %v", err)
		}
	})
	wg.Wait()
	for i, ns := range loadNamespaces {
		t.Logf("round tally %s: %v", ns, rounds[i])
		for _, outcome := range []string{"acquired", "waited", "timeout", "trylock_refused", "aborted", "cancelled", "released", "failed", "expired", "forced"} {
			if rounds[i][outcome] != 2 && outcome != "acquired" {
				t.Errorf("namespace %s: %d %s in two rounds, want 2", ns, rounds[i][outcome], outcome)
			}
		}
	}
	t.Logf("contention tally: %v", contend)
	if contend["acquired"] == 0 {
		t.Errorf("contending workers acquired nothing: %v", contend)
	}
}

// prometheus is a Prometheus server started by a test.
type prometheus struct {
	url string
}

// startPrometheus runs promBin on a free loopback port with the shipped
// prometheus.yml, changed only where a test must: 1s scrape and evaluation
// intervals, the daemons' addresses as the targets, the rule file's path.
func startPrometheus(t *testing.T, promBin string, targets ...string) prometheus {
	t.Helper()
	var cfg map[string]any
	if err := yaml.Unmarshal(readFile(t, "deploy/prometheus/prometheus.yml"), &cfg); err != nil {
		t.Fatal(err)
	}
	cfg["global"] = map[string]any{"scrape_interval": "1s", "evaluation_interval": "1s"}
	rules, _ := cfg["rule_files"].([]any)
	for i, r := range rules {
		rules[i] = repoFile(t, "deploy/prometheus/"+r.(string))
	}
	found := false
	for _, sc := range cfg["scrape_configs"].([]any) {
		sc := sc.(map[string]any)
		if sc["job_name"] == "mutexd" {
			var addrs []any
			for _, a := range targets {
				addrs = append(addrs, a)
			}
			sc["static_configs"] = []any{map[string]any{"targets": addrs}}
			found = true
		}
	}
	if !found {
		t.Fatal(`prometheus.yml has no job "mutexd", which the alerts select`)
	}
	dir := t.TempDir()
	out, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgPath, out, 0o644); err != nil {
		t.Fatal(err)
	}

	// A free port can be taken between the check and Prometheus' bind:
	// try a few.
	for attempt := range 3 {
		addr := freeAddr(t)
		var logs bytes.Buffer
		cmd := exec.Command(promBin,
			"--config.file="+cfgPath,
			"--storage.tsdb.path="+filepath.Join(dir, fmt.Sprintf("data%d", attempt)),
			"--web.listen-address="+addr,
			"--log.level=warn",
		)
		cmd.Stdout, cmd.Stderr = &logs, &logs
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		p := prometheus{url: "http://" + addr}
		if err := p.awaitReady(exited, 30*time.Second); err != nil {
			_ = cmd.Process.Kill()
			<-exited
			t.Logf("prometheus attempt %d on %s: %v\n%s", attempt+1, addr, err, logs.String())
			continue
		}
		t.Cleanup(func() {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-exited:
			case <-time.After(15 * time.Second):
				_ = cmd.Process.Kill()
				<-exited
			}
			if t.Failed() {
				t.Logf("prometheus log:\n%s", logs.String())
			}
		})
		return p
	}
	t.Fatal("prometheus did not start")
	return prometheus{}
}

func (p prometheus) awaitReady(exited <-chan error, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			return fmt.Errorf("exited: %v", err)
		default:
		}
		if resp, err := http.Get(p.url + "/-/ready"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("not ready within %s", timeout)
}

// apiResult is the data of a Prometheus query answer.
type apiResult struct {
	ResultType string `json:"resultType"`
	Result     []struct {
		Metric map[string]string `json:"metric"`
		Value  [2]any            `json:"value"`
		Values [][2]any          `json:"values"`
	} `json:"result"`
}

// api calls a Prometheus HTTP API endpoint and decodes its data into out.
func (p prometheus) api(t *testing.T, path string, q url.Values, out any) {
	t.Helper()
	resp, err := http.Get(p.url + path + "?" + q.Encode())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var env struct {
		Status    string          `json:"status"`
		Data      json.RawMessage `json:"data"`
		ErrorType string          `json:"errorType"`
		Error     string          `json:"error"`
	}
	if err := json.Unmarshal(body, &env); err != nil {
		t.Fatalf("%s %v: %v: %s", path, q, err, body)
	}
	if env.Status != "success" {
		t.Fatalf("%s %v: %s: %s", path, q, env.ErrorType, env.Error)
	}
	if err := json.Unmarshal(env.Data, out); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// finiteSamples runs expr as Grafana's time series panels do (a range
// query, step 1s) and counts the samples that are not NaN.
func (p prometheus) finiteSamples(t *testing.T, expr string, start, end time.Time) int {
	t.Helper()
	var r apiResult
	p.api(t, "/api/v1/query_range", url.Values{
		"query": {expr},
		"start": {strconv.FormatInt(start.Unix(), 10)},
		"end":   {strconv.FormatInt(end.Unix()+1, 10)},
		"step":  {"1"},
	}, &r)
	n := 0
	for _, s := range r.Result {
		for _, v := range s.Values {
			if f, err := strconv.ParseFloat(v[1].(string), 64); err == nil && !math.IsNaN(f) {
				n++
			}
		}
	}
	return n
}

// instant returns the first value of an instant query.
func (p prometheus) instant(t *testing.T, expr string) float64 {
	t.Helper()
	var r apiResult
	p.api(t, "/api/v1/query", url.Values{"query": {expr}}, &r)
	if len(r.Result) == 0 {
		t.Fatalf("%s: no result", expr)
	}
	f, err := strconv.ParseFloat(r.Result[0].Value[1].(string), 64)
	if err != nil {
		t.Fatalf("%s: %v", expr, err)
	}
	return f
}

// awaitQuery waits until the instant query expr has a result.
func (p prometheus) awaitQuery(t *testing.T, expr string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		var r apiResult
		p.api(t, "/api/v1/query", url.Values{"query": {expr}}, &r)
		if len(r.Result) > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no result for %s within %s", expr, timeout)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// labelValues answers Grafana's label_values(selector, label) since start.
func (p prometheus) labelValues(t *testing.T, selector, label string, start time.Time) []string {
	t.Helper()
	var series []map[string]string
	p.api(t, "/api/v1/series", url.Values{
		"match[]": {selector},
		"start":   {strconv.FormatInt(start.Unix(), 10)},
		"end":     {strconv.FormatInt(time.Now().Unix()+1, 10)},
	}, &series)
	var out []string
	for _, s := range series {
		if v, ok := s[label]; ok && !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	slices.Sort(out)
	return out
}

// ruleHealth returns each alerting rule's health ("ok" once it evaluated
// without error).
func (p prometheus) ruleHealth(t *testing.T) map[string]string {
	t.Helper()
	var r struct {
		Groups []struct {
			Rules []struct {
				Name, Type, Health, LastError string
			} `json:"rules"`
		} `json:"groups"`
	}
	p.api(t, "/api/v1/rules", url.Values{"type": {"alert"}}, &r)
	h := map[string]string{}
	for _, g := range r.Groups {
		for _, rule := range g.Rules {
			h[rule.Name] = rule.Health
			if rule.LastError != "" {
				h[rule.Name] += ": " + rule.LastError
			}
		}
	}
	return h
}

// substitute replaces Grafana variables in expr as Grafana's Prometheus
// data source does: a query variable's value is regex-escaped (it is used
// with =~), an empty one stands for All (the variable's allValue, .+).
// Every $name must be known.
func substitute(t *testing.T, expr string, vars map[string]string) string {
	t.Helper()
	re := regexp.MustCompile(`\$\{(\w+)\}|\$(\w+)`)
	var unknown []string
	out := re.ReplaceAllStringFunc(expr, func(m string) string {
		sub := re.FindStringSubmatch(m)
		name := sub[1] + sub[2]
		v, ok := vars[name]
		if !ok {
			unknown = append(unknown, name)
			return m
		}
		if strings.HasPrefix(name, "__") {
			return v
		}
		if v == "" {
			return ".+"
		}
		// Regex-escape, then escape the backslashes for a PromQL string.
		return strings.ReplaceAll(regexp.QuoteMeta(v), `\`, `\\`)
	})
	if len(unknown) > 0 {
		t.Fatalf("unknown variables %v in %s", unknown, expr)
	}
	return out
}

// maps merges maps, later ones winning.
func maps(ms ...map[string]string) map[string]string {
	out := map[string]string{}
	for _, m := range ms {
		for k, v := range m {
			out[k] = v
		}
	}
	return out
}

func httpGet(t *testing.T, u string) []byte {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %v", u, resp.StatusCode, err)
	}
	return body
}

// freeAddr returns a loopback address nothing listens on right now.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}
