package api

import (
	"context"
	"errors"
	"io"
	"net/http"
	"time"
)

// Two limits keep a client from pinning handlers: one on the requests
// served at once (Options.MaxRequests), which an HTTP/2 connection's
// streams count against one each, and one on how long a response write
// may make no progress (Options.WriteTimeout). Together they bound the
// goroutines and memory a client that never reads (or grants an HTTP/2
// flow-control window of zero) can hold, and for how long.

// MaxRefusals bounds the requests being refused at once beyond
// Options.MaxRequests. A refusal is a JSON body, whose write can itself be
// stuck for up to Options.WriteTimeout; beyond MaxRefusals a request is
// reset without an answer (HTTP/2 RST_STREAM, an HTTP/1 connection
// closed), which costs nothing to send. So at most MaxRequests +
// MaxRefusals handlers run at any time.
const MaxRefusals = 256

// errTooManyRequests refuses a request while Options.MaxRequests are being
// served.
var errTooManyRequests = errors.New("too many requests in flight")

type connKey struct{}

// WithConn returns ctx carrying c, the connection its requests arrive on;
// http.Server.ConnContext is the place to call it. An HTTP/2 response write
// stuck for Options.WriteTimeout then closes c, ending every stream of a
// peer that stopped reading at once (and freeing its connection slot);
// without it only the stuck stream is reset.
func WithConn(ctx context.Context, c io.Closer) context.Context {
	return context.WithValue(ctx, connKey{}, c)
}

// admit counts a request in and reports whether it is to be served
// (refuse false) or refused with errTooManyRequests. Beyond MaxRefusals
// refusals it aborts the request. The caller calls done when the request,
// answered or refused, is finished.
func (s *Server) admit() (refuse bool) {
	n := s.inFlight.Add(1)
	if s.maxRequests <= 0 || n <= s.maxRequests {
		return false
	}
	if n > s.maxRequests+MaxRefusals {
		s.inFlight.Add(-1)
		panic(http.ErrAbortHandler)
	}
	return true
}

func (s *Server) done() { s.inFlight.Add(-1) }

// writeGuard bounds every write of one response by a timeout. Over HTTP/1
// each write gets a connection write deadline (net/http closes the
// connection when a write fails). Over HTTP/2 a write only hands data to
// the connection's writer, which waits for the peer's flow-control window,
// so a timer closes the connection (or, without WithConn, resets the
// stream) if the write has not returned in time.
type writeGuard struct {
	http.ResponseWriter
	timeout time.Duration
	h2      bool
	conn    io.Closer   // HTTP/2 only; nil: reset the stream instead
	timer   *time.Timer // HTTP/2 only; created by the first write
	until   time.Time   // HTTP/1 only: the write deadline last set
}

// guardWrites wraps the response writer of c in a writeGuard; nil when
// writes are not limited.
func (s *Server) guardWrites(w http.ResponseWriter, r *http.Request) *writeGuard {
	if s.writeTimeout <= 0 {
		return nil
	}
	g := &writeGuard{ResponseWriter: w, timeout: s.writeTimeout, h2: r.ProtoMajor == 2}
	if g.h2 {
		g.conn, _ = r.Context().Value(connKey{}).(io.Closer)
	}
	// Over HTTP/1 no deadline is left from an earlier response on the
	// connection: net/http lifts it after each request.
	return g
}

func (g *writeGuard) Write(b []byte) (int, error) {
	g.arm()
	n, err := g.ResponseWriter.Write(b)
	g.disarm()
	return n, err
}

// FlushError flushes under the timeout; http.ResponseController and echo's
// Flush find it.
func (g *writeGuard) FlushError() error {
	g.arm()
	err := http.NewResponseController(g.ResponseWriter).Flush()
	g.disarm()
	return err
}

// Flush implements http.Flusher.
func (g *writeGuard) Flush() { _ = g.FlushError() }

// Unwrap lets http.ResponseController reach net/http's writer.
func (g *writeGuard) Unwrap() http.ResponseWriter { return g.ResponseWriter }

func (g *writeGuard) arm() {
	if !g.h2 {
		g.deadline()
		return
	}
	if g.timer == nil {
		g.timer = time.AfterFunc(g.timeout, g.stuck)
		return
	}
	g.timer.Reset(g.timeout)
}

// deadline gives the HTTP/1 connection a write deadline at least half the
// timeout away, setting a new one only when the last is closer: a plain
// answer then costs one deadline (set by its first write, still far off
// for the final flush in finish), not one per write, since each costs the
// poller's timer work. So a stuck write is cut after between half the
// timeout and the timeout.
func (g *writeGuard) deadline() {
	now := time.Now()
	if g.until.Sub(now) > g.timeout/2 {
		return
	}
	g.until = now.Add(g.timeout)
	_ = http.NewResponseController(g.ResponseWriter).SetWriteDeadline(g.until)
}

func (g *writeGuard) disarm() {
	if g.timer != nil {
		g.timer.Stop()
	}
}

// stuck runs when an HTTP/2 write has made no progress for the timeout.
func (g *writeGuard) stuck() {
	if g.conn != nil {
		_ = g.conn.Close()
		return
	}
	// A deadline in the past resets the stream at once.
	_ = http.NewResponseController(g.ResponseWriter).SetWriteDeadline(time.Unix(1, 0))
}

// finish bounds what is left of the response once the handler is done,
// while the request still counts against MaxRequests. Over HTTP/2 it
// flushes the rest under the timer (net/http would otherwise flush it after
// the handler returns, waiting on the peer's window for as long as it
// likes); over HTTP/1 the final write, which net/http does, gets a deadline
// (lifted by net/http after it).
func (g *writeGuard) finish(committed bool) {
	if g == nil {
		return
	}
	if !g.h2 {
		g.deadline()
		return
	}
	if committed {
		_ = g.FlushError()
	}
}
