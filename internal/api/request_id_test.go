package api_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mutexd/mutexd/internal/api"
	"github.com/mutexd/mutexd/internal/engine"
)

// TestRequestIDResendWhileLive: a re-sent acquire whose lease lives gets
// the same lease (token, fence, expiry), not extended, with its
// request_id and the key's limit in the body.
func TestRequestIDResendWhileLive(t *testing.T) {
	s := newOpsServer(t, engine.Limits{RememberOutcome: 10 * time.Minute}, opsBounds)
	first := s.client(t, "POST", "/v1/locks/k/acquire?request_id=job-1&ttl=30s", "")
	if first.status != 200 || first.body["request_id"] != "job-1" || first.body["limit"] != 1.0 {
		t.Fatalf("first acquire: %d %s, want 200 with request_id job-1 and limit 1", first.status, first.raw)
	}
	if !strings.HasSuffix(strings.TrimSpace(first.raw), `"limit":1,"request_id":"job-1"}`) {
		t.Fatalf("grant %s: want limit and request_id last", first.raw)
	}
	s.clock.Advance(10 * time.Second)
	again := s.client(t, "POST", "/v1/locks/k/acquire", `{"request_id":"job-1","ttl":"30s"}`)
	if again.status != 200 {
		t.Fatalf("re-send: %d %s", again.status, again.raw)
	}
	for _, f := range []string{"token", "fence", "expires_at", "request_id"} {
		if again.body[f] != first.body[f] {
			t.Errorf("re-send %s = %v, want %v (the same lease, not extended)", f, again.body[f], first.body[f])
		}
	}
	// A plain acquire (no request_id) keeps today's body: no request_id.
	plain := s.client(t, "POST", "/v1/locks/other/acquire", "")
	if _, ok := plain.body["request_id"]; ok || plain.body["limit"] != 1.0 {
		t.Fatalf("plain grant %s: want limit 1 and no request_id", plain.raw)
	}
}

// TestRequestIDResendAfterEnded: once the lease of a request_id ended, a
// re-send learns how: 409 lease_ended with fence, outcome and ended_at.
func TestRequestIDResendAfterEnded(t *testing.T) {
	s := newOpsServer(t, engine.Limits{RememberOutcome: 10 * time.Minute}, opsBounds)
	for _, tt := range []struct {
		name, outcome string
		end           func(t *testing.T, key, token string)
	}{
		{"released", "released", func(t *testing.T, key, token string) {
			s.client(t, "POST", "/v1/locks/"+key+"/release?token="+token, "")
		}},
		{"failed", "failed", func(t *testing.T, key, token string) {
			s.client(t, "POST", "/v1/locks/"+key+"/release?outcome=failed&token="+token, "")
		}},
		{"expired", "expired", func(t *testing.T, key, token string) { s.clock.Advance(31 * time.Second) }},
		{"forced", "forced", func(t *testing.T, key, token string) { s.admin(t, "DELETE", "/v1/locks/"+key, "") }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			key := "ended-" + tt.name
			g := s.client(t, "POST", "/v1/locks/"+key+"/acquire?request_id=r-"+tt.name, "")
			if g.status != 200 {
				t.Fatalf("acquire: %d %s", g.status, g.raw)
			}
			tt.end(t, key, g.body["token"].(string))
			endedAt := s.clock.Now().UTC().Format(api.TimeFormat)
			if tt.outcome == "expired" {
				endedAt = g.body["expires_at"].(string) // a lease is over at its deadline
			}
			r := s.client(t, "POST", "/v1/locks/"+key+"/acquire?request_id=r-"+tt.name, "")
			wantError(t, r, 409, "lease_ended")
			if r.body["fence"] != g.body["fence"] || r.body["outcome"] != tt.outcome || r.body["ended_at"] != endedAt {
				t.Fatalf("lease_ended body %s: want fence %v, outcome %s, ended_at %s", r.raw, g.body["fence"], tt.outcome, endedAt)
			}
		})
	}
}

// TestRequestIDResendWhileWaiting: a re-send of a queued request takes its
// place in line (ahead of those who came after it); the first request, a
// stream still open, ends with a final "superseded" event.
func TestRequestIDResendWhileWaiting(t *testing.T) {
	s := newOpsServer(t, engine.Limits{}, opsBounds)
	holder := s.client(t, "POST", "/v1/locks/k/acquire", "")
	first := s.background(t, t.Context(), "POST", "/v1/locks/k/acquire?wait=5m&request_id=w-1", map[string]string{"Accept": "text/event-stream"})
	waitFor(t, func() bool { return s.eng.Stats().Waiters == 1 })
	behind := s.background(t, t.Context(), "POST", "/v1/locks/k/acquire?wait=5m&owner=behind", nil)
	waitFor(t, func() bool { return s.eng.Stats().Waiters == 2 })

	resent := s.background(t, t.Context(), "POST", "/v1/locks/k/acquire?wait=5m&request_id=w-1", nil)
	r := answer(t, first)
	if r.status != 200 || !strings.Contains(r.raw, "event: superseded\ndata: {\"error\":\"superseded\"") {
		t.Fatalf("first request's stream: %d %q, want a final superseded event", r.status, r.raw)
	}
	if st := s.eng.Stats(); st.Waiters != 2 {
		t.Fatalf("waiters %d after the re-send, want 2 (it took the first one's place)", st.Waiters)
	}
	s.client(t, "POST", "/v1/locks/k/release?token="+holder.body["token"].(string), "")
	g := answer(t, resent)
	if g.status != 200 || g.body["request_id"] != "w-1" {
		t.Fatalf("re-send after the release: %d %s, want the grant", g.status, g.raw)
	}
	pending(t, behind, "the waiter that came after the first request")
	s.client(t, "POST", "/v1/locks/k/release?token="+g.body["token"].(string), "")
	if b := answer(t, behind); b.status != 200 || b.body["owner"] != "behind" {
		t.Fatalf("waiter behind: %d %s", b.status, b.raw)
	}
}

// TestRequestIDDisconnectKeepsPlace: a waiter with a request_id whose
// client disconnects keeps its place for lock.detach_grace; the re-sent
// acquire is granted in that place. Without a request_id the waiter
// leaves at once, as before.
func TestRequestIDDisconnectKeepsPlace(t *testing.T) {
	s := newOpsServer(t, engine.Limits{DetachGrace: time.Minute}, opsBounds)
	holder := s.client(t, "POST", "/v1/locks/k/acquire", "")
	ctx, cancel := context.WithCancel(t.Context())
	gone := s.background(t, ctx, "POST", "/v1/locks/k/acquire?wait=5m&request_id=cut-1", nil)
	waitFor(t, func() bool { return s.eng.Stats().Waiters == 1 })
	plainCtx, plainCancel := context.WithCancel(t.Context())
	plain := s.background(t, plainCtx, "POST", "/v1/locks/k/acquire?wait=5m&owner=plain", nil)
	waitFor(t, func() bool { return s.eng.Stats().Waiters == 2 })
	cancel()
	plainCancel()
	answer(t, gone)
	answer(t, plain)
	waitFor(t, func() bool { return s.eng.Stats().Waiters == 1 }) // the plain one left; cut-1 stays
	if info := s.eng.Inspect("k", 10); info.Waiters != 1 || info.Queue[0].Owner == "plain" {
		t.Fatalf("queue %+v, want only the detached request", info.Queue)
	}

	resent := s.background(t, t.Context(), "POST", "/v1/locks/k/acquire?wait=5m&request_id=cut-1", nil)
	waitFor(t, func() bool { return s.eng.Inspect("k", 1).Queue[0].Owner != "" && s.eng.Stats().Waiters == 1 })
	pending(t, resent, "the re-sent acquire")
	s.client(t, "POST", "/v1/locks/k/release?token="+holder.body["token"].(string), "")
	if g := answer(t, resent); g.status != 200 || g.body["request_id"] != "cut-1" {
		t.Fatalf("re-sent acquire: %d %s, want the grant", g.status, g.raw)
	}
}

// TestRequestIDDisconnectKeepsGrant: a grant made to a waiter whose client
// had gone is kept (not released) for the re-sent acquire, which gets
// that very lease.
func TestRequestIDDisconnectKeepsGrant(t *testing.T) {
	s := newOpsServer(t, engine.Limits{DetachGrace: time.Minute}, opsBounds)
	holder := s.client(t, "POST", "/v1/locks/k/acquire", "")
	ctx, cancel := context.WithCancel(t.Context())
	gone := s.background(t, ctx, "POST", "/v1/locks/k/acquire?wait=5m&request_id=cut-2", nil)
	waitFor(t, func() bool { return s.eng.Stats().Waiters == 1 })
	cancel()
	answer(t, gone)
	rel := s.client(t, "POST", "/v1/locks/k/release?token="+holder.body["token"].(string), "")
	if rel.status != 200 {
		t.Fatalf("release: %d %s", rel.status, rel.raw)
	}
	info := s.eng.Inspect("k", 1)
	if !info.Held {
		t.Fatalf("the detached waiter was not granted the key: %+v", info)
	}
	g := s.client(t, "POST", "/v1/locks/k/acquire?wait=5m&request_id=cut-2", "")
	if g.status != 200 || g.body["fence"] != float64(info.Holder.Fence) {
		t.Fatalf("re-send: %d %s, want the lease granted meanwhile (fence %d)", g.status, g.raw, info.Holder.Fence)
	}
}

// lateOnce grants its first acquire only after the caller's context ended
// (a grant that wins the race with the client's disconnect); later calls
// go straight to the engine.
type lateOnce struct {
	*engine.Engine
	once    sync.Once
	entered chan struct{}
}

func (l *lateOnce) Acquire(ctx context.Context, key string, o engine.AcquireOptions) (engine.Grant, error) {
	first := false
	l.once.Do(func() { first = true })
	if !first {
		return l.Engine.Acquire(ctx, key, o)
	}
	close(l.entered)
	<-ctx.Done()
	return l.Engine.Acquire(context.Background(), key, o)
}

// TestGrantToAGoneClientWithRequestIDIsKept: the handler does not release
// a grant that reaches it after its client left when the acquire had a
// request_id (the client will send it again); it does without one
// (TestGrantToAGoneClientIsReleased).
func TestGrantToAGoneClientWithRequestIDIsKept(t *testing.T) {
	for _, accept := range []string{"", "text/event-stream"} {
		t.Run("accept="+accept, func(t *testing.T) {
			eng := engine.New(engine.SystemClock{}, nil, engine.Limits{})
			locker := &lateOnce{Engine: eng, entered: make(chan struct{})}
			a := api.New(api.Options{Locker: locker, Bounds: bounds, Logger: testLogger(t), Observer: checkCodes(t)})
			a.SetReady(true)
			srv := httptest.NewServer(a)
			defer srv.Close()
			ctx, cancel := context.WithCancel(t.Context())
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+"/v1/locks/k/acquire?ttl=1h&request_id=late-1", nil)
			if accept != "" {
				req.Header.Set("Accept", accept)
			}
			done := make(chan struct{})
			go func() {
				defer close(done)
				if resp, err := http.DefaultClient.Do(req); err == nil {
					resp.Body.Close()
				}
			}()
			<-locker.entered
			cancel()
			<-done
			waitFor(t, func() bool { return eng.Stats().Held == 1 })
			s := &testServer{url: srv.URL, eng: eng, api: a}
			r := s.do(t, "POST", "/v1/locks/k/acquire?ttl=1h&request_id=late-1&wait=0", "")
			if r.status != 200 || r.body["fence"] != float64(eng.Inspect("k", 0).Holder.Fence) {
				t.Fatalf("re-send: %d %s, want the lease granted after the client left", r.status, r.raw)
			}
		})
	}
}

// TestPreviousOnImmediateGrant: within lock.remember_outcome, a grant on a
// key nobody held or waited for still says how its last lease ended.
func TestPreviousOnImmediateGrant(t *testing.T) {
	s := newOpsServer(t, engine.Limits{RememberOutcome: 10 * time.Minute}, opsBounds)
	g := s.client(t, "POST", "/v1/locks/cron/acquire?wait=0", "")
	if g.body["previous"] != nil {
		t.Fatalf("first grant %s, want previous null", g.raw)
	}
	s.clock.Advance(time.Second)
	s.client(t, "POST", "/v1/locks/cron/release?outcome=failed&token="+g.body["token"].(string), "")
	endedAt := s.clock.Now().UTC().Format(api.TimeFormat)
	s.clock.Advance(5 * time.Minute)
	n := s.client(t, "POST", "/v1/locks/cron/acquire?wait=0", "")
	prev, _ := n.body["previous"].(map[string]any)
	if n.status != 200 || prev["fence"] != g.body["fence"] || prev["outcome"] != "failed" || prev["ended_at"] != endedAt {
		t.Fatalf("next grant %s, want previous {fence %v, failed, ended_at %s}", n.raw, g.body["fence"], endedAt)
	}
	if i := s.client(t, "GET", "/v1/locks/cron", ""); i.body["last"] == nil {
		t.Fatalf("inspection %s: want last", i.raw)
	}
	// Past the memory, nothing is remembered.
	s.client(t, "POST", "/v1/locks/cron/release?token="+n.body["token"].(string), "")
	s.clock.Advance(11 * time.Minute)
	if l := s.client(t, "POST", "/v1/locks/cron/acquire?wait=0", ""); l.body["previous"] != nil {
		t.Fatalf("grant after lock.remember_outcome: %s, want previous null", l.raw)
	}
}
