package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/mutexd/mutexd/internal/loadgen"
)

// env describes the machine and the versions measured.
type env struct {
	Date, CPU, Cores, Memory, Kernel, Go, Commit, Redis, Etcd string
	Engine                                                    string // go test -bench output of internal/engine
	Dirty                                                     bool   // the working tree differs from Commit
}

// quickMachine is the part of machine that the comparison with the
// previous build needs: no peers' versions, no engine benchmarks.
func quickMachine(root string) env {
	e := env{Date: time.Now().UTC().Format("2006-01-02 15:04 UTC"), Cores: strconv.Itoa(runtime.NumCPU()), Go: runtime.Version()}
	e.Commit = version("git", "-C", root, "rev-parse", "--short", "HEAD")
	if out, err := exec.Command("git", "-C", root, "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(out) > 0 {
		e.Dirty = true
	}
	return e
}

func machine(root string) env {
	e := quickMachine(root)
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		s := bufio.NewScanner(f)
		for s.Scan() {
			if k, v, ok := strings.Cut(s.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				e.CPU = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	if raw, err := os.ReadFile("/proc/meminfo"); err == nil {
		if f := strings.Fields(string(raw)); len(f) > 1 {
			kb, _ := strconv.ParseFloat(f[1], 64)
			e.Memory = fmt.Sprintf("%.0f GiB", kb/(1<<20))
		}
	}
	e.Kernel = version("uname", "-sr")
	e.Redis = version("redis-server", "--version")
	e.Etcd = version("etcd", "--version")
	cmd := exec.Command("go", "test", "-run", "^$", "-bench", ".", "-count", "3", "./internal/engine")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err == nil {
		e.Engine = string(out)
	} else {
		e.Engine = "engine benchmarks failed: " + err.Error() + "\n" + string(out)
	}
	return e
}

// cell is the median figures of one scenario on one system.
type cell struct {
	n                         int
	cycles, handoffs, jain    float64
	acqP50, acqP99            time.Duration
	cycP50, cycP99            time.Duration
	lateP50, lateP99, lateMax time.Duration
	lateCount                 uint64
	errors, overlaps          int64
	cpu                       time.Duration // server CPU per cycle
	errCodes                  map[string]int64
}

type report struct {
	scs      []scenario
	cells    map[[2]string]*cell
	runs     []run
	reps     int
	duration time.Duration
	mem      *memory
	env      env
	base     *baseBuild // nil unless -base
}

func median[T int64 | float64 | time.Duration](xs []T) T {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func newReport(scs []scenario, runs []run, reps int, d time.Duration, mem *memory, e env) *report {
	r := &report{scs: scs, cells: map[[2]string]*cell{}, runs: runs, reps: reps, duration: d, mem: mem, env: e}
	for _, sc := range scs {
		for _, sys := range sc.Systems {
			var cyc, hand, jain []float64
			var a50, a99, c50, c99, l50, l99, lmax, cpu []time.Duration
			c := &cell{errCodes: map[string]int64{}}
			for _, x := range runs {
				if x.Scenario != sc.Name || x.System != sys {
					continue
				}
				res := x.Result
				c.n++
				cpu = append(cpu, x.ServerCPUPerCycle)
				cyc, hand, jain = append(cyc, res.CyclesPerSec), append(hand, res.HandoffsPerSec), append(jain, res.Fairness)
				a50, a99 = append(a50, res.Acquire.P50), append(a99, res.Acquire.P99)
				c50, c99 = append(c50, res.Cycle.P50), append(c99, res.Cycle.P99)
				if res.ExpiryLateness.Count > 0 {
					l50, l99, lmax = append(l50, res.ExpiryLateness.P50), append(l99, res.ExpiryLateness.P99), append(lmax, res.ExpiryLateness.Max)
					c.lateCount += res.ExpiryLateness.Count
				}
				c.errors += res.ErrorsTotal
				c.overlaps += res.Overlaps
				for k, v := range res.Errors {
					c.errCodes[k] += v
				}
			}
			c.cycles, c.handoffs, c.jain, c.cpu = median(cyc), median(hand), median(jain), median(cpu)
			c.acqP50, c.acqP99, c.cycP50, c.cycP99 = median(a50), median(a99), median(c50), median(c99)
			c.lateP50, c.lateP99, c.lateMax = median(l50), median(l99), slices.Max(append(lmax, 0))
			r.cells[[2]string{sc.Name, sys}] = c
		}
	}
	return r
}

// ratio returns the median over repetitions of f(system) / f(ref), each
// taken within one repetition, and whether there was any.
func (r *report) ratio(scenario, system, ref string, f func(run) float64) (float64, bool) {
	xs := r.ratios(scenario, system, ref, f)
	return median(xs), len(xs) > 0
}

// ratios returns f(system) / f(ref) of every repetition that ran both.
func (r *report) ratios(scenario, system, ref string, f func(run) float64) []float64 {
	var xs []float64
	for rep := range r.reps {
		var a, b *run
		for i, x := range r.runs {
			if x.Scenario == scenario && x.Rep == rep {
				switch x.System {
				case system:
					a = &r.runs[i]
				case ref:
					b = &r.runs[i]
				}
			}
		}
		if a != nil && b != nil && f(*b) > 0 {
			xs = append(xs, f(*a)/f(*b))
		}
	}
	return xs
}

func cyclesOf(x run) float64   { return x.Result.CyclesPerSec }
func handoffsOf(x run) float64 { return x.Result.HandoffsPerSec }
func cpuOf(x run) float64      { return float64(x.ServerCPUPerCycle) }

func ms(d time.Duration) string { return loadgen.FormatDuration(d) }

func (r *report) cell(sc, sys string) *cell { return r.cells[[2]string{sc, sys}] }

func (r *report) markdown(chart string) string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	p("# Benchmarks\n\n")
	p("Generated by `bench/run.sh` on %s. Every figure is the **median of %d interleaved repetitions of %s** each; ratios are taken within a repetition (mutexd and its ceiling measured minutes apart at most, in rotating order), then their median. So a `×` column is the **median of the per-repetition ratios, not the quotient of the two medians printed beside it**: the two can differ by several percent when the machine's load moves between repetitions, and only the median ratio compares a system with its ceiling under the same conditions. ", r.env.Date, r.reps, r.duration)
	p("Server and load generator share the machine's %s cores over loopback, and other work may have run on it at the same time: throughput has moved by up to ±30%% between runs and read the ratios, not the absolute figures. ", r.env.Cores)
	p("To measure a change against the build before it, `-base REV` (a git revision: `main~5`, a commit hash) also builds mutexd at REV and runs it as the system `base` in the same rotation, for the uncontended and contended scenarios; `make bench-base` (or `-systems mutexd,base -base REV`) runs only that comparison and prints it, leaving this file alone.\n\n")
	p("![throughput and p99 latency versus clients, per system](%s)\n\n", chart)

	p("## Targets\n\n| target | goal | measured | met |\n|---|---|---|---|\n")
	for _, t := range r.targets() {
		p("| %s | %s | %s | %s |\n", t[0], t[1], t[2], t[3])
	}

	p("\n## Uncontended: every client on its own key\n\nA cycle is one acquire and one release: two HTTP requests for the HTTP systems. `noop` answers both at once from an echo handler (the ceiling of the HTTP stack), `fifo` is the bare net/http FIFO lock. *Server CPU per cycle* is the server process's CPU time (user + system, from /proc) over the run divided by its cycles: other work on the machine slows a server but does not bill it, so this is the steadier figure when the machine is shared; the load generator's own CPU is not in it.\n\n")
	p("| scenario | system | cycles/s | × noop (median ratio) | cycle p50 | cycle p99 | server CPU per cycle | errors |\n|---|---|---|---|---|---|---|---|\n")
	for _, sc := range r.scs {
		if sc.Kind != "uncontended" {
			continue
		}
		for _, sys := range sc.Systems {
			if sys == "base" { // in its own section below
				continue
			}
			c := r.cell(sc.Name, sys)
			ratio := "–"
			if x, ok := r.ratio(sc.Name, sys, "noop", cyclesOf); ok && sys != "noop" {
				ratio = fmt.Sprintf("%.2f", x)
			}
			p("| %s | %s | %.0f | %s | %s | %s | %s | %s |\n", sc.Name, sys, c.cycles, ratio, ms(c.cycP50), ms(c.cycP99), ms(c.cpu), errs(c))
		}
	}

	p("\n## Contended: every client on one key\n\nA hand-off is a grant to a different client than the previous holder (an owner change), counted by the load generator. `wait` is the acquire's latency: arrival to grant. Redis has no queue: its clients spin on `SET NX PX`, so the fastest re-asker wins and fairness collapses; etcd's `concurrency.Mutex` queues by revision.\n\n")
	p("| scenario | system | hand-offs/s | × fifo (median ratio) | owner changes per grant | Jain fairness | wait p50 | wait p99 | server CPU per cycle | errors |\n|---|---|---|---|---|---|---|---|---|---|\n")
	for _, sc := range r.scs {
		if sc.Kind != "contended" {
			continue
		}
		for _, sys := range sc.Systems {
			if sys == "base" { // in its own section below
				continue
			}
			c := r.cell(sc.Name, sys)
			ratio := "–"
			if x, ok := r.ratio(sc.Name, sys, "fifo", handoffsOf); ok && sys != "fifo" {
				ratio = fmt.Sprintf("%.2f", x)
			}
			share := 0.0
			if c.cycles > 0 {
				share = c.handoffs / c.cycles
			}
			p("| %s | %s | %.0f | %s | %.3f | %.4f | %s | %s | %s | %s |\n", sc.Name, sys, c.handoffs, ratio, share, c.jain, ms(c.acqP50), ms(c.acqP99), ms(c.cpu), errs(c))
		}
	}

	if r.base != nil {
		p("\n%s", r.baseSection())
	}

	for _, sc := range r.scs {
		if sc.Kind != "expire" {
			continue
		}
		c := r.cell(sc.Name, "mutexd")
		if c == nil {
			continue
		}
		p("\n## Expiry hand-over\n\n%d clients each abandon a 1 s lease on their own key and queue for it again at once; the figure is the time from the abandoned lease's deadline (as the server reported it, to the millisecond) to the waiter's grant. %d samples.\n\n", sc.Clients, c.lateCount)
		p("| p50 | p99 | max |\n|---|---|---|\n| %s | %s | %s |\n", ms(c.lateP50), ms(c.lateP99), ms(c.lateMax))
	}

	if m := r.mem; m != nil {
		p("\n## Memory and start-up\n\n| figure | value |\n|---|---|\n")
		p("| idle RSS (fresh daemon, 1 s after ready) | %.1f MB |\n", float64(m.IdleKiB)/1024)
		p("| RSS per waiting HTTP connection, %d clients queued on one key (median over 4 s once all are queued, minus idle RSS) | %.1f KiB |\n", m.Waiters, m.PerWaiterKiB)
		p("| exec to `/readyz` 200 | %s (first daemon: %s) |\n", ms(m.ReadyIn), ms(m.FirstReadyIn))
	}

	p("\n## Engine (in-process, `go test -bench . ./internal/engine`, 3 counts)\n\n```\n%s```\n", r.env.Engine)

	p("\n## Machine and versions\n\n| | |\n|---|---|\n")
	p("| CPU | %s, %s cores |\n| memory | %s |\n| kernel | %s |\n| Go | %s |\n| mutexd | commit %s |\n| Redis | %s |\n| etcd | %s (client go.etcd.io/etcd/client/v3) |\n",
		r.env.CPU, r.env.Cores, r.env.Memory, r.env.Kernel, r.env.Go, r.env.Commit, r.env.Redis, r.env.Etcd)

	p("\n## How to rerun\n\n```sh\nbench/run.sh                       # installs redis-server and etcd-server if missing, ~10 min\nbench/run.sh -reps 5 -duration 10s # longer, steadier\nbench/run.sh -systems mutexd,noop,fifo -waiters 0\n```\n\n")
	p("It builds mutexd and the ceiling servers (`bench/cmd/ceiling`), starts every system on a free loopback port, drives each through `internal/loadgen` (the code behind `mutexd bench`; Redis and etcd through `bench/peers`), and rewrites this file and the chart. Single runs against a running daemon: `mutexd bench --clients 64` (uncontended), `mutexd bench --clients 16 --keys 1` (contended).\n")
	return b.String()
}

// benchFigure returns the median of the figures with unit on the lines of
// go test -bench output that start with prefix.
func benchFigure(out, prefix, unit string) (float64, bool) {
	var xs []float64
	for line := range strings.Lines(out) {
		if !strings.HasPrefix(line, prefix) {
			continue
		}
		f := strings.Fields(line)
		for i := 1; i < len(f); i++ {
			if f[i] == unit {
				if v, err := strconv.ParseFloat(f[i-1], 64); err == nil {
					xs = append(xs, v)
				}
			}
		}
	}
	return median(xs), len(xs) > 0
}

// yes is a target's verdict.
func yes(ok bool) string {
	if ok {
		return "yes"
	}
	return "**no**"
}

func errs(c *cell) string {
	if c.errors == 0 && c.overlaps == 0 {
		return "0"
	}
	var parts []string
	for _, k := range slices.Sorted(func(yield func(string) bool) {
		for k := range c.errCodes {
			if !yield(k) {
				return
			}
		}
	}) {
		parts = append(parts, fmt.Sprintf("%s=%d", k, c.errCodes[k]))
	}
	if c.overlaps > 0 {
		parts = append(parts, fmt.Sprintf("OVERLAPS=%d", c.overlaps))
	}
	return strings.Join(parts, " ")
}

// targets checks the goals of the performance issue against the figures.
func (r *report) targets() [][4]string {
	var out [][4]string
	if x, ok := r.ratio("uncontended C=64", "mutexd", "noop", cyclesOf); ok {
		c := r.cell("uncontended C=64", "mutexd")
		out = append(out, [4]string{"uncontended cycles/s, C=64", "≥ 0.85 × noop (aim 0.90)", fmt.Sprintf("%.2f × noop (%.0f/s)", x, c.cycles), yes(x >= 0.85)})
	}
	if m, n := r.cell("uncontended C=64", "mutexd"), r.cell("uncontended C=64", "noop"); m != nil && n != nil && m.cpu > 0 {
		out = append(out, [4]string{"server CPU per uncontended cycle, C=64 (steadier than throughput)", "as close to noop as possible",
			fmt.Sprintf("%s vs noop %s (%.2f × noop's cost)", ms(m.cpu), ms(n.cpu), float64(m.cpu)/float64(n.cpu)), "–"})
	}
	if x, ok := r.ratio("uncontended C=64", "mutexd", "etcd", cyclesOf); ok {
		out = append(out, [4]string{"uncontended cycles/s, C=64", "≥ 2.5 × etcd", fmt.Sprintf("%.1f × etcd", x), yes(x >= 2.5)})
	}
	if c := r.cell("uncontended C=1", "mutexd"); c != nil {
		out = append(out, [4]string{"latency at C=1", "cycle p50 ≤ 300 µs, p99 ≤ 1 ms", fmt.Sprintf("p50 %s, p99 %s", ms(c.cycP50), ms(c.cycP99)),
			yes(c.cycP50 <= 300*time.Microsecond && c.cycP99 <= time.Millisecond)})
	}
	for _, n := range []struct {
		c   int
		p99 time.Duration
	}{{16, 10 * time.Millisecond}, {64, 30 * time.Millisecond}} {
		name := fmt.Sprintf("contended C=%d", n.c)
		c := r.cell(name, "mutexd")
		if c == nil {
			continue
		}
		if x, ok := r.ratio(name, "mutexd", "fifo", handoffsOf); ok {
			out = append(out, [4]string{"hand-offs/s, one key, C=" + strconv.Itoa(n.c), "≥ 0.80 × fifo", fmt.Sprintf("%.2f × fifo (%.0f/s)", x, c.handoffs), yes(x >= 0.80)})
		}
		share := 0.0
		if c.cycles > 0 {
			share = c.handoffs / c.cycles
		}
		out = append(out, [4]string{"FIFO and fairness, C=" + strconv.Itoa(n.c), "every hand-off an owner change, Jain ≥ 0.99, no overlap", fmt.Sprintf("%.3f owner changes per grant, Jain %.4f, %d overlaps", share, c.jain, c.overlaps),
			yes(share >= 0.99 && c.jain >= 0.99 && c.overlaps == 0)})
		out = append(out, [4]string{"wait p99, one key, C=" + strconv.Itoa(n.c), "≤ " + ms(n.p99), ms(c.acqP99), yes(c.acqP99 <= n.p99)})
		for _, peer := range []string{"etcd", "redis"} {
			if x, ok := r.ratio(name, "mutexd", peer, handoffsOf); ok {
				out = append(out, [4]string{"hand-offs/s, one key, C=" + strconv.Itoa(n.c), "versus " + peer, fmt.Sprintf("%.1f × %s", x, peer), "–"})
			}
		}
	}
	if t, ok := r.baseTarget(); ok {
		out = append(out, t)
	}
	if c := r.cell("expiry C=50", "mutexd"); c != nil && c.lateCount > 0 {
		out = append(out, [4]string{"expiry hand-over", "p99 ≤ 5 ms after the deadline", ms(c.lateP99), yes(c.lateP99 <= 5*time.Millisecond)})
	}
	if v, ok := benchFigure(r.env.Engine, "BenchmarkUncontended-", "ns/op"); ok {
		a, _ := benchFigure(r.env.Engine, "BenchmarkUncontended-", "allocs/op")
		out = append(out, [4]string{"engine acquire+release, in process", "≤ 300 ns, ≤ 2 allocations", fmt.Sprintf("%.0f ns, %.0f allocations", v, a), yes(v <= 300 && a <= 2)})
	}
	if v, ok := benchFigure(r.env.Engine, "BenchmarkHeldLeaseMemory-", "bytes/lease"); ok {
		out = append(out, [4]string{"engine heap per held lease, 16-byte key", "≤ 256 B", fmt.Sprintf("%.0f B", v), yes(v <= 256)})
	}
	if m := r.mem; m != nil {
		out = append(out,
			[4]string{"idle RSS", "≤ 12 MB", fmt.Sprintf("%.1f MB", float64(m.IdleKiB)/1024), yes(float64(m.IdleKiB)/1024 <= 12)},
			[4]string{"RSS per waiting connection", "≤ 24 KiB at 10,000 waiters", fmt.Sprintf("%.1f KiB at %d", m.PerWaiterKiB, m.Waiters), yes(m.PerWaiterKiB <= 24)},
			[4]string{"start to `/readyz` 200", "≤ 50 ms", ms(m.ReadyIn), yes(m.ReadyIn <= 50*time.Millisecond)},
		)
	}
	return out
}

// throughputOf is the figure a scenario's throughput is read in: cycles
// without contention, hand-offs (owner changes) on one key.
func throughputOf(kind string) func(run) float64 {
	if kind == "contended" {
		return handoffsOf
	}
	return cyclesOf
}

// baseSection is the comparison of mutexd with the build at -base, scenario
// by scenario, both measured in the same repetitions.
func (r *report) baseSection() string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	current := "the working tree at " + r.env.Commit
	if r.env.Dirty {
		current += " with uncommitted changes"
	}
	p("## Against the previous build (%s, %s)\n\n", r.base.Rev, r.base.Hash)
	p("`base` is mutexd built at %s (commit %s), run beside the current build (%s) in the same rotation, so both met the same load on the machine. Throughput is cycles/s without contention and hand-offs/s on one key. A `×` column is the median of the per-repetition ratios mutexd / base (their range in brackets: when it spans 0.97 the run cannot tell the builds apart, and more or longer repetitions are needed): above 1 is faster for throughput, and costlier for server CPU per cycle.\n\n", r.base.Rev, r.base.Hash, current)
	p("| scenario | mutexd /s | base /s | × base | mutexd CPU per cycle | base CPU per cycle | CPU × base | mutexd cycle p50 / p99 | base cycle p50 / p99 |\n|---|---|---|---|---|---|---|---|---|\n")
	for _, sc := range r.scs {
		m, o := r.cell(sc.Name, "mutexd"), r.cell(sc.Name, "base")
		if m == nil || o == nil {
			continue
		}
		f := throughputOf(sc.Kind)
		tput := func(c *cell) float64 {
			if sc.Kind == "contended" {
				return c.handoffs
			}
			return c.cycles
		}
		x, cpu := spread(r.ratios(sc.Name, "mutexd", "base", f)), spread(r.ratios(sc.Name, "mutexd", "base", cpuOf))
		p("| %s | %.0f | %.0f | %s | %s | %s | %s | %s / %s | %s / %s |\n", sc.Name, tput(m), tput(o), x, ms(m.cpu), ms(o.cpu), cpu,
			ms(m.cycP50), ms(m.cycP99), ms(o.cycP50), ms(o.cycP99))
		if m.errors+m.overlaps+o.errors+o.overlaps > 0 {
			p("| %s errors | %s | %s | | | | | | |\n", sc.Name, errs(m), errs(o))
		}
	}
	return b.String()
}

// spread formats per-repetition ratios as their median and range.
func spread(xs []float64) string {
	if len(xs) == 0 {
		return "–"
	}
	return fmt.Sprintf("%.3f (%.2f–%.2f)", median(xs), slices.Min(xs), slices.Max(xs))
}

// baseTarget is the project's rule that a change may not slow the
// standalone acquire/release path: the median of the per-repetition ratios
// mutexd/base over every uncontended scenario and repetition, pooled so
// that one number has the most samples behind it.
func (r *report) baseTarget() ([4]string, bool) {
	if r.base == nil {
		return [4]string{}, false
	}
	var all []float64
	var each []string
	for _, sc := range r.scs {
		if sc.Kind != "uncontended" {
			continue
		}
		xs := r.ratios(sc.Name, "mutexd", "base", cyclesOf)
		if len(xs) == 0 {
			continue
		}
		all = append(all, xs...)
		each = append(each, fmt.Sprintf("C=%d %.3f", sc.Clients, median(xs)))
	}
	if len(all) == 0 {
		return [4]string{}, false
	}
	x := median(all)
	return [4]string{fmt.Sprintf("standalone cycles/s versus the previous build (%s, %s)", r.base.Rev, r.base.Hash), "≥ 0.97 (same run)",
		fmt.Sprintf("%.3f × base (%s)", x, strings.Join(each, ", ")), yes(x >= 0.97)}, true
}

// comparison is the whole output of a run of mutexd against base alone.
func (r *report) comparison() string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	p("# mutexd against the previous build\n\n")
	p("Generated by `bench/cmd/compare -base` on %s, Go %s, %s cores shared by server and load generator over loopback. Every figure is the median of %d interleaved repetitions of %s each, the two systems' order rotating between repetitions; ratios are taken within a repetition, then their median. Other work on the machine moves the absolute figures; read the ratios, and the CPU ratio when throughput is noisy.\n\n",
		r.env.Date, r.env.Go, r.env.Cores, r.reps, r.duration)
	p("| target | goal | measured | met |\n|---|---|---|---|\n")
	if t, ok := r.baseTarget(); ok {
		p("| %s | %s | %s | %s |\n", t[0], t[1], t[2], t[3])
	}
	p("\n%s", r.baseSection())
	return b.String()
}
