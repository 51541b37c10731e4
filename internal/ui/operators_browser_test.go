package ui_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"
)

// answer is what an acquire got: a grant, or an error's code and reason.
type answer struct {
	Code   int
	Grant  grant
	Error  string `json:"error"`
	Reason string `json:"reason"`
	Err    error
}

// acquireWith sends an acquire with the given query parameters (owner,
// ttl, wait, limit, lock_delay...) and decodes either answer.
func (d *daemon) acquireWith(key string, q url.Values) answer {
	req, err := http.NewRequest("POST", d.url()+"/v1/locks/"+url.PathEscape(key)+"/acquire?"+q.Encode(), nil)
	if err != nil {
		return answer{Err: err}
	}
	if d.token != "" {
		req.Header.Set("Authorization", "Bearer "+d.token)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return answer{Err: err}
	}
	defer res.Body.Close()
	a := answer{Code: res.StatusCode}
	if res.StatusCode == http.StatusOK {
		a.Err = json.NewDecoder(res.Body).Decode(&a.Grant)
	} else {
		a.Err = json.NewDecoder(res.Body).Decode(&a)
	}
	return a
}

// waitOn starts a waiting acquire (60 s) and waits until the engine has
// queued it; its answer arrives on the channel.
func (d *daemon) waitOn(wg *sync.WaitGroup, key, owner string, extra url.Values) <-chan answer {
	d.t.Helper()
	out := make(chan answer, 1)
	base := d.srv.Waiters(key)
	q := url.Values{"owner": {owner}, "ttl": {"10m"}, "wait": {"60s"}}
	for k, v := range extra {
		q[k] = v
	}
	wg.Go(func() { out <- d.acquireWith(key, q) })
	deadline := time.Now().Add(5 * time.Second)
	for d.srv.Waiters(key) != base+1 {
		if time.Now().After(deadline) {
			d.t.Fatalf("waiter %s on %q never queued", owner, key)
		}
		<-time.After(5 * time.Millisecond)
	}
	return out
}

// serverKey is the daemon's inspection of key, as the console reads it.
func (d *daemon) serverKey(t *testing.T, key string) map[string]any {
	t.Helper()
	res, err := http.Get(d.url() + "/v1/locks/" + url.PathEscape(key))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var m map[string]any
	if err := json.NewDecoder(res.Body).Decode(&m); err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("inspect %s: %d %v", key, res.StatusCode, err)
	}
	return m
}

func received(t *testing.T, what string, ch <-chan answer) answer {
	t.Helper()
	select {
	case a := <-ch:
		return a
	case <-time.After(5 * time.Second):
		t.Fatalf("%s: no answer within 5s", what)
		return answer{}
	}
}

// ownersJS lists the owners of the key view's holders, oldest first.
const ownersJS = `[...document.querySelectorAll('#holder dd.owner')].map(dd => dd.textContent)`

// cellJS is the text of the overview cell labelled label in key's row
// (empty when the row is missing).
func cellJS(key, label string) string {
	return fmt.Sprintf(`(() => { const r = [...document.querySelectorAll('#keys-body tr')].find(r => r.dataset.key === %s);
		const td = r && [...r.children].find(td => td.dataset.label === %s); return td ? td.textContent : ''; })()`, js(key), js(label))
}

// shown is true when the element with that id is on screen.
func shown(id string) string {
	return fmt.Sprintf(`(() => { const e = document.getElementById(%s); return !!e && e.offsetParent !== null; })()`, js(id))
}

// press clicks a button once it is on screen: on a console without it the
// test fails within the wait instead of waiting for chromedp's own bound.
func (b *browser) press(t *testing.T, id string) {
	t.Helper()
	b.waitFor(t, "#"+id+" on screen", shown(id), 2*time.Second)
	b.run(t, "press #"+id, chromedp.Click("#"+id))
}

// TestConsoleOperators: a semaphore's holders and slots, pause and resume
// and drain from the key view with their confirmation, a lock-delay's end
// counting down, a key's last outcome, and the overview's actions on the
// keys under its prefix filter.
func TestConsoleOperators(t *testing.T) {
	b := newBrowser(t)
	d := startDaemon(t, "127.0.0.1:0")
	var waiters sync.WaitGroup
	defer waiters.Wait() // they end with the daemon at the latest
	defer d.shutdown()
	b.run(t, "open /ui/", chromedp.EmulateViewport(1280, 800), chromedp.Navigate(d.url()+"/ui/"))
	b.waitFor(t, "live", live, slack)

	t.Run("a semaphore shows every holder and its slots", func(t *testing.T) {
		const pool = "pool:db"
		for _, owner := range []string{"api-1", "api-2"} {
			if a := d.acquireWith(pool, url.Values{"owner": {owner}, "ttl": {"10m"}, "wait": {"0"}, "limit": {"3"}}); a.Code != http.StatusOK {
				t.Fatalf("acquire %s as %s: %+v", pool, owner, a)
			}
		}
		// Learnt from its events: the overview asks the server for the limit.
		b.waitFor(t, "2/3 in the overview's slots", cellJS(pool, "Slots")+` === '2/3'`, slack)
		var holder string
		b.eval(t, cellJS(pool, "Holder"), &holder)
		if holder != "api-1 +1" {
			t.Errorf("holder cell = %q, want the oldest holder and how many more (api-1 +1)", holder)
		}
		b.run(t, "open the key view", chromedp.Navigate(d.url()+"/ui/#/key/"+url.PathEscape(pool)))
		b.waitFor(t, "2 of 3 held", `document.getElementById('slots').textContent === '2 of 3 held' && `+shown("slots"), slack)
		var owners []string
		b.eval(t, ownersJS, &owners)
		if fmt.Sprint(owners) != "[api-1 api-2]" {
			t.Fatalf("holders = %v, want [api-1 api-2] (oldest first)", owners)
		}
		b.shot(t, "console-key-semaphore.png")
	})

	const key = "job:export"
	first := d.mustAcquire(key, "exporter-1")
	b.run(t, "open "+key, chromedp.Navigate(d.url()+"/ui/#/key/"+url.PathEscape(key)))
	b.waitFor(t, "its holder", ownersJS+`.join() === 'exporter-1'`, slack)

	var queued <-chan answer
	t.Run("pause from the page: an acquire queues", func(t *testing.T) {
		b.press(t, "pause-btn")
		b.waitFor(t, "the confirmation in the page", shown("key-confirm")+` && document.getElementById('key-question').textContent.includes('Pause')`, 2*time.Second)
		if d.srv.Engine().Inspect(key, 0).Paused {
			t.Fatal("paused before the confirmation")
		}
		b.press(t, "key-yes")
		b.waitFor(t, "the key shows paused", shown("key-paused"), 2*time.Second)
		if !d.srv.Engine().Inspect(key, 0).Paused {
			t.Fatal("the page says paused, the server does not")
		}
		b.waitFor(t, "the paused event", `!!document.querySelector('#events-list li.ev-paused')`, 2*time.Second)
		// The holder leaves; the paused key grants nobody.
		req, _ := http.NewRequest("POST", d.url()+"/v1/locks/"+key+"/release?token="+first.Token, nil)
		if res, err := http.DefaultClient.Do(req); err != nil || res.StatusCode != http.StatusOK {
			t.Fatalf("release: %v %v", res, err)
		}
		queued = d.waitOn(&waiters, key, "exporter-2", nil)
		b.waitFor(t, "no holder, exporter-2 queued, still paused", `document.getElementById('holder-none').offsetParent !== null && `+queueJS+`.join() === 'exporter-2' && `+shown("key-paused"), 2*time.Second)
		b.waitFor(t, "the pause button now resumes", `document.getElementById('pause-btn').textContent === 'Resume'`, 2*time.Second)
		select {
		case a := <-queued:
			t.Fatalf("a paused key answered an acquire: %+v", a)
		default:
		}
		b.run(t, "overview", chromedp.Navigate(d.url()+"/ui/#/"))
		b.waitFor(t, "a paused marker in the overview", fmt.Sprintf(`[...document.querySelectorAll('#keys-body tr')].some(r => r.dataset.key === %s && r.querySelector('td.key .tag-paused'))`, js(key)), slack)
		b.shot(t, "console-overview-paused.png")
		b.run(t, "back to the key", chromedp.Navigate(d.url()+"/ui/#/key/"+url.PathEscape(key)))
	})

	t.Run("resume from the page grants the waiter", func(t *testing.T) {
		if queued == nil {
			t.Fatal("nothing to resume: the previous subtest could not pause the key from the page")
		}
		b.press(t, "pause-btn")
		b.waitFor(t, "the confirmation", shown("key-confirm")+` && document.getElementById('key-question').textContent.includes('Resume')`, 2*time.Second)
		b.press(t, "key-yes")
		if a := received(t, "the queued acquire", queued); a.Code != http.StatusOK || a.Grant.Owner != "exporter-2" {
			t.Fatalf("after resuming, the waiter got %+v, want a grant", a)
		}
		b.waitFor(t, "the page shows the grant, not paused", ownersJS+`.join() === 'exporter-2' && !`+shown("key-paused"), 2*time.Second)
		b.waitFor(t, "the resumed event", `!!document.querySelector('#events-list li.ev-resumed')`, 2*time.Second)
	})

	t.Run("drain from the page answers the waiters", func(t *testing.T) {
		w1 := d.waitOn(&waiters, key, "late-1", nil)
		w2 := d.waitOn(&waiters, key, "late-2", nil)
		b.waitFor(t, "two waiters", queueJS+`.join() === 'late-1,late-2'`, 2*time.Second)
		b.press(t, "drain-btn")
		b.waitFor(t, "the confirmation asks for a reason", shown("key-confirm")+` && `+shown("drain-reason")+` && document.getElementById('key-question').textContent.includes('2 waiters')`, 2*time.Second)
		if n := d.srv.Waiters(key); n != 2 {
			t.Fatalf("%d waiters before the confirmation, want 2", n)
		}
		// By keyboard: the reason has focus; Enter confirms.
		b.run(t, "type a reason and confirm", chromedp.KeyEvent("maintenance window\r"))
		for _, w := range []<-chan answer{w1, w2} {
			if a := received(t, "a drained waiter", w); a.Code != http.StatusConflict || a.Error != "drained" || a.Reason != "maintenance window" {
				t.Fatalf("waiter got %+v, want 409 drained with the reason", a)
			}
		}
		b.waitFor(t, "drained events with the reason, queue empty, holder kept",
			`[...document.querySelectorAll('#events-list li.ev-drained')].filter(li => li.textContent.includes('maintenance window')).length === 2 && `+
				queueJS+`.length === 0 && `+ownersJS+`.join() === 'exporter-2'`, 2*time.Second)
		b.waitFor(t, "the result", `document.getElementById('key-result').textContent === 'Drained 2 waiters.'`, 2*time.Second)
		var colour [2]string
		b.eval(t, `(() => { const li = document.querySelector('#events-list li.ev-drained .ev-type'), d = document.querySelector('#events-list li .ev-detail'); return [getComputedStyle(li).color, getComputedStyle(d).color]; })()`, &colour)
		if colour[0] == colour[1] {
			t.Errorf("a drained event's type has the plain text colour %s, want a warning colour", colour[0])
		}
	})

	t.Run("a lock-delay after a force release shows its end", func(t *testing.T) {
		const slow = "job:slow"
		if a := d.acquireWith(slow, url.Values{"owner": {"stuck"}, "ttl": {"10m"}, "wait": {"0"}, "lock_delay": {"45s"}}); a.Code != http.StatusOK {
			t.Fatalf("acquire %s: %+v", slow, a)
		}
		b.run(t, "open "+slow, chromedp.Navigate(d.url()+"/ui/#/key/"+url.PathEscape(slow)))
		b.waitFor(t, "its holder", ownersJS+`.join() === 'stuck'`, slack)
		b.press(t, "force-btn")
		b.press(t, "force-yes")
		b.waitFor(t, "the lock-delay on screen", shown("key-delay"), 2*time.Second)
		end, _ := d.serverKey(t, slow)["delay_until"].(string)
		if end == "" {
			t.Fatal("the server has no lock-delay in force")
		}
		var got struct{ End, Left string }
		b.eval(t, `({End: document.getElementById('key-delay-end').dateTime, Left: document.getElementById('key-delay-left').textContent})`, &got)
		if got.End != end {
			t.Fatalf("the page's lock-delay ends %q, the server's %q", got.End, end)
		}
		b.waitFor(t, "it counts down", fmt.Sprintf(`document.getElementById('key-delay-left').textContent !== %s && document.getElementById('key-delay-left').textContent.endsWith(' left)')`, js(got.Left)), 3*time.Second)
		b.waitFor(t, "the delayed event", `!!document.querySelector('#events-list li.ev-delayed')`, 2*time.Second)
		b.waitFor(t, "the last outcome: forced", shown("key-last")+` && document.getElementById('key-last-text').textContent.includes('force-released')`, 2*time.Second)
		b.shot(t, "console-key-delay.png")
		b.run(t, "overview", chromedp.Navigate(d.url()+"/ui/#/"))
		b.waitFor(t, "the delayed key stays in the overview, marked", fmt.Sprintf(`[...document.querySelectorAll('#keys-body tr')].some(r => r.dataset.key === %s && r.querySelector('td.key .tag-delay'))`, js(slow)), slack)
	})

	t.Run("the overview acts on its prefix", func(t *testing.T) {
		d.mustAcquire("batch:1", "b-1")
		d.mustAcquire("batch:2", "b-2")
		b.run(t, "overview", chromedp.Navigate(d.url()+"/ui/#/"))
		b.waitFor(t, "rows", hasRow("batch:1")+" && "+hasRow("batch:2"), slack)
		if ok := !d.srv.Engine().Inspect("batch:1", 0).Paused; !ok {
			t.Fatal("paused already")
		}
		b.run(t, "type the prefix", chromedp.Focus("#filter"), chromedp.KeyEvent("batch:"))
		b.press(t, "ppause-btn")
		b.waitFor(t, "the confirmation names the prefix", shown("prefix-confirm")+` && document.getElementById('prefix-question').textContent.includes('“batch:”') && document.getElementById('prefix-question').textContent.includes('2 active keys')`, 2*time.Second)
		if d.srv.Engine().Inspect("batch:1", 0).Paused {
			t.Fatal("paused before the confirmation")
		}
		b.press(t, "prefix-yes")
		b.waitFor(t, "both rows marked paused", `[...document.querySelectorAll('#keys-body tr')].filter(r => r.querySelector('td.key .tag-paused')).length === 2`, 2*time.Second)
		for _, k := range []string{"batch:1", "batch:2", key} {
			if got, want := d.srv.Engine().Inspect(k, 0).Paused, k != key; got != want {
				t.Errorf("%s paused = %v, want %v", k, got, want)
			}
		}
		w := d.waitOn(&waiters, "batch:1", "b-3", nil)
		b.press(t, "pdrain-btn")
		b.waitFor(t, "the drain's confirmation", shown("prefix-confirm")+` && document.getElementById('prefix-question').textContent.includes('1 waiter')`, 2*time.Second)
		b.press(t, "prefix-yes")
		if a := received(t, "the drained waiter", w); a.Code != http.StatusConflict || a.Error != "drained" {
			t.Fatalf("waiter got %+v, want 409 drained", a)
		}
		b.press(t, "presume-btn")
		b.waitFor(t, "the resume's confirmation", shown("prefix-confirm"), 2*time.Second)
		b.press(t, "prefix-yes")
		b.waitFor(t, "no row marked paused", `document.querySelectorAll('#keys-body tr td.key .tag-paused').length === 0 && document.getElementById('prefix-result').textContent.startsWith('Resumed 2 keys')`, 2*time.Second)
		if d.srv.Engine().Inspect("batch:2", 0).Paused {
			t.Error("batch:2 still paused after the resume")
		}
	})
	t.Run("phone width and dark mode", func(t *testing.T) {
		b.run(t, "phone viewport, dark", chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(2)),
			chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
				_, err := cdp.Call(ctx, tg, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
					Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: "dark"}}})
				return err
			}))
		fits := func(what string) {
			t.Helper()
			var overflow int
			b.eval(t, `document.documentElement.scrollWidth - window.innerWidth`, &overflow)
			if overflow > 0 {
				t.Errorf("%s is %dpx wider than a 390px screen", what, overflow)
			}
		}
		b.press(t, "pdrain-btn") // the filter still says batch:
		b.waitFor(t, "the prefix's drain confirmation", shown("prefix-reason"), 2*time.Second)
		fits("the overview asking to drain a prefix")
		b.shot(t, "console-overview-prefix-phone-dark.png")
		b.press(t, "prefix-no")
		b.run(t, "a semaphore's key view", chromedp.Navigate(d.url()+"/ui/#/key/pool:db"))
		b.waitFor(t, "its holders", ownersJS+`.length === 2`, slack)
		b.press(t, "drain-btn")
		b.waitFor(t, "the drain's confirmation", shown("drain-reason"), 2*time.Second)
		fits("the key view asking to drain")
		b.shot(t, "console-key-semaphore-phone-dark.png")
		b.press(t, "key-no")
	})
	if n := b.dialogs.Load(); n != 0 {
		t.Errorf("%d JavaScript dialogs opened, want none (confirmations are in the page)", n)
	}
	b.checkPage(t)
}
