package main

import (
	"bytes"
	"net"
	"strings"
	"testing"

	"github.com/mutexd/mutexd/internal/config"
	"github.com/mutexd/mutexd/internal/servertest"
)

func TestListenURL(t *testing.T) {
	for _, tc := range []struct{ listen, want string }{
		{"0.0.0.0:7070", "http://127.0.0.1:7070"},
		{":8080", "http://127.0.0.1:8080"},
		{"[::]:9000", "http://[::1]:9000"},
		{"127.0.0.1:7071", "http://127.0.0.1:7071"},
		{"10.1.2.3:7070", "http://10.1.2.3:7070"},
		{"", ""},
		{"7070", ""},
		{"host:", ""},
	} {
		if got := listenURL(tc.listen); got != tc.want {
			t.Errorf("listenURL(%q) = %q, want %q", tc.listen, got, tc.want)
		}
	}
}

// TestHealthcheckFollowsListen runs a real daemon on a free port and checks
// that healthcheck finds it through MUTEXD_LISTEN alone (the container case:
// MUTEXD_LISTEN=0.0.0.0:PORT), and that --addr and MUTEXD_ADDR still win.
func TestHealthcheckFollowsListen(t *testing.T) {
	srv := servertest.Start(t)
	addr := strings.TrimPrefix(srv.URL, "http://")
	_, port, _ := net.SplitHostPort(addr)
	dead := deadAddr(t)

	for _, tc := range []struct {
		name        string
		listen, env string
		args        []string
		wantErr     bool
	}{
		{name: "listen wildcard", listen: "0.0.0.0:" + port},
		{name: "listen empty host", listen: ":" + port},
		{name: "MUTEXD_ADDR wins", listen: "0.0.0.0:" + port, env: dead, wantErr: true},
		{name: "--addr wins", listen: "0.0.0.0:" + port, env: dead, args: []string{"--addr", addr}},
		{name: "--addr unreachable", listen: "0.0.0.0:" + port, args: []string{"--addr", dead}, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("MUTEXD_LISTEN", tc.listen)
			t.Setenv("MUTEXD_ADDR", tc.env)
			var stdout, stderr bytes.Buffer
			err := run(t.Context(), append([]string{"healthcheck", "--timeout", "5s"}, tc.args...), &stdout, &stderr)
			if gotErr := err != nil; gotErr != tc.wantErr {
				t.Fatalf("healthcheck error = %v, want error %v (stdout %q)", err, tc.wantErr, stdout.String())
			}
			if !tc.wantErr && stdout.String() != "ready\n" {
				t.Errorf("stdout = %q, want %q", stdout.String(), "ready\n")
			}
		})
	}
}

// deadAddr returns an address on which nothing listens.
func deadAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// TestHealthcheckOverTLS checks that healthcheck probes a TLS daemon over
// HTTPS when MUTEXD_TLS_CERT_FILE says it serves TLS, and accepts its
// certificate on loopback without a CA.
func TestHealthcheckOverTLS(t *testing.T) {
	certFile, keyFile, _ := servertest.WriteCert(t, t.TempDir())
	srv := servertest.Start(t, func(c *config.Config) { c.TLS.CertFile, c.TLS.KeyFile = certFile, keyFile })
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(srv.URL, "https://"))
	for _, tc := range []struct {
		name      string
		listen    string
		tls       string
		args      []string
		wantReady bool
	}{
		{name: "listen and tls env", listen: "0.0.0.0:" + port, tls: certFile, wantReady: true},
		{name: "https --addr", args: []string{"--addr", srv.URL}, wantReady: true},
		{name: "http to a TLS port", listen: "0.0.0.0:" + port},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("MUTEXD_ADDR", "")
			t.Setenv("MUTEXD_LISTEN", tc.listen)
			t.Setenv("MUTEXD_TLS_CERT_FILE", tc.tls)
			var stdout, stderr bytes.Buffer
			err := run(t.Context(), append([]string{"healthcheck", "--timeout", "5s"}, tc.args...), &stdout, &stderr)
			if (err == nil) != tc.wantReady {
				t.Fatalf("healthcheck: %v, want ready %v", err, tc.wantReady)
			}
		})
	}
}
