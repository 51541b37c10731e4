package api

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/mutexd/mutexd/internal/engine"
)

// FuzzAppendString checks the hand-rolled JSON string encoder: its output
// is always valid JSON that decodes back to the input (with invalid UTF-8
// replaced), and never contains a raw <, > or &.
func FuzzAppendString(f *testing.F) {
	for _, s := range []string{"", "plain", `q"uote\`, "ctl\x00\x1f\n\t\r", "<img src=x onerror=alert(1)>", "café ☕", "\xff\xfe", "\u2028\u2029"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		b := appendString(nil, s)
		var got string
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatalf("appendString(%q) = %s: invalid JSON: %v", s, b, err)
		}
		if want := strings.ToValidUTF8(s, "\ufffd"); utf8.ValidString(s) && got != want {
			t.Fatalf("round trip of %q gave %q", s, got)
		}
		if strings.ContainsAny(string(b), "<>&") {
			t.Fatalf("appendString(%q) = %s: unescaped HTML character", s, b)
		}
	})
}

func TestAppendGrantMatchesEncodingJSON(t *testing.T) {
	g := engine.Grant{
		Key: `we"ird<key>`, Fence: 1795687745297011, Owner: "w\n1", TTL: 1500 * time.Millisecond,
		ExpiresAt: time.Date(2026, 11, 26, 10, 9, 15, 297_600_000, time.FixedZone("X", 3600)),
		Waited:    2500 * time.Microsecond,
		Previous:  engine.Previous{Fence: 7, Outcome: engine.OutcomeExpired, EndedAt: time.Date(2026, 11, 26, 9, 8, 0, 5_000_000, time.UTC)},
	}
	g.Token[0] = 0xab
	var got map[string]any
	if err := json.Unmarshal(appendGrant(nil, g, 3, "r-1"), &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"key": `we"ird<key>`, "token": "ab000000000000000000000000000000", "fence": 1795687745297011.0,
		"owner": "w\n1", "ttl_ms": 1500.0, "expires_at": "2026-11-26T09:09:15.297Z", "waited_ms": 2.0,
		"previous": map[string]any{"fence": 7.0, "outcome": "expired", "ended_at": "2026-11-26T09:08:00.005Z"},
		"limit":    3.0, "request_id": "r-1",
	}
	gotJSON, _ := json.Marshal(got)
	wantJSON, _ := json.Marshal(want)
	if string(gotJSON) != string(wantJSON) {
		t.Fatalf("appendGrant:\n got %s\nwant %s", gotJSON, wantJSON)
	}
}

// TestHandEncodersMatchEncodingJSON holds every hand encoder to the bytes
// encoding/json writes for the response's declared struct (plus the
// newline the encoders end with), for awkward keys, owners and times.
func TestHandEncodersMatchEncodingJSON(t *testing.T) {
	at := time.Date(2026, 11, 26, 10, 9, 15, 297_600_000, time.FixedZone("X", 3600))
	tok := engine.Token{0xab, 0x01, 0xff}
	for _, key := range []string{"k", `we"ird<key>&`, "tab\tand\u2028line", "caf\u00e9 \u2603", "ctl\x01"} {
		for _, prev := range []engine.Previous{{}, {Fence: 7, Outcome: engine.OutcomeExpired, EndedAt: at.Add(-time.Second)}} {
			g := engine.Grant{Key: key, Token: tok, Fence: 1795687745297011, Owner: key + "-owner", TTL: 1500 * time.Millisecond,
				ExpiresAt: at, Waited: 2500 * time.Microsecond, Previous: prev}
			for _, opt := range []struct {
				limit int
				id    string
			}{{0, ""}, {1, ""}, {10000, "req-" + key}, {2, "~!"}} {
				same(t, "appendGrant", appendGrant(nil, g, opt.limit, opt.id), newGrantJSON(g, opt.limit, opt.id))
			}
		}
		e := engine.Ended{Fence: 42, Held: 1234 * time.Millisecond}
		same(t, "appendReleased", appendReleased(nil, key, e), newReleasedJSON(key, e))
		r := engine.Renewal{Fence: 42, TTL: time.Minute, ExpiresAt: at}
		same(t, "appendRenewal", appendRenewal(nil, key, r), newRenewalJSON(key, r))
		n, f := 3, uint64(1795687745297011)
		fences, none := []uint64{1, f}, []uint64{}
		for _, ae := range []*Error{
			{Code: "timeout", Message: key, Waiters: &n}, {Code: "not_holder", Message: key},
			{Code: "lease_ended", Message: key, Fence: &f, Outcome: "expired", EndedAt: at},
			{Code: "limit_mismatch", Message: key, Limit: &n},
			{Code: "max_hold_reached", Message: key, ExpiresAt: at},
			{Code: "drained", Message: key, Reason: key},
			{Code: "stale_fence", Message: key, CurrentFences: &fences},
			{Code: "stale_fence", Message: key, CurrentFences: &none},
		} {
			same(t, "appendErrorBody", appendErrorBody(nil, ae), newErrorJSON(ae))
		}
	}
}

func same(t *testing.T, name string, got []byte, v any) {
	t.Helper()
	want, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want)+"\n" {
		t.Errorf("%s:\n got %s\nwant %s", name, got, want)
	}
}
