package demo_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/mutexd/mutexd/client"
	"github.com/mutexd/mutexd/internal/config"
	"github.com/mutexd/mutexd/internal/demo"
	"github.com/mutexd/mutexd/internal/server"
)

// startServer runs a real daemon on a loopback port for the test; with
// adminToken set, authentication is on.
func startServer(t *testing.T, adminToken string) *server.Server {
	t.Helper()
	cfg := config.Default()
	cfg.Listen = "127.0.0.1:0"
	if adminToken != "" {
		cfg.Auth.AdminTokens = []string{adminToken}
	}
	srv, err := server.New(cfg, "test", slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return srv
}

// awaitIdle waits until the engine holds no lease and no waiter: the
// demo must never leave a lease behind (the abandoned ones expire).
func awaitIdle(t *testing.T, srv *server.Server) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		st := srv.Engine().Stats()
		if st.Keys == 0 && st.Held == 0 && st.Waiters == 0 {
			return
		}
		select {
		case <-deadline:
			t.Fatalf("engine not idle: %+v", st)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func TestRound(t *testing.T) {
	const admin = "demo-admin-token-0123456789"
	for _, tc := range []struct {
		name, serverToken, clientToken string
		wantErr                        bool
	}{
		{name: "no auth"},
		{name: "admin token", serverToken: admin, clientToken: admin},
		{name: "missing token", serverToken: admin, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := startServer(t, tc.serverToken)
			c, err := demo.New("http://"+srv.Addr().String(), tc.clientToken)
			if err != nil {
				t.Fatal(err)
			}
			got, err := c.Round(t.Context(), "orders")
			if tc.wantErr {
				if !errors.Is(err, client.ErrUnauthorized) {
					t.Errorf("Round without a token = %v, want ErrUnauthorized", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := demo.Tally{"acquired": 4, "waited": 1, "timeout": 1, "trylock_refused": 1, "aborted": 1,
				"cancelled": 1, "released": 1, "failed": 1, "expired": 1, "forced": 1}
			for k, v := range want {
				if got[k] != v {
					t.Errorf("Round tally %s = %d, want %d (all: %v)", k, got[k], v, got)
				}
			}
			awaitIdle(t, srv)
		})
	}
}

func TestContend(t *testing.T) {
	srv := startServer(t, "")
	c, err := demo.New("http://"+srv.Addr().String(), "")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 700*time.Millisecond)
	defer cancel()
	got, err := c.Contend(ctx, demo.ContendOptions{
		Workers: 4, Keys: []string{"a:1", "b:1"}, MaxHold: 20 * time.Millisecond,
		Wait: 100 * time.Millisecond, TTL: time.Second, FailEvery: 3,
	})
	if err != nil {
		t.Fatal(err)
	}
	if got["acquired"] == 0 || got["released"]+got["failed"] == 0 {
		t.Errorf("Contend tally %v, want acquisitions and releases", got)
	}
	// A worker stopped while holding releases without counting it.
	if d := got["acquired"] - got["released"] - got["failed"] - got["expired"]; d < 0 || d > 4 {
		t.Errorf("Contend tally %v: acquisitions exceed lease ends by %d, want 0 to 4 (one per worker)", got, d)
	}
	awaitIdle(t, srv)
}
