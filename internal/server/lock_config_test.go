package server_test

import (
	"context"
	"net/http"
	"testing"
	"time"
)

// TestLockConfigReachesTheAPI: lock.remember_outcome, lock.max_hold,
// lock.default_lock_delay and lock.detach_grace take effect end to end.
func TestLockConfigReachesTheAPI(t *testing.T) {
	cfg := testConfig()
	cfg.Lock.MaxHold = time.Minute
	cfg.Lock.DefaultLockDelay = 30 * time.Second
	cfg.Lock.RememberOutcome = time.Hour
	d := startDaemon(t, cfg)
	c := http.DefaultClient

	// remember_outcome: an immediate grant says how the last lease ended.
	code, _, g := call(t, c, "POST", d.url+"/v1/locks/cron/acquire?wait=0&lock_delay=0", "")
	if code != 200 {
		t.Fatalf("acquire: %d %v", code, g)
	}
	call(t, c, "POST", d.url+"/v1/locks/cron/release?outcome=failed&token="+g["token"].(string), "")
	code, _, n := call(t, c, "POST", d.url+"/v1/locks/cron/acquire?wait=0", "")
	if prev, _ := n["previous"].(map[string]any); code != 200 || prev["outcome"] != "failed" || prev["fence"] != g["fence"] || prev["ended_at"] == nil {
		t.Fatalf("next grant: %d %v, want previous {fence %v, failed, ended_at}", code, n, g["fence"])
	}
	// max_hold: bounded by lock.max_hold.
	if code, _, b := call(t, c, "POST", d.url+"/v1/locks/h/acquire?ttl=10s&max_hold=2m", ""); code != 400 || b["error"] != "invalid_max_hold" {
		t.Fatalf("max_hold over lock.max_hold: %d %v", code, b)
	}
	// default_lock_delay: a force-release starts the default delay.
	call(t, c, "DELETE", d.url+"/v1/locks/cron", "")
	if _, _, i := call(t, c, "GET", d.url+"/v1/locks/cron", ""); i["delay_until"] == nil {
		t.Fatalf("inspection after a force-release: %v, want delay_until (lock.default_lock_delay)", i)
	}
}

// TestDetachGraceOff: with lock.detach_grace 0 a waiter with a request_id
// whose client leaves goes at once, as one without.
func TestDetachGraceOff(t *testing.T) {
	for _, tt := range []struct {
		grace time.Duration
		stays bool
	}{{0, false}, {time.Minute, true}} {
		cfg := testConfig()
		cfg.Lock.DetachGrace = tt.grace
		d := startDaemon(t, cfg)
		call(t, http.DefaultClient, "POST", d.url+"/v1/locks/k/acquire", "")
		ctx, cancel := context.WithCancel(t.Context())
		req, _ := http.NewRequestWithContext(ctx, "POST", d.url+"/v1/locks/k/acquire?wait=5m&request_id=r1", nil)
		done := make(chan struct{})
		go func() {
			defer close(done)
			if resp, err := http.DefaultClient.Do(req); err == nil {
				resp.Body.Close()
			}
		}()
		eventually(t, 10*time.Second, "the waiter queued", func() bool {
			_, _, i := call(t, http.DefaultClient, "GET", d.url+"/v1/locks/k", "")
			return i["waiters"] == 1.0
		})
		cancel()
		<-done
		if tt.stays {
			time.Sleep(100 * time.Millisecond) // a detach that wrongly left would have by now
			if _, _, i := call(t, http.DefaultClient, "GET", d.url+"/v1/locks/k", ""); i["waiters"] != 1.0 {
				t.Fatalf("detach_grace %s: %v, want the waiter kept", tt.grace, i)
			}
			continue
		}
		eventually(t, 10*time.Second, "the waiter left", func() bool {
			_, _, i := call(t, http.DefaultClient, "GET", d.url+"/v1/locks/k", "")
			return i["waiters"] == 0.0
		})
	}
}
