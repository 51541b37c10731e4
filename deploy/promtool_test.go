package deploy_test

import (
	"strings"
	"testing"
)

// TestPromtool checks the shipped Prometheus configurations (of
// docker-compose.yml and docker-compose.cluster.yml) and alert rules
// with promtool, and runs the rules' unit tests (alerts_test.yml: every
// alert firing and not firing).
func TestPromtool(t *testing.T) {
	promtool := tool(t, "promtool")
	dir := repoFile(t, "deploy/prometheus")
	for _, args := range [][]string{
		{"check", "config", "prometheus.yml"},
		{"check", "config", "prometheus-cluster.yml"},
		{"check", "rules", "alerts.yml"},
		{"test", "rules", "alerts_test.yml"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			out := runTool(t, dir, nil, promtool, args...)
			t.Logf("promtool %v:\n%s", args, out)
		})
	}
}
