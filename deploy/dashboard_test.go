package deploy_test

import (
	"context"
	"encoding/json"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/mutexd/mutexd/internal/agent"
	"github.com/mutexd/mutexd/internal/engine"
	"github.com/mutexd/mutexd/internal/metrics"
)

// dashboardUID is the dashboard's stable uid: links and provisioning
// depend on it, so changing it must be deliberate.
const dashboardUID = "mutexd-overview"

// dsRef is a Grafana data source reference.
type dsRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

// varQuery is a variable's query: a string (datasource variables) or an
// object with a query field (query variables).
type varQuery struct{ Query string }

func (q *varQuery) UnmarshalJSON(b []byte) error {
	if err := json.Unmarshal(b, &q.Query); err == nil {
		return nil
	}
	var o struct {
		Query string `json:"query"`
	}
	err := json.Unmarshal(b, &o)
	q.Query = o.Query
	return err
}

type variable struct {
	Name       string   `json:"name"`
	Type       string   `json:"type"`
	Query      varQuery `json:"query"`
	Datasource *dsRef   `json:"datasource"`
	IncludeAll bool     `json:"includeAll"`
	Multi      bool     `json:"multi"`
	AllValue   string   `json:"allValue"`
}

type target struct {
	Expr       string `json:"expr"`
	RefID      string `json:"refId"`
	Datasource *dsRef `json:"datasource"`
	Panel      string `json:"-"`
	Row        string `json:"-"` // the title of the row the panel is in
}

type panel struct {
	ID          int      `json:"id"`
	Type        string   `json:"type"`
	Title       string   `json:"title"`
	Description string   `json:"description"`
	Datasource  *dsRef   `json:"datasource"`
	Targets     []target `json:"targets"`
	Panels      []panel  `json:"panels"` // of a collapsed row
	GridPos     struct {
		H, W, X, Y int
	} `json:"gridPos"`
}

type dashboard struct {
	ID            *int    `json:"id"`
	UID           string  `json:"uid"`
	Title         string  `json:"title"`
	SchemaVersion int     `json:"schemaVersion"`
	Panels        []panel `json:"panels"`
	Templating    struct {
		List []variable `json:"list"`
	} `json:"templating"`
}

// all returns every panel, rows and the panels of collapsed rows included.
func (d dashboard) all() []panel {
	var out []panel
	for _, p := range d.Panels {
		out = append(out, p)
		out = append(out, p.Panels...)
	}
	return out
}

// targets returns every query of every panel, with its panel's and
// row's titles.
func (d dashboard) targets() []target {
	var out []target
	add := func(p panel, row string) {
		for _, tg := range p.Targets {
			tg.Panel, tg.Row = p.Title, row
			out = append(out, tg)
		}
	}
	row := ""
	for _, p := range d.Panels {
		if p.Type == "row" {
			row = p.Title
		}
		add(p, row)
		for _, sub := range p.Panels { // of a collapsed row
			add(sub, row)
		}
	}
	return out
}

// clusterRow is the row of panels only cluster servers give data to:
// TestClusterDashboardAgainstPrometheus proves them on a real cluster.
const clusterRow = "Cluster"

func readFile(t *testing.T, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(repoFile(t, rel))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func readDashboard(t *testing.T) dashboard {
	t.Helper()
	var d dashboard
	if err := json.Unmarshal(readFile(t, "deploy/grafana/mutexd.json"), &d); err != nil {
		t.Fatalf("deploy/grafana/mutexd.json: %v", err)
	}
	return d
}

// TestDashboardFile checks the dashboard is importable into any Grafana
// (a data source variable, no fixed data source, no instance-specific id),
// has the variables and rows operators rely on, explains every panel, and
// queries only metrics mutexd exports. TestDashboardAgainstPrometheus
// proves every query shows data.
func TestDashboardFile(t *testing.T) {
	d := readDashboard(t)
	if d.UID != dashboardUID {
		t.Errorf("uid = %q, want %q", d.UID, dashboardUID)
	}
	if d.ID != nil {
		t.Errorf("id = %d, want null: an id ties the file to one Grafana database", *d.ID)
	}
	if d.SchemaVersion < 39 {
		t.Errorf("schemaVersion = %d, want at least 39 (Grafana 10.4+)", d.SchemaVersion)
	}

	vars := map[string]variable{}
	for _, v := range d.Templating.List {
		vars[v.Name] = v
	}
	if v := vars["datasource"]; v.Type != "datasource" || v.Query.Query != "prometheus" {
		t.Errorf("variable datasource = %+v, want type datasource with query prometheus", v)
	}
	// job's All must list the jobs mutexd_build_info names (Grafana does
	// that when allValue is empty): ".+" would match every target of a
	// shared Prometheus. instance and lock_namespace may use .+ under job.
	for _, want := range []struct{ name, allValue string }{{"job", ""}, {"instance", ".+"}, {"lock_namespace", ".+"}} {
		v, ok := vars[want.name]
		switch {
		case !ok:
			t.Errorf("variable %s missing", want.name)
		case v.Type != "query" || v.Datasource == nil || v.Datasource.UID != "${datasource}":
			t.Errorf("variable %s = %+v, want a query on ${datasource}", want.name, v)
		case !v.IncludeAll || !v.Multi || v.AllValue != want.allValue:
			t.Errorf("variable %s: includeAll %v, multi %v, allValue %q; want true, true, %q", want.name, v.IncludeAll, v.Multi, v.AllValue, want.allValue)
		}
	}
	if q := vars["job"].Query.Query; q != "label_values(mutexd_build_info, job)" {
		t.Errorf("variable job: query %q, want label_values(mutexd_build_info, job): only jobs that scrape mutexd", q)
	}
	for _, name := range []string{"instance", "lock_namespace"} {
		for _, sel := range selectors(vars[name].Query.Query) {
			if !strings.Contains(sel, `job=~"$job"`) {
				t.Errorf("variable %s: selector %s does not filter by job=~\"$job\"", name, sel)
			}
		}
	}

	known := exportedFamilies(t)
	metricRE := regexp.MustCompile(`\b(mutexd_\w+|go_\w+|process_\w+)`)
	ids := map[int]bool{}
	var rows []string
	for _, p := range d.all() {
		if ids[p.ID] {
			t.Errorf("panel id %d used twice", p.ID)
		}
		ids[p.ID] = true
		if p.Type == "row" {
			rows = append(rows, p.Title)
			continue
		}
		if len(p.Description) < 80 {
			t.Errorf("panel %q: description %q is too short to say what a bad value means and what to do", p.Title, p.Description)
		}
		if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
			t.Errorf("panel %q: datasource %+v, want uid ${datasource}", p.Title, p.Datasource)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		refs := map[string]bool{}
		for _, tg := range p.Targets {
			if tg.Datasource == nil || tg.Datasource.UID != "${datasource}" {
				t.Errorf("panel %q target %s: datasource %+v, want uid ${datasource}", p.Title, tg.RefID, tg.Datasource)
			}
			if refs[tg.RefID] || tg.RefID == "" {
				t.Errorf("panel %q: refId %q empty or repeated", p.Title, tg.RefID)
			}
			refs[tg.RefID] = true
			for _, m := range metricRE.FindAllString(tg.Expr, -1) {
				if !known[m] {
					t.Errorf("panel %q queries %s, which mutexd does not export", p.Title, m)
				}
			}
			// A shared Prometheus scrapes many jobs: every series a
			// panel reads must be of the selected job and instance.
			for _, sel := range selectors(tg.Expr) {
				for _, f := range []string{`job=~"$job"`, `instance=~"$instance"`} {
					if !strings.Contains(sel, f) {
						t.Errorf("panel %q target %s: selector %s lacks %s", p.Title, tg.RefID, sel, f)
					}
				}
			}
			// go_ and process_ series come from any Go program or
			// exporter, even in mutexd's job (a pod-discovery job scrapes
			// every annotated pod): keep only mutexd's targets.
			if regexp.MustCompile(`\b(go|process)_`).MatchString(tg.Expr) &&
				!strings.Contains(tg.Expr, `and on (job, instance) mutexd_build_info{`) {
				t.Errorf("panel %q target %s reads go_/process_ series without \"and on (job, instance) mutexd_build_info\": %s", p.Title, tg.RefID, tg.Expr)
			}
		}
	}
	wantRows := []string{"Overview", "Acquisitions", "Waiting", "Holding", "HTTP", "Process", clusterRow}
	if !slices.Equal(rows, wantRows) {
		t.Errorf("rows = %q, want %q (docs/operations.md describes these)", rows, wantRows)
	}
	readme, deployReadme := string(readFile(t, "docs/operations.md")), string(readFile(t, "deploy/README.md"))
	for _, row := range rows {
		if !strings.Contains(readme, "\n| "+row+" |") || !strings.Contains(deployReadme, "**"+row+"**") {
			t.Errorf("row %s is not described in docs/operations.md and deploy/README.md", row)
		}
	}
	overlaps(t, d.Panels)
}

// selectors returns every metric selector of a PromQL expression: each
// mutexd_, go_ or process_ metric name with its {matchers}, or the bare
// name when it has none.
func selectors(expr string) []string {
	return regexp.MustCompile(`\b(?:mutexd|go|process)_\w+(?:\{[^}]*\})?`).FindAllString(expr, -1)
}

// overlaps reports panels placed on top of each other.
func overlaps(t *testing.T, ps []panel) {
	t.Helper()
	for i, a := range ps {
		for _, b := range ps[i+1:] {
			ga, gb := a.GridPos, b.GridPos
			if ga.X < gb.X+gb.W && gb.X < ga.X+ga.W && ga.Y < gb.Y+gb.H && gb.Y < ga.Y+ga.H {
				t.Errorf("panels %q and %q overlap", a.Title, b.Title)
			}
		}
	}
}

// exportedFamilies lists the metric names a daemon's registry exposes,
// histograms with their _bucket, _count and _sum series.
func exportedFamilies(t *testing.T) map[string]bool {
	t.Helper()
	m := metrics.New(metrics.Options{NamespaceSeparator: ":", MaxNamespaces: 10, Version: "test"})
	m.Watch(metrics.Sources{Engine: fakeSource{}})
	m.OnEvent(engine.Event{Type: engine.EventGranted, Key: "a:1"})
	m.Route("/v1/locks/:key/acquire", "POST", []int{200, 423}).Observe(200, time.Millisecond)
	m.Cluster([]string{"acquire"})
	m.WatchCluster(fakeCluster{})
	// An agent's own metrics, on the same kind of registry.
	a, err := agent.New(agent.Config{Servers: []string{"http://127.0.0.1:1"}, Registerer: m.Registry(), ProbeInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	a.Close()
	fams, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	known := map[string]bool{}
	for _, f := range fams {
		known[f.GetName()] = true
		if f.GetType().String() == "HISTOGRAM" || f.GetType().String() == "SUMMARY" {
			for _, s := range []string{"_bucket", "_count", "_sum"} {
				known[f.GetName()+s] = true
			}
		}
	}
	for _, name := range []string{"mutexd_keys", "mutexd_wait_duration_seconds", "mutexd_raft_follower_lag_entries", "mutexd_agent_failovers_total", "go_goroutines", "process_resident_memory_bytes"} {
		if !known[name] {
			t.Fatalf("the registry lacks %s: exportedFamilies no longer sees every family", name)
		}
	}
	return known
}

// fakeSource is an idle engine for exportedFamilies.
type fakeSource struct{}

func (fakeSource) Stats() engine.Stats                                { return engine.Stats{} }
func (fakeSource) EachOldestWaiter(func(key string, since time.Time)) {}

// fakeCluster is the leader of two servers, for exportedFamilies.
type fakeCluster struct{}

func (fakeCluster) RaftStats() metrics.RaftStats { return metrics.RaftStats{State: "leader"} }
func (fakeCluster) Peers(context.Context) []metrics.Peer {
	return []metrics.Peer{{ID: "n1", Self: true, Voter: true, State: "leader"}, {ID: "n2", Voter: true, State: "follower"}}
}

// TestAlertRules checks every alert carries what the on-call person needs
// (severity, summary, description, a runbook that exists), that the
// required alerts exist, and that alerts_test.yml tests each one both
// firing and not firing.
func TestAlertRules(t *testing.T) {
	runbook := string(readFile(t, "deploy/README.md"))
	readme := string(readFile(t, "docs/operations.md"))
	names := alertNames(t)
	for _, want := range []string{"MutexdDown", "MutexdWaitTimeHigh", "MutexdLeaseExpirations", "MutexdQueueBacklog", "MutexdTimeoutsHigh"} {
		if !slices.Contains(names, want) {
			t.Errorf("alert %s missing from alerts.yml", want)
		}
	}
	for _, r := range alertRules(t) {
		if r.Labels["severity"] == "" {
			t.Errorf("%s: no severity label", r.Alert)
		}
		for _, a := range []string{"summary", "description", "runbook_url"} {
			if strings.TrimSpace(r.Annotations[a]) == "" {
				t.Errorf("%s: no %s annotation", r.Alert, a)
			}
		}
		// runbook_url is the name Alertmanager integrations, Grafana and
		// the Prometheus Operator's runbooks use; it must be a URL
		// anyone can open, all with one base a sed can replace.
		if want := runbookBase(t) + "#" + strings.ToLower(r.Alert); r.Annotations["runbook_url"] != want {
			t.Errorf("%s: runbook_url %q, want %q", r.Alert, r.Annotations["runbook_url"], want)
		}
		if _, ok := r.Annotations["runbook"]; ok {
			t.Errorf("%s: a runbook annotation besides runbook_url; keep one", r.Alert)
		}
		if !strings.Contains(readme, "| `"+r.Alert+"` |") {
			t.Errorf("%s: not in docs/operations.md's table of alerts", r.Alert)
		}
		if !strings.Contains(runbook, "\n### "+r.Alert+"\n") {
			t.Errorf("%s: deploy/README.md has no section \"### %s\"", r.Alert, r.Alert)
		}
	}

	var tests struct {
		Tests []struct {
			AlertRuleTest []struct {
				Alertname string `yaml:"alertname"`
				ExpAlerts []any  `yaml:"exp_alerts"`
			} `yaml:"alert_rule_test"`
		} `yaml:"tests"`
	}
	unmarshalYAML(t, "deploy/prometheus/alerts_test.yml", &tests)
	firing, quiet := map[string]bool{}, map[string]bool{}
	for _, tc := range tests.Tests {
		for _, a := range tc.AlertRuleTest {
			if len(a.ExpAlerts) > 0 {
				firing[a.Alertname] = true
			} else {
				quiet[a.Alertname] = true
			}
		}
	}
	for _, name := range names {
		if !firing[name] || !quiet[name] {
			t.Errorf("alerts_test.yml tests %s firing: %v, not firing: %v; want both", name, firing[name], quiet[name])
		}
	}
}

// runbookBase is the URL of deploy/README.md in the module's repository
// (go.mod names it), which alerts.yml documents how to replace.
func runbookBase(t *testing.T) string {
	t.Helper()
	m := regexp.MustCompile(`(?m)^module (github\.com/\S+)$`).FindSubmatch(readFile(t, "go.mod"))
	if m == nil {
		t.Fatal("go.mod names no github.com module")
	}
	base := "https://" + string(m[1]) + "/blob/main/deploy/README.md"
	if !strings.Contains(string(readFile(t, "deploy/prometheus/alerts.yml")), "sed -i 's#"+base+"#") {
		t.Errorf("alerts.yml does not show how to replace the runbook base %s", base)
	}
	return base
}

type alertRule struct {
	Alert       string            `yaml:"alert"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

func alertRules(t *testing.T) []alertRule {
	t.Helper()
	var f struct {
		Groups []struct {
			Rules []alertRule `yaml:"rules"`
		} `yaml:"groups"`
	}
	unmarshalYAML(t, "deploy/prometheus/alerts.yml", &f)
	var out []alertRule
	for _, g := range f.Groups {
		out = append(out, g.Rules...)
	}
	return out
}

func alertNames(t *testing.T) []string {
	t.Helper()
	var out []string
	for _, r := range alertRules(t) {
		out = append(out, r.Alert)
	}
	if len(out) == 0 {
		t.Fatal("alerts.yml has no alerts")
	}
	return out
}

func unmarshalYAML(t *testing.T, rel string, out any) {
	t.Helper()
	if err := yaml.Unmarshal(readFile(t, rel), out); err != nil {
		t.Fatalf("%s: %v", rel, err)
	}
}
