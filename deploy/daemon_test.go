package deploy_test

import (
	"bufio"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// daemon is a mutexd process started by a test.
type daemon struct {
	listen string // the address it listens on, host:port
	port   string
	url    string // http://listen
	pid    int
}

// startDaemon runs the mutexd binary bin on a free loopback port, with env
// (NAME=value) added to its environment, and returns once it logged its
// start. On cleanup it sends SIGTERM and requires a clean exit.
func startDaemon(t *testing.T, bin string, env ...string) daemon {
	t.Helper()
	cmd := exec.Command(bin)
	cmd.Env = append(append(os.Environ(), env...), "MUTEXD_LISTEN=127.0.0.1:0", "MUTEXD_LOG_FORMAT=json", "MUTEXD_SHUTDOWN_TIMEOUT=5s")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex // guards logs
	var logs strings.Builder
	started := make(chan string, 1)
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			mu.Lock()
			logs.WriteString(line + "\n")
			mu.Unlock()
			var rec struct{ Msg, Addr string }
			if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "mutexd started" {
				select {
				case started <- rec.Addr:
				default:
				}
			}
		}
		_, _ = io.Copy(io.Discard, stderr)
	}()
	exited := make(chan error, 1)
	go func() {
		<-drained
		exited <- cmd.Wait()
	}()
	dumpLogs := func() {
		mu.Lock()
		defer mu.Unlock()
		t.Logf("mutexd log:\n%s", logs.String())
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("mutexd after SIGTERM: %v, want exit 0", err)
				dumpLogs()
			}
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			t.Errorf("mutexd did not exit within 20s of SIGTERM")
			dumpLogs()
		}
	})
	select {
	case addr := <-started:
		_, port, err := net.SplitHostPort(addr)
		if err != nil {
			t.Fatalf("mutexd logged address %q: %v", addr, err)
		}
		return daemon{listen: addr, port: port, url: "http://" + addr, pid: cmd.Process.Pid}
	case err := <-exited:
		dumpLogs()
		t.Fatalf("mutexd exited before starting: %v", errors.Join(err))
	case <-time.After(15 * time.Second):
		dumpLogs()
		t.Fatal("mutexd did not log its start within 15s")
	}
	return daemon{}
}
