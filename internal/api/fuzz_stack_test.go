package api_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/mutexd/mutexd/internal/api"
	"github.com/mutexd/mutexd/internal/auth"
	"github.com/mutexd/mutexd/internal/engine"
)

// Tokens the stack fuzzer's server accepts; its seeds use them.
const (
	fuzzClientToken = "fuzz-client-token-0123"
	fuzzAdminToken  = "fuzz-admin-token-01234"
)

// stackSeparator splits a fuzz input into requests.
const stackSeparator = "\n~~~\n"

// FuzzHTTPStack drives the whole handler stack (routing, auth, parameter
// parsing, the engine, the error mapping, encoding) with raw HTTP/1.1
// requests: any method, path, header and body. An input is up to 8 chunks
// separated by a line "~~~": a request in wire format, in which "$TOKEN"
// becomes the lease token of the last grant; the same prefixed with "& ",
// which runs in the background (a waiter); or "sleep <duration>", which
// lets time pass (leases expire, waits end). It runs in a synctest bubble,
// so waits and TTLs cost no real time and every run is deterministic.
//
// No request may answer a 5xx other than 503 (so no panic, which would be a
// 500), every body but HEAD's is JSON with an "error" on failure, and after
// every request the engine's counters must agree with its contents.
// Seeds: testdata/fuzz/FuzzHTTPStack, the README's examples among them.
func FuzzHTTPStack(f *testing.F) {
	f.Add([]byte("POST /v1/locks/k/acquire HTTP/1.1\nHost: x\nAuthorization: Bearer " + fuzzClientToken + "\n\n" +
		stackSeparator + "POST /v1/locks/k/release?token=$TOKEN HTTP/1.1\nHost: x\nAuthorization: Bearer " + fuzzClientToken + "\n\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		synctest.Test(t, func(t *testing.T) { runStack(t, data) })
	})
}

func runStack(t *testing.T, data []byte) {
	eng := engine.New(engine.SystemClock{}, nil, engine.Limits{MaxKeys: 16, MaxWaitersPerKey: 4, MaxWaiters: 8,
		RememberOutcome: 10 * time.Minute, MaxRemembered: 64, DetachGrace: 10 * time.Second})
	defer eng.Close()
	toks, err := auth.NewTokens([]string{fuzzClientToken}, []string{fuzzAdminToken})
	if err != nil {
		t.Fatal(err)
	}
	var guard auth.Guard
	guard.Set(toks)
	s := api.New(api.Options{
		Locker: eng,
		Bounds: api.Bounds{DefaultTTL: 30 * time.Second, MinTTL: time.Second, MaxTTL: time.Hour, DefaultWait: 0, MaxWait: 10 * time.Minute,
			MaxHold: time.Hour},
		Auth:     &guard,
		Observer: checkCodes(t),
	})
	s.SetReady(true)
	var (
		mu    sync.Mutex // guards token
		token string
		wg    sync.WaitGroup
	)
	defer wg.Wait()
	for i, chunk := range strings.SplitN(string(data), stackSeparator, 8) {
		if d, ok := strings.CutPrefix(chunk, "sleep "); ok {
			if dur, err := time.ParseDuration(strings.TrimSpace(d)); err == nil && dur > 0 && dur <= 2*time.Hour {
				time.Sleep(dur)
			}
			continue
		}
		chunk, async := strings.CutPrefix(chunk, "& ")
		mu.Lock()
		chunk = strings.ReplaceAll(chunk, "$TOKEN", token)
		mu.Unlock()
		req, err := http.ReadRequest(bufio.NewReader(strings.NewReader(chunk)))
		if err != nil {
			continue // net/http's server would have refused it before our handlers
		}
		req.RemoteAddr = "192.0.2.1:1234"
		serve := func() {
			rec := httptest.NewRecorder()
			s.ServeHTTP(rec, req)
			if msg, tok := checkAnswer(rec, req); msg != "" {
				t.Errorf("request %d %s %s: %s", i, req.Method, req.RequestURI, msg)
			} else if tok != "" {
				mu.Lock()
				token = tok
				mu.Unlock()
			}
			if err := eng.Check(); err != nil {
				t.Errorf("after request %d %s %s: %v", i, req.Method, req.RequestURI, err)
			}
		}
		if async {
			// A waiter in the background; synctest.Wait lets it queue
			// before the next request, so the order is deterministic.
			wg.Go(serve)
			synctest.Wait()
			continue
		}
		serve()
		if t.Failed() {
			return
		}
	}
}

// checkAnswer returns what is wrong with an answer ("" if nothing) and the
// lease token it grants, if any.
func checkAnswer(rec *httptest.ResponseRecorder, req *http.Request) (problem, token string) {
	code, body := rec.Code, rec.Body.Bytes()
	if code >= 500 && code != http.StatusServiceUnavailable {
		return fmt.Sprintf("status %d %s", code, body), ""
	}
	if bytes.Contains(body, []byte(fuzzClientToken)) || bytes.Contains(body, []byte(fuzzAdminToken)) {
		return fmt.Sprintf("a bearer token is echoed: %s", body), ""
	}
	if req.Method == http.MethodHead || code == http.StatusNoContent {
		return "", "" // no body by definition (echo answers OPTIONS with 204)
	}
	var out map[string]any
	if err := json.Unmarshal(body, &out); err != nil {
		return fmt.Sprintf("status %d, body %q is not a JSON object", code, body), ""
	}
	if code >= 400 {
		if e, _ := out["error"].(string); e == "" || out["message"] == nil {
			return fmt.Sprintf("status %d without the error envelope: %s", code, body), ""
		}
	}
	token, _ = out["token"].(string)
	if code != http.StatusOK {
		token = ""
	}
	return "", token
}
