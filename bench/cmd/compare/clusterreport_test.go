package main

import (
	"strings"
	"testing"
	"time"

	"github.com/mutexd/mutexd/internal/loadgen"
)

// syntheticCluster is two repetitions of every cluster scenario, where
// mutexd does mutexdX times etcd's throughput, plus failovers and an idle run.
func syntheticCluster(systems []string, mutexdX float64, killRecovery time.Duration, idle time.Duration) (clusterResults, clusterOptions) {
	o := clusterOptions{systems: systems, reps: 2, duration: 5 * time.Second, failoverReps: 2, idle: idle, fifoMargin: 10 * time.Millisecond}
	var res clusterResults
	for rep := range o.reps {
		for _, sc := range clusterScenarios {
			for _, sys := range systems {
				base := 1000.0
				if sys == "mutexd" {
					base *= mutexdX
				}
				r := &loadgen.Result{CyclesPerSec: base, HandoffsPerSec: base, Fairness: 0.999,
					Acquire: loadgen.Summary{P50: time.Millisecond, P99: 4 * time.Millisecond}}
				run := clusterRun{Scenario: sc.Name, System: sys, Rep: rep, Result: r}
				if sc.Kind == "contended" {
					run.FIFO = &fifoResult{Grants: 5000, Margin: o.fifoMargin}
				}
				res.Runs = append(res.Runs, run)
			}
		}
	}
	for rep := range o.failoverReps {
		for _, sys := range systems {
			res.Failovers = append(res.Failovers,
				failoverRun{System: sys, Signal: "kill", Rep: rep, Outage: outage{Recovery: killRecovery, Pause: killRecovery}, NewLeader: killRecovery / 2, Terms: 1},
				failoverRun{System: sys, Signal: "term", Rep: rep, Outage: outage{Recovery: 100 * time.Millisecond, Pause: 120 * time.Millisecond}, Terms: 1})
		}
	}
	for _, sys := range systems {
		res.Idle = append(res.Idle, idleRun{System: sys, Duration: idle, TermBefore: 3, TermAfter: 3})
	}
	return res, o
}

func TestClusterTargets(t *testing.T) {
	e := env{Date: "today", Commit: "abc", Etcd: "etcd Version: 3.4", Go: "go", Cores: "2"}
	verdicts := func(res clusterResults, o clusterOptions) map[string]string {
		out := map[string]string{}
		for _, t := range newClusterReport(res, o, e).targets() {
			out[t[0]] = t[3]
		}
		return out
	}
	const (
		uncontended = "uncontended cycles/s, C=64"
		hot         = "hand-offs/s, one hot key, C=16"
		fifo        = "FIFO and fairness, one hot key, C=16"
		kill        = "kill -9 of the leader under load → first successful acquire through a surviving member"
		term        = "SIGTERM of the leader under load: acquires paused"
		idle        = "leader elections without faults (term changes)"
	)
	tests := []struct {
		name string
		res  func() (clusterResults, clusterOptions)
		want map[string]string
	}{
		{"all met", func() (clusterResults, clusterOptions) {
			return syntheticCluster([]string{"mutexd", "etcd"}, 12, 2*time.Second, 10*time.Minute)
		}, map[string]string{uncontended: "yes", hot: "yes", fifo: "yes", kill: "yes", term: "yes", idle: "yes"}},
		{"slow and a long failover, short idle", func() (clusterResults, clusterOptions) {
			return syntheticCluster([]string{"mutexd", "etcd"}, 1.2, 4*time.Second, 10*time.Second)
		}, map[string]string{uncontended: "**no**", hot: "**no**", kill: "**no**", idle: "– (short run)"}},
		{"an overtaken grant breaks FIFO", func() (clusterResults, clusterOptions) {
			res, o := syntheticCluster([]string{"mutexd", "etcd"}, 12, time.Second, 10*time.Minute)
			for i := range res.Runs {
				if res.Runs[i].FIFO != nil && res.Runs[i].System == "mutexd" && res.Runs[i].Rep == 1 {
					res.Runs[i].FIFO.Overtaken = 1
				}
			}
			return res, o
		}, map[string]string{fifo: "**no**", hot: "yes"}},
		{"a failed failover", func() (clusterResults, clusterOptions) {
			res, o := syntheticCluster([]string{"mutexd", "etcd"}, 12, time.Second, 10*time.Minute)
			res.Failovers[0].Err = "no acquire"
			return res, o
		}, map[string]string{kill: "**no**", term: "yes"}},
		{"etcd alone has no mutexd targets", func() (clusterResults, clusterOptions) {
			return syntheticCluster([]string{"etcd"}, 1, time.Second, 10*time.Second)
		}, map[string]string{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, o := tt.res()
			got := verdicts(res, o)
			for k, want := range tt.want {
				if got[k] != want {
					t.Errorf("%q: %q, want %q", k, got[k], want)
				}
			}
			if len(tt.want) == 0 && len(got) != 0 {
				t.Errorf("targets = %v, want none", got)
			}
			md := clusterMarkdown(res, o, e)
			if !strings.HasPrefix(md, clusterHeading+"\n") || strings.Count(md, "\n## ") != 0 {
				t.Errorf("the section must start with %q and hold no other ## section:\n%s", clusterHeading, md)
			}
			for _, sys := range o.systems {
				if !strings.Contains(md, "| hot key C=16 | "+sys+" |") {
					t.Errorf("no hot key row for %s:\n%s", sys, md)
				}
			}
		})
	}
}
