package api_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/mutexd/mutexd/internal/api"
	"github.com/mutexd/mutexd/internal/engine"
)

// lateGrant is a Locker over a real engine whose Acquire grants only once
// the caller's context has ended: the grant that wins the race with a
// client's disconnect, as the engine may legitimately return it (the
// waiter was woken by the grant just before the cancellation landed).
type lateGrant struct {
	*engine.Engine
	entered  chan struct{}
	released chan engine.Token
}

func (l *lateGrant) Acquire(ctx context.Context, key string, o engine.AcquireOptions) (engine.Grant, error) {
	close(l.entered)
	<-ctx.Done()
	return l.Engine.Acquire(context.Background(), key, o)
}

func (l *lateGrant) Release(key string, t engine.Token, failed bool) (engine.Ended, error) {
	e, err := l.Engine.Release(key, t, failed)
	if err == nil {
		l.released <- t
	}
	return e, err
}

// Abandon is how the handler hands back a grant nobody will see: the
// engine releases it (no request id here), which counts as released.
func (l *lateGrant) Abandon(key string, fence uint64) {
	l.Engine.Abandon(key, fence)
	if !l.Engine.Inspect(key, 0).Held {
		l.released <- engine.Token{}
	}
}

// TestGrantToAGoneClientIsReleased: a grant that reaches the handler after
// its client disconnected can never be seen by anyone; the handler must
// release it at once rather than leave the key blocked until the TTL.
func TestGrantToAGoneClientIsReleased(t *testing.T) {
	for _, tt := range []struct {
		name   string
		accept string
	}{
		{"long poll", ""},
		{"stream", "text/event-stream"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			eng := engine.New(engine.SystemClock{}, nil, engine.Limits{})
			locker := &lateGrant{Engine: eng, entered: make(chan struct{}), released: make(chan engine.Token, 1)}
			a := api.New(api.Options{Locker: locker, Bounds: bounds, Logger: testLogger(t), Observer: checkCodes(t)})
			a.SetReady(true)
			srv := httptest.NewServer(a)
			defer srv.Close()

			ctx, cancel := context.WithCancel(t.Context())
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+"/v1/locks/k/acquire?ttl=1h", nil)
			if err != nil {
				t.Fatal(err)
			}
			if tt.accept != "" {
				req.Header.Set("Accept", tt.accept)
			}
			errc := make(chan error, 1)
			go func() {
				resp, err := http.DefaultClient.Do(req)
				if err == nil {
					resp.Body.Close()
				}
				errc <- err
			}()
			<-locker.entered
			cancel() // the client leaves while its acquire waits
			<-errc
			select {
			case <-locker.released:
			case <-time.After(10 * time.Second):
				t.Fatalf("the lease granted after the client left was not released; stats %+v", eng.Stats())
			}
			if st := eng.Stats(); st != (engine.Stats{}) {
				t.Fatalf("stats %+v, want none held", st)
			}
		})
	}
}
