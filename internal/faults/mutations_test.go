package faults

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

// mutants are the deliberately broken builds of internal/cluster (its
// mutation.go), by build tag, each with the faults that expose it.
var mutants = []struct {
	tag    string
	faults []FaultKind
}{
	// Followers expiring on their own clocks diverge from the log when
	// they fall behind it: a paused or cut-off node.
	{"mutate_followerclock", []FaultKind{FaultPause, FaultPartition}},
	// A renewal that does not move the deadline shows whenever a renewed
	// lease is left to run out: no fault needed, but faults too.
	{"mutate_skiprenew", []FaultKind{FaultKill, FaultPause, FaultPartition}},
	// Granting from a node's own replica shows at once.
	{"mutate_grantlocal", []FaultKind{FaultKill, FaultPause, FaultPartition}},
}

// TestMutationsBite proves the checkers (STYLE 12): it builds mutexd with
// each deliberate bug of internal/cluster, runs the cluster fault workload
// against it with a fixed seed (FAULTS_SEED, default 1) for a bounded time
// (FAULTS_DURATION, default 45s), and fails when no checker reports a
// violation. It runs only with MUTATIONS=1 (`make mutations`): it takes
// minutes.
func TestMutationsBite(t *testing.T) {
	if os.Getenv("MUTATIONS") != "1" {
		t.Skip("set MUTATIONS=1 (make mutations) to run the broken builds")
	}
	seed := uint64(1)
	if os.Getenv("FAULTS_SEED") != "" {
		seed = seedFromEnv(t)
	}
	dur := durationFromEnv(t, 45*time.Second)
	dir := t.TempDir()
	for _, m := range mutants {
		t.Run(m.tag, func(t *testing.T) {
			bin := buildTagged(t, filepath.Join(dir, m.tag), m.tag)
			start := time.Now()
			found, summary := runMutant(t, bin, seed, scenario{nodes: 3, cluster: true, faults: m.faults,
				hold: [2]time.Duration{500 * time.Millisecond, 4 * time.Second}, duration: dur, clients: 16})
			t.Logf("%s, seed %d, %s: %s", m.tag, seed, time.Since(start).Round(time.Second), summary)
			caught := 0
			for _, name := range sortedKeys(found) {
				bad := found[name]
				if name != "workload" {
					caught += len(bad)
				}
				t.Logf("%s: %d violation(s); first: %s", name, len(bad), bad[0])
			}
			if caught == 0 {
				t.Errorf("%s survived: no checker reported a violation (seed %d, %s)", m.tag, seed, dur)
			}
		})
	}
}

// buildTagged builds cmd/mutexd with the build tags into dir.
func buildTagged(t *testing.T, dir, tags string) string {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "mutexd")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", "build", "-tags", tags, "-o", path, "github.com/mutexd/mutexd/cmd/mutexd").CombinedOutput()
	if err != nil {
		t.Fatalf("go build -tags %s: %v\n%s", tags, err, out)
	}
	return path
}

// runMutant is run without the verdict: the same cluster, workload and
// nemesis, returning every checker's violations by name (and the
// workload's unexpected answers as "workload", which prove nothing by
// themselves) with a one-line summary.
func runMutant(t *testing.T, bin string, seed uint64, sc scenario) (map[string][]string, string) {
	h, err := Start(t, bin, Options{Nodes: sc.nodes, Cluster: sc.cluster, Extra: "lock:\n  detach_grace: 3s\n"})
	if err != nil {
		t.Fatalf("start %d nodes: %v", sc.nodes, err)
	}
	urls := h.urls()
	hist := NewHistory()
	reg := NewRegister(hist.Now)
	w := &Workload{URLs: urls, Keys: []string{"k0", "k1", "k2", "k3"}, Clients: sc.clients, TTL: 2 * time.Second,
		History: hist, Register: reg, Seed: seed}
	ctx, cancel := context.WithTimeout(t.Context(), sc.duration)
	defer cancel()
	schedule := Schedule{Kinds: sc.faults, Gap: [2]time.Duration{time.Second, 3 * time.Second}, Hold: sc.hold, LeaderBias: 0.5}
	faults := runInBackground(ctx, schedule, rand.New(rand.NewPCG(seed, 1<<32)), h.nemesis(), sc.nodes,
		func() int { return Leader(ctx, urls) }, hist.Now)
	w.Run(ctx)
	events := faults()
	ops := hist.Ops()
	found := violations(ops, reg)
	if e := w.Errors(); len(e) > 0 {
		found["workload"] = e
	}
	return found, fmt.Sprintf("%d operations (%s), %d faults", len(ops), w.Summary(), len(events))
}

// violations runs every history checker (as check does) and returns what
// each reported, by checker.
func violations(ops []Op, reg *Register) map[string][]string {
	found := map[string][]string{}
	for _, r := range CheckLinearizable(ops, 30*time.Second) {
		if r.Result == porcupine.Illegal {
			found["linearizability"] = append(found["linearizability"], fmt.Sprintf("%s: not linearizable (%d ops)", r.Key, r.Ops))
		}
	}
	for name, bad := range map[string][]string{
		"single holder": CheckSingleHolder(ops),
		"fences":        CheckFences(ops),
		"FIFO":          CheckFIFO(ops),
		"releases":      CheckReleases(ops),
		"register":      CheckRegister(reg.Rejects(), ops),
	} {
		if len(bad) > 0 {
			found[name] = slices.Clone(bad)
		}
	}
	return found
}
