package client_test

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mutexd/mutexd/client"
	"github.com/mutexd/mutexd/internal/servertest"
)

// cuttingProxy forwards every request to s, but cuts the connection of
// the first cut acquires after the server has answered them: the grant
// happened, the answer is lost.
func cuttingProxy(t *testing.T, s *servertest.Server, cut int64) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	var n atomic.Int64
	p := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
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
		b, _ := io.ReadAll(resp.Body)
		if strings.HasSuffix(r.URL.Path, "/acquire") && n.Add(1) <= cut {
			if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
				conn.Close()
			}
			return
		}
		w.Header().Set("Content-Type", resp.Header.Get("Content-Type"))
		w.WriteHeader(resp.StatusCode)
		w.Write(b)
	}))
	t.Cleanup(p.Close)
	return p, &n
}

// TestLostGrantIsRecoveredWithTheRequestID: the server grants, the answer
// is lost, and the client's retry with the same request id gets that very
// lease; nothing is left behind once it is released.
func TestLostGrantIsRecoveredWithTheRequestID(t *testing.T) {
	t.Parallel()
	s := servertest.Start(t)
	p, n := cuttingProxy(t, s, 1)
	c, err := client.New(p.URL, fastRetry)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	l, err := c.Acquire(ctx, "k", client.TTL(time.Minute))
	if err != nil {
		t.Fatalf("Acquire through a cut answer = %v, want the lease", err)
	}
	if n.Load() != 2 {
		t.Errorf("%d acquires reached the proxy, want 2", n.Load())
	}
	st, err := newClient(t, s).Inspect(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Holders) != 1 || st.Holders[0].Fence != l.Fence || st.Waiters != 0 {
		t.Fatalf("after the retry the key is %+v, want one holder with fence %d and no waiters", st, l.Fence)
	}
	if err := l.Release(ctx); err != nil {
		t.Fatalf("release the recovered lease: %v", err)
	}
	if s.Held("k") {
		t.Error("the key is still held after releasing the recovered lease")
	}
}

// TestRequestIDSemantics: the same request id gets the same lease while it
// lives, ErrLeaseEnded (with how it ended) after, and a second waiter with
// the id supersedes the first.
func TestRequestIDSemantics(t *testing.T) {
	t.Parallel()
	s := servertest.Start(t)
	c := newClient(t, s)
	ctx := t.Context()
	l1, err := c.Acquire(ctx, "k", client.RequestID("job-1"))
	if err != nil {
		t.Fatal(err)
	}
	again, err := c.Acquire(ctx, "k", client.RequestID("job-1"))
	if err != nil || again.Token != l1.Token || again.Fence != l1.Fence || again.RequestID != "job-1" {
		t.Fatalf("re-sent acquire = %+v, %v; want the same lease (fence %d)", again, err, l1.Fence)
	}
	// Two waiters with one id: the second takes the first's place.
	first := make(chan error, 1)
	go func() {
		_, err := c.Acquire(ctx, "k", client.RequestID("job-2"), client.Wait(time.Minute))
		first <- err
	}()
	servertest.Eventually(t, "the first waiter is queued", func() bool { return s.Waiters("k") == 1 })
	second := make(chan *client.Lease, 1)
	go func() {
		l, err := c.Acquire(ctx, "k", client.RequestID("job-2"), client.Wait(time.Minute))
		if err != nil {
			t.Error(err)
		}
		second <- l
	}()
	select {
	case err := <-first:
		var ae *client.APIError
		if !errors.Is(err, client.ErrSuperseded) || !errors.As(err, &ae) || ae.Code != "superseded" {
			t.Errorf("superseded waiter = %v, want ErrSuperseded", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the first waiter was not superseded")
	}
	if s.Waiters("k") != 1 {
		t.Errorf("%d waiters, want the second in the first's place", s.Waiters("k"))
	}
	if err := l1.Fail(ctx); err != nil {
		t.Fatal(err)
	}
	l2 := <-second
	if l2 == nil {
		t.FailNow()
	}
	if l2.Previous == nil || l2.Previous.Fence != l1.Fence || l2.Previous.Outcome != "failed" || l2.Previous.EndedAt.IsZero() {
		t.Errorf("second lease's previous = %+v, want failed fence %d with EndedAt", l2.Previous, l1.Fence)
	}
	l2.Release(ctx)
	_, err = c.Acquire(ctx, "k", client.RequestID("job-1"))
	var ae *client.APIError
	if !errors.Is(err, client.ErrLeaseEnded) || !errors.As(err, &ae) || ae.Fence != l1.Fence || ae.Outcome != "failed" || ae.EndedAt.IsZero() {
		t.Errorf("acquire with an ended lease's id = %v (%+v), want ErrLeaseEnded fence %d failed", err, ae, l1.Fence)
	}
	// The key remembers its last outcome for an immediate grant too.
	l3, err := c.Acquire(ctx, "k", client.Wait(0))
	if err != nil {
		t.Fatal(err)
	}
	if l3.Previous == nil || l3.Previous.Fence != l2.Fence || l3.Previous.Outcome != "released" {
		t.Errorf("immediate grant's previous = %+v, want released fence %d", l3.Previous, l2.Fence)
	}
	l3.Release(ctx)
}

// TestSemaphore: Limit(2) admits two holders; a different limit is
// refused with the key's.
func TestSemaphore(t *testing.T) {
	t.Parallel()
	s := servertest.Start(t)
	c := newClient(t, s)
	ctx := t.Context()
	a, err := c.Acquire(ctx, "pool", client.Limit(2), client.Owner("a"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := c.Acquire(ctx, "pool", client.Limit(2), client.Owner("b"), client.Wait(0))
	if err != nil {
		t.Fatalf("second holder of a limit-2 key: %v", err)
	}
	if a.Limit != 2 || b.Limit != 2 || a.Fence == b.Fence {
		t.Errorf("leases %+v and %+v, want limit 2 and distinct fences", a, b)
	}
	if _, err := c.Acquire(ctx, "pool", client.Limit(2), client.Wait(0)); !errors.Is(err, client.ErrTimeout) {
		t.Errorf("third holder = %v, want ErrTimeout", err)
	}
	_, err = c.Acquire(ctx, "pool", client.Limit(3), client.Wait(0))
	var ae *client.APIError
	if !errors.Is(err, client.ErrLimitMismatch) || !errors.As(err, &ae) || ae.Limit != 2 {
		t.Errorf("acquire with limit 3 = %v, want ErrLimitMismatch naming 2", err)
	}
	st, err := c.Inspect(ctx, "pool")
	if err != nil {
		t.Fatal(err)
	}
	if st.Limit != 2 || len(st.Holders) != 2 || st.Holders[0].Owner != "a" || st.Holders[1].Owner != "b" || st.Holder.Owner != "a" {
		t.Errorf("Inspect = %+v, want limit 2, holders a then b", st)
	}
	page, err := c.List(ctx, client.ListOptions{Prefix: "pool"})
	if err != nil || len(page.Locks) != 1 || page.Locks[0].Holders != 2 || page.Locks[0].Limit != 2 {
		t.Errorf("List = %+v, %v; want pool with 2 holders of 2", page, err)
	}
	// Fences: each holder's is live; a released one is stale.
	if fs, err := c.CheckFence(ctx, "pool", b.Fence); err != nil || !fs.Live || fs.Fence != b.Fence || fs.ExpiresAt.IsZero() {
		t.Errorf("CheckFence(live) = %+v, %v", fs, err)
	}
	a.Release(ctx)
	_, err = c.CheckFence(ctx, "pool", a.Fence)
	if !errors.Is(err, client.ErrStaleFence) || !errors.As(err, &ae) || len(ae.CurrentFences) != 1 || ae.CurrentFences[0] != b.Fence {
		t.Errorf("CheckFence(released) = %v, want ErrStaleFence with current [%d]", err, b.Fence)
	}
	if _, err := c.CheckFence(ctx, "pool", 0); !errors.Is(err, client.ErrInvalid) {
		t.Errorf("CheckFence(0) = %v, want ErrInvalid", err)
	}
	b.Release(ctx)
}

// TestMaxHoldStopsRenewals: a renewal past MaxHold is refused with the
// final expiry, and KeepAlive stops trying.
func TestMaxHoldStopsRenewals(t *testing.T) {
	t.Parallel()
	s := servertest.Start(t)
	c := newClient(t, s)
	ctx := t.Context()
	l, err := c.Acquire(ctx, "k", client.TTL(2*time.Second), client.MaxHold(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	err = l.Renew(ctx, 0)
	var ae *client.APIError
	if !errors.Is(err, client.ErrMaxHoldReached) || !errors.As(err, &ae) || ae.ExpiresAt.IsZero() {
		t.Fatalf("renew past max hold = %v, want ErrMaxHoldReached with the final expiry", err)
	}
	if l.Err() != nil {
		t.Errorf("lease lost at once: %v; it lives until its cap", l.Err())
	}
	st, err := c.Inspect(ctx, "k")
	if err != nil || st.Holder == nil || st.Holder.MaxHoldUntil == nil {
		t.Errorf("Inspect = %+v, %v; want max_hold_until", st, err)
	}
	l.KeepAlive(ctx)
	select {
	case <-l.Lost():
	case <-time.After(10 * time.Second):
		t.Fatal("a lease past its max hold was not lost")
	}
	if !errors.Is(l.Err(), client.ErrLeaseLost) {
		t.Errorf("Err = %v, want ErrLeaseLost", l.Err())
	}
}

// TestPauseResumeDrain: a paused key grants nothing; resume grants; drain
// answers waiters ErrDrained with the reason; the prefix forms count.
func TestPauseResumeDrain(t *testing.T) {
	t.Parallel()
	s := servertest.Start(t)
	c := newClient(t, s)
	ctx := t.Context()
	st, err := c.Pause(ctx, "m:1")
	if err != nil || !st.Paused || !st.Changed {
		t.Fatalf("Pause = %+v, %v", st, err)
	}
	if st, err := c.Pause(ctx, "m:1"); err != nil || st.Changed {
		t.Errorf("second Pause = %+v, %v; want unchanged", st, err)
	}
	if _, err := c.Acquire(ctx, "m:1", client.Wait(0)); !errors.Is(err, client.ErrTimeout) {
		t.Errorf("try-lock of a paused key = %v, want ErrTimeout", err)
	}
	got := make(chan *client.Lease, 1)
	go func() {
		l, err := c.Acquire(ctx, "m:1", client.Wait(time.Minute))
		if err != nil {
			t.Error(err)
		}
		got <- l
	}()
	servertest.Eventually(t, "the waiter is queued", func() bool { return s.Waiters("m:1") == 1 })
	if ks, err := c.Inspect(ctx, "m:1"); err != nil || !ks.Paused || ks.Held {
		t.Errorf("Inspect of the paused key = %+v, %v", ks, err)
	}
	if st, err := c.Resume(ctx, "m:1"); err != nil || st.Paused || !st.Changed {
		t.Errorf("Resume = %+v, %v", st, err)
	}
	l := <-got
	if l == nil {
		t.FailNow()
	}

	drained := make(chan error, 2)
	for range 2 {
		go func() { _, err := c.Acquire(ctx, "m:1", client.Wait(time.Minute)); drained <- err }()
	}
	servertest.Eventually(t, "two waiters are queued", func() bool { return s.Waiters("m:1") == 2 })
	if n, err := c.Drain(ctx, "m:1", "maintenance"); err != nil || n != 2 {
		t.Errorf("Drain = %d, %v; want 2", n, err)
	}
	for range 2 {
		err := <-drained
		var ae *client.APIError
		if !errors.Is(err, client.ErrDrained) || !errors.As(err, &ae) || ae.Reason != "maintenance" {
			t.Errorf("drained waiter = %v, want ErrDrained with reason maintenance", err)
		}
	}
	if !s.Held("m:1") {
		t.Error("drain ended the holder's lease")
	}

	if n, err := c.PausePrefix(ctx, "m:"); err != nil || n != 1 {
		t.Errorf("PausePrefix = %d, %v; want 1", n, err)
	}
	if n, err := c.DrainPrefix(ctx, "m:", ""); err != nil || n != 0 {
		t.Errorf("DrainPrefix = %d, %v; want 0", n, err)
	}
	if n, err := c.ResumePrefix(ctx, "m:"); err != nil || n != 1 {
		t.Errorf("ResumePrefix = %d, %v; want 1", n, err)
	}
	if _, err := c.PausePrefix(ctx, ""); !errors.Is(err, client.ErrInvalid) {
		t.Errorf("PausePrefix(\"\") = %v, want ErrInvalid", err)
	}
	l.Release(ctx)
}
