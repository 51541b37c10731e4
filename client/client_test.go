package client_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mutexd/mutexd/client"
	"github.com/mutexd/mutexd/internal/config"
	"github.com/mutexd/mutexd/internal/servertest"
)

// newClient returns a client of s.
func newClient(t *testing.T, s *servertest.Server, opts ...client.Option) *client.Client {
	t.Helper()
	c, err := client.New(s.URL, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestNewRejectsBadURLs(t *testing.T) {
	for _, u := range []string{"", "127.0.0.1:7070", "ftp://h", "http://", "http://h/?a=1", "http://h/#x", "http://[::1"} {
		if _, err := client.New(u); err == nil {
			t.Errorf("New(%q) = nil error, want one", u)
		}
	}
	for _, u := range []string{"http://127.0.0.1:7070", "https://locks.example.com/", "http://h:1/prefix"} {
		if _, err := client.New(u); err != nil {
			t.Errorf("New(%q) = %v", u, err)
		}
	}
	if _, err := client.New("http://h", client.WithRetry(client.RetryPolicy{})); err == nil {
		t.Error("WithRetry(zero policy) accepted")
	}
	if _, err := client.New("http://h", client.WithToken("a\nb")); err == nil {
		t.Error("WithToken with a line break accepted")
	}
}

func TestAcquireRelease(t *testing.T) {
	t.Parallel()
	s := servertest.Start(t)
	c := newClient(t, s, client.WithOwner("worker-1"))
	ctx := t.Context()

	l, err := c.Acquire(ctx, "invoice/42", client.TTL(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if l.Key != "invoice/42" || l.Owner != "worker-1" || len(l.Token) != 32 || l.Fence == 0 || l.Previous != nil || l.TTL() != 5*time.Second {
		t.Errorf("lease = %+v, ttl %s", l, l.TTL())
	}
	if d := time.Until(l.ExpiresAt()); d < 3*time.Second || d > 6*time.Second {
		t.Errorf("ExpiresAt in %s, want about 5s", d)
	}
	st, err := c.Inspect(ctx, "invoice/42")
	if err != nil {
		t.Fatal(err)
	}
	if !st.Held || st.Holder == nil || st.Holder.Owner != "worker-1" || st.Holder.Fence != l.Fence {
		t.Errorf("Inspect = %+v, want held by worker-1 with fence %d", st, l.Fence)
	}
	// A waiter queued behind the lease is told how it ended.
	next := make(chan *client.Lease, 1)
	go func() {
		l2, err := c.Acquire(ctx, "invoice/42", client.Owner("worker-2"), client.Wait(10*time.Second))
		if err != nil {
			t.Error(err)
		}
		next <- l2
	}()
	servertest.Eventually(t, "the waiter is queued", func() bool { return s.Waiters("invoice/42") == 1 })
	if err := l.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if err := l.Release(ctx); !errors.Is(err, client.ErrNotHolder) {
		t.Errorf("second Release = %v, want ErrNotHolder", err)
	}
	l2 := <-next
	if l2 == nil {
		t.FailNow()
	}
	defer l2.Release(ctx)
	if l2.Owner != "worker-2" || l2.Fence <= l.Fence || l2.Previous == nil || l2.Previous.Fence != l.Fence || l2.Previous.Outcome != "released" {
		t.Errorf("second lease = %+v (previous %+v), want owner worker-2, a higher fence, previous released %d", l2, l2.Previous, l.Fence)
	}
}

func TestTryLockOnHeldKey(t *testing.T) {
	s := servertest.Start(t)
	c := newClient(t, s)
	l, err := c.Acquire(t.Context(), "k")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release(t.Context())
	_, err = c.Acquire(t.Context(), "k", client.Wait(0))
	var ae *client.APIError
	if !errors.Is(err, client.ErrTimeout) || !errors.As(err, &ae) || ae.Status != http.StatusLocked || ae.Code != "timeout" {
		t.Fatalf("try-lock on a held key = %v, want ErrTimeout from a 423", err)
	}
	if errors.Is(err, client.ErrNotHolder) || errors.Is(err, client.ErrUnavailable) {
		t.Errorf("%v matches unrelated sentinels", err)
	}

	ran := false
	err = c.Do(t.Context(), "k", func(context.Context, *client.Lease) error { ran = true; return nil }, client.Wait(0))
	if ran || !errors.Is(err, client.ErrTimeout) {
		t.Errorf("Do on a held key: ran %v, err %v; want not run, ErrTimeout", ran, err)
	}
}

func TestCancelWhileWaitingLeavesTheQueue(t *testing.T) {
	t.Parallel()
	s := servertest.Start(t)
	c := newClient(t, s)
	ctx := t.Context()
	holder, err := c.Acquire(ctx, "k", client.TTL(30*time.Second))
	if err != nil {
		t.Fatal(err)
	}

	wctx, cancel := context.WithCancel(ctx)
	got := make(chan error, 1)
	go func() {
		_, err := c.Acquire(wctx, "k", client.Wait(time.Minute), client.Owner("quitter"))
		got <- err
	}()
	servertest.Eventually(t, "the waiter is queued", func() bool { return s.Waiters("k") == 1 })
	cancel()
	select {
	case err := <-got:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("cancelled Acquire = %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Acquire did not return after its context was cancelled")
	}
	servertest.Eventually(t, "the waiter leaves the queue", func() bool { return s.Waiters("k") == 0 })

	// The quitter must not hold the lock once the holder lets go.
	if err := holder.Release(ctx); err != nil {
		t.Fatal(err)
	}
	next, err := c.Acquire(ctx, "k", client.Wait(0))
	if err != nil {
		t.Fatalf("acquire after the holder released and the waiter left: %v", err)
	}
	next.Release(ctx)
}

// keptLease starts a server and acquires "k" for ttl with KeepAlive on.
func keptLease(t *testing.T, ttl time.Duration) (*servertest.Server, *client.Client, *client.Lease) {
	t.Helper()
	s := servertest.Start(t)
	c := newClient(t, s)
	l, err := c.Acquire(t.Context(), "k", client.TTL(ttl))
	if err != nil {
		t.Fatal(err)
	}
	l.KeepAlive(t.Context())
	return s, c, l
}

// TestKeepAliveKeepsAShortLeaseAlive and TestLostWhenServerStops do not run
// in parallel: a 1 s lease tolerates a stall of only about 0.6 s, and the
// package's stress tests (hundreds of goroutines under -race, sharing this
// process's scheduler and GC) caused such stalls on a loaded 2-core
// machine. Run alone, they measure KeepAlive, not the neighbours.
func TestKeepAliveKeepsAShortLeaseAlive(t *testing.T) {
	_, c, l := keptLease(t, time.Second)
	ctx := t.Context()
	l.KeepAlive(ctx) // a second call does nothing
	select {
	case <-l.Lost():
		t.Fatalf("lease lost while kept alive: %v", l.Err())
	case <-time.After(3500 * time.Millisecond): // three and a half TTLs
	}
	st, err := c.Inspect(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	if st.Holder == nil || st.Holder.Fence != l.Fence {
		t.Fatalf("after 3.5 TTLs the key is %+v, want still held with fence %d", st, l.Fence)
	}
	if l.Err() != nil {
		t.Errorf("Err() = %v on a live lease", l.Err())
	}
	if err := l.Release(ctx); err != nil {
		t.Fatalf("Release after KeepAlive: %v", err)
	}
	select {
	case <-l.Lost():
		t.Error("Lost closed by a release")
	default:
	}
}

func TestLostWhenForceReleased(t *testing.T) {
	t.Parallel()
	s, _, l := keptLease(t, 3*time.Second)
	ctx := t.Context()
	req, _ := http.NewRequestWithContext(ctx, http.MethodDelete, s.URL+"/v1/locks/k", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("force-release: %s", resp.Status)
	}
	select {
	case <-l.Lost():
	case <-time.After(10 * time.Second):
		t.Fatal("Lost did not close after a force-release")
	}
	if err := l.Err(); !errors.Is(err, client.ErrLeaseLost) || !errors.Is(err, client.ErrNotHolder) {
		t.Errorf("Err() = %v, want ErrLeaseLost wrapping ErrNotHolder", err)
	}
}

func TestLostWhenServerStops(t *testing.T) { // not parallel: see above
	s, _, l := keptLease(t, time.Second)
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	select {
	case <-l.Lost():
	case <-time.After(10 * time.Second):
		t.Fatal("Lost did not close after the server stopped")
	}
	// The lease is declared lost a margin before the server could have
	// expired it: at most one TTL after the last renewal (checked here
	// with slack for a loaded machine).
	if d := time.Since(stopped); d > 3*time.Second {
		t.Errorf("Lost closed %s after the server stopped, want within about one TTL (1s)", d)
	}
	if err := l.Err(); !errors.Is(err, client.ErrLeaseLost) || !strings.Contains(err.Error(), "deadline") {
		t.Errorf("Err() = %v, want ErrLeaseLost about the deadline", err)
	}
}

func TestDo(t *testing.T) {
	t.Parallel()
	s := servertest.Start(t)
	c := newClient(t, s)
	ctx := t.Context()
	boom := errors.New("boom")
	tests := []struct {
		name        string
		fn          func(context.Context, *client.Lease) error
		wantErr     error
		wantPanic   bool
		wantOutcome string
	}{
		{"ok", func(context.Context, *client.Lease) error { return nil }, nil, false, "released"},
		{"error", func(context.Context, *client.Lease) error { return boom }, boom, false, "failed"},
		{"panic", func(context.Context, *client.Lease) error { panic(boom) }, nil, true, "failed"},
		{"fn releases", func(ctx context.Context, l *client.Lease) error { return l.Fail(ctx) }, nil, false, "failed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key := "do-" + tt.name
			var fence uint64
			var err error
			// A waiter queued behind Do's lease is told how it ended.
			next := make(chan *client.Lease, 1)
			panicked := func() (p any) {
				defer func() { p = recover() }()
				err = c.Do(ctx, key, func(fctx context.Context, l *client.Lease) error {
					fence = l.Fence
					go func() {
						l2, err := c.Acquire(ctx, key, client.Wait(10*time.Second))
						if err != nil {
							t.Error(err)
						}
						next <- l2
					}()
					servertest.Eventually(t, "the waiter is queued", func() bool { return s.Waiters(key) == 1 })
					return tt.fn(fctx, l)
				})
				return nil
			}()
			if (panicked != nil) != tt.wantPanic || (tt.wantPanic && panicked != boom) {
				t.Fatalf("panic = %v, want panic %v", panicked, tt.wantPanic)
			}
			if !tt.wantPanic && !errors.Is(err, tt.wantErr) || tt.wantErr == nil && err != nil {
				t.Fatalf("Do = %v, want %v", err, tt.wantErr)
			}
			l2 := <-next
			if l2 == nil {
				t.FailNow()
			}
			defer l2.Release(ctx)
			if l2.Previous == nil || l2.Previous.Fence != fence || l2.Previous.Outcome != tt.wantOutcome {
				t.Errorf("previous = %+v, want fence %d outcome %s", l2.Previous, fence, tt.wantOutcome)
			}
		})
	}
}

func TestDoCancelsFnWhenLeaseIsLost(t *testing.T) {
	t.Parallel()
	s := servertest.Start(t)
	c := newClient(t, s)
	ctx := t.Context()
	err := c.Do(ctx, "k", func(ctx context.Context, l *client.Lease) error {
		if _, err := s.Engine().ForceRelease("k"); err != nil {
			t.Errorf("force-release: %v", err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(10 * time.Second):
			t.Error("fn's context not cancelled after the lease was lost")
		}
		if cause := context.Cause(ctx); !errors.Is(cause, client.ErrLeaseLost) {
			t.Errorf("cause = %v, want ErrLeaseLost", cause)
		}
		return nil
	}, client.TTL(time.Second))
	if !errors.Is(err, client.ErrLeaseLost) {
		t.Errorf("Do = %v, want ErrLeaseLost", err)
	}
}

func TestServerErrorsMatchSentinels(t *testing.T) {
	t.Parallel()
	s := servertest.Start(t, func(c *config.Config) { c.Limits.MaxWaitersPerKey = 1 })
	c := newClient(t, s)
	ctx := t.Context()

	// on_error=stop: the waiter is aborted when the holder fails.
	h, err := c.Acquire(ctx, "stop", client.OnError(client.Stop))
	if err != nil {
		t.Fatal(err)
	}
	aborted := make(chan error, 1)
	go func() { _, err := c.Acquire(ctx, "stop", client.Wait(time.Minute)); aborted <- err }()
	servertest.Eventually(t, "the waiter is queued", func() bool { return s.Waiters("stop") == 1 })

	// The per-key waiter limit (1) is reached.
	_, tooMany := c.Acquire(ctx, "stop", client.Wait(time.Minute))
	if err := h.Fail(ctx); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name string
		err  error
		want error
		code string
	}{
		{"aborted", <-aborted, client.ErrAborted, "aborted"},
		{"too many waiters", tooMany, client.ErrTooManyWaiters, "too_many_waiters"},
		{"long key", errOf(c.Acquire(ctx, strings.Repeat("k", 300))), client.ErrInvalid, "invalid_key"},
		{"ttl too long", errOf(c.Acquire(ctx, "k", client.TTL(100*time.Hour))), client.ErrInvalid, "invalid_ttl"},
		{"renew with a stale token", h.Renew(ctx, 0), client.ErrNotHolder, "not_holder"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var ae *client.APIError
			if !errors.Is(tt.err, tt.want) || !errors.As(tt.err, &ae) || ae.Code != tt.code {
				t.Errorf("err = %v, want %v with code %s", tt.err, tt.want, tt.code)
			}
		})
	}

	for _, bad := range []client.AcquireOption{client.TTL(0), client.TTL(-time.Second), client.Wait(-time.Second)} {
		if _, err := c.Acquire(ctx, "k", bad); !errors.Is(err, client.ErrInvalid) {
			t.Errorf("Acquire with a bad option = %v, want ErrInvalid", err)
		}
	}
	if _, err := c.Acquire(ctx, ""); !errors.Is(err, client.ErrInvalid) {
		t.Errorf("Acquire of the empty key = %v, want ErrInvalid", err)
	}
}

func errOf(_ any, err error) error { return err }

func TestInspectAndList(t *testing.T) {
	t.Parallel()
	s := servertest.Start(t)
	c := newClient(t, s)
	ctx := t.Context()
	for _, k := range []string{"a:1", "a:2", "a:3", "b:1"} {
		l, err := c.Acquire(ctx, k, client.Owner("o-"+k))
		if err != nil {
			t.Fatal(err)
		}
		defer l.Release(ctx)
	}
	go c.Acquire(ctx, "a:1", client.Owner("waiter"), client.Wait(time.Minute))
	servertest.Eventually(t, "the waiter is queued", func() bool { return s.Waiters("a:1") == 1 })
	st, err := c.Inspect(ctx, "a:1")
	if err != nil {
		t.Fatal(err)
	}
	if !st.Held || st.Holder.Owner != "o-a:1" || st.Holder.OnError != "continue" || len(st.Queue) != 1 || st.Queue[0].Owner != "waiter" || st.Queue[0].WaitingSince.IsZero() {
		t.Errorf("Inspect = %+v", st)
	}
	free, err := c.Inspect(ctx, "free")
	if err != nil || free.Held || free.Holder != nil || free.Waiters != 0 {
		t.Errorf("Inspect(free) = %+v, %v", free, err)
	}

	var keys []string
	o := client.ListOptions{Prefix: "a:", Limit: 2}
	for page := 0; ; page++ {
		p, err := c.List(ctx, o)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range p.Locks {
			keys = append(keys, fmt.Sprintf("%s/%v/%s/%d", r.Key, r.Held, r.Owner, r.Waiters))
		}
		if p.Next == "" || page > 5 {
			break
		}
		o.After = p.Next
	}
	if got, want := strings.Join(keys, " "), "a:1/true/o-a:1/1 a:2/true/o-a:2/0 a:3/true/o-a:3/0"; got != want {
		t.Errorf("List pages = %s, want %s", got, want)
	}
	if _, err := c.List(ctx, client.ListOptions{Limit: 5000}); !errors.Is(err, client.ErrInvalid) {
		t.Errorf("List(limit 5000) = %v, want ErrInvalid", err)
	}
}

// fakeServer answers every request with handler and counts them.
func fakeServer(t *testing.T, handler func(n int64, w http.ResponseWriter, r *http.Request)) (*httptest.Server, *atomic.Int64) {
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		handler(n.Add(1), w, r)
	}))
	t.Cleanup(srv.Close)
	return srv, &n
}

const grantBody = `{"key":"k","token":"00112233445566778899aabbccddeeff","fence":7,"owner":"o","ttl_ms":30000,"expires_at":"2030-01-01T00:00:00.000Z","waited_ms":0,"previous":null}`

var fastRetry = client.WithRetry(client.RetryPolicy{MaxAttempts: 4, MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond})

func TestRetriesUnavailable(t *testing.T) {
	srv, n := fakeServer(t, func(n int64, w http.ResponseWriter, r *http.Request) {
		if n <= 2 {
			w.Header().Set("Retry-After", "0")
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprint(w, `{"error":"unavailable","message":"Shutting down."}`)
			return
		}
		fmt.Fprint(w, grantBody)
	})
	c, err := client.New(srv.URL, fastRetry)
	if err != nil {
		t.Fatal(err)
	}
	l, err := c.Acquire(t.Context(), "k")
	if err != nil || l.Fence != 7 {
		t.Fatalf("Acquire = %+v, %v; want the grant after two 503s", l, err)
	}
	if n.Load() != 3 {
		t.Errorf("%d attempts, want 3", n.Load())
	}

	// Retries give up after MaxAttempts with ErrUnavailable.
	n.Store(-100)
	_, err = c.Acquire(t.Context(), "k")
	if !errors.Is(err, client.ErrUnavailable) || n.Load() != -96 {
		t.Errorf("after 4 503s: %v with %d attempts, want ErrUnavailable after 4", err, n.Load()+100)
	}
}

// TestNeverRetriesAnAcquireThatMayHaveBeenGranted: without a request id
// (WithoutRequestIDs, for servers older than them), an acquire that reached
// the server is never sent again, since a second one would queue a second
// waiter.
func TestNeverRetriesAnAcquireThatMayHaveBeenGranted(t *testing.T) {
	var bodies []string
	var mu sync.Mutex
	srv, n := fakeServer(t, func(_ int64, w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		bodies = append(bodies, string(b))
		mu.Unlock()
		// The request arrived; the connection dies before an answer.
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			conn.Close()
		}
	})
	c, err := client.New(srv.URL, fastRetry, client.WithoutRequestIDs())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Acquire(t.Context(), "k"); err == nil || errors.Is(err, client.ErrUnavailable) {
		t.Errorf("Acquire over a dying connection = %v, want a transport error that is not ErrUnavailable", err)
	}
	if n.Load() != 1 {
		t.Errorf("%d attempts, want exactly 1", n.Load())
	}
	mu.Lock()
	defer mu.Unlock()
	if len(bodies) == 1 && strings.Contains(bodies[0], "request_id") {
		t.Errorf("WithoutRequestIDs sent %s", bodies[0])
	}
}

// acquireBody is what the fakes read of an acquire.
type acquireBody struct {
	RequestID string `json:"request_id"`
	Wait      string `json:"wait"`
	Limit     int    `json:"limit"`
	MaxHold   string `json:"max_hold"`
	LockDelay string `json:"lock_delay"`
}

// TestRetriesACutAcquireWithTheSameRequestID: an acquire whose connection
// dies after it was sent is sent again with the same request id (the
// server deduplicates it), with the wait shortened by the time spent, and
// the lease is the one the retry is answered with.
func TestRetriesACutAcquireWithTheSameRequestID(t *testing.T) {
	var (
		mu     sync.Mutex
		bodies []acquireBody
	)
	srv, n := fakeServer(t, func(n int64, w http.ResponseWriter, r *http.Request) {
		var b acquireBody
		if err := json.NewDecoder(r.Body).Decode(&b); err != nil {
			t.Errorf("attempt %d: %v", n, err)
		}
		mu.Lock()
		bodies = append(bodies, b)
		mu.Unlock()
		if n <= 2 {
			time.Sleep(20 * time.Millisecond) // time that counts against the wait
			conn, _, err := http.NewResponseController(w).Hijack()
			if err == nil {
				conn.Close()
			}
			return
		}
		fmt.Fprint(w, strings.Replace(grantBody, `"previous":null`, `"previous":null,"limit":1,"request_id":"`+b.RequestID+`"`, 1))
	})
	c, err := client.New(srv.URL, fastRetry)
	if err != nil {
		t.Fatal(err)
	}
	l, err := c.Acquire(t.Context(), "k", client.Wait(10*time.Second))
	if err != nil {
		t.Fatalf("Acquire over two cut connections = %v, want the grant of the third attempt", err)
	}
	if n.Load() != 3 {
		t.Errorf("%d attempts, want 3", n.Load())
	}
	mu.Lock()
	seen := slices.Clone(bodies)
	mu.Unlock()
	id := seen[0].RequestID
	if len(id) != 32 || strings.Trim(id, "0123456789abcdef") != "" {
		t.Errorf("request_id %q, want 32 hex digits", id)
	}
	for i, b := range seen {
		if b.RequestID != id {
			t.Errorf("attempt %d sent request_id %q, want the first's %q", i+1, b.RequestID, id)
		}
	}
	if seen[0].Wait != "10000ms" {
		t.Errorf("first wait %s, want 10000ms", seen[0].Wait)
	}
	if w, err := time.ParseDuration(seen[2].Wait); err != nil || w > 9960*time.Millisecond || w < time.Second {
		t.Errorf("third attempt's wait %s, want 10s less the 40ms and more already spent", seen[2].Wait)
	}
	if l.RequestID != id || l.Limit != 1 || l.Fence != 7 {
		t.Errorf("lease %+v, want fence 7, limit 1, request id %s", l, id)
	}
	// Each acquire gets its own id.
	if _, err := c.Acquire(t.Context(), "k"); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if got := bodies[len(bodies)-1].RequestID; got == id || len(got) != 32 {
		t.Errorf("the next acquire sent request_id %q, want a fresh one", got)
	}
}

// TestAcquireSendsItsOptions: RequestID, Limit, MaxHold and LockDelay
// reach the server as the API names them; bad ones are refused unsent.
func TestAcquireSendsItsOptions(t *testing.T) {
	got := make(chan acquireBody, 1)
	srv, n := fakeServer(t, func(_ int64, w http.ResponseWriter, r *http.Request) {
		var b acquireBody
		json.NewDecoder(r.Body).Decode(&b)
		got <- b
		fmt.Fprint(w, grantBody)
	})
	c, err := client.New(srv.URL, fastRetry)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Acquire(t.Context(), "k", client.RequestID("job-7"), client.Limit(3), client.MaxHold(time.Minute), client.LockDelay(1500*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	want := acquireBody{RequestID: "job-7", Limit: 3, MaxHold: "60000ms", LockDelay: "1500ms"}
	if b := <-got; b != want {
		t.Errorf("sent %+v, want %+v", b, want)
	}
	for _, bad := range []client.AcquireOption{client.RequestID(""), client.RequestID(strings.Repeat("x", 65)), client.RequestID("a b"), client.RequestID("é"),
		client.Limit(-1), client.MaxHold(-time.Second), client.LockDelay(-time.Second)} {
		if _, err := c.Acquire(t.Context(), "k", bad); !errors.Is(err, client.ErrInvalid) {
			t.Errorf("Acquire with a bad option = %v, want ErrInvalid", err)
		}
	}
	if n.Load() != 1 {
		t.Errorf("%d requests, want only the good one sent", n.Load())
	}
}

func TestRetriesConnectionRefusedUntilTheServerIsUp(t *testing.T) {
	// Not parallel: it frees a port and starts a server on it later.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens here now: connections are refused

	c, err := client.New("http://"+addr, client.WithRetry(client.RetryPolicy{MaxAttempts: 1000, MinBackoff: 5 * time.Millisecond, MaxBackoff: 20 * time.Millisecond}))
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	go func() {
		l, err := c.Acquire(t.Context(), "k", client.Owner("patient"))
		if err == nil && l.Owner != "patient" {
			err = fmt.Errorf("lease %+v", l)
		}
		got <- err
	}()
	time.Sleep(100 * time.Millisecond) // several refused attempts
	s := servertest.Start(t, func(c *config.Config) { c.Listen = addr })
	_ = s
	select {
	case err := <-got:
		if err != nil {
			t.Fatalf("Acquire after the server came up: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Acquire did not succeed once the server was up")
	}

	// With nothing listening and a short context, the error says both.
	// (Short, but long enough that a loaded machine makes the first
	// attempt within it: 50ms was not always.)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	c2, _ := client.New("http://127.0.0.1:1")
	_, err = c2.Acquire(ctx, "k")
	if !errors.Is(err, client.ErrUnavailable) || !strings.Contains(err.Error(), "refused") {
		t.Errorf("Acquire against a closed port = %v, want ErrUnavailable saying refused", err)
	}
}

func TestSendsBearerToken(t *testing.T) {
	var mu sync.Mutex
	var auth []string
	srv, _ := fakeServer(t, func(_ int64, w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		auth = append(auth, r.Header.Get("Authorization"))
		mu.Unlock()
		if r.Header.Get("Authorization") != "Bearer s3cret" {
			w.Header().Set("WWW-Authenticate", "Bearer")
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprint(w, `{"error":"unauthorized","message":"A bearer token is required."}`)
			return
		}
		fmt.Fprint(w, grantBody)
	})
	c, _ := client.New(srv.URL, client.WithToken("s3cret"))
	if _, err := c.Acquire(t.Context(), "k"); err != nil {
		t.Fatal(err)
	}
	anon, _ := client.New(srv.URL)
	if _, err := anon.Acquire(t.Context(), "k"); !errors.Is(err, client.ErrUnauthorized) {
		t.Errorf("without a token: %v, want ErrUnauthorized", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(auth) != 2 || auth[0] != "Bearer s3cret" || auth[1] != "" {
		t.Errorf("Authorization headers = %q", auth)
	}
}

func TestTokenStaysOutOfURLs(t *testing.T) {
	srv, _ := fakeServer(t, func(_ int64, w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.URL.String(), "0011") {
			t.Errorf("token in URL %s", r.URL)
		}
		if strings.HasSuffix(r.URL.Path, "/acquire") {
			fmt.Fprint(w, grantBody)
			return
		}
		fmt.Fprint(w, `{"key":"k","fence":7,"released":true,"held_ms":1}`)
	})
	c, _ := client.New(srv.URL)
	l, err := c.Acquire(t.Context(), "k")
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Release(t.Context()); err != nil {
		t.Fatal(err)
	}
}

func TestLeaseHandle(t *testing.T) {
	t.Parallel()
	s := servertest.Start(t)
	c := newClient(t, s)
	ctx := t.Context()
	l, err := c.Acquire(ctx, "k", client.TTL(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	other := newClient(t, s) // another process, given key and token
	h := other.Lease("k", l.Token)
	if h.TTL() != 0 || !h.ExpiresAt().IsZero() {
		t.Errorf("fresh handle knows TTL %s, expiry %s", h.TTL(), h.ExpiresAt())
	}
	if err := h.Renew(ctx, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if h.TTL() != 10*time.Second || time.Until(h.ExpiresAt()) < 8*time.Second {
		t.Errorf("after Renew: TTL %s, expiry in %s", h.TTL(), time.Until(h.ExpiresAt()))
	}
	if err := h.Release(ctx); err != nil {
		t.Fatal(err)
	}

	bogus := other.Lease("k", strings.Repeat("0", 32))
	bogus.KeepAlive(ctx)
	select {
	case <-bogus.Lost():
	case <-time.After(10 * time.Second):
		t.Fatal("KeepAlive of a wrong token did not lose the lease")
	}
	if !errors.Is(bogus.Err(), client.ErrNotHolder) {
		t.Errorf("Err() = %v, want ErrNotHolder", bogus.Err())
	}
}

// TestDoStress runs many goroutines through Do on a few keys, with random
// outcomes and cancellations, and checks that no two are ever inside fn for
// the same key at once and that fences grow with every grant on a key.
func TestDoStress(t *testing.T) {
	t.Parallel()
	s := servertest.Start(t)
	c := newClient(t, s)
	keys := []string{"s:0", "s:1", "s:2"}
	type section struct {
		mu        sync.Mutex // guards the following
		inside    bool
		lastFence uint64
	}
	sections := make([]section, len(keys))
	var runs, overlaps, regressions atomic.Int64
	deadline := time.Now().Add(1500 * time.Millisecond)
	var wg sync.WaitGroup
	for w := range 24 {
		wg.Go(func() {
			for i := 0; time.Now().Before(deadline); i++ {
				k := (w + i) % len(keys)
				ctx, cancel := context.WithTimeout(t.Context(), time.Duration(1+(w*7+i)%40)*time.Millisecond)
				err := c.Do(ctx, keys[k], func(context.Context, *client.Lease) error {
					return nil
				}, client.TTL(30*time.Second), client.Wait(time.Duration((w+i)%30)*time.Millisecond))
				_ = err
				cancel()
				_ = c.Do(t.Context(), keys[k], func(_ context.Context, l *client.Lease) error {
					sec := &sections[k]
					sec.mu.Lock()
					if sec.inside {
						overlaps.Add(1)
					}
					if l.Fence <= sec.lastFence {
						regressions.Add(1)
					}
					sec.inside, sec.lastFence = true, l.Fence
					sec.mu.Unlock()
					time.Sleep(time.Duration(i%3) * 100 * time.Microsecond)
					sec.mu.Lock()
					sec.inside = false
					sec.mu.Unlock()
					runs.Add(1)
					if i%4 == 0 {
						return errors.New("failed on purpose")
					}
					return nil
				}, client.TTL(30*time.Second), client.Wait(10*time.Second))
			}
		})
	}
	wg.Wait()
	if overlaps.Load() != 0 || regressions.Load() != 0 {
		t.Errorf("%d overlapping runs, %d fence regressions", overlaps.Load(), regressions.Load())
	}
	if runs.Load() < 50 {
		t.Errorf("only %d runs; the test did not stress", runs.Load())
	}
	servertest.Eventually(t, "every key is free", func() bool {
		for _, k := range keys {
			if s.Held(k) || s.Waiters(k) != 0 {
				return false
			}
		}
		return true
	})
	t.Logf("%d runs", runs.Load())
}

// TestCancelledAcquireNeverLeavesALease races a waiter's cancellation
// against its grant, over and over: whichever wins, no lease may be left
// behind once Acquire has returned an error.
func TestCancelledAcquireNeverLeavesALease(t *testing.T) {
	t.Parallel()
	s := servertest.Start(t)
	raceCancelAgainstGrant(t, s, newClient(t, s), 150)
}

// TestTLS runs acquires over https with the client's own transport,
// including the cancellation race (a half-close is a TLS close_notify).
func TestTLS(t *testing.T) {
	t.Parallel()
	certFile, keyFile, roots := servertest.WriteCert(t, t.TempDir())
	s := servertest.Start(t, func(c *config.Config) { c.TLS.CertFile, c.TLS.KeyFile = certFile, keyFile })
	if !strings.HasPrefix(s.URL, "https://") {
		t.Fatalf("server URL %s, want https", s.URL)
	}
	if _, err := client.New(s.URL, client.WithTLSConfig(&tls.Config{}), client.WithHTTPClient(http.DefaultClient)); err == nil {
		t.Error("WithTLSConfig together with WithHTTPClient accepted")
	}
	untrusting := newClient(t, s, client.WithRetry(client.RetryPolicy{MaxAttempts: 1}))
	if _, err := untrusting.Acquire(t.Context(), "k"); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("acquire without trusting the certificate = %v, want a certificate error", err)
	}
	c := newClient(t, s, client.WithTLSConfig(&tls.Config{RootCAs: roots}))
	raceCancelAgainstGrant(t, s, c, 60)
}

func raceCancelAgainstGrant(t *testing.T, s *servertest.Server, c *client.Client, rounds int) {
	t.Helper()
	var granted, cancelled int
	for i := range rounds {
		holder, err := c.Acquire(t.Context(), "k", client.TTL(time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Millisecond)
		done := make(chan error, 1)
		go func() {
			l, err := c.Acquire(ctx, "k", client.TTL(time.Minute), client.Wait(time.Minute), client.Owner("racer"))
			if err == nil {
				err = l.Release(t.Context())
				granted++
			}
			done <- err
		}()
		// Release the holder around the moment the waiter gives up.
		time.Sleep(time.Duration(3000+i*30) * time.Microsecond)
		if err := holder.Release(t.Context()); err != nil {
			t.Fatalf("release the holder: %v", err)
		}
		err = <-done
		cancel()
		if err != nil && !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("racing acquire: %v", err)
		}
		if err != nil {
			cancelled++
		}
		servertest.Eventually(t, "the key is free", func() bool { return !s.Held("k") && s.Waiters("k") == 0 })
	}
	t.Logf("granted %d, cancelled %d", granted, cancelled)
}

// TestRenewWithAShorterTTLBringsLostForward: the server expires a lease
// renewed with a shorter TTL that much sooner, so Lost must close before
// the key can go to the next waiter, not a margin before the old expiry.
func TestRenewWithAShorterTTLBringsLostForward(t *testing.T) {
	t.Parallel()
	s := servertest.Start(t)
	c := newClient(t, s)
	ctx := t.Context()
	l, err := c.Acquire(ctx, "k", client.TTL(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Renew(ctx, time.Second); err != nil {
		t.Fatal(err)
	}
	renewed := time.Now()
	if l.TTL() != time.Second {
		t.Errorf("TTL() = %s after Renew(1s), want 1s", l.TTL())
	}
	next, err := c.Acquire(ctx, "k", client.Wait(30*time.Second))
	if err != nil {
		t.Fatalf("the next waiter: %v", err)
	}
	defer next.Release(ctx)
	// The key went to the next waiter about 1s after the renewal; the
	// old lease must be declared lost by then (slack for a loaded machine,
	// far below the minute the first TTL would have given).
	select {
	case <-l.Lost():
	case <-time.After(10 * time.Second):
		t.Fatalf("Lost still open %s after Renew(1s), though the key was granted to fence %d", time.Since(renewed), next.Fence)
	}
	if err := l.Err(); !errors.Is(err, client.ErrLeaseLost) {
		t.Errorf("Err() = %v, want ErrLeaseLost", err)
	}
}

// TestPasswordInBaseURLStaysOutOfErrors: a base URL with user:password
// (for a proxy in front of mutexd) is used, but never shown in errors.
func TestPasswordInBaseURLStaysOutOfErrors(t *testing.T) {
	c, err := client.New("http://user:s3cret@127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err = c.Inspect(ctx, "k")
	if err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Fatalf("Inspect with a cancelled context = %v, want an error without the password", err)
	}
}

// TestRefusedRenewalKeepsTheLease: a renewal the server refused as invalid
// (a TTL below its minimum) changed nothing, so the lease is not lost.
func TestRefusedRenewalKeepsTheLease(t *testing.T) {
	t.Parallel()
	s := servertest.Start(t)
	c := newClient(t, s)
	ctx := t.Context()
	l, err := c.Acquire(ctx, "k", client.TTL(30*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Renew(ctx, 500*time.Millisecond); !errors.Is(err, client.ErrInvalid) {
		t.Fatalf("Renew(500ms) = %v, want ErrInvalid (the minimum TTL is 1s)", err)
	}
	select {
	case <-l.Lost():
		t.Fatalf("lease lost after a refused renewal: %v", l.Err())
	case <-time.After(2 * time.Second):
	}
	if err := l.Release(ctx); err != nil {
		t.Fatalf("Release: %v", err)
	}
}
