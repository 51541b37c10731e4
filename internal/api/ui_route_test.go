package api_test

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/mutexd/mutexd/internal/api"
	"github.com/mutexd/mutexd/internal/engine"
	"github.com/mutexd/mutexd/internal/ui"
)

// TestConsoleMissingFileIsAJSON404: a path under /ui/ that the console
// does not have is an unknown route like any other, answered through the
// one error mapping, while its files are served as they are.
func TestConsoleMissingFileIsAJSON404(t *testing.T) {
	a := api.New(api.Options{Locker: engine.New(engine.SystemClock{}, nil, engine.Limits{}), Bounds: bounds, UI: ui.Handler(), Logger: testLogger(t), Observer: checkCodes(t)})
	srv := httptest.NewServer(a)
	defer srv.Close()
	s := &testServer{url: srv.URL, api: a}

	for _, path := range []string{"/ui/nope.js", "/ui/assets/app.js", "/ui/../../etc/passwd"} {
		wantError(t, s.do(t, http.MethodGet, path, ""), http.StatusNotFound, "not_found")
	}
	r := s.do(t, http.MethodGet, "/ui/", "")
	if r.status != http.StatusOK || r.header.Get("Content-Security-Policy") == "" || r.header.Get("Content-Type") != "text/html; charset=utf-8" {
		t.Fatalf("GET /ui/: %d %v, want the page with its CSP", r.status, r.header)
	}
}

// TestRootRedirectsToTheConsole: GET / leads a browser to the console when
// it is on, with a 302 (a 301 would be remembered after it is turned off),
// and is a plain 404 when it is off.
func TestRootRedirectsToTheConsole(t *testing.T) {
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, on := range []bool{true, false} {
		o := api.Options{Locker: engine.New(engine.SystemClock{}, nil, engine.Limits{}), Bounds: bounds, Logger: testLogger(t), Observer: checkCodes(t)}
		if on {
			o.UI = ui.Handler()
		}
		srv := httptest.NewServer(api.New(o))
		resp, err := noRedirect.Get(srv.URL + "/")
		srv.Close()
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		want, loc := http.StatusNotFound, ""
		if on {
			want, loc = http.StatusFound, "/ui/"
		}
		if resp.StatusCode != want || resp.Header.Get("Location") != loc {
			t.Errorf("console on=%v: GET / = %d Location %q, want %d %q", on, resp.StatusCode, resp.Header.Get("Location"), want, loc)
		}
	}
}
