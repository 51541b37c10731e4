package api_test

import (
	"strings"
	"testing"

	"github.com/mutexd/mutexd/internal/engine"
)

// TestPauseResumeKey: a paused key grants nothing (acquires queue, the
// holder keeps its lease); resume serves the queue. Admin only.
func TestPauseResumeKey(t *testing.T) {
	s := newOpsServer(t, engine.Limits{}, opsBounds)
	wantError(t, s.client(t, "POST", "/v1/locks/k/pause", ""), 403, "forbidden")
	r := s.admin(t, "POST", "/v1/locks/k/pause", "")
	if r.status != 200 || strings.TrimSpace(r.raw) != `{"key":"k","paused":true,"changed":true}` {
		t.Fatalf("pause: %d %s", r.status, r.raw)
	}
	if r := s.admin(t, "POST", "/v1/locks/k/pause", ""); r.body["changed"] != false {
		t.Fatalf("second pause: %s, want changed false", r.raw)
	}
	wantError(t, s.client(t, "POST", "/v1/locks/k/acquire?wait=0", ""), 423, "timeout")
	waiter := s.background(t, t.Context(), "POST", "/v1/locks/k/acquire?wait=5m", nil)
	waitFor(t, func() bool { return s.eng.Stats().Waiters == 1 })
	if i := s.client(t, "GET", "/v1/locks/k", ""); i.body["paused"] != true {
		t.Fatalf("inspection %s: want paused", i.raw)
	}
	if l := s.admin(t, "GET", "/v1/locks", ""); l.body["locks"].([]any)[0].(map[string]any)["paused"] != true {
		t.Fatalf("list %s: want paused", l.raw)
	}
	wantError(t, s.client(t, "POST", "/v1/locks/k/resume", ""), 403, "forbidden")
	pending(t, waiter, "a waiter of a paused key")
	r = s.admin(t, "POST", "/v1/locks/k/resume", "")
	if r.status != 200 || strings.TrimSpace(r.raw) != `{"key":"k","paused":false,"changed":true}` {
		t.Fatalf("resume: %d %s", r.status, r.raw)
	}
	if w := answer(t, waiter); w.status != 200 {
		t.Fatalf("waiter after resume: %d %s", w.status, w.raw)
	}
}

// TestDrainKey: every waiter is answered 409 drained with the reason; the
// holder keeps its lease.
func TestDrainKey(t *testing.T) {
	s := newOpsServer(t, engine.Limits{}, opsBounds)
	g := s.client(t, "POST", "/v1/locks/k/acquire", "")
	w1 := s.background(t, t.Context(), "POST", "/v1/locks/k/acquire?wait=5m", nil)
	w2 := s.background(t, t.Context(), "POST", "/v1/locks/k/acquire?wait=5m", map[string]string{"Accept": "text/event-stream"})
	waitFor(t, func() bool { return s.eng.Stats().Waiters == 2 })
	wantError(t, s.client(t, "DELETE", "/v1/locks/k/waiters", ""), 403, "forbidden")
	r := s.admin(t, "DELETE", "/v1/locks/k/waiters?reason=maintenance+window", "")
	if r.status != 200 || strings.TrimSpace(r.raw) != `{"key":"k","drained":2}` {
		t.Fatalf("drain: %d %s", r.status, r.raw)
	}
	a := answer(t, w1)
	wantError(t, a, 409, "drained")
	if a.body["reason"] != "maintenance window" {
		t.Fatalf("drained waiter: %s, want reason", a.raw)
	}
	if b := answer(t, w2); !strings.Contains(b.raw, "event: drained\ndata: {\"error\":\"drained\"") || !strings.Contains(b.raw, `"reason":"maintenance window"`) {
		t.Fatalf("drained stream: %q", b.raw)
	}
	if i := s.eng.Inspect("k", 0); !i.Held || i.Holder.Fence != uint64(g.body["fence"].(float64)) {
		t.Fatalf("holder after the drain: %+v, want untouched", i)
	}
	// The default reason.
	w3 := s.background(t, t.Context(), "POST", "/v1/locks/k/acquire?wait=5m", nil)
	waitFor(t, func() bool { return s.eng.Stats().Waiters == 1 })
	s.admin(t, "DELETE", "/v1/locks/k/waiters", "")
	if c := answer(t, w3); c.body["reason"] != "drained by an operator" {
		t.Fatalf("drained waiter: %s, want the default reason", c.raw)
	}
}

// TestPrefixOperations: pause, resume and drain by prefix, admin only,
// with the prefix required.
func TestPrefixOperations(t *testing.T) {
	s := newOpsServer(t, engine.Limits{}, opsBounds)
	s.client(t, "POST", "/v1/locks/batch:1/acquire", "")
	s.client(t, "POST", "/v1/locks/other/acquire", "")
	for _, p := range []string{"/v1/locks/pause?prefix=batch:", "/v1/locks/resume?prefix=batch:"} {
		wantError(t, s.client(t, "POST", p, ""), 403, "forbidden")
	}
	wantError(t, s.client(t, "DELETE", "/v1/locks/waiters?prefix=batch:", ""), 403, "forbidden")
	r := s.admin(t, "POST", "/v1/locks/pause?prefix=batch:", "")
	if strings.TrimSpace(r.raw) != `{"prefix":"batch:","paused":1}` {
		t.Fatalf("pause prefix: %d %s", r.status, r.raw)
	}
	// A key created under the prefix is paused too; another is not.
	wantError(t, s.client(t, "POST", "/v1/locks/batch:2/acquire?wait=0", ""), 423, "timeout")
	if r := s.client(t, "POST", "/v1/locks/free/acquire?wait=0", ""); r.status != 200 {
		t.Fatalf("acquire outside the prefix: %d %s", r.status, r.raw)
	}
	waiter := s.background(t, t.Context(), "POST", "/v1/locks/batch:3/acquire?wait=5m", nil)
	waitFor(t, func() bool { return s.eng.Stats().Waiters == 1 })
	r = s.admin(t, "DELETE", "/v1/locks/waiters", `{"prefix":"batch:","reason":"deploy"}`)
	if strings.TrimSpace(r.raw) != `{"prefix":"batch:","drained":1}` {
		t.Fatalf("drain prefix: %d %s", r.status, r.raw)
	}
	if w := answer(t, waiter); w.body["reason"] != "deploy" {
		t.Fatalf("drained waiter: %s", w.raw)
	}
	r = s.admin(t, "POST", "/v1/locks/resume?prefix=batch:", "")
	if r.status != 200 || r.body["prefix"] != "batch:" || r.body["resumed"].(float64) < 1 {
		t.Fatalf("resume prefix: %d %s", r.status, r.raw)
	}
	if r := s.client(t, "POST", "/v1/locks/batch:2/acquire?wait=0", ""); r.status != 200 {
		t.Fatalf("acquire after the prefix resumed: %d %s", r.status, r.raw)
	}
	for _, p := range []string{"", "?prefix=", "?prefix=a%00b", "?prefix=" + strings.Repeat("p", 257)} {
		wantError(t, s.admin(t, "POST", "/v1/locks/pause"+p, ""), 400, "invalid_prefix")
		wantError(t, s.admin(t, "POST", "/v1/locks/resume"+p, ""), 400, "invalid_prefix")
		wantError(t, s.admin(t, "DELETE", "/v1/locks/waiters"+p, ""), 400, "invalid_prefix")
	}
	// A key named like the static routes is still a key for GET and for
	// the routes below it.
	if r := s.client(t, "GET", "/v1/locks/pause", ""); r.status != 200 || r.body["key"] != "pause" {
		t.Fatalf("inspect key pause: %d %s", r.status, r.raw)
	}
	if r := s.client(t, "POST", "/v1/locks/waiters/acquire?ttl=5s", ""); r.status != 200 {
		t.Fatalf("acquire key waiters: %d %s", r.status, r.raw)
	}
}

// TestNewParametersBadInput: every new parameter out of its bounds gets a
// 400 whose one-line message names the parameter and its bounds.
func TestNewParametersBadInput(t *testing.T) {
	s := newOpsServer(t, engine.Limits{}, opsBounds)
	long := strings.Repeat("r", 65)
	tests := []struct {
		method, path, body, code, mention string
	}{
		{"POST", "/v1/locks/k/acquire?request_id=" + long, "", "invalid_request_id", "request_id must be 1 to 64 printable ASCII characters; got 65 bytes"},
		{"POST", "/v1/locks/k/acquire?request_id=", "", "invalid_request_id", "request_id must be 1 to 64"},
		{"POST", "/v1/locks/k/acquire?request_id=a+b", "", "invalid_request_id", "printable ASCII"},
		{"POST", "/v1/locks/k/acquire", `{"request_id":"caf\u00e9"}`, "invalid_request_id", "printable ASCII"},
		{"POST", "/v1/locks/k/acquire?limit=0", "", "invalid_limit", "limit must be a whole number from 1 to 10000; got \"0\""},
		{"POST", "/v1/locks/k/acquire?limit=10001", "", "invalid_limit", "1 to 10000"},
		{"POST", "/v1/locks/k/acquire", `{"limit":1.5}`, "invalid_limit", "1 to 10000"},
		{"POST", "/v1/locks/k/acquire?limit=two", "", "invalid_limit", "1 to 10000"},
		{"POST", "/v1/locks/k/acquire?ttl=30s&max_hold=10s", "", "invalid_max_hold", "max_hold must be 0 (none) or a duration from the ttl (30s) to 2h"},
		{"POST", "/v1/locks/k/acquire?max_hold=3h", "", "invalid_max_hold", "to 2h"},
		{"POST", "/v1/locks/k/acquire?max_hold=-1s", "", "invalid_max_hold", "max_hold"},
		{"POST", "/v1/locks/k/acquire?max_hold=soon", "", "invalid_max_hold", "max_hold"},
		{"POST", "/v1/locks/k/acquire?lock_delay=2m", "", "invalid_lock_delay", "lock_delay must be a duration from 0s to 1m"},
		{"POST", "/v1/locks/k/acquire?lock_delay=-1s", "", "invalid_lock_delay", "lock_delay"},
		{"DELETE", "/v1/locks/k/waiters?reason=" + strings.Repeat("x", 257), "", "invalid_reason", "reason is at most 256 bytes"},
		{"DELETE", "/v1/locks/k/waiters?reason=a%0Ab", "", "invalid_reason", "reason"},
		{"DELETE", "/v1/locks/waiters?prefix=a&reason=%E2%80%AEx", "", "invalid_reason", "format characters"},
		{"GET", "/v1/locks/k/fences/0", "", "invalid_fence", "fence must be a whole number from 1 to 9007199254740991"},
	}
	for _, tt := range tests {
		t.Run(tt.code+" "+tt.path, func(t *testing.T) {
			r := s.admin(t, tt.method, tt.path, tt.body)
			wantError(t, r, 400, tt.code)
			msg, _ := r.body["message"].(string)
			if !strings.Contains(msg, tt.mention) || strings.Contains(msg, "\n") {
				t.Fatalf("message %q: want one line containing %q", msg, tt.mention)
			}
		})
	}
	// max_hold=0 is "none", and max_hold equal to the ttl is allowed.
	for _, q := range []string{"max_hold=0", "ttl=30s&max_hold=30s"} {
		if r := s.client(t, "POST", "/v1/locks/ok-"+q[:3]+"/acquire?"+q, ""); r.status != 200 {
			t.Fatalf("acquire?%s: %d %s", q, r.status, r.raw)
		}
	}
}
