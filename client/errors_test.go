package client

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

func TestDecodeAPIError(t *testing.T) {
	tests := []struct {
		status  int
		header  http.Header
		body    string
		code    string
		want    error
		waiters int
		retry   time.Duration
	}{
		{423, nil, `{"error":"timeout","message":"Not granted.","waiters":3}`, "timeout", ErrTimeout, 3, 0},
		{409, nil, `{"error":"aborted","message":"m"}`, "aborted", ErrAborted, 0, 0},
		{409, nil, `{"error":"not_holder","message":"m"}`, "not_holder", ErrNotHolder, 0, 0},
		{429, http.Header{"Retry-After": {"1"}}, `{"error":"too_many_waiters","message":"m"}`, "too_many_waiters", ErrTooManyWaiters, 0, time.Second},
		{429, http.Header{"Retry-After": {"2"}}, `{"error":"too_many_keys","message":"m"}`, "too_many_keys", ErrTooManyKeys, 0, 2 * time.Second},
		{503, http.Header{"Retry-After": {"1"}}, `{"error":"unavailable","message":"m"}`, "unavailable", ErrUnavailable, 0, time.Second},
		{503, nil, `<html>bad gateway</html>`, "http_503", ErrUnavailable, 0, 0},
		{400, nil, `{"error":"invalid_ttl","message":"m"}`, "invalid_ttl", ErrInvalid, 0, 0},
		{401, nil, `{"error":"unauthorized","message":"m"}`, "unauthorized", ErrUnauthorized, 0, 0},
		{403, nil, `{"error":"forbidden","message":"m"}`, "forbidden", ErrForbidden, 0, 0},
		{409, nil, `{"error":"superseded","message":"m"}`, "superseded", ErrSuperseded, 0, 0},
		{409, nil, `{"error":"lease_ended","message":"m","fence":5,"outcome":"expired","ended_at":"2030-01-01T00:00:00.000Z"}`, "lease_ended", ErrLeaseEnded, 0, 0},
		{409, nil, `{"error":"limit_mismatch","message":"m","limit":3}`, "limit_mismatch", ErrLimitMismatch, 0, 0},
		{409, nil, `{"error":"max_hold_reached","message":"m","expires_at":"2030-01-01T00:00:00.000Z"}`, "max_hold_reached", ErrMaxHoldReached, 0, 0},
		{409, nil, `{"error":"drained","message":"m","reason":"maintenance"}`, "drained", ErrDrained, 0, 0},
		{409, nil, `{"error":"stale_fence","message":"m","current_fences":[8,9]}`, "stale_fence", ErrStaleFence, 0, 0},
		{409, nil, `{"error":"stale_fence","message":"m","current_fences":"bad"}`, "stale_fence", ErrStaleFence, 0, 0},
		{500, nil, `{"error":"internal","message":"m"}`, "internal", nil, 0, 0},
		{502, nil, ``, "http_502", nil, 0, 0},
	}
	sentinels := []error{ErrTimeout, ErrAborted, ErrNotHolder, ErrTooManyWaiters, ErrTooManyKeys, ErrUnavailable, ErrInvalid, ErrUnauthorized, ErrForbidden, ErrLeaseLost,
		ErrSuperseded, ErrLeaseEnded, ErrLimitMismatch, ErrMaxHoldReached, ErrDrained, ErrStaleFence}
	for _, tt := range tests {
		t.Run(tt.code, func(t *testing.T) {
			h := tt.header
			if h == nil {
				h = http.Header{}
			}
			e := decodeAPIError(tt.status, h, []byte(tt.body))
			if e.Status != tt.status || e.Code != tt.code || e.Waiters != tt.waiters || e.RetryAfter != tt.retry || e.Message == "" {
				t.Errorf("decoded %+v, want status %d code %s waiters %d retry %s", e, tt.status, tt.code, tt.waiters, tt.retry)
			}
			var err error = e
			for _, s := range sentinels {
				if got := errors.Is(err, s); got != (s == tt.want) {
					t.Errorf("errors.Is(%v, %v) = %v", err, s, got)
				}
			}
		})
	}
}

// TestDecodeAPIErrorDetails: the codes that carry data hand it over.
func TestDecodeAPIErrorDetails(t *testing.T) {
	h := http.Header{}
	e := decodeAPIError(409, h, []byte(`{"error":"lease_ended","message":"m","fence":5,"outcome":"expired","ended_at":"2030-01-01T00:00:00.000Z"}`))
	if e.Fence != 5 || e.Outcome != "expired" || !e.EndedAt.Equal(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("lease_ended decoded as %+v", e)
	}
	if e := decodeAPIError(409, h, []byte(`{"error":"limit_mismatch","message":"m","limit":3}`)); e.Limit != 3 {
		t.Errorf("limit_mismatch decoded as %+v, want Limit 3", e)
	}
	if e := decodeAPIError(409, h, []byte(`{"error":"max_hold_reached","message":"m","expires_at":"2030-01-01T00:00:00.000Z"}`)); e.ExpiresAt.IsZero() {
		t.Errorf("max_hold_reached decoded as %+v, want ExpiresAt", e)
	}
	if e := decodeAPIError(409, h, []byte(`{"error":"drained","message":"m","reason":"maintenance"}`)); e.Reason != "maintenance" {
		t.Errorf("drained decoded as %+v, want Reason maintenance", e)
	}
	if e := decodeAPIError(409, h, []byte(`{"error":"stale_fence","message":"m","current_fences":[8,9]}`)); len(e.CurrentFences) != 2 || e.CurrentFences[1] != 9 {
		t.Errorf("stale_fence decoded as %+v, want CurrentFences [8 9]", e)
	}
	// A malformed detail spoils neither the code nor the message.
	if e := decodeAPIError(409, h, []byte(`{"error":"stale_fence","message":"m","current_fences":"x"}`)); e.Code != "stale_fence" || e.Message != "m" {
		t.Errorf("bad detail decoded as %+v", e)
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		in   string
		want time.Duration
	}{
		{"", 0},
		{"0", 0},
		{"1", time.Second},
		{" 120 ", 2 * time.Minute},
		{"-1", 0},
		{"1.5", 0},
		{"soon", 0},
		{"99999999999", 0},
		{now.Add(30 * time.Second).Format(http.TimeFormat), 30 * time.Second},
		{now.Add(-30 * time.Second).Format(http.TimeFormat), 0},
	}
	for _, tt := range tests {
		if got := parseRetryAfter(tt.in, now); got != tt.want {
			t.Errorf("parseRetryAfter(%q) = %s, want %s", tt.in, got, tt.want)
		}
	}
}

func TestBackoffIsCappedAndJittered(t *testing.T) {
	p := RetryPolicy{MaxAttempts: 10, MinBackoff: 100 * time.Millisecond, MaxBackoff: time.Second}
	for n := range 8 {
		hi := min(p.MinBackoff<<n, p.MaxBackoff)
		seen := map[time.Duration]bool{}
		for range 50 {
			d := p.backoff(n, 0)
			if d < hi/2 || d > hi {
				t.Fatalf("backoff(%d) = %s, want within [%s, %s]", n, d, hi/2, hi)
			}
			seen[d] = true
		}
		if len(seen) < 2 {
			t.Errorf("backoff(%d) not jittered: %v", n, seen)
		}
	}
	if d := p.backoff(0, 500*time.Millisecond); d < 500*time.Millisecond {
		t.Errorf("backoff below Retry-After: %s", d)
	}
	if d := p.backoff(0, time.Hour); d != time.Second {
		t.Errorf("Retry-After of an hour gave %s, want capped at MaxBackoff 1s", d)
	}
}

func FuzzDecodeAPIError(f *testing.F) {
	f.Add(423, "1", `{"error":"timeout","message":"m","waiters":3}`)
	f.Add(503, "Wed, 21 Oct 2015 07:28:00 GMT", `<html>`)
	f.Add(400, "", `{"error":5}`)
	f.Fuzz(func(t *testing.T, status int, retryAfter, body string) {
		e := decodeAPIError(status, http.Header{"Retry-After": {retryAfter}}, []byte(body))
		if e.Code == "" || e.Message == "" || e.RetryAfter < 0 || e.Error() == "" {
			t.Fatalf("decodeAPIError(%d, %q, %q) = %+v", status, retryAfter, body, e)
		}
		_ = errors.Is(e, ErrTimeout)
	})
}

// FuzzAcquireAnswer feeds Acquire arbitrary answers from a server (a
// proxy, a broken or hostile one): it must return a lease with a token or
// an error, never panic.
func FuzzAcquireAnswer(f *testing.F) {
	f.Add(200, `{"key":"k","token":"00112233445566778899aabbccddeeff","fence":7,"owner":"o","ttl_ms":30000,"expires_at":"2030-01-01T00:00:00.000Z","waited_ms":0,"previous":{"fence":6,"outcome":"expired"}}`)
	f.Add(200, `{"token":""}`)
	f.Add(200, `{"ttl_ms":-5,"waited_ms":9223372036854775807,"token":"x"}`)
	f.Add(423, `{"error":"timeout","message":"m","waiters":-1}`)
	f.Add(503, `not json`)
	f.Add(200, ``)
	var answer atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a := answer.Load().([2]any)
		w.WriteHeader(a[0].(int))
		io.WriteString(w, a[1].(string))
	}))
	f.Cleanup(srv.Close)
	c, err := New(srv.URL, WithRetry(RetryPolicy{MaxAttempts: 1}))
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, status int, body string) {
		if status < 200 || status > 599 {
			return
		}
		answer.Store([2]any{status, body})
		l, err := c.Acquire(t.Context(), "k")
		if (l == nil) == (err == nil) {
			t.Fatalf("Acquire = %v, %v: want exactly one of lease and error", l, err)
		}
		if l != nil {
			if l.Token == "" {
				t.Fatal("lease without a token")
			}
			l.mu.Lock()
			l.ended = true // nothing to release on this server
			l.stopTimerLocked()
			l.mu.Unlock()
		}
	})
}
