package api_test

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mutexd/mutexd/internal/api"
	"github.com/mutexd/mutexd/internal/engine"
	"github.com/mutexd/mutexd/internal/events"
)

// TestMaxRequestsRefuses fills Options.MaxRequests with long polls: the
// next request, whatever its route, is refused at once with a JSON 503
// too_many_requests and Retry-After, and served again once they end.
func TestMaxRequestsRefuses(t *testing.T) {
	eng := engine.New(engine.SystemClock{}, nil, engine.Limits{})
	a := api.New(api.Options{Locker: eng, Bounds: bounds, Logger: testLogger(t), MaxRequests: 2, Observer: checkCodes(t)})
	a.SetReady(true)
	srv := httptest.NewServer(a)
	t.Cleanup(srv.Close)
	ts := &testServer{url: srv.URL, eng: eng, api: a}
	if r := ts.do(t, "POST", "/v1/locks/k/acquire?ttl=1m", ""); r.status != 200 {
		t.Fatalf("holder: %d %s", r.status, r.raw)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	for range 2 {
		wg.Go(func() {
			req, _ := http.NewRequestWithContext(ctx, "POST", srv.URL+"/v1/locks/k/acquire?wait=1m", nil)
			if resp, err := http.DefaultClient.Do(req); err == nil {
				resp.Body.Close()
			}
		})
	}
	deadline := time.Now().Add(20 * time.Second)
	for eng.Stats().Waiters < 2 {
		if time.Now().After(deadline) {
			t.Fatal("the two long polls never queued")
		}
		time.Sleep(5 * time.Millisecond)
	}
	start := time.Now()
	r := ts.do(t, "GET", "/healthz", "")
	if r.status != 503 || r.body["error"] != "too_many_requests" || r.header.Get("Retry-After") != "1" {
		t.Fatalf("a request past max_requests: %d %s (Retry-After %q), want 503 too_many_requests with Retry-After: 1",
			r.status, r.raw, r.header.Get("Retry-After"))
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Fatalf("refused after %s, want at once", el)
	}
	cancel()
	wg.Wait()
	// The handlers end a moment after their clients gave up.
	for r := ts.do(t, "GET", "/healthz", ""); r.status != 200; r = ts.do(t, "GET", "/healthz", "") {
		if r.status != 503 || time.Now().After(deadline) {
			t.Fatalf("healthz once the long polls ended: %d %s", r.status, r.raw)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestStreamsOutliveWriteTimeout keeps an event stream open for many
// times Options.WriteTimeout, over HTTP/1.1 and HTTP/2: the timeout bounds
// each write, not the stream, so heartbeats and events keep flowing.
func TestStreamsOutliveWriteTimeout(t *testing.T) {
	for _, h2 := range []bool{false, true} {
		name := "http1"
		if h2 {
			name = "http2"
		}
		t.Run(name, func(t *testing.T) {
			const writeTimeout = 50 * time.Millisecond
			hub := events.New(4, 0, 16)
			eng := engine.New(engine.SystemClock{}, hub, engine.Limits{})
			a := api.New(api.Options{Locker: eng, Bounds: bounds, Events: hub, Heartbeat: writeTimeout / 3,
				WriteTimeout: writeTimeout, Logger: testLogger(t), Observer: checkCodes(t)})
			a.SetReady(true)
			srv := httptest.NewUnstartedServer(a)
			if h2 {
				srv.EnableHTTP2 = true
				srv.StartTLS()
			} else {
				srv.Start()
			}
			t.Cleanup(srv.Close)
			t.Cleanup(hub.Close)
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+"/v1/events", nil)
			req.Header.Set("Accept", "text/event-stream")
			res, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			if res.StatusCode != 200 || (res.ProtoMajor == 2) != h2 {
				t.Fatalf("event stream: %d over %s", res.StatusCode, res.Proto)
			}
			rd := bufio.NewReader(res.Body)
			start := time.Now()
			beats := 0
			for time.Since(start) < 6*writeTimeout {
				line, err := rd.ReadString('\n')
				if err != nil {
					t.Fatalf("stream ended after %s and %d heartbeats: %v", time.Since(start), beats, err)
				}
				if strings.HasPrefix(line, ": heartbeat") {
					beats++
				}
			}
			// An event still arrives.
			if _, err := eng.Acquire(t.Context(), "k", engine.AcquireOptions{TTL: time.Minute}); err != nil {
				t.Fatal(err)
			}
			for {
				line, err := rd.ReadString('\n')
				if err != nil {
					t.Fatalf("stream ended before the granted event: %v", err)
				}
				if data, ok := strings.CutPrefix(line, "data: "); ok && strings.Contains(data, `"granted"`) {
					var ev map[string]any
					if err := json.Unmarshal([]byte(data), &ev); err != nil || ev["key"] != "k" {
						t.Fatalf("granted event %q: %v", data, err)
					}
					break
				}
			}
			if beats < 3 {
				t.Fatalf("%d heartbeats in %s, want several", beats, 6*writeTimeout)
			}
		})
	}
}
