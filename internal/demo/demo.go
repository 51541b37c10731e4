// Package demo drives a mutexd through the public Go client the way a busy
// app does: workers contending on a few keys (Contend), and a scripted
// round that produces every lock outcome the metrics distinguish (Round). The
// docker-compose demo app (deploy/demo) runs both forever so the Grafana
// dashboard has something to show; the deploy tests run them briefly
// against a real daemon and a real Prometheus.
package demo

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/mutexd/mutexd/client"
)

// Client drives one mutexd through the public Go client.
type Client struct {
	c     *client.Client
	hc    *http.Client // for the operator's force-release, which the client lacks
	token string
}

// New returns a demo client for the daemon at base (http://127.0.0.1:7070).
// token, when not empty, is sent as a bearer token; on a daemon with
// authentication it must be an admin token, since a round lists keys and
// force-releases one.
func New(base, token string) (*Client, error) {
	hc := &http.Client{}
	opts := []client.Option{client.WithHTTPClient(hc)}
	if token != "" {
		opts = append(opts, client.WithToken(token))
	}
	c, err := client.New(base, opts...)
	if err != nil {
		return nil, err
	}
	return &Client{c: c, hc: hc, token: token}, nil
}

// forceRelease ends key's lease whoever holds it, as an operator would
// with DELETE /v1/locks/{key}.
func (c *Client) forceRelease(ctx context.Context, key string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodDelete, c.c.BaseURL()+"/v1/locks/"+url.PathEscape(key), nil)
	if err != nil {
		return err
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("DELETE /v1/locks/%s: status %d, want 200", key, resp.StatusCode)
	}
	return nil
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
	if _, err := c.c.Acquire(ctx, key, client.TTL(2*time.Second), client.Owner("demo-crasher"), client.OnError(client.Stop)); err != nil {
		return err
	}
	count("acquired")
	count("expired") // never released: the lease expires after its TTL
	l, err := c.c.Acquire(ctx, key, client.Wait(10*time.Second), client.Owner("demo-patient"))
	switch {
	case errors.Is(err, client.ErrAborted):
		count("aborted")
		return nil
	case err == nil:
		_ = l.Release(ctx)
		return fmt.Errorf("acquire %s was granted: the abandoned lease expired before the acquire queued (a stall of over 2s?)", key)
	default:
		return fmt.Errorf("acquire %s queued behind an on_error=stop lease that expires: got %w, want aborted", key, err)
	}
}

// handoverScript hands a lease to a queued waiter whose work then fails.
func (c *Client) handoverScript(ctx context.Context, key string, count func(string)) error {
	first, err := c.c.Acquire(ctx, key, client.TTL(10*time.Second), client.Owner("demo-first"))
	if err != nil {
		return err
	}
	count("acquired")
	type result struct {
		l   *client.Lease
		err error
	}
	next := make(chan result, 1)
	go func() {
		l, err := c.c.Acquire(ctx, key, client.TTL(10*time.Second), client.Wait(10*time.Second), client.Owner("demo-second"))
		next <- result{l, err}
	}()
	// Release only once the second acquire is queued, so it is a hand-over.
	err = c.awaitWaiters(ctx, key, 1)
	if err == nil {
		err = first.Renew(ctx, 20*time.Second)
	}
	if rerr := first.Release(ctx); err == nil {
		err = rerr
	}
	r := <-next
	if err != nil {
		if r.err == nil {
			_ = r.l.Release(ctx)
		}
		return err
	}
	count("released")
	if r.err != nil {
		return fmt.Errorf("queued acquire after the holder released: %w", r.err)
	}
	count("acquired")
	count("waited")
	if err := r.l.Fail(ctx); err != nil {
		return err
	}
	count("failed")
	return nil
}

// stuckScript queues acquires behind a holder that does not let go, then
// force-releases it.
func (c *Client) stuckScript(ctx context.Context, key string, count func(string)) error {
	if _, err := c.c.Acquire(ctx, key, client.TTL(30*time.Second), client.Owner("demo-stuck")); err != nil {
		return err
	}
	count("acquired")
	// Whatever happens below, the stuck lease is force-released.
	forced := false
	defer func() {
		if !forced {
			_ = c.forceRelease(context.WithoutCancel(ctx), key)
		}
	}()
	errs := make(chan error, 2)
	var wg sync.WaitGroup
	wg.Go(func() {
		_, err := c.c.Acquire(ctx, key, client.Wait(300*time.Millisecond), client.Owner("demo-hasty"))
		if errors.Is(err, client.ErrTimeout) {
			count("timeout")
			errs <- nil
			return
		}
		errs <- fmt.Errorf("acquire %s with a 300ms wait behind a stuck holder: got %v, want a timeout", key, err)
	})
	wg.Go(func() {
		cctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		defer cancel()
		_, err := c.c.Acquire(cctx, key, client.Wait(10*time.Second), client.Owner("demo-quitter"))
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
	if _, err := c.c.Acquire(ctx, key, client.Wait(0)); !errors.Is(err, client.ErrTimeout) {
		return fmt.Errorf("try-lock on held %s: got %v, want a timeout", key, err)
	}
	count("trylock_refused")
	if _, err := c.c.List(ctx, client.ListOptions{Prefix: key}); err != nil {
		return err
	}
	forced = true
	if err := c.forceRelease(ctx, key); err != nil {
		return err
	}
	count("forced")
	return nil
}

// awaitWaiters polls key until at least n acquires are queued on it.
func (c *Client) awaitWaiters(ctx context.Context, key string, n int) error {
	for {
		st, err := c.c.Inspect(ctx, key)
		if err != nil {
			return err
		}
		if st.Waiters >= n {
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
	// the dashboard's lock_namespace label.
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
	owner := client.Owner(fmt.Sprintf("demo-worker-%d", id))
	errWorkFailed := errors.New("the work failed")
	for ctx.Err() == nil {
		key := o.Keys[rng.IntN(len(o.Keys))]
		if o.CrashEvery > 0 && rng.IntN(o.CrashEvery) == 0 {
			// Take the lock and walk away: the lease expires after its TTL.
			_, err := c.c.Acquire(ctx, key, client.TTL(o.TTL), client.Wait(o.Wait), owner)
			if err := t.count(ctx, err, "expired"); err != nil {
				return t, fmt.Errorf("worker %d: %w", id, err)
			}
			continue
		}
		failed := o.FailEvery > 0 && rng.IntN(o.FailEvery) == 0
		hold := time.Duration(rng.Int64N(int64(o.MaxHold) + 1))
		waited := false
		err := c.c.Do(ctx, key, func(ctx context.Context, l *client.Lease) error {
			waited = l.Waited > 0
			select {
			case <-ctx.Done(): // stopped, or the lease was lost (Do reports that)
				return nil
			case <-time.After(hold):
			}
			if failed {
				return errWorkFailed
			}
			return nil
		}, client.TTL(o.TTL), client.Wait(o.Wait), owner)
		outcome := "released"
		if errors.Is(err, errWorkFailed) {
			outcome, err = "failed", nil
		}
		if waited {
			t["waited"]++
		}
		if err := t.count(ctx, err, outcome); err != nil {
			return t, fmt.Errorf("worker %d: %w", id, err)
		}
	}
	return t, nil
}

// count records one acquire's result in t: the lease's outcome when
// granted, the wait's outcome when not. It returns the errors the demo
// does not expect; a stopped ctx is expected.
func (t Tally) count(ctx context.Context, err error, leaseOutcome string) error {
	switch {
	case err == nil:
		t["acquired"]++
		t[leaseOutcome]++
	case ctx.Err() != nil:
	case errors.Is(err, client.ErrTimeout):
		t["timeout"]++
	case errors.Is(err, client.ErrAborted):
		t["aborted"]++
	case errors.Is(err, client.ErrLeaseLost):
		t["acquired"]++
		t["expired"]++
	default:
		return err
	}
	return nil
}
