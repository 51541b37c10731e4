package client

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http/httptrace"
	"sync"
	"time"
)

// A waiting acquire is a long poll, and giving up on it must not leave a
// lease behind. Simply closing the connection when the caller's context
// ends races with a grant: the server may grant and write the answer in
// the moment before it notices the close, and that lease would then live
// out its TTL with nobody to release it. Instead the client half-closes
// the connection (shuts down its writing side). The server reads EOF and
// gives up the wait at once, as for a disconnect, but the client can
// still read whatever answer the server already sent; Acquire releases a
// grant that arrives this way. Where a half-close is impossible (HTTP/2,
// a custom transport) the request is cancelled outright.

// cancelGrace bounds how long a cancelled long poll waits for the
// server's last word after half-closing.
const cancelGrace = 2 * time.Second

// longPoll returns the request context for a long poll under ctx, and the
// function to call once its answer has been read or it failed.
func longPoll(ctx context.Context) (context.Context, func()) {
	reqCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	var (
		mu         sync.Mutex // guards the following
		conn       net.Conn
		done       bool
		halfClosed bool
		grace      *time.Timer
	)
	reqCtx = httptrace.WithClientTrace(reqCtx, &httptrace.ClientTrace{
		GotConn: func(i httptrace.GotConnInfo) {
			mu.Lock()
			conn = i.Conn
			mu.Unlock()
		},
	})
	stop := context.AfterFunc(ctx, func() {
		mu.Lock()
		defer mu.Unlock()
		if done {
			return
		}
		if conn != nil && closeWrite(conn) == nil {
			halfClosed = true
			grace = time.AfterFunc(cancelGrace, cancel)
			return
		}
		cancel()
	})
	return reqCtx, func() {
		stop()
		mu.Lock()
		defer mu.Unlock()
		done = true
		if grace != nil {
			grace.Stop()
		}
		if halfClosed {
			conn.Close() // it cannot carry another request
		}
		cancel()
	}
}

// closeWrite half-closes c if it is a connection of its own.
func closeWrite(c net.Conn) error {
	if tc, ok := c.(*tls.Conn); ok && tc.ConnectionState().NegotiatedProtocol == "h2" {
		return errors.New("an HTTP/2 connection is shared")
	}
	cw, ok := c.(interface{ CloseWrite() error })
	if !ok {
		return errors.New("the connection cannot be half-closed")
	}
	return cw.CloseWrite()
}
