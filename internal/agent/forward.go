package agent

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/mutexd/mutexd/internal/api"
	"github.com/mutexd/mutexd/internal/duration"
	"github.com/mutexd/mutexd/internal/engine"
)

// The routes the agent treats apart (api's route templates).
const (
	acquireRoute = "/v1/locks/:key/acquire"
	eventsRoute  = "/v1/events"
)

// resendable lists the routes whose calls are harmless to send twice, so
// a call cut after it was sent may go to another server: reads, and the
// writes a server itself re-sends to a new leader (docs/cluster.md). Other
// writes go to another server only when they certainly reached none.
var resendable = map[string]bool{
	http.MethodPost + " " + acquireRoute:             true, // with its request_id
	http.MethodPost + " /v1/locks/:key/release":      true,
	http.MethodPost + " /v1/locks/:key/renew":        true,
	http.MethodPost + " /v1/locks/:key/pause":        true,
	http.MethodPost + " /v1/locks/:key/resume":       true,
	http.MethodGet + " /v1/locks/:key":               true,
	http.MethodGet + " /v1/locks":                    true,
	http.MethodGet + " /v1/locks/:key/fences/:fence": true,
	http.MethodGet + " /v1/stats":                    true,
	http.MethodGet + " /v1/cluster":                  true,
	http.MethodGet + " " + eventsRoute:               true,
}

// call is one API call as the agent sends it to the servers.
type call struct {
	method  string
	path    string // escaped
	query   string // raw
	body    []byte
	header  http.Header
	resend  bool      // harmless to send twice
	stream  bool      // an acquire asked as Server-Sent Events, or /v1/events
	events  bool      // /v1/events: re-connects with Last-Event-ID
	acquire *acquire  // nil but for an acquire
	start   time.Time // when the app's call arrived
}

// acquire is what the agent knows of an acquire's parameters.
type acquire struct {
	wait       time.Duration
	waitInBody bool
	bodyParams map[string]json.RawMessage // nil when the body is empty or not a JSON object
}

// Forward sends r on to the servers and copies the first answer a server
// gives for itself to w (see the package comment). It implements
// api.Forwarder.
func (a *Agent) Forward(w http.ResponseWriter, r *http.Request, route string) error {
	body, err := readBody(w, r)
	if err != nil {
		return err
	}
	c := &call{method: r.Method, path: r.URL.EscapedPath(), query: r.URL.RawQuery, body: body, start: time.Now(),
		header: outgoing(r.Header, w.Header().Get(echo.HeaderXRequestID)), resend: resendable[r.Method+" "+route]}
	switch route {
	case acquireRoute:
		c.acquire = c.prepareAcquire(a.wait, r.RemoteAddr)
		c.stream = strings.Contains(r.Header.Get(echo.HeaderAccept), "text/event-stream")
	case eventsRoute:
		c.stream, c.events = true, true
	}
	ctx := r.Context()
	resp, err := a.exchange(ctx, c)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK || !c.stream {
		return copyResponse(w, resp)
	}
	return a.relay(ctx, w, resp, c)
}

// readBody reads a call's body (at most api.MaxBodyBytes), which must
// arrive promptly, as the API's own parameter parsing requires.
func readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
		return nil, nil
	}
	if r.ContentLength > api.MaxBodyBytes {
		return nil, echo.ErrStatusRequestEntityTooLarge
	}
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Now().Add(api.DefaultBodyTimeout))
	b, err := io.ReadAll(io.LimitReader(r.Body, api.MaxBodyBytes+1))
	if err != nil {
		w.Header().Set(echo.HeaderConnection, "close")
		return nil, echo.NewHTTPError(http.StatusBadRequest)
	}
	_ = rc.SetReadDeadline(time.Time{})
	if len(b) > api.MaxBodyBytes {
		return nil, echo.ErrStatusRequestEntityTooLarge
	}
	return b, nil
}

// hopHeaders are the request and response headers that describe one
// connection, not the call, and browser headers the agent has already
// checked itself (its API refuses foreign origins): a server would judge
// them against its own address, not the agent's.
var hopHeaders = []string{"Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate", "Proxy-Authorization",
	"Te", "Trailer", "Transfer-Encoding", "Upgrade", "Accept-Encoding",
	"Origin", "Referer", "Cookie", "Sec-Fetch-Site", "Sec-Fetch-Mode", "Sec-Fetch-Dest", "Sec-Fetch-User"}

// outgoing is the headers a call is sent with: the app's (its token among
// them: the servers decide what it may do), with the agent's X-Request-Id
// so the agent's and the server's logs name the call alike.
func outgoing(in http.Header, requestID string) http.Header {
	h := in.Clone()
	for _, k := range hopHeaders {
		h.Del(k)
	}
	if requestID != "" {
		h.Set(echo.HeaderXRequestID, requestID)
	}
	return h
}

// prepareAcquire gives the acquire a request_id when it names none (in
// the query or the JSON body), and the app's address as its owner when it
// names none (a server would take the caller's address: the agent's
// would name no app, and change on a re-send), and notes its wait. A body
// that is not a JSON object is sent as it is, for a server to refuse.
func (c *call) prepareAcquire(defaultWait time.Duration, appAddr string) *acquire {
	q, _ := url.ParseQuery(c.query)
	acq := &acquire{wait: defaultWait}
	wait, hasID, hasOwner := q.Get("wait"), q.Has("request_id"), q.Has("owner")
	if len(bytes.TrimSpace(c.body)) > 0 {
		if err := json.Unmarshal(c.body, &acq.bodyParams); err != nil {
			return acq
		}
		if v, ok := acq.bodyParams["request_id"]; ok && string(v) != "null" {
			hasID = true
		}
		if v, ok := acq.bodyParams["owner"]; ok && string(v) != "null" {
			hasOwner = true
		}
		if v, ok := acq.bodyParams["wait"]; ok && string(v) != "null" {
			wait, acq.waitInBody = strings.Trim(string(v), `"`), true
		}
	}
	if wait != "" {
		if d, err := duration.Parse(wait); err == nil {
			acq.wait = d
		}
	}
	add := func(name, value string) {
		if c.query != "" {
			c.query += "&"
		}
		c.query += name + "=" + url.QueryEscape(value)
	}
	if !hasID {
		add("request_id", newRequestID())
	}
	if !hasOwner && appAddr != "" {
		add("owner", appAddr)
	}
	return acq
}

// remainingWait rewrites an acquire sent again so that it waits only
// what is left of the app's wait.
func (c *call) remainingWait() {
	left := max(0, c.acquire.wait-time.Since(c.start))
	v := strconv.FormatInt(left.Milliseconds(), 10) + "ms"
	if c.acquire.waitInBody {
		c.acquire.bodyParams["wait"] = json.RawMessage(strconv.Quote(v))
		if b, err := json.Marshal(c.acquire.bodyParams); err == nil {
			c.body = b
		}
		return
	}
	q, err := url.ParseQuery(c.query)
	if err != nil {
		return
	}
	q.Set("wait", v)
	c.query = q.Encode()
}

// deadline is when the agent stops looking for a server for c: the
// failover bound after the call arrived, plus an acquire's wait.
func (a *Agent) deadline(c *call) time.Time {
	d := c.start.Add(a.bound)
	if c.acquire != nil {
		d = d.Add(c.acquire.wait)
	}
	return d
}

// exchange sends c to the servers, the current one first, until one
// answers it for itself: any answer but a 503 for a call that may be sent
// again. It goes round the servers, backing off between rounds, until the
// deadline; then a 503 a server gave is the answer, or ErrNoServer.
func (a *Agent) exchange(ctx context.Context, c *call) (*http.Response, error) {
	deadline := a.deadline(c)
	var last *http.Response // a 503 kept in case no server does better
	var lastErr error
	backoff := 50 * time.Millisecond
	attempts := 0
	defer func() {
		if last != nil {
			last.Body.Close()
		}
	}()
	for {
		start := int(a.current.Load())
		for i := range a.servers {
			idx := (start + i) % len(a.servers)
			if attempts > 0 {
				a.metrics.failovers.Inc()
				if c.acquire != nil {
					c.remainingWait()
				}
			}
			attempts++
			resp, err := a.send(ctx, idx, c)
			if err == nil && (resp.StatusCode != http.StatusServiceUnavailable || !c.resend) {
				a.current.Store(int32(idx))
				return resp, nil
			}
			if ctx.Err() != nil {
				if resp != nil {
					resp.Body.Close()
				}
				return nil, fmt.Errorf("%w: %w", engine.ErrCancelled, context.Cause(ctx))
			}
			if err == nil {
				if last != nil {
					last.Body.Close()
				}
				last, err = buffered(resp)
				if err != nil {
					last = nil
				}
				continue
			}
			lastErr = err
			a.log.Debug("agent: server did not answer", "server", a.servers[idx], "err", err)
			if !c.resend && !notSent(err) {
				return nil, fmt.Errorf("%w (%w)", ErrUnknownOutcome, err)
			}
		}
		if time.Now().Add(backoff).After(deadline) {
			break
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: %w", engine.ErrCancelled, context.Cause(ctx))
		case <-a.stop:
			return nil, ErrNoServer
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Second)
	}
	if last != nil {
		resp := last
		last = nil
		return resp, nil
	}
	if lastErr != nil {
		return nil, fmt.Errorf("%w (%w)", ErrNoServer, lastErr)
	}
	return nil, ErrNoServer
}

// send makes one attempt at server idx. Its answer must begin within the
// failover bound (plus an acquire's wait): a server that hangs (paused, or
// cut off by a partition) is given up for the next.
func (a *Agent) send(ctx context.Context, idx int, c *call) (*http.Response, error) {
	target := a.servers[idx] + c.path
	if c.query != "" {
		target += "?" + c.query
	}
	var body io.Reader
	if c.body != nil {
		body = bytes.NewReader(c.body)
	}
	actx, cancel := context.WithCancelCause(ctx)
	limit := a.bound
	long := c.acquire != nil && c.acquire.wait > 0 && !c.stream
	if long {
		limit += max(0, c.acquire.wait-time.Since(c.start))
	}
	timer := time.AfterFunc(limit, func() { cancel(errors.New("no answer within the failover bound")) })
	req, err := http.NewRequestWithContext(actx, c.method, target, body)
	if err != nil {
		timer.Stop()
		cancel(nil)
		return nil, err
	}
	req.Header = c.header.Clone()
	sent := time.Now()
	resp, err := a.hc.Do(req)
	timer.Stop()
	if err != nil {
		cancel(nil)
		return nil, err
	}
	if !long {
		a.metrics.observe(time.Since(sent))
	}
	resp.Body = cancelOnClose{resp.Body, cancel}
	return resp, nil
}

// cancelOnClose ends an attempt's context when its body is closed.
type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelCauseFunc
}

func (b cancelOnClose) Close() error {
	err := b.ReadCloser.Close()
	b.cancel(nil)
	return err
}

// buffered reads resp's body (a 503, small) so the connection is free.
func buffered(resp *http.Response) (*http.Response, error) {
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, api.MaxBodyBytes))
	if err != nil {
		return nil, err
	}
	resp.Body = io.NopCloser(bytes.NewReader(b))
	return resp, nil
}

// drain reads and closes a body, so its connection goes back to the pool.
func drain(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
}

// copyHeader copies a server's response headers but the connection's and
// its X-Request-Id (the app sees the agent's).
func copyHeader(dst, src http.Header) {
	for k, vs := range src {
		switch http.CanonicalHeaderKey(k) {
		case "Connection", "Keep-Alive", "Transfer-Encoding", "Trailer", "Upgrade", "Proxy-Authenticate", echo.HeaderXRequestID:
			continue
		}
		dst[k] = vs
	}
}

// copyResponse writes a server's whole answer to w.
func copyResponse(w http.ResponseWriter, resp *http.Response) error {
	defer resp.Body.Close()
	copyHeader(w.Header(), resp.Header)
	w.WriteHeader(resp.StatusCode)
	_, _ = io.Copy(w, resp.Body) // a failed write means the app left
	return nil
}

// relay copies a Server-Sent Events stream to w, one event at a time. A
// stream a server ends without its last word (the server died, or shut
// down: its connection closed, or an acquire's "unavailable" event) is
// taken up on another server: an acquire is sent again with its
// request_id and what is left of its wait, an event stream re-connects
// with the Last-Event-ID it reached. The app sees one stream.
func (a *Agent) relay(ctx context.Context, w http.ResponseWriter, resp *http.Response, c *call) error {
	copyHeader(w.Header(), resp.Header)
	w.Header().Del("Content-Length")
	w.WriteHeader(http.StatusOK)
	flush := func() { _ = http.NewResponseController(w).Flush() }
	flush()
	for {
		lastID, final, err := pipe(w, flush, resp.Body, c.acquire != nil)
		resp.Body.Close()
		if final || err == errAppGone || ctx.Err() != nil {
			return nil
		}
		a.log.Info("agent: stream cut; taking it up on another server", "path", c.path, "err", err)
		if c.events && lastID != "" {
			c.header.Set("Last-Event-ID", lastID)
		}
		// The server that cut it is no longer the one to try first.
		a.current.Store((a.current.Load() + 1) % int32(len(a.servers)))
		a.metrics.failovers.Inc()
		if c.acquire != nil {
			c.remainingWait()
		} else {
			c.start = time.Now() // a stream's re-connection has its own bound
		}
		next, err := a.exchange(ctx, c)
		if err != nil {
			if ctx.Err() == nil {
				_, _ = w.Write(api.ErrorEvent(err))
				flush()
			}
			return nil
		}
		if next.StatusCode != http.StatusOK {
			// An error answer ends the stream with the event a server
			// would have ended it with: named after the code, with the
			// body.
			b, _ := io.ReadAll(io.LimitReader(next.Body, api.MaxBodyBytes))
			next.Body.Close()
			var e struct {
				Error string `json:"error"`
			}
			_ = json.Unmarshal(b, &e)
			if e.Error == "" {
				e.Error = "unavailable"
			}
			_, _ = fmt.Fprintf(w, "event: %s\ndata: %s\n\n", e.Error, bytes.TrimSpace(b))
			flush()
			return nil
		}
		resp = next
	}
}

// errAppGone is pipe's error when writing to the app failed.
var errAppGone = errors.New("the app went away")

// pipe copies events from r to w until r ends, writing each event whole
// once its blank line arrives (comments and retry lines at once) and
// flushing whenever nothing more is buffered. It returns the last event
// id seen and whether the stream ended with its last word: any event of
// an acquire but "queued" (an "unavailable" one is held back: the acquire
// goes on elsewhere), or an event stream's "overflow".
func pipe(w io.Writer, flush func(), r io.Reader, acquire bool) (lastID string, final bool, err error) {
	br := bufio.NewReaderSize(r, 16<<10)
	var event []byte // the lines of the event being read
	name := ""
	for {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			event = append(event, line...)
			continue
		}
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF // a stream ends only after its last word
			}
			return lastID, false, err
		}
		switch {
		case len(bytes.TrimSpace(line)) == 0 && len(event) > 0: // the end of an event
			event = append(event, line...)
			if acquire && name == "unavailable" {
				return lastID, false, errors.New("the server answered unavailable")
			}
			if _, err := w.Write(event); err != nil {
				return lastID, true, errAppGone
			}
			event = event[:0]
			if (acquire && name != "queued") || (!acquire && name == "overflow") {
				flush()
				return lastID, true, nil
			}
			name = ""
		case len(event) == 0 && (line[0] == ':' || bytes.HasPrefix(line, []byte("retry:")) || line[0] == '\n'):
			if _, err := w.Write(line); err != nil {
				return lastID, true, errAppGone
			}
		default:
			event = append(event, line...)
			if v, ok := bytes.CutPrefix(line, []byte("event:")); ok {
				name = string(bytes.TrimSpace(v))
			} else if v, ok := bytes.CutPrefix(line, []byte("id:")); ok {
				lastID = string(bytes.TrimSpace(v))
			}
		}
		if br.Buffered() == 0 {
			flush()
		}
	}
}
