package faults

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

// seedFromEnv is FAULTS_SEED, or a fresh seed.
func seedFromEnv(t *testing.T) uint64 {
	if s := os.Getenv("FAULTS_SEED"); s != "" {
		seed, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("FAULTS_SEED=%q: %v", s, err)
		}
		return seed
	}
	return rand.Uint64() >> 12
}

// durationFromEnv is FAULTS_DURATION, or def.
func durationFromEnv(t *testing.T, def time.Duration) time.Duration {
	if s := os.Getenv("FAULTS_DURATION"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 {
			t.Fatalf("FAULTS_DURATION=%q: want a positive Go duration", s)
		}
		return d
	}
	return def
}

// scenario is one run of the suite.
type scenario struct {
	nodes    int
	cluster  bool
	faults   []FaultKind
	hold     [2]time.Duration
	duration time.Duration
	clients  int
}

// TestFaults runs the workload under a seeded nemesis against real mutexd
// processes and checks the history: a short run in CI, `make faults` for a
// long one (FAULTS_SEED replays a run's choices, FAULTS_DURATION sets its
// length).
func TestFaults(t *testing.T) {
	if testing.Short() {
		t.Skip("runs real daemons for a while")
	}
	seed := seedFromEnv(t)
	t.Logf("seed %d (FAULTS_SEED=%d replays this run's choices)", seed, seed)
	bin := BuildBinary(t, t.TempDir())

	t.Run("standalone", func(t *testing.T) {
		// One node, paused and resumed: proves the workload and the
		// checkers against the single daemon. (A kill would lose every
		// lease by design, and there are no links to cut.)
		run(t, bin, seed, scenario{nodes: 1, faults: []FaultKind{FaultPause}, hold: [2]time.Duration{200 * time.Millisecond, 1500 * time.Millisecond},
			duration: durationFromEnv(t, 12*time.Second), clients: 12})
	})
	t.Run("cluster", func(t *testing.T) {
		run(t, bin, seed, scenario{nodes: 3, cluster: true, faults: []FaultKind{FaultKill, FaultPause, FaultPartition},
			hold: [2]time.Duration{500 * time.Millisecond, 4 * time.Second}, duration: durationFromEnv(t, 60*time.Second), clients: 16})
	})
}

func run(t *testing.T, bin string, seed uint64, sc scenario) {
	h, err := Start(t, bin, Options{Nodes: sc.nodes, Cluster: sc.cluster, Extra: "lock:\n  detach_grace: 3s\n"})
	if err != nil {
		t.Fatalf("start %d nodes: %v", sc.nodes, err)
	}
	urls := make([]string, len(h.Nodes))
	for i, n := range h.Nodes {
		urls[i] = n.URL
	}
	hist := NewHistory()
	reg := NewRegister(hist.Now)
	w := &Workload{URLs: urls, Keys: []string{"k0", "k1", "k2", "k3"}, Clients: sc.clients, TTL: 2 * time.Second,
		History: hist, Register: reg, Seed: seed}

	ctx, cancel := context.WithTimeout(t.Context(), sc.duration)
	defer cancel()
	schedule := Schedule{Kinds: sc.faults, Gap: [2]time.Duration{time.Second, 3 * time.Second}, Hold: sc.hold, LeaderBias: 0.5}
	leader := func() int {
		if !sc.cluster {
			return 0
		}
		return Leader(ctx, urls)
	}
	faults := runInBackground(ctx, schedule, rand.New(rand.NewPCG(seed, 1<<32)), h.nemesis(), sc.nodes, leader, hist.Now)
	w.Run(ctx)
	events := faults()
	for _, e := range events {
		t.Logf("fault: %v", e)
		if e.Err != "" {
			t.Errorf("nemesis: %v", e)
		}
	}
	ops := hist.Ops()
	inLine := 0
	for _, o := range ops {
		if o.Enqueued != 0 && !o.Resent {
			inLine++
		}
	}
	writes, late := reg.Stats()
	t.Logf("%d operations (%s; %d streaming waiters told their place, judged for FIFO); %d faults; register: %d writes, %d skipped past a lease's certain end; proxies could not name %d dialers",
		len(ops), w.Summary(), inLine, len(events), writes, late, h.Net.Unknown())
	for _, e := range w.Errors() {
		t.Errorf("workload: unexpected answer: %s", e)
	}
	if w.granted.Load() == 0 {
		t.Errorf("no acquire was granted: the workload did not run")
	}
	check(t, seed, ops, reg)

	if sc.cluster {
		ready, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		for _, n := range h.Nodes {
			if err := h.WaitReady(ready, n); err != nil {
				t.Errorf("after the faults: %v", err)
			}
		}
		switch diff, err := CheckDigests(ready, urls); {
		case errors.Is(err, ErrNoCluster):
			t.Logf("state digests not compared: %v", err)
		case err != nil:
			t.Errorf("state digests: %v", err)
		case diff != "":
			t.Errorf("nodes disagree after the faults: %s", diff)
		}
	}
}

// check runs every history checker and fails t on any violation.
func check(t *testing.T, seed uint64, ops []Op, reg *Register) {
	for _, r := range CheckLinearizable(ops, time.Minute) {
		t.Logf("linearizability of %s: %s (%d ops, %s)", r.Key, r.Result, r.Ops, r.Took.Round(time.Millisecond))
		switch r.Result {
		case porcupine.Illegal:
			path := filepath.Join(os.TempDir(), fmt.Sprintf("faults-%d-%s.html", seed, r.Key))
			if err := VisualizeLinearizability(r, path); err != nil {
				path = err.Error()
			}
			t.Errorf("%s: history not linearizable (seed %d); porcupine's view: %s", r.Key, seed, path)
		case porcupine.Unknown:
			t.Logf("%s: porcupine ran out of time: inconclusive, not a failure", r.Key)
		}
	}
	for name, bad := range map[string][]string{
		"single holder": CheckSingleHolder(ops),
		"fences":        CheckFences(ops),
		"FIFO":          CheckFIFO(ops),
		"releases":      CheckReleases(ops),
		"register":      CheckRegister(reg.Rejects(), ops),
	} {
		for i, b := range bad {
			if i == 10 {
				t.Errorf("%s: %d more", name, len(bad)-10)
				break
			}
			t.Errorf("%s (seed %d): %s", name, seed, b)
		}
	}
}
