package api

import (
	"errors"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
)

// Errors of the browser checks (see checkBrowser).
var (
	// errForeignOrigin refuses a request a browser sent on behalf of
	// another site: its Origin is not this server's, or its Sec-Fetch-Site
	// says cross-site.
	errForeignOrigin = errors.New("request from another site")
	// errForeignHost refuses a request addressed to a name this server
	// does not know as its own: what a DNS-rebinding page sends.
	errForeignHost = errors.New("request for a host name that is not this server's")
)

// hostRule is the Host header values a server without tokens answers on
// the routes a token would guard.
type hostRule struct {
	anyName bool                // "*" was allowed: every name passes
	names   map[string]struct{} // lower case, without a trailing dot
}

func newHostRule(names []string) *hostRule {
	h := &hostRule{names: map[string]struct{}{"localhost": {}}}
	for _, n := range names {
		n = strings.TrimSuffix(strings.ToLower(n), ".")
		if n == "*" {
			h.anyName = true
		}
		h.names[n] = struct{}{}
	}
	return h
}

// allows reports whether host (a Host header's name, without the port)
// names this server. Any IP address passes: DNS rebinding needs a name the
// attacker controls, and a page served from an IP address the attacker
// owns cannot make a browser send that address to this server. Names
// pass only when allowed: localhost, the listen address's name and
// http.allowed_hosts. No Host at all (HTTP/1.0) passes too: no browser
// sends such a request.
func (h *hostRule) allows(host string) bool {
	if host == "" || h.anyName {
		return true
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return true
	}
	_, ok := h.names[strings.TrimSuffix(strings.ToLower(host), ".")]
	return ok
}

// splitHost splits a Host header into name and port ("" when absent),
// dropping an IPv6 address's brackets.
func splitHost(hostport string) (host, port string) {
	if h, p, err := net.SplitHostPort(hostport); err == nil {
		return h, p
	}
	return strings.TrimSuffix(strings.TrimPrefix(hostport, "["), "]"), ""
}

// checkBrowser refuses, on a server without tokens, what a browser may
// have been tricked into sending by a page of another site: without
// tokens, being reachable is all the authority a caller needs, and a
// browser on this machine can reach loopback. A request passes unless
//
//   - its Sec-Fetch-Site is cross-site or same-site (a browser's own
//     verdict, sent even where Origin is not, as with an <img> or a
//     no-cors fetch);
//   - its Host is a name other than localhost, the listen address's name
//     or one of http.allowed_hosts (a DNS-rebinding page reaches this
//     server under its own name, so its requests are same-origin to the
//     browser and carry that name);
//   - it has an Origin whose host and port are not the Host's (a page of
//     another site: a form, or a fetch with Content-Type text/plain,
//     which needs no CORS preflight).
//
// Requests without these headers, as curl, the command line and client
// libraries send them, pass: only browsers send them, and browsers cannot
// be made to leave them out or forge them.
func (s *Server) checkBrowser(r *http.Request) error {
	switch r.Header.Get("Sec-Fetch-Site") {
	case "", "same-origin", "none": // none: typed in the address bar, a bookmark
	default:
		return errForeignOrigin
	}
	host, port := splitHost(r.Host)
	if !s.hosts.allows(host) {
		return errForeignHost
	}
	if o := r.Header.Get("Origin"); o != "" && !sameOrigin(o, host, port) {
		return errForeignOrigin
	}
	return nil
}

// sameOrigin reports whether the Origin header value origin names host
// and port, the request's own Host. The schemes are not compared, so a
// TLS-terminating proxy in front does not break the check; a port left
// out on either side stands for the origin scheme's default.
func sameOrigin(origin, host, port string) bool {
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") { // "null" among them
		return false
	}
	if !sameHost(u.Hostname(), host) {
		return false
	}
	def := "80"
	if u.Scheme == "https" {
		def = "443"
	}
	oport := u.Port()
	return oport == port || (oport == "" && port == def) || (port == "" && oport == def)
}

// sameHost compares two host names case-insensitively, and IP addresses by
// value (::1 and 0:0::1 are one address).
func sameHost(a, b string) bool {
	if strings.EqualFold(a, b) {
		return true
	}
	x, errx := netip.ParseAddr(a)
	y, erry := netip.ParseAddr(b)
	return errx == nil && erry == nil && x == y
}
