package api

import (
	"net/url"
	"testing"
)

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
