package api_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// cycle acquires and releases key n times.
func (s *testServer) cycle(t *testing.T, key string, n int) {
	t.Helper()
	for range n {
		g := s.acquire(t, key, "owner=w")
		if r := s.do(t, "POST", "/v1/locks/"+key+"/release?token="+g["token"].(string), ""); r.status != 200 {
			t.Fatalf("release: %d %s", r.status, r.raw)
		}
	}
}

// TestStatsCountsWhatNobodyWatched: GET /v1/stats reports the events of
// the daemon's life (no stream was open while they happened), the last
// minute's, and the live counts.
func TestStatsCountsWhatNobodyWatched(t *testing.T) {
	s, _ := newStreamServer(t, 10, 100, 0)
	s.cycle(t, "job:1", 40)
	s.acquire(t, "job:2", "owner=holder")
	if r := s.do(t, "DELETE", "/v1/locks/job:2", ""); r.status != 200 {
		t.Fatalf("force-release: %d %s", r.status, r.raw)
	}
	s.acquire(t, "job:3", "owner=holder")
	r := s.do(t, "GET", "/v1/stats", "")
	if r.status != 200 {
		t.Fatalf("GET /v1/stats: %d %s", r.status, r.raw)
	}
	var fields []string
	for k := range r.body {
		fields = append(fields, k)
	}
	slices.Sort(fields)
	if got, want := strings.Join(fields, ","), "held,keys,last_id,last_minute,since,time,totals,waiters,window_ms"; got != want {
		t.Fatalf("fields %s, want %s", got, want)
	}
	for _, f := range []string{"time", "since"} {
		if !timeRE.MatchString(r.body[f].(string)) {
			t.Errorf("%s = %v, want an RFC 3339 time with milliseconds", f, r.body[f])
		}
	}
	want := "map[aborted:0 cancelled:0 expired:0 failed:0 forced:1 granted:42 queued:0 released:40 renewed:0 timeout:0]"
	if got := fmt.Sprint(r.body["totals"]); got != want {
		t.Errorf("totals = %s, want %s", got, want)
	}
	if got := fmt.Sprint(r.body["last_minute"]); got != want {
		t.Errorf("last_minute = %s, want %s (all of it happened just now)", got, want)
	}
	if got := fmt.Sprint(r.body["keys"], " ", r.body["held"], " ", r.body["waiters"], " ", r.body["last_id"]); got != "1 1 0 83" {
		t.Errorf("keys, held, waiters, last_id = %s, want 1 1 0 83", got)
	}
	if w := r.body["window_ms"].(float64); w < 1000 || w > 60000 {
		t.Errorf("window_ms = %v, want 1000..60000", w)
	}
	wantError(t, s.do(t, "GET", "/v1/stats?key=x", ""), 400, "invalid_parameter")
}

// TestEventStreamReplaysHistory: a stream opened with since=0 after an
// expiry and a force-release, with nobody watching when they happened,
// starts with them (marked "replay":true), then a "replayed" event, then
// live events with no repeat; Last-Event-ID replays only what came after
// it; an id from an earlier run of the daemon replays it all.
func TestEventStreamReplaysHistory(t *testing.T) {
	s, _ := newStreamServer(t, 10, 100, 0)
	s.acquire(t, "job:1", "owner=dies&ttl=1s")
	deadline := time.Now().Add(5 * time.Second)
	for s.eng.Inspect("job:1", 0).Held {
		if time.Now().After(deadline) {
			t.Fatal("the 1s lease never expired")
		}
		<-time.After(20 * time.Millisecond)
	}
	g := s.acquire(t, "job:1", "owner=stuck")
	if r := s.do(t, "POST", "/v1/locks/job:1/renew?token="+g["token"].(string), ""); r.status != 200 {
		t.Fatalf("renew: %d %s", r.status, r.raw)
	}
	if r := s.do(t, "DELETE", "/v1/locks/job:1", ""); r.status != 200 {
		t.Fatalf("force-release: %d %s", r.status, r.raw)
	}
	s.cycle(t, "other", 1)

	// events reads the stream up to and including "replayed", as
	// "name owner" and the ids.
	replayed := func(st *sse) (got []string, ids []float64) {
		t.Helper()
		for {
			name, data := st.event()
			if name == "replayed" {
				if n := data["events"].(float64); int(n) != len(got) {
					t.Fatalf("replayed says %v events, %d came", n, len(got))
				}
				return got, ids
			}
			if data["replay"] != true {
				t.Fatalf("%s %v before replayed without \"replay\":true", name, data)
			}
			got = append(got, fmt.Sprint(data["key"], " ", name, " ", data["owner"]))
			ids = append(ids, data["id"].(float64))
		}
	}
	st := s.stream(t, "GET", "/v1/events?key=job:1&since=0")
	got, ids := replayed(st)
	if want := "[job:1 granted dies job:1 expired dies job:1 granted stuck job:1 forced stuck]"; fmt.Sprint(got) != want {
		t.Fatalf("replay of job:1 = %v, want %s (no renewed: history keeps what an operator looks for)", got, want)
	}
	s.acquire(t, "job:1", "owner=next")
	if data := st.wantEvent("granted"); data["owner"] != "next" || data["replay"] != nil {
		t.Fatalf("live event %v, want next's grant without \"replay\"", data)
	}

	all := s.streamWith(t, "GET", "/v1/events?since=0", map[string]string{"Last-Event-ID": fmt.Sprint(ids[1])})
	if got, _ := replayed(all); fmt.Sprint(got) != "[job:1 granted stuck job:1 forced stuck other granted w other released w job:1 granted next]" {
		t.Fatalf("replay after id %v (Last-Event-ID wins over since) = %v", ids[1], got)
	}
	later := s.stream(t, "GET", "/v1/events?prefix=job:&since=100000")
	if got, _ := replayed(later); len(got) != 5 {
		t.Fatalf("replay after an id from an earlier run = %v, want all 5 events of job:1", got)
	}
	none := s.stream(t, "GET", "/v1/events?key=job:1")
	if r := s.do(t, "DELETE", "/v1/locks/job:1", ""); r.status != 200 {
		t.Fatalf("force-release: %d %s", r.status, r.raw)
	}
	if name, data := none.event(); name != "forced" || data["owner"] != "next" {
		t.Fatalf("without since the first event is %s %v, want next's force-release (no replay)", name, data)
	}
}
