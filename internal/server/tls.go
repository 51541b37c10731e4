package server

import (
	"crypto/tls"
	"fmt"
	"sync/atomic"
)

// certificate holds the TLS certificate in force; reload swaps it while
// handshakes are running.
type certificate struct {
	certFile, keyFile string
	cur               atomic.Pointer[tls.Certificate]
}

// load reads the key pair. On error the certificate in force stays.
func (c *certificate) load() error {
	cert, err := tls.LoadX509KeyPair(c.certFile, c.keyFile)
	if err != nil {
		return fmt.Errorf("tls.cert_file/tls.key_file: %w", err)
	}
	c.cur.Store(&cert)
	return nil
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
