package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mutexd/mutexd/client"
	"github.com/mutexd/mutexd/internal/servertest"
)

// deadURL returns the URL of a port nothing listens on: connections to it
// are refused.
func deadURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return "http://" + addr
}

// hangUp closes the connection of the request w answers, without an
// answer.
func hangUp(w http.ResponseWriter) {
	if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
		conn.Close()
	}
}

// recorder is a fake server that records the request ids of the acquires
// it gets.
type recorder struct {
	mu  sync.Mutex // guards the following
	ids []string
	all []string // every request's path
}

func (r *recorder) seen() ([]string, []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.ids...), append([]string(nil), r.all...)
}

// serve returns a fake server that records each request and then hands it
// to answer.
func (r *recorder) serve(t *testing.T, answer func(w http.ResponseWriter, req *http.Request, b acquireBody)) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		var b acquireBody
		if strings.HasSuffix(req.URL.Path, "/acquire") {
			json.NewDecoder(req.Body).Decode(&b)
		}
		r.mu.Lock()
		r.all = append(r.all, req.Method+" "+req.URL.Path)
		if b.RequestID != "" {
			r.ids = append(r.ids, b.RequestID)
		}
		r.mu.Unlock()
		answer(w, req, b)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// grantFor answers an acquire with a grant that echoes its request id.
func grantFor(w http.ResponseWriter, b acquireBody) {
	fmt.Fprint(w, strings.Replace(grantBody, `"previous":null`, `"previous":null,"limit":1,"request_id":"`+b.RequestID+`"`, 1))
}

// TestAcquireFailsOverWithTheSameRequestID: an acquire that the first
// server cannot answer (it is dead, answers 502, 503 or 504, or cuts the
// connection) lands on the second with the request id the first saw, and
// the client then starts with the second server.
func TestAcquireFailsOverWithTheSameRequestID(t *testing.T) {
	status := func(code int) func(w http.ResponseWriter, _ *http.Request, _ acquireBody) {
		return func(w http.ResponseWriter, _ *http.Request, _ acquireBody) {
			w.WriteHeader(code)
			fmt.Fprint(w, `{"error":"unavailable","message":"No leader."}`)
		}
	}
	for _, tc := range []struct {
		name   string
		first  func(w http.ResponseWriter, r *http.Request, b acquireBody) // nil: dead
		wantID bool                                                        // the first server saw the acquire
	}{
		{"dead", nil, false},
		{"503", status(http.StatusServiceUnavailable), true},
		{"502", status(http.StatusBadGateway), true},
		{"504", status(http.StatusGatewayTimeout), true},
		{"cut", func(w http.ResponseWriter, _ *http.Request, _ acquireBody) { hangUp(w) }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var a, b recorder
			first := deadURL(t)
			if tc.first != nil {
				first = a.serve(t, tc.first).URL
			}
			second := b.serve(t, func(w http.ResponseWriter, _ *http.Request, body acquireBody) {
				if body.RequestID != "" {
					grantFor(w, body)
					return
				}
				fmt.Fprint(w, `{"key":"k","held":false,"waiters":0}`)
			}).URL
			c, err := client.New(first+","+second, fastRetry)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			l, err := c.Acquire(ctx, "k", client.Wait(5*time.Second))
			if err != nil {
				t.Fatalf("Acquire = %v, want the second server's grant", err)
			}
			aIDs, _ := a.seen()
			bIDs, _ := b.seen()
			if len(bIDs) != 1 || l.RequestID != bIDs[0] || l.Fence != 7 {
				t.Fatalf("second server saw ids %q, lease %+v; want one acquire, answered", bIDs, l)
			}
			if tc.wantID && (len(aIDs) != 1 || aIDs[0] != bIDs[0]) {
				t.Errorf("request ids: first server %q, second %q; want the same one on both", aIDs, bIDs)
			}
			if c.BaseURL() != second {
				t.Errorf("BaseURL() = %s after the failover, want the second server %s", c.BaseURL(), second)
			}
			// The next call starts with the server that answered.
			if _, err := c.Inspect(ctx, "k"); err != nil {
				t.Fatal(err)
			}
			_, aAll := a.seen()
			if len(aAll) > 1 {
				t.Errorf("the first server got %q, want no call after the failover", aAll)
			}
		})
	}
}

// TestCutLongPollIsResentToTheNextServer: a waiting acquire whose first
// server closes the connection mid-wait (a node going down) is sent to the
// second with the same request id and the wait shortened by the time it
// already waited.
func TestCutLongPollIsResentToTheNextServer(t *testing.T) {
	waiting := make(chan struct{})
	cutNow := make(chan struct{})
	var a, b recorder
	first := a.serve(t, func(w http.ResponseWriter, r *http.Request, _ acquireBody) {
		close(waiting)
		select {
		case <-cutNow:
		case <-r.Context().Done():
			return
		}
		hangUp(w)
	})
	var secondWait atomic.Value
	second := b.serve(t, func(w http.ResponseWriter, _ *http.Request, body acquireBody) {
		secondWait.Store(body.Wait)
		grantFor(w, body)
	})
	c, err := client.New(first.URL+","+second.URL, fastRetry)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	got := make(chan error, 1)
	go func() {
		_, err := c.Acquire(ctx, "k", client.Wait(5*time.Second))
		got <- err
	}()
	select {
	case <-waiting:
	case <-ctx.Done():
		t.Fatal("the acquire never reached the first server")
	}
	time.Sleep(50 * time.Millisecond) // time that counts against the wait
	close(cutNow)
	if err := <-got; err != nil {
		t.Fatalf("Acquire after its long poll was cut = %v, want the second server's grant", err)
	}
	aIDs, _ := a.seen()
	bIDs, _ := b.seen()
	if len(aIDs) != 1 || len(bIDs) != 1 || aIDs[0] != bIDs[0] {
		t.Errorf("request ids: first server %q, second %q; want one each, the same", aIDs, bIDs)
	}
	w, _ := secondWait.Load().(string)
	if d, err := time.ParseDuration(w); err != nil || d > 4950*time.Millisecond || d < time.Second {
		t.Errorf("the re-sent acquire waits %q, want 5s less the 50ms and more already spent", w)
	}
}

// frontEnd is a proxy in front of a real server standing for one node of
// a cluster: it forwards, answers 503, or forwards and then cuts the
// connection before the answer (the server acted, the answer is lost).
type frontEnd struct {
	*httptest.Server
	mode atomic.Value // "forward", "503" or "cut-once"
	hits atomic.Int64
}

func newFrontEnd(t *testing.T, s *servertest.Server) *frontEnd {
	f := &frontEnd{}
	f.mode.Store("forward")
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.hits.Add(1)
		mode := f.mode.Load().(string)
		if mode == "503" {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprint(w, `{"error":"unavailable","message":"No leader."}`)
			return
		}
		req, err := http.NewRequestWithContext(r.Context(), r.Method, s.URL+r.URL.RequestURI(), r.Body)
		if err != nil {
			t.Error(err)
			return
		}
		req.Header = r.Header.Clone()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Error(err)
			return
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if mode == "cut-once" && f.mode.CompareAndSwap("cut-once", "forward") {
			hangUp(w)
			return
		}
		w.Header().Set("Content-Type", resp.Header.Get("Content-Type"))
		w.WriteHeader(resp.StatusCode)
		w.Write(body)
	}))
	t.Cleanup(f.Close)
	return f
}

// TestRenewAndReleaseFailOver: renewals and releases go to the next server
// when one answers 503, is cut off, or dies; a release whose answer was
// lost after it took effect still succeeds.
func TestRenewAndReleaseFailOver(t *testing.T) {
	s := servertest.Start(t)
	p1, p2 := newFrontEnd(t, s), newFrontEnd(t, s)
	c, err := client.New(p1.URL+","+p2.URL, fastRetry)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()

	l, err := c.Acquire(ctx, "k", client.TTL(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if c.BaseURL() != p1.URL {
		t.Fatalf("BaseURL() = %s, want the first server", c.BaseURL())
	}
	// A renewal refused with 503 by the first server lands on the second.
	p1.mode.Store("503")
	if err := l.Renew(ctx, 20*time.Second); err != nil {
		t.Fatalf("Renew while the first server answers 503 = %v", err)
	}
	if l.TTL() != 20*time.Second || c.BaseURL() != p2.URL {
		t.Errorf("after the renewal: TTL %s, BaseURL %s; want 20s through the second server", l.TTL(), c.BaseURL())
	}
	// A renewal cut after it took effect is sent again to the next server.
	p1.mode.Store("forward")
	p2.mode.Store("cut-once")
	if err := l.Renew(ctx, 30*time.Second); err != nil {
		t.Fatalf("Renew cut by the second server = %v", err)
	}
	if l.TTL() != 30*time.Second || c.BaseURL() != p1.URL {
		t.Errorf("after the cut renewal: TTL %s, BaseURL %s; want 30s through the first server", l.TTL(), c.BaseURL())
	}
	// A release that took effect but whose answer was lost: the re-sent
	// one is refused as not_holder, and the client recognizes its own
	// release in how the server says the lease ended.
	p1.mode.Store("cut-once")
	if err := l.Release(ctx); err != nil {
		t.Fatalf("Release whose answer was lost = %v, want it done", err)
	}
	if s.Held("k") || l.Err() != nil {
		t.Errorf("after the release: held %v, lease error %v; want free and not lost", s.Held("k"), l.Err())
	}

	// The re-sent release was answered by the second server, so the
	// client now starts there; when it dies, the release lands on the
	// first.
	l, err = c.Acquire(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	if c.BaseURL() != p2.URL {
		t.Fatalf("BaseURL() = %s, want the second server, which answered last", c.BaseURL())
	}
	p2.Close()
	if err := l.Release(ctx); err != nil {
		t.Fatalf("Release with the second server dead = %v", err)
	}
	if s.Held("k") || c.BaseURL() != p1.URL {
		t.Errorf("after the release: held %v, BaseURL %s; want free, through the first server", s.Held("k"), c.BaseURL())
	}
}

// TestAllServersDown: with every server refusing connections the call
// fails within the caller's deadline, with an error naming every server;
// with the retries exhausted first, as soon as they are.
func TestAllServersDown(t *testing.T) {
	a, b := deadURL(t), deadURL(t)
	c, err := client.New(a+","+b, client.WithRetry(client.RetryPolicy{MaxAttempts: 1 << 20, MinBackoff: time.Millisecond, MaxBackoff: 20 * time.Millisecond}))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = c.Acquire(ctx, "k", client.Wait(time.Minute))
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("Acquire took %s with a 300ms deadline", took)
	}
	if !errors.Is(err, client.ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), a) || !strings.Contains(err.Error(), b) {
		t.Errorf("Acquire with every server down = %v, want ErrUnavailable and the deadline, naming %s and %s", err, a, b)
	}

	// Every server answers 503: MaxAttempts rounds of one try each.
	var n atomic.Int64
	unavailable := func(w http.ResponseWriter, _ *http.Request) {
		n.Add(1)
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprint(w, `{"error":"unavailable","message":"No leader."}`)
	}
	s1 := httptest.NewServer(http.HandlerFunc(unavailable))
	defer s1.Close()
	s2 := httptest.NewServer(http.HandlerFunc(unavailable))
	defer s2.Close()
	c, err = client.New(s1.URL+","+s2.URL, fastRetry)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Acquire(t.Context(), "k")
	if !errors.Is(err, client.ErrUnavailable) || n.Load() != 8 || !strings.Contains(err.Error(), "no server answered") {
		t.Errorf("Acquire with every server at 503 = %v after %d tries, want ErrUnavailable saying no server answered after 4 rounds of 2", err, n.Load())
	}
}

// TestNeverResendsAnUnidentifiedCallToAnotherServer: an acquire without a
// request id, or an admin call, that reached a server whose answer was lost
// is not sent to the next one: it may have taken effect.
func TestNeverResendsAnUnidentifiedCallToAnotherServer(t *testing.T) {
	var a, b recorder
	first := a.serve(t, func(w http.ResponseWriter, _ *http.Request, _ acquireBody) { hangUp(w) })
	second := b.serve(t, func(w http.ResponseWriter, _ *http.Request, body acquireBody) { grantFor(w, body) })
	c, err := client.New(first.URL+","+second.URL, fastRetry, client.WithoutRequestIDs())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Acquire(t.Context(), "k"); err == nil {
		t.Error("Acquire without a request id over a cut connection succeeded")
	}
	if _, err := c.Drain(t.Context(), "k", ""); err == nil {
		t.Error("Drain over a cut connection succeeded")
	}
	if _, all := b.seen(); len(all) != 0 {
		t.Errorf("the second server got %q, want nothing", all)
	}
}

func TestNewTakesAListOfServers(t *testing.T) {
	c, err := client.New(" http://127.0.0.1:7070/ , https://user:pw@locks.example.com/prefix")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(c.Servers(), ","); got != "http://127.0.0.1:7070,https://user:pw@locks.example.com/prefix" {
		t.Errorf("Servers() = %s", got)
	}
	if c.BaseURL() != "http://127.0.0.1:7070" {
		t.Errorf("BaseURL() = %s, want the first server", c.BaseURL())
	}
	for _, tc := range []struct{ list, want string }{
		{"http://a:1,ftp://b", `"ftp://b"`},
		{"http://a:1,,http://b:2", "empty server URL"},
		{"http://a:1,", "empty server URL"},
		{"http://a:1,http://[::1", `"http://[::1"`},
		{"http://a:1,http://a:1/", "listed twice"},
		{"http://a:1,http://u:secret@b:2/?q=1", `"http://u:xxxxx@b:2/?q=1"`},
	} {
		_, err := client.New(tc.list)
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "secret") || strings.Contains(err.Error(), "\n") {
			t.Errorf("New(%q) = %v, want one line with %s", tc.list, err, tc.want)
		}
	}
}
