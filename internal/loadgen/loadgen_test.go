package loadgen_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mutexd/mutexd/internal/config"
	"github.com/mutexd/mutexd/internal/loadgen"
	"github.com/mutexd/mutexd/internal/server"
)

func TestHistogramQuantilesWithinResolution(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	h := loadgen.NewHistogram()
	vals := make([]time.Duration, 100_000)
	for i := range vals {
		// log-uniform from 1 µs to 10 s
		vals[i] = time.Duration(math.Exp(r.Float64()*math.Log(1e7)) * 1e3)
		h.Record(vals[i])
	}
	slices.Sort(vals)
	for _, q := range []float64{0.5, 0.9, 0.99, 0.999, 1} {
		exact := vals[int(math.Ceil(q*float64(len(vals))))-1]
		got := h.Quantile(q)
		if got < exact || float64(got-exact) > float64(exact)/64 {
			t.Errorf("Quantile(%v) = %v, want within [%v, %v·(1+1/64)]", q, got, exact, exact)
		}
	}
	if h.Max() != vals[len(vals)-1] || h.Min() != vals[0] {
		t.Errorf("Min, Max = %v, %v; want %v, %v", h.Min(), h.Max(), vals[0], vals[len(vals)-1])
	}
}

func TestHistogramEdges(t *testing.T) {
	tests := []struct {
		name string
		vals []time.Duration
		q    float64
		want time.Duration
	}{
		{name: "empty", q: 0.5, want: 0},
		{name: "small exact", vals: []time.Duration{1, 2, 3, 4}, q: 0.5, want: 2},
		{name: "negative is zero", vals: []time.Duration{-5}, q: 1, want: 0},
		{name: "huge is clamped but max exact", vals: []time.Duration{time.Hour}, q: 1, want: time.Hour},
		{name: "one value", vals: []time.Duration{123456}, q: 0.001, want: 123456},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := loadgen.NewHistogram()
			for _, v := range tt.vals {
				h.Record(v)
			}
			if got := h.Quantile(tt.q); got != tt.want {
				t.Errorf("Quantile(%v) = %v, want %v", tt.q, got, tt.want)
			}
		})
	}
}

func TestHistogramMerge(t *testing.T) {
	a, b := loadgen.NewHistogram(), loadgen.NewHistogram()
	for i := range 1000 {
		a.Record(time.Duration(i) * time.Microsecond)
		b.Record(time.Duration(i+1000) * time.Microsecond)
	}
	a.Merge(b)
	if a.Count() != 2000 {
		t.Fatalf("Count() = %d, want 2000", a.Count())
	}
	if got, want := a.Quantile(0.5), 999*time.Microsecond; got < want || got > want+want/64 {
		t.Errorf("Quantile(0.5) = %v, want ≈ %v", got, want)
	}
	if a.Max() != 1999*time.Microsecond || a.Min() != 0 {
		t.Errorf("Min, Max = %v, %v", a.Min(), a.Max())
	}
}

func TestJain(t *testing.T) {
	tests := []struct {
		xs   []float64
		want float64
	}{
		{nil, 1},
		{[]float64{5, 5, 5, 5}, 1},
		{[]float64{10, 0, 0, 0}, 0.25},
		{[]float64{1, 2}, 9.0 / 10},
	}
	for _, tt := range tests {
		if got := loadgen.Jain(tt.xs); math.Abs(got-tt.want) > 1e-9 {
			t.Errorf("Jain(%v) = %v, want %v", tt.xs, got, tt.want)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	ok := loadgen.Config{Clients: 1, Keys: 1, Duration: time.Second, TTL: time.Second, Mode: loadgen.ModeCycle}
	tests := []struct {
		name string
		edit func(*loadgen.Config)
		want string
	}{
		{"valid", func(*loadgen.Config) {}, ""},
		{"no clients", func(c *loadgen.Config) { c.Clients = 0 }, "clients"},
		{"more keys than clients", func(c *loadgen.Config) { c.Clients, c.Keys = 2, 2_000_000_000 }, "keys must be from 1 to the number of clients (2)"},
		{"too many clients", func(c *loadgen.Config) { c.Clients = 100_000_000 }, "clients must be from 1 to 65535"},
		{"most clients", func(c *loadgen.Config) { c.Clients = loadgen.MaxClients }, ""},
		{"no keys", func(c *loadgen.Config) { c.Keys = 0 }, "keys"},
		{"no length", func(c *loadgen.Config) { c.Duration = 0 }, "duration"},
		{"requests instead", func(c *loadgen.Config) { c.Duration, c.Requests = 0, 5 }, ""},
		{"bad ttl", func(c *loadgen.Config) { c.TTL = 0 }, "ttl"},
		{"bad hold", func(c *loadgen.Config) { c.Hold = -1 }, "hold"},
		{"bad mode", func(c *loadgen.Config) { c.Mode = "spin" }, "mode"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := ok
			tt.edit(&c)
			err := c.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, loadgen.ErrConfig) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate() = %v, want ErrConfig naming %q", err, tt.want)
			}
		})
	}
}

// brokenTarget grants every acquire at once, whoever holds the key: a lock
// service without mutual exclusion, which Run must catch.
type brokenTarget struct{}

func (brokenTarget) Name() string { return "broken" }
func (brokenTarget) Open(context.Context, int) (loadgen.Session, error) {
	return brokenSession{}, nil
}

type brokenSession struct{}

func (brokenSession) Acquire(_ context.Context, key string, _, _ time.Duration) (loadgen.Lease, error) {
	return loadgen.Lease{Key: key, Token: "t"}, nil
}
func (brokenSession) Release(context.Context, loadgen.Lease) error { return nil }
func (brokenSession) Close() error                                 { return nil }

func TestRunDetectsOverlaps(t *testing.T) {
	res, err := loadgen.Run(t.Context(), brokenTarget{}, loadgen.Config{
		Clients: 4, Keys: 1, Requests: 400, TTL: time.Minute, Hold: 100 * time.Microsecond, Mode: loadgen.ModeCycle,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Overlaps == 0 {
		t.Errorf("Overlaps = 0 for a lock without mutual exclusion, want > 0")
	}
	if res.Cycles != 400 {
		t.Errorf("Cycles = %d, want 400", res.Cycles)
	}
}

// startServer runs a real mutexd on 127.0.0.1 until the test ends.
func startServer(t *testing.T) string {
	t.Helper()
	cfg := config.Default()
	cfg.Listen = "127.0.0.1:0"
	srv, err := server.New(cfg, "test", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := srv.Run(ctx); err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	t.Cleanup(func() { cancel(); wg.Wait() })
	base := "http://" + srv.Addr().String()
	if err := loadgen.WaitReady(t.Context(), base); err != nil {
		t.Fatal(err)
	}
	return base
}

func TestRunAgainstMutexd(t *testing.T) {
	base := startServer(t)
	target := loadgen.HTTPTarget{BaseURL: base}
	tests := []struct {
		name  string
		cfg   loadgen.Config
		check func(t *testing.T, r *loadgen.Result)
	}{
		{
			name: "uncontended",
			cfg:  loadgen.Config{Clients: 4, Keys: 4, Requests: 200, TTL: time.Minute, Wait: 10 * time.Second, Mode: loadgen.ModeCycle},
			check: func(t *testing.T, r *loadgen.Result) {
				if r.OwnerChanges != 0 {
					t.Errorf("OwnerChanges = %d with a key per client, want 0", r.OwnerChanges)
				}
			},
		},
		{
			name: "contended",
			cfg:  loadgen.Config{Clients: 8, Keys: 1, Requests: 400, TTL: time.Minute, Wait: 10 * time.Second, Mode: loadgen.ModeCycle},
			check: func(t *testing.T, r *loadgen.Result) {
				// strict FIFO with 8 clients: nearly every grant changes owner
				if r.OwnerChanges < r.Cycles/2 {
					t.Errorf("OwnerChanges = %d of %d cycles, want most", r.OwnerChanges, r.Cycles)
				}
				if r.Fairness < 0.9 {
					t.Errorf("Fairness = %v under FIFO, want ≥ 0.9", r.Fairness)
				}
			},
		},
		{
			name: "try-lock spin",
			cfg:  loadgen.Config{Clients: 4, Keys: 1, Requests: 100, TTL: time.Minute, Hold: 200 * time.Microsecond, Mode: loadgen.ModeTry},
			check: func(t *testing.T, r *loadgen.Result) {
				if r.Busy == 0 {
					t.Errorf("Busy = 0 with 4 spinning clients on one held key, want > 0")
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.cfg.KeyPrefix = "t-" + tt.name + "-"
			r, err := loadgen.Run(t.Context(), target, tt.cfg)
			if err != nil {
				t.Fatal(err)
			}
			if r.Cycles != tt.cfg.Requests || r.ErrorsTotal != 0 || r.Overlaps != 0 {
				t.Fatalf("Cycles, errors, overlaps = %d, %v, %d; want %d, none, 0", r.Cycles, r.Errors, r.Overlaps, tt.cfg.Requests)
			}
			if r.Acquire.Count != uint64(r.Cycles) || r.Cycle.P99 < r.Acquire.P50 || r.Cycle.Max <= 0 {
				t.Errorf("latency summaries inconsistent: acquire %+v, cycle %+v", r.Acquire, r.Cycle)
			}
			tt.check(t, r)
			var out strings.Builder
			if err := r.WriteText(&out); err != nil || !strings.Contains(out.String(), "p99.9") {
				t.Errorf("WriteText = %q, %v", out.String(), err)
			}
			raw, err := json.Marshal(r)
			if err != nil {
				t.Fatal(err)
			}
			var back map[string]any
			if err := json.Unmarshal(raw, &back); err != nil || back["cycles"] != float64(r.Cycles) || back["acquire"].(map[string]any)["p99_us"] == nil {
				t.Errorf("JSON = %s, %v", raw, err)
			}
		})
	}
}

// TestRunExpireMode abandons a 1s lease and checks that the next grant is
// timed from the lease's deadline.
func TestRunExpireMode(t *testing.T) {
	base := startServer(t)
	r, err := loadgen.Run(t.Context(), loadgen.HTTPTarget{BaseURL: base}, loadgen.Config{
		Clients: 1, Keys: 1, Requests: 2, TTL: time.Second, Wait: 10 * time.Second, Mode: loadgen.ModeExpire, KeyPrefix: "exp-",
	})
	if err != nil {
		t.Fatal(err)
	}
	if r.Cycles != 2 || r.ErrorsTotal != 0 {
		t.Fatalf("Cycles, errors = %d, %v; want 2, none", r.Cycles, r.Errors)
	}
	// Generous slack: this is a correctness check, the figure is measured
	// by the benchmarks.
	if l := r.ExpiryLateness; l.Count != 1 || l.Max < -2*time.Millisecond || l.Max > 500*time.Millisecond {
		t.Errorf("ExpiryLateness = %+v, want one sample between -2ms and 500ms", l)
	}
}

func TestRunCountsErrorsByCode(t *testing.T) {
	base := startServer(t)
	// max ttl is 1h by default: 2h is refused as invalid_ttl on every try.
	r, err := loadgen.Run(t.Context(), loadgen.HTTPTarget{BaseURL: base}, loadgen.Config{
		Clients: 2, Keys: 1, Requests: 10, TTL: 2 * time.Hour, Mode: loadgen.ModeCycle,
	})
	if err != nil {
		t.Fatal(err)
	}
	if r.Errors["invalid_ttl"] != 10 || r.Cycles != 0 {
		t.Errorf("Errors = %v, Cycles = %d; want invalid_ttl=10, 0 cycles", r.Errors, r.Cycles)
	}
	if r.Failed.Count != 10 || r.Acquire.Count != 0 || r.Failed.Max <= 0 {
		t.Errorf("Failed = %+v, Acquire = %+v; want the 10 failures timed apart from the acquires", r.Failed, r.Acquire)
	}
}

// TestRunTimesWaitsThatRunOut holds the only key for longer than the other
// client may wait: its timed-out acquire must show up in Failed with about
// the wait's length, not vanish from the latency figures.
func TestRunTimesWaitsThatRunOut(t *testing.T) {
	base := startServer(t)
	r, err := loadgen.Run(t.Context(), loadgen.HTTPTarget{BaseURL: base}, loadgen.Config{
		Clients: 2, Keys: 1, Requests: 2, TTL: time.Minute, Hold: 3 * time.Second, Wait: time.Second,
		Mode: loadgen.ModeCycle, KeyPrefix: "wait-out-",
	})
	if err != nil {
		t.Fatal(err)
	}
	if r.Cycles != 1 || r.Errors["busy"] != 1 {
		t.Fatalf("Cycles, errors = %d, %v; want 1, busy=1", r.Cycles, r.Errors)
	}
	if f := r.Failed; f.Count != 1 || f.Max < time.Second-50*time.Millisecond {
		t.Errorf("Failed = %+v, want one failure timed at about the 1s wait", f)
	}
}

func TestRunRefusesBadAddress(t *testing.T) {
	_, err := loadgen.Run(t.Context(), loadgen.HTTPTarget{BaseURL: "ftp://x"}, loadgen.Config{
		Clients: 1, Keys: 1, Requests: 1, TTL: time.Second, Mode: loadgen.ModeCycle,
	})
	if !errors.Is(err, loadgen.ErrConfig) {
		t.Errorf("Run(ftp://x) = %v, want ErrConfig", err)
	}
}

func TestRunReportsProgressAndEndsOnTime(t *testing.T) {
	var mu sync.Mutex
	var seen []loadgen.Progress
	start := time.Now()
	res, err := loadgen.Run(t.Context(), brokenTarget{}, loadgen.Config{
		Clients: 2, Keys: 2, Duration: 300 * time.Millisecond, TTL: time.Minute, Hold: time.Millisecond, Mode: loadgen.ModeCycle,
		ProgressEvery: 50 * time.Millisecond,
		Progress:      func(p loadgen.Progress) { mu.Lock(); seen = append(seen, p); mu.Unlock() },
	})
	if err != nil {
		t.Fatal(err)
	}
	// Generous slack: the point is that Run does not wait a whole
	// progress interval or the stop grace after the window.
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("Run took %s for a 300ms window", took)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) == 0 || seen[len(seen)-1].Cycles > res.Cycles+2 {
		t.Errorf("progress reports %+v for %d cycles, want some, never ahead of the result", seen, res.Cycles)
	}
}
