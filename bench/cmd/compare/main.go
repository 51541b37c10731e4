// Command compare runs mutexd side by side with its ceilings and its peers
// on this machine, all on loopback, through the same load generator, and
// writes BENCHMARKS.md and a chart. Run it with bench/run.sh from the
// repository root, which installs redis-server and etcd-server first.
//
// Every scenario is repeated -reps times; the repetitions are interleaved
// (rep 1 of every scenario and system, then rep 2, ...), and the systems'
// order rotates between repetitions, so a burst of noise from the machine
// lands on different systems. Reported figures are medians over the
// repetitions; ratios are taken within one repetition, then their median.
//
// With -base REV it also builds mutexd at that git revision and runs it as
// the system "base" in the same rotation, so a change is measured against
// the build before it under the same machine load. With -systems
// mutexd,base it runs only that comparison and prints it (or writes it to
// -out), leaving BENCHMARKS.md alone.
//
// With -systems cluster it runs only the cluster comparison (issue 13): a
// three-server mutexd cluster against a three-member etcd cluster, under
// load, on one hot key, through leader failures and idle, and rewrites
// only the section "Cluster: mutexd 3 servers vs etcd 3 members" of
// BENCHMARKS.md, which the standalone runs keep.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/mutexd/mutexd/bench/peers"
	"github.com/mutexd/mutexd/internal/loadgen"
)

// scenario is one load shape, run against several systems.
type scenario struct {
	Name    string
	Kind    string // "uncontended", "contended" or "expire"
	Clients int
	Keys    int
	Mode    loadgen.Mode
	TTL     time.Duration
	Systems []string
}

// run is one scenario against one system in one repetition.
type run struct {
	Scenario string          `json:"scenario"`
	System   string          `json:"system"`
	Rep      int             `json:"rep"`
	Result   *loadgen.Result `json:"result"`
	// ServerCPUPerCycle is the server process's CPU time (user + system)
	// during the run divided by the cycles counted: steadier than
	// throughput on a busy machine, since other load slows but does not
	// bill the server.
	ServerCPUPerCycle time.Duration `json:"server_cpu_per_cycle_ns"`
}

func scenarios(systems []string) []scenario {
	has := func(names ...string) []string {
		var out []string
		for _, n := range names {
			if slices.Contains(systems, n) {
				out = append(out, n)
			}
		}
		return out
	}
	var out []scenario
	for _, c := range []int{1, 16, 64} {
		out = append(out, scenario{Name: fmt.Sprintf("uncontended C=%d", c), Kind: "uncontended", Clients: c, Keys: c,
			Mode: loadgen.ModeCycle, TTL: 30 * time.Second, Systems: has("mutexd", "base", "noop", "fifo", "redis", "etcd")})
	}
	for _, c := range []int{4, 16, 64} {
		out = append(out, scenario{Name: fmt.Sprintf("contended C=%d", c), Kind: "contended", Clients: c, Keys: 1,
			Mode: loadgen.ModeCycle, TTL: 30 * time.Second, Systems: has("mutexd", "base", "fifo", "redis", "etcd")})
	}
	out = append(out, scenario{Name: "expiry C=50", Kind: "expire", Clients: 50, Keys: 50,
		Mode: loadgen.ModeExpire, TTL: time.Second, Systems: has("mutexd")})
	return out
}

// options are compare's flags.
type options struct {
	reps     int
	duration time.Duration
	systems  []string
	out      string // "" means the repository's BENCHMARKS.md, or stdout for the comparison alone
	chart    string
	raw      string
	waiters  int
	base     string // a git revision to build and run as the system "base"
}

// onlyBase reports whether the run is the quick check against the previous
// build: no system but mutexd and base, so only that comparison is written.
func (o options) onlyBase() bool {
	if o.base == "" {
		return false
	}
	for _, s := range o.systems {
		if s != "mutexd" && s != "base" {
			return false
		}
	}
	return true
}

func main() {
	var o options
	var only string
	flag.IntVar(&o.reps, "reps", 3, "repetitions of every scenario (interleaved)")
	flag.DurationVar(&o.duration, "duration", 5*time.Second, "length of one run")
	flag.StringVar(&only, "systems", "mutexd,noop,fifo,redis,etcd", "systems to run, comma-separated (base is added by -base); cluster alone runs the cluster comparison instead")
	flag.StringVar(&o.out, "out", "", "the report to write (default: BENCHMARKS.md at the repository root; with -systems mutexd,base -base REV the comparison goes to stdout unless -out names a file)")
	flag.StringVar(&o.chart, "chart", "docs/benchmarks.png", "the chart to write (a path relative to the report's folder)")
	flag.StringVar(&o.raw, "json", "", "also write every run's figures to this JSON file")
	flag.IntVar(&o.waiters, "waiters", 10000, "clients for the RSS-per-waiting-connection run (0 skips it)")
	flag.StringVar(&o.base, "base", "", "a git revision of this repository (main~5, a commit hash): build mutexd there and run it as the system base, for the uncontended and contended scenarios")
	var co clusterOptions
	var clusterSystems string
	flag.StringVar(&clusterSystems, "cluster-systems", "mutexd,etcd", "with -systems cluster: the clusters to run, comma-separated")
	flag.IntVar(&co.failoverReps, "failover-reps", 5, "with -systems cluster: signals of each kind (SIGKILL, SIGTERM) to each cluster's leader")
	flag.DurationVar(&co.idle, "idle", 10*time.Second, "with -systems cluster: how long to count elections without load or faults (the target's is 10m; 0 skips it)")
	flag.DurationVar(&co.fifoMargin, "fifo-margin", 10*time.Millisecond, "with -systems cluster: how much earlier an acquire must have been sent to count as ahead in the FIFO check")
	flag.Parse()
	log.SetFlags(log.Ltime)
	o.systems = strings.Split(only, ",")
	if slices.Contains(o.systems, "cluster") {
		if len(o.systems) > 1 || o.base != "" {
			log.Fatal("-systems cluster runs alone (no other system, no -base)")
		}
		co.systems, co.reps, co.duration, co.out, co.raw = strings.Split(clusterSystems, ","), o.reps, o.duration, o.out, o.raw
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
		defer stop()
		if err := clusterCompare(ctx, co); err != nil {
			log.Fatal(err)
		}
		return
	}
	if o.base != "" && !slices.Contains(o.systems, "base") {
		o.systems = append(o.systems, "base")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := compare(ctx, o); err != nil {
		log.Fatal(err)
	}
}

func compare(ctx context.Context, o options) error {
	reps, duration, systems, waiters := o.reps, o.duration, o.systems, o.waiters
	switch {
	case slices.Contains(systems, "base") && o.base == "":
		return errors.New("system base needs -base REV (the git revision to build)")
	case o.base != "" && !slices.Contains(systems, "mutexd"):
		return errors.New("-base compares with mutexd: keep mutexd in -systems")
	}
	dir, err := os.MkdirTemp("", "mutexd-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	root, err := repoRoot()
	if err != nil {
		return err
	}
	mutexdBin, ceilingBin, baseBin := filepath.Join(dir, "mutexd"), filepath.Join(dir, "ceiling"), filepath.Join(dir, "mutexd-base")
	var base *baseBuild
	if o.base != "" { // first: a bad revision fails before the long builds
		if base, err = buildBase(root, dir, o.base, baseBin); err != nil {
			return err
		}
	}
	log.Printf("building mutexd and the ceiling servers")
	if err := goBuild(root, mutexdBin, "./cmd/mutexd"); err != nil {
		return err
	}
	if !o.onlyBase() {
		if err := goBuild(filepath.Join(root, "bench"), ceilingBin, "./cmd/ceiling"); err != nil {
			return err
		}
	}

	targets := map[string]loadgen.Target{}
	procOf := map[string]*proc{}
	var procs []*proc
	defer func() {
		for _, p := range procs {
			p.stop()
		}
	}()
	for _, sys := range systems {
		var p *proc
		switch sys {
		case "mutexd":
			p, err = startMutexd(ctx, "mutexd", dir, mutexdBin)
		case "base":
			p, err = startMutexd(ctx, "base", dir, baseBin)
		case "noop", "fifo":
			p, err = startCeiling(ctx, dir, ceilingBin, sys)
		case "redis":
			p, err = startRedis(ctx, dir)
		case "etcd":
			p, err = startEtcd(ctx, dir)
		default:
			return fmt.Errorf("unknown system %q (want mutexd, base, noop, fifo, redis, etcd)", sys)
		}
		if p != nil {
			procs = append(procs, p)
			procOf[sys] = p
		}
		if err != nil {
			return fmt.Errorf("start %s: %w", sys, err)
		}
		switch sys {
		case "redis":
			targets[sys] = peers.Redis{Addr: p.addr}
		case "etcd":
			targets[sys] = peers.Etcd{Endpoint: p.addr}
		default:
			targets[sys] = loadgen.HTTPTarget{Label: sys, BaseURL: p.addr}
		}
		log.Printf("%s ready at %s in %s", sys, p.addr, p.ready.Round(time.Millisecond))
	}

	var runs []run
	scs := scenarios(systems)
	if o.onlyBase() { // the expiry run has nothing to compare with
		scs = slices.DeleteFunc(scs, func(sc scenario) bool { return !slices.Contains(sc.Systems, "base") })
	}
	for rep := range reps {
		for _, sc := range scs {
			order := slices.Clone(sc.Systems)
			if len(order) > 0 {
				k := rep % len(order) // rotate who goes first
				order = append(order[k:], order[:k]...)
			}
			for _, sys := range order {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				cpu0 := procOf[sys].cpu()
				res, err := loadgen.Run(ctx, targets[sys], loadgen.Config{
					Clients: sc.Clients, Keys: sc.Keys, Duration: duration, TTL: sc.TTL, Wait: 30 * time.Second,
					Mode: sc.Mode, KeyPrefix: fmt.Sprintf("r%d-%s-", rep, strings.ReplaceAll(sc.Name, " ", "")),
				})
				if err != nil {
					return fmt.Errorf("%s on %s: %w", sc.Name, sys, err)
				}
				var perCycle time.Duration
				if res.Cycles > 0 {
					perCycle = time.Duration((procOf[sys].cpu() - cpu0) * int64(10*time.Millisecond) / res.Cycles)
				}
				log.Printf("rep %d  %-16s %-7s %8.0f cycles/s %8.0f hand-offs/s  acquire p99 %8s  cycle p99 %8s  server CPU/cycle %6s  errors %d  overlaps %d",
					rep+1, sc.Name, sys, res.CyclesPerSec, res.HandoffsPerSec, loadgen.FormatDuration(res.Acquire.P99),
					loadgen.FormatDuration(res.Cycle.P99), loadgen.FormatDuration(perCycle), res.ErrorsTotal, res.Overlaps)
				runs = append(runs, run{Scenario: sc.Name, System: sys, Rep: rep, Result: res, ServerCPUPerCycle: perCycle})
				time.Sleep(200 * time.Millisecond) // let connections close
			}
		}
	}

	if raw := o.raw; raw != "" {
		b, err := json.MarshalIndent(runs, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(raw, b, 0o644); err != nil {
			return err
		}
	}
	if o.onlyBase() {
		rep := newReport(scs, runs, reps, duration, nil, quickMachine(root))
		rep.base = base
		return writeOut(o.out, rep.comparison())
	}

	var mem *memory
	if waiters > 1 && slices.Contains(systems, "mutexd") {
		log.Printf("measuring RSS with %d waiting connections on a fresh mutexd", waiters)
		idle, per, readyIn, err := measureWaitingRSS(ctx, dir, mutexdBin, waiters)
		if err != nil {
			log.Printf("RSS run failed: %v", err)
		} else {
			mem = &memory{IdleKiB: idle, PerWaiterKiB: per, Waiters: waiters, ReadyIn: readyIn}
		}
	}
	if mem != nil && procs[0].name == "mutexd" {
		mem.FirstReadyIn = procs[0].ready
	}

	env := machine(root)
	rep := newReport(scs, runs, reps, duration, mem, env)
	rep.base = base
	out, chart := o.out, o.chart
	if out == "" {
		out = filepath.Join(root, "BENCHMARKS.md")
	}
	chartPath := filepath.Join(filepath.Dir(out), chart)
	if err := os.MkdirAll(filepath.Dir(chartPath), 0o755); err != nil {
		return err
	}
	if err := drawChart(rep, chartPath); err != nil {
		return fmt.Errorf("chart: %w", err)
	}
	if err := writeKeepingCluster(out, rep.markdown(chart)); err != nil {
		return err
	}
	log.Printf("wrote %s and %s", out, chartPath)
	return nil
}

// memory is the daemon's footprint.
type memory struct {
	IdleKiB      int64
	PerWaiterKiB float64
	Waiters      int
	ReadyIn      time.Duration // exec to /readyz 200 of the fresh daemon
	FirstReadyIn time.Duration // the same for the daemon of the runs
}

func repoRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", err
	}
	dir := filepath.Dir(strings.TrimSpace(string(out)))
	if filepath.Base(dir) == "bench" {
		dir = filepath.Dir(dir)
	}
	return dir, nil
}

// writeKeepingCluster writes the standalone report text to path, keeping
// the cluster section of the report already there: the two are measured
// by different runs (-systems cluster writes only its section).
func writeKeepingCluster(path, text string) error {
	old, err := os.ReadFile(path)
	switch {
	case err == nil:
		if sec := extractSection(string(old), clusterHeading); sec != "" {
			text = spliceSection(text, clusterHeading, sec)
		}
	case !errors.Is(err, os.ErrNotExist):
		return err
	}
	return os.WriteFile(path, []byte(text), 0o644)
}

// writeOut writes text to the file path, or to stdout if path is empty.
func writeOut(path, text string) error {
	if path == "" {
		_, err := os.Stdout.WriteString(text)
		return err
	}
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		return err
	}
	log.Printf("wrote %s", path)
	return nil
}

// baseBuild names the earlier revision measured as the system "base".
type baseBuild struct {
	Rev, Hash string // as given, and its short commit hash
}

// buildBase builds mutexd as it was at rev into bin. The source comes from
// git archive into the temporary dir rather than a git worktree, so an
// interrupted run leaves nothing behind in the repository; it is built
// the way the current mutexd is, in its own module root.
func buildBase(root, dir, rev, bin string) (*baseBuild, error) {
	git := func(args ...string) (string, error) {
		cmd := exec.Command("git", append([]string{"-C", root}, args...)...)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			return "", fmt.Errorf("git %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
		}
		return strings.TrimSpace(string(out)), nil
	}
	hash, err := git("rev-parse", "--verify", "--end-of-options", rev+"^{commit}")
	if err != nil {
		return nil, fmt.Errorf("-base %q is not a commit of this repository: %w", rev, err)
	}
	short, err := git("rev-parse", "--short", hash)
	if err != nil {
		return nil, err
	}
	log.Printf("building mutexd at %s (%s) as base", rev, short)
	src, tarball := filepath.Join(dir, "base-src"), filepath.Join(dir, "base.tar")
	if err := os.Mkdir(src, 0o755); err != nil {
		return nil, err
	}
	if _, err := git("archive", "--format=tar", "-o", tarball, hash); err != nil {
		return nil, err
	}
	if out, err := exec.Command("tar", "-xf", tarball, "-C", src).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("unpack %s: %w: %s", short, err, strings.TrimSpace(string(out)))
	}
	if err := os.Remove(tarball); err != nil {
		return nil, err
	}
	if err := goBuild(src, bin, "./cmd/mutexd"); err != nil {
		return nil, fmt.Errorf("base %s: %w", short, err)
	}
	return &baseBuild{Rev: rev, Hash: short}, nil
}

func goBuild(dir, out, pkg string) error {
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Dir = dir
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build %s: %w", pkg, err)
	}
	return nil
}
