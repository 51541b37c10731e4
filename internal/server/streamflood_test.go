package server_test

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestStreamingWaitersFlood queues 10,000 streaming acquires (Accept:
// text/event-stream, each told its place in line) on one held key, lets
// them all time out, and checks that every timeout is answered on time and
// that /metrics and an inspection of the key answer promptly meanwhile.
// Reporting every move to every waiter once cost O(n²) under the key's
// shard lock: 52 s of CPU for 10,000, timeouts answered ~30 s late and
// scrapes stalled. Under the race detector it runs with 2,000.
func TestStreamingWaitersFlood(t *testing.T) {
	// The time bounds are loose enough for a loaded 2-core machine, and
	// looser under the race detector, which slows everything ~10x; the old
	// O(n²) reporting missed them by tens of seconds.
	n, slack := 10_000, 3*time.Second
	if raceEnabled {
		n, slack = 2_000, 15*time.Second
	}
	if testing.Short() {
		n = 500
	}
	// Long enough for every waiter to be queued before the first times out
	// (10,000 streams open at 100 a connection).
	const wait = 20 * time.Second
	cfg := testConfig()
	cfg.Limits.MaxWaitersPerKey = n
	cfg.Limits.MaxWaiters = n
	d := startDaemon(t, cfg)
	eng := d.srv.Engine()
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true)
	// 100 streams a connection: 10,000 waits need 100 connections. Bounded,
	// so that requests sent before a connection is up do not each dial one
	// (the file-descriptor limit is not what is tested).
	tr := &http.Transport{Protocols: &protos, MaxConnsPerHost: 128}
	client := &http.Client{Transport: tr}
	defer tr.CloseIdleConnections()

	if code, _, body := call(t, client, "POST", d.url+"/v1/locks/sf/acquire?ttl=1h", ""); code != 200 {
		t.Fatalf("holder: %d %v", code, body)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	var late, bad atomic.Int64
	var worst atomic.Int64 // latest answer past its wait, in ns
	var firstBad atomic.Value
	for range n {
		wg.Go(func() {
			req, _ := http.NewRequestWithContext(ctx, "POST", d.url+"/v1/locks/sf/acquire?wait=20s", nil)
			req.Header.Set("Accept", "text/event-stream")
			resp, err := client.Do(req)
			if err != nil {
				bad.Add(1)
				firstBad.CompareAndSwap(nil, err.Error())
				return
			}
			defer resp.Body.Close()
			var queuedAt time.Time
			sc := bufio.NewScanner(resp.Body)
			for sc.Scan() {
				ev, ok := strings.CutPrefix(sc.Text(), "event: ")
				if !ok {
					continue
				}
				if ev == "queued" {
					if queuedAt.IsZero() {
						queuedAt = time.Now()
					}
					continue
				}
				if ev != "timeout" || queuedAt.IsZero() {
					bad.Add(1)
					firstBad.CompareAndSwap(nil, "final event "+ev)
					return
				}
				over := time.Since(queuedAt) - wait
				for {
					w := worst.Load()
					if int64(over) <= w || worst.CompareAndSwap(w, int64(over)) {
						break
					}
				}
				if over > slack {
					late.Add(1)
				}
				return
			}
			bad.Add(1)
			firstBad.CompareAndSwap(nil, "stream ended without a final event")
		})
	}
	eventually(t, 2*time.Minute, "waiters queued", func() bool { return eng.Stats().Waiters >= n*3/4 })

	// While the queue drains: a scrape and an inspection of the same key
	// (so the same shard) must not wait on it.
	var slowest time.Duration
	for eng.Stats().Waiters > 0 && ctx.Err() == nil {
		for _, path := range []string{"/metrics", "/v1/locks/sf"} {
			start := time.Now()
			req, _ := http.NewRequestWithContext(ctx, "GET", d.url+path, nil)
			resp, err := client.Do(req)
			if err != nil {
				t.Fatalf("GET %s while draining: %v", path, err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("GET %s while draining: %d", path, resp.StatusCode)
			}
			slowest = max(slowest, time.Since(start))
		}
		time.Sleep(50 * time.Millisecond)
	}
	wg.Wait()
	if b := bad.Load(); b > 0 {
		t.Fatalf("%d of %d streaming waiters did not end with a timeout; first: %v", b, n, firstBad.Load())
	}
	if l := late.Load(); l > 0 {
		t.Errorf("%d of %d timeouts answered more than %s late (latest %s past its wait)", l, n, slack, time.Duration(worst.Load()))
	}
	if slowest > slack {
		t.Errorf("slowest scrape or inspection while draining: %s, want under %s", slowest, slack)
	}
	if err := eng.Check(); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d streaming waiters: latest timeout %s past its wait; slowest scrape/inspection while draining %s",
		n, time.Duration(worst.Load()).Round(time.Millisecond), slowest.Round(time.Millisecond))
}
