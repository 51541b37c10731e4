package client

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestNewLeasePastDeadline: a grant that arrives after its local deadline
// arms a timer that fires at once; under -race this caught newLease
// writing l.timer while the timer's checkDeadline read it.
func TestNewLeasePastDeadline(t *testing.T) {
	c, err := New("http://127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	for range 200 {
		// ttl 1ms: the deadline minus the safety margin has passed already.
		l := newLease(c, grantJSON{Key: "k", Token: "t", TTLMS: 1}, time.Now().Add(-time.Second))
		<-l.Lost()
		if err := l.Err(); !errors.Is(err, ErrLeaseLost) {
			t.Fatalf("Err() = %v, want ErrLeaseLost", err)
		}
	}
}

// TestUnansweredShorterRenewalLowersTheDeadline: a renewal asking for a
// shorter TTL that gets no answer may have been applied, so the lease
// counts as ending that much sooner.
func TestUnansweredShorterRenewalLowersTheDeadline(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body) // so that the server notices the client leave
		<-r.Context().Done()        // processed, perhaps, but never answered
	}))
	defer srv.Close()
	c, err := New(srv.URL, WithRetry(RetryPolicy{MaxAttempts: 1}))
	if err != nil {
		t.Fatal(err)
	}
	l := newLease(c, grantJSON{Key: "k", Token: "t", TTLMS: time.Minute.Milliseconds()}, time.Now())
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	if err := l.Renew(ctx, time.Second); err == nil {
		t.Fatal("Renew answered nothing, want an error")
	}
	select {
	case <-l.Lost():
	case <-time.After(10 * time.Second):
		t.Fatal("Lost still open 10s after an unanswered Renew(1s) on a 1-minute lease")
	}
}

// TestReleaseIsNotHeldUpByAHangingRenew: renewals run one at a time, but a
// renewal waiting for its turn gives up with its context, so a caller's
// Renew that hangs cannot pin KeepAlive, and so Release, which stops it.
func TestReleaseIsNotHeldUpByAHangingRenew(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if strings.HasSuffix(r.URL.Path, "/renew") {
			<-r.Context().Done() // never answered
			return
		}
		w.Write([]byte(`{"key":"k","fence":1,"released":true,"held_ms":1}`))
	}))
	defer srv.Close()
	c, err := New(srv.URL, WithRetry(RetryPolicy{MaxAttempts: 1}))
	if err != nil {
		t.Fatal(err)
	}
	l := newLease(c, grantJSON{Key: "k", Token: "t", TTLMS: 300}, time.Now())
	hangCtx, stopHang := context.WithCancel(t.Context())
	defer stopHang()
	hung := make(chan struct{})
	go func() { defer close(hung); l.Renew(hangCtx, 0) }()
	l.KeepAlive(t.Context()) // its renewal, after 100ms, waits behind the hanging one
	select {
	case <-l.Lost():
	case <-time.After(10 * time.Second):
		t.Fatal("Lost still open 10s after a 300ms lease's deadline")
	}
	released := make(chan error, 1)
	go func() { released <- l.Release(t.Context()) }()
	select {
	case err := <-released:
		if err != nil {
			t.Errorf("Release = %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Error("Release still blocked 10s on KeepAlive, which waits behind a hanging Renew")
	}
	stopHang()
	<-hung
}

// TestKeepAliveStartedDuringReleaseStops: a KeepAlive that starts while a
// Release is under way (too late for Release to stop it) ends once the
// lease is released, instead of renewing a released lease forever.
func TestKeepAliveStartedDuringReleaseStops(t *testing.T) {
	releasing, finish := make(chan struct{}), make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if strings.HasSuffix(r.URL.Path, "/release") {
			close(releasing)
			<-finish
			w.Write([]byte(`{"key":"k","fence":1,"released":true,"held_ms":1}`))
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusConflict)
		w.Write([]byte(`{"error":"not_holder","message":"gone"}`))
	}))
	defer srv.Close()
	c, err := New(srv.URL, WithRetry(RetryPolicy{MaxAttempts: 1}))
	if err != nil {
		t.Fatal(err)
	}
	l := newLease(c, grantJSON{Key: "k", Token: "t", TTLMS: 3000}, time.Now())
	released := make(chan error, 1)
	go func() { released <- l.Release(t.Context()) }()
	<-releasing
	l.KeepAlive(t.Context())
	close(finish)
	if err := <-released; err != nil {
		t.Fatalf("Release = %v", err)
	}
	l.mu.Lock()
	done := l.kaDone
	l.mu.Unlock()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("KeepAlive still running 10s after the lease was released")
	}
}

// TestUnsentShorterRenewalKeepsTheDeadline: a renewal that never reached
// the server (connection refused) cannot have shortened the lease.
func TestUnsentShorterRenewalKeepsTheDeadline(t *testing.T) {
	c, err := New("http://127.0.0.1:1", WithRetry(RetryPolicy{MaxAttempts: 1}))
	if err != nil {
		t.Fatal(err)
	}
	l := newLease(c, grantJSON{Key: "k", Token: "t", TTLMS: time.Minute.Milliseconds()}, time.Now())
	before := l.deadline
	if err := l.Renew(t.Context(), time.Second); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Renew against a closed port = %v, want ErrUnavailable", err)
	}
	l.mu.Lock()
	after := l.deadline
	l.mu.Unlock()
	if !after.Equal(before) {
		t.Errorf("deadline moved by %s after a renewal that was never sent", after.Sub(before))
	}
}
