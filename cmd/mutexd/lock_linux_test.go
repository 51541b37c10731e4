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
