// Command ceiling serves one of the two ceilings mutexd is measured
// against, speaking mutexd's acquire and release routes so that the same
// load generator drives them:
//
//   - noop: an echo v4 server (mutexd's own HTTP stack) whose handlers
//     answer a fixed grant and a fixed release at once. Nothing is locked:
//     its cycles/s is the ceiling of two HTTP requests per cycle.
//   - fifo: a bare net/http server with a strict FIFO lock per key whose
//     release hands the key straight to the next queued acquire. No
//     leases, fences, metrics or middleware: its hand-offs/s is the ceiling
//     of a lock served over HTTP, one round trip per hand-off.
package main

import (
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
)

func main() {
	mode := flag.String("mode", "noop", "noop or fifo")
	listen := flag.String("listen", "127.0.0.1:0", "listen address")
	flag.Parse()
	var h http.Handler
	switch *mode {
	case "noop":
		h = noop()
	case "fifo":
		h = newFIFO()
	default:
		fmt.Fprintf(os.Stderr, "ceiling: -mode must be noop or fifo, got %q\n", *mode)
		os.Exit(2)
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(ln.Addr().String()) // the driver reads the address from here
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 120 * time.Second}
	log.Fatal(srv.Serve(ln))
}

const (
	grantBody   = `{"key":"k","token":"00000000000000000000000000000000","fence":1,"owner":"o","ttl_ms":30000,"expires_at":"2030-01-01T00:00:00.000Z","waited_ms":0,"previous":null}` + "\n"
	releaseBody = `{"key":"k","fence":1,"released":true,"held_ms":0}` + "\n"
)

// noop is echo with handlers that do nothing but answer.
func noop() http.Handler {
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	grant, release := []byte(grantBody), []byte(releaseBody)
	e.POST("/v1/locks/:key/acquire", func(c echo.Context) error { return c.JSONBlob(http.StatusOK, grant) })
	e.POST("/v1/locks/:key/release", func(c echo.Context) error { return c.JSONBlob(http.StatusOK, release) })
	e.GET("/readyz", func(c echo.Context) error { return c.JSONBlob(http.StatusOK, []byte(`{"status":"ready"}`)) })
	return e
}

// fifo is a strict FIFO lock per key over bare net/http.
type fifo struct {
	mu   sync.Mutex // guards the following
	keys map[string]*fifoKey
	seq  uint64
}

type fifoKey struct {
	holder uint64        // token of the holder, 0 when free
	queue  []chan uint64 // waiters in arrival order; each gets its token
}

func newFIFO() http.Handler {
	f := &fifo{keys: map[string]*fifoKey{}}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/locks/{key}/acquire", f.acquire)
	mux.HandleFunc("POST /v1/locks/{key}/release", f.release)
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, 200, `{"status":"ready"}`) })
	return mux
}

func writeJSON(w http.ResponseWriter, status int, body string) {
	w.Header()["Content-Type"] = []string{"application/json"}
	w.WriteHeader(status)
	_, _ = w.Write([]byte(body))
}

func (f *fifo) acquire(w http.ResponseWriter, r *http.Request) {
	key := r.PathValue("key")
	wait := 30 * time.Second
	if v := r.URL.Query().Get("wait"); v != "" {
		if d, err := time.ParseDuration(v); err == nil {
			wait = d
		}
	}
	f.mu.Lock()
	k := f.keys[key]
	if k == nil {
		k = &fifoKey{}
		f.keys[key] = k
	}
	if k.holder == 0 && len(k.queue) == 0 {
		f.seq++
		k.holder = f.seq
		tok := f.seq
		f.mu.Unlock()
		writeGrant(w, tok)
		return
	}
	if wait == 0 {
		f.mu.Unlock()
		writeJSON(w, http.StatusLocked, `{"error":"timeout","message":"busy"}`+"\n")
		return
	}
	ch := make(chan uint64, 1)
	k.queue = append(k.queue, ch)
	f.mu.Unlock()
	// A ceiling, not a product: a waiter that gives up is not dequeued, so
	// the load generator must never let a wait pass.
	select {
	case tok := <-ch:
		writeGrant(w, tok)
	case <-r.Context().Done():
	}
}

func writeGrant(w http.ResponseWriter, tok uint64) {
	writeJSON(w, http.StatusOK, `{"key":"k","token":"`+strconv.FormatUint(tok, 10)+`","fence":`+strconv.FormatUint(tok, 10)+`,"previous":null}`+"\n")
}

func (f *fifo) release(w http.ResponseWriter, r *http.Request) {
	key := r.PathValue("key")
	tok, _ := strconv.ParseUint(strings.TrimSpace(r.URL.Query().Get("token")), 10, 64)
	f.mu.Lock()
	k := f.keys[key]
	if k == nil || tok == 0 || k.holder != tok {
		f.mu.Unlock()
		writeJSON(w, http.StatusConflict, `{"error":"not_holder","message":"not the holder"}`+"\n")
		return
	}
	if len(k.queue) > 0 {
		next := k.queue[0]
		k.queue[0] = nil
		k.queue = k.queue[1:]
		f.seq++
		k.holder = f.seq
		next <- f.seq // the next waiter's grant, handed over directly
	} else {
		delete(f.keys, key)
	}
	f.mu.Unlock()
	writeJSON(w, http.StatusOK, `{"released":true}`+"\n")
}
