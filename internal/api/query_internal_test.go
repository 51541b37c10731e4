package api

import (
	"math/rand/v2"
	"net/url"
	"testing"
	"time"
)

func TestAppendTimeMatchesAppendFormat(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	times := []time.Time{
		{}, time.Unix(0, 0), time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC),
		time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(2026, 11, 26, 10, 9, 15, 297_000_000, time.FixedZone("x", -7*3600)),
	}
	for range 10000 {
		times = append(times, time.Unix(r.Int64N(1<<36)-1<<35, r.Int64N(1e9)))
	}
	for _, tm := range times {
		want := `"` + tm.UTC().Format(TimeFormat) + `"`
		if got := string(appendTime(nil, tm)); got != want {
			t.Fatalf("appendTime(%v) = %s, want %s", tm, got, want)
		}
	}
}

// FuzzQueryMatchesParseQuery checks parseQuery against the url.ParseQuery
// based parsing it replaced: the same values, and an error exactly when
// the old code gave one, of the same kind.
func FuzzQueryMatchesParseQuery(f *testing.F) {
	for _, s := range []string{"ttl=30s&wait=0&owner=me", "ttl=%zz", "a;b=1", "owner=a+b%20c&owner=last", "&&ttl=1&", "bogus=1&ttl=%zz", "=x", "ttl", "on_error=stop&x=1"} {
		f.Add(s)
	}
	allowed := []param{pTTL, pWait, pOwner, pOnError}
	f.Fuzz(func(t *testing.T, raw string) {
		var got params
		gotErr := parseQuery(raw, allowed, &got)

		var want params
		var wantCode string
		q, err := url.ParseQuery(raw)
		if err != nil {
			wantCode = "invalid_query"
		} else {
			for name, vs := range q {
				k, ok := lookupParam(name, allowed)
				if !ok {
					wantCode = "invalid_parameter"
					break
				}
				want.vals[k], want.set[k] = vs[len(vs)-1], true
			}
		}
		if wantCode != "" {
			ae, ok := gotErr.(*Error)
			if !ok || ae.Code != wantCode {
				t.Fatalf("parseQuery(%q) error = %v, want %s", raw, gotErr, wantCode)
			}
			return
		}
		if gotErr != nil {
			t.Fatalf("parseQuery(%q) error = %v, want none", raw, gotErr)
		}
		if got != want {
			t.Fatalf("parseQuery(%q) = %+v, want %+v", raw, got, want)
		}
	})
}
