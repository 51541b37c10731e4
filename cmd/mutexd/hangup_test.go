package main

import (
	"crypto/sha256"
	"crypto/tls"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/mutexd/mutexd/internal/servertest"
)

// TestHangupReloadsTokensAndCertificate runs the real daemon with TLS and a
// tokens file, rewrites both, sends SIGHUP and checks that the next
// requests see the new tokens and new handshakes the new certificate,
// that no token reaches the log, and that SIGTERM still exits 0.
func TestHangupReloadsTokensAndCertificate(t *testing.T) {
	const (
		tokOld = "old-client-token-0123456789"
		tokNew = "new-client-token-0123456789"
	)
	dir := t.TempDir()
	tokens := filepath.Join(dir, "tokens")
	if err := os.WriteFile(tokens, []byte(tokOld+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	certFile, keyFile, roots := servertest.WriteCert(t, dir)
	cmd := exec.Command(mutexdBinary(t), "--listen", "127.0.0.1:0")
	cmd.Env = append(os.Environ(), "MUTEXD_AUTH_TOKENS_FILE="+tokens, "MUTEXD_TLS_CERT_FILE="+certFile, "MUTEXD_TLS_KEY_FILE="+keyFile)
	var stderr syncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		select {
		case <-done:
		default:
			cmd.Process.Kill()
			<-done
		}
	})
	logLines := func(msg string) []map[string]any {
		var out []map[string]any
		for _, line := range strings.Split(stderr.String(), "\n") {
			var rec map[string]any
			if json.Unmarshal([]byte(line), &rec) == nil && rec["msg"] == msg {
				out = append(out, rec)
			}
		}
		return out
	}
	servertest.Eventually(t, "the daemon logs its start", func() bool { return len(logLines("mutexd started")) > 0 })
	addr, _ := logLines("mutexd started")[0]["addr"].(string)

	// One connection per request, so every request makes a fresh handshake.
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}, DisableKeepAlives: true}}
	status := func(token string) int {
		t.Helper()
		req, _ := http.NewRequest("GET", "https://"+addr+"/v1/locks/k", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	served := func() [32]byte {
		t.Helper()
		conn, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		return sha256.Sum256(conn.ConnectionState().PeerCertificates[0].Raw)
	}
	if got := status(tokOld); got != 200 {
		t.Fatalf("old token before SIGHUP: %d, want 200", got)
	}
	if got := status(tokNew); got != 401 {
		t.Fatalf("new token before SIGHUP: %d, want 401", got)
	}
	before := served()

	if err := os.WriteFile(tokens, []byte(tokNew+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, _, roots = servertest.WriteCert(t, dir) // same paths, new key pair
	client.Transport.(*http.Transport).TLSClientConfig.RootCAs = roots
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	servertest.Eventually(t, "the daemon logs the reload", func() bool { return len(logLines("reloaded")) > 0 })
	if rec := logLines("reloaded")[0]; rec["errors"] != 0.0 {
		t.Fatalf("reload reported errors: %v", rec)
	}
	if served() == before {
		t.Fatal("the certificate did not change after SIGHUP")
	}
	if got := status(tokNew); got != 200 {
		t.Fatalf("new token after SIGHUP: %d, want 200 (verified against the new certificate)", got)
	}
	if got := status(tokOld); got != 401 {
		t.Fatalf("old token after SIGHUP: %d, want 401", got)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	<-done
	if code := cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("exit code after SIGTERM %d, want 0", code)
	}
	if log := stderr.String(); strings.Contains(log, tokOld) || strings.Contains(log, tokNew) {
		t.Fatalf("a token reached the log:\n%s", log)
	}
}
