package main

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// clusterReport is the figures of one cluster comparison, reduced to
// medians over the repetitions.
type clusterReport struct {
	*report // the load runs, through the standalone report's medians and ratios
	res     clusterResults
	o       clusterOptions
}

func newClusterReport(res clusterResults, o clusterOptions, e env) *clusterReport {
	scs := slices.Clone(clusterScenarios)
	for i := range scs {
		scs[i].Systems = o.systems
	}
	var runs []run
	for _, x := range res.Runs {
		runs = append(runs, run{Scenario: x.Scenario, System: x.System, Rep: x.Rep, Result: x.Result})
	}
	return &clusterReport{report: newReport(scs, runs, o.reps, o.duration, nil, e), res: res, o: o}
}

// fifo sums the FIFO checks of a scenario's runs on sys.
func (r *clusterReport) fifo(scenario, sys string) (f fifoResult, ok bool) {
	for _, x := range r.res.Runs {
		if x.Scenario == scenario && x.System == sys && x.FIFO != nil {
			f.Grants += x.FIFO.Grants
			f.Overtaken += x.FIFO.Overtaken
			f.DuplicateFences += x.FIFO.DuplicateFences
			f.Margin = x.FIFO.Margin
			ok = true
		}
	}
	return f, ok
}

// failoverStats is the outages of one system and signal over the repetitions.
type failoverStats struct {
	n, failed                   int
	recovery, pauses, newLeader []time.Duration
	terms                       []int64
}

func (r *clusterReport) failovers(sys, signal string) failoverStats {
	var s failoverStats
	for _, f := range r.res.Failovers {
		if f.System != sys || f.Signal != signal {
			continue
		}
		s.n++
		if f.Err != "" {
			s.failed++
			continue
		}
		s.recovery = append(s.recovery, f.Outage.Recovery)
		s.pauses = append(s.pauses, f.Outage.Pause)
		if f.NewLeader > 0 {
			s.newLeader = append(s.newLeader, f.NewLeader)
		}
		s.terms = append(s.terms, int64(f.Terms))
	}
	return s
}

// fullIdle is the idle run the target asks for.
const fullIdle = 10 * time.Minute

func (r *clusterReport) targets() [][4]string {
	var out [][4]string
	has := func(sys string) bool { return slices.Contains(r.o.systems, sys) }
	if c := r.cell("uncontended C=64", "mutexd"); c != nil {
		measured := fmt.Sprintf("%.0f/s", c.cycles)
		met := "–"
		if x, ok := r.ratio("uncontended C=64", "mutexd", "etcd", cyclesOf); ok {
			measured = fmt.Sprintf("%.2f × etcd (%.0f/s vs %.0f/s)", x, c.cycles, r.cell("uncontended C=64", "etcd").cycles)
			met = yes(x >= 1.5)
		}
		out = append(out, [4]string{"uncontended cycles/s, C=64", "≥ 1.5 × etcd", measured, met})
		c1 := r.cell("uncontended C=1", "mutexd")
		out = append(out, [4]string{"commit latency p50 (proxy: acquire p50, one Raft commit plus one HTTP round trip)", "≤ 2 ms",
			fmt.Sprintf("%s at C=64 (%s at C=1)", ms(c.acqP50), ms(c1.acqP50)), yes(c.acqP50 <= 2*time.Millisecond)})
	}
	if c := r.cell("hot key C=16", "mutexd"); c != nil {
		measured, met := fmt.Sprintf("%.0f/s", c.handoffs), yes(c.handoffs >= 1000)
		if x, ok := r.ratio("hot key C=16", "mutexd", "etcd", handoffsOf); ok {
			measured = fmt.Sprintf("%.0f/s, %.1f × etcd (%.0f/s)", c.handoffs, x, r.cell("hot key C=16", "etcd").handoffs)
			met = yes(c.handoffs >= 1000 && x >= 10)
		}
		out = append(out, [4]string{"hand-offs/s, one hot key, C=16", "≥ 1,000/s and ≥ 10 × etcd", measured, met})
		f, _ := r.fifo("hot key C=16", "mutexd")
		share := 0.0
		if c.cycles > 0 {
			share = c.handoffs / c.cycles
		}
		out = append(out, [4]string{"FIFO and fairness, one hot key, C=16", "strictly FIFO, Jain ≥ 0.99",
			fmt.Sprintf("%d of %d grants overtaken, %.3f owner changes per grant, Jain %.4f, %d overlaps", f.Overtaken, f.Grants, share, c.jain, c.overlaps),
			yes(f.strict() && f.Grants > 0 && share >= 0.99 && c.jain >= 0.99 && c.overlaps == 0)})
	}
	if has("mutexd") && len(r.res.Failovers) > 0 {
		peer := func(signal string, f func([]time.Duration) time.Duration) string {
			if !has("etcd") {
				return ""
			}
			s := r.failovers("etcd", signal)
			return fmt.Sprintf("; etcd %s", ms(f(s.recovery)))
		}
		k := r.failovers("mutexd", "kill")
		p99 := percentile(k.recovery, 0.99)
		out = append(out, [4]string{"kill -9 of the leader under load → first successful acquire through a surviving member", "p99 ≤ 3 s",
			fmt.Sprintf("p99 %s over %d (%d failed)%s", ms(p99), k.n, k.failed, peer("kill", func(xs []time.Duration) time.Duration { return percentile(xs, 0.99) })),
			yes(k.n > 0 && k.failed == 0 && p99 <= 3*time.Second)})
		t := r.failovers("mutexd", "term")
		pause := percentile(t.pauses, 0.99)
		etcdPause := ""
		if has("etcd") {
			etcdPause = fmt.Sprintf("; etcd %s", ms(percentile(r.failovers("etcd", "term").pauses, 0.99)))
		}
		out = append(out, [4]string{"SIGTERM of the leader under load: acquires paused", "≤ 300 ms",
			fmt.Sprintf("p99 %s over %d (%d failed)%s", ms(pause), t.n, t.failed, etcdPause), yes(t.n > 0 && t.failed == 0 && pause <= 300*time.Millisecond)})
	}
	for _, i := range r.res.Idle {
		if i.System != "mutexd" {
			continue
		}
		met := yes(i.TermAfter == i.TermBefore)
		if i.Duration < fullIdle {
			met = "– (short run)"
		}
		measured := fmt.Sprintf("%d in %s", i.TermAfter-i.TermBefore, i.Duration)
		for _, e := range r.res.Idle {
			if e.System == "etcd" {
				measured += fmt.Sprintf("; etcd %d", e.TermAfter-e.TermBefore)
			}
		}
		out = append(out, [4]string{"leader elections without faults (term changes)", "0 in 10 minutes", measured, met})
	}
	return out
}

// clusterMarkdown is the cluster section of BENCHMARKS.md.
func clusterMarkdown(res clusterResults, o clusterOptions, e env) string {
	r := newClusterReport(res, o, e)
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	commit := e.Commit
	if e.Dirty {
		commit += " with uncommitted changes"
	}
	p("%s\n\n", clusterHeading)
	p("Generated by `make bench-cluster` (`bench/run.sh -systems cluster`) on %s, mutexd at commit %s, %s (Debian's etcd-server, client go.etcd.io/etcd/client/v3 `concurrency.Mutex`), Go %s, %s cores shared by the clusters' members and the load generator over loopback. Systems: %s. ",
		e.Date, commit, e.Etcd, e.Go, e.Cores, strings.Join(o.systems, ", "))
	p("Both clusters have three members on 127.0.0.1 with durable storage in their own data directories (mutexd: Raft log and snapshots in bbolt; etcd: its fsynced WAL) and their default timeouts (etcd: heartbeat 100 ms, election 1 s; mutexd: the defaults of `cluster.heartbeat_timeout` and `cluster.election_timeout` unless `MUTEXD_CLUSTER_*` was set in the environment). ")
	p("Client *i* speaks to member *i* mod 3, so two clients in three go through a follower. Load figures are medians of %d interleaved repetitions of %s each (the systems' order rotating), and a `×` is the median of the per-repetition ratios mutexd / etcd, not the quotient of the medians.\n\n", o.reps, o.duration)

	p("| target | goal | measured | met |\n|---|---|---|---|\n")
	targets := r.targets()
	for _, t := range targets {
		p("| %s | %s | %s | %s |\n", t[0], t[1], t[2], t[3])
	}
	if len(targets) == 0 {
		p("| every target | | mutexd did not run | – |\n")
	}

	margin := o.fifoMargin
	p("\n### Load\n\nA cycle is one acquire and one release. *Hand-offs* are grants to another client than the previous holder. *Overtaken* counts grants of the hot key that came (in fence order: mutexd's fence, etcd's revision at the grant) after a grant whose request was sent more than %s later: the client sees when it sent, not when the server queued, so only requests that far apart are known to be ordered. Jain's index is over the clients' cycle counts.\n\n", ms(margin))
	p("| scenario | system | cycles/s | hand-offs/s | × etcd | acquire p50 | acquire p99 | cycle p99 | Jain | overtaken / grants | errors |\n|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, sc := range r.scs {
		for _, sys := range sc.Systems {
			c := r.cell(sc.Name, sys)
			if c == nil || c.n == 0 {
				continue
			}
			f := throughputOf(sc.Kind)
			ratio := "–"
			if x, ok := r.ratio(sc.Name, sys, "etcd", f); ok && sys != "etcd" {
				ratio = fmt.Sprintf("%.2f", x)
			}
			fifo := "–"
			if fr, ok := r.fifo(sc.Name, sys); ok {
				fifo = fmt.Sprintf("%d / %d", fr.Overtaken, fr.Grants)
				if fr.DuplicateFences > 0 {
					fifo += fmt.Sprintf(", %d DUPLICATE FENCES", fr.DuplicateFences)
				}
			}
			p("| %s | %s | %.0f | %.0f | %s | %s | %s | %s | %.4f | %s | %s |\n", sc.Name, sys, c.cycles, c.handoffs, ratio,
				ms(c.acqP50), ms(c.acqP99), ms(c.cycP99), c.jain, fifo, errs(c))
		}
	}

	if len(res.Failovers) > 0 {
		p("\n### Failover\n\nWhile 16 clients cycle on their own keys through the two other members, the leader (GET /v1/cluster `leader_id` for mutexd, the members' status for etcd) gets SIGKILL (`kill -9`) or SIGTERM. %d probe clients per surviving member (the load's own sessions) acquire and release fresh keys back to back, each attempt bounded by 1 s. *First acquire* is the time from the signal to the answer of the first successful acquire sent after it; *longest pause* is the longest stretch without a successful acquire answer from 1 s before the signal to that first answer. *New leader* is from the signal to the first status of a surviving member naming another leader (polled every few milliseconds while waiting, so an election that outlasts the first acquire is not seen), and *terms* is how far the Raft term rose by the recovery (the elections it took, at least). The leader is then started again on its data and the cluster waits until whole. A p99 over a handful of runs is the nearest rank: with fewer than 100 runs it is the largest.\n\n", probesPerMember)
		p("| system | signal | runs | first acquire p50 | p99 | max | longest pause p50 | p99 | new leader p50 | terms (median) | failed |\n|---|---|---|---|---|---|---|---|---|---|---|\n")
		for _, sig := range []string{"kill", "term"} {
			for _, sys := range o.systems {
				s := r.failovers(sys, sig)
				if s.n == 0 {
					continue
				}
				p("| %s | %s | %d | %s | %s | %s | %s | %s | %s | %d | %d |\n", sys, map[string]string{"kill": "SIGKILL", "term": "SIGTERM"}[sig], s.n,
					ms(percentile(s.recovery, 0.5)), ms(percentile(s.recovery, 0.99)), ms(slices.Max(append(s.recovery, 0))),
					ms(percentile(s.pauses, 0.5)), ms(percentile(s.pauses, 0.99)), ms(percentile(s.newLeader, 0.5)), median(s.terms), s.failed)
			}
		}
	}

	if len(res.Idle) > 0 {
		p("\n### Without faults\n\nThe Raft term of every live member, highest, before and after %s without load or faults: every election raises it at least by one.", res.Idle[0].Duration)
		if res.Idle[0].Duration < fullIdle {
			p(" This was a short run; the target's is `-idle 10m`.")
		}
		p("\n\n| system | term before | term after | elections (at least) |\n|---|---|---|---|\n")
		for _, i := range res.Idle {
			p("| %s | %d | %d | %d |\n", i.System, i.TermBefore, i.TermAfter, i.TermAfter-i.TermBefore)
		}
	}

	p("\n### How to rerun\n\n```sh\nmake bench-cluster                                  # -reps 3 -duration 5s -failover-reps 5 -idle 10s\nmake bench-cluster CLUSTER_FLAGS='-idle 10m'        # with the target's 10 minutes without faults\nbench/run.sh -systems cluster -cluster-systems etcd # one side alone\n```\n\n")
	p("It builds mutexd, starts both clusters on free loopback ports, drives them through `internal/loadgen` (etcd through `bench/peers`) and rewrites only this section of BENCHMARKS.md; a standalone run (`bench/run.sh`) keeps it.\n")
	return b.String()
}
