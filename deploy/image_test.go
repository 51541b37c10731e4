package deploy_test

import (
	"bufio"
	"bytes"
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// testVersion is the VERSION build argument the tests build with.
const testVersion = "v0.0.0-deploytest"

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	cmd   string // upper case: FROM, RUN, ...
	args  string
	stage int // index of the FROM it belongs to
}

// readDockerfile parses the repository's Dockerfile into instructions.
func readDockerfile(t *testing.T) []instruction {
	t.Helper()
	data, err := os.ReadFile(repoFile(t, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	var out []instruction
	var cur strings.Builder
	stage := -1
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if cur.Len() == 0 && (line == "" || strings.HasPrefix(line, "#")) {
			continue
		}
		if strings.HasSuffix(line, `\`) {
			cur.WriteString(strings.TrimSuffix(line, `\`) + " ")
			continue
		}
		cur.WriteString(line)
		full := cur.String()
		cur.Reset()
		cmd, args, _ := strings.Cut(full, " ")
		cmd = strings.ToUpper(cmd)
		if cmd == "FROM" {
			stage++
		}
		out = append(out, instruction{cmd: cmd, args: strings.TrimSpace(args), stage: stage})
	}
	if cur.Len() > 0 {
		t.Fatalf("Dockerfile ends in a continuation line: %q", cur.String())
	}
	return out
}

// shellCommand strips a RUN instruction's BuildKit flags (--mount=...).
func shellCommand(run string) string {
	fields := strings.Fields(run)
	for len(fields) > 0 && strings.HasPrefix(fields[0], "--") {
		fields = fields[1:]
	}
	return strings.Join(fields, " ")
}

var (
	buildOnce sync.Once
	buildDir  string
	buildErr  error
	buildLog  string
)

// builtBinaries runs the Dockerfile's go build commands exactly as written
// (with VERSION=testVersion and /out/ redirected to a temporary directory),
// in a copy of the build context Docker would send (the repository minus
// .dockerignore), and returns the directory of the binaries. The build
// runs once per test binary.
func builtBinaries(t *testing.T) string {
	t.Helper()
	goTool := tool(t, "go")
	root, rules := repoRoot(t), readDockerignore(t)
	var cmds []string
	for _, in := range readDockerfile(t) {
		if in.cmd == "RUN" && strings.Contains(in.args, "go build") {
			cmds = append(cmds, shellCommand(in.args))
		}
	}
	if len(cmds) != 2 {
		t.Fatalf("Dockerfile has %d go build commands, want 2 (mutexd and the demo): %q", len(cmds), cmds)
	}
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "mutexd-image-")
		if buildErr != nil {
			return
		}
		src := filepath.Join(buildDir, "context")
		if buildErr = buildContext(root, rules, src); buildErr != nil {
			return
		}
		var log strings.Builder
		for _, c := range cmds {
			c = strings.ReplaceAll(c, "/out/", buildDir+"/")
			cmd := exec.Command("sh", "-c", c)
			cmd.Dir = src
			cmd.Env = append(os.Environ(), "VERSION="+testVersion, "PATH="+filepath.Dir(goTool)+string(os.PathListSeparator)+os.Getenv("PATH"))
			start := time.Now()
			out, err := cmd.CombinedOutput()
			fmt.Fprintf(&log, "$ %s (%s)\n%s", c, time.Since(start).Round(time.Millisecond), out)
			if err != nil {
				buildErr = fmt.Errorf("%s: %w\n%s", c, err, out)
				return
			}
		}
		buildLog = log.String()
	})
	if buildErr != nil {
		t.Fatalf("building as the Dockerfile does: %v", buildErr)
	}
	return buildDir
}

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// TestDockerfile checks the image's settings against what mutexd needs: a
// static-only final stage, a non-root numeric user, the listen address and
// exposed port agreeing, a HEALTHCHECK and ENTRYPOINT naming the copied
// binary, and the Go toolchain go.mod asks for.
func TestDockerfile(t *testing.T) {
	ins := readDockerfile(t)
	last := ins[len(ins)-1].stage
	final := map[string][]string{}
	args := map[string]string{}
	for _, in := range ins {
		if in.cmd == "ARG" {
			if k, v, ok := strings.Cut(in.args, "="); ok {
				args[k] = v
			}
		}
		if in.stage == last {
			final[in.cmd] = append(final[in.cmd], in.args)
		}
	}
	one := func(cmd string) string {
		t.Helper()
		if len(final[cmd]) != 1 {
			t.Fatalf("final stage has %d %s instructions, want 1: %q", len(final[cmd]), cmd, final[cmd])
		}
		return final[cmd][0]
	}

	if from := one("FROM"); !strings.HasPrefix(from, "gcr.io/distroless/static") && from != "scratch" {
		t.Errorf("final stage FROM %s, want scratch or gcr.io/distroless/static*", from)
	}
	user := one("USER")
	if !regexp.MustCompile(`^[1-9][0-9]*(:[1-9][0-9]*)?$`).MatchString(user) {
		t.Errorf("USER %s, want a numeric non-root uid (Kubernetes runAsNonRoot needs a number)", user)
	}
	env := one("ENV")
	if env != "MUTEXD_LISTEN=0.0.0.0:7070" {
		t.Errorf("ENV %s, want MUTEXD_LISTEN=0.0.0.0:7070", env)
	}
	if expose := one("EXPOSE"); expose != "7070" {
		t.Errorf("EXPOSE %s, want 7070 (the port of MUTEXD_LISTEN)", expose)
	}
	copyArgs := strings.Fields(one("COPY"))
	bin := copyArgs[len(copyArgs)-1]
	if src := copyArgs[len(copyArgs)-2]; src != "/out/mutexd" {
		t.Errorf("final stage copies %s, want /out/mutexd", src)
	}
	if hc := one("HEALTHCHECK"); !strings.Contains(hc, `CMD ["`+bin+`", "healthcheck"`) {
		t.Errorf("HEALTHCHECK %s, want an exec-form CMD running %s healthcheck", hc, bin)
	}
	if ep := one("ENTRYPOINT"); ep != `["`+bin+`"]` {
		t.Errorf("ENTRYPOINT %s, want [%q]", ep, bin)
	}

	gomod, err := os.ReadFile(repoFile(t, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	want := regexp.MustCompile(`(?m)^go (\S+)$`).FindSubmatch(gomod)
	if want == nil || args["GO_VERSION"] != string(want[1]) {
		t.Errorf("ARG GO_VERSION=%s, want go.mod's go directive %s", args["GO_VERSION"], want)
	}
}

// TestImageBinaries runs the Dockerfile's build commands and checks the
// binaries as the image will hold them: static (no interpreter, no shared
// libraries: distroless/static has no libc), built with -trimpath and
// CGO_ENABLED=0, carrying the injected version, small enough for an image
// under 15 MB, and able to serve and pass their own HEALTHCHECK with only
// MUTEXD_LISTEN set.
func TestImageBinaries(t *testing.T) {
	dir := builtBinaries(t)
	t.Logf("build:\n%s", buildLog)
	fileTool := tool(t, "file")
	goTool := tool(t, "go")
	for _, name := range []string{"mutexd", "demo"} {
		t.Run(name, func(t *testing.T) {
			bin := filepath.Join(dir, name)
			f, err := elf.Open(bin)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			for _, p := range f.Progs {
				if p.Type == elf.PT_INTERP {
					t.Errorf("%s has an ELF interpreter: it is dynamically linked", name)
				}
			}
			if libs, err := f.ImportedLibraries(); err != nil || len(libs) > 0 {
				t.Errorf("%s imports shared libraries %v (err %v), want none", name, libs, err)
			}
			if out := runTool(t, dir, nil, fileTool, bin); !strings.Contains(out, "statically linked") {
				t.Errorf("file %s = %q, want statically linked", name, out)
			}
			info := runTool(t, dir, nil, goTool, "version", "-m", bin)
			for _, want := range []string{"build\t-trimpath=true", "build\tCGO_ENABLED=0"} {
				if !strings.Contains(info, want) {
					t.Errorf("go version -m %s lacks %q:\n%s", name, want, info)
				}
			}
			st, err := os.Stat(bin)
			if err != nil {
				t.Fatal(err)
			}
			// distroless/static adds about 2 MB; the image should stay under
			// 17 MB, so the binary under 15 MB. (Cluster mode brought
			// hashicorp/raft, its msgpack codec and bbolt: 13 MB became 14.5.)
			t.Logf("%s: %.2f MB", name, float64(st.Size())/1e6)
			if st.Size() > 15e6 {
				t.Errorf("%s is %.2f MB, want at most 15 MB so the image stays under 17 MB", name, float64(st.Size())/1e6)
			}
		})
	}

	// -trimpath keeps -ldflags out of the build info: the binary itself
	// must report the injected version.
	bin := filepath.Join(dir, "mutexd")
	if out := runTool(t, dir, nil, bin, "version"); !strings.HasPrefix(out, "mutexd "+testVersion+" ") {
		t.Errorf("mutexd version = %q, want it to start with %q", out, "mutexd "+testVersion)
	}

	// The container's view: the daemon and its HEALTHCHECK share nothing but
	// the image's environment.
	d := startDaemon(t, bin)
	hc := exec.CommandContext(t.Context(), bin, "healthcheck", "--timeout", "3s")
	hc.Env = []string{"MUTEXD_LISTEN=0.0.0.0:" + d.port} // as the image sets it, on this port
	if out, err := hc.CombinedOutput(); err != nil || string(out) != "ready\n" {
		t.Errorf("mutexd healthcheck with MUTEXD_LISTEN=0.0.0.0:%s: %v, output %q; want exit 0 and ready", d.port, err, out)
	}

	// The Kubernetes example's memory request is sized from this
	// measurement: the idle daemon must fit in it.
	rss := residentBytes(t, d.pid)
	_, m := sidecarMutexd(t)
	req := quantityBytes(t, m.Resources.Requests["memory"])
	t.Logf("idle mutexd: %.1f MiB resident; standalone/sidecar.yaml requests %.1f MiB", float64(rss)/(1<<20), float64(req)/(1<<20))
	if rss > req {
		t.Errorf("idle mutexd uses %.1f MiB, more than standalone/sidecar.yaml's memory request %s: re-measure and resize", float64(rss)/(1<<20), m.Resources.Requests["memory"])
	}
}

// residentBytes reads a process's resident set size from /proc.
func residentBytes(t *testing.T, pid int) int64 {
	t.Helper()
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^VmRSS:\s+(\d+) kB$`).FindSubmatch(status)
	if m == nil {
		t.Fatalf("no VmRSS in /proc/%d/status", pid)
	}
	kb, _ := strconv.ParseInt(string(m[1]), 10, 64)
	return kb << 10
}

// quantityBytes parses a Kubernetes memory quantity such as 16Mi.
func quantityBytes(t *testing.T, q string) int64 {
	t.Helper()
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"Ki", 1 << 10}, {"Mi", 1 << 20}, {"Gi", 1 << 30}, {"k", 1e3}, {"M", 1e6}, {"G", 1e9}} {
		if n, ok := strings.CutSuffix(q, u.suffix); ok {
			v, err := strconv.ParseInt(n, 10, 64)
			if err != nil {
				t.Fatalf("memory quantity %q: %v", q, err)
			}
			return v * u.mult
		}
	}
	v, err := strconv.ParseInt(q, 10, 64)
	if err != nil {
		t.Fatalf("memory quantity %q: %v", q, err)
	}
	return v
}
