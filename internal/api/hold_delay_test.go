package api_test

import (
	"testing"
	"time"

	"github.com/mutexd/mutexd/internal/api"
	"github.com/mutexd/mutexd/internal/engine"
)

// TestMaxHoldRenew: no renewal takes a lease past acquisition + max_hold;
// the one that would answers 409 max_hold_reached with the final expiry,
// and the lease ends there.
func TestMaxHoldRenew(t *testing.T) {
	s := newOpsServer(t, engine.Limits{}, opsBounds)
	start := s.clock.Now()
	g := s.client(t, "POST", "/v1/locks/job/acquire?ttl=10s&max_hold=15s", "")
	if g.status != 200 {
		t.Fatalf("acquire: %d %s", g.status, g.raw)
	}
	tok := g.body["token"].(string)
	capAt := start.Add(15 * time.Second).UTC().Format(api.TimeFormat)
	i := s.client(t, "GET", "/v1/locks/job", "")
	if h := i.body["holders"].([]any)[0].(map[string]any); h["max_hold_until"] != capAt {
		t.Fatalf("inspection %s: want max_hold_until %s", i.raw, capAt)
	}
	s.clock.Advance(2 * time.Second)
	if r := s.client(t, "POST", "/v1/locks/job/renew?ttl=10s&token="+tok, ""); r.status != 200 {
		t.Fatalf("renew within the cap: %d %s", r.status, r.raw)
	}
	s.clock.Advance(6 * time.Second)
	r := s.client(t, "POST", "/v1/locks/job/renew?ttl=10s&token="+tok, "")
	wantError(t, r, 409, "max_hold_reached")
	if r.body["expires_at"] != capAt {
		t.Fatalf("max_hold_reached %s: want expires_at %s", r.raw, capAt)
	}
	if i := s.eng.Inspect("job", 0); !i.Held || !i.Holder.ExpiresAt.Equal(start.Add(15*time.Second)) {
		t.Fatalf("after the capped renewal: %+v, want the lease live until the cap", i.Holder)
	}
	s.clock.Advance(7 * time.Second)
	wantError(t, s.client(t, "POST", "/v1/locks/job/renew?token="+tok, ""), 409, "not_holder")
}

// TestLockDelay: after a lease with a lock_delay ends by expiry or
// force-release nobody is granted the key for that long, and inspection
// shows until when; after a release there is no delay.
func TestLockDelay(t *testing.T) {
	s := newOpsServer(t, engine.Limits{}, opsBounds)
	for _, tt := range []struct {
		name  string
		end   func(t *testing.T, key, token string)
		delay bool
	}{
		{"expiry", func(t *testing.T, key, token string) { s.clock.Advance(10 * time.Second) }, true},
		{"force-release", func(t *testing.T, key, token string) { s.admin(t, "DELETE", "/v1/locks/"+key, "") }, true},
		{"release", func(t *testing.T, key, token string) {
			s.client(t, "POST", "/v1/locks/"+key+"/release?token="+token, "")
		}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			key := "delay-" + tt.name
			g := s.client(t, "POST", "/v1/locks/"+key+"/acquire?ttl=10s&lock_delay=5s", "")
			if g.status != 200 {
				t.Fatalf("acquire: %d %s", g.status, g.raw)
			}
			tt.end(t, key, g.body["token"].(string))
			ended := s.clock.Now()
			i := s.client(t, "GET", "/v1/locks/"+key, "")
			if !tt.delay {
				if i.body["delay_until"] != nil {
					t.Fatalf("inspection after a release %s: want delay_until null", i.raw)
				}
				if r := s.client(t, "POST", "/v1/locks/"+key+"/acquire?wait=0", ""); r.status != 200 {
					t.Fatalf("acquire after a release: %d %s, want no delay", r.status, r.raw)
				}
				return
			}
			if want := ended.Add(5 * time.Second).UTC().Format(api.TimeFormat); i.body["delay_until"] != want {
				t.Fatalf("inspection %s: want delay_until %s", i.raw, want)
			}
			wantError(t, s.client(t, "POST", "/v1/locks/"+key+"/acquire?wait=0", ""), 423, "timeout")
			waiter := s.background(t, t.Context(), "POST", "/v1/locks/"+key+"/acquire?wait=1m", nil)
			waitFor(t, func() bool { return s.eng.Inspect(key, 0).Waiters == 1 })
			s.clock.Advance(4 * time.Second)
			pending(t, waiter, "a waiter during the delay")
			s.clock.Advance(time.Second)
			if r := answer(t, waiter); r.status != 200 {
				t.Fatalf("waiter after the delay: %d %s", r.status, r.raw)
			}
		})
	}
}

// TestDefaultLockDelay: lock.default_lock_delay applies to an acquire that
// names no lock_delay, and lock_delay=0 turns it off.
func TestDefaultLockDelay(t *testing.T) {
	b := opsBounds
	b.DefaultLockDelay = 3 * time.Second
	s := newOpsServer(t, engine.Limits{}, b)
	s.client(t, "POST", "/v1/locks/d/acquire?ttl=1s", "")
	s.client(t, "POST", "/v1/locks/z/acquire?ttl=1s&lock_delay=0", "")
	s.clock.Advance(time.Second)
	if i := s.client(t, "GET", "/v1/locks/d", ""); i.body["delay_until"] == nil {
		t.Fatalf("inspection %s: want the default delay", i.raw)
	}
	if i := s.client(t, "GET", "/v1/locks/z", ""); i.body["delay_until"] != nil {
		t.Fatalf("inspection %s: want no delay with lock_delay=0", i.raw)
	}
}
