package server_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// browserCall sends one request with the given Host (empty: the URL's)
// and headers, and returns the status and the error code of the body.
func browserCall(t *testing.T, method, url, host string, hdr map[string]string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if host != "" {
		req.Host = host
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.Header.Get("Content-Type") == "text/event-stream" {
		return resp.StatusCode, "" // an event stream was opened: it never ends
	}
	raw, _ := io.ReadAll(resp.Body)
	var body struct {
		Error   string `json:"error"`
		Message string `json:"message"`
	}
	_ = json.Unmarshal(raw, &body)
	if resp.StatusCode == http.StatusForbidden && body.Message == "" {
		t.Fatalf("%s %s: 403 without the JSON error envelope: %s", method, url, raw)
	}
	return resp.StatusCode, body.Error
}

// TestBrowserChecksWithoutAuth: a token-less daemon (the default) refuses
// what a web page of another site can make a browser send: a simple
// cross-site POST (Content-Type text/plain needs no preflight), requests a
// browser marks cross-site, and a DNS-rebinding page's requests, which
// carry the attacker's name as Host. curl-like callers, same-origin pages
// (the console), IP-address Hosts (Kubernetes probes) and the public
// routes are served as before.
func TestBrowserChecksWithoutAuth(t *testing.T) {
	cfg := testConfig()
	cfg.HTTP.AllowedHosts = []string{"locks.example.com"}
	d := startDaemon(t, cfg)
	port := d.url[strings.LastIndexByte(d.url, ':')+1:]
	self := strings.TrimPrefix(d.url, "http://")
	rebind := "rebind.evil.example:" + port

	// The victim's lock, which the attacks below try to steal or free.
	if code, _, body := call(t, http.DefaultClient, "POST", d.url+"/v1/locks/victim/acquire?ttl=1h", ""); code != 200 {
		t.Fatalf("acquire victim: %d %v", code, body)
	}

	refused := []struct {
		name, method, path, host string
		hdr                      map[string]string
		code                     string
	}{
		{"cross-site text/plain POST", "POST", "/v1/locks/x/acquire", "", map[string]string{"Origin": "https://evil.example", "Content-Type": "text/plain"}, "forbidden_origin"},
		{"cross-site force-release", "DELETE", "/v1/locks/victim", "", map[string]string{"Origin": "https://evil.example"}, "forbidden_origin"},
		{"opaque origin", "POST", "/v1/locks/x/acquire", "", map[string]string{"Origin": "null"}, "forbidden_origin"},
		{"same host, other port", "POST", "/v1/locks/x/acquire", "", map[string]string{"Origin": "http://127.0.0.1:1"}, "forbidden_origin"},
		{"cross-site without Origin", "GET", "/v1/events", "", map[string]string{"Sec-Fetch-Site": "cross-site"}, "forbidden_origin"},
		{"same-site subdomain", "GET", "/v1/locks", "", map[string]string{"Sec-Fetch-Site": "same-site"}, "forbidden_origin"},
		{"rebinding list", "GET", "/v1/locks", rebind, nil, "forbidden_host"},
		{"rebinding force-release", "DELETE", "/v1/locks/victim", rebind, map[string]string{"Origin": "http://" + rebind, "Sec-Fetch-Site": "same-origin"}, "forbidden_host"},
		{"rebinding acquire", "POST", "/v1/locks/x/acquire", rebind, map[string]string{"Origin": "http://" + rebind, "Content-Type": "text/plain"}, "forbidden_host"},
		{"rebinding events", "GET", "/v1/events", rebind, nil, "forbidden_host"},
		{"rebinding unknown route", "GET", "/v1/nothing", rebind, nil, "forbidden_host"},
		{"name that looks like an address", "GET", "/v1/locks", "127.0.0.1.evil.example:" + port, nil, "forbidden_host"},
	}
	for _, tt := range refused {
		t.Run("refused/"+tt.name, func(t *testing.T) {
			code, errCode := browserCall(t, tt.method, d.url+tt.path, tt.host, tt.hdr)
			if code != http.StatusForbidden || errCode != tt.code {
				t.Fatalf("%s %s (Host %q, %v): %d %q, want 403 %s", tt.method, tt.path, tt.host, tt.hdr, code, errCode, tt.code)
			}
		})
	}
	if st := d.srv.Engine().Stats(); st.Keys != 1 || st.Held != 1 {
		t.Fatalf("refused requests changed the locks: %+v, want only the victim's", st)
	}

	served := []struct {
		name, method, path, host string
		hdr                      map[string]string
	}{
		{"curl", "GET", "/v1/locks", "", nil},
		{"same-origin page", "GET", "/v1/locks/victim", "", map[string]string{"Origin": d.url, "Sec-Fetch-Site": "same-origin"}},
		{"same origin, https scheme (a TLS proxy in front)", "GET", "/v1/locks", "", map[string]string{"Origin": "https://" + self}},
		{"localhost", "GET", "/v1/locks", "localhost:" + port, map[string]string{"Origin": "http://localhost:" + port}},
		{"LOCALHOST with a trailing dot", "GET", "/v1/locks", "LOCALHOST.:" + port, nil},
		{"IPv6 loopback", "GET", "/v1/locks", "[::1]:" + port, map[string]string{"Origin": "http://[0:0::1]:" + port}},
		{"pod IP, as a Kubernetes probe or Service", "GET", "/v1/locks", "10.1.2.3:" + port, nil},
		{"published on another port", "GET", "/v1/locks", "127.0.0.1:8080", nil},
		{"allowed name", "POST", "/v1/locks/y/acquire?wait=0", "locks.example.com:" + port, map[string]string{"Origin": "http://locks.example.com:" + port}},
		{"allowed name, default port", "GET", "/v1/locks", "Locks.Example.com", map[string]string{"Origin": "http://locks.example.com"}},
		{"address bar", "GET", "/v1/locks", "", map[string]string{"Sec-Fetch-Site": "none"}},
		{"healthz for any host", "GET", "/healthz", rebind, map[string]string{"Origin": "https://evil.example"}},
		{"readyz for any host", "GET", "/readyz", rebind, nil},
		{"metrics for any host", "GET", "/metrics", "prometheus-target:" + port, nil},
		{"console files for any host", "GET", "/ui/", rebind, nil},
	}
	for _, tt := range served {
		t.Run("served/"+tt.name, func(t *testing.T) {
			if code, errCode := browserCall(t, tt.method, d.url+tt.path, tt.host, tt.hdr); code != http.StatusOK {
				t.Fatalf("%s %s (Host %q, %v): %d %q, want 200", tt.method, tt.path, tt.host, tt.hdr, code, errCode)
			}
		})
	}
}

// TestBrowserChecksAllowAnyHost: "*" in http.allowed_hosts turns the Host
// check off (for a proxy that forwards many names); the Origin check stays.
func TestBrowserChecksAllowAnyHost(t *testing.T) {
	cfg := testConfig()
	cfg.HTTP.AllowedHosts = []string{"*"}
	d := startDaemon(t, cfg)
	if code, errCode := browserCall(t, "GET", d.url+"/v1/locks", "anything.example:80", nil); code != 200 {
		t.Fatalf("any host with *: %d %s, want 200", code, errCode)
	}
	if code, errCode := browserCall(t, "GET", d.url+"/v1/locks", "anything.example", map[string]string{"Origin": "http://other.example"}); code != 403 || errCode != "forbidden_origin" {
		t.Fatalf("foreign origin with *: %d %s, want 403 forbidden_origin", code, errCode)
	}
}

// TestBrowserChecksOffWithAuth: with tokens the checks are off (a browser
// cannot send a bearer token cross-site without a preflight, which is
// never granted), so a proxy's Host or Origin does not matter.
func TestBrowserChecksOffWithAuth(t *testing.T) {
	cfg := testConfig()
	cfg.Auth.Tokens = []string{tokA}
	d := startDaemon(t, cfg)
	hdr := map[string]string{"Authorization": "Bearer " + tokA, "Origin": "https://app.example", "Sec-Fetch-Site": "cross-site"}
	if code, errCode := browserCall(t, "POST", d.url+"/v1/locks/k/acquire", "locks.example.com", hdr); code != 200 {
		t.Fatalf("with a token: %d %s, want 200", code, errCode)
	}
	delete(hdr, "Authorization")
	if code, errCode := browserCall(t, "POST", d.url+"/v1/locks/k/acquire", "locks.example.com", hdr); code != 401 {
		t.Fatalf("without a token: %d %s, want 401", code, errCode)
	}
}
