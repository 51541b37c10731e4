package server_test

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mutexd/mutexd/internal/servertest"
)

// served connects with a fresh TLS handshake and returns the fingerprint
// of the certificate served and the negotiated protocol.
func served(t *testing.T, addr string) ([32]byte, string) {
	t.Helper()
	conn, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2", "http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	st := conn.ConnectionState()
	return sha256.Sum256(st.PeerCertificates[0].Raw), st.NegotiatedProtocol
}

func TestTLSServesAndReloads(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, pool := servertest.WriteCert(t, dir)
	cfg := testConfig()
	cfg.TLS.CertFile, cfg.TLS.KeyFile = certFile, keyFile
	cfg.Auth.Tokens = []string{tokA}
	d := startDaemon(t, cfg)
	addr := d.srv.Addr().String()
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}}
	defer client.CloseIdleConnections()
	base := "https://" + addr
	code, _, body := call(t, client, "POST", base+"/v1/locks/tls/acquire?wait=0", tokA)
	if code != 200 || body["token"] == nil {
		t.Fatalf("acquire over TLS: %d %v", code, body)
	}
	first, proto := served(t, addr)
	if proto != "h2" {
		t.Fatalf("negotiated %q, want h2", proto)
	}
	// Plain HTTP to a TLS port gets nothing useful.
	if resp, err := http.Get("http://" + addr + "/healthz"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Fatal("plain HTTP was served on the TLS port")
		}
	}

	// Rotate: new files, SIGHUP (Reload); new handshakes get the new certificate.
	servertest.WriteCert(t, dir)
	if err := d.srv.Reload(); err != nil {
		t.Fatal(err)
	}
	second, _ := served(t, addr)
	if second == first {
		t.Fatal("after reload the old certificate is still served")
	}
	// A broken key keeps the certificate in force.
	if err := os.WriteFile(keyFile, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := d.srv.Reload(); err == nil {
		t.Fatal("Reload with a broken key succeeded")
	}
	if now, _ := served(t, addr); now != second {
		t.Fatal("after a failed reload the certificate changed")
	}
}

func TestHTTP2Cleartext(t *testing.T) {
	d := startDaemon(t, testConfig())
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	tr := &http.Transport{Protocols: &p}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Post(d.url+"/v1/locks/h2c/acquire", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Proto != "HTTP/2.0" {
		t.Fatalf("h2c acquire: %d over %s, want 200 over HTTP/2.0", resp.StatusCode, resp.Proto)
	}
}

func TestRestartGrace(t *testing.T) {
	cfg := testConfig()
	// Long enough that a loaded machine still sends the first calls
	// within it (1.5s was not always).
	cfg.Lock.RestartGrace = 5 * time.Second
	start := time.Now()
	d := startDaemon(t, cfg)
	c := http.DefaultClient
	code, h, body := call(t, c, "POST", d.url+"/v1/locks/g/acquire", "")
	if code != 503 || body["error"] != "unavailable" {
		t.Fatalf("acquire during the grace: %d %v, want 503 unavailable", code, body)
	}
	if ra, _ := strconv.Atoi(h.Get("Retry-After")); ra < 1 || ra > 5 {
		t.Fatalf("Retry-After %q, want 1 to 5 (seconds left of the grace)", h.Get("Retry-After"))
	}
	if code, _, _ := call(t, c, "GET", d.url+"/readyz", ""); code != 503 && time.Since(start) < cfg.Lock.RestartGrace {
		t.Fatalf("readyz during the grace: %d, want 503", code)
	}
	if code, _, _ := call(t, c, "GET", d.url+"/healthz", ""); code != 200 {
		t.Fatalf("healthz during the grace: %d, want 200", code)
	}
	eventually(t, 20*time.Second, "readyz turns 200 after the grace", func() bool {
		code, _, _ := call(t, c, "GET", d.url+"/readyz", "")
		return code == 200
	})
	if el := time.Since(start); el < cfg.Lock.RestartGrace {
		t.Fatalf("ready after %s, before the grace of %s ended", el, cfg.Lock.RestartGrace)
	}
	if code, _, body := call(t, c, "POST", d.url+"/v1/locks/g/acquire", ""); code != 200 {
		t.Fatalf("acquire after the grace: %d %v", code, body)
	}
	if !strings.Contains(d.logs.String(), "lock.restart_grace is shorter than lock.max_ttl") {
		t.Fatal("no warning that a 5s grace does not cover lock.max_ttl (1h)")
	}
}

// TestRestartKeepsExclusion restarts the daemon on the same address while a
// client holds a lease: with restart_grace at least the TTL, nobody else is
// granted the key before that lease has run out, and the next fence is
// higher.
func TestRestartKeepsExclusion(t *testing.T) {
	const ttl = 2 * time.Second
	cfg := testConfig()
	a := startDaemon(t, cfg)
	// No keep-alive: a connection to the first daemon must not be reused
	// for the second.
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	sent := time.Now()
	code, _, body := call(t, c, "POST", a.url+"/v1/locks/job/acquire?ttl=2s", "")
	if code != 200 {
		t.Fatalf("acquire: %d %v", code, body)
	}
	oldFence := body["fence"].(float64)
	if err := a.stop(); err != nil {
		t.Fatal(err)
	}
	cfg.Listen = a.srv.Addr().String()
	cfg.Lock.RestartGrace = ttl
	b := startDaemon(t, cfg)
	for {
		code, _, body = call(t, c, "POST", b.url+"/v1/locks/job/acquire?wait=0", "")
		if code == 200 {
			break
		}
		if code != 503 {
			t.Fatalf("acquire after restart: %d %v, want 503 then 200", code, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if held := time.Since(sent); held < ttl {
		t.Fatalf("granted again %s after the first grant, before its TTL of %s ran out", held, ttl)
	}
	if f := body["fence"].(float64); f <= oldFence {
		t.Fatalf("fence after restart %v, want more than %v", f, oldFence)
	}
}

func TestMaxConnectionsRefuses(t *testing.T) {
	cfg := testConfig()
	cfg.Limits.MaxConnections = 3
	d := startDaemon(t, cfg)
	addr := d.srv.Addr().String()
	dial := func() net.Conn {
		t.Helper()
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	get := func(c net.Conn) (*http.Response, error) {
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			return nil, err
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		return resp, err
	}
	var held []net.Conn
	for range 3 {
		c := dial()
		if resp, err := get(c); err != nil || resp.StatusCode != 200 {
			t.Fatalf("connection under the cap: %v %v", resp, err)
		}
		held = append(held, c)
	}
	answered := 0
	for range 5 {
		resp, err := get(dial())
		if err != nil {
			continue // closed or reset: also a refusal
		}
		if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" {
			t.Fatalf("connection over the cap answered %d, want 503 with Retry-After or a closed connection", resp.StatusCode)
		}
		answered++
	}
	if answered == 0 {
		t.Fatal("no refused connection got the 503 answer")
	}
	// The held connections still work, and closing one frees a slot.
	if resp, err := get(held[0]); err != nil || resp.StatusCode != 200 {
		t.Fatalf("held connection: %v %v", resp, err)
	}
	held[1].Close()
	eventually(t, 5*time.Second, "a freed slot is reused", func() bool {
		resp, err := get(dial())
		return err == nil && resp.StatusCode == 200
	})
	// The refusals are counted where operators look.
	held[0].Close()
	held[2].Close()
	var metrics string
	eventually(t, 5*time.Second, "a scrape gets a slot", func() bool {
		resp, err := http.Get(d.url + "/metrics")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		metrics = string(raw)
		return resp.StatusCode == 200
	})
	for _, want := range []string{"mutexd_connections_open ", "mutexd_connections_refused_total "} {
		if !strings.Contains(metrics, "\n"+want) {
			t.Fatalf("metrics lack %s", want)
		}
	}
	var refused float64
	for _, line := range strings.Split(metrics, "\n") {
		if v, ok := strings.CutPrefix(line, "mutexd_connections_refused_total "); ok {
			refused, _ = strconv.ParseFloat(v, 64)
		}
	}
	if refused < 5 {
		t.Fatalf("mutexd_connections_refused_total = %v, want at least the 5 refused", refused)
	}
}

func TestHeaderTricklerIsCutOff(t *testing.T) {
	cfg := testConfig()
	cfg.Limits.ReadHeaderTimeout = 300 * time.Millisecond
	d := startDaemon(t, cfg)
	c, err := net.Dial("tcp", d.srv.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	msg := "POST /v1/locks/slow/acquire HTTP/1.1\r\nHost: x\r\n" + strings.Repeat("X-Slow: drip\r\n", 100)
	cut := false
	for i := 0; i < len(msg) && time.Since(start) < 10*time.Second; i++ {
		if _, err := c.Write([]byte{msg[i]}); err != nil {
			cut = true
			break
		}
		time.Sleep(20 * time.Millisecond)
		// The server closing shows up as a readable EOF (or a 408).
		_ = c.SetReadDeadline(time.Now().Add(time.Millisecond))
		var b [64]byte
		if _, err := c.Read(b[:]); err == io.EOF || (err == nil) {
			cut = true
			break
		}
	}
	el := time.Since(start)
	if !cut {
		t.Fatalf("a client trickling header bytes for %s was not cut off", el)
	}
	// The server's clock starts at accept, a little before ours.
	if el < cfg.Limits.ReadHeaderTimeout/2 || el > 5*time.Second {
		t.Fatalf("cut off after %s, want about %s", el, cfg.Limits.ReadHeaderTimeout)
	}
}

func TestLongPollOutlivesServerTimeouts(t *testing.T) {
	cfg := testConfig()
	cfg.Limits.ReadHeaderTimeout = 200 * time.Millisecond
	cfg.Limits.IdleTimeout = 200 * time.Millisecond
	// A write timeout bounds each write, not the wait before it.
	cfg.Limits.WriteTimeout = 200 * time.Millisecond
	d := startDaemon(t, cfg)
	c := http.DefaultClient
	if code, _, _ := call(t, c, "POST", d.url+"/v1/locks/poll/acquire?ttl=1m", ""); code != 200 {
		t.Fatal("first acquire failed")
	}
	const wait = 1500 * time.Millisecond
	start := time.Now()
	code, _, body := call(t, c, "POST", d.url+"/v1/locks/poll/acquire?wait=1500ms", "")
	el := time.Since(start)
	if code != 423 || body["error"] != "timeout" {
		t.Fatalf("long poll: %d %v, want 423 timeout", code, body)
	}
	if el < wait-50*time.Millisecond {
		t.Fatalf("long poll ended after %s, before its wait of %s: cut by a server timeout", el, wait)
	}
}

func TestOversizedHeadersRefused(t *testing.T) {
	d := startDaemon(t, testConfig())
	req, _ := http.NewRequestWithContext(context.Background(), "GET", d.url+"/healthz", nil)
	req.Header.Set("X-Big", strings.Repeat("a", 200<<10))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("200 KiB of headers: %d, want 431", resp.StatusCode)
	}
}

// TestConnectionFlood opens 2,000 connections against a cap of 100: the
// daemon keeps at most 100 open, refuses the rest, and still serves a
// client that was connected before the flood.
func TestConnectionFlood(t *testing.T) {
	const limit, flood = 100, 2000
	cfg := testConfig()
	cfg.Limits.MaxConnections = limit
	d := startDaemon(t, cfg)
	// The operator's connection, open before the flood.
	tr := &http.Transport{MaxConnsPerHost: 1}
	defer tr.CloseIdleConnections()
	op := &http.Client{Transport: tr}
	scrape := func() (open, refused float64) {
		t.Helper()
		resp, err := op.Get(d.url + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		for _, line := range strings.Split(string(raw), "\n") {
			if v, ok := strings.CutPrefix(line, "mutexd_connections_open "); ok {
				open, _ = strconv.ParseFloat(v, 64)
			}
			if v, ok := strings.CutPrefix(line, "mutexd_connections_refused_total "); ok {
				refused, _ = strconv.ParseFloat(v, 64)
			}
		}
		return open, refused
	}
	scrape()

	conns := make([]net.Conn, 0, flood)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range flood {
		c, err := net.Dial("tcp", d.srv.Addr().String())
		if err != nil {
			t.Fatalf("dial %d: %v", len(conns), err)
		}
		conns = append(conns, c)
	}
	eventually(t, 30*time.Second, "the flood is refused", func() bool {
		_, refused := scrape()
		return refused >= flood-limit
	})
	if open, refused := scrape(); open > limit || refused < flood-limit {
		t.Fatalf("open %v (cap %d), refused %v of %d", open, limit, refused, flood)
	}
	if code, _, _ := call(t, op, "POST", d.url+"/v1/locks/during-flood/acquire", ""); code != 200 {
		t.Fatalf("acquire on the operator's connection during the flood: %d", code)
	}
}
