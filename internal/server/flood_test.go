package server_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestFloodOfWaiters queues 20,000 waiters on one key through the HTTP API
// (over cleartext HTTP/2, 100 waits a connection, so the file-descriptor
// limit is not what is tested), checks that the next one is refused with
// 429 and Retry-After, cancels them all, and checks that the daemon is
// left with no waiters, no keys and its goroutine count back near the
// baseline. Under the race detector (which caps live goroutines at 8128)
// it floods with 2,500; CI runs it both ways.
func TestFloodOfWaiters(t *testing.T) {
	n := 20_000
	if raceEnabled {
		n = 2_500
	}
	if testing.Short() {
		n = 1_000
	}
	cfg := testConfig()
	cfg.Limits.MaxWaitersPerKey = n
	cfg.Limits.MaxWaiters = n
	cfg.Lock.MaxWait = time.Hour
	d := startDaemon(t, cfg)
	eng := d.srv.Engine()
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true)
	// One dial at a time, so concurrent requests share connections (up to
	// their stream limit) instead of each dialing its own.
	tr := &http.Transport{Protocols: &protos, MaxConnsPerHost: 1}
	client := &http.Client{Transport: tr}

	code, _, holder := call(t, client, "POST", d.url+"/v1/locks/flood/acquire?ttl=1h", "")
	if code != 200 {
		t.Fatalf("holder: %d %v", code, holder)
	}
	tr.CloseIdleConnections()
	baseline := runtime.NumGoroutine()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	var unexpected atomic.Int64
	var firstErr atomic.Value
	start := time.Now()
	for range n {
		wg.Go(func() {
			req, _ := http.NewRequestWithContext(ctx, "POST", d.url+"/v1/locks/flood/acquire?wait=1h", nil)
			resp, err := client.Do(req)
			if err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				err = errors.New(resp.Status)
			}
			if !errors.Is(err, context.Canceled) {
				unexpected.Add(1)
				firstErr.CompareAndSwap(nil, err)
			}
		})
	}
	eventually(t, 2*time.Minute, "all waiters queued", func() bool {
		return eng.Stats().Waiters == n || unexpected.Load() > 0
	})
	if unexpected.Load() > 0 {
		t.Fatalf("%d waiters got an answer while queued; first: %v", unexpected.Load(), firstErr.Load())
	}
	queued := time.Since(start)
	peak := runtime.NumGoroutine()

	// One more is refused, not queued.
	code, h, body := call(t, client, "POST", d.url+"/v1/locks/flood/acquire?wait=1h", "")
	if code != 429 || body["error"] != "too_many_waiters" || h.Get("Retry-After") == "" {
		t.Fatalf("waiter %d: %d %v (Retry-After %q), want 429 too_many_waiters with Retry-After", n+1, code, body, h.Get("Retry-After"))
	}

	cancel()
	wg.Wait()
	eventually(t, time.Minute, "every cancelled waiter leaves the queue", func() bool { return eng.Stats().Waiters == 0 })
	if code, _, _ := call(t, client, "POST", d.url+"/v1/locks/flood/release?token="+holder["token"].(string), ""); code != 200 {
		t.Fatalf("release: %d", code)
	}
	if st := eng.Stats(); st.Keys != 0 || st.Held != 0 || st.Waiters != 0 {
		t.Fatalf("after the flood: %+v, want all zero", st)
	}
	if err := eng.Check(); err != nil {
		t.Fatal(err)
	}
	tr.CloseIdleConnections()
	const slack = 20
	eventually(t, 30*time.Second, "goroutines back near the baseline", func() bool {
		return runtime.NumGoroutine() <= baseline+slack
	})
	t.Logf("flood: %d waiters queued in %s; goroutines %d at baseline, %d at peak, %d after",
		n, queued.Round(time.Millisecond), baseline, peak, runtime.NumGoroutine())
}
