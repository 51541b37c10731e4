// Package demo drives a mutexd over its HTTP API the way a busy app does:
// workers contending on a few keys (Contend), and a scripted round that
// produces every lock outcome the metrics distinguish (Round). The
// docker-compose demo app (deploy/demo) runs both forever so the Grafana
// dashboard has something to show; the deploy tests run them briefly
// against a real daemon and a real Prometheus.
package demo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"sync"
	"time"
)

// Client calls one mutexd's API v1.
type Client struct {
	base string
	hc   *http.Client
}

// New returns a client for the daemon at base (http://127.0.0.1:7070).
// hc may be nil for http.DefaultClient.
func New(base string, hc *http.Client) *Client {
	if hc == nil {
		hc = http.DefaultClient
	}
	return &Client{base: base, hc: hc}
}

// Grant is the part of an acquire's answer the demo uses.
type Grant struct {
	Key      string `json:"key"`
	Token    string `json:"token"`
	Fence    uint64 `json:"fence"`
	WaitedMS int64  `json:"waited_ms"`
}

// APIError is an answer other than 200: the status and the API's error code.
type APIError struct {
	Status int
	Code   string // "timeout", "aborted", "not_holder", ...
}

func (e *APIError) Error() string { return fmt.Sprintf("mutexd answered %d %s", e.Status, e.Code) }

// IsCode reports whether err is an APIError with the given error code.
func IsCode(err error, code string) bool {
	var ae *APIError
	return errors.As(err, &ae) && ae.Code == code
}

// do sends one request and decodes a 200 answer into out (which may be
// nil); any other answer becomes an *APIError.
func (c *Client) do(ctx context.Context, method, path string, q url.Values, out any) error {
	u := c.base + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, nil)
	if err != nil {
		return err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error string `json:"error"`
		}
		if err := json.Unmarshal(body, &e); err != nil || e.Error == "" {
			return fmt.Errorf("%s %s: status %d with a body that is not an API error: %q", method, path, resp.StatusCode, body)
		}
		return &APIError{Status: resp.StatusCode, Code: e.Error}
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	return nil
}

func lockPath(key string, op string) string {
	p := "/v1/locks/" + url.PathEscape(key)
	if op != "" {
		p += "/" + op
	}
	return p
}

// AcquireOptions are an acquire's parameters; zero values are left to the
// server's defaults, except Wait where TryLock asks for wait=0.
type AcquireOptions struct {
	TTL     time.Duration
	Wait    time.Duration
	TryLock bool
	Owner   string
	OnError string // "continue" or "stop"
}

// Acquire asks for key's lock and blocks until the grant or the end of the wait.
func (c *Client) Acquire(ctx context.Context, key string, o AcquireOptions) (Grant, error) {
	q := url.Values{}
	if o.TTL > 0 {
		q.Set("ttl", o.TTL.String())
	}
	if o.TryLock {
		q.Set("wait", "0")
	} else if o.Wait > 0 {
		q.Set("wait", o.Wait.String())
	}
	if o.Owner != "" {
		q.Set("owner", o.Owner)
	}
	if o.OnError != "" {
		q.Set("on_error", o.OnError)
	}
	var g Grant
	err := c.do(ctx, http.MethodPost, lockPath(key, "acquire"), q, &g)
	return g, err
}

// Release ends the lease g; failed reports that the work failed.
func (c *Client) Release(ctx context.Context, g Grant, failed bool) error {
	q := url.Values{"token": {g.Token}}
	if failed {
		q.Set("outcome", "failed")
	}
	return c.do(ctx, http.MethodPost, lockPath(g.Key, "release"), q, nil)
}

// Renew extends the lease g by ttl.
func (c *Client) Renew(ctx context.Context, g Grant, ttl time.Duration) error {
	q := url.Values{"token": {g.Token}, "ttl": {ttl.String()}}
	return c.do(ctx, http.MethodPost, lockPath(g.Key, "renew"), q, nil)
}

// ForceRelease ends key's lease whoever holds it.
func (c *Client) ForceRelease(ctx context.Context, key string) error {
	return c.do(ctx, http.MethodDelete, lockPath(key, ""), nil, nil)
}

// Waiters returns how many acquires are queued on key.
func (c *Client) Waiters(ctx context.Context, key string) (int, error) {
	var info struct {
		Waiters int `json:"waiters"`
	}
	err := c.do(ctx, http.MethodGet, lockPath(key, ""), nil, &info)
	return info.Waiters, err
}

// List returns the active keys under prefix.
func (c *Client) List(ctx context.Context, prefix string) ([]string, error) {
	var page struct {
		Locks []struct {
			Key string `json:"key"`
		} `json:"locks"`
	}
	if err := c.do(ctx, http.MethodGet, "/v1/locks", url.Values{"prefix": {prefix}}, &page); err != nil {
		return nil, err
	}
	keys := make([]string, len(page.Locks))
	for i, l := range page.Locks {
		keys[i] = l.Key
	}
	return keys, nil
}

// Tally counts what the demo saw happen, by outcome name: the wait outcomes
// "acquired", "waited" (acquired after queueing), "timeout", "trylock_refused",
// "aborted", "cancelled", and the lease outcomes "released", "failed",
// "expired" (abandoned leases, left to expire), "forced".
type Tally map[string]int

// Add adds other's counts to t.
func (t Tally) Add(other Tally) {
	for k, v := range other {
		t[k] += v
	}
}

// Round runs one scripted round on keys of namespace ns (keys "ns:...") and
// returns what happened. In about two seconds it produces: a lease with
// on_error=stop that is abandoned and expires with an acquire queued behind
// it (aborted by the expiry); a hand-over to a queued waiter that then
// fails its work; a renewal; and, behind a stuck holder, an acquire that
// times out, one whose client gives up, a refused try-lock, a listing and
// a force-release. Every step's outcome is decided by the order of
// requests, not by timing, except that the queued acquire must reach the
// server within the abandoned lease's two seconds. An answer the API does
// not promise is returned as an error.
func (c *Client) Round(ctx context.Context, ns string) (Tally, error) {
	t := Tally{}
	var mu sync.Mutex // guards t while the scripts run
	count := func(outcome string) {
		mu.Lock()
		t[outcome]++
		mu.Unlock()
	}
	errs := make(chan error, 3)
	var wg sync.WaitGroup
	wg.Go(func() { errs <- c.expiryScript(ctx, ns+":expiring", count) })
	wg.Go(func() { errs <- c.handoverScript(ctx, ns+":handover", count) })
	wg.Go(func() { errs <- c.stuckScript(ctx, ns+":stuck", count) })
	wg.Wait()
	close(errs)
	var all []error
	for err := range errs {
		all = append(all, err)
	}
	return t, errors.Join(all...)
}

// expiryScript abandons an on_error=stop lease with a waiter behind it.
func (c *Client) expiryScript(ctx context.Context, key string, count func(string)) error {
	if _, err := c.Acquire(ctx, key, AcquireOptions{TTL: 2 * time.Second, Owner: "demo-crasher", OnError: "stop"}); err != nil {
		return fmt.Errorf("acquire %s: %w", key, err)
	}
	count("acquired")
	count("expired") // never released: the lease expires after its TTL
	g, err := c.Acquire(ctx, key, AcquireOptions{Wait: 10 * time.Second, Owner: "demo-patient"})
	switch {
	case IsCode(err, "aborted"):
		count("aborted")
		return nil
	case err == nil:
		_ = c.Release(ctx, g, false)
		return fmt.Errorf("acquire %s was granted: the abandoned lease expired before the acquire queued (a stall of over 2s?)", key)
	default:
		return fmt.Errorf("acquire %s queued behind an on_error=stop lease that expires: got %v, want 409 aborted", key, err)
	}
}

// handoverScript hands a lease to a queued waiter whose work then fails.
func (c *Client) handoverScript(ctx context.Context, key string, count func(string)) error {
	first, err := c.Acquire(ctx, key, AcquireOptions{TTL: 10 * time.Second, Owner: "demo-first"})
	if err != nil {
		return fmt.Errorf("acquire %s: %w", key, err)
	}
	count("acquired")
	type result struct {
		g   Grant
		err error
	}
	next := make(chan result, 1)
	go func() {
		g, err := c.Acquire(ctx, key, AcquireOptions{TTL: 10 * time.Second, Wait: 10 * time.Second, Owner: "demo-second"})
		next <- result{g, err}
	}()
	// Release only once the second acquire is queued, so it is a hand-over.
	if err := c.awaitWaiters(ctx, key, 1); err != nil {
		_ = c.Release(ctx, first, false)
		<-next
		return err
	}
	if err := c.Renew(ctx, first, 20*time.Second); err != nil {
		_ = c.Release(ctx, first, false)
		<-next
		return fmt.Errorf("renew %s: %w", key, err)
	}
	if err := c.Release(ctx, first, false); err != nil {
		<-next
		return fmt.Errorf("release %s: %w", key, err)
	}
	count("released")
	r := <-next
	if r.err != nil {
		return fmt.Errorf("queued acquire %s after the holder released: %w", key, r.err)
	}
	count("acquired")
	count("waited")
	if err := c.Release(ctx, r.g, true); err != nil {
		return fmt.Errorf("release %s with outcome=failed: %w", key, err)
	}
	count("failed")
	return nil
}

// stuckScript queues acquires behind a holder that does not let go, then
// force-releases it.
func (c *Client) stuckScript(ctx context.Context, key string, count func(string)) error {
	if _, err := c.Acquire(ctx, key, AcquireOptions{TTL: 30 * time.Second, Owner: "demo-stuck"}); err != nil {
		return fmt.Errorf("acquire %s: %w", key, err)
	}
	count("acquired")
	// Whatever happens below, the stuck lease is force-released.
	forced := false
	defer func() {
		if !forced {
			_ = c.ForceRelease(context.WithoutCancel(ctx), key)
		}
	}()
	errs := make(chan error, 2)
	var wg sync.WaitGroup
	wg.Go(func() {
		_, err := c.Acquire(ctx, key, AcquireOptions{Wait: 300 * time.Millisecond, Owner: "demo-hasty"})
		if IsCode(err, "timeout") {
			count("timeout")
			errs <- nil
			return
		}
		errs <- fmt.Errorf("acquire %s with wait=300ms behind a stuck holder: got %v, want 423 timeout", key, err)
	})
	wg.Go(func() {
		cctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		defer cancel()
		_, err := c.Acquire(cctx, key, AcquireOptions{Wait: 10 * time.Second, Owner: "demo-quitter"})
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
			count("cancelled")
			errs <- nil
			return
		}
		errs <- fmt.Errorf("acquire %s abandoned by its client after 200ms: got %v, want the client's deadline", key, err)
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			return err
		}
	}
	if _, err := c.Acquire(ctx, key, AcquireOptions{TryLock: true}); !IsCode(err, "timeout") {
		return fmt.Errorf("try-lock on held %s: got %v, want 423 timeout", key, err)
	}
	count("trylock_refused")
	if _, err := c.List(ctx, key); err != nil {
		return fmt.Errorf("list %s: %w", key, err)
	}
	forced = true
	if err := c.ForceRelease(ctx, key); err != nil {
		return fmt.Errorf("force-release %s: %w", key, err)
	}
	count("forced")
	return nil
}

// awaitWaiters polls key until at least n acquires are queued on it.
func (c *Client) awaitWaiters(ctx context.Context, key string, n int) error {
	for {
		got, err := c.Waiters(ctx, key)
		if err != nil {
			return fmt.Errorf("inspect %s: %w", key, err)
		}
		if got >= n {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// ContendOptions shape the steady contention of Contend.
type ContendOptions struct {
	// Workers is the number of concurrent workers.
	Workers int
	// Keys are the keys the workers contend on; their namespaces become
	// the dashboard's namespace label.
	Keys []string
	// MaxHold bounds a worker's simulated work while it holds a lock.
	MaxHold time.Duration
	// Wait is each acquire's wait; TTL each lease's TTL.
	Wait, TTL time.Duration
	// FailEvery and CrashEvery make roughly one in n leases end with
	// outcome=failed or be abandoned to expire (0: never).
	FailEvery, CrashEvery int
}

// Contend runs the workers until ctx ends and returns what they saw. An
// answer the API does not promise stops the worker and is returned.
func (c *Client) Contend(ctx context.Context, o ContendOptions) (Tally, error) {
	t := Tally{}
	var mu sync.Mutex // guards t and errs
	var errs []error
	var wg sync.WaitGroup
	for i := range o.Workers {
		wg.Go(func() {
			wt, err := c.worker(ctx, i, o)
			mu.Lock()
			defer mu.Unlock()
			t.Add(wt)
			if err != nil {
				errs = append(errs, err)
			}
		})
	}
	wg.Wait()
	return t, errors.Join(errs...)
}

func (c *Client) worker(ctx context.Context, id int, o ContendOptions) (Tally, error) {
	t := Tally{}
	rng := rand.New(rand.NewPCG(uint64(id), uint64(time.Now().UnixNano())))
	owner := fmt.Sprintf("demo-worker-%d", id)
	for ctx.Err() == nil {
		key := o.Keys[rng.IntN(len(o.Keys))]
		g, err := c.Acquire(ctx, key, AcquireOptions{TTL: o.TTL, Wait: o.Wait, Owner: owner})
		switch {
		case ctx.Err() != nil:
			return t, nil
		case IsCode(err, "timeout"):
			t["timeout"]++
			continue
		case IsCode(err, "aborted"):
			t["aborted"]++
			continue
		case err != nil:
			return t, fmt.Errorf("worker %d: acquire %s: %w", id, key, err)
		}
		t["acquired"]++
		if g.WaitedMS > 0 {
			t["waited"]++
		}
		if o.CrashEvery > 0 && rng.IntN(o.CrashEvery) == 0 {
			t["expired"]++ // walk away: the lease expires after its TTL
			continue
		}
		select {
		case <-ctx.Done():
			// Leave no lease behind when stopped.
			_ = c.Release(context.WithoutCancel(ctx), g, false)
			return t, nil
		case <-time.After(time.Duration(rng.Int64N(int64(o.MaxHold) + 1))):
		}
		failed := o.FailEvery > 0 && rng.IntN(o.FailEvery) == 0
		if err := c.Release(ctx, g, failed); err != nil {
			if ctx.Err() != nil {
				return t, nil
			}
			if IsCode(err, "not_holder") { // held past its TTL
				t["expired"]++
				continue
			}
			return t, fmt.Errorf("worker %d: release %s: %w", id, key, err)
		}
		if failed {
			t["failed"]++
		} else {
			t["released"]++
		}
	}
	return t, nil
}
