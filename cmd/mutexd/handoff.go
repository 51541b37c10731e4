package main

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mutexd/mutexd/client"
)

// The release handoff lets the command that "mutexd lock" runs end its
// lease early without being taken for a lost lease.
//
// The server cannot tell lock why a lease ended: a renewal after the
// holder released answers 409 not_holder exactly as one after an
// operator's force-release or an expiry does, and nothing in the API
// records the outcome of a lease that is gone (only the next grant's
// "previous" does, and lock is not the next holder). So lock cannot prove
// a self-release from the server's answers, and a lease it cannot prove
// released by its holder must count as lost: the command is stopped.
// Instead lock proves it locally: it listens on a Unix socket in a
// private directory (mode 0700) named by MUTEXD_LOCK_SOCKET in the
// command's environment, and "mutexd release" run by the command sends
// the key and token there. If they are lock's own, lock itself releases
// the lease (stopping its renewals first, so no renewal can be refused),
// and it knows the lease ended by its holder. The token is the only
// credential: whoever has it could release the lease at the server
// anyway.

// lockSocketEnv names the handoff socket in the command's environment.
const lockSocketEnv = "MUTEXD_LOCK_SOCKET"

// handoffRequest is what "mutexd release" sends to lock.
type handoffRequest struct {
	Key    string `json:"key"`
	Token  string `json:"token"`
	Failed bool   `json:"failed"`
}

// handoffReply is lock's answer. Result is "released", "not_mine" (not
// lock's lease: release it at the server), "not_holder" (the lease had
// already ended), or "error" with Message.
type handoffReply struct {
	Result  string `json:"result"`
	Message string `json:"message,omitempty"`
}

// releaseHandoff serves the handoff socket for one lease.
type releaseHandoff struct {
	dir     string
	ln      net.Listener
	key     string
	token   string
	release func(failed bool) error
	wg      sync.WaitGroup // the accept loop and every connection
	ended   atomic.Bool    // the command released the lease through lock

	mu sync.Mutex // serializes releases
}

// listenHandoff creates the socket in a new private directory; release
// ends the lease with the command's outcome.
func listenHandoff(key, token string, release func(failed bool) error) (*releaseHandoff, error) {
	dir, err := os.MkdirTemp("", "mutexd-lock-")
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("unix", filepath.Join(dir, "s"))
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	h := &releaseHandoff{dir: dir, ln: ln, key: key, token: token, release: release}
	h.wg.Add(1)
	go h.serve()
	return h, nil
}

// path is the socket's path, for MUTEXD_LOCK_SOCKET.
func (h *releaseHandoff) path() string { return h.ln.Addr().String() }

// released reports whether the command released the lease through lock.
func (h *releaseHandoff) released() bool { return h != nil && h.ended.Load() }

// close stops serving, waits for releases under way, and removes the
// socket.
func (h *releaseHandoff) close() {
	if h == nil {
		return
	}
	h.ln.Close()
	h.wg.Wait()
	os.RemoveAll(h.dir)
}

func (h *releaseHandoff) serve() {
	defer h.wg.Done()
	for {
		c, err := h.ln.Accept()
		if err != nil {
			return
		}
		h.wg.Add(1)
		go func() {
			defer h.wg.Done()
			defer c.Close()
			h.handle(c)
		}()
	}
}

func (h *releaseHandoff) handle(c net.Conn) {
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var req handoffRequest
	if err := json.NewDecoder(c).Decode(&req); err != nil {
		return
	}
	reply := handoffReply{Result: "not_mine"}
	if req.Key == h.key && subtle.ConstantTimeCompare([]byte(req.Token), []byte(h.token)) == 1 {
		h.mu.Lock()
		err := h.release(req.Failed)
		if err == nil {
			h.ended.Store(true)
		}
		h.mu.Unlock()
		switch {
		case err == nil:
			reply.Result = "released"
		case errors.Is(err, client.ErrNotHolder):
			reply.Result = "not_holder"
		default:
			reply = handoffReply{Result: "error", Message: err.Error()}
		}
	}
	_ = json.NewEncoder(c).Encode(reply)
}

// releaseThroughLock asks the "mutexd lock" at socket to release its
// lease. handled is false when that lock is not there or the lease is
// not its own: release it at the server then.
func releaseThroughLock(ctx context.Context, socket, key, token string, failed bool) (handled bool, err error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", socket)
	if err != nil {
		return false, nil
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	if err := json.NewEncoder(c).Encode(handoffRequest{Key: key, Token: token, Failed: failed}); err != nil {
		return false, nil
	}
	var reply handoffReply
	if err := json.NewDecoder(c).Decode(&reply); err != nil {
		// No answer (lock died, say): the server tells whether the lease
		// is still live.
		return false, nil
	}
	switch reply.Result {
	case "released":
		return true, nil
	case "not_holder":
		return true, fmt.Errorf("release %s: %w", key, client.ErrNotHolder)
	case "error":
		return true, errors.New(reply.Message)
	}
	return false, nil
}
