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
// nobody knows about. Renewals, releases and reads, which name what they
// act on, are sent again the same way; other calls only when they
// certainly did not reach the server.
//
// Clusters: New takes a comma-separated list of servers. A call that may
// be retried goes to the next server at once, and the client backs off
// only when every server failed in a round; it keeps sending to the server
// that answered last.
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

// Client talks to a mutexd server, or to any of the servers of a cluster
// (see New). It is safe for concurrent use.
type Client struct {
	servers []server // as given to New; at least one
	// current is the index in servers of the server that answered last:
	// every call starts there, so a client that failed over stays with
	// the server that works instead of trying a dead one first each time.
	current    atomic.Int32
	hc         *http.Client
	customHTTP bool        // hc came from WithHTTPClient
	tlsConfig  *tls.Config // from WithTLSConfig
	token      string
	owner      string
	retry      RetryPolicy
	noIDs      bool // WithoutRequestIDs
}

// RetryPolicy bounds the retries of calls that certainly did not reach the
// server (dial errors such as connection refused), of 503 unavailable
// answers, and of calls safe to send again whose answer was lost. With
// several servers (see New) a failed attempt goes to the next server at
// once; a round is one attempt at every server, and the policy counts
// rounds. After the n-th failed round the client waits a random duration
// in [d/2, d] with d = min(MaxBackoff, MinBackoff·2ⁿ), and at least the
// longest Retry-After of the round (capped at MaxBackoff). The caller's
// context bounds everything.
type RetryPolicy struct {
	// MaxAttempts is the number of rounds in all (with one server, of
	// tries); 1 disables retries on one server, and on several tries
	// each once.
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

// server is one base URL a Client may send to.
type server struct {
	base  string // scheme://host[:port][/path], no trailing slash
	shown string // base with any password redacted, for messages
}

// New returns a client for the server at baseURL ("http://host:port" or
// "https://host:port", optionally with a path prefix when behind a proxy),
// or for the servers of a cluster given as a comma-separated list
// ("http://10.0.0.1:7070,http://10.0.0.2:7070,http://10.0.0.3:7070"):
// one string, so that a list travels wherever one address does (a flag,
// MUTEXD_ADDR, a config value). Every server of a cluster answers every
// call; the client sends each call to the server that answered last and,
// when it cannot be reached, is cut off or answers 502, 503 or 504, to the
// next one in the list (see RetryPolicy for which calls may be sent again).
// Every entry must be a valid URL; the error names the first that is not.
func New(baseURL string, opts ...Option) (*Client, error) {
	var servers []server
	for _, raw := range strings.Split(baseURL, ",") {
		raw = strings.TrimSpace(raw)
		s, err := parseServer(raw)
		if err != nil {
			return nil, err
		}
		for _, o := range servers {
			if o.base == s.base {
				return nil, fmt.Errorf("client: server URL %q is listed twice", s.shown)
			}
		}
		servers = append(servers, s)
	}
	if len(servers) > 1<<16 {
		return nil, fmt.Errorf("client: %d server URLs, more than a cluster has", len(servers))
	}
	c := &Client{servers: servers, retry: DefaultRetryPolicy()}
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

// parseServer validates one server URL.
func parseServer(raw string) (server, error) {
	if raw == "" {
		return server{}, errors.New("client: empty server URL (a stray comma in the list?)")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return server{}, fmt.Errorf("client: base URL %q: %w", raw, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return server{}, fmt.Errorf("client: base URL %q must be http:// or https:// with a host and no query", u.Redacted())
	}
	return server{base: strings.TrimRight(u.String(), "/"), shown: strings.TrimRight(u.Redacted(), "/")}, nil
}

// BaseURL returns the address of the server the client sends its next
// call to: the one that answered last (the first given, before any call).
func (c *Client) BaseURL() string { return c.servers[c.current.Load()].base }

// Servers returns every server address the client was given, in order,
// for passing on (mutexd lock hands them to its command as MUTEXD_ADDR,
// joined by commas).
func (c *Client) Servers() []string {
	out := make([]string, len(c.servers))
	for i, s := range c.servers {
		out[i] = s.base
	}
	return out
}

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
	// raw, when set, is sent as the body as is (a snapshot file), and
	// limit, when positive, bounds the answer instead of maxBody.
	raw   []byte
	limit int64
	// longPoll marks a request that may wait on the server (see
	// longpoll.go).
	longPoll bool
	// resend marks a request that is safe to send again after an attempt
	// whose fate is unknown: an acquire with a request id (the server
	// deduplicates it), a renew or release (they name one lease by its
	// token). GETs are always safe. bodyFor, when set, gives the body of
	// each attempt from the time since the first was sent (an acquire's
	// shrinking wait).
	resend  bool
	bodyFor func(elapsed time.Duration) any
	// written, when set, is set once an attempt has been written out in
	// full: from then on the server may have acted on it.
	written *atomic.Bool
	// cut, when set, is set when an attempt whose fate is unknown was sent
	// again: an answer may stem from a server that already acted on it.
	cut *bool
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

// do sends r, retrying what certainly did not reach a server or was
// refused with 503 (and, for a request that is safe to re-send, what was
// cut before its answer or answered 502 or 504 by a proxy), and returns
// the 2xx answer or the error.
//
// Attempts go round the servers, starting with the one that answered
// last: a failed attempt is sent at once to the next server, and only when
// every server failed in a round does the client back off (RetryPolicy
// counts rounds). The server that answers becomes the one the next call
// starts with.
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
	ctype, limit := "application/json", int64(maxBody)
	if r.raw != nil {
		body, ctype = r.raw, "application/octet-stream"
	}
	if r.limit > 0 {
		limit = r.limit
	}
	target := r.path
	if len(r.query) > 0 {
		target += "?" + r.query.Encode()
	}
	resend := r.resend || r.method == http.MethodGet
	n := len(c.servers)
	start := int(c.current.Load())
	var (
		last       error         // the previous attempt's, when it was retried
		round      []error       // this round's errors, one per server
		retryAfter time.Duration // the longest this round asked for
		first      time.Time     // when the first attempt was sent
		firstCut   time.Time     // when the first attempt that was cut was sent
	)
	for attempt := 1; ; attempt++ {
		i := (start + attempt - 1) % n
		srv := c.servers[i]
		now := time.Now()
		if attempt == 1 {
			first = now
		} else if r.bodyFor != nil {
			if body, err = marshal(r.bodyFor(now.Sub(first))); err != nil {
				return response{}, err
			}
		}
		resp, after, err := c.send(ctx, srv, r.method, target, body, ctype, limit, r.longPoll, r.written)
		if answered(err) {
			c.current.Store(int32(i))
		}
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
		if !again && resend && ctx.Err() == nil && (cut(err) || gateway(err)) {
			again = true
			if r.cut != nil {
				*r.cut = true
			}
			if firstCut.IsZero() {
				firstCut = now
			}
		}
		if !again || ctx.Err() != nil {
			return response{}, err
		}
		if n > 1 {
			round = append(round, fmt.Errorf("%s: %w", srv.shown, err))
		}
		retryAfter = max(retryAfter, after)
		rounds := (attempt + n - 1) / n
		if attempt%n != 0 {
			last = err
			continue // the next server, at once
		}
		if n > 1 {
			err = roundError{errs: round}
			round = nil
		}
		if rounds >= c.retry.MaxAttempts {
			return response{}, err
		}
		last = err
		delay := c.retry.backoff(rounds-1, retryAfter)
		if n == 1 && staleConn(err) {
			delay = 0 // another connection will do
		}
		retryAfter = 0
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return response{}, fmt.Errorf("%w (gave up retrying: %w)", err, context.Cause(ctx))
		case <-t.C:
		}
	}
}

// roundError is what every server of a cluster answered in the last round
// of attempts.
type roundError struct{ errs []error }

func (e roundError) Error() string {
	msgs := make([]string, len(e.errs))
	for i, err := range e.errs {
		msgs[i] = err.Error()
	}
	return "no server answered: " + strings.Join(msgs, "; ")
}

func (e roundError) Unwrap() []error { return e.errs }

// send makes one attempt at srv. The error is an *APIError for a non-2xx
// answer, an unreachableError when the request certainly was not sent,
// else the transport's error.
func (c *Client) send(ctx context.Context, srv server, method, target string, body []byte, ctype string, limit int64, long bool, written *atomic.Bool) (response, time.Duration, error) {
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
	req, err := http.NewRequestWithContext(reqCtx, method, srv.base+target, rd)
	if err != nil {
		return response{}, 0, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", ctype)
	}
	req.Header.Set("Accept", "application/json")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	sentAt := time.Now()
	resp, err := c.hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return response{}, 0, fmt.Errorf("%s %s: %w", method, srv.shown, context.Cause(ctx))
		}
		if notSent(err) {
			return response{}, 0, unreachableError{err: stripURL(err)}
		}
		return response{}, 0, fmt.Errorf("%s %s: %w", method, srv.shown, stripURL(err))
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
		ae := decodeAPIError(resp.StatusCode, resp.Header, b)
		return response{}, ae.RetryAfter, ae
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, limit))
	if err != nil {
		if ctx.Err() != nil {
			err = context.Cause(ctx)
		}
		return response{}, 0, fmt.Errorf("%s %s: reading the answer: %w", method, srv.shown, err)
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

// gateway reports a proxy's 502 or 504: the server behind it may or may
// not have acted on the request.
func gateway(err error) bool {
	var ae *APIError
	return errors.As(err, &ae) && (ae.Status == http.StatusBadGateway || ae.Status == http.StatusGatewayTimeout)
}

// answered reports whether a server answered an attempt for itself, so
// that the next call should start with it: any answer but a 503 (no leader,
// shutting down) or a proxy's 502 or 504.
func answered(err error) bool {
	var ae *APIError
	if err == nil {
		return true
	}
	return errors.As(err, &ae) && ae.Status != http.StatusServiceUnavailable && !gateway(err)
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
