package api_test

import (
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/mutexd/mutexd/internal/engine"
)

// TestLookAlikeKeysAndOwners: keys and owners with invisible format
// characters (Unicode category Cf) are refused with a message naming the
// character, wherever they arrive (path, query, body, event filter);
// visible non-ASCII text is still accepted.
func TestLookAlikeKeysAndOwners(t *testing.T) {
	s, _ := newStreamServer(t, 10, 16, time.Minute)
	for _, tt := range []struct {
		name string
		char string // the format character, as U+XXXX
		text string
	}{
		{"right-to-left override", "U+202E", "invoice\u202Egnp.exe"},
		{"left-to-right embedding", "U+202A", "\u202Aorders:1"},
		{"pop directional formatting", "U+202C", "orders:1\u202C"},
		{"first strong isolate", "U+2068", "a\u2068b"},
		{"pop directional isolate", "U+2069", "a\u2069b"},
		{"zero-width space", "U+200B", "orders:\u200B1"},
		{"zero-width non-joiner", "U+200C", "orders:\u200C1"},
		{"zero-width joiner", "U+200D", "orders:\u200D1"},
		{"byte order mark", "U+FEFF", "\uFEFForders:1"},
		{"soft hyphen", "U+00AD", "or\u00ADders"},
		{"after other non-ASCII", "U+200B", "café\u200B"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			esc := url.PathEscape(tt.text)
			for _, r := range []struct {
				name, method, path, body, code string
			}{
				{"acquire key", "POST", "/v1/locks/" + esc + "/acquire", "", "invalid_key"},
				{"inspect key", "GET", "/v1/locks/" + esc, "", "invalid_key"},
				{"force-release key", "DELETE", "/v1/locks/" + esc, "", "invalid_key"},
				{"events key", "GET", "/v1/events?key=" + url.QueryEscape(tt.text), "", "invalid_key"},
				{"owner in query", "POST", "/v1/locks/k/acquire?owner=" + url.QueryEscape(tt.text), "", "invalid_owner"},
				{"owner in body", "POST", "/v1/locks/k/acquire", `{"owner":"` + tt.text + `"}`, "invalid_owner"},
			} {
				resp := s.do(t, r.method, r.path, r.body)
				wantError(t, resp, 400, r.code)
				if msg, _ := resp.body["message"].(string); !strings.Contains(msg, tt.char) {
					t.Errorf("%s: message %q does not name %s", r.name, msg, tt.char)
				}
			}
		})
	}
	if st := s.eng.Stats(); st != (engine.Stats{}) {
		t.Fatalf("refused requests changed the engine: %+v", st)
	}
	// Visible text in any script stays a valid key and owner.
	for _, key := range []string{"café", "заказ:1", "注文:1", "🔒", "עברית:1"} {
		b := s.acquire(t, url.PathEscape(key), "wait=0&owner="+url.QueryEscape(key))
		if b["key"] != key || b["owner"] != key {
			t.Errorf("acquire %q: %v", key, b)
		}
	}
}
