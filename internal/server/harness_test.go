package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/mutexd/mutexd/internal/config"
	"github.com/mutexd/mutexd/internal/server"
)

// logSink collects a daemon's log lines (and mirrors them to t.Log).
type logSink struct {
	t   testing.TB
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logSink) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.t.Logf("daemon: %s", bytes.TrimSpace(p))
	return l.buf.Write(p)
}

func (l *logSink) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// daemon is a real in-process mutexd on 127.0.0.1.
type daemon struct {
	srv  *server.Server
	url  string
	logs *logSink
	stop func() error // ends Run and returns its error
}

// startDaemon runs server.New(cfg) until the test ends or stop is called.
func startDaemon(t testing.TB, cfg config.Config) *daemon {
	t.Helper()
	logs := &logSink{t: t}
	srv, err := server.New(cfg, "test", slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	var once sync.Once
	var runErr error
	d := &daemon{srv: srv, url: "http://" + srv.Addr().String(), logs: logs}
	d.stop = func() error {
		once.Do(func() { cancel(); runErr = <-done })
		return runErr
	}
	t.Cleanup(func() {
		if err := d.stop(); err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return d
}

// testConfig is the default configuration on a free loopback port.
func testConfig() config.Config {
	c := config.Default()
	c.Listen = "127.0.0.1:0"
	c.ShutdownTimeout = 5 * time.Second
	return c
}

// call makes one request and decodes a JSON body (nil when there is none).
func call(t testing.TB, client *http.Client, method, url, token string) (int, http.Header, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var body map[string]any
	_ = json.Unmarshal(raw, &body)
	return resp.StatusCode, resp.Header, body
}

// eventually polls cond until it holds or d passes.
func eventually(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(d)
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("after %s: %s", d, what)
		}
	}
}
