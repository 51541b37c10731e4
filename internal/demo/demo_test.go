package demo_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/mutexd/mutexd/client"
	"github.com/mutexd/mutexd/internal/config"
	"github.com/mutexd/mutexd/internal/demo"
	"github.com/mutexd/mutexd/internal/engine"
	"github.com/mutexd/mutexd/internal/servertest"
)

// startServer runs a real daemon on a loopback port for the test; with
// adminToken set, authentication is on.
func startServer(t *testing.T, adminToken string) *servertest.Server {
	t.Helper()
	return servertest.Start(t, func(c *config.Config) {
		if adminToken != "" {
			c.Auth.AdminTokens = []string{adminToken}
		}
	})
}

// awaitIdle waits until the engine holds no lease and no waiter: the
// demo must never leave a lease behind (the abandoned ones expire).
func awaitIdle(t *testing.T, srv *servertest.Server) {
	t.Helper()
	servertest.Eventually(t, "the engine is idle", func() bool {
		// Remembered outcomes (lock.remember_outcome) outlive the leases
		// by design; idle means nothing held, queued or paused.
		st := srv.Engine().Stats()
		st.Remembered = 0
		return st == engine.Stats{}
	})
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
			c, err := demo.New(srv.URL, tc.clientToken)
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
	c, err := demo.New(srv.URL, "")
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
