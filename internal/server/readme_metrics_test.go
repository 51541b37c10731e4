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

// TestReadmeListsExactlyTheExportedMetrics compares docs/metrics.md's
// table with what a real daemon's /metrics exposes: every mutexd_ family
// it serves is listed with its type, every listed one is served, and every
// other family (besides the go_ and process_ collectors) is named in the
// README's Metrics section too.
func TestReadmeListsExactlyTheExportedMetrics(t *testing.T) {
	_, base, _, _ := start(t, config.Default())
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

	raw, err := os.ReadFile("../../docs/metrics.md")
	if err != nil {
		t.Fatal(err)
	}
	section := string(raw)
	row := regexp.MustCompile("(?m)^\\| `(mutexd_[a-z_]+)[^`]*` \\| ([a-z]+) \\|")
	listed := map[string]string{}
	for _, m := range row.FindAllStringSubmatch(section, -1) {
		listed[m[1]] = m[2]
	}
	if len(listed) == 0 {
		t.Fatal("no metric rows found in docs/metrics.md")
	}
	for name, typ := range served {
		switch {
		case strings.HasPrefix(name, "go_"), strings.HasPrefix(name, "process_"):
		case strings.HasPrefix(name, "mutexd_"):
			if got, ok := listed[name]; !ok {
				t.Errorf("/metrics serves %s (%s); docs/metrics.md's table does not list it", name, typ)
			} else if got != typ {
				t.Errorf("docs/metrics.md lists %s as a %s; /metrics serves a %s", name, got, typ)
			}
		case !strings.Contains(section, "`"+name+"`"):
			t.Errorf("/metrics serves %s (%s); docs/metrics.md does not mention it", name, typ)
		}
	}
	for name := range listed {
		if _, ok := served[name]; !ok {
			t.Errorf("docs/metrics.md lists %s; /metrics does not serve it", name)
		}
	}
}
