package api_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/mutexd/mutexd/internal/api"
	"github.com/mutexd/mutexd/internal/engine"
)

// panicky is a Locker over a real engine that panics on demand, before or
// after the engine call, as a bug in a handler's path would.
type panicky struct {
	*engine.Engine
	when string // "before" or "after" the engine call; "" never
}

func (p *panicky) Acquire(ctx context.Context, key string, o engine.AcquireOptions) (engine.Grant, error) {
	if p.when == "before" {
		panic("injected before acquire")
	}
	g, err := p.Engine.Acquire(ctx, key, o)
	if p.when == "after" {
		panic("injected after acquire")
	}
	return g, err
}

func (p *panicky) Release(key string, t engine.Token, failed bool) (engine.Ended, error) {
	if p.when == "before" {
		panic("injected before release")
	}
	e, err := p.Engine.Release(key, t, failed)
	if p.when == "after" {
		panic("injected after release")
	}
	return e, err
}

func TestPanicBecomesJSON500(t *testing.T) {
	eng := engine.New(engine.SystemClock{}, nil, engine.Limits{})
	locker := &panicky{Engine: eng}
	logs := &lockedBuffer{}
	s := api.New(api.Options{
		Locker:   locker,
		Bounds:   api.Bounds{DefaultTTL: time.Minute, MinTTL: time.Second, MaxTTL: time.Hour, MaxWait: time.Minute},
		Logger:   slog.New(slog.NewJSONHandler(logs, nil)),
		Observer: checkCodes(t),
	})
	s.SetReady(true)
	hs := httptest.NewServer(s)
	defer hs.Close()
	post := func(path string) (int, http.Header, map[string]any) {
		t.Helper()
		resp, err := http.Post(hs.URL+path, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&body)
		return resp.StatusCode, resp.Header, body
	}

	// A holder, so release has a live lease to act on.
	_, _, grant := post("/v1/locks/k/acquire?ttl=1m")
	token, _ := grant["token"].(string)
	if token == "" {
		t.Fatalf("acquire: %v", grant)
	}
	for _, tt := range []struct{ when, path string }{
		{"before", "/v1/locks/k/acquire?wait=0"},
		{"before", "/v1/locks/k/release?token=" + token},
		{"after", "/v1/locks/other/acquire"},
		{"after", "/v1/locks/k/acquire?wait=0"},
	} {
		locker.when = tt.when
		code, h, body := post(tt.path)
		locker.when = ""
		if code != 500 || body["error"] != "internal" {
			t.Fatalf("panic %s %s: %d %v, want a JSON 500 internal", tt.when, tt.path, code, body)
		}
		id := h.Get("X-Request-Id")
		if id == "" || !strings.Contains(logs.String(), `"request_id":"`+id+`"`) {
			t.Fatalf("the panic's log line does not carry request id %q:\n%s", id, logs)
		}
		if err := eng.Check(); err != nil {
			t.Fatalf("after a panic %s %s: %v", tt.when, tt.path, err)
		}
	}
	if !strings.Contains(logs.String(), "injected") {
		t.Fatalf("the panic value is not logged:\n%s", logs)
	}
	// The server still serves, and the holder's lease is intact.
	if code, _, body := post("/v1/locks/k/release?token=" + token); code != 200 {
		t.Fatalf("release after the panics: %d %v", code, body)
	}
	// The lease granted just before a panic ("after /v1/locks/other")
	// was never seen by its client; it ends by its TTL like any lost lease.
	if st := eng.Stats(); st.Held != 1 || st.Waiters != 0 {
		t.Fatalf("stats %+v, want the one orphaned lease on other", st)
	}
	if err := eng.Check(); err != nil {
		t.Fatal(err)
	}
}
