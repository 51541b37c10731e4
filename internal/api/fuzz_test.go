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

// FuzzParams sends acquire, release, renew, inspect and list requests built
// from fuzzed keys, query strings and bodies through the API handler. None
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
	eng := engine.New(engine.SystemClock{}, nil, engine.Limits{MaxKeys: 100, MaxWaitersPerKey: 2, MaxWaiters: 10})
	h := api.New(api.Options{Locker: eng, Bounds: api.Bounds{
		DefaultTTL: time.Second, MinTTL: time.Second, MaxTTL: time.Hour, DefaultWait: 0, MaxWait: 10 * time.Millisecond,
	}})
	h.SetReady(true)
	routes := []string{"/acquire", "/release", "/renew", "", ""}
	f.Fuzz(func(t *testing.T, op uint8, key, query, body string) {
		op %= uint8(len(routes))
		target := "/v1/locks/" + url.PathEscape(key) + routes[op]
		method := http.MethodPost
		if op == 3 {
			method = http.MethodGet
		} else if op == 4 {
			method, target = http.MethodGet, "/v1/locks"
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
