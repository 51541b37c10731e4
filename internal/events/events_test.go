package events_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/mutexd/mutexd/internal/engine"
	"github.com/mutexd/mutexd/internal/events"
	"github.com/mutexd/mutexd/internal/fakeclock"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// recorder keeps every event the engine reports, in its order.
type recorder struct {
	mu     sync.Mutex
	events []engine.Event
}

func (r *recorder) OnEvent(ev engine.Event) {
	r.mu.Lock()
	r.events = append(r.events, ev)
	r.mu.Unlock()
}

func (r *recorder) byKey() map[string][]engine.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string][]engine.Event{}
	for _, ev := range r.events {
		out[ev.Key] = append(out[ev.Key], ev)
	}
	return out
}

func mustSubscribe(t *testing.T, h *events.Hub, f events.Filter) *events.Subscription {
	t.Helper()
	s, err := h.Subscribe(f)
	if err != nil {
		t.Fatalf("Subscribe(%+v): %v", f, err)
	}
	t.Cleanup(s.Close)
	return s
}

// drain reads what is buffered now, without waiting.
func drain(s *events.Subscription) (items []events.Item, open bool) {
	for {
		select {
		case it, ok := <-s.Events():
			if !ok {
				return items, false
			}
			items = append(items, it)
		default:
			return items, true
		}
	}
}

// TestOrderPerKeyMatchesEngine drives random operations on a few keys from
// several goroutines and checks that a subscriber sees, for every key,
// exactly the engine's transitions in the engine's order, with strictly
// increasing IDs overall.
func TestOrderPerKeyMatchesEngine(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		hub := events.New(10, 0, 1<<16)
		rec := &recorder{}
		clk := fakeclock.New(t0)
		e := engine.New(clk, engine.Observers{rec, hub}, engine.Limits{})
		sub := mustSubscribe(t, hub, events.Filter{})

		var wg sync.WaitGroup
		for g := range 8 {
			wg.Go(func() {
				rng := rand.New(rand.NewPCG(uint64(g), 7))
				for i := range 200 {
					key := fmt.Sprintf("k%d", rng.IntN(3))
					o := engine.AcquireOptions{Owner: fmt.Sprintf("g%d-%d", g, i), TTL: time.Second, Wait: time.Duration(rng.IntN(3)) * time.Millisecond}
					gr, err := e.Acquire(t.Context(), key, o)
					if err != nil {
						continue
					}
					if rng.IntN(4) == 0 {
						_, _ = e.Renew(key, gr.Token, 0)
					}
					_, _ = e.Release(key, gr.Token, rng.IntN(5) == 0)
				}
			})
		}
		// Time moves while the goroutines run, so waits time out.
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		for running := true; running; {
			select {
			case <-done:
				running = false
			default:
				synctest.Wait()
				clk.Advance(time.Millisecond)
			}
		}

		got, open := drain(sub)
		if !open {
			t.Fatal("subscription closed; want it open (the buffer is large)")
		}
		gotByKey := map[string][]engine.Event{}
		var last uint64
		for _, it := range got {
			if it.ID <= last {
				t.Fatalf("id %d after %d, want strictly increasing", it.ID, last)
			}
			last = it.ID
			gotByKey[it.Event.Key] = append(gotByKey[it.Event.Key], it.Event)
		}
		want := rec.byKey()
		if len(want) == 0 {
			t.Fatal("the engine reported no events")
		}
		for key, evs := range want {
			g := gotByKey[key]
			if len(g) != len(evs) {
				t.Fatalf("key %s: %d events, want %d", key, len(g), len(evs))
			}
			for i := range evs {
				if g[i] != evs[i] {
					t.Fatalf("key %s event %d = %+v, want %+v", key, i, g[i], evs[i])
				}
			}
		}
	})
}

func TestFilters(t *testing.T) {
	hub := events.New(10, 0, 100)
	e := engine.New(fakeclock.New(t0), hub, engine.Limits{})
	all := mustSubscribe(t, hub, events.Filter{})
	exact := mustSubscribe(t, hub, events.Filter{Key: "user:1"})
	prefix := mustSubscribe(t, hub, events.Filter{Prefix: "user:"})
	both := mustSubscribe(t, hub, events.Filter{Key: "job:1", Prefix: "user:"})
	for _, key := range []string{"user:1", "user:10", "job:1", "user", "xuser:1"} {
		if _, err := e.Acquire(t.Context(), key, engine.AcquireOptions{TTL: time.Second}); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name string
		sub  *events.Subscription
		want []string
	}{
		{"all", all, []string{"user:1", "user:10", "job:1", "user", "xuser:1"}},
		{"key", exact, []string{"user:1"}},
		{"prefix", prefix, []string{"user:1", "user:10"}},
		{"key and prefix disagree", both, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			items, _ := drain(tt.sub)
			var got []string
			for _, it := range items {
				got = append(got, it.Event.Key)
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Fatalf("keys = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestSlowSubscriberOverflows checks that a subscriber that reads nothing
// is cut off with what fit in its buffer, while the engine goes on and a
// subscriber that keeps up loses nothing.
func TestSlowSubscriberOverflows(t *testing.T) {
	const buffer = 8
	hub := events.New(10, 0, buffer)
	e := engine.New(fakeclock.New(t0), hub, engine.Limits{})
	slow := mustSubscribe(t, hub, events.Filter{})
	fast := mustSubscribe(t, hub, events.Filter{})
	var fastGot []events.Item
	const rounds = 50 // two events each: granted, released
	for i := range rounds {
		g, err := e.Acquire(t.Context(), "k", engine.AcquireOptions{TTL: time.Second})
		if err != nil {
			t.Fatalf("round %d: acquire: %v (the engine must not be affected)", i, err)
		}
		if _, err := e.Release("k", g.Token, false); err != nil {
			t.Fatalf("round %d: release: %v", i, err)
		}
		items, open := drain(fast)
		if !open {
			t.Fatalf("round %d: the fast subscriber was cut off", i)
		}
		fastGot = append(fastGot, items...)
	}
	if len(fastGot) != 2*rounds {
		t.Fatalf("fast subscriber got %d events, want %d", len(fastGot), 2*rounds)
	}
	items, open := drain(slow)
	if open {
		t.Fatal("slow subscriber still open, want it cut off")
	}
	if !slow.Overflowed() {
		t.Fatal("Overflowed() = false, want true")
	}
	if len(items) != buffer {
		t.Fatalf("slow subscriber kept %d events, want its buffer (%d)", len(items), buffer)
	}
	for i, it := range items {
		if it != fastGot[i] {
			t.Fatalf("slow event %d = %+v, want %+v (the same prefix)", i, it, fastGot[i])
		}
	}
	if n := hub.Subscribers(); n != 1 {
		t.Fatalf("Subscribers() = %d after the cut-off, want 1", n)
	}
	if n := hub.Overflows(); n != 1 {
		t.Fatalf("Overflows() = %d, want 1", n)
	}
}

func TestLimitAndClose(t *testing.T) {
	hub := events.New(2, 0, 4)
	a := mustSubscribe(t, hub, events.Filter{})
	mustSubscribe(t, hub, events.Filter{})
	if _, err := hub.Subscribe(events.Filter{}); !errors.Is(err, events.ErrTooManySubscribers) {
		t.Fatalf("third Subscribe: err = %v, want ErrTooManySubscribers", err)
	}
	a.Close()
	a.Close() // idempotent
	c := mustSubscribe(t, hub, events.Filter{})
	hub.Close()
	if _, open := drain(c); open {
		t.Fatal("subscription open after hub Close")
	}
	if c.Overflowed() {
		t.Fatal("Overflowed() = true after Close, want false")
	}
	if _, err := hub.Subscribe(events.Filter{}); !errors.Is(err, events.ErrClosed) {
		t.Fatalf("Subscribe after Close: err = %v, want ErrClosed", err)
	}
	hub.OnEvent(engine.Event{Type: engine.EventQueued, Key: "k"}) // no subscribers: nothing happens
}

// BenchmarkUncontended measures the engine's uncontended acquire+release
// (the hot path) with no hub, with a hub nobody subscribes to, and with one
// subscriber. The subscriber's two receives happen in the benchmark loop
// (a concurrent reader on a shared, noisy machine can be descheduled long
// enough to overflow and silently stop costing anything), so the third
// figure is the publishing cost plus the reader's receives. Compare the
// sub-benchmarks of one run:
//
//	go test -run '^$' -bench Uncontended -count 10 ./internal/events
func BenchmarkUncontended(b *testing.B) {
	cases := []struct {
		name string
		hub  bool
		sub  bool
	}{
		{"no-hub", false, false},
		{"hub-0-subscribers", true, false},
		{"hub-1-subscriber", true, true},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			var obs engine.Observer
			hub := events.New(10, 0, 16)
			defer hub.Close()
			if c.hub {
				obs = hub
			}
			var sub <-chan events.Item
			if c.sub {
				s, err := hub.Subscribe(events.Filter{})
				if err != nil {
					b.Fatal(err)
				}
				sub = s.Events()
			}
			e := engine.New(engine.SystemClock{}, obs, engine.Limits{})
			o := engine.AcquireOptions{Owner: "bench", TTL: time.Minute}
			ctx := b.Context()
			b.ReportAllocs()
			for b.Loop() {
				g, err := e.Acquire(ctx, "key", o)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := e.Release("key", g.Token, false); err != nil {
					b.Fatal(err)
				}
				if sub != nil {
					if _, ok := <-sub; !ok {
						b.Fatal("subscriber cut off")
					}
					<-sub
				}
			}
		})
	}
}

// BenchmarkOnEvent is the hub's own cost per published event, the part of
// BenchmarkUncontended's difference that the engine pays under its shard
// lock (the one-subscriber case includes that subscriber's receive).
func BenchmarkOnEvent(b *testing.B) {
	ev := engine.Event{Type: engine.EventGranted, Key: "bench:0000000001", Owner: "bench", Fence: 1, Time: time.Now()}
	for _, subs := range []int{0, 1} {
		b.Run(fmt.Sprintf("%d-subscribers", subs), func(b *testing.B) {
			hub := events.New(10, 0, 16)
			defer hub.Close()
			var sub <-chan events.Item
			if subs > 0 {
				s, err := hub.Subscribe(events.Filter{})
				if err != nil {
					b.Fatal(err)
				}
				sub = s.Events()
			}
			b.ReportAllocs()
			for b.Loop() {
				hub.OnEvent(ev)
				if sub != nil {
					<-sub
				}
			}
		})
	}
}
