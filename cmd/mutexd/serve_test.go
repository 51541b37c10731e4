package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestBadInvocationExitsTwoWithOneLine(t *testing.T) {
	badFile := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(badFile, []byte("lock:\n  default_tll: 5s\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		args    []string
		env     string
		wantMsg string
	}{
		{"unknown flag", []string{"--lisen", "x"}, "", "unknown flag"},
		{"bad listen flag", []string{"--listen", "nowhere"}, "", "listen"},
		{"bad log level", []string{"--log-level", "loud"}, "", "log.level"},
		{"typo in file", []string{"--config", badFile}, "", "lock.default_tll"},
		{"bad env", nil, "MUTEXD_LOCK_MAX_WAIT=-1s", "lock.max_wait"},
		{"stray argument", []string{"serve", "extra"}, "", "extra"},
		{"unknown command", []string{"frobnicate"}, "", "frobnicate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if k, v, ok := strings.Cut(tt.env, "="); ok {
				t.Setenv(k, v)
			}
			var stdout, stderr bytes.Buffer
			code := exitCode(run(t.Context(), tt.args, &stdout, &stderr), &stderr)
			if code != 2 {
				t.Fatalf("exit code %d, want 2 (stderr %q)", code, stderr.String())
			}
			if lines := strings.Count(stderr.String(), "\n"); lines != 1 || !strings.Contains(stderr.String(), tt.wantMsg) {
				t.Fatalf("stderr %q: want one line mentioning %q", stderr.String(), tt.wantMsg)
			}
		})
	}
}

func TestVersion(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if err := run(t.Context(), []string{"version"}, &stdout, &stderr); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(stdout.String(), "mutexd "+version) {
		t.Fatalf("version printed %q", stdout.String())
	}
}
