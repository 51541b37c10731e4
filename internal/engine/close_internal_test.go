package engine

import (
	"errors"
	"testing"
	"testing/synctest"
	"time"
)

// TestAcquireAfterCloseReachedItsShard covers an acquire that read the
// engine as open just before Close, and took its shard's lock just after
// Close had answered that shard's waiters and stopped its timer: it must
// be refused, not queued (nobody would answer it) nor granted (nobody would
// expire the lease). The state is built directly: Close has processed the
// key's shard but the acquire's first check saw the engine open.
func TestAcquireAfterCloseReachedItsShard(t *testing.T) {
	tests := []struct {
		name string
		held bool // the key is held, so the acquire would queue
	}{
		{"free key", false},
		{"held key", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				e := New(SystemClock{}, nil, Limits{})
				if tt.held {
					if _, err := e.Acquire(t.Context(), "k", AcquireOptions{TTL: time.Hour}); err != nil {
						t.Fatal(err)
					}
				}
				sh := e.shardFor("k")
				sh.mu.Lock()
				sh.stopped = true // what Close does to the shard, under its lock
				sh.mu.Unlock()

				_, err := e.Acquire(t.Context(), "k", AcquireOptions{TTL: time.Hour, Wait: time.Minute})
				if !errors.Is(err, ErrUnavailable) {
					t.Errorf("acquire after Close processed the shard: err = %v, want ErrUnavailable", err)
				}
				want := Stats{}
				if tt.held {
					want = Stats{Keys: 1, Held: 1}
				}
				if got := e.Stats(); got != want {
					t.Errorf("Stats() = %+v, want %+v", got, want)
				}
				if err := e.Check(); err != nil {
					t.Error(err)
				}
			})
		})
	}
}
