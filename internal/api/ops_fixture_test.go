package api_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/mutexd/mutexd/internal/api"
	"github.com/mutexd/mutexd/internal/auth"
	"github.com/mutexd/mutexd/internal/engine"
	"github.com/mutexd/mutexd/internal/fakeclock"
)

// opsServer is the API on a real listener over an engine on a fake clock
// (leases expire and delays end when the test says), with client and
// admin tokens, for the request_id, semaphore, hold-cap, lock-delay and
// operator tests.
type opsServer struct {
	*testServer
	clock *fakeclock.Clock
}

var opsBounds = api.Bounds{
	DefaultTTL: 30 * time.Second, MinTTL: time.Second, MaxTTL: time.Hour,
	DefaultWait: 30 * time.Second, MaxWait: 10 * time.Minute, MaxHold: 2 * time.Hour,
}

func newOpsServer(t *testing.T, limits engine.Limits, b api.Bounds) *opsServer {
	t.Helper()
	clock := fakeclock.New(time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC))
	eng := engine.New(clock, nil, limits)
	toks, err := auth.NewTokens([]string{clientToken}, []string{adminToken})
	if err != nil {
		t.Fatal(err)
	}
	guard := &auth.Guard{}
	guard.Set(toks)
	a := api.New(api.Options{Locker: eng, Bounds: b, Logger: testLogger(t), Observer: checkCodes(t), Auth: guard})
	a.SetReady(true)
	srv := httptest.NewServer(a)
	t.Cleanup(srv.Close)
	t.Cleanup(eng.Close)
	return &opsServer{testServer: &testServer{url: srv.URL, eng: eng, api: a}, clock: clock}
}

// client and admin send a request with a client or an admin token.
func (s *opsServer) client(t *testing.T, method, path, body string) response {
	t.Helper()
	return s.doCtx(t, t.Context(), method, path, body, map[string]string{"Authorization": "Bearer " + clientToken})
}

func (s *opsServer) admin(t *testing.T, method, path, body string) response {
	t.Helper()
	return s.doCtx(t, t.Context(), method, path, body, map[string]string{"Authorization": "Bearer " + adminToken})
}

// background sends a client request in its own goroutine (a waiter); its
// answer arrives on the channel. ctx may end it early (a client that
// disconnects).
func (s *opsServer) background(t *testing.T, ctx context.Context, method, path string, hdr map[string]string) <-chan response {
	t.Helper()
	h := map[string]string{"Authorization": "Bearer " + clientToken}
	for k, v := range hdr {
		h[k] = v
	}
	out := make(chan response, 1)
	go func() {
		req, err := http.NewRequestWithContext(ctx, method, s.url+path, nil)
		if err != nil {
			out <- response{status: -1, raw: err.Error()}
			return
		}
		for k, v := range h {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			out <- response{status: -1, raw: err.Error()}
			return
		}
		defer resp.Body.Close()
		out <- readResponse(resp)
	}()
	return out
}

// answer waits (at most 10 s) for a background request's answer.
func answer(t *testing.T, ch <-chan response) response {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("no answer within 10s")
		return response{}
	}
}

// pending fails the test if ch already has an answer.
func pending(t *testing.T, ch <-chan response, what string) {
	t.Helper()
	select {
	case r := <-ch:
		t.Fatalf("%s answered %d %s, want it still waiting", what, r.status, r.raw)
	default:
	}
}

// readResponse reads resp like testServer.doCtx does.
func readResponse(resp *http.Response) response {
	raw, _ := io.ReadAll(resp.Body)
	r := response{status: resp.StatusCode, header: resp.Header, raw: string(raw)}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		_ = json.Unmarshal(raw, &r.body)
	}
	return r
}
