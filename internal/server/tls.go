package server

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"
)

// certificate holds the TLS certificate in force; reload swaps it while
// handshakes are running.
type certificate struct {
	certFile, keyFile string
	log               *slog.Logger
	cur               atomic.Pointer[tls.Certificate]
}

// load reads the key pair, warning when the key file is readable by other
// users or the certificate is outside its validity period at now. On
// error the certificate in force stays. A certificate that is not valid at
// now is loaded (clients will refuse it, and saying so in the log is more
// use than refusing to start), except in place of one that is: a reload
// never swaps a valid certificate for an expired or not yet valid one, and
// returns an error instead.
func (c *certificate) load(now time.Time) error {
	warnIfShared(c.log, "tls.key_file", c.keyFile)
	cert, err := tls.LoadX509KeyPair(c.certFile, c.keyFile)
	if err != nil {
		return fmt.Errorf("tls.cert_file/tls.key_file: %w", err)
	}
	if cert.Leaf == nil { // GODEBUG=x509keypairleaf=0
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return fmt.Errorf("tls.cert_file: %w", err)
		}
	}
	if problem := validity(cert.Leaf, now); problem != "" {
		if old := c.cur.Load(); old != nil && validity(old.Leaf, now) == "" {
			return fmt.Errorf("tls.cert_file: %s: the certificate %s; the one in force is still valid and stays", c.certFile, problem)
		}
		c.log.Warn("tls.cert_file: the certificate "+problem+"; clients will refuse it", "path", c.certFile,
			"not_before", cert.Leaf.NotBefore.UTC().Format(time.RFC3339), "not_after", cert.Leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	c.cur.Store(&cert)
	return nil
}

// validity says what is wrong with leaf's validity period at now: "" when
// nothing is.
func validity(leaf *x509.Certificate, now time.Time) string {
	switch {
	case now.After(leaf.NotAfter):
		return "expired on " + leaf.NotAfter.UTC().Format(time.RFC3339)
	case now.Before(leaf.NotBefore):
		return "is not valid before " + leaf.NotBefore.UTC().Format(time.RFC3339)
	}
	return ""
}

// config is the server's TLS configuration, reading the certificate in
// force at each handshake.
func (c *certificate) config() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"h2", "http/1.1"},
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return c.cur.Load(), nil
		},
	}
}
