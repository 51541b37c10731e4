package events_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/mutexd/mutexd/internal/engine"
	"github.com/mutexd/mutexd/internal/events"
	"github.com/mutexd/mutexd/internal/fakeclock"
)

// kinds lists items as "key type" (an ended lease as its outcome).
func kinds(items []events.Item) []string {
	out := make([]string, len(items))
	for i, it := range items {
		name := it.Event.Type.String()
		if it.Event.Type == engine.EventEnded {
			name = it.Event.Outcome.String()
		}
		out[i] = it.Event.Key + " " + name
	}
	return out
}

// TestReplayShowsAnIncidentToALateSubscriber: a subscriber that arrives
// after an expiry and a force-release, with nobody subscribed while they
// happened, gets them from the history, then live events, with no repeat
// and no gap; queued and renewed events are not kept.
func TestReplayShowsAnIncidentToALateSubscriber(t *testing.T) {
	clk := fakeclock.New(t0)
	hub := events.New(10, 0, 100)
	e := engine.New(clk, hub, engine.Limits{})
	ctx := t.Context()
	g, err := e.Acquire(ctx, "job:1", engine.AcquireOptions{Owner: "a", TTL: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Renew("job:1", g.Token, time.Second); err != nil {
		t.Fatal(err)
	}
	clk.Advance(2 * time.Second) // expires
	if _, err := e.Acquire(ctx, "job:1", engine.AcquireOptions{Owner: "b", TTL: time.Minute}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.ForceRelease("job:1"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Acquire(ctx, "other", engine.AcquireOptions{Owner: "c", TTL: time.Minute}); err != nil {
		t.Fatal(err)
	}

	key := mustSubscribe(t, hub, events.Filter{Key: "job:1"})
	all := mustSubscribe(t, hub, events.Filter{})
	if _, err := e.Acquire(ctx, "job:1", engine.AcquireOptions{Owner: "d", TTL: time.Minute}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		sub  *events.Subscription
		want string
	}{
		{"key", key, "[job:1 granted job:1 expired job:1 granted job:1 forced]"},
		{"all", all, "[job:1 granted job:1 expired job:1 granted job:1 forced other granted]"},
	} {
		t.Run(c.name, func(t *testing.T) {
			replay := c.sub.Replay(0)
			if got := fmt.Sprint(kinds(replay)); got != c.want {
				t.Fatalf("Replay(0) = %s, want %s", got, c.want)
			}
			live, _ := drain(c.sub)
			if got := fmt.Sprint(kinds(live)); got != "[job:1 granted]" {
				t.Fatalf("live = %s, want [job:1 granted]", got)
			}
			if last := replay[len(replay)-1].ID; last > c.sub.Start() || live[0].ID <= c.sub.Start() {
				t.Fatalf("replay ends at %d, live starts at %d, Start() = %d: want replay <= Start < live", last, live[0].ID, c.sub.Start())
			}
			for i := 1; i < len(replay); i++ {
				if replay[i].ID <= replay[i-1].ID {
					t.Fatalf("replay ids %d then %d, want increasing", replay[i-1].ID, replay[i].ID)
				}
			}
			// After an id: only what came later.
			if got := c.sub.Replay(replay[1].ID); len(got) != len(replay)-2 || got[0].ID != replay[2].ID {
				t.Fatalf("Replay(%d) = %v, want the %d events after it", replay[1].ID, kinds(got), len(replay)-2)
			}
		})
	}
}

// TestHistoryBounds: each key keeps its last HistoryPerKey events, the
// streams of every key the last HistoryRecent, and only the HistoryKeys
// most recently active keys keep a history.
func TestHistoryBounds(t *testing.T) {
	hub := events.New(10, 0, 16)
	ev := func(key string) engine.Event {
		return engine.Event{Type: engine.EventGranted, Key: key, Time: t0}
	}
	for range events.HistoryPerKey + 5 {
		hub.OnEvent(ev("busy"))
	}
	hub.OnEvent(ev("quiet"))
	for i := range events.HistoryKeys - 2 {
		hub.OnEvent(ev(fmt.Sprintf("k%d", i)))
	}
	// HistoryKeys keys now: busy, quiet and the others. busy is touched
	// again, so one more key pushes quiet's history out, not busy's.
	hub.OnEvent(ev("busy"))
	hub.OnEvent(ev("newcomer"))
	for _, c := range []struct {
		key  string
		want int
	}{{"busy", events.HistoryPerKey}, {"quiet", 0}, {"newcomer", 1}, {"k0", 1}} {
		s := mustSubscribe(t, hub, events.Filter{Key: c.key})
		got := s.Replay(0)
		if len(got) != c.want {
			t.Errorf("history of %s: %d events, want %d", c.key, len(got), c.want)
		}
		s.Close()
	}
	s := mustSubscribe(t, hub, events.Filter{})
	got := s.Replay(0)
	if len(got) != events.HistoryRecent {
		t.Fatalf("history of every key: %d events, want %d", len(got), events.HistoryRecent)
	}
	if got[len(got)-1].Event.Key != "newcomer" || got[len(got)-1].ID != s.Start() {
		t.Fatalf("history of every key ends with %s #%d, want newcomer #%d", got[len(got)-1].Event.Key, got[len(got)-1].ID, s.Start())
	}
}

// TestStatsCountWithoutSubscribers: the hub counts every event by kind,
// in total and over the last minute of event time, whether anyone
// subscribes or not.
func TestStatsCountWithoutSubscribers(t *testing.T) {
	clk := fakeclock.New(t0)
	hub := events.New(10, 0, 16)
	e := engine.New(clk, hub, engine.Limits{})
	ctx := t.Context()
	for range 40 {
		g, err := e.Acquire(ctx, "k", engine.AcquireOptions{TTL: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.Release("k", g.Token, false); err != nil {
			t.Fatal(err)
		}
	}
	clk.Advance(2 * time.Minute)
	if _, err := e.Acquire(ctx, "k", engine.AcquireOptions{TTL: time.Second}); err != nil {
		t.Fatal(err)
	}
	clk.Advance(2 * time.Second) // expires
	if _, err := e.Acquire(ctx, "k", engine.AcquireOptions{TTL: time.Second, Wait: 0}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.ForceRelease("k"); err != nil {
		t.Fatal(err)
	}
	st := hub.Stats(clk.Now())
	if want := (events.Counts{Granted: 42, Released: 40, Expired: 1, Forced: 1}); st.Total != want {
		t.Errorf("Total = %+v, want %+v", st.Total, want)
	}
	if want := (events.Counts{Granted: 2, Expired: 1, Forced: 1}); st.LastMinute != want {
		t.Errorf("LastMinute = %+v, want %+v (the first 40 rounds are over two minutes old)", st.LastMinute, want)
	}
	if st.LastID != 84 {
		t.Errorf("LastID = %d, want 84 (one per event)", st.LastID)
	}
}
