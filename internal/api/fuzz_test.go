package api_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"
	"unicode"

	"github.com/mutexd/mutexd/internal/api"
	"github.com/mutexd/mutexd/internal/engine"
)

// FuzzParams sends acquire, release, renew, inspect, list, fence-check,
// pause, resume and drain requests (per key and per prefix) built from
// fuzzed keys, query strings and bodies through the API handler. None
// may answer 500 or panic; every error is the JSON envelope; the engine's
// counters stay consistent; a granted key and owner hold no control or
// format character.
func FuzzParams(f *testing.F) {
	f.Add(uint8(0), "user:42", "ttl=30s&wait=0&owner=me&on_error=stop", "")
	f.Add(uint8(0), "k", "", `{"ttl":"1500ms","wait":5,"owner":"w","on_error":"continue"}`)
	f.Add(uint8(1), "k", "token=00112233445566778899aabbccddeeff&outcome=failed", "")
	f.Add(uint8(2), "k", "", `{"token":"x","ttl":90}`)
	f.Add(uint8(3), "a/b", "", "")
	f.Add(uint8(4), "", "prefix=user:&limit=2&after=user:1", "")
	f.Add(uint8(0), "\x00\xff", "ttl=%zz", "[1]")
	f.Add(uint8(0), "k", "ttl=9223372036854775807", `{"ttl":1e400}`)
	f.Add(uint8(0), "invoice\u202egnp.exe", "owner=a%E2%80%8Bb", "")
	f.Add(uint8(0), "k", "", `{"owner":"\ufeffme"}`)
	f.Add(uint8(0), "k", "request_id=job-1&limit=3&max_hold=1m&lock_delay=2s&ttl=1s", "")
	f.Add(uint8(0), "k", "", `{"request_id":"r\u00e9","limit":0,"max_hold":"500ms","lock_delay":"61s"}`)
	f.Add(uint8(0), "k", "limit=10001&request_id=%20", `{"limit":1e3}`)
	f.Add(uint8(5), "k", "", "")
	f.Add(uint8(6), "k", "", "")
	f.Add(uint8(7), "k", "reason=maintenance", "")
	f.Add(uint8(7), "k", "", `{"reason":"\u202e"}`)
	f.Add(uint8(8), "k", "", "9007199254740991")
	f.Add(uint8(8), "k", "", "-1")
	f.Add(uint8(9), "", "prefix=k", "")
	f.Add(uint8(10), "", "", `{"prefix":""}`)
	f.Add(uint8(11), "", "prefix=a&reason=r", "")
	eng := engine.New(engine.SystemClock{}, nil, engine.Limits{MaxKeys: 100, MaxWaitersPerKey: 2, MaxWaiters: 10, RememberOutcome: time.Minute})
	h := api.New(api.Options{Locker: eng, Bounds: api.Bounds{
		DefaultTTL: time.Second, MinTTL: time.Second, MaxTTL: time.Hour, DefaultWait: 0, MaxWait: 10 * time.Millisecond,
		MaxHold: time.Hour,
	}})
	h.SetReady(true)
	routes := []string{"/acquire", "/release", "/renew", "", "", "/pause", "/resume", "/waiters", "/fences/", "", "", ""}
	f.Fuzz(func(t *testing.T, op uint8, key, query, body string) {
		op %= uint8(len(routes))
		target := "/v1/locks/" + url.PathEscape(key) + routes[op]
		method := http.MethodPost
		switch op {
		case 3:
			method = http.MethodGet
		case 4:
			method, target = http.MethodGet, "/v1/locks"
		case 7:
			method = http.MethodDelete
		case 8: // the body is the fence
			method, target, body = http.MethodGet, target+url.PathEscape(body), ""
		case 9:
			target = "/v1/locks/pause"
		case 10:
			target = "/v1/locks/resume"
		case 11:
			method, target = http.MethodDelete, "/v1/locks/waiters"
		}
		u, err := url.Parse(target)
		if err != nil {
			return
		}
		u.RawQuery = query
		req := httptest.NewRequest(method, "/", strings.NewReader(body))
		req.URL, req.RequestURI = u, u.RequestURI()
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("%s %s body %q: status %d %s", method, u, body, rec.Code, rec.Body)
		}
		var out map[string]any
		if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
			t.Fatalf("%s %s: body %q is not JSON", method, u, rec.Body)
		}
		if rec.Code >= 400 {
			if code, _ := out["error"].(string); code == "" || out["message"] == "" {
				t.Fatalf("%s %s: error body %s lacks error/message", method, u, rec.Body)
			}
		}
		if rec.Code == 200 && op == 0 {
			// Whatever was accepted is visible text: no control or format
			// (Unicode Cf) character in the key or the owner.
			for _, field := range []string{"key", "owner"} {
				v, _ := out[field].(string)
				if i := strings.IndexFunc(v, func(r rune) bool { return unicode.IsControl(r) || unicode.Is(unicode.Cf, r) }); i >= 0 {
					t.Fatalf("%s %s body %q: accepted %s %q with an invisible character at byte %d", method, u, body, field, v, i)
				}
			}
			// Hand the lease back so the engine stays small.
			tok, _ := engine.ParseToken(out["token"].(string))
			if _, err := eng.Release(out["key"].(string), tok, false); err != nil {
				t.Fatalf("release of a fresh grant: %v", err)
			}
		}
		if st := eng.Stats(); st.Held > st.Keys || st.Waiters != 0 {
			t.Fatalf("engine counters inconsistent: %+v", st)
		}
	})
}
