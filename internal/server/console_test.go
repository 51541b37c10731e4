package server_test

import (
	"bufio"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/mutexd/mutexd/internal/config"
	"github.com/mutexd/mutexd/internal/ui"
)

// TestShutdownEndsEventStreams checks that an open /v1/events stream does
// not hold up a graceful shutdown (it would never go idle by itself).
func TestShutdownEndsEventStreams(t *testing.T) {
	cfg := config.Default()
	cfg.ShutdownTimeout = 30 * time.Second
	_, base, cancel, wait := start(t, cfg)
	res, err := http.Get(base + "/v1/events")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != 200 {
		t.Fatalf("GET /v1/events: %d", res.StatusCode)
	}
	began := time.Now()
	cancel()
	if err := wait(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if d := time.Since(began); d > 10*time.Second {
		t.Fatalf("shutdown took %v with a stream open; want it ended at once", d)
	}
	if _, err := io.Copy(io.Discard, bufio.NewReader(res.Body)); err != nil && !strings.Contains(err.Error(), "EOF") {
		t.Logf("stream ended with %v", err)
	}
}

func TestConsoleServedWithCSP(t *testing.T) {
	_, base, _, _ := start(t, config.Default())
	for _, c := range []struct{ path, ctype string }{
		{"/ui/", "text/html"}, {"/ui/app.js", "text/javascript"}, {"/ui/app.css", "text/css"},
	} {
		res, err := http.Get(base + c.path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != 200 || !strings.HasPrefix(res.Header.Get("Content-Type"), c.ctype) {
			t.Fatalf("GET %s: %d %s", c.path, res.StatusCode, res.Header.Get("Content-Type"))
		}
		if got := res.Header.Get("Content-Security-Policy"); got != ui.ContentSecurityPolicy {
			t.Fatalf("GET %s: CSP %q", c.path, got)
		}
		if res.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Fatalf("GET %s: no nosniff", c.path)
		}
		if c.path == "/ui/" {
			page := string(body)
			// No inline script or style: every script and style is a file.
			if strings.Contains(page, "<script>") || strings.Contains(page, "<style") || strings.Contains(page, "style=") || strings.Contains(page, "onclick=") || strings.Contains(page, "onload=") {
				t.Fatal("the page has inline script or style")
			}
			if strings.Contains(page, "http://") || strings.Contains(page, "https://") {
				t.Fatal("the page refers to another origin")
			}
		}
	}
	res, err := http.Get(base + "/ui/nope.js")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 404 {
		t.Fatalf("GET /ui/nope.js: %d, want 404", res.StatusCode)
	}
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	res, err = client.Get(base + "/ui")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusMovedPermanently || res.Header.Get("Location") != "/ui/" {
		t.Fatalf("GET /ui: %d %s, want a redirect to /ui/", res.StatusCode, res.Header.Get("Location"))
	}
}

func TestConsoleDisabled(t *testing.T) {
	cfg := config.Default()
	cfg.UI.Enabled = false
	_, base, _, _ := start(t, cfg)
	res, err := http.Get(base + "/ui/")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 404 {
		t.Fatalf("GET /ui/ with ui.enabled=false: %d, want 404", res.StatusCode)
	}
	res, err = http.Get(base + "/v1/events")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 200 {
		t.Fatalf("GET /v1/events with the console off: %d, want the stream still served", res.StatusCode)
	}
}
