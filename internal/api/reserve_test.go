package api_test

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/mutexd/mutexd/internal/api"
	"github.com/mutexd/mutexd/internal/auth"
	"github.com/mutexd/mutexd/internal/engine"
	"github.com/mutexd/mutexd/internal/events"
)

// reserveServer runs the API with tokens (or none) on a real listener, with
// 4 keys (1 reserved), 2 waiters (1 reserved) and 3 event streams (1
// reserved), as the daemon wires limits.admin_reserve.
func reserveServer(t *testing.T, tokens bool) string {
	t.Helper()
	guard := &auth.Guard{}
	if tokens {
		toks, err := auth.NewTokens([]string{clientToken}, []string{adminToken})
		if err != nil {
			t.Fatal(err)
		}
		guard.Set(toks)
	}
	hub := events.New(3, 1, 16)
	eng := engine.New(engine.SystemClock{}, hub, engine.Limits{MaxKeys: 4, ReservedKeys: 1, MaxWaiters: 2, ReservedWaiters: 1})
	a := api.New(api.Options{Locker: eng, Bounds: bounds, Events: hub, Auth: guard, Logger: testLogger(t), Observer: checkCodes(t)})
	a.SetReady(true)
	srv := httptest.NewServer(a)
	t.Cleanup(srv.Close)
	t.Cleanup(hub.Close) // ends open streams so srv.Close does not wait for them
	t.Cleanup(eng.Close) // answers open waits
	return srv.URL
}

// call sends a request with token (none if empty) and returns its status
// and error code. With stream it reads an event stream's first event
// instead and returns 200 and the event's name; the stream stays open
// until the test ends.
func call(t *testing.T, method, url, token string, stream bool) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	req, err := http.NewRequestWithContext(ctx, method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if stream {
		req.Header.Set("Accept", "text/event-stream")
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	if stream && res.StatusCode == http.StatusOK {
		t.Cleanup(func() { cancel(); res.Body.Close() })
		rd := bufio.NewReader(res.Body)
		for {
			line, err := rd.ReadString('\n')
			if err != nil {
				t.Fatalf("%s %s: stream ended: %v", method, url, err)
			}
			if name, ok := strings.CutPrefix(line, "event: "); ok {
				return res.StatusCode, strings.TrimSpace(name)
			}
			if line == "\n" && strings.Contains(url, "/v1/events") {
				return res.StatusCode, "open" // an idle event stream sends only its retry line
			}
		}
	}
	defer cancel()
	defer res.Body.Close()
	var body struct{ Error string }
	_ = json.NewDecoder(res.Body).Decode(&body)
	return res.StatusCode, body.Error
}

// TestAdminReserve is the attack of a client token that takes every key,
// every waiter place and every event stream: the admin's console and
// acquires still get in, into the reserved share, and no further.
func TestAdminReserve(t *testing.T) {
	url := reserveServer(t, true)
	for i, key := range []string{"c1", "c2", "c3"} {
		if code, e := call(t, "POST", url+"/v1/locks/"+key+"/acquire?wait=0", clientToken, false); code != 200 {
			t.Fatalf("client key %d of 3 unreserved: %d %s", i+1, code, e)
		}
	}
	steps := []struct {
		name, method, path, token string
		stream                    bool
		code                      int
		want                      string
	}{
		{"client's 4th key", "POST", "/v1/locks/c4/acquire?wait=0", clientToken, false, 429, "too_many_keys"},
		{"client's 4th key, streaming", "POST", "/v1/locks/c4/acquire?wait=0", clientToken, true, 200, "too_many_keys"},
		{"admin's key in the reserve", "POST", "/v1/locks/a1/acquire?wait=0", adminToken, false, 200, ""},
		{"admin's 5th key", "POST", "/v1/locks/a2/acquire?wait=0", adminToken, true, 200, "too_many_keys"},
		{"client's waiter", "POST", "/v1/locks/c1/acquire?wait=30s", clientToken, true, 200, "queued"},
		{"client's 2nd waiter", "POST", "/v1/locks/c2/acquire?wait=30s", clientToken, false, 429, "too_many_waiters"},
		{"admin's waiter in the reserve", "POST", "/v1/locks/c2/acquire?wait=30s", adminToken, true, 200, "queued"},
		{"admin's 3rd waiter", "POST", "/v1/locks/c3/acquire?wait=30s", adminToken, false, 429, "too_many_waiters"},
		{"client's 1st stream", "GET", "/v1/events?key=c1", clientToken, true, 200, "open"},
		{"client's 2nd stream", "GET", "/v1/events?key=c2", clientToken, true, 200, "open"},
		{"client's 3rd stream", "GET", "/v1/events?key=c3", clientToken, true, 429, "too_many_subscribers"},
		{"the console's stream in the reserve", "GET", "/v1/events", adminToken, true, 200, "open"},
		{"a 4th stream", "GET", "/v1/events", adminToken, true, 429, "too_many_subscribers"},
	}
	for _, s := range steps {
		if code, got := call(t, s.method, url+s.path, s.token, s.stream); code != s.code || got != s.want {
			t.Errorf("%s: %d %q, want %d %q", s.name, code, got, s.code, s.want)
		}
	}
}

// TestAdminReserveWithoutTokens: with auth off there are no tiers, and
// every caller may use the whole of each limit, as before the reserve.
func TestAdminReserveWithoutTokens(t *testing.T) {
	url := reserveServer(t, false)
	for i := range 4 {
		if code, e := call(t, "POST", url+"/v1/locks/k"+string(rune('1'+i))+"/acquire?wait=0", "", false); code != 200 {
			t.Fatalf("key %d of 4: %d %s", i+1, code, e)
		}
	}
	if code, e := call(t, "POST", url+"/v1/locks/k5/acquire?wait=0", "", false); code != 429 || e != "too_many_keys" {
		t.Errorf("5th key of 4: %d %s, want 429 too_many_keys", code, e)
	}
	for i := range 3 {
		if code, got := call(t, "GET", url+"/v1/events", "", true); code != 200 || got != "open" {
			t.Fatalf("stream %d of 3: %d %s", i+1, code, got)
		}
	}
	if code, e := call(t, "GET", url+"/v1/events", "", true); code != 429 || e != "too_many_subscribers" {
		t.Errorf("4th stream of 3: %d %s, want 429 too_many_subscribers", code, e)
	}
}
