package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/mutexd/mutexd/internal/servertest"
)

// binDir holds the mutexd binary the end-to-end tests build and run.
var binDir string

func TestMain(m *testing.M) {
	// "mutexd lock" run in-process starts this test binary as its guard.
	if len(os.Args) > 0 && os.Args[0] == guardArg0 {
		os.Exit(runLockGuard(os.Args))
	}
	dir, err := os.MkdirTemp("", "mutexd-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

var build struct {
	once sync.Once
	path string
	err  error
}

// mutexdBinary builds the real mutexd binary, once per test run.
func mutexdBinary(t *testing.T) string {
	t.Helper()
	build.once.Do(func() {
		path := filepath.Join(binDir, "mutexd")
		out, err := exec.Command("go", "build", "-o", path, ".").CombinedOutput()
		if err != nil {
			build.err = fmt.Errorf("go build: %v\n%s", err, out)
		}
		build.path = path
	})
	if build.err != nil {
		t.Fatal(build.err)
	}
	return build.path
}

// proc is a running mutexd binary.
type proc struct {
	cmd            *exec.Cmd
	stdout, stderr syncBuffer
	done           chan struct{}
}

// syncBuffer is a bytes.Buffer that may be read while a process writes it.
type syncBuffer struct {
	mu sync.Mutex // guards b
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// startMutexd runs the mutexd binary with args against s.
func startMutexd(t *testing.T, s *servertest.Server, args ...string) *proc {
	t.Helper()
	return startMutexdEnv(t, s, nil, args...)
}

// startMutexdEnv is startMutexd with extra environment variables.
func startMutexdEnv(t *testing.T, s *servertest.Server, env []string, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(mutexdBinary(t), args...), done: make(chan struct{})}
	p.cmd.Env = append(append(os.Environ(), "MUTEXD_ADDR="+s.URL, "MUTEXD_TOKEN=", "MUTEXD_LEASE_TOKEN="), env...)
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	// A process the command left behind may hold the output pipes open:
	// stop reading them shortly after mutexd exits, so that waiting for
	// mutexd stays bounded.
	p.cmd.WaitDelay = 2 * time.Second
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			p.cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

// wait waits for the process to exit (at most 30 s) and returns its exit
// code.
func (p *proc) wait(t *testing.T) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
		t.Fatalf("%v did not exit within 30s; stderr: %s", p.cmd.Args, p.stderr.String())
	}
	return p.cmd.ProcessState.ExitCode()
}

// running reports whether the process has not exited yet.
func (p *proc) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}
