package ui_test

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/page"
	cdpruntime "github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/mutexd/mutexd/internal/config"
	"github.com/mutexd/mutexd/internal/servertest"
)

var screenshots = flag.String("screenshots", "", "directory to save the console screenshots in (default: the test's temporary directory)")

// findChromium returns the path of Debian's chromium. Outside CI a machine
// without it skips the browser tests; in CI it is a failure, since
// .ci/setup.d installs it.
func findChromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("chromium not found; .ci/setup.d/50-chromium.sh installs it")
	}
	t.Skip("chromium not found; install Debian's chromium package to run the browser tests")
	return ""
}

// daemon is a real mutexd served in-process; it can be restarted on the
// same address.
type daemon struct {
	t     *testing.T
	addr  string
	token string // sent as a bearer token by acquire
	srv   *servertest.Server
}

// startDaemon serves on addr ("127.0.0.1:0" for any free port), changed
// by configure, and waits until it is ready.
func startDaemon(t *testing.T, addr string, configure ...func(*config.Config)) *daemon {
	t.Helper()
	srv := servertest.Start(t, append([]func(*config.Config){func(c *config.Config) {
		c.Listen = addr
		c.ShutdownTimeout = 5 * time.Second
	}}, configure...)...)
	d := &daemon{t: t, addr: strings.TrimPrefix(srv.URL, "http://"), srv: srv}
	deadline := time.Now().Add(10 * time.Second)
	for {
		res, err := http.Get(srv.URL + "/readyz")
		if err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return d
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("daemon on %s never became ready", d.addr)
		}
		<-time.After(20 * time.Millisecond)
	}
}

func (d *daemon) url() string { return d.srv.URL }

// shutdown stops the daemon gracefully and waits until it has stopped.
func (d *daemon) shutdown() {
	if err := d.srv.Stop(); err != nil {
		d.t.Errorf("stop mutexd: %v", err)
	}
}

type grant struct {
	Token string `json:"token"`
	Fence uint64 `json:"fence"`
	Owner string `json:"owner"`
}

// acquire is the curl walk-through's acquire: a POST with query parameters.
func (d *daemon) acquire(key, owner, ttl, wait string) (grant, int, error) {
	q := url.Values{"owner": {owner}, "wait": {wait}, "ttl": {ttl}}
	req, err := http.NewRequest("POST", d.url()+"/v1/locks/"+url.PathEscape(key)+"/acquire?"+q.Encode(), nil)
	if err != nil {
		return grant{}, 0, err
	}
	if d.token != "" {
		req.Header.Set("Authorization", "Bearer "+d.token)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return grant{}, 0, err
	}
	defer res.Body.Close()
	var g grant
	if res.StatusCode == http.StatusOK {
		err = json.NewDecoder(res.Body).Decode(&g)
	}
	return g, res.StatusCode, err
}

func (d *daemon) mustAcquire(key, owner string) grant {
	d.t.Helper()
	g, code, err := d.acquire(key, owner, "10m", "0")
	if err != nil || code != http.StatusOK {
		d.t.Fatalf("acquire %q: status %d, err %v", key, code, err)
	}
	return g
}

// queueWaiters starts one waiting acquire per owner, in order, each only
// once the one before is queued, and returns their results.
func (d *daemon) queueWaiters(wg *sync.WaitGroup, key string, owners ...string) <-chan grant {
	d.t.Helper()
	out := make(chan grant, len(owners))
	base := d.srv.Engine().Inspect(key, 0).Waiters
	for i, owner := range owners {
		wg.Go(func() {
			g, code, err := d.acquire(key, owner, "10m", "60s")
			if err == nil && code == http.StatusOK {
				out <- g
			}
		})
		deadline := time.Now().Add(5 * time.Second)
		for d.srv.Engine().Inspect(key, 0).Waiters != base+i+1 {
			if time.Now().After(deadline) {
				d.t.Fatalf("waiter %s on %q never queued", owner, key)
			}
			<-time.After(5 * time.Millisecond)
		}
	}
	return out
}

// js quotes s as a JavaScript string literal.
func js(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// rowsJS lists the overview's rows as [key, holder] pairs.
const rowsJS = `[...document.querySelectorAll('#keys-body tr')].map(r => [r.dataset.key, r.children[1].textContent])`

func hasRow(key string) string {
	return fmt.Sprintf(`[...document.querySelectorAll('#keys-body tr')].some(r => r.dataset.key === %s)`, js(key))
}

// queueJS lists the key view's queue owners in order.
const queueJS = `[...document.querySelectorAll('#queue-body tr td.owner')].map(td => td.textContent)`

// browser is one headless Chromium with one tab.
type browser struct {
	ctx     context.Context
	dialogs atomic.Int32 // JavaScript dialogs opened (alert, confirm...)
	shots   string

	mu         sync.Mutex // guards the following
	exceptions []string   // uncaught JavaScript exceptions
}

// newBrowser starts Debian's chromium headless with a fresh profile.
func newBrowser(t *testing.T, extra ...chromedp.ExecAllocatorOption) *browser {
	t.Helper()
	chromium := findChromium(t)
	shots := *screenshots
	if shots == "" {
		shots = t.TempDir()
	}
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.WithoutCancel(t.Context()), append([]chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromium),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 800),
	}, extra...)...)
	t.Cleanup(cancelAlloc)
	ctx, cancel := chromedp.NewContext(alloc)
	t.Cleanup(cancel)
	b := &browser{ctx: ctx, shots: shots}
	if err := chromedp.Listen(ctx, func(ev any) {
		if ex, ok := ev.(*cdpruntime.EventExceptionThrown); ok && ex.ExceptionDetails != nil {
			b.mu.Lock()
			b.exceptions = append(b.exceptions, ex.ExceptionDetails.Text)
			b.mu.Unlock()
		}
		if _, ok := ev.(*page.EventJavascriptDialogOpening); ok {
			b.dialogs.Add(1)
			go func() { // Listen's func must not run commands itself
				_, _ = chromedp.Run(ctx, func(ctx context.Context, t *chromedp.Target) (struct{}, error) {
					return cdp.Call(ctx, t, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: false})
				})
			}()
		}
	}); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	// Every page records what its Content-Security-Policy refuses. Scripts
	// added through DevTools are not subject to the policy.
	b.run(t, "watch CSP violations", func(ctx context.Context, tg *chromedp.Target) (chromedp.Void, error) {
		_, err := cdp.Call(ctx, tg, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{
			Source: `window.__csp = []; document.addEventListener('securitypolicyviolation', e => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));`})
		return chromedp.Void{}, err
	})
	return b
}

// checkPage fails the test if the page threw an uncaught exception or its
// Content-Security-Policy refused anything (the console must need nothing
// the policy forbids).
func (b *browser) checkPage(t *testing.T) {
	t.Helper()
	b.mu.Lock()
	ex := b.exceptions
	b.mu.Unlock()
	if len(ex) > 0 {
		t.Errorf("uncaught JavaScript exceptions: %q", ex)
	}
	var violations []string
	b.eval(t, `window.__csp || ['the CSP watcher is missing']`, &violations)
	if len(violations) > 0 {
		t.Errorf("CSP violations: %q", violations)
	}
}

// run runs browser actions with a bound, so a broken page fails the test
// instead of hanging it.
func (b *browser) run(t *testing.T, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// waitFor waits until the JavaScript expression is truthy.
func (b *browser) waitFor(t *testing.T, what, expr string, within time.Duration) {
	t.Helper()
	b.run(t, what, func(ctx context.Context, tg *chromedp.Target) (chromedp.Void, error) {
		_, err := chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingTimeout(within))(ctx, tg)
		return chromedp.Void{}, err
	})
}

// eval evaluates expr and decodes its JSON value into out.
func (b *browser) eval(t *testing.T, expr string, out any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	raw, err := chromedp.Run(ctx, chromedp.Evaluate[json.RawMessage](expr))
	if err != nil {
		t.Fatalf("evaluate %s: %v", expr, err)
	}
	if err := json.Unmarshal(raw, out); err != nil {
		t.Fatalf("evaluate %s: decode %s: %v", expr, raw, err)
	}
}

// shot saves a PNG of the viewport.
func (b *browser) shot(t *testing.T, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	if err := os.WriteFile(filepath.Join(b.shots, name), png, 0o644); err != nil {
		t.Fatal(err)
	}
}

const live = `document.getElementById('conn').dataset.state === 'live'`

// slack bounds waits that have no stated deadline; the ones the console
// promises (a new key within 2 s) keep theirs. CI machines are shared and
// run the browser beside every other package's tests.
const slack = 10 * time.Second

func TestConsoleInBrowser(t *testing.T) {
	b := newBrowser(t)
	run, waitFor, eval, shot := b.run, b.waitFor, b.eval, b.shot
	d := startDaemon(t, "127.0.0.1:0")
	var waiters sync.WaitGroup
	defer waiters.Wait()
	running := d
	defer func() {
		if running != nil {
			running.shutdown()
		}
	}()

	// Some keys exist before the page opens: they come from the snapshot.
	d.mustAcquire("invoice:1042", "billing-worker-3")
	d.mustAcquire("user:7:profile", "api-7f9c")
	run(t, "open /ui/", chromedp.EmulateViewport(1280, 800), chromedp.Navigate(d.url()+"/ui/"))
	waitFor(t, "connection indicator live", live, slack)
	waitFor(t, "snapshot rows", hasRow("invoice:1042")+" && "+hasRow("user:7:profile"), slack)

	t.Run("acquired key appears without reload", func(t *testing.T) {
		d.mustAcquire("orders:981", "checkout-2")
		waitFor(t, "orders:981 in the table within 2s", hasRow("orders:981"), 2*time.Second)
		var rows [][2]string
		eval(t, rowsJS, &rows)
		found := false
		for _, r := range rows {
			if r[0] == "orders:981" {
				found = true
				if r[1] != "checkout-2" {
					t.Fatalf("holder of orders:981 = %q, want checkout-2", r[1])
				}
			}
		}
		if !found {
			t.Fatalf("rows = %v, want orders:981", rows)
		}
	})

	const queued = "report:daily"
	var handedOver <-chan grant
	t.Run("queue order matches arrival order", func(t *testing.T) {
		// A holder whose 1s lease expires hands over to cron-a: the key's
		// recent events then show an expiry in the warning colour.
		if _, code, err := d.acquire(queued, "cron-nightly", "1s", "0"); code != http.StatusOK {
			t.Fatalf("acquire %s: %d %v", queued, code, err)
		}
		select {
		case g := <-d.queueWaiters(&waiters, queued, "cron-a"):
			if g.Owner != "cron-a" {
				t.Fatalf("after the expiry the lock went to %q, want cron-a", g.Owner)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("the 1s lease never expired")
		}
		handedOver = d.queueWaiters(&waiters, queued, "worker-1", "worker-2", "worker-3")
		d.queueWaiters(&waiters, "invoice:1042", "billing-worker-5")
		waitFor(t, "waiters on the overview", fmt.Sprintf(
			`[...document.querySelectorAll('#keys-body tr')].some(r => r.dataset.key === %s && r.children[5].textContent === '3')`, js(queued)), 2*time.Second)
		shot(t, "console-overview.png")
		sortBy := func(by string) {
			eval(t, fmt.Sprintf(`(() => { const s = document.getElementById('sort'); s.value = %s; s.dispatchEvent(new Event('change')); return true; })()`, js(by)), new(bool))
		}
		sortBy("waiters")
		waitFor(t, "sorted by waiters: the key with three first, then one",
			`[...document.querySelectorAll('#keys-body tr')].slice(0, 2).map(r => r.dataset.key).join() === 'report:daily,invoice:1042'`, 2*time.Second)
		sortBy("key")
		run(t, "open the key view", chromedp.Navigate(d.url()+"/ui/#/key/"+url.PathEscape(queued)))
		waitFor(t, "queue of three", queueJS+`.length === 3`, slack)
		var owners []string
		eval(t, queueJS, &owners)
		if want := []string{"worker-1", "worker-2", "worker-3"}; fmt.Sprint(owners) != fmt.Sprint(want) {
			t.Fatalf("queue = %v, want %v", owners, want)
		}
		waitFor(t, "the expiry among the recent events, in the warning colour", `[...document.querySelectorAll('#events-list li.ev-expired')].some(li => getComputedStyle(li).backgroundColor !== getComputedStyle(li.parentElement).backgroundColor)`, 2*time.Second)
		shot(t, "console-key.png")
	})

	t.Run("force release hands the lock to the next waiter", func(t *testing.T) {
		if handedOver == nil {
			t.Skip("needs the queue of the previous subtest")
		}
		waitFor(t, "the key view's holder", `document.querySelector('#holder dd.owner') && document.querySelector('#holder dd.owner').textContent === 'cron-a'`, slack)
		run(t, "press Force release", chromedp.Click("#force-btn"))
		waitFor(t, "confirmation", `!document.getElementById('force-confirm').hidden`, 2*time.Second)
		run(t, "confirm", chromedp.Click("#force-yes"))
		select {
		case g := <-handedOver:
			if g.Owner != "worker-1" {
				t.Fatalf("the lock went to %q, want worker-1 (first in line)", g.Owner)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("no waiter was granted after the force release")
		}
		waitFor(t, "the page shows the new holder and queue",
			`document.querySelector('#holder dd.owner') && document.querySelector('#holder dd.owner').textContent === 'worker-1' && `+queueJS+`.join() === 'worker-2,worker-3'`, 2*time.Second)
		waitFor(t, "a forced event in the key's recent events", `[...document.querySelectorAll('#events-list li')].some(li => li.classList.contains('ev-forced'))`, 2*time.Second)
	})

	t.Run("hostile key renders as text", func(t *testing.T) {
		const hostile = `<img src=x onerror=alert(1)>`
		const owner = `<b>bold</b>`
		d.mustAcquire(hostile, owner)
		run(t, "back to the overview", chromedp.Navigate(d.url()+"/ui/#/"))
		waitFor(t, "hostile row", hasRow(hostile), 2*time.Second)
		var res struct {
			Link  string `json:"link"`
			Owner string `json:"owner"`
			Imgs  int    `json:"imgs"`
			Bolds int    `json:"bolds"`
		}
		eval(t, fmt.Sprintf(`(() => { const r = [...document.querySelectorAll('#keys-body tr')].find(r => r.dataset.key === %s);
			return {link: r.querySelector('a').textContent, owner: r.children[1].textContent,
				imgs: document.querySelectorAll('img').length, bolds: document.querySelectorAll('b').length}; })()`, js(hostile)), &res)
		if res.Link != hostile || res.Owner != owner || res.Imgs != 0 || res.Bolds != 0 {
			t.Fatalf("overview rendered %+v, want the key and owner literally and no <img> or <b> element", res)
		}
		run(t, "open its key view", chromedp.Navigate(d.url()+"/ui/#/key/"+url.PathEscape(hostile)))
		waitFor(t, "hostile key view", fmt.Sprintf(`document.getElementById('key-title').textContent === %s && document.querySelector('#holder dd.owner') && document.querySelector('#holder dd.owner').textContent === %s`, js(hostile), js(owner)), slack)
		eval(t, `document.querySelectorAll('img').length + document.querySelectorAll('b').length`, &res.Imgs)
		if res.Imgs != 0 {
			t.Fatalf("the key view holds %d <img>/<b> elements, want none", res.Imgs)
		}
		if n := b.dialogs.Load(); n != 0 {
			t.Fatalf("%d JavaScript dialogs opened, want none", n)
		}
	})

	t.Run("phone width and dark mode", func(t *testing.T) {
		run(t, "phone viewport, dark", chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(2)),
			chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
				_, err := cdp.Call(ctx, tg, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
					Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: "dark"}}})
				return err
			}),
			chromedp.Navigate(d.url()+"/ui/#/key/"+url.PathEscape(queued)))
		waitFor(t, "key view at phone width", queueJS+`.length === 2`, slack)
		var overflow int
		eval(t, `document.documentElement.scrollWidth - window.innerWidth`, &overflow)
		if overflow > 0 {
			t.Errorf("the key view is %dpx wider than a 390px screen", overflow)
		}
		shot(t, "console-key-phone-dark.png")
		run(t, "overview", chromedp.Navigate(d.url()+"/ui/#/"))
		waitFor(t, "overview at phone width", hasRow(queued), slack)
		eval(t, `document.documentElement.scrollWidth - window.innerWidth`, &overflow)
		if overflow > 0 {
			t.Errorf("the overview is %dpx wider than a 390px screen (its table scrolls in its own box)", overflow)
		}
		shot(t, "console-overview-phone-dark.png")
		run(t, "desktop again", chromedp.EmulateViewport(1280, 800),
			chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
				_, err := cdp.Call(ctx, tg, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{})
				return err
			}))
	})

	t.Run("keyboard reaches a key and its force release", func(t *testing.T) {
		run(t, "overview", chromedp.Navigate(d.url()+"/ui/#/"))
		waitFor(t, "rows", hasRow("orders:981"), slack)
		run(t, "focus the prefix filter", chromedp.Focus("#filter"), chromedp.KeyEvent("orders"))
		waitFor(t, "filtered", `document.querySelectorAll('#keys-body tr').length === 1`, 2*time.Second)
		// Tab from the filter past the sort control and the open-key form
		// to the first key link.
		for range 4 {
			run(t, "tab", chromedp.KeyEvent("\t"))
		}
		var active string
		eval(t, `document.activeElement.dataset.key || document.activeElement.id`, &active)
		if active != "orders:981" {
			t.Fatalf("after four tabs focus is on %q, want the link of orders:981", active)
		}
		run(t, "enter", chromedp.KeyEvent("\r"))
		waitFor(t, "key view by keyboard", `document.getElementById('key-title').textContent === 'orders:981'`, 2*time.Second)
		eval(t, `(() => { document.getElementById('force-btn').focus(); return document.activeElement.id; })()`, &active)
		if active != "force-btn" {
			t.Fatalf("force release button not focusable (focus on %q)", active)
		}
		eval(t, `(() => { const f = document.getElementById('filter'); f.value = ''; f.dispatchEvent(new Event('input')); return true; })()`, new(bool))
	})

	t.Run("reconnects after a server restart", func(t *testing.T) {
		run(t, "overview", chromedp.Navigate(d.url()+"/ui/#/"))
		waitFor(t, "live", live, slack)
		running = nil
		d.shutdown()
		waitFor(t, "indicator leaves live", `!(`+live+`)`, slack)
		d2 := startDaemon(t, d.addr)
		running = d2
		waitFor(t, "live again", live, 2*slack)
		d2.mustAcquire("after:restart", "phoenix")
		waitFor(t, "a key of the new server within 2s", hasRow("after:restart"), 2*time.Second)
		waitFor(t, "the old server's keys are gone", `!`+hasRow("orders:981"), 2*time.Second)
	})
	b.checkPage(t)
	t.Logf("screenshots in %s", b.shots)
}

// TestConsoleShowsWhatHappenedBeforeItOpened: a console opened after the
// fact shows the server's rates and totals (not 0 for the 41 grants it did
// not watch) and, in a key's view, the expiry the server kept in its
// history, marked as history.
func TestConsoleShowsWhatHappenedBeforeItOpened(t *testing.T) {
	b := newBrowser(t)
	d := startDaemon(t, "127.0.0.1:0")
	defer d.shutdown()
	for i := range 40 {
		g := d.mustAcquire("warm:1", fmt.Sprintf("worker-%d", i))
		req, _ := http.NewRequest("POST", d.url()+"/v1/locks/warm:1/release?token="+g.Token, nil)
		res, err := http.DefaultClient.Do(req)
		if err != nil || res.StatusCode != http.StatusOK {
			t.Fatalf("release %d: %v %v", i, res, err)
		}
		res.Body.Close()
	}
	const crashed = "job:crashed"
	if _, code, err := d.acquire(crashed, "worker-dead", "1s", "0"); code != http.StatusOK {
		t.Fatalf("acquire %s: %d %v", crashed, code, err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for d.srv.Engine().Inspect(crashed, 0).Held {
		if time.Now().After(deadline) {
			t.Fatal("the 1s lease never expired")
		}
		<-time.After(20 * time.Millisecond)
	}

	b.run(t, "open /ui/", chromedp.EmulateViewport(1280, 800), chromedp.Navigate(d.url()+"/ui/"))
	b.waitFor(t, "live", live, slack)
	t.Run("tiles", func(t *testing.T) {
		b.waitFor(t, "the server's rates on the tiles, not 0",
			`parseFloat(document.getElementById('t-grants').textContent) > 0 && parseFloat(document.getElementById('t-expired').textContent) > 0`, slack)
		b.waitFor(t, "the server's totals on the tiles",
			`document.getElementById('t-grants-total').textContent === '41 since start' && document.getElementById('t-expired-total').textContent === '1 since start'`, slack)
		b.shot(t, "console-overview-after.png")
	})
	t.Run("key view", func(t *testing.T) {
		b.run(t, "open the crashed key's view", chromedp.Navigate(d.url()+"/ui/#/key/"+url.PathEscape(crashed)))
		b.waitFor(t, "the expiry from the server's history, marked as history, in the warning colour",
			`[...document.querySelectorAll('#events-list li.ev-expired.ev-history')].some(li => li.textContent.includes('worker-dead') && getComputedStyle(li).backgroundColor !== getComputedStyle(li.parentElement).backgroundColor)`, slack)
		var kinds []string
		b.eval(t, `[...document.querySelectorAll('#events-list li .ev-type')].map(s => s.textContent)`, &kinds)
		if fmt.Sprint(kinds) != "[expired granted]" {
			t.Fatalf("recent events of %s = %v, want [expired granted] (newest first, each once)", crashed, kinds)
		}
		// What happens now is live, not history.
		d.mustAcquire(crashed, "worker-new")
		b.waitFor(t, "a live grant, not marked as history",
			`[...document.querySelectorAll('#events-list li.ev-granted')].some(li => li.textContent.includes('worker-new') && !li.classList.contains('ev-history'))`, 2*time.Second)
	})
	b.checkPage(t)
}

// TestConsoleWithAuth: with tokens configured the console asks for one,
// keeps it in the tab, and shows the overview and force release only to an
// admin token; a client token can follow one key.
func TestConsoleWithAuth(t *testing.T) {
	const client, admin = "client-token-0123456789", "admin-token-0123456789ab"
	b := newBrowser(t)
	d := startDaemon(t, "127.0.0.1:0", func(c *config.Config) {
		c.Auth.Tokens = []string{client}
		c.Auth.AdminTokens = []string{admin}
	})
	var waiters sync.WaitGroup
	defer waiters.Wait() // they end with the daemon
	defer d.shutdown()
	d.token = client
	d.mustAcquire("tenant:9", "svc-a")

	useToken := func(t *testing.T, tok string) {
		t.Helper()
		b.waitFor(t, "token form", `!document.getElementById('token-form').hidden || (document.getElementById('token-toggle').click(), false)`, 2*time.Second)
		b.run(t, "enter token", chromedp.Focus("#token-input"), chromedp.KeyEvent(tok+"\r"))
	}
	b.run(t, "open /ui/", chromedp.Navigate(d.url()+"/ui/"))
	b.waitFor(t, "asks for a token", `document.getElementById('conn').dataset.state === 'auth' && !document.getElementById('token-form').hidden`, slack)

	useToken(t, client)
	b.waitFor(t, "client token: the overview needs an admin", `document.getElementById('conn').dataset.state === 'auth' && document.getElementById('notice').textContent.includes('admin token')`, slack)
	b.run(t, "open the key by name", chromedp.Focus("#goto-key"), chromedp.KeyEvent("tenant:9\r"))
	b.waitFor(t, "one key live with a client token", live+` && document.querySelector('#holder dd.owner') && document.querySelector('#holder dd.owner').textContent === 'svc-a'`, slack)
	b.waitFor(t, "the grant before the page opened, from the key's history", `[...document.querySelectorAll('#events-list li.ev-granted.ev-history')].some(li => li.textContent.includes('svc-a'))`, slack)
	var hidden bool
	b.eval(t, `document.getElementById('force').hidden`, &hidden)
	if !hidden {
		t.Fatal("force release shown to a client token")
	}
	b.eval(t, `document.getElementById('key-admin').hidden && document.getElementById('key-admin').offsetParent === null`, &hidden)
	if !hidden {
		t.Fatal("pause and drain shown to a client token")
	}
	d.queueWaiters(&waiters, "tenant:9", "svc-b")
	b.waitFor(t, "the key's events arrive", queueJS+`.join() === 'svc-b'`, 2*time.Second)

	b.run(t, "open the token form", chromedp.Click("#token-toggle"))
	useToken(t, admin)
	b.waitFor(t, "admin token: force release offered", live+` && !document.getElementById('force').hidden`, slack)
	b.waitFor(t, "admin token: pause and drain offered", `document.getElementById('key-admin').offsetParent !== null`, slack)
	b.run(t, "overview", chromedp.Navigate(d.url()+"/ui/#/"))
	b.waitFor(t, "admin token: the overview lists keys", hasRow("tenant:9"), slack)
	b.run(t, "type a prefix", chromedp.Focus("#filter"), chromedp.KeyEvent("tenant:"))
	b.waitFor(t, "admin token: the prefix's actions offered", `document.getElementById('prefix-admin').offsetParent !== null`, 2*time.Second)
	var stored int
	b.eval(t, `localStorage.length + sessionStorage.length + document.cookie.length`, &stored)
	if stored != 0 {
		t.Fatal("the token left the tab's memory (web storage or cookies)")
	}
	b.checkPage(t)
}
