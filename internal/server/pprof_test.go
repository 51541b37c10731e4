package server_test

import (
	"net/http"
	"testing"
)

func TestPprofIsOptIn(t *testing.T) {
	tests := []struct {
		name   string
		pprof  bool
		auth   bool
		token  string
		path   string
		status int
	}{
		{name: "off by default", path: "/debug/pprof/", status: 404},
		{name: "on: index", pprof: true, path: "/debug/pprof/", status: 200},
		{name: "on: heap profile", pprof: true, path: "/debug/pprof/heap?debug=1", status: 200},
		{name: "on: cmdline", pprof: true, path: "/debug/pprof/cmdline", status: 200},
		{name: "auth: no token", pprof: true, auth: true, path: "/debug/pprof/", status: 401},
		{name: "auth: client token", pprof: true, auth: true, token: tokA, path: "/debug/pprof/", status: 403},
		{name: "auth: admin token", pprof: true, auth: true, token: tokAdmin, path: "/debug/pprof/goroutine?debug=1", status: 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig()
			cfg.Debug.Pprof = tt.pprof
			if tt.auth {
				cfg.Auth.Tokens = []string{tokA}
				cfg.Auth.AdminTokens = []string{tokAdmin}
			}
			d := startDaemon(t, cfg)
			code, _, _ := call(t, http.DefaultClient, "GET", d.url+tt.path, tt.token)
			if code != tt.status {
				t.Fatalf("GET %s = %d, want %d", tt.path, code, tt.status)
			}
		})
	}
}
