package main

import (
	"bufio"
	"encoding/json"
	"net/http"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// TestDaemonSIGTERM runs the real daemon, queues a waiter, sends SIGTERM and
// checks the waiter is answered 503 and the process exits 0.
func TestDaemonSIGTERM(t *testing.T) {
	cmd := exec.Command(mutexdBinary(t), "--listen", "127.0.0.1:0", "--log-level", "info")
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	lines := bufio.NewScanner(stderr)
	var addr string
	for lines.Scan() {
		var rec map[string]any
		if json.Unmarshal(lines.Bytes(), &rec) == nil && rec["msg"] == "mutexd started" {
			addr, _ = rec["addr"].(string)
			break
		}
	}
	if addr == "" {
		t.Fatal("no start line with the address")
	}
	go func() { // keep draining the log so the daemon never blocks on stderr
		for lines.Scan() {
		}
	}()
	base := "http://" + addr
	if resp, err := http.Post(base+"/v1/locks/k/acquire", "", nil); err != nil || resp.StatusCode != 200 {
		t.Fatalf("acquire: %v %v", resp, err)
	}
	waiter := make(chan int, 1)
	go func() {
		resp, err := http.Post(base+"/v1/locks/k/acquire?wait=5m", "", nil)
		if err != nil {
			waiter <- -1
			return
		}
		resp.Body.Close()
		waiter <- resp.StatusCode
	}()
	for end := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		resp, err := http.Get(base + "/v1/locks/k")
		if err == nil {
			var info map[string]any
			json.NewDecoder(resp.Body).Decode(&info)
			resp.Body.Close()
			if info["waiters"] == 1.0 {
				break
			}
		}
		if time.Now().After(end) {
			t.Fatal("waiter never queued")
		}
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := <-waiter; code != http.StatusServiceUnavailable {
		t.Fatalf("queued waiter at SIGTERM got %d, want 503", code)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("daemon exit: %v, want status 0", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("daemon still running 20s after SIGTERM")
	}
}
