package ui_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
)

// TestBrowserAttacksWithoutAuth drives a real browser against a token-less
// daemon on loopback (the default) the two ways a web page can: a page of
// another site that sends a simple cross-site POST (text/plain, no CORS
// preflight), and a DNS-rebinding page, whose name the browser resolves to
// 127.0.0.1 (simulated with Chromium's --host-resolver-rules), so that its
// requests are same-origin to the browser. Neither may take or free a
// lock; the console on 127.0.0.1 (TestConsoleInBrowser) keeps working.
func TestBrowserAttacksWithoutAuth(t *testing.T) {
	b := newBrowser(t, chromedp.Flag("host-resolver-rules", "MAP *.test 127.0.0.1"))
	d := startDaemon(t, "127.0.0.1:0")
	defer d.shutdown()
	port := d.addr[strings.LastIndexByte(d.addr, ':')+1:]
	d.mustAcquire("victim", "alice")

	// A page of another site posts an acquire to the daemon on loopback.
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		fmt.Fprintf(w, `<!doctype html><title>evil</title><script>
fetch('http://127.0.0.1:%s/v1/locks/stolen/acquire', {method: 'POST', mode: 'no-cors', headers: {'Content-Type': 'text/plain'}, body: '{"ttl":"1h"}'})
  .catch(() => {}).finally(() => { document.title = 'sent'; });
</script>`, port)
	}))
	defer evil.Close()
	evilPort := evil.URL[strings.LastIndexByte(evil.URL, ':')+1:]
	b.run(t, "open the other site's page", chromedp.Navigate("http://evil.test:"+evilPort+"/"))
	b.waitFor(t, "the cross-site POST was sent", `document.title === 'sent'`, slack)
	if d.srv.Held("stolen") {
		t.Fatal("a cross-site page took a lock")
	}

	// A rebinding page: its name resolves to the daemon, so to the browser
	// the daemon's API is same-origin and readable.
	base := "http://rebind.test:" + port
	b.run(t, "open the rebinding page", chromedp.Navigate(base+"/ui/"))
	var got struct {
		List, Release int
		Code          string
	}
	var started bool
	b.eval(t, `(async () => {
  const list = await fetch('/v1/locks');
  const release = await fetch('/v1/locks/victim', {method: 'DELETE'});
  window.__got = {List: list.status, Release: release.status, Code: (await release.json()).error};
})(), true`, &started)
	b.waitFor(t, "the rebinding page has its answers", `!!window.__got`, slack)
	b.eval(t, `window.__got`, &got)
	if got.List != 403 || got.Release != 403 || got.Code != "forbidden_host" {
		t.Fatalf("rebinding page: list %d, force-release %d %q; want 403, 403 forbidden_host", got.List, got.Release, got.Code)
	}
	if !d.srv.Held("victim") {
		t.Fatal("a rebinding page freed a lock")
	}
}
