package api_test

import (
	"bytes"
	"net/http"
	"testing"

	"github.com/labstack/echo/v4"

	"github.com/mutexd/mutexd/internal/api"
	"github.com/mutexd/mutexd/internal/engine"
	"github.com/mutexd/mutexd/internal/events"
	"github.com/mutexd/mutexd/internal/metrics"
)

// benchWriter is a reusable http.ResponseWriter, so that the benchmarks
// count the API's allocations rather than a recorder's.
type benchWriter struct {
	h      http.Header
	status int
	body   bytes.Buffer
}

func (w *benchWriter) Header() http.Header         { return w.h }
func (w *benchWriter) WriteHeader(s int)           { w.status = s }
func (w *benchWriter) Write(p []byte) (int, error) { return w.body.Write(p) }

func (w *benchWriter) reset() {
	clear(w.h)
	w.status = 0
	w.body.Reset()
}

type routeMetrics struct{ m *metrics.Metrics }

func (r routeMetrics) Route(route, method string, codes []int) api.RouteObserver {
	return r.m.Route(route, method, codes)
}

// BenchmarkAcquireRelease is the API's share of one uncontended cycle: an
// acquire and a release through echo, the middleware, parameter parsing,
// the engine with its metrics observer, and the JSON encoding, without
// the network. Compare with BenchmarkNoopEcho, the same two requests to
// handlers that do nothing.
func BenchmarkAcquireRelease(b *testing.B) {
	m := metrics.New(metrics.Options{NamespaceSeparator: ":", MaxNamespaces: 50, Version: "bench"})
	eng := engine.New(engine.SystemClock{}, m, engine.Limits{})
	a := api.New(api.Options{Locker: eng, Bounds: bounds, Observer: routeMetrics{m}})
	benchCycle(b, a, "")
}

// BenchmarkAcquireReleaseWithHub is BenchmarkAcquireRelease with the
// events hub observing the engine as in the daemon (nobody subscribed),
// so the hub's share of the cycle shows.
func BenchmarkAcquireReleaseWithHub(b *testing.B) {
	m := metrics.New(metrics.Options{NamespaceSeparator: ":", MaxNamespaces: 50, Version: "bench"})
	hub := events.New(10, 0, 16)
	defer hub.Close()
	eng := engine.New(engine.SystemClock{}, engine.Observers{m, hub}, engine.Limits{})
	a := api.New(api.Options{Locker: eng, Bounds: bounds, Observer: routeMetrics{m}, Events: hub})
	benchCycle(b, a, "")
}

// benchCycle runs acquire and release cycles on a, sending authorization
// (when not empty) as the Authorization header.
func benchCycle(b *testing.B, a *api.Server, authorization string) {
	a.SetReady(true)
	acq, _ := http.NewRequest(http.MethodPost, "/v1/locks/bench:1/acquire?ttl=30s&wait=30s&owner=bench-1", nil)
	rel, _ := http.NewRequest(http.MethodPost, "/v1/locks/bench:1/release?token=", nil)
	acq.RemoteAddr, rel.RemoteAddr = "127.0.0.1:5000", "127.0.0.1:5000"
	if authorization != "" {
		acq.Header.Set("Authorization", authorization)
		rel.Header.Set("Authorization", authorization)
	}
	w := &benchWriter{h: http.Header{}}
	query := []byte("token=00000000000000000000000000000000")
	b.ReportAllocs()
	for b.Loop() {
		w.reset()
		a.ServeHTTP(w, acq)
		if w.status != http.StatusOK {
			b.Fatalf("acquire: %d %s", w.status, w.body.String())
		}
		i := bytes.Index(w.body.Bytes(), []byte(`"token":"`)) + len(`"token":"`)
		copy(query[len("token="):], w.body.Bytes()[i:i+32])
		rel.URL.RawQuery = string(query)
		w.reset()
		a.ServeHTTP(w, rel)
		if w.status != http.StatusOK {
			b.Fatalf("release: %d %s", w.status, w.body.String())
		}
	}
}

// BenchmarkNoopEcho is two requests to echo handlers that answer a fixed
// body: the floor of BenchmarkAcquireRelease.
func BenchmarkNoopEcho(b *testing.B) {
	e := echo.New()
	body := []byte(`{"released":true}` + "\n")
	e.POST("/v1/locks/:key/acquire", func(c echo.Context) error { return c.JSONBlob(http.StatusOK, body) })
	e.POST("/v1/locks/:key/release", func(c echo.Context) error { return c.JSONBlob(http.StatusOK, body) })
	acq, _ := http.NewRequest(http.MethodPost, "/v1/locks/bench:1/acquire?ttl=30s&wait=30s&owner=bench-1", nil)
	rel, _ := http.NewRequest(http.MethodPost, "/v1/locks/bench:1/release?token=00000000000000000000000000000000", nil)
	w := &benchWriter{h: http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		w.reset()
		e.ServeHTTP(w, acq)
		w.reset()
		e.ServeHTTP(w, rel)
	}
}
