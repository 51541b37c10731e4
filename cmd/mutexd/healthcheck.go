package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// defaultAddr is the server address the client commands use by default.
const defaultAddr = "http://127.0.0.1:7070"

// serverAddr returns --addr, else MUTEXD_ADDR, else the address the daemon
// listens on according to MUTEXD_LISTEN (so a container that moves the
// daemon to another port still finds it), else the default, as a base URL.
// The last two are https:// when MUTEXD_TLS_CERT_FILE is set, as it is
// for a daemon configured for TLS through the environment. --addr and
// MUTEXD_ADDR may list a cluster's servers separated by commas; each
// entry gets http:// when it has no scheme, and an empty one stays empty
// for client.New to refuse.
func serverAddr(cmd *cobra.Command) string {
	addr, _ := cmd.Flags().GetString("addr")
	if addr == "" {
		addr = os.Getenv("MUTEXD_ADDR")
	}
	if addr == "" {
		addr = listenURL(os.Getenv("MUTEXD_LISTEN"))
		if addr == "" {
			addr = defaultAddr
		}
		if os.Getenv("MUTEXD_TLS_CERT_FILE") != "" { // the daemon beside us serves HTTPS
			addr = "https://" + strings.TrimPrefix(addr, "http://")
		}
	}
	entries := strings.Split(addr, ",")
	for i, e := range entries {
		e = strings.TrimSpace(e)
		if e != "" && !strings.Contains(e, "://") {
			e = "http://" + e
		}
		entries[i] = strings.TrimRight(e, "/")
	}
	return strings.Join(entries, ",")
}

// oneServerAddr is serverAddr for the commands that probe one server
// (healthcheck, bench): a list is a usage error naming the command.
func oneServerAddr(cmd *cobra.Command) (string, error) {
	addr := serverAddr(cmd)
	if strings.Contains(addr, ",") {
		return "", usageError{err: fmt.Errorf("%s: --addr (or MUTEXD_ADDR) must name one server, got the list %q", cmd.Name(), addr)}
	}
	return addr, nil
}

// listenURL turns a listen address (host:port) into the URL a local client
// reaches it at: a wildcard host becomes loopback. It returns "" for an
// empty or malformed address.
func listenURL(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil || port == "" {
		return ""
	}
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	return "http://" + net.JoinHostPort(host, port)
}

func newHealthcheckCmd(stdout io.Writer) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "healthcheck",
		Short: "Exit 0 when the server's /readyz answers 200 (for container HEALTHCHECKs)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			timeout, err := timeoutFlag(cmd)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			addr, err := oneServerAddr(cmd)
			if err != nil {
				return err
			}
			url := addr + "/readyz"
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
			if err != nil {
				return usageError{err: fmt.Errorf("healthcheck: %w", err)}
			}
			if (req.URL.Scheme != "http" && req.URL.Scheme != "https") || req.URL.Host == "" {
				return usageError{err: fmt.Errorf("healthcheck: server address %q must be http:// or https:// with a host", addr)}
			}
			resp, err := healthClient(req.URL).Do(req)
			if err != nil {
				return fmt.Errorf("healthcheck: %s unreachable: %w", req.URL.Redacted(), err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("healthcheck: %s answered %s", req.URL.Redacted(), resp.Status)
			}
			fmt.Fprintln(stdout, "ready")
			return nil
		},
	}
	cmd.Flags().String("addr", "", "server address (default $MUTEXD_ADDR, else derived from $MUTEXD_LISTEN, else "+defaultAddr+")")
	durationFlag(cmd.Flags(), "timeout", 3*time.Second, "give up after this long (a Go duration or whole seconds)")
	return cmd
}

// healthClient is the client that probes u. A probe of a loopback HTTPS
// address does not verify the certificate: it sends no secret and only
// asks whether the daemon on this machine is ready, and a certificate made
// for the service's public name rarely names 127.0.0.1.
func healthClient(u *url.URL) *http.Client {
	if u.Scheme != "https" {
		return http.DefaultClient
	}
	host := u.Hostname()
	if ip := net.ParseIP(host); (ip == nil || !ip.IsLoopback()) && host != "localhost" {
		return http.DefaultClient
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
}
