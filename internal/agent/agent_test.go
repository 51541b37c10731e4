package agent_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mutexd/mutexd/internal/agent"
	"github.com/mutexd/mutexd/internal/api"
)

var _ api.Forwarder = (*agent.Agent)(nil)

// serve runs h on a real loopback listener until the test ends and
// returns its base URL.
func serve(t *testing.T, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String()
}

// deadURL is a loopback address nobody listens on.
func deadURL(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	return "http://" + ln.Addr().String()
}

// front runs an agent for servers behind the API, as the daemon does, and
// returns the agent, its URL and its registry.
func front(t *testing.T, bound time.Duration, servers ...string) (*agent.Agent, string, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	a, err := agent.New(agent.Config{Servers: servers, DefaultWait: 5 * time.Second, FailoverBound: bound,
		ProbeInterval: 20 * time.Millisecond, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	a.Start()
	t.Cleanup(a.Close)
	s := api.New(api.Options{Forward: a, CheckBrowsers: true})
	s.SetReady(true)
	return a, serve(t, s), reg
}

type answer struct {
	status int
	header http.Header
	body   string
}

func do(t *testing.T, method, u string, body string, hdr ...string) answer {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return answer{resp.StatusCode, resp.Header, string(b)}
}

// recorded is what a fake server saw of one call.
type recorded struct {
	path  string
	query url.Values
	body  string
	hdr   http.Header
}

// recorder collects the calls a fake server saw.
type recorder struct {
	mu    sync.Mutex // guards calls
	calls []recorded
}

func (r *recorder) add(req *http.Request) recorded {
	b, _ := io.ReadAll(req.Body)
	c := recorded{req.URL.Path, req.URL.Query(), string(b), req.Header.Clone()}
	r.mu.Lock()
	r.calls = append(r.calls, c)
	r.mu.Unlock()
	return c
}

func (r *recorder) all() []recorded {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]recorded(nil), r.calls...)
}

// ready answers /readyz 200 and everything else with h.
func ready(h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/readyz" {
			w.Write([]byte(`{"status":"ready"}`))
			return
		}
		h(w, r)
	})
}

// cut closes the call's connection without an answer, as a server killed
// mid-call does.
func cut(w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err == nil {
		conn.Close()
	}
}

func TestAnswersPassThrough(t *testing.T) {
	var rec recorder
	srv := serve(t, ready(func(w http.ResponseWriter, r *http.Request) {
		rec.add(r)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Retry-After", "7")
		w.Header().Set("X-Request-Id", "the-server's")
		w.WriteHeader(http.StatusConflict)
		w.Write([]byte(`{"error":"not_holder","message":"as the server says"}` + "\n"))
	}))
	_, u, _ := front(t, 2*time.Second, srv)
	got := do(t, http.MethodPost, u+"/v1/locks/a%2Fb/release?token=t1", "", "Authorization", "Bearer app-token", "Origin", "http://"+strings.TrimPrefix(u, "http://"))
	if got.status != http.StatusConflict || got.body != `{"error":"not_holder","message":"as the server says"}`+"\n" || got.header.Get("Retry-After") != "7" {
		t.Fatalf("got %d %q (Retry-After %q), want the server's 409 body and headers as they are", got.status, got.body, got.header.Get("Retry-After"))
	}
	if id := got.header.Get("X-Request-Id"); id == "" || id == "the-server's" {
		t.Fatalf("X-Request-Id = %q, want the agent's own", id)
	}
	calls := rec.all()
	if len(calls) != 1 {
		t.Fatalf("server saw %d calls, want 1", len(calls))
	}
	c := calls[0]
	if c.path != "/v1/locks/a/b/release" || c.query.Get("token") != "t1" || c.hdr.Get("Authorization") != "Bearer app-token" {
		t.Fatalf("server saw %+v, want the app's path, query and token", c)
	}
	if c.hdr.Get("Origin") != "" || c.hdr.Get("X-Request-Id") != got.header.Get("X-Request-Id") {
		t.Fatalf("server saw Origin %q and X-Request-Id %q, want no Origin and the agent's id", c.hdr.Get("Origin"), c.hdr.Get("X-Request-Id"))
	}
}

func TestAcquireGetsRequestIDAndOwner(t *testing.T) {
	var rec recorder
	srv := serve(t, ready(func(w http.ResponseWriter, r *http.Request) {
		rec.add(r)
		w.Write([]byte(`{"fence":1}`))
	}))
	_, u, _ := front(t, 2*time.Second, srv)
	do(t, http.MethodPost, u+"/v1/locks/k/acquire?ttl=10s", "")
	do(t, http.MethodPost, u+"/v1/locks/k/acquire", `{"request_id":"mine","owner":"me"}`, "Content-Type", "application/json")
	do(t, http.MethodPost, u+"/v1/locks/k/acquire?request_id=q&owner=o", "")
	calls := rec.all()
	if len(calls) != 3 {
		t.Fatalf("server saw %d calls, want 3", len(calls))
	}
	if id := calls[0].query.Get("request_id"); !strings.HasPrefix(id, "agent-") || calls[0].query.Get("ttl") != "10s" {
		t.Fatalf("an acquire without request_id reached the server with query %v, want an agent- request_id added", calls[0].query)
	}
	if owner := calls[0].query.Get("owner"); !strings.HasPrefix(owner, "127.0.0.1:") {
		t.Fatalf("owner %q, want the app's address", owner)
	}
	if calls[1].query.Has("request_id") || calls[1].query.Has("owner") || calls[1].body != `{"request_id":"mine","owner":"me"}` {
		t.Fatalf("an acquire naming its request_id and owner in the body reached the server as %+v, want it untouched", calls[1])
	}
	if calls[2].query.Get("request_id") != "q" || calls[2].query.Get("owner") != "o" || len(calls[2].query["request_id"]) != 1 {
		t.Fatalf("query %v, want the app's request_id and owner only", calls[2].query)
	}
}

// TestAcquireCutIsResent: a server that dies while an acquire waits (its
// connection closed with no answer) or refuses it with 503: the agent
// sends it to the next server with the same request_id and what is left
// of its wait, and the app gets that server's grant.
func TestAcquireCutIsResent(t *testing.T) {
	for _, tc := range []struct {
		name string
		fail func(w http.ResponseWriter)
	}{
		{"cut", cut},
		{"503", func(w http.ResponseWriter) {
			w.WriteHeader(http.StatusServiceUnavailable)
			w.Write([]byte(`{"error":"unavailable","message":"shutting down"}`))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var rec1, rec2 recorder
			dying := serve(t, ready(func(w http.ResponseWriter, r *http.Request) {
				rec1.add(r)
				time.Sleep(300 * time.Millisecond) // waits in line, then dies
				tc.fail(w)
			}))
			next := serve(t, ready(func(w http.ResponseWriter, r *http.Request) {
				c := rec2.add(r)
				w.Write([]byte(`{"fence":7,"request_id":"` + c.query.Get("request_id") + `"}`))
			}))
			_, u, reg := front(t, 5*time.Second, dying, next)
			got := do(t, http.MethodPost, u+"/v1/locks/k/acquire?wait=20s", "")
			if got.status != http.StatusOK || !strings.Contains(got.body, `"fence":7`) {
				t.Fatalf("app got %d %s, want the next server's grant", got.status, got.body)
			}
			c1, c2 := rec1.all(), rec2.all()
			if len(c1) != 1 || len(c2) != 1 {
				t.Fatalf("servers saw %d and %d calls, want 1 each", len(c1), len(c2))
			}
			if id := c1[0].query.Get("request_id"); id == "" || c2[0].query.Get("request_id") != id {
				t.Fatalf("request_ids %q then %q, want the same one", id, c2[0].query.Get("request_id"))
			}
			w, err := time.ParseDuration(c2[0].query.Get("wait"))
			if err != nil || w >= 20*time.Second || w < 15*time.Second {
				t.Fatalf("re-sent wait %q, want what was left of 20s", c2[0].query.Get("wait"))
			}
			if n := failovers(t, reg); n != 1 {
				t.Fatalf("mutexd_agent_failovers_total = %v, want 1", n)
			}
		})
	}
}

// failovers reads mutexd_agent_failovers_total from reg.
func failovers(t *testing.T, reg *prometheus.Registry) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "mutexd_agent_failovers_total" {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatal("no mutexd_agent_failovers_total")
	return 0
}

// TestUnsafeCallNotResent: a force-release cut after it was sent may have
// been applied: the agent does not send it to another server and answers
// 503 unavailable; one that could not reach a server at all goes on.
func TestUnsafeCallNotResent(t *testing.T) {
	var rec recorder
	dying := serve(t, ready(func(w http.ResponseWriter, r *http.Request) { rec.add(r); cut(w) }))
	var rec2 recorder
	next := serve(t, ready(func(w http.ResponseWriter, r *http.Request) { rec2.add(r); w.Write([]byte(`{"released":1}`)) }))
	_, u, _ := front(t, 2*time.Second, dying, next)
	got := do(t, http.MethodDelete, u+"/v1/locks/k", "")
	var e struct{ Error, Message string }
	json.Unmarshal([]byte(got.body), &e)
	if got.status != http.StatusServiceUnavailable || e.Error != "unavailable" {
		t.Fatalf("cut force-release: got %d %s, want 503 unavailable", got.status, got.body)
	}
	if n := len(rec2.all()); n != 0 {
		t.Fatalf("the next server saw %d force-releases, want 0 (it may have been applied)", n)
	}

	_, u, _ = front(t, 2*time.Second, deadURL(t), next)
	if got := do(t, http.MethodDelete, u+"/v1/locks/k", ""); got.status != http.StatusOK {
		t.Fatalf("force-release past an unreachable server: got %d %s, want the next server's 200", got.status, got.body)
	}
}

// TestNoServer: an agent that reaches no server is not ready and answers
// every call 503 unavailable, with the body a server gives, after its
// failover bound.
func TestNoServer(t *testing.T) {
	a, u, _ := front(t, 300*time.Millisecond, deadURL(t), deadURL(t))
	time.Sleep(100 * time.Millisecond) // a few probes
	if a.Ready() {
		t.Fatal("Ready() = true with no server reachable")
	}
	start := time.Now()
	got := do(t, http.MethodPost, u+"/v1/locks/k/acquire?wait=0", "")
	want := `{"error":"unavailable","message":"The server is not accepting acquires right now; retry shortly."}` + "\n"
	if got.status != http.StatusServiceUnavailable || got.body != want || got.header.Get("Retry-After") == "" {
		t.Fatalf("got %d %q, want 503 %q with Retry-After", got.status, got.body, want)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("answered after %s, want about the failover bound", d)
	}
	if got := do(t, http.MethodGet, u+"/v1/locks/k", ""); got.status != http.StatusServiceUnavailable {
		t.Fatalf("inspect: got %d, want 503", got.status)
	}
}

// TestReadyFollowsServers: ready while some server's /readyz is 200, and
// calls go to that server first.
func TestReadyFollowsServers(t *testing.T) {
	var mu sync.Mutex
	up := false
	flaky := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if !up {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	a, _, _ := front(t, time.Second, deadURL(t), flaky)
	time.Sleep(150 * time.Millisecond)
	if a.Ready() {
		t.Fatal("ready while no server is")
	}
	mu.Lock()
	up = true
	mu.Unlock()
	deadline := time.Now().Add(5 * time.Second)
	for !a.Ready() {
		if time.Now().After(deadline) {
			t.Fatal("not ready 5s after a server became ready")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestEventsReconnect: an event stream whose server goes away is taken up
// on the next server with the Last-Event-ID it reached; the app sees one
// stream.
func TestEventsReconnect(t *testing.T) {
	lastIDs := make(chan string, 2)
	first := serve(t, ready(func(w http.ResponseWriter, r *http.Request) {
		lastIDs <- r.Header.Get("Last-Event-ID")
		w.Header().Set("Content-Type", "text/event-stream")
		w.Write([]byte("retry: 2000\n\nid: 41\nevent: granted\ndata: {\"id\":41}\n\n"))
		http.NewResponseController(w).Flush()
		time.Sleep(100 * time.Millisecond)
		cut(w)
	}))
	second := serve(t, ready(func(w http.ResponseWriter, r *http.Request) {
		lastIDs <- r.Header.Get("Last-Event-ID")
		w.Header().Set("Content-Type", "text/event-stream")
		w.Write([]byte("retry: 2000\n\nid: 42\nevent: released\ndata: {\"id\":42}\n\nevent: overflow\ndata: {}\n\n"))
	}))
	_, u, _ := front(t, 2*time.Second, first, second)
	got := do(t, http.MethodGet, u+"/v1/events", "")
	if got.status != http.StatusOK {
		t.Fatalf("events: %d %s", got.status, got.body)
	}
	var events []string
	sc := bufio.NewScanner(strings.NewReader(got.body))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "event: "); ok {
			events = append(events, v)
		}
	}
	if strings.Join(events, ",") != "granted,released,overflow" {
		t.Fatalf("app saw events %v in %q, want granted,released,overflow", events, got.body)
	}
	if a, b := <-lastIDs, <-lastIDs; a != "" || b != "41" {
		t.Fatalf("Last-Event-ID %q then %q, want none then 41", a, b)
	}
}

// TestStreamedAcquireResent: an acquire asked as Server-Sent Events whose
// server says "unavailable" (shutting down) goes on at the next server;
// the app sees its queued events, then the grant, and no unavailable.
func TestStreamedAcquireResent(t *testing.T) {
	ids := make(chan string, 2)
	first := serve(t, ready(func(w http.ResponseWriter, r *http.Request) {
		ids <- r.URL.Query().Get("request_id")
		w.Header().Set("Content-Type", "text/event-stream")
		w.Write([]byte("retry: 2000\n\nevent: queued\ndata: {\"position\":1}\n\nevent: unavailable\ndata: {\"error\":\"unavailable\"}\n\n"))
	}))
	second := serve(t, ready(func(w http.ResponseWriter, r *http.Request) {
		ids <- r.URL.Query().Get("request_id")
		w.Header().Set("Content-Type", "text/event-stream")
		w.Write([]byte("retry: 2000\n\nevent: granted\ndata: {\"fence\":9}\n\n"))
	}))
	_, u, _ := front(t, 2*time.Second, first, second)
	got := do(t, http.MethodPost, u+"/v1/locks/k/acquire?wait=10s", "", "Accept", "text/event-stream")
	if strings.Contains(got.body, "unavailable") || !strings.Contains(got.body, "event: queued") || !strings.Contains(got.body, "event: granted\ndata: {\"fence\":9}") {
		t.Fatalf("app saw %q, want queued then granted", got.body)
	}
	if a, b := <-ids, <-ids; a == "" || a != b {
		t.Fatalf("request_ids %q and %q, want the same", a, b)
	}
}

func TestNewNeedsServers(t *testing.T) {
	if _, err := agent.New(agent.Config{}); err == nil {
		t.Fatal("New without servers: want an error")
	}
}
