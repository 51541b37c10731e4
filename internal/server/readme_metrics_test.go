package server_test

import (
	"bufio"
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/mutexd/mutexd/internal/config"
)

// clusterHeading starts docs/metrics.md's section of a cluster server's
// own metrics.
const (
	clusterHeading = "\n## Cluster metrics\n"
	agentHeading   = "\n## Agent metrics\n"
)

// servedFamilies returns the families base's /metrics serves, by type.
func servedFamilies(t *testing.T, base string) map[string]string {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	served := map[string]string{} // family -> type
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 4 && f[0] == "#" && f[1] == "TYPE" {
			served[f[2]] = f[3]
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return served
}

// listedFamilies returns the metrics a part of docs/metrics.md lists in
// its tables, by type.
func listedFamilies(t *testing.T, section string) map[string]string {
	t.Helper()
	row := regexp.MustCompile("(?m)^\\| `(mutexd_[a-z_]+)[^`]*` \\| ([a-z]+) \\|")
	listed := map[string]string{}
	for _, m := range row.FindAllStringSubmatch(section, -1) {
		listed[m[1]] = m[2]
	}
	if len(listed) == 0 {
		t.Fatal("no metric rows found in docs/metrics.md")
	}
	return listed
}

// TestReadmeListsExactlyTheExportedMetrics compares docs/metrics.md's
// tables with what real daemons' /metrics expose: every mutexd_ family a
// standalone daemon serves is listed with its type before the cluster
// section, every one listed there is served, and every other family
// (besides the go_ and process_ collectors) is named in it too; a cluster
// server serves those and exactly the cluster section's.
func TestReadmeListsExactlyTheExportedMetrics(t *testing.T) {
	raw, err := os.ReadFile("../../docs/metrics.md")
	if err != nil {
		t.Fatal(err)
	}
	standalone, clusterPart, ok := strings.Cut(string(raw), clusterHeading)
	if !ok {
		t.Fatalf("docs/metrics.md has no section %q", strings.TrimSpace(clusterHeading))
	}
	clusterPart, agentPart, ok := strings.Cut(clusterPart, agentHeading)
	if !ok {
		t.Fatalf("docs/metrics.md has no section %q after the cluster's", strings.TrimSpace(agentHeading))
	}
	// An agent may leave out any of a standalone daemon's families (it has
	// no engine), but must serve every one of the agent section's.
	agentAbsent := map[string]bool{}
	for name := range listedFamilies(t, standalone) {
		agentAbsent[name] = true
	}
	for _, c := range []struct {
		name    string
		cfg     config.Config
		section string // what the daemon's families are described in
		listed  map[string]string
		// absent are listed families the daemon need not serve here.
		absent map[string]bool
	}{
		{"standalone", config.Default(), standalone, listedFamilies(t, standalone), nil},
		{"cluster server", oneNodeCluster(t), string(raw), merge(listedFamilies(t, standalone), listedFamilies(t, clusterPart)),
			// A one-server cluster has no follower: the deploy tests'
			// three-server cluster shows it.
			map[string]bool{"mutexd_raft_follower_lag_entries": true}},
		{"agent", agentConfig(t), standalone + agentPart, merge(listedFamilies(t, standalone), listedFamilies(t, agentPart)), agentAbsent},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, base, _, _ := start(t, c.cfg)
			served := servedFamilies(t, base)
			for name, typ := range served {
				switch {
				case strings.HasPrefix(name, "go_"), strings.HasPrefix(name, "process_"):
				case strings.HasPrefix(name, "mutexd_"):
					if got, ok := c.listed[name]; !ok {
						t.Errorf("/metrics serves %s (%s); docs/metrics.md's table does not list it", name, typ)
					} else if got != typ {
						t.Errorf("docs/metrics.md lists %s as a %s; /metrics serves a %s", name, got, typ)
					}
				case !strings.Contains(c.section, "`"+name+"`"):
					t.Errorf("/metrics serves %s (%s); docs/metrics.md does not mention it", name, typ)
				}
			}
			for name := range c.listed {
				if _, ok := served[name]; !ok && !c.absent[name] {
					t.Errorf("docs/metrics.md lists %s; /metrics does not serve it", name)
				}
			}
		})
	}
}

// agentConfig is an agent in front of a standalone daemon (its /readyz
// is what the agent's readiness follows).
func agentConfig(t *testing.T) config.Config {
	_, base, _, _ := start(t, config.Default())
	c := config.Default()
	c.Cluster.Role = "agent"
	c.Cluster.Servers = []string{base}
	return c
}

func merge(ms ...map[string]string) map[string]string {
	out := map[string]string{}
	for _, m := range ms {
		for k, v := range m {
			out[k] = v
		}
	}
	return out
}
