package api_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
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

// newStreamServer is newServer with an event hub between the engine and
// the API, as the daemon wires it.
func newStreamServer(t *testing.T, maxSubs, buffer int, heartbeat time.Duration) (*testServer, *events.Hub) {
	t.Helper()
	hub := events.New(maxSubs, 0, buffer)
	eng := engine.New(engine.SystemClock{}, hub, engine.Limits{})
	a := api.New(api.Options{Locker: eng, Bounds: bounds, Events: hub, Heartbeat: heartbeat, Logger: testLogger(t), Observer: checkCodes(t)})
	a.SetReady(true)
	srv := httptest.NewServer(a)
	t.Cleanup(srv.Close)
	t.Cleanup(hub.Close) // ends open streams so srv.Close does not wait for them
	return &testServer{url: srv.URL, eng: eng, api: a}, hub
}

// sse is a client of one Server-Sent Events response.
type sse struct {
	t      *testing.T
	res    *http.Response
	rd     *bufio.Reader
	cancel context.CancelFunc
}

type sseEvent struct {
	id, name, data string
	comment        bool
}

func (s *testServer) stream(t *testing.T, method, path string) *sse {
	t.Helper()
	return s.streamWith(t, method, path, nil)
}

// streamWith is stream with extra request headers.
func (s *testServer) streamWith(t *testing.T, method, path string, hdr map[string]string) *sse {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	req, err := http.NewRequestWithContext(ctx, method, s.url+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "text/event-stream")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	st := &sse{t: t, res: res, rd: bufio.NewReader(res.Body), cancel: cancel}
	t.Cleanup(st.close)
	if res.StatusCode != http.StatusOK || res.Header.Get("Content-Type") != "text/event-stream" {
		b, _ := io.ReadAll(res.Body)
		t.Fatalf("%s %s: %d %s %s, want a 200 event stream", method, path, res.StatusCode, res.Header.Get("Content-Type"), b)
	}
	return st
}

func (s *sse) close() { s.cancel(); s.res.Body.Close() }

// next reads the next event or comment; ok is false at the end of the stream.
func (s *sse) next() (ev sseEvent, ok bool) {
	s.t.Helper()
	var lines int
	for {
		line, err := s.rd.ReadString('\n')
		if err != nil {
			return ev, false
		}
		line = strings.TrimSuffix(line, "\n")
		switch {
		case line == "":
			if lines > 0 {
				return ev, true
			}
			continue
		case strings.HasPrefix(line, ":"):
			ev.comment = true
			ev.data = strings.TrimSpace(line[1:])
		case strings.HasPrefix(line, "id: "):
			ev.id = line[4:]
		case strings.HasPrefix(line, "event: "):
			ev.name = line[7:]
		case strings.HasPrefix(line, "data: "):
			ev.data = line[6:]
		case strings.HasPrefix(line, "retry: "):
		default:
			s.t.Fatalf("unexpected stream line %q", line)
		}
		lines++
	}
}

// event returns the next event, skipping comments and the retry hint.
func (s *sse) event() (string, map[string]any) {
	s.t.Helper()
	for {
		ev, ok := s.next()
		if !ok {
			s.t.Fatal("the stream ended; want another event")
		}
		if ev.comment || ev.name == "" {
			continue
		}
		var data map[string]any
		if err := json.Unmarshal([]byte(ev.data), &data); err != nil {
			s.t.Fatalf("event %s: data %q is not JSON: %v", ev.name, ev.data, err)
		}
		if ev.id != "" && fmt.Sprint(data["id"]) != ev.id {
			s.t.Fatalf("event id %s but data id %v", ev.id, data["id"])
		}
		return ev.name, data
	}
}

func (s *sse) wantEvent(name string) map[string]any {
	s.t.Helper()
	got, data := s.event()
	if got != name {
		s.t.Fatalf("event %s %v, want %s", got, data, name)
	}
	return data
}

func (s *sse) wantEnd() {
	s.t.Helper()
	for {
		ev, ok := s.next()
		if !ok {
			return
		}
		if !ev.comment && ev.name != "" {
			s.t.Fatalf("event %s %s after the final one, want the end of the stream", ev.name, ev.data)
		}
	}
}

func TestEventStreamShapes(t *testing.T) {
	s, _ := newStreamServer(t, 10, 100, 0)
	st := s.stream(t, "GET", "/v1/events")
	g := s.acquire(t, "job", "owner=h&ttl=5s")
	token := g["token"].(string)
	if r := s.do(t, "POST", "/v1/locks/job/renew?token="+token+"&ttl=7s", ""); r.status != 200 {
		t.Fatalf("renew: %d %s", r.status, r.raw)
	}
	if r := s.do(t, "POST", "/v1/locks/job/acquire?owner=w&wait=0", ""); r.status != 423 {
		t.Fatalf("try-lock: %d %s", r.status, r.raw)
	}
	waiter := make(chan response, 1)
	go func() { waiter <- s.doCtx(t, t.Context(), "POST", "/v1/locks/job/acquire?owner=w&wait=50ms", "", nil) }()
	if r := s.do(t, "DELETE", "/v1/locks/job", ""); r.status != 200 && r.status != 404 {
		t.Fatalf("force release: %d", r.status)
	}

	granted := st.wantEvent("granted")
	for _, f := range []string{"id", "type", "time", "key", "owner", "fence", "expires_at", "waited_ms", "waiting_since", "from_queue", "on_error", "previous"} {
		if _, ok := granted[f]; !ok {
			t.Fatalf("granted %v lacks %q", granted, f)
		}
	}
	if _, ok := granted["token"]; ok {
		t.Fatal("an event carries a token")
	}
	if !timeRE.MatchString(granted["time"].(string)) || granted["key"] != "job" || granted["owner"] != "h" {
		t.Fatalf("granted = %v", granted)
	}
	renewed := st.wantEvent("renewed")
	if renewed["fence"] != granted["fence"] || renewed["expires_at"] == granted["expires_at"] {
		t.Fatalf("renewed = %v after granted %v", renewed, granted)
	}
	// The waiter may queue before or after the force release.
	name, data := st.event()
	if name == "queued" {
		if data["position"] != 1.0 {
			t.Fatalf("queued = %v, want position 1", data)
		}
		name, data = st.event()
	}
	if name != "forced" || data["outcome"] != "forced" || data["fence"] != granted["fence"] {
		t.Fatalf("event %s %v, want forced of fence %v", name, data, granted["fence"])
	}
	if _, ok := data["held_ms"]; !ok {
		t.Fatalf("forced %v lacks held_ms", data)
	}
	<-waiter
	if strings.Contains(fmt.Sprint(data), token) {
		t.Fatal("an event carries the token")
	}
}

func TestEventStreamOrderAndFilters(t *testing.T) {
	s, _ := newStreamServer(t, 10, 1000, 0)
	all := s.stream(t, "GET", "/v1/events")
	exact := s.stream(t, "GET", "/v1/events?key=a%3A1")
	prefix := s.stream(t, "GET", "/v1/events?prefix=a%3A")
	for _, key := range []string{"a:1", "a:2", "b:1"} {
		g := s.acquire(t, key, "owner=o")
		if r := s.do(t, "POST", "/v1/locks/"+key+"/release?outcome=failed&token="+g["token"].(string), ""); r.status != 200 {
			t.Fatalf("release: %d %s", r.status, r.raw)
		}
	}
	var last float64
	for _, want := range []string{"a:1 granted", "a:1 released", "a:2 granted", "a:2 released", "b:1 granted", "b:1 released"} {
		name, data := all.event()
		if got := fmt.Sprint(data["key"], " ", name); got != want {
			t.Fatalf("all: %s, want %s", got, want)
		}
		if id := data["id"].(float64); id <= last {
			t.Fatalf("id %v after %v, want increasing", id, last)
		} else {
			last = id
		}
		if name == "released" && data["outcome"] != "failed" {
			t.Fatalf("released %v, want outcome failed", data)
		}
	}
	for _, c := range []struct {
		st   *sse
		want []string
	}{
		{exact, []string{"a:1 granted", "a:1 released"}},
		{prefix, []string{"a:1 granted", "a:1 released", "a:2 granted", "a:2 released"}},
	} {
		for _, want := range c.want {
			name, data := c.st.event()
			if got := fmt.Sprint(data["key"], " ", name); got != want {
				t.Fatalf("filtered: %s, want %s", got, want)
			}
		}
	}
	// The exact filter saw nothing of a:2 or b:1: its next event is a:1's.
	s.acquire(t, "a:1", "")
	if _, data := exact.event(); data["key"] != "a:1" {
		t.Fatalf("exact filter delivered %v", data)
	}
}

func TestEventStreamErrors(t *testing.T) {
	s, _ := newStreamServer(t, 1, 10, 0)
	for _, c := range []struct {
		path, code string
		status     int
	}{
		{"/v1/events?key=", "invalid_key", 400},
		{"/v1/events?key=a%01", "invalid_key", 400},
		{"/v1/events?prefix=" + strings.Repeat("p", 257), "invalid_prefix", 400},
		{"/v1/events?from=1", "invalid_parameter", 400},
		{"/v1/events?since=x", "invalid_since", 400},
		{"/v1/events?since=-1", "invalid_since", 400},
		{"/v1/events?since=18446744073709551616", "invalid_since", 400},
	} {
		wantError(t, s.do(t, "GET", c.path, ""), c.status, c.code)
	}
	wantError(t, s.doCtx(t, t.Context(), "GET", "/v1/events?since=0", "", map[string]string{"Last-Event-ID": "1.5"}), 400, "invalid_since")
	st := s.stream(t, "GET", "/v1/events")
	r := s.do(t, "GET", "/v1/events", "")
	wantError(t, r, 429, "too_many_subscribers")
	if r.header.Get("Retry-After") == "" {
		t.Fatal("429 without Retry-After")
	}
	st.close()
	// The closed stream's slot frees once its handler has noticed.
	deadline := time.Now().Add(5 * time.Second)
	for {
		ctx, cancel := context.WithCancel(t.Context())
		req, _ := http.NewRequestWithContext(ctx, "GET", s.url+"/v1/events", nil)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		status := res.StatusCode
		cancel()
		res.Body.Close()
		if status == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("status %d; the closed stream never freed its slot", status)
		}
		<-time.After(10 * time.Millisecond)
	}
}

func TestHeartbeats(t *testing.T) {
	s, _ := newStreamServer(t, 10, 10, 20*time.Millisecond)
	s.acquire(t, "held", "")
	for _, c := range []struct{ method, path string }{
		{"GET", "/v1/events"},
		{"POST", "/v1/locks/held/acquire?wait=1m"}, // a waiter's stream
	} {
		st := s.stream(t, c.method, c.path)
		for {
			ev, ok := st.next()
			if !ok {
				t.Fatalf("%s %s: stream ended before a heartbeat", c.method, c.path)
			}
			if ev.comment && ev.data == "heartbeat" {
				break
			}
		}
		st.close()
	}
}

// TestEventStreamOverflow has a client that reads nothing while the engine
// publishes far more than the socket buffers and the subscriber's buffer
// hold: the engine is never held up, and the client, when it finally
// reads, finds an "overflow" event and the end of the stream.
func TestEventStreamOverflow(t *testing.T) {
	s, hub := newStreamServer(t, 10, 16, 0)
	st := s.stream(t, "GET", "/v1/events")
	ctx := t.Context()
	start := time.Now()
	for i := 0; hub.Subscribers() > 0; i++ {
		if time.Since(start) > 20*time.Second {
			t.Fatal("the stream was never cut off")
		}
		g, err := s.eng.Acquire(ctx, "flood", engine.AcquireOptions{Owner: strings.Repeat("o", 100), TTL: time.Minute})
		if err != nil {
			t.Fatalf("acquire %d: %v (the engine must not be affected)", i, err)
		}
		if _, err := s.eng.Release("flood", g.Token, false); err != nil {
			t.Fatal(err)
		}
	}
	var last sseEvent
	n := 0
	for {
		ev, ok := st.next()
		if !ok {
			break
		}
		if !ev.comment && ev.name != "" {
			last = ev
			n++
		}
	}
	if last.name != "overflow" {
		t.Fatalf("last of %d events = %s %s, want overflow", n, last.name, last.data)
	}
	if n < 17 {
		t.Fatalf("%d events before the overflow, want at least the buffer's 16", n)
	}
	if got := hub.Overflows(); got != 1 {
		t.Fatalf("Overflows() = %d, want 1", got)
	}
}

// acquireResult is the outcome of a long-poll acquire run in a goroutine.
type acquireResult struct {
	token string
	err   error
}

func (s *testServer) longPoll(t *testing.T, key, owner string) <-chan acquireResult {
	out := make(chan acquireResult, 1)
	before := s.eng.Inspect(key, 0).Waiters
	go func() {
		g, err := s.eng.Acquire(t.Context(), key, engine.AcquireOptions{Owner: owner, TTL: time.Minute, Wait: time.Minute})
		out <- acquireResult{g.Token.String(), err}
	}()
	s.waitWaiters(t, key, before+1)
	return out
}

func (s *testServer) waitWaiters(t *testing.T, key string, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for s.eng.Inspect(key, 0).Waiters != n {
		if time.Now().After(deadline) {
			t.Fatalf("waiters on %s = %d, want %d", key, s.eng.Inspect(key, 0).Waiters, n)
		}
		<-time.After(2 * time.Millisecond)
	}
}

func TestStreamingAcquirePositions(t *testing.T) {
	s, _ := newStreamServer(t, 10, 10, 0)
	token := s.acquire(t, "k", "owner=h")["token"].(string)
	first := s.longPoll(t, "k", "w1")
	second := s.longPoll(t, "k", "w2")
	st := s.stream(t, "POST", "/v1/locks/k/acquire?owner=me&wait=1m&ttl=10s")
	if d := st.wantEvent("queued"); d["position"] != 3.0 || d["owner"] != "me" || d["key"] != "k" {
		t.Fatalf("queued %v, want position 3", d)
	}
	for want, next := range []<-chan acquireResult{first, second} {
		if r := s.do(t, "POST", "/v1/locks/k/release?token="+token, ""); r.status != 200 {
			t.Fatalf("release: %d %s", r.status, r.raw)
		}
		r := <-next
		if r.err != nil {
			t.Fatal(r.err)
		}
		token = r.token
		if d := st.wantEvent("queued"); d["position"] != float64(2-want) {
			t.Fatalf("queued %v, want position %d", d, 2-want)
		}
	}
	s.do(t, "POST", "/v1/locks/k/release?token="+token, "")
	g := st.wantEvent("granted")
	if tok, _ := g["token"].(string); len(tok) != 32 || g["owner"] != "me" || g["ttl_ms"] != 10000.0 {
		t.Fatalf("granted %v, want the 200 body of a plain acquire", g)
	}
	if p, _ := g["previous"].(map[string]any); p["outcome"] != "released" {
		t.Fatalf("granted previous = %v", g["previous"])
	}
	st.wantEnd()
	if r := s.do(t, "POST", "/v1/locks/k/release?token="+g["token"].(string), ""); r.status != 200 {
		t.Fatalf("the streamed grant's token does not release: %d %s", r.status, r.raw)
	}
}

func TestStreamingAcquireImmediateAndFinalErrors(t *testing.T) {
	s, _ := newStreamServer(t, 10, 10, 0)
	st := s.stream(t, "POST", "/v1/locks/free/acquire")
	st.wantEvent("granted")
	st.wantEnd()

	st = s.stream(t, "POST", "/v1/locks/free/acquire?wait=0")
	if d := st.wantEvent("timeout"); d["error"] != "timeout" || d["message"] == "" || d["waiters"] != 0.0 {
		t.Fatalf("try-lock on a held key: %v, want the timeout error body", d)
	}
	st.wantEnd()

	st = s.stream(t, "POST", "/v1/locks/free/acquire?wait=1s")
	st.wantEvent("queued")
	if d := st.wantEvent("timeout"); d["error"] != "timeout" {
		t.Fatalf("%v, want timeout", d)
	}
	st.wantEnd()

	stop := s.acquire(t, "stop", "on_error=stop")["token"].(string)
	st = s.stream(t, "POST", "/v1/locks/stop/acquire?wait=1m")
	st.wantEvent("queued")
	s.do(t, "POST", "/v1/locks/stop/release?outcome=failed&token="+stop, "")
	if d := st.wantEvent("aborted"); d["error"] != "aborted" {
		t.Fatalf("%v, want aborted", d)
	}
	st.wantEnd()

	st = s.stream(t, "POST", "/v1/locks/free/acquire?wait=1m")
	st.wantEvent("queued")
	s.eng.Close()
	if d := st.wantEvent("unavailable"); d["error"] != "unavailable" {
		t.Fatalf("%v, want unavailable", d)
	}
	st.wantEnd()

	// Parameters are checked before the stream starts.
	r := s.doCtx(t, t.Context(), "POST", "/v1/locks/k/acquire?ttl=0", "", map[string]string{"Accept": "text/event-stream"})
	wantError(t, r, 400, "invalid_ttl")
}

func TestStreamingAcquireDisconnectLeavesQueue(t *testing.T) {
	s, _ := newStreamServer(t, 10, 10, 0)
	token := s.acquire(t, "k", "owner=h")["token"].(string)
	st := s.stream(t, "POST", "/v1/locks/k/acquire?owner=gone&wait=1m")
	st.wantEvent("queued")
	behind := s.longPoll(t, "k", "next")
	st.close()
	s.waitWaiters(t, "k", 1)
	if q := s.eng.Inspect("k", 10).Queue; len(q) != 1 || q[0].Owner != "next" {
		t.Fatalf("queue = %+v, want only the waiter behind", q)
	}
	s.do(t, "POST", "/v1/locks/k/release?token="+token, "")
	if r := <-behind; r.err != nil {
		t.Fatalf("the waiter behind: %v, want the grant", r.err)
	}
}

// TestEventStreamAuth: the stream of every key (or of a prefix) is a
// listing and needs an admin token; one key's stream needs a client
// token, as inspecting that key does. The console's files are public: it
// asks for a token when the API answers 401.
func TestEventStreamAuth(t *testing.T) {
	toks, err := auth.NewTokens([]string{clientToken}, []string{adminToken})
	if err != nil {
		t.Fatal(err)
	}
	guard := &auth.Guard{}
	guard.Set(toks)
	hub := events.New(10, 0, 10)
	t.Cleanup(hub.Close)
	eng := engine.New(engine.SystemClock{}, hub, engine.Limits{})
	a := api.New(api.Options{Locker: eng, Bounds: bounds, Events: hub, Auth: guard, Logger: testLogger(t), Observer: checkCodes(t),
		UI: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "console") })})
	a.SetReady(true)
	srv := httptest.NewServer(a)
	t.Cleanup(srv.Close)
	t.Cleanup(hub.Close)
	status := func(path, token string) int {
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	for _, tt := range []struct {
		path                string
		none, client, admin int
	}{
		{"/v1/events", 401, 403, 200},
		{"/v1/events?prefix=a", 401, 403, 200},
		{"/v1/events?key=a", 401, 200, 200},
		{"/ui/", 200, 200, 200},
	} {
		for token, want := range map[string]int{"": tt.none, clientToken: tt.client, adminToken: tt.admin} {
			if got := status(tt.path, token); got != want {
				t.Errorf("GET %s with token %q: %d, want %d", tt.path, token, got, want)
			}
		}
	}
}
