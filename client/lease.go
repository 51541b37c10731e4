package client

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"
)

// Lease is a granted lock. Its fields never change; the expiry does, with
// every renewal.
//
// The server is the authority on a lease. The client also tracks a local
// deadline, a safe lower bound of the server's expiry measured on the
// local monotonic clock from when each grant or renewal was requested, and
// declares the lease lost (Lost, Err) a safety margin before that deadline
// passes without a successful renewal.
type Lease struct {
	// Key is the locked key.
	Key string
	// Token is the lease's secret: only it can renew or release the lease.
	Token string
	// Fence strictly increases with every grant on the server. Pass it to
	// the resource you protect, and have it reject writes carrying a fence
	// lower than the highest it has seen.
	Fence uint64
	// Owner is the owner name the server recorded.
	Owner string
	// Waited is how long the acquire waited in the queue.
	Waited time.Duration
	// Previous describes how the key's last lease before this one ended:
	// the one this grant followed, or, on a key that had gone idle, the
	// one the server still remembers (lock.remember_outcome); nil when
	// there is none. An "expired" or "failed" outcome means the last
	// holder did not finish cleanly.
	Previous *Previous
	// Limit is the key's number of slots (1 for a mutex; see the Limit
	// option).
	Limit int
	// RequestID is the acquire's request id ("" when it sent none).
	RequestID string

	c    *Client
	lost chan struct{}

	// renewing serializes renewals (a token in a channel of one, so that
	// waiting for it honours the caller's context), so that the last answer
	// describes the server's state: a renewal sets the expiry to its own
	// TTL from its arrival, which may be sooner than before (a shorter TTL).
	renewing chan struct{}

	mu        sync.Mutex  // guards the following
	timer     *time.Timer // fires at the local deadline minus the margin
	ttl       time.Duration
	expiresAt time.Time // the server's clock
	deadline  time.Time // local monotonic lower bound of the server's expiry
	ended     bool      // released, or Release/Fail under way
	err       error     // why the lease was lost; set before lost closes
	renewErr  error     // the last failed renewal, for the loss message
	kaCancel  context.CancelFunc
	kaDone    chan struct{} // closed when the KeepAlive goroutine exits
}

// Previous is how the lease before this one on the key ended.
type Previous struct {
	// Fence is the previous lease's fence.
	Fence uint64 `json:"fence"`
	// Outcome is "released", "failed", "expired" or "forced".
	Outcome string `json:"outcome"`
	// EndedAt is when it ended, on the server's clock (zero from a server
	// that does not say).
	EndedAt time.Time `json:"ended_at"`
}

// newLease starts tracking a grant requested at sentAt (local time) that
// waited waited on the server: the server's expiry is at least
// sentAt+waited+ttl.
func newLease(c *Client, g grantJSON, sentAt time.Time) *Lease {
	l := &Lease{
		Key: g.Key, Token: g.Token, Fence: g.Fence, Owner: g.Owner,
		Waited: time.Duration(g.WaitedMS) * time.Millisecond, Previous: g.Previous,
		Limit: max(g.Limit, 1), RequestID: g.RequestID,
		c: c, lost: make(chan struct{}), renewing: make(chan struct{}, 1),
		ttl: time.Duration(g.TTLMS) * time.Millisecond, expiresAt: g.ExpiresAt,
	}
	l.deadline = sentAt.Add(l.Waited + l.ttl)
	// The timer may fire at once (a grant that arrived after its deadline)
	// and checkDeadline reads l.timer under l.mu: hold it while arming.
	l.mu.Lock()
	l.armLocked()
	l.mu.Unlock()
	return l
}

// Lease returns a handle to a lease granted earlier, perhaps to another
// process that passed on its key and token (as "mutexd lock" does through
// MUTEXD_KEY and MUTEXD_LEASE_TOKEN), to renew or release it. Until its
// first successful Renew, its TTL, expiry and deadline are unknown (zero)
// and it cannot be declared lost by the clock; its Fence stays 0.
func (c *Client) Lease(key, token string) *Lease {
	return &Lease{Key: key, Token: token, c: c, lost: make(chan struct{}), renewing: make(chan struct{}, 1)}
}

// armLocked (re)starts the deadline timer. l.mu must be held: the timer
// may fire at once.
func (l *Lease) armLocked() {
	d := time.Until(l.deadline.Add(-SafetyMargin(l.ttl)))
	if l.timer == nil {
		l.timer = time.AfterFunc(d, l.checkDeadline)
	} else {
		l.timer.Reset(d)
	}
}

// stopTimerLocked stops the deadline timer, if any. l.mu must be held.
func (l *Lease) stopTimerLocked() {
	if l.timer != nil {
		l.timer.Stop()
	}
}

// SafetyMargin is how long before its deadline a lease of the given TTL
// that could not be renewed counts as lost (Lost closes): a tenth of the
// TTL, at most 5 s. It absorbs clock rate differences and gives a holder
// that much time to stop before the server may grant the key to another.
func SafetyMargin(ttl time.Duration) time.Duration { return min(ttl/10, 5*time.Second) }

// renewInterval is how often KeepAlive renews: a third of the TTL, so two
// renewals can fail before the lease is lost.
func renewInterval(ttl time.Duration) time.Duration { return ttl / 3 }

// retryInterval is how soon KeepAlive tries again after a failed renewal.
func retryInterval(ttl time.Duration) time.Duration {
	return min(max(ttl/20, 20*time.Millisecond), time.Second)
}

// TTL returns the lease's current time to live, as last granted or renewed.
func (l *Lease) TTL() time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.ttl
}

// ExpiresAt returns when the server will expire the lease unless it is
// renewed, on the server's clock, as of the last grant or renewal.
func (l *Lease) ExpiresAt() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.expiresAt
}

// Lost returns a channel that is closed when the lease can no longer be
// proven live: a renewal was refused (it expired or was force-released),
// or no renewal succeeded before the local deadline minus the safety
// margin. Err then says why. A lease ended by Release or Fail is not lost.
func (l *Lease) Lost() <-chan struct{} { return l.lost }

// Err returns nil while the lease is not lost, and afterwards an error
// wrapping ErrLeaseLost that says why.
func (l *Lease) Err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

// loseLocked marks the lease lost. l.mu must be held.
func (l *Lease) loseLocked(why error) {
	if l.err != nil || l.ended {
		return
	}
	l.err = fmt.Errorf("%w: %s: %w", ErrLeaseLost, l.Key, why)
	l.stopTimerLocked()
	close(l.lost)
}

// checkDeadline runs on the timer: the lease is lost unless a renewal moved
// the deadline meanwhile.
func (l *Lease) checkDeadline() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ended || l.err != nil {
		return
	}
	if time.Until(l.deadline.Add(-SafetyMargin(l.ttl))) > 0 {
		l.armLocked()
		return
	}
	why := errors.New("no renewal succeeded before the lease's deadline")
	if l.renewErr != nil {
		why = fmt.Errorf("no renewal succeeded before the lease's deadline; last attempt: %w", l.renewErr)
	}
	l.loseLocked(why)
}

// leaseBody is a renew's or release's parameters.
type leaseBody struct {
	Token   string `json:"token"`
	TTL     string `json:"ttl,omitempty"`
	Outcome string `json:"outcome,omitempty"`
}

type renewalJSON struct {
	TTLMS     int64     `json:"ttl_ms"`
	ExpiresAt time.Time `json:"expires_at"`
}

// Renew extends the lease to ttl from now; ttl 0 renews it for its own
// TTL. A shorter ttl brings the expiry, and so Lost, closer. A refusal
// (ErrNotHolder) means the lease is gone and closes Lost. ErrMaxHoldReached
// means the lease reached its MaxHold: it stays live until the cap (the
// error's APIError.ExpiresAt) and Lost closes a safety margin before the
// last successful renewal's deadline; KeepAlive stops renewing. Renewals
// of one Lease run one at a time.
func (l *Lease) Renew(ctx context.Context, ttl time.Duration) error {
	if ttl < 0 {
		return fmt.Errorf("%w: negative TTL %s", ErrInvalid, ttl)
	}
	path, err := keyPath(l.Key, "/renew")
	if err != nil {
		return fmt.Errorf("renew: %w", err)
	}
	body := leaseBody{Token: l.Token}
	if ttl > 0 {
		body.TTL = millis(ttl)
	}
	select {
	case l.renewing <- struct{}{}:
		defer func() { <-l.renewing }()
	case <-ctx.Done():
		return fmt.Errorf("renew %s: waiting for another renewal: %w", l.Key, context.Cause(ctx))
	}
	sent := time.Now()
	// A renewal is safe to send again, to this server or another: it
	// names the lease by its token, and one that arrives twice extends
	// the lease from the later arrival, which the deadline below (from the
	// first cut attempt) never overstates.
	resp, err := l.c.do(ctx, request{method: http.MethodPost, path: path, body: body, resend: true})
	if err == nil {
		var r renewalJSON
		if err = decode(resp, &r); err == nil {
			l.mu.Lock()
			l.ttl, l.expiresAt, l.renewErr = time.Duration(r.TTLMS)*time.Millisecond, r.ExpiresAt, nil
			// The server's expiry is now this renewal's arrival plus its
			// TTL, even when that is sooner than the previous deadline.
			l.deadline = resp.sentAt.Add(l.ttl)
			if l.err == nil && !l.ended {
				l.armLocked()
			}
			l.mu.Unlock()
			return nil
		}
	}
	l.mu.Lock()
	switch {
	case errors.Is(err, ErrNotHolder):
		l.loseLocked(fmt.Errorf("renewal refused: %w", err))
	default:
		l.renewErr = err
		// An unanswered renewal may still have shortened the lease on
		// the server (an answer, such as 400 invalid_ttl, says it did not;
		// so does a connection that was never made).
		var ae *APIError
		if d := sent.Add(ttl); ttl > 0 && !errors.As(err, &ae) && !errors.As(err, new(unreachableError)) && !l.deadline.IsZero() && d.Before(l.deadline) && l.err == nil && !l.ended {
			l.deadline = d
			l.armLocked()
		}
	}
	l.mu.Unlock()
	return fmt.Errorf("renew %s: %w", l.Key, err)
}

// KeepAlive renews the lease in the background every third of its TTL
// (sooner after a failed attempt) until ctx ends, the lease is released,
// or it is lost. It returns at once; calls after the first do nothing.
// Watch Lost to learn that the lease could not be kept.
func (l *Lease) KeepAlive(ctx context.Context) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.kaDone != nil || l.ended || l.err != nil {
		return
	}
	ctx, l.kaCancel = context.WithCancel(ctx)
	l.kaDone = make(chan struct{})
	go l.keepAlive(ctx, l.kaDone)
}

func (l *Lease) keepAlive(ctx context.Context, done chan struct{}) {
	defer close(done)
	t := time.NewTimer(0)
	defer t.Stop()
	failing := false
	for {
		l.mu.Lock()
		ttl, deadline, ended := l.ttl, l.deadline, l.ended
		l.mu.Unlock()
		if ended {
			// Released while KeepAlive was starting (after Release had
			// looked for a KeepAlive to stop): nothing is left to renew.
			return
		}
		if ttl == 0 {
			// A handle from Client.Lease: nothing is known until it renews.
			if err := l.Renew(ctx, 0); err != nil {
				if ctx.Err() == nil {
					l.mu.Lock()
					l.loseLocked(fmt.Errorf("the first renewal failed: %w", err))
					l.mu.Unlock()
				}
				return
			}
			continue
		}
		next := deadline.Add(-ttl + renewInterval(ttl)) // a third of the TTL after the last successful request
		if failing {
			next = time.Now().Add(retryInterval(ttl))
		}
		t.Reset(time.Until(next))
		select {
		case <-ctx.Done():
			return
		case <-l.lost:
			return
		case <-t.C:
		}
		// A renewal still in flight at the deadline is as good as failed.
		rctx, cancel := context.WithDeadline(ctx, deadline.Add(-SafetyMargin(ttl)))
		err := l.Renew(rctx, 0)
		cancel()
		if errors.Is(err, ErrMaxHoldReached) {
			// No renewal can succeed any more; the deadline stands.
			return
		}
		failing = err != nil
	}
}

// released reports whether Release or Fail succeeded.
func (l *Lease) released() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.ended
}

// stopKeepAlive stops the KeepAlive goroutine, if any, and waits for it.
func (l *Lease) stopKeepAlive() {
	l.mu.Lock()
	cancel, done := l.kaCancel, l.kaDone
	l.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
}

// Release ends the lease with outcome ok: the next waiter is granted at
// once. It stops KeepAlive first. ErrNotHolder means the lease had already
// ended (it expired or was force-released).
func (l *Lease) Release(ctx context.Context) error { return l.release(ctx, "ok") }

// Fail ends the lease with outcome failed: the next holder sees
// previous.outcome "failed", and on an on_error=stop key every queued
// waiter is answered ErrAborted. Otherwise it is Release.
func (l *Lease) Fail(ctx context.Context) error { return l.release(ctx, "failed") }

func (l *Lease) release(ctx context.Context, outcome string) error {
	l.stopKeepAlive()
	path, err := keyPath(l.Key, "/release")
	if err != nil {
		return fmt.Errorf("release: %w", err)
	}
	// A release cut before its answer is sent again (to the next server
	// of a cluster): the token names the lease, so it cannot end another.
	// But the first attempt may have released it, and then the second is
	// refused as not_holder; releasedBy tells that apart from a lease
	// that had ended otherwise.
	var cutEarlier bool
	_, err = l.c.do(ctx, request{method: http.MethodPost, path: path, body: leaseBody{Token: l.Token, Outcome: outcome}, resend: true, cut: &cutEarlier})
	if err != nil && cutEarlier && errors.Is(err, ErrNotHolder) && l.releasedBy(ctx, outcome) {
		err = nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case err == nil:
		l.ended = true
		l.stopTimerLocked()
		return nil
	case errors.Is(err, ErrNotHolder):
		if cutEarlier {
			err = fmt.Errorf("%w (an earlier attempt was cut before its answer; the server no longer says how the lease ended)", err)
		}
		l.loseLocked(fmt.Errorf("release refused: %w", err))
	}
	return fmt.Errorf("release %s: %w", l.Key, err)
}

// releasedBy reports whether the server remembers this lease as the key's
// last one, ended with the outcome a release of it asked for: then an
// attempt whose answer was lost did release it. Without a fence (a handle
// from Client.Lease) the lease cannot be recognized.
func (l *Lease) releasedBy(ctx context.Context, outcome string) bool {
	if l.Fence == 0 {
		return false
	}
	st, err := l.c.Inspect(ctx, l.Key)
	if err != nil || st.Last == nil || st.Last.Fence != l.Fence {
		return false
	}
	want := "released"
	if outcome == "failed" {
		want = "failed"
	}
	return st.Last.Outcome == want
}
