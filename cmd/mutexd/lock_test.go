package main

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mutexd/mutexd/client"
	"github.com/mutexd/mutexd/internal/servertest"
)

// These tests run the real mutexd binary against a real daemon on
// loopback, with real child processes.

// readFile returns the file's contents, "" if it does not exist.
func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return string(b)
}

// oneLine checks that stderr is a single line containing want.
func oneLine(t *testing.T, stderr, want string) {
	t.Helper()
	if strings.Count(stderr, "\n") != 1 || !strings.HasSuffix(stderr, "\n") || !strings.Contains(stderr, want) {
		t.Errorf("stderr = %q, want one line containing %q", stderr, want)
	}
}

// holdKey acquires key through the Go client for the rest of the test.
func holdKey(t *testing.T, s *servertest.Server, key string) *client.Lease {
	t.Helper()
	c, err := client.New(s.URL)
	if err != nil {
		t.Fatal(err)
	}
	l, err := c.Acquire(t.Context(), key, client.TTL(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Release(t.Context()) })
	return l
}

func TestLockRunsCommandsOneAfterAnother(t *testing.T) {
	t.Parallel()
	s := servertest.Start(t)
	log := filepath.Join(t.TempDir(), "log")
	// Each command logs its start and end with a nanosecond timestamp;
	// under the lock the lines can only alternate start, end, start, end.
	script := `echo "start $(date +%s%N) $MUTEXD_FENCE" >> "$1"; sleep 0.3; echo "end $(date +%s%N) $MUTEXD_FENCE" >> "$1"`
	const n = 4
	procs := make([]*proc, n)
	for i := range procs {
		procs[i] = startMutexd(t, s, "lock", "--ttl", "3s", "--wait", "30s", "cron:report", "--", "sh", "-c", script, "sh", log)
	}
	for i, p := range procs {
		if code := p.wait(t); code != 0 {
			t.Fatalf("lock %d exited %d: %s", i, code, p.stderr.String())
		}
	}
	lines := strings.Split(strings.TrimSpace(readFile(t, log)), "\n")
	if len(lines) != 2*n {
		t.Fatalf("log has %d lines, want %d:\n%s", len(lines), 2*n, strings.Join(lines, "\n"))
	}
	var lastEnd int64
	var fences []uint64
	for i := 0; i < len(lines); i += 2 {
		start, end := strings.Fields(lines[i]), strings.Fields(lines[i+1])
		if len(start) != 3 || len(end) != 3 || start[0] != "start" || end[0] != "end" || start[2] != end[2] {
			t.Fatalf("overlapping or malformed runs at line %d:\n%s", i+1, strings.Join(lines, "\n"))
		}
		t0, _ := strconv.ParseInt(start[1], 10, 64)
		t1, _ := strconv.ParseInt(end[1], 10, 64)
		if t0 < lastEnd || t1 < t0 {
			t.Errorf("run %d [%d, %d] overlaps the previous run ending at %d", i/2, t0, t1, lastEnd)
		}
		lastEnd = t1
		f, _ := strconv.ParseUint(start[2], 10, 64)
		fences = append(fences, f)
	}
	if !slices.IsSorted(fences) || slices.Compact(slices.Clone(fences))[n-1] == 0 || fences[0] == 0 {
		t.Errorf("fences in run order = %v, want strictly increasing", fences)
	}
}

func TestLockPassesExitStatusAndReleasesWithOutcome(t *testing.T) {
	t.Parallel()
	tests := []struct {
		script  string
		code    int
		outcome string
	}{
		{"exit 0", 0, "released"},
		{"exit 3", 3, "failed"},
		{"kill -KILL $$", 128 + 9, "failed"},
	}
	for _, tt := range tests {
		t.Run(tt.script, func(t *testing.T) {
			t.Parallel()
			s := servertest.Start(t)
			first := holdKey(t, s, "k")
			p := startMutexd(t, s, "lock", "k", "--", "sh", "-c", "echo $MUTEXD_FENCE; "+tt.script)
			servertest.Eventually(t, "lock is queued", func() bool { return s.Waiters("k") == 1 })
			// A waiter behind lock learns how its lease ended.
			next := make(chan *client.Lease, 1)
			c, _ := client.New(s.URL)
			go func() {
				l, err := c.Acquire(t.Context(), "k", client.Wait(30*time.Second))
				if err != nil {
					t.Error(err)
				}
				next <- l
			}()
			servertest.Eventually(t, "the next waiter is queued", func() bool { return s.Waiters("k") == 2 })
			if err := first.Release(t.Context()); err != nil {
				t.Fatal(err)
			}
			if code := p.wait(t); code != tt.code {
				t.Errorf("exit code = %d, want %d (stderr %q)", code, tt.code, p.stderr.String())
			}
			if p.stderr.String() != "" {
				t.Errorf("stderr = %q, want nothing: the status speaks", p.stderr.String())
			}
			l := <-next
			if l == nil {
				t.FailNow()
			}
			defer l.Release(t.Context())
			fence, _ := strconv.ParseUint(strings.TrimSpace(p.stdout.String()), 10, 64)
			if l.Previous == nil || l.Previous.Fence != fence || l.Previous.Outcome != tt.outcome {
				t.Errorf("previous = %+v, want fence %d (the command's MUTEXD_FENCE) outcome %s", l.Previous, fence, tt.outcome)
			}
		})
	}
}

// trapScript writes "ready" to $1, then waits; on SIGTERM it writes TERM
// and exits with $2.
const trapScript = `exec 2>/dev/null; trap 'echo TERM >> "$1"; exit $2' TERM; echo ready >> "$1"; while :; do sleep 0.05; done`

func TestLockForwardsSignalsToTheCommand(t *testing.T) {
	t.Parallel()
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP} {
		t.Run(sig.String(), func(t *testing.T) {
			t.Parallel()
			s := servertest.Start(t)
			f := filepath.Join(t.TempDir(), "f")
			name := signalName(sig)
			script := strings.ReplaceAll(trapScript, "TERM", name)
			p := startMutexd(t, s, "lock", "k", "--", "sh", "-c", script, "sh", f, "9")
			servertest.Eventually(t, "the command runs", func() bool { return readFile(t, f) == "ready\n" })
			if err := p.cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			if code := p.wait(t); code != 9 {
				t.Errorf("exit code = %d, want the command's 9 (stderr %q)", code, p.stderr.String())
			}
			if got, want := readFile(t, f), "ready\n"+name+"\n"; got != want {
				t.Errorf("command wrote %q, want %q", got, want)
			}
			if s.Held("k") {
				t.Error("key still held after lock exited")
			}
		})
	}
}

// signalName is a signal's name as sh's trap takes it.
func signalName(sig syscall.Signal) string {
	return map[syscall.Signal]string{syscall.SIGTERM: "TERM", syscall.SIGINT: "INT", syscall.SIGHUP: "HUP"}[sig]
}

func TestLockStopsTheCommandWhenTheLeaseIsLost(t *testing.T) {
	t.Parallel()
	forceRelease := func(s *servertest.Server) error { _, err := s.Engine().ForceRelease("k"); return err }
	tests := []struct {
		name      string
		script    string
		lose      func(*servertest.Server) error
		killAfter string // long where SIGTERM must be seen to work
		want      string
	}{
		{"force-released", trapScript, forceRelease, "10s", "ready\nTERM\n"},
		{"daemon stopped", trapScript, (*servertest.Server).Stop, "10s", "ready\nTERM\n"},
		// A command that ignores SIGTERM is killed after --kill-after,
		// with everything in its process group.
		{"SIGTERM ignored", `exec 2>/dev/null; trap '' TERM; echo ready >> "$1"; sleep 60`, forceRelease, "300ms", "ready\n"},
		// By default SIGKILL follows after the lease's safety margin, so a
		// command deaf to SIGTERM is dead by the server's deadline (the old
		// fixed 10s default let it overlap the next holder).
		{"SIGTERM ignored, default kill-after", `exec 2>/dev/null; trap '' TERM; echo ready >> "$1"; sleep 60`, (*servertest.Server).Stop, "", "ready\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := servertest.Start(t)
			f := filepath.Join(t.TempDir(), "f")
			args := []string{"lock", "--ttl", "1s"}
			if tt.killAfter != "" {
				args = append(args, "--kill-after", tt.killAfter)
			}
			p := startMutexd(t, s, append(args, "k", "--", "sh", "-c", tt.script, "sh", f, "0")...)
			servertest.Eventually(t, "the command runs", func() bool { return readFile(t, f) == "ready\n" })
			if err := tt.lose(s); err != nil {
				t.Fatal(err)
			}
			lost := time.Now()
			if code := p.wait(t); code != 1 {
				t.Errorf("exit code = %d, want 1", code)
			}
			if d := time.Since(lost); d > 8*time.Second {
				t.Errorf("lock exited %s after the lease was lost, want about a TTL", d)
			}
			oneLine(t, p.stderr.String(), "lease lost")
			if got := readFile(t, f); got != tt.want {
				t.Errorf("command wrote %q, want %q", got, tt.want)
			}
		})
	}
}

func TestLockWarnsWhenTheLeaseIsLost(t *testing.T) {
	t.Parallel()
	s := servertest.Start(t)
	f := filepath.Join(t.TempDir(), "f")
	script := `echo ready >> "$1"; while [ ! -e "$1.go" ]; do sleep 0.05; done; echo finished >> "$1"; exit 4`
	p := startMutexd(t, s, "lock", "--ttl", "1s", "--on-lost", "warn", "k", "--", "sh", "-c", script, "sh", f)
	servertest.Eventually(t, "the command runs", func() bool { return readFile(t, f) == "ready\n" })
	if _, err := s.Engine().ForceRelease("k"); err != nil {
		t.Fatal(err)
	}
	servertest.Eventually(t, "the warning", func() bool { return !p.running() || strings.Contains(p.stderr.String(), "warning") })
	if err := os.WriteFile(f+".go", nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(t); code != 4 {
		t.Errorf("exit code = %d, want the command's 4", code)
	}
	oneLine(t, p.stderr.String(), "lease lost")
	if got := readFile(t, f); got != "ready\nfinished\n" {
		t.Errorf("command wrote %q, want it to finish", got)
	}
}

func TestLockOnAHeldKeyDoesNotRunTheCommand(t *testing.T) {
	t.Parallel()
	s := servertest.Start(t)
	holdKey(t, s, "k")
	dir := t.TempDir()
	tests := []struct {
		args []string
		code int
	}{
		{[]string{"lock", "--wait", "0", "k", "--"}, 75},
		{[]string{"lock", "--wait", "100ms", "--conflict-exit-code", "9", "k", "--"}, 9},
	}
	for i, tt := range tests {
		f := filepath.Join(dir, strconv.Itoa(i))
		p := startMutexd(t, s, append(tt.args, "touch", f)...)
		if code := p.wait(t); code != tt.code {
			t.Errorf("%v: exit code = %d, want %d", tt.args, code, tt.code)
		}
		oneLine(t, p.stderr.String(), "not acquired within --wait")
		if _, err := os.Stat(f); !os.IsNotExist(err) {
			t.Errorf("%v ran the command", tt.args)
		}
	}
}

func TestLockInterruptedWhileWaiting(t *testing.T) {
	t.Parallel()
	s := servertest.Start(t)
	holdKey(t, s, "k")
	f := filepath.Join(t.TempDir(), "f")
	p := startMutexd(t, s, "lock", "--wait", "30s", "k", "--", "touch", f)
	servertest.Eventually(t, "lock is queued", func() bool { return s.Waiters("k") == 1 })
	if err := p.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(t); code != 128+2 {
		t.Errorf("exit code = %d, want 130", code)
	}
	oneLine(t, p.stderr.String(), "interrupted")
	servertest.Eventually(t, "the waiter leaves the queue", func() bool { return s.Waiters("k") == 0 })
	if _, err := os.Stat(f); !os.IsNotExist(err) {
		t.Error("the command ran")
	}
}

// TestLockOnErrorStopAbortsTheQueue: a command that fails under
// --on-error stop aborts the waiters queued behind it.
func TestLockOnErrorStopAbortsTheQueue(t *testing.T) {
	t.Parallel()
	s := servertest.Start(t)
	f := filepath.Join(t.TempDir(), "go")
	p := startMutexd(t, s, "lock", "--on-error", "stop", "k", "--", "sh", "-c", `while [ ! -e "$1" ]; do sleep 0.02; done; exit 1`, "sh", f)
	servertest.Eventually(t, "lock holds the key", func() bool { return s.Held("k") })
	c, _ := client.New(s.URL)
	aborted := make(chan error, 1)
	go func() { _, err := c.Acquire(t.Context(), "k", client.Wait(30*time.Second)); aborted <- err }()
	servertest.Eventually(t, "the waiter is queued", func() bool { return s.Waiters("k") == 1 })
	if err := os.WriteFile(f, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(t); code != 1 {
		t.Errorf("exit code = %d, want the command's 1", code)
	}
	if err := <-aborted; !errors.Is(err, client.ErrAborted) {
		t.Errorf("waiter behind the failed command: %v, want ErrAborted", err)
	}
}

// TestLockReleasesALeaseLostByTheClock: when no renewal gets through (here
// a proxy refuses them) lock declares the lease lost and stops the
// command, but the server may still hold the lease: lock gives it back
// (outcome failed) instead of leaving the next holder to wait out its TTL.
func TestLockReleasesALeaseLostByTheClock(t *testing.T) {
	t.Parallel()
	s := servertest.Start(t)
	target, err := url.Parse(s.URL)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(target)
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/renew") {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadGateway)
			w.Write([]byte(`{"error":"bad_gateway","message":"renewals do not get through"}`))
			return
		}
		rp.ServeHTTP(w, r)
	}))
	defer proxy.Close()
	f := filepath.Join(t.TempDir(), "f")
	p := startMutexdEnv(t, s, []string{"MUTEXD_ADDR=" + proxy.URL}, "lock", "--ttl", "15s", "--kill-after", "10s", "k", "--", "sh", "-c", trapScript, "sh", f, "0")
	servertest.Eventually(t, "the command runs", func() bool { return readFile(t, f) == "ready\n" })
	c, err := client.New(s.URL)
	if err != nil {
		t.Fatal(err)
	}
	type grant struct {
		l   *client.Lease
		err error
	}
	granted := make(chan grant, 1)
	go func() {
		l, err := c.Acquire(t.Context(), "k", client.Wait(time.Minute))
		granted <- grant{l, err}
	}()
	// Every renewal fails from 5s in; the lease counts as lost 1.5s before
	// its 15s are up, and lock stops the command.
	if code := p.wait(t); code != 1 {
		t.Fatalf("exit code = %d, want 1 (stderr %q)", code, p.stderr.String())
	}
	oneLine(t, p.stderr.String(), "lease lost")
	g := <-granted
	if g.err != nil {
		t.Fatal(g.err)
	}
	next := g.l
	defer next.Release(t.Context())
	if next.Previous == nil || next.Previous.Outcome != "failed" {
		t.Errorf("the next holder found previous %+v, want outcome failed: lock left the lease it gave up to expire", next.Previous)
	}
}
