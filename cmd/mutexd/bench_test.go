package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/mutexd/mutexd/internal/config"
	"github.com/mutexd/mutexd/internal/server"
)

func TestBenchCommand(t *testing.T) {
	cfg := config.Default()
	cfg.Listen = "127.0.0.1:0"
	srv, err := server.New(cfg, "test", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = srv.Run(ctx) })
	t.Cleanup(func() { cancel(); wg.Wait() })
	addr := srv.Addr().String()

	tests := []struct {
		name     string
		args     []string
		wantCode int
		check    func(t *testing.T, stdout, stderr string)
	}{
		{
			name: "json contended",
			args: []string{"bench", "--addr", addr, "--clients", "4", "--keys", "1", "--requests", "100", "-o", "json"},
			check: func(t *testing.T, stdout, stderr string) {
				var r struct {
					Cycles       int64 `json:"cycles"`
					OwnerChanges int64 `json:"owner_changes"`
					Overlaps     int64 `json:"overlaps"`
				}
				if err := json.Unmarshal([]byte(stdout), &r); err != nil {
					t.Fatalf("stdout is not JSON: %v\n%s", err, stdout)
				}
				if r.Cycles != 100 || r.OwnerChanges == 0 || r.Overlaps != 0 {
					t.Errorf("got %+v, want 100 cycles, some owner changes, no overlaps", r)
				}
			},
		},
		{
			name: "text",
			args: []string{"bench", "--addr", addr, "--clients", "2", "--requests", "20"},
			check: func(t *testing.T, stdout, stderr string) {
				for _, want := range []string{"cycles       20", "p99.9", "errors       none"} {
					if !strings.Contains(stdout, want) {
						t.Errorf("stdout lacks %q:\n%s", want, stdout)
					}
				}
			},
		},
		{name: "bad mode", args: []string{"bench", "--addr", addr, "--mode", "spin"}, wantCode: 2},
		{name: "bad output", args: []string{"bench", "--addr", addr, "-o", "xml"}, wantCode: 2},
		{name: "bad clients", args: []string{"bench", "--addr", addr, "--clients", "0"}, wantCode: 2},
		{name: "bad flag", args: []string{"bench", "--nope"}, wantCode: 2},
		{name: "no server", args: []string{"bench", "--addr", "127.0.0.1:1", "--clients", "1", "--requests", "3"}, wantCode: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr strings.Builder
			err := run(t.Context(), tt.args, &stdout, &stderr)
			if got := exitCode(err, &stderr); got != tt.wantCode {
				t.Fatalf("exit code = %d, want %d (stderr %q)", got, tt.wantCode, stderr.String())
			}
			if tt.check != nil {
				tt.check(t, stdout.String(), stderr.String())
			}
		})
	}
}
