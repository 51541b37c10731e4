package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/mutexd/mutexd/internal/loadgen"
)

// clusterHeading starts the cluster section of BENCHMARKS.md; a run of the
// cluster scenarios rewrites only that section, and a run of the
// standalone ones keeps it.
const clusterHeading = "## Cluster: mutexd 3 servers vs etcd 3 members"

// clusterOptions are the flags of the cluster comparison (-systems cluster).
type clusterOptions struct {
	systems      []string // of mutexd and etcd
	reps         int
	duration     time.Duration
	failoverReps int
	idle         time.Duration
	fifoMargin   time.Duration
	out, raw     string
}

// clusterScenarios are the load shapes of issue 13's targets. C=1 is
// there for the commit latency: one client's acquire is one Raft commit.
var clusterScenarios = []scenario{
	{Name: "uncontended C=1", Kind: "uncontended", Clients: 1, Keys: 1, Mode: loadgen.ModeCycle, TTL: 30 * time.Second},
	{Name: "uncontended C=64", Kind: "uncontended", Clients: 64, Keys: 64, Mode: loadgen.ModeCycle, TTL: 30 * time.Second},
	{Name: "hot key C=16", Kind: "contended", Clients: 16, Keys: 1, Mode: loadgen.ModeCycle, TTL: 30 * time.Second},
}

// clusterRun is one scenario on one cluster in one repetition.
type clusterRun struct {
	Scenario string          `json:"scenario"`
	System   string          `json:"system"`
	Rep      int             `json:"rep"`
	Result   *loadgen.Result `json:"result"`
	FIFO     *fifoResult     `json:"fifo,omitempty"`
}

// failoverRun is one signal to the leader of one cluster.
type failoverRun struct {
	System string `json:"system"`
	Signal string `json:"signal"` // "kill" (SIGKILL) or "term" (SIGTERM)
	Rep    int    `json:"rep"`
	Outage outage `json:"outage"`
	// NewLeader is from the signal to the first status of a surviving
	// member (GET /v1/cluster, etcd's status) naming another leader: the
	// election alone.
	NewLeader time.Duration `json:"new_leader_ns"`
	// Terms is how far the term rose from before the signal to the
	// recovery: the elections it took (at least).
	Terms uint64 `json:"terms"`
	// Err is set when no acquire succeeded within failoverDeadline.
	Err string `json:"error,omitempty"`
}

// idleRun is the terms seen before and after a run without load or faults.
type idleRun struct {
	System     string        `json:"system"`
	Duration   time.Duration `json:"duration_ns"`
	TermBefore uint64        `json:"term_before"`
	TermAfter  uint64        `json:"term_after"`
}

// clusterResults is everything one cluster comparison measured.
type clusterResults struct {
	Runs      []clusterRun  `json:"runs"`
	Failovers []failoverRun `json:"failovers"`
	Idle      []idleRun     `json:"idle"`
}

// failoverDeadline bounds the wait for the first acquire after a signal.
const failoverDeadline = 30 * time.Second

// clusterCompare starts the clusters of o.systems, runs the cluster
// scenarios, the failovers and the idle run, and writes the cluster
// section of the report.
func clusterCompare(ctx context.Context, o clusterOptions) error {
	for _, s := range o.systems {
		if s != "mutexd" && s != "etcd" {
			return fmt.Errorf("unknown cluster system %q (want mutexd, etcd)", s)
		}
	}
	if len(o.systems) == 0 {
		return errors.New("-cluster-systems names no system")
	}
	if slices.Contains(o.systems, "etcd") {
		if _, err := exec.LookPath("etcd"); err != nil {
			return errors.New("etcd is not installed: run bench/run.sh (or apt-get install etcd-server)")
		}
	}
	dir, err := os.MkdirTemp("", "mutexd-bench-cluster-")
	if err != nil {
		return err
	}
	if os.Getenv("BENCH_KEEP") == "" {
		defer os.RemoveAll(dir)
	} else {
		fmt.Fprintln(os.Stderr, "keeping", dir)
	}
	root, err := repoRoot()
	if err != nil {
		return err
	}

	clusters := map[string]cluster{}
	defer func() {
		for _, c := range clusters {
			c.stop()
		}
	}()
	for _, sys := range o.systems {
		t0 := time.Now()
		var c cluster
		switch sys {
		case "mutexd":
			bin := filepath.Join(dir, "mutexd")
			log.Printf("building mutexd")
			if err := goBuild(root, bin, "./cmd/mutexd"); err != nil {
				return err
			}
			c, err = startMutexdCluster(ctx, dir, bin, 3)
		case "etcd":
			c, err = startEtcdCluster(ctx, dir, 3)
		}
		if err != nil {
			return fmt.Errorf("start the %s cluster: %w", sys, err)
		}
		clusters[sys] = c
		log.Printf("%s cluster of 3 ready in %s", sys, time.Since(t0).Round(time.Millisecond))
	}
	rotated := func(rep int) []string {
		k := rep % len(o.systems)
		return append(slices.Clone(o.systems[k:]), o.systems[:k]...)
	}

	var res clusterResults
	for rep := range o.reps {
		for _, sc := range clusterScenarios {
			for _, sys := range rotated(rep) {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				r, err := clusterLoad(ctx, clusters[sys], sc, rep, o)
				if err != nil {
					return fmt.Errorf("%s on the %s cluster: %w", sc.Name, sys, err)
				}
				res.Runs = append(res.Runs, r)
				fifo := ""
				if r.FIFO != nil {
					fifo = fmt.Sprintf("  FIFO overtaken %d of %d", r.FIFO.Overtaken, r.FIFO.Grants)
				}
				log.Printf("rep %d  %-16s %-6s %8.0f cycles/s %8.0f hand-offs/s  acquire p50 %8s p99 %8s  Jain %.4f  errors %d  overlaps %d%s",
					rep+1, sc.Name, sys, r.Result.CyclesPerSec, r.Result.HandoffsPerSec, loadgen.FormatDuration(r.Result.Acquire.P50),
					loadgen.FormatDuration(r.Result.Acquire.P99), r.Result.Fairness, r.Result.ErrorsTotal, r.Result.Overlaps, fifo)
			}
		}
	}
	for rep := range o.failoverReps {
		for _, sig := range []syscall.Signal{syscall.SIGKILL, syscall.SIGTERM} {
			for _, sys := range rotated(rep) {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				f, err := failover(ctx, clusters[sys], sig, rep)
				if err != nil {
					return fmt.Errorf("failover (%s) of the %s cluster: %w", sig, sys, err)
				}
				res.Failovers = append(res.Failovers, f)
				if f.Err != "" {
					log.Printf("failover %d  %-6s %-4s FAILED: %s", rep+1, sys, f.Signal, f.Err)
					if d, ok := clusters[sys].(interface{ dumpGoroutines(string) }); ok {
						d.dumpGoroutines(fmt.Sprintf("failover%d", rep+1))
					}
				} else {
					log.Printf("failover %d  %-6s %-4s first acquire after %8s  longest pause %8s  new leader seen after %8s  terms +%d", rep+1, sys, f.Signal,
						loadgen.FormatDuration(f.Outage.Recovery), loadgen.FormatDuration(f.Outage.Pause), loadgen.FormatDuration(f.NewLeader), f.Terms)
				}
			}
		}
	}
	if o.idle > 0 {
		idle, err := idleTerms(ctx, clusters, o.systems, o.idle)
		if err != nil {
			return err
		}
		res.Idle = idle
	}

	if o.raw != "" {
		b, err := json.MarshalIndent(res, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(o.raw, b, 0o644); err != nil {
			return err
		}
	}
	env := quickMachine(root)
	env.Etcd = version("etcd", "--version")
	section := clusterMarkdown(res, o, env)
	out := o.out
	if out == "" {
		out = filepath.Join(root, "BENCHMARKS.md")
	}
	old, err := os.ReadFile(out)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if err := os.WriteFile(out, []byte(spliceSection(string(old), clusterHeading, section)), 0o644); err != nil {
		return err
	}
	log.Printf("wrote the cluster section of %s", out)
	return nil
}

// clusterLoad runs one scenario through every member of c (client i on
// member i mod 3), recording the grants of the hot key for the FIFO check.
func clusterLoad(ctx context.Context, c cluster, sc scenario, rep int, o clusterOptions) (clusterRun, error) {
	if err := c.waitHealthy(ctx); err != nil {
		return clusterRun{}, err
	}
	var target loadgen.Target = allMembers(c)
	var rec *recordingTarget
	if sc.Kind == "contended" {
		rec = &recordingTarget{Target: target}
		target = rec
	}
	res, err := loadgen.Run(ctx, target, loadgen.Config{
		Clients: sc.Clients, Keys: sc.Keys, Duration: o.duration, TTL: sc.TTL, Wait: 30 * time.Second, Mode: sc.Mode,
		KeyPrefix: fmt.Sprintf("r%d-%s-", rep, strings.ReplaceAll(sc.Name, " ", "")),
	})
	if err != nil {
		return clusterRun{}, err
	}
	r := clusterRun{Scenario: sc.Name, System: c.name(), Rep: rep, Result: res}
	if rec != nil {
		f := checkFIFO(rec.grants(), o.fifoMargin)
		r.FIFO = &f
	}
	time.Sleep(200 * time.Millisecond) // let connections close
	return r, nil
}

// signalName is the report's name of a signal.
func signalName(sig syscall.Signal) string {
	if sig == syscall.SIGKILL {
		return "kill"
	}
	return "term"
}

// probesPerMember is how many probe clients each surviving member gets:
// with several, one stuck in a timed-out attempt does not hide a member
// that answers again.
const probesPerMember = 3

// failover signals the leader of c while 16 clients cycle on their own
// keys through the other members, and measures with probe clients (the
// same sessions as the load's, each acquire on a fresh key) how long
// after the signal the first acquire sent after it succeeds, and the
// longest pause between successful acquires. It then starts the member
// again and waits until the cluster is whole.
func failover(ctx context.Context, c cluster, sig syscall.Signal, rep int) (failoverRun, error) {
	f := failoverRun{System: c.name(), Signal: signalName(sig), Rep: rep}
	if err := c.waitHealthy(ctx); err != nil {
		return f, err
	}
	lead, err := c.leader(ctx)
	if err != nil {
		return f, err
	}
	var survivors []loadgen.Target
	var survivorIdx []int
	for i := range c.size() {
		if i != lead {
			survivors = append(survivors, c.memberTarget(i))
			survivorIdx = append(survivorIdx, i)
		}
	}
	prefix := fmt.Sprintf("fo%d-%s-", rep, f.Signal)

	loadCtx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	loadDone := make(chan error, 1)
	go func() {
		_, err := loadgen.Run(loadCtx, spreadTarget{label: c.name(), members: survivors}, loadgen.Config{
			Clients: 16, Keys: 16, Duration: 10 * time.Minute, TTL: 10 * time.Second, Wait: 2 * time.Second,
			Mode: loadgen.ModeCycle, KeyPrefix: prefix + "load-",
		})
		loadDone <- err
	}()

	var mu sync.Mutex // guards sent and answered
	var sent, answered []time.Time
	probeCtx, stopProbes := context.WithCancel(ctx)
	defer stopProbes()
	var wg sync.WaitGroup
	for k, t := range survivors {
		for p := range probesPerMember {
			s, err := t.Open(ctx, 1000+k*probesPerMember+p)
			if err != nil {
				stopProbes()
				wg.Wait()
				return f, fmt.Errorf("open a probe: %w", err)
			}
			wg.Go(func() {
				defer s.Close()
				for n := 0; probeCtx.Err() == nil; n++ {
					key := fmt.Sprintf("%sprobe-%d-%d-%d", prefix, survivorIdx[k], p, n)
					actx, cancel := context.WithTimeout(probeCtx, time.Second)
					t0 := time.Now()
					l, err := s.Acquire(actx, key, 10*time.Second, 500*time.Millisecond)
					t1 := time.Now()
					cancel()
					if err != nil {
						select { // a member without a leader answers at once
						case <-probeCtx.Done():
						case <-time.After(5 * time.Millisecond):
						}
						continue
					}
					mu.Lock()
					sent, answered = append(sent, t0), append(answered, t1)
					mu.Unlock()
					rctx, cancel := context.WithTimeout(probeCtx, time.Second)
					_ = s.Release(rctx, l)
					cancel()
				}
			})
		}
	}

	time.Sleep(time.Second) // the load and the probes warm up
	term0, err := c.term(ctx)
	if err != nil {
		return f, err
	}
	signalled := time.Now()
	exited := make(chan error, 1)
	// signal waits for the exit; a SIGTERM'd leader hands over first, and
	// the polling below must watch that hand-over, so it runs meanwhile.
	go func() { exited <- c.signal(lead, sig) }()
	deadline := signalled.Add(failoverDeadline)
	for {
		for _, i := range survivorIdx { // not the old leader: it may still be shutting down
			if f.NewLeader != 0 {
				break
			}
			if l, err := c.leaderOf(ctx, i); err == nil && l >= 0 && l != lead {
				f.NewLeader = time.Since(signalled)
			}
		}
		mu.Lock()
		o, ok := measureOutage(sent, answered, signalled)
		mu.Unlock()
		if ok {
			f.Outage = o
			if t, err := c.term(ctx); err == nil {
				f.Terms = t - min(t, term0)
			}
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			f.Err = fmt.Sprintf("no acquire through a surviving member within %s of the signal", failoverDeadline)
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	stopProbes()
	wg.Wait()
	stopLoad()
	if err := <-exited; err != nil {
		log.Printf("%s: %v", c.name(), err)
	}
	if err := <-loadDone; err != nil {
		return f, fmt.Errorf("the load: %w", err)
	}
	if err := c.restart(ctx, lead); err != nil {
		return f, err
	}
	return f, c.waitHealthy(ctx)
}

// idleTerms reads every cluster's term, waits d without load, and reads it
// again: each increase is at least one election.
func idleTerms(ctx context.Context, clusters map[string]cluster, systems []string, d time.Duration) ([]idleRun, error) {
	var out []idleRun
	for _, sys := range systems {
		if err := clusters[sys].waitHealthy(ctx); err != nil {
			return nil, err
		}
		t, err := clusters[sys].term(ctx)
		if err != nil {
			return nil, err
		}
		out = append(out, idleRun{System: sys, Duration: d, TermBefore: t})
	}
	log.Printf("idle for %s, counting elections", d)
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(d):
	}
	for i := range out {
		t, err := clusters[out[i].System].term(ctx)
		if err != nil {
			return nil, err
		}
		out[i].TermAfter = t
		log.Printf("idle  %-6s term %d → %d", out[i].System, out[i].TermBefore, t)
	}
	return out, nil
}
