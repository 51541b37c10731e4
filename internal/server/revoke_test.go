package server_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// sseEvent is one Server-Sent Event read by readEvents.
type sseEvent struct{ name, data string }

// openStream sends a request that answers an event stream and returns its
// events, closed at the end of the stream. The request ends with ctx.
func openStream(t *testing.T, ctx context.Context, method, url, token string) <-chan sseEvent {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Accept", "text/event-stream")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		t.Fatalf("%s %s: %d %s, want a 200 stream", method, url, resp.StatusCode, raw)
	}
	out := make(chan sseEvent, 64)
	go func() {
		defer close(out)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		var ev sseEvent
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if ev.name != "" {
					out <- ev
				}
				ev = sseEvent{}
			case strings.HasPrefix(line, "event: "):
				ev.name = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: "):
				ev.data = strings.TrimPrefix(line, "data: ")
			}
		}
	}()
	return out
}

// nextEvent returns the stream's next event other than "queued", failing
// the test after 10 s; ok is false at the end of the stream.
func nextEvent(t *testing.T, events <-chan sseEvent, what string) (sseEvent, bool) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case ev, ok := <-events:
			if ok && ev.name == "queued" {
				continue
			}
			return ev, ok
		case <-timeout:
			t.Fatalf("%s: no event within 10s", what)
		}
	}
}

// TestRevokedTokenEndsLongRequests: after a reload removes a token from
// auth.tokens_file, the long poll, streaming acquire and event stream it
// opened end at once (401, or a final "unauthorized" event), their waiters
// leave the queue, and what other tokens opened goes on.
func TestRevokedTokenEndsLongRequests(t *testing.T) {
	file := filepath.Join(t.TempDir(), "tokens")
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(file, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(tokA + "\n" + tokB + "\n")
	cfg := testConfig()
	cfg.Auth.TokensFile = file
	d := startDaemon(t, cfg)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()

	// tokB holds the key; tokA waits for it three ways and watches it.
	code, _, body := call(t, http.DefaultClient, "POST", d.url+"/v1/locks/k/acquire?ttl=1h", tokB)
	if code != 200 {
		t.Fatalf("acquire by B: %d %v", code, body)
	}
	leaseB, _ := body["token"].(string)
	type answer struct {
		code int
		body map[string]any
	}
	poll := make(chan answer, 1)
	go func() {
		req, _ := http.NewRequestWithContext(ctx, "POST", d.url+"/v1/locks/k/acquire?wait=5m&owner=poll", nil)
		req.Header.Set("Authorization", "Bearer "+tokA)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			poll <- answer{code: -1}
			return
		}
		defer resp.Body.Close()
		var b map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&b)
		poll <- answer{resp.StatusCode, b}
	}()
	streamA := openStream(t, ctx, "POST", d.url+"/v1/locks/k/acquire?wait=5m&owner=stream", tokA)
	eventsA := openStream(t, ctx, "GET", d.url+"/v1/events?key=k", tokA)
	eventsB := openStream(t, ctx, "GET", d.url+"/v1/events?key=k", tokB)
	eventually(t, 10*time.Second, "both waiters queue", func() bool { return d.srv.Engine().Inspect("k", 0).Waiters == 2 })

	// A reload that keeps tokA ends nothing.
	if err := d.srv.Reload(); err != nil {
		t.Fatal(err)
	}
	if code, _, body := call(t, http.DefaultClient, "POST", d.url+"/v1/locks/k/renew?token="+leaseB, tokB); code != 200 {
		t.Fatalf("renew by B: %d %v", code, body)
	}
	for name, events := range map[string]<-chan sseEvent{"A": eventsA, "B": eventsB} {
		if ev, ok := nextEvent(t, events, "events of "+name); !ok || ev.name != "renewed" {
			t.Fatalf("events of %s after a reload keeping its token: %+v (open %v), want renewed", name, ev, ok)
		}
	}
	if n := d.srv.Engine().Inspect("k", 0).Waiters; n != 2 {
		t.Fatalf("after a reload keeping tokA: %d waiters, want 2", n)
	}

	// Revoke tokA.
	write(tokB + "\n")
	if err := d.srv.Reload(); err != nil {
		t.Fatal(err)
	}
	select {
	case a := <-poll:
		if a.code != 401 || a.body["error"] != "unauthorized" {
			t.Fatalf("long poll of a revoked token: %d %v, want 401 unauthorized", a.code, a.body)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the long poll of a revoked token is still waiting 10s after the reload")
	}
	// Each ends with an "unauthorized" event (the event stream may first
	// show the revoked waiters leaving the queue).
	for name, events := range map[string]<-chan sseEvent{"streaming acquire": streamA, "event stream": eventsA} {
		var last sseEvent
		for {
			ev, ok := nextEvent(t, events, name)
			if !ok {
				break
			}
			if last.name == "unauthorized" {
				t.Fatalf("%s went on after its final event: %+v", name, ev)
			}
			last = ev
		}
		if last.name != "unauthorized" || !strings.Contains(last.data, `"error":"unauthorized"`) {
			t.Fatalf("%s of a revoked token ended with %+v, want a final unauthorized event", name, last)
		}
	}
	eventually(t, 10*time.Second, "the revoked waiters leave the queue", func() bool { return d.srv.Engine().Inspect("k", 0).Waiters == 0 })

	// tokB's stream goes on.
	if code, _, body := call(t, http.DefaultClient, "POST", d.url+"/v1/locks/k/release?token="+leaseB, tokB); code != 200 {
		t.Fatalf("release by B: %d %v", code, body)
	}
	for {
		ev, ok := nextEvent(t, eventsB, "events of B")
		if !ok {
			t.Fatal("tokB's event stream ended with tokA's revocation")
		}
		if ev.name == "released" {
			break
		}
	}
}
