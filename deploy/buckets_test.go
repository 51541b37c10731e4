package deploy_test

import (
	"regexp"
	"slices"
	"strconv"
	"testing"

	"github.com/mutexd/mutexd/internal/metrics"
)

// bucketsOf are the upper bounds each histogram of mutexd exports.
var bucketsOf = map[string][]float64{
	"mutexd_wait_duration_seconds":         metrics.DurationBuckets,
	"mutexd_hold_duration_seconds":         metrics.DurationBuckets,
	"mutexd_http_request_duration_seconds": metrics.HTTPBuckets,
}

// TestBucketsCoverTheDeployFiles keeps the histograms' buckets, cut to what
// the deploy files read, in step with them: every le a rule, a panel or a
// rule test names is a bucket the daemon exports (a rule test with made-up
// buckets would prove nothing about the real series), and every threshold
// an alert compares a histogram_quantile with is a bucket bound, so the
// quantile is exact there rather than interpolated across a wide bucket.
func TestBucketsCoverTheDeployFiles(t *testing.T) {
	leRE := regexp.MustCompile(`(mutexd_\w+)_bucket\{[^}]*\ble="([^"]+)"`)
	for _, f := range []string{"deploy/prometheus/alerts.yml", "deploy/prometheus/alerts_test.yml", "deploy/grafana/mutexd.json"} {
		for _, m := range leRE.FindAllStringSubmatch(string(readFile(t, f)), -1) {
			bounds, ok := bucketsOf[m[1]]
			if !ok {
				t.Errorf("%s: %s_bucket is not a histogram mutexd exports", f, m[1])
				continue
			}
			if m[2] == "+Inf" {
				continue
			}
			if v, err := strconv.ParseFloat(m[2], 64); err != nil || !slices.Contains(bounds, v) {
				t.Errorf("%s: %s_bucket{le=%q}: not a bucket mutexd exports (%v)", f, m[1], m[2], bounds)
			}
		}
	}

	var rules struct {
		Groups []struct {
			Rules []struct{ Alert, Expr string }
		}
	}
	unmarshalYAML(t, "deploy/prometheus/alerts.yml", &rules)
	quantileRE := regexp.MustCompile(`(?s)histogram_quantile\(.*?(mutexd_\w+)_bucket.*\)\s*>\s*([0-9.]+)\s*$`)
	n := 0
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			m := quantileRE.FindStringSubmatch(r.Expr)
			if m == nil {
				continue
			}
			n++
			v, _ := strconv.ParseFloat(m[2], 64)
			if !slices.Contains(bucketsOf[m[1]], v) {
				t.Errorf("alert %s compares a quantile of %s with %s, not a bucket bound (%v)", r.Alert, m[1], m[2], bucketsOf[m[1]])
			}
		}
	}
	if n == 0 {
		t.Error("no alert compares a histogram_quantile with a threshold: the check above saw nothing")
	}
}
