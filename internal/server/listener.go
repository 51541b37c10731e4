package server

import (
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// limitListener caps the open connections it has handed out. Past the cap
// it accepts and refuses at once (plain HTTP clients get a 503; TLS ones a
// closed connection) rather than letting a flood queue up or grow memory:
// the cost of a refused connection is one short-lived goroutine, and only
// maxRefusers of those run at a time (beyond, the connection is just
// closed).
//
// A connection it hands out must bring its first request (reach the
// handler, see limitConn.served) within firstRequest, or it is closed:
// net/http's ReadHeaderTimeout does that for HTTP/1, but an HTTP/2
// connection that sends its preface and SETTINGS and then nothing would
// otherwise hold its slot for the whole IdleTimeout.
type limitListener struct {
	net.Listener
	slots        chan struct{} // one token per open connection
	refusal      []byte        // written to a refused connection; nil: just close
	firstRequest time.Duration // 0: no deadline

	refusers chan struct{} // bounds the goroutines answering refusals
	wg       sync.WaitGroup
	refused  atomic.Int64
}

const (
	maxRefusers   = 64
	refusalLinger = 250 * time.Millisecond
)

// refusal503 is the answer to a plain-HTTP connection past the cap.
var refusal503 = func() []byte {
	body := `{"error":"too_many_connections","message":"The server has too many open connections; retry later."}` + "\n"
	return []byte("HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\nConnection: close\r\n" +
		"Content-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body)
}()

func newLimitListener(ln net.Listener, max int, refusal []byte, firstRequest time.Duration) *limitListener {
	return &limitListener{Listener: ln, slots: make(chan struct{}, max), refusal: refusal, firstRequest: firstRequest,
		refusers: make(chan struct{}, maxRefusers)}
}

// Accept returns the next connection that fits under the cap.
func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		select {
		case l.slots <- struct{}{}:
			lc := &limitConn{Conn: c, l: l}
			if l.firstRequest > 0 {
				lc.deadline = time.AfterFunc(l.firstRequest, func() { _ = lc.close() })
			}
			return lc, nil
		default:
			l.refuse(c)
		}
	}
}

// refuse answers and closes a connection past the cap without blocking
// Accept. It reads (and drops) what the client sent for a moment, so the
// client's request does not turn the close into a reset that discards the
// answer.
func (l *limitListener) refuse(c net.Conn) {
	l.refused.Add(1)
	if l.refusal == nil {
		c.Close()
		return
	}
	select {
	case l.refusers <- struct{}{}:
	default:
		c.Close()
		return
	}
	l.wg.Go(func() {
		defer func() { <-l.refusers }()
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(refusalLinger))
		if _, err := c.Write(l.refusal); err != nil {
			return
		}
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
		var buf [512]byte
		for {
			if _, err := c.Read(buf[:]); err != nil {
				return
			}
		}
	})
}

// Close stops accepting and waits for the refusals in progress.
func (l *limitListener) Close() error {
	err := l.Listener.Close()
	l.wg.Wait()
	return err
}

// Open returns the number of connections open now.
func (l *limitListener) Open() int { return len(l.slots) }

// Refused returns the number of connections refused so far.
func (l *limitListener) Refused() int64 { return l.refused.Load() }

// limitConn gives its slot back when closed (once, however often Close is
// called).
type limitConn struct {
	net.Conn
	l          *limitListener
	once       sync.Once
	deadline   *time.Timer // closes the connection if no request came; nil: none
	gotRequest atomic.Bool // a request has reached the handler
}

func (c *limitConn) Close() error {
	if c.deadline != nil {
		c.deadline.Stop()
	}
	return c.close()
}

// close closes without touching the deadline (it is the deadline's func).
func (c *limitConn) close() error {
	err := c.Conn.Close()
	c.once.Do(func() { <-c.l.slots })
	return err
}

// served lifts the first-request deadline: a request has reached the
// handler. Every request calls it; the first one stops the timer.
func (c *limitConn) served() {
	if c.deadline != nil && !c.gotRequest.Load() && c.gotRequest.CompareAndSwap(false, true) {
		c.deadline.Stop()
	}
}
