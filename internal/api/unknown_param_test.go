package api_test

import (
	"strings"
	"testing"

	"github.com/mutexd/mutexd/internal/engine"
)

// TestUnknownParameterMessage: the message names what the call does take,
// in a sentence that reads right for calls that take nothing.
func TestUnknownParameterMessage(t *testing.T) {
	s := newServer(t, engine.Limits{})
	tests := []struct {
		method, path, want string
	}{
		{"GET", "/v1/locks/k?x=1", `Unknown parameter "x"; this call takes stale.`},
		{"DELETE", "/v1/locks/k?force=1", `Unknown parameter "force"; this call takes no parameters.`},
		{"POST", "/v1/locks/k/acquire?tll=5s", `Unknown parameter "tll"; this call takes ttl, wait, owner, on_error, request_id, limit, max_hold, lock_delay.`},
		{"DELETE", "/v1/locks/k/waiters?prefix=a", `Unknown parameter "prefix"; this call takes reason.`},
		{"POST", "/v1/locks/k/pause?reason=x", `Unknown parameter "reason"; this call takes no parameters.`},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			r := s.do(t, tt.method, tt.path, "")
			wantError(t, r, 400, "invalid_parameter")
			if msg, _ := r.body["message"].(string); msg != tt.want {
				t.Errorf("message = %q, want %q", msg, tt.want)
			}
			if strings.Contains(r.raw, "takes .") {
				t.Errorf("message lists an empty set: %s", r.raw)
			}
		})
	}
}
