// Package servertest runs a real mutexd daemon (internal/server) on a
// loopback port for tests of the things that talk to it: the Go client and
// the command line.
package servertest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/mutexd/mutexd/internal/config"
	"github.com/mutexd/mutexd/internal/engine"
	"github.com/mutexd/mutexd/internal/server"
)

// Server is a daemon serving on 127.0.0.1.
type Server struct {
	// URL is the base URL, "http://127.0.0.1:<port>".
	URL string
	// Config is the configuration it runs with.
	Config config.Config

	daemon   *server.Server
	cancel   context.CancelFunc
	done     chan error
	stopOnce sync.Once
	stopErr  error
}

// Run starts a daemon on 127.0.0.1:0 (https when configure sets TLS files) with the default configuration,
// changed by configure, logging to log. Call Stop to end it.
func Run(log *slog.Logger, configure ...func(*config.Config)) (*Server, error) {
	cfg := config.Default()
	cfg.Listen = "127.0.0.1:0"
	for _, f := range configure {
		f(&cfg)
	}
	d, err := server.New(cfg, "test", log)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	scheme := "http://"
	if cfg.TLS.Enabled() {
		scheme = "https://"
	}
	s := &Server{URL: scheme + d.Addr().String(), Config: cfg, daemon: d, cancel: cancel, done: make(chan error, 1)}
	go func() { s.done <- d.Run(ctx) }()
	return s, nil
}

// Start is Run for one test: it logs warnings and errors to the test's
// output, fails the test if the daemon cannot start, and stops it when the
// test ends.
func Start(t testing.TB, configure ...func(*config.Config)) *Server {
	t.Helper()
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	s, err := Run(log, configure...)
	if err != nil {
		t.Fatalf("start mutexd: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Errorf("stop mutexd: %v", err)
		}
	})
	return s
}

// Engine is the daemon's lock engine, for checking its state directly.
func (s *Server) Engine() *engine.Engine { return s.daemon.Engine() }

// Stop shuts the daemon down gracefully and waits until it has stopped:
// its port refuses connections afterwards. Later calls return the first
// call's result.
func (s *Server) Stop() error {
	s.stopOnce.Do(func() {
		s.cancel()
		s.stopErr = <-s.done
	})
	return s.stopErr
}

// Waiters is the number of acquires queued on key right now.
func (s *Server) Waiters(key string) int { return s.daemon.Engine().Inspect(key, 0).Waiters }

// Held reports whether key has a live lease right now.
func (s *Server) Held(key string) bool { return s.daemon.Engine().Inspect(key, 0).Held }

// Eventually polls cond every 10 ms until it holds, and fails the test if
// it does not within 10 s: a generous bound on a busy machine for things
// that take milliseconds.
func Eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// WriteCert writes a self-signed certificate for 127.0.0.1, valid for an
// hour, and its key into dir, and returns their paths and a pool that
// trusts the certificate: for TLS.CertFile, TLS.KeyFile and a client.
func WriteCert(t testing.TB, dir string) (certFile, keyFile string, roots *x509.CertPool) {
	t.Helper()
	return WriteCertValid(t, dir, time.Now().Add(-time.Minute), time.Now().Add(time.Hour))
}

// WriteCertValid is WriteCert for a certificate valid from notBefore to
// notAfter (an expired or not yet valid one, for the tests of warnings).
func WriteCertValid(t testing.TB, dir string, notBefore, notAfter time.Time) (certFile, keyFile string, roots *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: "mutexd test"},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:                  true,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	for path, block := range map[string]*pem.Block{certFile: {Type: "CERTIFICATE", Bytes: der}, keyFile: {Type: "PRIVATE KEY", Bytes: keyDER}} {
		if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	roots = x509.NewCertPool()
	roots.AddCert(cert)
	return certFile, keyFile, roots
}
