package server_test

import (
	"bytes"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/mutexd/mutexd/internal/api"
	"github.com/mutexd/mutexd/internal/servertest"
)

// rawH2 is an HTTP/2 client written frame by frame, so a test can behave
// the way no well-mannered client does: grant no flow-control window, or
// open a connection and never send a request.
type rawH2 struct {
	conn   net.Conn
	fr     *http2.Framer
	hbuf   bytes.Buffer
	enc    *hpack.Encoder
	scheme string
	// stuck is set once a response has begun (HEADERS without END_STREAM)
	// whose body the window this client grants will never let through.
	stuck  atomic.Bool
	closed chan struct{} // closed once the server has closed the connection
	gone   time.Time     // when it did; read only after closed
}

// dialH2 connects (TLS with ALPN h2, or cleartext with prior knowledge),
// sends the preface and a SETTINGS frame with settings, and reads what the
// server sends until it closes the connection.
func dialH2(t *testing.T, addr string, useTLS bool, settings ...http2.Setting) *rawH2 {
	t.Helper()
	h := &rawH2{scheme: "http", closed: make(chan struct{})}
	var err error
	if useTLS {
		h.scheme = "https"
		var tc *tls.Conn
		tc, err = tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}})
		if err == nil && tc.ConnectionState().NegotiatedProtocol != "h2" {
			t.Fatalf("negotiated %q, want h2", tc.ConnectionState().NegotiatedProtocol)
		}
		h.conn = tc
	} else {
		h.conn, err = net.Dial("tcp", addr)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.conn.Close() })
	h.fr = http2.NewFramer(h.conn, h.conn)
	h.enc = hpack.NewEncoder(&h.hbuf)
	if _, err := io.WriteString(h.conn, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	if err := h.fr.WriteSettings(settings...); err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			f, err := h.fr.ReadFrame()
			if err != nil {
				break
			}
			if hf, ok := f.(*http2.HeadersFrame); ok && !hf.StreamEnded() {
				h.stuck.Store(true)
			}
		}
		h.gone = time.Now()
		close(h.closed)
	}()
	return h
}

// get opens stream id with a GET of path (headers only).
func (h *rawH2) get(id uint32, path string) error {
	h.hbuf.Reset()
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", h.scheme}, {":authority", "mutexd"}, {":path", path}} {
		_ = h.enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	return h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: h.hbuf.Bytes(), EndStream: true, EndHeaders: true})
}

// closedWithin reports whether the server closed the connection within d.
func (h *rawH2) closedWithin(d time.Duration) bool {
	select {
	case <-h.closed:
		return true
	case <-time.After(d):
		return false
	}
}

// TestH2ZeroWindowIsCutOff opens HTTP/2 connections that grant no
// flow-control window (SETTINGS_INITIAL_WINDOW_SIZE=0) and fill them with
// requests, so that no response body can ever be sent. The handlers stuck
// writing must stay bounded by limits.max_requests (not by streams per
// connection), and every such connection must be closed within
// limits.write_timeout, after which the daemon serves again at its
// baseline.
func TestH2ZeroWindowIsCutOff(t *testing.T) {
	for _, tc := range []struct {
		name string
		tls  bool
	}{{"h2c", false}, {"h2-over-tls", true}} {
		t.Run(tc.name, func(t *testing.T) {
			const conns, streams = 8, 100
			cfg := testConfig()
			client := http.DefaultClient
			if tc.tls {
				certFile, keyFile, pool := servertest.WriteCert(t, t.TempDir())
				cfg.TLS.CertFile, cfg.TLS.KeyFile = certFile, keyFile
				tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
				defer tr.CloseIdleConnections()
				client = &http.Client{Transport: tr}
			}
			cfg.Limits.MaxRequests = 20
			cfg.Limits.WriteTimeout = 2 * time.Second
			d := startDaemon(t, cfg)
			base := d.url
			if tc.tls {
				base = "https://" + d.srv.Addr().String()
			}
			addr := d.srv.Addr().String()
			if code, _, _ := call(t, client, "GET", base+"/healthz", ""); code != 200 {
				t.Fatalf("healthz before: %d", code)
			}
			baseline := runtime.NumGoroutine()

			var hs []*rawH2
			for range conns {
				h := dialH2(t, addr, tc.tls, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
				for i := range streams {
					if err := h.get(uint32(2*i+1), "/healthz"); err != nil {
						t.Fatalf("stream %d: %v", i, err)
					}
				}
				hs = append(hs, h)
			}
			sent := time.Now()
			// While the responses are stuck (before the write timeout), the
			// handlers left are bounded by max_requests, not by streams.
			// Per connection the server runs a few goroutines of its own and
			// this test one reader.
			bound := baseline + cfg.Limits.MaxRequests + api.MaxRefusals + 4*conns + 20
			held := runtime.NumGoroutine()
			for settle := time.Now().Add(cfg.Limits.WriteTimeout / 2); held > bound; held = runtime.NumGoroutine() {
				if time.Now().After(settle) {
					t.Fatalf("%d goroutines (baseline %d) held by %d×%d zero-window requests, want at most %d: the handlers stuck writing are not bounded by limits.max_requests",
						held, baseline, conns, streams, bound)
				}
				time.Sleep(10 * time.Millisecond)
			}
			held -= baseline
			// Every connection with a stuck response is closed within the
			// write timeout (the old daemon never closed them).
			var last time.Duration
			stuck := 0
			for i, h := range hs {
				if !h.stuck.Load() {
					continue // all its requests were refused by a reset
				}
				stuck++
				if !h.closedWithin(cfg.Limits.WriteTimeout + 5*time.Second - time.Since(sent)) {
					t.Fatalf("zero-window connection %d still open %s after its %d requests (write timeout %s)",
						i, time.Since(sent).Round(time.Millisecond), streams, cfg.Limits.WriteTimeout)
				}
				last = max(last, h.gone.Sub(sent))
			}
			if stuck == 0 {
				t.Fatal("no connection got a response that the zero window stuck: the test tested nothing")
			}
			if last < cfg.Limits.WriteTimeout/2 {
				t.Fatalf("stuck connections closed %s after the requests, well before the write timeout (%s)", last, cfg.Limits.WriteTimeout)
			}
			// The handlers end a moment after their connection is closed.
			eventually(t, 5*time.Second, "healthz served once the stuck connections are closed", func() bool {
				code, _, _ := call(t, client, "GET", base+"/healthz", "")
				return code == 200
			})
			for _, h := range hs {
				h.conn.Close()
			}
			eventually(t, 10*time.Second, "goroutines back near the baseline", func() bool {
				return runtime.NumGoroutine() <= baseline+10
			})
			t.Logf("zero window, %d connections × %d requests: %d goroutines over the baseline while stuck; the %d connections with stuck responses closed within %s of the requests",
				conns, streams, held, stuck, last.Round(time.Millisecond))
		})
	}
}

// TestIdleH2ConnectionsAreClosed fills limits.max_connections with HTTP/2
// connections that send the preface and SETTINGS and then nothing: they
// must be closed after limits.read_header_timeout, as a silent HTTP/1
// connection is, not hold their slots for limits.idle_timeout.
func TestIdleH2ConnectionsAreClosed(t *testing.T) {
	for _, tc := range []struct {
		name string
		tls  bool
	}{{"h2c", false}, {"h2-over-tls", true}} {
		t.Run(tc.name, func(t *testing.T) {
			const n = 20
			cfg := testConfig()
			cfg.Limits.MaxConnections = n
			cfg.Limits.ReadHeaderTimeout = 500 * time.Millisecond
			client := http.DefaultClient
			if tc.tls {
				certFile, keyFile, pool := servertest.WriteCert(t, t.TempDir())
				cfg.TLS.CertFile, cfg.TLS.KeyFile = certFile, keyFile
				tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
				defer tr.CloseIdleConnections()
				client = &http.Client{Transport: tr}
			}
			d := startDaemon(t, cfg)
			base := d.url
			if tc.tls {
				base = "https://" + d.srv.Addr().String()
			}
			start := time.Now()
			var hs []*rawH2
			for range n {
				hs = append(hs, dialH2(t, d.srv.Addr().String(), tc.tls))
			}
			var last time.Duration
			for i, h := range hs {
				if !h.closedWithin(cfg.Limits.ReadHeaderTimeout + 5*time.Second - time.Since(start)) {
					t.Fatalf("idle connection %d still open %s after it connected (read_header_timeout %s, idle_timeout %s)",
						i, time.Since(start).Round(time.Millisecond), cfg.Limits.ReadHeaderTimeout, cfg.Limits.IdleTimeout)
				}
				last = max(last, h.gone.Sub(start))
			}
			if last < cfg.Limits.ReadHeaderTimeout/2 {
				t.Fatalf("idle connections closed after %s, before read_header_timeout (%s)", last, cfg.Limits.ReadHeaderTimeout)
			}
			eventually(t, 5*time.Second, "healthz served once the idle connections are gone", func() bool {
				resp, err := client.Get(base + "/healthz")
				if err != nil {
					return false
				}
				resp.Body.Close()
				return resp.StatusCode == 200
			})
			t.Logf("%d idle h2 connections filling max_connections closed %s after connecting", n, last.Round(time.Millisecond))
		})
	}
}
