//go:build linux

package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/mutexd/mutexd/client"
	"github.com/mutexd/mutexd/internal/servertest"
)

// openPTY opens a pseudo-terminal pair, or skips the test where the
// machine has none.
func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	var unlock int32
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, m.Fd(), syscall.TIOCSPTLCK, uintptr(unsafe.Pointer(&unlock))); e != 0 {
		t.Fatalf("unlock pty: %v", e)
	}
	var n uint32
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, m.Fd(), syscall.TIOCGPTN, uintptr(unsafe.Pointer(&n))); e != 0 {
		t.Fatalf("pty number: %v", e)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return m, s
}

// TestLockCommandCanReadItsTerminal runs mutexd lock in the foreground of
// a terminal, as a person would: the command must be able to read the
// terminal (in a background process group it would be stopped by
// SIGTTIN).
func TestLockCommandCanReadItsTerminal(t *testing.T) {
	t.Parallel()
	s := servertest.Start(t)
	master, slave := openPTY(t)
	f := filepath.Join(t.TempDir(), "f")
	cmd := exec.Command(mutexdBinary(t), "lock", "k", "--", "sh", "-c", `echo ready > "$1"; read line; echo "got $line" >> "$1"`, "sh", f)
	cmd.Env = append(os.Environ(), "MUTEXD_ADDR="+s.URL, "MUTEXD_TOKEN=")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	// A session of its own with the terminal as its controlling terminal:
	// mutexd is then the terminal's foreground process group.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			<-done
		}
	})
	go func() { // drain the terminal's output (echo, messages)
		buf := make([]byte, 1024)
		for {
			if _, err := master.Read(buf); err != nil {
				return
			}
		}
	}()
	servertest.Eventually(t, "the command runs", func() bool { return readFile(t, f) == "ready\n" })
	if _, err := master.Write([]byte("hello\n")); err != nil {
		t.Fatal(err)
	}
	servertest.Eventually(t, "the command reads the terminal", func() bool { return readFile(t, f) == "ready\ngot hello\n" })
	if err := <-done; err != nil {
		t.Errorf("mutexd lock: %v", err)
	}
}

// gone reports whether process pid has ended (a zombie counts as ended).
func gone(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	// The state follows the parenthesized command name: "pid (comm) S ...".
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] == 'Z' || s[i+2] == 'X'
}

// TestLockCommandDiesWithLock kills mutexd lock outright (as the OOM
// killer would): nothing renews the lease any more, so the command must
// not run on unprotected; under --on-lost warn it may.
func TestLockCommandDiesWithLock(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		onLost   string
		survives bool
	}{{"kill", false}, {"warn", true}} {
		t.Run(tt.onLost, func(t *testing.T) {
			t.Parallel()
			s := servertest.Start(t)
			f := filepath.Join(t.TempDir(), "pid")
			p := startMutexd(t, s, "lock", "--on-lost", tt.onLost, "k", "--", "sh", "-c", `echo $$ > "$1"; exec sleep 30 >/dev/null 2>&1`, "sh", f)
			servertest.Eventually(t, "the command runs", func() bool { return strings.HasSuffix(readFile(t, f), "\n") })
			pid, err := strconv.Atoi(strings.TrimSpace(readFile(t, f)))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL) })
			if err := p.cmd.Process.Kill(); err != nil {
				t.Fatal(err)
			}
			p.wait(t)
			if tt.survives {
				time.Sleep(100 * time.Millisecond) // give a wrong kill time to happen
				if gone(pid) {
					t.Error("the command died with mutexd lock under --on-lost warn")
				}
				return
			}
			servertest.Eventually(t, "the command dies with mutexd lock", func() bool { return gone(pid) })
		})
	}
}

// readPid waits for a pid written to path and arranges for that process
// to be killed when the test ends (before the harness waits for lock's
// output, which the process may hold open).
func readPid(t *testing.T, path string) int {
	t.Helper()
	servertest.Eventually(t, "the process writes its pid", func() bool { return strings.HasSuffix(readFile(t, path), "\n") })
	pid, err := strconv.Atoi(strings.TrimSpace(readFile(t, path)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL) })
	return pid
}

// deafWorker is a shell command line whose first process starts a
// background worker that ignores SIGTERM, keeps the command's stdout and
// stderr (lock's own) open, and writes its pid to $1; then it waits. The
// first process itself dies of SIGTERM. $2 may be "setsid" to start the
// worker in a session of its own.
const deafWorker = `$2 sh -c 'trap "" TERM; echo $$ > "$1"; exec sleep 1000' sh "$1" & wait`

// TestLockLeavesNothingRunningAfterALostLease: when the lease is lost the
// command's first process dies of SIGTERM, but its worker ignores it. lock
// must kill the worker at once (the lease is gone; waiting for
// --kill-after would let it overlap the next holder), and must not return
// while it runs: it would hold lock's stderr, and the key, forever.
func TestLockLeavesNothingRunningAfterALostLease(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ name, setsid string }{{"in the group", ""}, {"in its own session", "setsid"}} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if tt.setsid != "" {
				if _, err := exec.LookPath("setsid"); err != nil {
					t.Skip("no setsid(1) here")
				}
			}
			s := servertest.Start(t)
			f := filepath.Join(t.TempDir(), "pid")
			p := startMutexd(t, s, "lock", "--ttl", "1s", "--kill-after", "20s", "k", "--", "sh", "-c", deafWorker, "sh", f, tt.setsid)
			pid := readPid(t, f)
			if _, err := s.Engine().ForceRelease("k"); err != nil {
				t.Fatal(err)
			}
			lost := time.Now()
			if code := p.wait(t); code != 1 {
				t.Errorf("exit code = %d, want 1 (stderr %q)", code, p.stderr.String())
			}
			if !gone(pid) {
				t.Errorf("the worker (pid %d) survives mutexd lock, after the lease was lost", pid)
			}
			if d := time.Since(lost); d > 10*time.Second {
				t.Errorf("lock exited %s after the lease was lost, want well before --kill-after 20s: the first process had exited", d)
			}
			oneLine(t, p.stderr.String(), "lease lost")
		})
	}
}

// TestLockStopsLeftoversBeforeReleasing: a command that exits and leaves
// a worker running would have it go on unprotected after the release;
// lock stops it first (SIGKILL after --kill-after, as it ignores
// SIGTERM), so the next holder never overlaps it.
func TestLockStopsLeftoversBeforeReleasing(t *testing.T) {
	t.Parallel()
	s := servertest.Start(t)
	f := filepath.Join(t.TempDir(), "pid")
	holder := holdKey(t, s, "k")
	p := startMutexd(t, s, "lock", "--kill-after", "300ms", "--wait", "30s", "k", "--", "sh", "-c",
		`sh -c 'trap "" TERM; echo $$ > "$1"; exec sleep 1000' sh "$1" & while [ ! -s "$1" ]; do sleep 0.01; done; exit 5`, "sh", f)
	servertest.Eventually(t, "lock is queued", func() bool { return s.Waiters("k") == 1 })
	c, _ := client.New(s.URL)
	next := make(chan *client.Lease, 1)
	go func() {
		l, err := c.Acquire(t.Context(), "k", client.Wait(30*time.Second))
		if err != nil {
			t.Error(err)
		}
		next <- l
	}()
	servertest.Eventually(t, "the next waiter is queued", func() bool { return s.Waiters("k") == 2 })
	if err := holder.Release(t.Context()); err != nil {
		t.Fatal(err)
	}
	pid := readPid(t, f)
	var l *client.Lease
	select {
	case l = <-next:
	case <-time.After(20 * time.Second):
		t.Fatal("the next waiter was not granted within 20s")
	}
	if l == nil {
		t.FailNow()
	}
	defer l.Release(t.Context())
	if !gone(pid) {
		t.Errorf("the worker (pid %d) is still running when the next holder is granted the key", pid)
	}
	if code := p.wait(t); code != 5 {
		t.Errorf("exit code = %d, want the command's 5 (stderr %q)", code, p.stderr.String())
	}
	if l.Previous == nil || l.Previous.Outcome != "failed" {
		t.Errorf("previous = %+v, want outcome failed", l.Previous)
	}
}

// TestLockKilledOutrightTakesTheWholeCommand: kill -9 of mutexd lock (the
// OOM killer) leaves nothing to renew the lease; the command's worker,
// which ignores SIGTERM and is not lock's child, must die too.
func TestLockKilledOutrightTakesTheWholeCommand(t *testing.T) {
	t.Parallel()
	s := servertest.Start(t)
	f := filepath.Join(t.TempDir(), "pid")
	p := startMutexd(t, s, "lock", "k", "--", "sh", "-c", deafWorker, "sh", f, "")
	pid := readPid(t, f)
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	servertest.Eventually(t, "the worker dies with mutexd lock", func() bool { return gone(pid) })
	p.wait(t)
}

// TestLockCommandMayReleaseItsOwnLease: the command ends its lease early
// with "mutexd release" (the token from MUTEXD_LEASE_TOKEN) and goes on
// working; lock's next renewal is refused, which must not count as a lost
// lease: the command runs to its end and lock exits with its status.
func TestLockCommandMayReleaseItsOwnLease(t *testing.T) {
	t.Parallel()
	s := servertest.Start(t)
	f := filepath.Join(t.TempDir(), "f")
	// A TTL of 1s renews every 333ms: the command outlives several renewals
	// after its release.
	script := `"$1" release "$MUTEXD_KEY" > /dev/null || exit 9; echo released >> "$2"; sleep 1.5; echo survived >> "$2"; exit 7`
	p := startMutexd(t, s, "lock", "--ttl", "1s", "k", "--", "sh", "-c", script, "sh", mutexdBinary(t), f)
	if code := p.wait(t); code != 7 {
		t.Errorf("exit code = %d, want the command's 7 (stderr %q)", code, p.stderr.String())
	}
	if got := readFile(t, f); got != "released\nsurvived\n" {
		t.Errorf("command wrote %q, want it to run to its end", got)
	}
	if p.stderr.String() != "" {
		t.Errorf("stderr = %q, want nothing: the lease was not lost", p.stderr.String())
	}
	if s.Held("k") {
		t.Error("k still held")
	}
}
