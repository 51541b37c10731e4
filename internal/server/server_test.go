package server_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/mutexd/mutexd/internal/config"
	"github.com/mutexd/mutexd/internal/server"
)

// start runs a daemon on a free loopback port; wait returns Run's result.
func start(t *testing.T, cfg config.Config) (s *server.Server, base string, stop context.CancelFunc, wait func() error) {
	t.Helper()
	cfg.Listen = "127.0.0.1:0"
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	s, err := server.New(cfg, "test", log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	var runErr error
	go func() { runErr = s.Run(ctx); close(done) }()
	wait = func() error { <-done; return runErr }
	base = "http://" + s.Addr().String()
	for end := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if resp, err := http.Get(base + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(end) {
			t.Fatal("server not ready within 5s")
		}
	}
	t.Cleanup(func() { cancel(); wait() })
	return s, base, cancel, wait
}

func post(t *testing.T, url string) (int, map[string]any) {
	t.Helper()
	resp, err := http.Post(url, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&body)
	return resp.StatusCode, body
}

func TestGracefulShutdownAnswersWaiters(t *testing.T) {
	cfg := config.Default()
	// Far above what the check below allows a loaded machine, so that
	// a shutdown held up by the waiter cannot pass for a quick one.
	cfg.ShutdownTimeout = 30 * time.Second
	s, base, cancel, wait := start(t, cfg)
	if code, _ := post(t, base+"/v1/locks/k/acquire"); code != 200 {
		t.Fatalf("acquire: %d", code)
	}
	waiter := make(chan *http.Response, 1)
	go func() {
		resp, err := http.Post(base+"/v1/locks/k/acquire?wait=5m", "", nil)
		if err != nil {
			t.Error(err)
		}
		waiter <- resp
	}()
	for s.Engine().Stats().Waiters != 1 {
		time.Sleep(2 * time.Millisecond)
	}
	begin := time.Now()
	cancel() // what SIGTERM does
	resp := <-waiter
	var body map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&body)
	resp.Body.Close()
	if resp.StatusCode != 503 || body["error"] != "unavailable" || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("queued waiter at shutdown: %d %v, want 503 unavailable with Retry-After", resp.StatusCode, body)
	}
	if err := wait(); err != nil {
		t.Fatalf("Run = %v, want nil after a clean shutdown", err)
	}
	if d := time.Since(begin); d > 15*time.Second {
		t.Fatalf("shutdown took %v with a 5m waiter queued", d)
	}
	if _, err := http.Get(base + "/healthz"); err == nil {
		t.Fatal("still serving after shutdown")
	}
}

func TestMetricsEndpoint(t *testing.T) {
	cfg := config.Default()
	cfg.Metrics.Path = "/prom"
	_, base, _, _ := start(t, cfg)
	_, g := post(t, base+"/v1/locks/user:1/acquire")
	post(t, base+"/v1/locks/user:1/release?token="+g["token"].(string))
	post(t, base+"/v1/locks/user:2/acquire")
	resp, err := http.Get(base + "/prom")
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	text := string(raw)
	for _, want := range []string{
		`mutexd_locks_held{lock_namespace="user"} 1`,
		`mutexd_keys 1`,
		`mutexd_wait_duration_seconds_count{lock_namespace="user",outcome="acquired"} 2`,
		`mutexd_hold_duration_seconds_count{lock_namespace="user",outcome="released"} 1`,
		`mutexd_http_requests_total{code="200",method="POST",route="/v1/locks/:key/acquire"} 2`,
		`mutexd_build_info{goversion="go`,
		`mutexd_oldest_waiter_age_seconds{lock_namespace="user"} 0`,
		`go_goroutines `,
		`process_resident_memory_bytes `,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("/prom lacks %q", want)
		}
	}
	if strings.Contains(text, "user:1") || strings.Contains(text, "user:2") {
		t.Error("a raw key leaked into the metrics")
	}
}

func TestNewRejectsInvalidConfig(t *testing.T) {
	cfg := config.Default()
	cfg.Lock.DefaultTTL = 0
	if _, err := server.New(cfg, "test", slog.New(slog.DiscardHandler)); err == nil {
		t.Fatal("server.New accepted an invalid config")
	}
}

func TestConsoleURL(t *testing.T) {
	tests := []struct {
		addr string
		tls  bool
		want string
	}{
		{"127.0.0.1:7070", false, "http://127.0.0.1:7070/ui/"},
		{"0.0.0.0:7070", false, "http://127.0.0.1:7070/ui/"},
		{"[::]:7070", true, "https://127.0.0.1:7070/ui/"},
		{"[::1]:7443", true, "https://[::1]:7443/ui/"},
	}
	for _, tt := range tests {
		addr, err := net.ResolveTCPAddr("tcp", tt.addr)
		if err != nil {
			t.Fatal(err)
		}
		if got := server.ConsoleURL(addr, tt.tls); got != tt.want {
			t.Errorf("ConsoleURL(%s, tls %v) = %q, want %q", tt.addr, tt.tls, got, tt.want)
		}
	}
}
