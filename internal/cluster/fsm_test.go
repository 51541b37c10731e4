package cluster

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/mutexd/mutexd/internal/engine"
	"github.com/mutexd/mutexd/internal/metrics"
)

var t0 = time.Unix(1_800_000_000, 0)

func newTestFSM(self string) *fsm {
	return newFSM(self, engine.Limits{RememberOutcome: time.Minute}, func(c engine.Clock, l engine.Limits) *engine.Engine {
		return engine.New(c, nil, l)
	}, newPending())
}

// logOf encodes commands as Raft log entries from index first, in term.
func logOf(t *testing.T, first, term uint64, cmds ...*command) []*raft.Log {
	t.Helper()
	var out []*raft.Log
	for i, c := range cmds {
		b, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, &raft.Log{Index: first + uint64(i), Term: term, Type: raft.LogCommand, Data: b})
	}
	return out
}

func at(d time.Duration) int64 { return t0.Add(d).UnixNano() }

func promote(d time.Duration) *command {
	return &command{Op: opPromote, Time: at(d), Margin: time.Second, Seed: bytes.Repeat([]byte{7}, 32)}
}

// randomCommands is a history a leader could write: acquires (some
// queued, with request ids), releases and renews of whatever was granted,
// detaches, force-releases, pauses, ticks, all at rising times.
func randomCommands(rng *rand.Rand, f *fsm, n int, start time.Duration) []*command {
	var out []*command
	now := start
	for range n {
		now += time.Duration(rng.IntN(400)) * time.Millisecond
		key := fmt.Sprint("k", rng.IntN(3))
		c := &command{Time: at(now), Key: key}
		switch rng.IntN(8) {
		case 0, 1, 2:
			c.Op, c.TTL, c.Wait = opAcquire, time.Duration(1+rng.IntN(3))*time.Second, time.Duration(rng.IntN(3))*time.Second
			c.RequestID, c.Seq = fmt.Sprint("r", rng.IntN(6)), uint64(1+rng.IntN(3))
		case 3:
			c.Op = opRelease
			if info := f.eng.Inspect(key, 0); info.Held {
				// A wrong token: the release is refused alike everywhere.
				tok := engine.Token{byte(rng.IntN(2))}
				c.Token = &tok
			}
		case 4:
			c.Op, c.RequestID, c.Attempt = opDetach, fmt.Sprint("r", rng.IntN(6)), uint64(rng.IntN(3))
		case 5:
			c.Op = opForce
		case 6:
			c.Op = []op{opPause, opResume}[rng.IntN(2)]
		default:
			c.Op = opTick
		}
		out = append(out, c)
	}
	return out
}

func digestOf(t *testing.T, f *fsm) []byte {
	t.Helper()
	b, _, err := f.digest()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestReplicasAgree: replicas applying the same entries reach the same
// state (bytes), and one restored from a snapshot half-way goes on in
// step with the others.
func TestReplicasAgree(t *testing.T) {
	for seed := range uint64(20) {
		rng := rand.New(rand.NewPCG(seed, 1))
		a, b := newTestFSM("a"), newTestFSM("b")
		entries := logOf(t, 1, 1, promote(0))
		entries = append(entries, logOf(t, 2, 1, randomCommands(rng, a, 150, 0)...)...)
		half := len(entries) / 2
		a.ApplyBatch(entries[:half])
		b.ApplyBatch(entries[:half])
		snap, err := a.Snapshot()
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		if err := snap.Persist(&sink{Buffer: &buf}); err != nil {
			t.Fatal(err)
		}
		c := newTestFSM("c")
		if err := c.Restore(io.NopCloser(&buf)); err != nil {
			t.Fatalf("seed %d: restore: %v", seed, err)
		}
		for _, e := range entries[half:] {
			for _, f := range []*fsm{a, b, c} {
				f.Apply(e)
			}
		}
		da, db, dc := digestOf(t, a), digestOf(t, b), digestOf(t, c)
		if !bytes.Equal(da, db) || !bytes.Equal(da, dc) {
			t.Fatalf("seed %d: replicas differ:\na %s\nb %s\nc %s", seed, da, db, dc)
		}
		if err := a.eng.Check(); err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
	}
}

// TestUnpromotedEntriesAreRefused: an entry of a term whose leader has
// not applied its promote entry changes nothing on any replica.
func TestUnpromotedEntriesAreRefused(t *testing.T) {
	f := newTestFSM("a")
	f.ApplyBatch(logOf(t, 1, 1, promote(0)))
	// The state without the applied index, which a refused entry moves
	// like any other.
	state := func() []byte {
		applied := f.applied.Load()
		defer f.applied.Store(applied)
		f.applied.Store(0)
		return digestOf(t, f)
	}
	before := state()
	out := f.ApplyBatch(logOf(t, 2, 2, &command{Op: opAcquire, Time: at(time.Hour), Key: "k", TTL: time.Second, RequestID: "r"}))
	if r := out[0].(*result); !errors.Is(r.err, errUnpromoted) {
		t.Fatalf("result = %+v, want errUnpromoted", r)
	}
	if after := state(); !bytes.Equal(before, after) {
		t.Fatal("a refused entry changed the state (or moved the log's time)")
	}
	f.ApplyBatch(logOf(t, 3, 2, promote(time.Hour)))
	out = f.ApplyBatch(logOf(t, 4, 2, &command{Op: opAcquire, Time: at(time.Hour), Key: "k", TTL: time.Second, RequestID: "r"}))
	if r := out[0].(*result); r.err != nil || r.grant.Fence == 0 {
		t.Fatalf("after its promote entry: %+v", r)
	}
}

// TestPromoteRestartsDeadlines: a lease with 4s left when the old leader
// last spoke lives 4s plus the margin from the new leader's first entry,
// however far the new leader's clock is ahead; one already past its
// deadline ends.
func TestPromoteRestartsDeadlines(t *testing.T) {
	f := newTestFSM("a")
	f.ApplyBatch(logOf(t, 1, 1, promote(0),
		&command{Op: opAcquire, Time: at(0), Key: "live", TTL: 5 * time.Second, RequestID: "r1"},
		&command{Op: opAcquire, Time: at(0), Key: "due", TTL: time.Second, RequestID: "r2"},
		&command{Op: opTick, Time: at(999 * time.Millisecond)},
	))
	f.ApplyBatch(logOf(t, 5, 1, &command{Op: opRenew, Time: at(time.Second), Key: "x"})) // the old leader's last word: t=1s
	// The new leader's clock is a minute ahead.
	f.ApplyBatch(logOf(t, 6, 2, promote(61*time.Second)))
	live := f.eng.Inspect("live", 0)
	if want := t0.Add(61*time.Second + 4*time.Second + time.Second); !live.Held || !live.Holder.ExpiresAt.Equal(want) {
		t.Fatalf("live: held %v until %v, want until %v", live.Held, live.Holder.ExpiresAt, want)
	}
	if due := f.eng.Inspect("due", 0); due.Held {
		t.Fatalf("a lease past its deadline at the old leader's last entry was revived: %+v", due.Holder)
	}
}

// TestResultsReachTheirOrigin: a replica hands an entry's result to the
// request that waits for it, here, and only its first apply's.
func TestResultsReachTheirOrigin(t *testing.T) {
	f := newTestFSM("me")
	f.ApplyBatch(logOf(t, 1, 1, promote(0)))
	s := f.pending.add(42)
	acq := &command{Op: opAcquire, Time: at(0), Key: "k", TTL: time.Second, RequestID: "r", Origin: "me", Seq: 42}
	other := &command{Op: opAcquire, Time: at(0), Key: "j", TTL: time.Second, RequestID: "r", Origin: "you", Seq: 42}
	f.ApplyBatch(logOf(t, 2, 1, other, acq, acq))
	r, _ := f.pending.take(s)
	if r == nil || r.err != nil || r.grant.Key != "k" {
		t.Fatalf("result = %+v, want k's grant", r)
	}
}

func FuzzDecodeCommand(f *testing.F) {
	f.Add([]byte(`{"op":1,"k":"a","ttl":1000000000,"rid":"r","o":"n1","s":7}`))
	f.Add([]byte(`{"op":14}`))
	f.Add([]byte(`{"op":0}`))
	f.Add([]byte(`not json`))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := decodeCommand(b)
		if err != nil {
			if !errors.Is(err, errBadCommand) {
				t.Fatalf("error %v does not wrap errBadCommand", err)
			}
			return
		}
		if c.Op == 0 || c.Op >= opMax {
			t.Fatalf("decoded op %d", c.Op)
		}
		// Whatever decodes applies without panicking.
		fs := newTestFSM("n1")
		fs.ApplyBatch([]*raft.Log{{Index: 1, Term: 1, Type: raft.LogCommand, Data: b}})
	})
}

type sink struct{ *bytes.Buffer }

func (s *sink) ID() string    { return "test" }
func (s *sink) Cancel() error { return nil }
func (s *sink) Close() error  { return nil }

// TestRestoredReplicaCountsAlike: the live gauges (leases held, waiters
// queued) of a replica restored from a snapshot half-way, whose engine
// reported no events for what the snapshot brought, agree with those of
// the replicas that applied every entry, through Config.Restored. Before
// that hook, a restored lease's end drove the count below zero, and the
// next waiter's arrival spun in the apply goroutine for a minute.
func TestRestoredReplicaCountsAlike(t *testing.T) {
	withMetrics := func(self string) (*fsm, *metrics.Metrics) {
		m := metrics.New(metrics.Options{NamespaceSeparator: ":", MaxNamespaces: 10})
		f := newFSM(self, engine.Limits{RememberOutcome: time.Minute}, func(c engine.Clock, l engine.Limits) *engine.Engine {
			return engine.New(c, m, l)
		}, newPending())
		f.restored = func(e *engine.Engine) { m.Recount(e.EachCount) }
		return f, m
	}
	gauges := func(m *metrics.Metrics) string {
		mfs, err := m.Registry().Gather()
		if err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		for _, mf := range mfs {
			if name := mf.GetName(); name == "mutexd_locks_held" || name == "mutexd_queue_depth" {
				for _, s := range mf.GetMetric() {
					if v := s.GetGauge().GetValue(); v != 0 { // a namespace is listed once seen
						fmt.Fprintf(&b, "%s%v %v\n", name, s.GetLabel(), v)
					}
				}
			}
		}
		return b.String()
	}
	for seed := range uint64(20) {
		rng := rand.New(rand.NewPCG(seed, 2))
		a, ma := withMetrics("a")
		entries := logOf(t, 1, 1, promote(0))
		entries = append(entries, logOf(t, 2, 1, randomCommands(rng, a, 150, 0)...)...)
		half := len(entries) / 2
		a.ApplyBatch(entries[:half])
		snap, err := a.Snapshot()
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		if err := snap.Persist(&sink{Buffer: &buf}); err != nil {
			t.Fatal(err)
		}
		c, mc := withMetrics("c")
		if err := c.Restore(io.NopCloser(&buf)); err != nil {
			t.Fatalf("seed %d: restore: %v", seed, err)
		}
		if ga, gc := gauges(ma), gauges(mc); ga != gc {
			t.Fatalf("seed %d: just restored:\n%s\nwhile the original counts\n%s", seed, gc, ga)
		}
		for _, e := range entries[half:] {
			a.Apply(e)
			c.Apply(e)
			if ga, gc := gauges(ma), gauges(mc); ga != gc {
				t.Fatalf("seed %d, entry %d: the restored replica counts\n%s\nwhile the original counts\n%s", seed, e.Index, gc, ga)
			}
		}
	}
}
