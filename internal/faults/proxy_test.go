package faults

import (
	"bufio"
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"testing"
	"time"
)

// echoServer answers every line with itself until the test ends.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { ln.Close(); <-done })
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); io.Copy(c, c) }()
		}
	}()
	return ln.Addr().String()
}

// roundTrip sends a line through addr's connection c and reports whether
// it came back within d.
func roundTrip(c net.Conn, d time.Duration) error {
	c.SetDeadline(time.Now().Add(d))
	if _, err := c.Write([]byte("ping\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if line != "ping\n" {
		return errors.New("garbled: " + line)
	}
	return nil
}

// TestProxyCutsAndHeals: the proxy names this process as node 0, isolating
// node 0 closes its open connection at once and black-holes new ones, and
// healing lets new connections through.
func TestProxyCutsAndHeals(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("naming a dialer by its socket needs Linux's /proc")
	}
	n := NewNetwork(func() map[int]int { return map[int]int{0: os.Getpid()} })
	defer n.Close()
	p, err := n.Proxy(1, echoServer(t))
	if err != nil {
		t.Fatal(err)
	}
	dial := func() net.Conn {
		c, err := net.DialTimeout("tcp", p.Addr(), time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	open := dial()
	if err := roundTrip(open, 2*time.Second); err != nil {
		t.Fatalf("through a healthy link: %v", err)
	}
	if u := n.Unknown(); u != 0 {
		t.Fatalf("%d dialers not named, want 0 (this process is node 0)", u)
	}

	n.Isolate(0, 2)
	start := time.Now()
	if err := roundTrip(open, 2*time.Second); err == nil {
		t.Fatal("an open connection survived the cut")
	} else if time.Since(start) > time.Second {
		t.Fatalf("open connection failed only after %s (%v), want at once", time.Since(start), err)
	}
	held := dial()
	if err := roundTrip(held, 300*time.Millisecond); err == nil {
		t.Fatal("a new connection got through a cut link")
	}

	n.Heal()
	if err := roundTrip(dial(), 2*time.Second); err != nil {
		t.Fatalf("after heal: %v", err)
	}
	// The black-holed connection is closed by the heal, so its dialer
	// reconnects rather than wait.
	held.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := held.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("held connection after heal: %v, want closed", err)
	}
}

// TestProxyOtherLinksUntouched: cutting a link between two other nodes
// leaves this process's (node 0's) link to node 1 working.
func TestProxyOtherLinksUntouched(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("naming a dialer by its socket needs Linux's /proc")
	}
	n := NewNetwork(func() map[int]int { return map[int]int{0: os.Getpid()} })
	defer n.Close()
	p, err := n.Proxy(1, echoServer(t))
	if err != nil {
		t.Fatal(err)
	}
	n.Isolate(2, 3)
	c, err := net.DialTimeout("tcp", p.Addr(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := roundTrip(c, 2*time.Second); err != nil {
		t.Fatalf("node 0 -> node 1 while node 2 is isolated: %v", err)
	}
}
