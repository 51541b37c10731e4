package api_test

import (
	"bufio"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/mutexd/mutexd/internal/api"
	"github.com/mutexd/mutexd/internal/engine"
)

// TestTrickledBodyIsCutOff checks a client that sends headers and then
// trickles its body is answered and disconnected after the body timeout,
// while a long poll whose body arrived in time is not cut by it.
func TestTrickledBodyIsCutOff(t *testing.T) {
	eng := engine.New(engine.SystemClock{}, nil, engine.Limits{})
	a := api.New(api.Options{Locker: eng, Bounds: bounds, BodyTimeout: 200 * time.Millisecond, Logger: testLogger(t), Observer: checkCodes(t)})
	a.SetReady(true)
	srv := httptest.NewServer(a)
	defer srv.Close()

	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	start := time.Now()
	if _, err := conn.Write([]byte("POST /v1/locks/k/acquire HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\n\r\n{\"ttl\"")); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer to a trickled body: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("trickled body: status %d, want 400", resp.StatusCode)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("cut off after %v, want about the 200ms body timeout", d)
	}
	if st := eng.Stats(); st != (engine.Stats{}) {
		t.Fatalf("engine changed: %+v", st)
	}

	// A long poll outlives the body timeout once its body is in.
	if _, err := eng.Acquire(t.Context(), "held", engine.AcquireOptions{TTL: time.Minute}); err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	r, err := http.Post(srv.URL+"/v1/locks/held/acquire", "application/json", strings.NewReader(`{"wait":"1s"}`))
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if r.StatusCode != http.StatusLocked || time.Since(begin) < time.Second {
		t.Fatalf("long poll with a body: %d after %v, want 423 after the full 1s wait", r.StatusCode, time.Since(begin))
	}
}
