package api_test

import (
	"strconv"
	"testing"

	"github.com/mutexd/mutexd/internal/engine"
)

// TestSemaphoreLimit: limit=2 admits two holders at once, the third
// waits, and an acquire with another limit is refused naming the key's.
func TestSemaphoreLimit(t *testing.T) {
	s := newOpsServer(t, engine.Limits{}, opsBounds)
	a := s.client(t, "POST", "/v1/locks/pool/acquire?limit=2&owner=a", "")
	b := s.client(t, "POST", "/v1/locks/pool/acquire", `{"limit":2,"owner":"b"}`)
	if a.status != 200 || b.status != 200 || a.body["limit"] != 2.0 || b.body["limit"] != 2.0 {
		t.Fatalf("two holders of limit 2: %d %s / %d %s", a.status, a.raw, b.status, b.raw)
	}
	if a.body["fence"] == b.body["fence"] || a.body["token"] == b.body["token"] {
		t.Fatal("two holders share a fence or a token")
	}
	third := s.background(t, t.Context(), "POST", "/v1/locks/pool/acquire?limit=2&wait=5m&owner=c", nil)
	waitFor(t, func() bool { return s.eng.Stats().Waiters == 1 })

	for _, q := range []string{"limit=3", "limit=1", ""} {
		r := s.client(t, "POST", "/v1/locks/pool/acquire?wait=0&"+q, "")
		wantError(t, r, 409, "limit_mismatch")
		if r.body["limit"] != 2.0 {
			t.Fatalf("limit_mismatch %s: want limit 2", r.raw)
		}
	}

	i := s.client(t, "GET", "/v1/locks/pool", "")
	holders, _ := i.body["holders"].([]any)
	if i.body["limit"] != 2.0 || len(holders) != 2 || i.body["waiters"] != 1.0 {
		t.Fatalf("inspection %s: want limit 2, two holders, one waiter", i.raw)
	}
	if h0 := holders[0].(map[string]any); h0["owner"] != "a" || i.body["holder"].(map[string]any)["owner"] != "a" {
		t.Fatalf("inspection %s: want holders oldest first and holder = the oldest", i.raw)
	}
	l := s.admin(t, "GET", "/v1/locks?prefix=pool", "")
	row := l.body["locks"].([]any)[0].(map[string]any)
	if row["holders"] != 2.0 || row["limit"] != 2.0 || row["paused"] != false {
		t.Fatalf("list row %v: want holders 2, limit 2, paused false", row)
	}

	s.client(t, "POST", "/v1/locks/pool/release?token="+a.body["token"].(string), "")
	if c := answer(t, third); c.status != 200 || c.body["owner"] != "c" || c.body["limit"] != 2.0 {
		t.Fatalf("third holder: %d %s", c.status, c.raw)
	}
}

// TestFenceCheck: a live fence answers 200 with its expiry; an ended or
// unknown one 409 stale_fence with the key's live fences; a malformed one
// 400 invalid_fence.
func TestFenceCheck(t *testing.T) {
	s := newOpsServer(t, engine.Limits{}, opsBounds)
	g := s.client(t, "POST", "/v1/locks/db/acquire?ttl=30s", "")
	fence := strconv.FormatUint(uint64(g.body["fence"].(float64)), 10)
	r := s.client(t, "GET", "/v1/locks/db/fences/"+fence, "")
	if r.status != 200 || r.body["live"] != true || r.body["key"] != "db" || r.body["fence"] != g.body["fence"] || r.body["expires_at"] != g.body["expires_at"] {
		t.Fatalf("live fence: %d %s", r.status, r.raw)
	}
	s.client(t, "POST", "/v1/locks/db/release?token="+g.body["token"].(string), "")
	r = s.client(t, "GET", "/v1/locks/db/fences/"+fence, "")
	wantError(t, r, 409, "stale_fence")
	if cur, ok := r.body["current_fences"].([]any); !ok || len(cur) != 0 {
		t.Fatalf("stale fence of a free key: %s, want current_fences []", r.raw)
	}
	n := s.client(t, "POST", "/v1/locks/db/acquire", "")
	r = s.client(t, "GET", "/v1/locks/db/fences/"+fence, "")
	wantError(t, r, 409, "stale_fence")
	if cur := r.body["current_fences"].([]any); len(cur) != 1 || cur[0] != n.body["fence"] {
		t.Fatalf("stale fence: %s, want current_fences [%v]", r.raw, n.body["fence"])
	}
	for _, bad := range []string{"0", "x", "-1", "1.5", "9007199254740992", "18446744073709551616", "+5"} {
		wantError(t, s.client(t, "GET", "/v1/locks/db/fences/"+bad, ""), 400, "invalid_fence")
	}
	if r := s.client(t, "GET", "/v1/locks/db/fences/9007199254740991", ""); r.status != 409 {
		t.Fatalf("fence 2^53-1: %d %s, want 409 (well-formed, not live)", r.status, r.raw)
	}
	if code, _, _ := (&authFixture{url: s.url}).do(t, "GET", "/v1/locks/db/fences/1", ""); code != 401 {
		t.Fatalf("fence check without a token: %d, want 401", code)
	}
}
