// Package client is the Go client of mutexd, the lock server: acquire a
// keyed FIFO lease, keep it alive while work runs, release it with an
// outcome.
//
// Most programs need one call:
//
//	c, err := client.New("http://127.0.0.1:7070")
//	...
//	err = c.Do(ctx, "invoice:42", func(ctx context.Context, l *client.Lease) error {
//		return charge(ctx, l.Fence) // ctx is cancelled if the lease is lost
//	})
//
// Do acquires the lock, renews the lease in the background, runs the
// function, and releases the lease with outcome ok, or failed when the
// function returns an error or panics. Programs that need the steps apart
// use Acquire, Lease.KeepAlive, Lease.Lost and Lease.Release.
//
// Every error matches one of the package's sentinels with errors.Is
// (ErrTimeout, ErrNotHolder, ErrUnavailable, ...); answers from the server
// are *APIError values carrying status, code and message.
//
// Retries: a call that certainly did not reach the server (connection
// refused, any dial error) and a 503 unavailable answer are retried with
// capped, jittered exponential backoff, within the caller's context and the
// client's RetryPolicy. An acquire carries a request id (a fresh random one
// unless RequestID names it), so one whose answer was lost (the connection
// was cut, an attempt timed out) is sent again with the same id: the server
// answers it with the lease it already granted, or puts it in the first
// attempt's place in the queue, so a retry never leaves behind a lease
// nobody knows about. Other calls are retried only when they certainly did
// not reach the server.
package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// DefaultAddr is the address a mutexd server listens on by default.
const DefaultAddr = "http://127.0.0.1:7070"

// Client talks to one mutexd server. It is safe for concurrent use.
type Client struct {
	base       string // scheme://host[:port][/path], no trailing slash
	shown      string // base with any password redacted, for messages
	hc         *http.Client
	customHTTP bool        // hc came from WithHTTPClient
	tlsConfig  *tls.Config // from WithTLSConfig
	token      string
	owner      string
	retry      RetryPolicy
	noIDs      bool // WithoutRequestIDs
}

// RetryPolicy bounds the retries of calls that certainly did not reach the
// server (dial errors such as connection refused) and of 503 unavailable
// answers. The n-th retry waits a random duration in [d/2, d] with d =
// min(MaxBackoff, MinBackoff·2ⁿ), and at least the server's Retry-After
// (capped at MaxBackoff). The caller's context bounds everything.
type RetryPolicy struct {
	// MaxAttempts is the number of tries in all; 1 disables retries.
	MaxAttempts int
	// MinBackoff is the first retry's delay.
	MinBackoff time.Duration
	// MaxBackoff caps every delay.
	MaxBackoff time.Duration
}

// DefaultRetryPolicy returns the policy of a new Client: up to 6 tries,
// the retries spread over about 1.5 to 3 seconds.
func DefaultRetryPolicy() RetryPolicy {
	return RetryPolicy{MaxAttempts: 6, MinBackoff: 100 * time.Millisecond, MaxBackoff: 2 * time.Second}
}

// backoff returns the delay before retry n (0-based).
func (p RetryPolicy) backoff(n int, retryAfter time.Duration) time.Duration {
	d := p.MinBackoff
	for i := 0; i < n && d < p.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, p.MaxBackoff)
	if d > 0 {
		d = d/2 + rand.N(d/2+1)
	}
	return max(d, min(retryAfter, p.MaxBackoff))
}

// Option configures a Client.
type Option func(*Client) error

// WithHTTPClient makes the client send its requests through hc (for
// proxies, instrumentation). An acquire waits for its grant in one long
// request, so hc.Timeout must be zero or longer than the longest wait; use
// contexts for deadlines instead. Keep hc on HTTP/1.1 if you can: over
// HTTP/2 a cancelled acquire cannot half-close its connection (see
// Acquire).
func WithHTTPClient(hc *http.Client) Option {
	return func(c *Client) error {
		if hc == nil {
			return errors.New("WithHTTPClient: nil *http.Client")
		}
		c.hc, c.customHTTP = hc, true
		return nil
	}
}

// WithTLSConfig sets the TLS configuration of the client's own transport
// (trusted roots, client certificates) for an https:// server. It cannot
// be combined with WithHTTPClient.
func WithTLSConfig(cfg *tls.Config) Option {
	return func(c *Client) error {
		if cfg == nil {
			return errors.New("WithTLSConfig: nil *tls.Config")
		}
		c.tlsConfig = cfg.Clone()
		return nil
	}
}

// newTransport is the client's own transport: net/http's default, kept on
// HTTP/1.1 so that a cancelled acquire can half-close its connection, and
// allowed enough idle connections for many goroutines that lock at once.
func newTransport(tlsConfig *tls.Config) *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.ForceAttemptHTTP2 = false
	t.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{} // no HTTP/2
	t.MaxIdleConnsPerHost = 64
	if tlsConfig != nil {
		t.TLSClientConfig = tlsConfig
	}
	if t.TLSClientConfig != nil {
		t.TLSClientConfig.NextProtos = []string{"http/1.1"}
	}
	return t
}

// WithToken sends token as "Authorization: Bearer <token>" on every call.
func WithToken(token string) Option {
	return func(c *Client) error {
		if strings.ContainsAny(token, "\r\n") {
			return errors.New("WithToken: the token contains a line break")
		}
		c.token = token
		return nil
	}
}

// WithOwner sets the owner name acquires report when they name none (see
// Owner). Without it the server records the client's address.
func WithOwner(owner string) Option {
	return func(c *Client) error { c.owner = owner; return nil }
}

// WithoutRequestIDs makes acquires send no request id unless RequestID
// gives one, for servers older than request ids (they reject the
// parameter as invalid). Such acquires are never sent twice once they may
// have reached the server, since a second one would queue a second waiter.
func WithoutRequestIDs() Option {
	return func(c *Client) error { c.noIDs = true; return nil }
}

// WithRetry replaces DefaultRetryPolicy.
func WithRetry(p RetryPolicy) Option {
	return func(c *Client) error {
		if p.MaxAttempts < 1 || p.MinBackoff < 0 || p.MaxBackoff < p.MinBackoff {
			return fmt.Errorf("WithRetry: need MaxAttempts >= 1 and 0 <= MinBackoff <= MaxBackoff, got %+v", p)
		}
		c.retry = p
		return nil
	}
}

// New returns a client for the server at baseURL ("http://host:port" or
// "https://host:port", optionally with a path prefix when behind a proxy).
func New(baseURL string, opts ...Option) (*Client, error) {
	u, err := url.Parse(baseURL)
	if err != nil {
		return nil, fmt.Errorf("client: base URL %q: %w", baseURL, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("client: base URL %q must be http:// or https:// with a host and no query", baseURL)
	}
	c := &Client{base: strings.TrimRight(u.String(), "/"), shown: strings.TrimRight(u.Redacted(), "/"), retry: DefaultRetryPolicy()}
	for _, o := range opts {
		if err := o(c); err != nil {
			return nil, fmt.Errorf("client: %w", err)
		}
	}
	switch {
	case c.customHTTP && c.tlsConfig != nil:
		return nil, errors.New("client: WithTLSConfig and WithHTTPClient exclude each other; configure TLS in the *http.Client")
	case !c.customHTTP:
		c.hc = &http.Client{Transport: newTransport(c.tlsConfig)}
	}
	return c, nil
}

// BaseURL returns the server address the client talks to.
func (c *Client) BaseURL() string { return c.base }

// keyPath returns the escaped path of a key's resource plus suffix.
func keyPath(key, suffix string) (string, error) {
	if key == "" {
		return "", fmt.Errorf("%w: the key is empty", ErrInvalid)
	}
	return "/v1/locks/" + url.PathEscape(key) + suffix, nil
}

// request is one API call.
type request struct {
	method string
	path   string     // escaped, from the API root
	query  url.Values // GET parameters
	body   any        // POST parameters, sent as a JSON object
	// longPoll marks a request that may wait on the server (see
	// longpoll.go).
	longPoll bool
	// resend marks a request the server deduplicates (an acquire with a
	// request id): an attempt cut before its answer may be sent again.
	// bodyFor, when set, gives the body of each attempt from the time
	// since the first was sent (an acquire's shrinking wait).
	resend  bool
	bodyFor func(elapsed time.Duration) any
	// written, when set, is set once an attempt has been written out in
	// full: from then on the server may have acted on it.
	written *atomic.Bool
}

// response is a 2xx answer.
type response struct {
	// sentAt is just before the earliest attempt the answer can stem
	// from: the first one that was cut (the server may have queued it, and
	// a re-send takes its place), else the one that got the answer.
	sentAt time.Time
	body   []byte
}

// maxBody bounds a success body (a listing of 1000 keys fits easily).
const maxBody = 8 << 20

// do sends r, retrying what certainly did not reach the server or was
// refused with 503 (and, for a request marked resend, what was cut before
// its answer), and returns the 2xx answer or the error.
func (c *Client) do(ctx context.Context, r request) (response, error) {
	marshal := func(v any) ([]byte, error) {
		if v == nil {
			return nil, nil
		}
		return json.Marshal(v)
	}
	body, err := marshal(r.body)
	if err != nil {
		return response{}, err
	}
	target := c.base + r.path
	if len(r.query) > 0 {
		target += "?" + r.query.Encode()
	}
	var (
		last     error     // the previous attempt's, when it was retried
		first    time.Time // when the first attempt was sent
		firstCut time.Time // when the first attempt that was cut was sent
	)
	for attempt := 1; ; attempt++ {
		now := time.Now()
		if attempt == 1 {
			first = now
		} else if r.bodyFor != nil {
			if body, err = marshal(r.bodyFor(now.Sub(first))); err != nil {
				return response{}, err
			}
		}
		resp, retryAfter, err := c.send(ctx, r.method, target, body, r.longPoll, r.written)
		if err == nil {
			if !firstCut.IsZero() {
				resp.sentAt = firstCut
			}
			return resp, nil
		}
		if ae := (*APIError)(nil); ctx.Err() != nil && last != nil && !errors.As(err, &ae) {
			// Say why it was retried, not only that time ran out.
			return response{}, fmt.Errorf("%w (gave up retrying: %w)", last, context.Cause(ctx))
		}
		again := retryable(err)
		if !again && r.resend && ctx.Err() == nil && cut(err) {
			again = true
			if firstCut.IsZero() {
				firstCut = now
			}
		}
		if !again || attempt >= c.retry.MaxAttempts || ctx.Err() != nil {
			return response{}, err
		}
		last = err
		delay := c.retry.backoff(attempt-1, retryAfter)
		if staleConn(err) {
			delay = 0 // another connection will do
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return response{}, fmt.Errorf("%w (gave up retrying: %w)", err, context.Cause(ctx))
		case <-t.C:
		}
	}
}

// send makes one attempt. The error is an *APIError for a non-2xx answer,
// an unreachableError when the request certainly was not sent, else the
// transport's error.
func (c *Client) send(ctx context.Context, method, target string, body []byte, long bool, written *atomic.Bool) (response, time.Duration, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	reqCtx := ctx
	if written != nil {
		reqCtx = httptrace.WithClientTrace(reqCtx, &httptrace.ClientTrace{
			WroteRequest: func(i httptrace.WroteRequestInfo) {
				if i.Err == nil {
					written.Store(true)
				}
			},
		})
	}
	if long {
		var finish func()
		reqCtx, finish = longPoll(reqCtx)
		defer finish()
	}
	req, err := http.NewRequestWithContext(reqCtx, method, target, rd)
	if err != nil {
		return response{}, 0, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	sentAt := time.Now()
	resp, err := c.hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return response{}, 0, fmt.Errorf("%s %s: %w", method, c.shown, context.Cause(ctx))
		}
		if notSent(err) {
			return response{}, 0, unreachableError{err: stripURL(err)}
		}
		return response{}, 0, fmt.Errorf("%s %s: %w", method, c.shown, stripURL(err))
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
		ae := decodeAPIError(resp.StatusCode, resp.Header, b)
		return response{}, ae.RetryAfter, ae
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		if ctx.Err() != nil {
			err = context.Cause(ctx)
		}
		return response{}, 0, fmt.Errorf("%s %s: reading the answer: %w", method, c.shown, err)
	}
	return response{sentAt: sentAt, body: b}, 0, nil
}

// unreachableError is a request that never reached the server.
type unreachableError struct{ err error }

func (e unreachableError) Error() string { return "mutexd unreachable: " + e.err.Error() }
func (e unreachableError) Unwrap() []error {
	return []error{ErrUnavailable, e.err}
}

// retryable reports whether a failed attempt may be sent again: it either
// never reached the server or was refused with 503.
func retryable(err error) bool {
	var ue unreachableError
	var ae *APIError
	return errors.As(err, &ue) || (errors.As(err, &ae) && ae.Status == http.StatusServiceUnavailable)
}

// cut reports whether a failed attempt ended without an answer, so that
// its fate on the server is unknown: the connection broke or timed out
// after the request may have been sent. Errors that would only repeat (a
// certificate the client does not trust, a request it could not build)
// are not cuts.
func cut(err error) bool {
	var ae *APIError
	var cv *tls.CertificateVerificationError
	var rh tls.RecordHeaderError
	return !errors.As(err, &ae) && !errors.As(err, &cv) && !errors.As(err, &rh) && !errors.Is(err, ErrInvalid)
}

// notSent reports transport errors that prove the server never processed
// the request: the connection could not even be made, or it was a pooled
// connection the server had already closed (see staleConn).
func notSent(err error) bool {
	var op *net.OpError
	return (errors.As(err, &op) && op.Op == "dial") || errors.Is(err, syscall.ECONNREFUSED) || staleConn(err)
}

// staleConn reports net/http's errServerClosedIdle (unexported): a reused
// keep-alive connection turned out closed by the server before a single
// byte of an answer. mutexd's server (net/http) closes a connection only
// between requests or after answering, never while one is being processed,
// so the request went unprocessed. net/http retries such requests itself
// only when they are idempotent; this client knows its own server.
func staleConn(err error) bool {
	return strings.Contains(err.Error(), "server closed idle connection")
}

// stripURL drops *url.Error's method and URL: the message names the server
// once, and a query string never leaks into logs.
func stripURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// decode unmarshals a 2xx body.
func decode(r response, v any) error {
	if err := json.Unmarshal(r.body, v); err != nil {
		return fmt.Errorf("malformed answer from the server: %w", err)
	}
	return nil
}

// millis renders d the way the API reads durations.
func millis(d time.Duration) string {
	return fmt.Sprintf("%dms", d.Milliseconds())
}
