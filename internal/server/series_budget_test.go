package server_test

import (
	"bufio"
	"fmt"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/mutexd/mutexd/internal/config"
)

// mutexdSeries scrapes base's /metrics and counts its mutexd_ series (a
// histogram's every bucket, _sum and _count included), by the part of
// the exposition they belong to: "http" for mutexd_http_*, "lock" for the
// rest.
func mutexdSeries(t *testing.T, base string) (http_, lock int) {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		switch l := sc.Text(); {
		case strings.HasPrefix(l, "mutexd_http_"):
			http_++
		case strings.HasPrefix(l, "mutexd_"):
			lock++
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return http_, lock
}

// readmeBudget reads the series budget table of docs/metrics.md's
// section: the number in the row whose first cell starts with row.
func readmeBudget(t *testing.T, row string) int {
	t.Helper()
	raw, err := os.ReadFile("../../docs/metrics.md")
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`(?m)^\| ` + regexp.QuoteMeta(row) + `[^|]*\| ([0-9,]+) \|`)
	m := re.FindStringSubmatch(string(raw))
	if m == nil {
		t.Fatalf("docs/metrics.md has no series budget row %q (| %s … | <number> |)", row, row)
	}
	n, err := strconv.Atoi(strings.ReplaceAll(m[1], ",", ""))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestMetricsSeriesBudget holds /metrics to the series budget the README
// states: what a daemon with the default configuration exports at start,
// what each lock namespace adds (measured with 1 and with N namespaces, so
// a series created per namespace on first use is caught too), and the
// total at the namespace cap. Requests that answer only pre-created codes
// leave the HTTP series as they were.
func TestMetricsSeriesBudget(t *testing.T) {
	cfg := config.Default()
	_, base, _, _ := start(t, cfg)
	perNS := readmeBudget(t, "each lock namespace")

	http0, lock0 := mutexdSeries(t, base)
	if want := readmeBudget(t, "at start"); http0+lock0 != want {
		t.Errorf("at start: %d mutexd_ series (%d HTTP), docs/metrics.md says %d", http0+lock0, http0, want)
	}
	acquire := func(ns int) {
		t.Helper()
		if code, body := post(t, fmt.Sprintf("%s/v1/locks/ns%d:k/acquire?ttl=1m&wait=0", base, ns)); code != http.StatusOK {
			t.Fatalf("acquire in ns%d: %d %v", ns, code, body)
		}
	}
	acquire(0)
	http1, lock1 := mutexdSeries(t, base)
	if got := lock1 - lock0; got != perNS {
		t.Errorf("one lock namespace added %d series, docs/metrics.md says %d", got, perNS)
	}
	if http1 != http0 {
		t.Errorf("HTTP series went from %d to %d on requests with pre-created codes", http0, http1)
	}
	const n = 10
	for ns := 1; ns < n; ns++ {
		acquire(ns)
	}
	if _, lockN := mutexdSeries(t, base); lockN-lock0 != n*perNS {
		t.Errorf("%d lock namespaces added %d series, want %d × %d = %d", n, lockN-lock0, n, perNS, n*perNS)
	}
	for ns := n; ns < cfg.Metrics.MaxNamespaces+5; ns++ { // past the cap: _other
		acquire(ns)
	}
	httpCap, lockCap := mutexdSeries(t, base)
	if want := lock0 + cfg.Metrics.MaxNamespaces*perNS; lockCap != want {
		t.Errorf("at the namespace cap: %d lock series, want %d + %d × %d = %d", lockCap, lock0, cfg.Metrics.MaxNamespaces, perNS, want)
	}
	if want := readmeBudget(t, "at the namespace cap"); httpCap+lockCap != want {
		t.Errorf("at the namespace cap: %d mutexd_ series, docs/metrics.md says %d", httpCap+lockCap, want)
	}
	t.Logf("mutexd_ series: %d at start (%d HTTP), %d per lock namespace, %d at the cap of %d namespaces",
		http0+lock0, http0, perNS, httpCap+lockCap, cfg.Metrics.MaxNamespaces)
}
