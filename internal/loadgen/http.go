package loadgen

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// HTTPTarget speaks mutexd's HTTP API v1 (and that of anything that mimics
// its acquire and release routes, such as the ceiling servers in bench/).
//
// It uses net/http directly rather than a client library so that the load
// is exactly what it claims to be: one http.Transport per client holding
// one keep-alive connection, no retries, no backoff, no pooling shared
// between clients, and nothing between the request and the measurement.
type HTTPTarget struct {
	// Label names the target in reports ("mutexd" when empty).
	Label string
	// BaseURL is the server's base, such as http://127.0.0.1:7070.
	BaseURL string
}

var _ Target = HTTPTarget{}

// Name returns the label.
func (t HTTPTarget) Name() string {
	if t.Label == "" {
		return "mutexd"
	}
	return t.Label
}

// Open returns a session with its own single-connection transport.
func (t HTTPTarget) Open(_ context.Context, id int) (Session, error) {
	base := strings.TrimRight(t.BaseURL, "/")
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("%w: address %q is not an http:// URL", ErrConfig, t.BaseURL)
	}
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxConnsPerHost:     1,
		MaxIdleConnsPerHost: 1,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
	return &httpSession{client: &http.Client{Transport: tr}, tr: tr, base: base,
		owner: "bench-" + strconv.Itoa(id)}, nil
}

type httpSession struct {
	client *http.Client
	tr     *http.Transport
	base   string
	owner  string
	buf    bytes.Buffer

	// the acquire URL of the last (key, ttl, wait), built once
	lastKey        string
	lastTTL, lastW time.Duration
	acquireURL     string
}

func (s *httpSession) Close() error {
	s.tr.CloseIdleConnections()
	return nil
}

func (s *httpSession) Acquire(ctx context.Context, key string, ttl, wait time.Duration) (Lease, error) {
	if s.acquireURL == "" || key != s.lastKey || ttl != s.lastTTL || wait != s.lastW {
		s.lastKey, s.lastTTL, s.lastW = key, ttl, wait
		s.acquireURL = s.base + "/v1/locks/" + url.PathEscape(key) + "/acquire?ttl=" + ttl.String() +
			"&wait=" + wait.String() + "&owner=" + s.owner
	}
	status, body, err := s.post(ctx, s.acquireURL)
	if err != nil {
		return Lease{}, err
	}
	if status != http.StatusOK {
		return Lease{}, apiError(status, body)
	}
	token, ok := jsonField(body, "token")
	if !ok {
		return Lease{}, &CodeError{Code: "bad_response", Err: fmt.Errorf("acquire answer has no token: %.200s", body)}
	}
	l := Lease{Key: key, Token: string(token)}
	if f, ok := jsonField(body, "fence"); ok {
		l.Fence, _ = strconv.ParseUint(string(f), 10, 64)
	}
	if e, ok := jsonField(body, "expires_at"); ok {
		l.ExpiresAt, _ = time.Parse(time.RFC3339Nano, string(e))
	}
	return l, nil
}

func (s *httpSession) Release(ctx context.Context, l Lease) error {
	status, body, err := s.post(ctx, s.base+"/v1/locks/"+url.PathEscape(l.Key)+"/release?token="+l.Token)
	if err != nil {
		return err
	}
	if status != http.StatusOK {
		return apiError(status, body)
	}
	return nil
}

// post sends an empty POST and returns the status and the body, read
// whole into the session's buffer (valid until the next call).
func (s *httpSession) post(ctx context.Context, u string) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, nil)
	if err != nil {
		return 0, nil, &CodeError{Code: "bad_request", Err: err}
	}
	resp, err := s.client.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return 0, nil, ctx.Err()
		}
		return 0, nil, &CodeError{Code: "conn", Err: err}
	}
	defer resp.Body.Close()
	s.buf.Reset()
	if _, err := s.buf.ReadFrom(io.LimitReader(resp.Body, 1<<20)); err != nil {
		if ctx.Err() != nil {
			return 0, nil, ctx.Err()
		}
		return 0, nil, &CodeError{Code: "conn", Err: err}
	}
	return resp.StatusCode, s.buf.Bytes(), nil
}

// apiError turns a non-200 answer into ErrBusy (423 timeout) or a
// CodeError named by the body's "error" field.
func apiError(status int, body []byte) error {
	code, ok := jsonField(body, "error")
	if !ok {
		return &CodeError{Code: "http_" + strconv.Itoa(status), Err: fmt.Errorf("status %d: %.200s", status, body)}
	}
	if status == http.StatusLocked && string(code) == "timeout" {
		return ErrBusy
	}
	return &CodeError{Code: string(code), Err: fmt.Errorf("status %d: %.200s", status, body)}
}

// jsonField returns the raw value of the top-level field name in a flat
// JSON object as mutexd writes it: a string's contents (which must have no
// escapes) or a number's digits. It is not a JSON parser; it reads the
// fixed shapes of the acquire and error answers without reflection so the
// load generator spends its CPU on load.
func jsonField(body []byte, name string) ([]byte, bool) {
	var pat [64]byte
	p := append(append(append(pat[:0], '"'), name...), '"', ':')
	i := bytes.Index(body, p)
	if i < 0 {
		return nil, false
	}
	v := body[i+len(p):]
	if len(v) > 0 && v[0] == '"' {
		end := bytes.IndexByte(v[1:], '"')
		if end < 0 || bytes.IndexByte(v[1:1+end], '\\') >= 0 {
			return nil, false
		}
		return v[1 : 1+end], true
	}
	end := bytes.IndexAny(v, ",}")
	if end <= 0 {
		return nil, false
	}
	return bytes.TrimSpace(v[:end]), true
}

// errNoServer is returned by WaitReady when the server never answered.
var errNoServer = errors.New("server not ready")

// WaitReady polls base's /readyz until it answers 200 or ctx ends.
func WaitReady(ctx context.Context, base string) error {
	c := &http.Client{Timeout: time.Second}
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(base, "/")+"/readyz", nil)
		if err != nil {
			return err
		}
		if resp, err := c.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w at %s: %w", errNoServer, base, context.Cause(ctx))
		case <-time.After(5 * time.Millisecond):
		}
	}
}
