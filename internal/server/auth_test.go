package server_test

import (
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mutexd/mutexd/internal/config"
	"github.com/mutexd/mutexd/internal/server"
)

const (
	tokA     = "token-a-0123456789abcdef"
	tokB     = "token-b-0123456789abcdef"
	tokAdmin = "token-admin-0123456789ab"
)

func TestTokensFileReload(t *testing.T) {
	file := filepath.Join(t.TempDir(), "tokens")
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(file, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("# clients\n" + tokA + "\n")
	cfg := testConfig()
	cfg.Auth.TokensFile = file
	cfg.Auth.AdminTokens = []string{tokAdmin}
	d := startDaemon(t, cfg)
	c := http.DefaultClient
	url := d.url + "/v1/locks/k"
	check := func(token string, want int) {
		t.Helper()
		if code, _, _ := call(t, c, "GET", url, token); code != want {
			t.Fatalf("token %.8s...: status %d, want %d", token, code, want)
		}
	}
	check(tokA, 200)
	check(tokB, 401)
	check(tokAdmin, 200)

	write(tokB + "\n")
	if err := d.srv.Reload(); err != nil {
		t.Fatal(err)
	}
	check(tokA, 401)
	check(tokB, 200)

	// A broken file keeps the tokens in force.
	write(tokB + "\nweak\n")
	if err := d.srv.Reload(); err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Fatalf("Reload with a weak token = %v, want an error naming line 2", err)
	}
	check(tokB, 200)
	// So does an emptied one (a writer that truncates before it writes),
	// though the admin token alone would make a valid set.
	write("# rotating\n")
	if err := d.srv.Reload(); err == nil || !strings.Contains(err.Error(), "no tokens") {
		t.Fatalf("Reload of an emptied file = %v, want an error saying it has no tokens", err)
	}
	check(tokB, 200)
	if err := os.Remove(file); err != nil {
		t.Fatal(err)
	}
	if err := d.srv.Reload(); err == nil {
		t.Fatal("Reload of a missing file succeeded")
	}
	check(tokB, 200)

	resp, err := http.Get(d.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(metrics), `code="401"`) {
		t.Fatalf("metrics do not count the 401s:\n%s", metrics)
	}
	for _, tok := range []string{tokA, tokB, tokAdmin} {
		if strings.Contains(string(metrics), tok) {
			t.Fatal("a token reached the metrics")
		}
	}
	if logs := d.logs.String(); strings.Contains(logs, tokA) || strings.Contains(logs, tokB) || strings.Contains(logs, tokAdmin) || strings.Contains(logs, "weak") {
		t.Fatalf("a token reached the logs:\n%s", logs)
	}
}

func TestEmptyTokensFileIsAnError(t *testing.T) {
	file := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(file, []byte("# nobody yet\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig()
	cfg.Auth.TokensFile = file
	_, err := server.New(cfg, "test", nil)
	if !errors.Is(err, config.ErrInvalid) || !strings.Contains(err.Error(), "auth.tokens_file") {
		t.Fatalf("New = %v, want ErrInvalid naming auth.tokens_file", err)
	}
	cfg.Auth.TokensFile = filepath.Join(t.TempDir(), "absent")
	if _, err := server.New(cfg, "test", nil); !errors.Is(err, config.ErrInvalid) {
		t.Fatalf("New with a missing tokens file = %v, want ErrInvalid", err)
	}
}

func TestExposureWarning(t *testing.T) {
	const warning = "non-loopback address without authentication"
	tests := []struct {
		name   string
		listen string
		tokens []string
		want   bool
	}{
		{"loopback, no auth", "127.0.0.1:0", nil, false},
		{"all interfaces, no auth", "0.0.0.0:0", nil, true},
		{"all interfaces, auth", "0.0.0.0:0", []string{tokA}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig()
			cfg.Listen = tt.listen
			cfg.Auth.Tokens = tt.tokens
			d := startDaemon(t, cfg)
			if err := d.stop(); err != nil {
				t.Fatal(err)
			}
			logs := d.logs.String()
			if got := strings.Count(logs, warning); got != map[bool]int{true: 1, false: 0}[tt.want] {
				t.Fatalf("warning logged %d times, want it: %v\n%s", got, tt.want, logs)
			}
		})
	}
}
