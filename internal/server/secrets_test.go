package server_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mutexd/mutexd/internal/servertest"
)

// warnings returns the daemon's warning lines whose message starts with
// prefix, decoded.
func warnings(t *testing.T, d *daemon, prefix string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(d.logs.String(), "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) != nil || rec["level"] != "WARN" {
			continue
		}
		if msg, _ := rec["msg"].(string); strings.HasPrefix(msg, prefix) {
			out = append(out, rec)
		}
	}
	return out
}

// TestSecretFilesReadableByOthers: a tokens file or TLS key that group or
// others may read is warned about once at start and once per reload,
// naming the path, never the content; a private one is not.
func TestSecretFilesReadableByOthers(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, _ := servertest.WriteCert(t, dir)
	tokens := filepath.Join(dir, "tokens")
	if err := os.WriteFile(tokens, []byte(tokA+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{tokens, keyFile} {
		if err := os.Chmod(f, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cfg := testConfig()
	cfg.Auth.TokensFile = tokens
	cfg.TLS.CertFile, cfg.TLS.KeyFile = certFile, keyFile
	d := startDaemon(t, cfg)
	check := func(when string, want int) {
		t.Helper()
		for key, path := range map[string]string{"auth.tokens_file": tokens, "tls.key_file": keyFile} {
			ws := warnings(t, d, key+" ")
			if len(ws) != want {
				t.Fatalf("%s: %d warnings about %s, want %d:\n%s", when, len(ws), key, want, d.logs)
			}
			for _, w := range ws {
				if w["path"] != path || w["mode"] != "0644" {
					t.Fatalf("%s: warning %v, want path %s and mode 0644", when, w, path)
				}
			}
		}
		if strings.Contains(d.logs.String(), tokA) || strings.Contains(d.logs.String(), "PRIVATE KEY") {
			t.Fatal("a secret reached the logs")
		}
	}
	check("at start", 1)
	if err := d.srv.Reload(); err != nil {
		t.Fatal(err)
	}
	check("after a reload", 2)
	for _, f := range []string{tokens, keyFile} {
		if err := os.Chmod(f, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.srv.Reload(); err != nil {
		t.Fatal(err)
	}
	check("after a reload of private files", 2)
}

// writeCertValid writes a self-signed certificate for 127.0.0.1 valid from
// notBefore to notAfter, and its key (mode 0600), into dir.
func writeCertValid(t *testing.T, dir string, notBefore, notAfter time.Time) (certFile, keyFile string) {
	t.Helper()
	certFile, keyFile, _ = servertest.WriteCertValid(t, dir, notBefore, notAfter)
	return certFile, keyFile
}

// TestCertificateValidity: an expired certificate at start is served with
// a warning; a reload never swaps a valid certificate for an expired or
// not yet valid one (it fails and keeps the one in force), but does take a
// valid replacement.
func TestCertificateValidity(t *testing.T) {
	now := time.Now()
	t.Run("expired at start", func(t *testing.T) {
		dir := t.TempDir()
		certFile, keyFile := writeCertValid(t, dir, now.Add(-2*time.Hour), now.Add(-time.Hour))
		cfg := testConfig()
		cfg.TLS.CertFile, cfg.TLS.KeyFile = certFile, keyFile
		d := startDaemon(t, cfg)
		ws := warnings(t, d, "tls.cert_file: the certificate expired")
		if len(ws) != 1 || ws[0]["path"] != certFile {
			t.Fatalf("warnings about the expired certificate: %v, want one naming %s:\n%s", ws, certFile, d.logs)
		}
		// Served all the same: a client that checks refuses it.
		if _, proto := served(t, d.srv.Addr().String()); proto != "h2" {
			t.Fatalf("negotiated %q, want h2", proto)
		}
	})
	t.Run("reload", func(t *testing.T) {
		dir := t.TempDir()
		certFile, keyFile := writeCertValid(t, dir, now.Add(-time.Minute), now.Add(time.Hour))
		cfg := testConfig()
		cfg.TLS.CertFile, cfg.TLS.KeyFile = certFile, keyFile
		d := startDaemon(t, cfg)
		addr := d.srv.Addr().String()
		first, _ := served(t, addr)
		for _, bad := range []struct {
			name      string
			from, to  time.Time
			wantError string
		}{
			{"expired", now.Add(-2 * time.Hour), now.Add(-time.Hour), "expired on"},
			{"not yet valid", now.Add(time.Hour), now.Add(2 * time.Hour), "not valid before"},
		} {
			writeCertValid(t, dir, bad.from, bad.to)
			err := d.srv.Reload()
			if err == nil || !strings.Contains(err.Error(), bad.wantError) || !strings.Contains(err.Error(), certFile) {
				t.Fatalf("Reload of an %s certificate = %v, want an error naming %s and saying %q", bad.name, err, certFile, bad.wantError)
			}
			if now, _ := served(t, addr); now != first {
				t.Fatalf("after a reload of an %s certificate, the valid one is no longer served", bad.name)
			}
		}
		writeCertValid(t, dir, now.Add(-time.Minute), now.Add(2*time.Hour))
		if err := d.srv.Reload(); err != nil {
			t.Fatal(err)
		}
		if now, _ := served(t, addr); now == first {
			t.Fatal("a valid replacement was not loaded")
		}
	})
}
