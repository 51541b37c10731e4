package engine_test

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"maps"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/mutexd/mutexd/internal/engine"
	"github.com/mutexd/mutexd/internal/fakeclock"
)

// More or other seeds than CI's: -snapshot.seeds 5000 -snapshot.base 77.
// Each seed replays exactly.
var (
	snapSeeds = flag.Int("snapshot.seeds", 200, "seeds TestSnapshotDifferential runs")
	snapBase  = flag.Uint64("snapshot.base", 0, "first seed of TestSnapshotDifferential")
)

// replica is an engine driven as internal/cluster drives one: a
// Deterministic engine whose tokens come from a seeded generator, on a
// clock that calls ExpireDue at each deadline before any timer due then.
type replica struct {
	e      *engine.Engine
	clk    *fakeclock.Clock
	src    *rand.ChaCha8
	events []string
	hs     []*engine.Waiting // the waiters this replica queued
	// tally counts each key's leases and waiters from the events, as
	// internal/metrics does; a restored replica starts it from EachCount.
	tally map[string][2]int
}

type eventLog struct{ r *replica }

func (l eventLog) OnEvent(ev engine.Event) {
	l.r.events = append(l.r.events, showEvent(ev))
	c := l.r.tally[ev.Key]
	switch ev.Type {
	case engine.EventQueued:
		c[1]++
	case engine.EventGranted:
		c[0]++
		if ev.FromQueue {
			c[1]--
		}
	case engine.EventEnded:
		c[0]--
	case engine.EventTimeout, engine.EventAborted, engine.EventCancelled, engine.EventDrained:
		c[1]--
	}
	if c == ([2]int{}) {
		delete(l.r.tally, ev.Key)
	} else {
		l.r.tally[ev.Key] = c
	}
}

// counts returns EachCount's counts.
func (r *replica) counts() map[string][2]int {
	out := map[string][2]int{}
	r.e.EachCount(func(key string, leases, waiters int) { out[key] = [2]int{leases, waiters} })
	return out
}

// checkCounts fails unless the counts taken from r's events (since its
// restore) are EachCount's.
func (r *replica) checkCounts(t *testing.T, what string) {
	t.Helper()
	if got := r.counts(); !maps.Equal(got, r.tally) {
		t.Fatalf("%s: EachCount %v, counted from the events %v", what, got, r.tally)
	}
}

func replicaLimits(src *rand.ChaCha8) engine.Limits {
	return engine.Limits{Deterministic: true, MaxWaitersPerKey: 5, DetachGrace: 2 * time.Second,
		RememberOutcome: 20 * time.Second, MaxRemembered: 6,
		Tokens: func() (t engine.Token) {
			for i := 0; i < len(t); i += 8 {
				u := src.Uint64()
				for j := range 8 {
					t[i+j] = byte(u >> (8 * j))
				}
			}
			return t
		}}
}

func newReplica(start time.Time, src *rand.ChaCha8) *replica {
	r := &replica{clk: fakeclock.New(start), src: src, tally: map[string][2]int{}}
	r.e = engine.New(r.clk, eventLog{r}, replicaLimits(src))
	r.clk.BeforeDeadline(r.e.ExpireDue)
	return r
}

func (r *replica) snapshot(t *testing.T) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := r.e.Snapshot(&b); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// fork makes a replica restored from r's snapshot, its clock at r's time
// and its token generator in r's generator's state.
func (r *replica) fork(t *testing.T) *replica {
	t.Helper()
	state, err := r.src.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	src := new(rand.ChaCha8)
	if err := src.UnmarshalBinary(state); err != nil {
		t.Fatal(err)
	}
	b := newReplica(r.clk.Now(), src)
	snap := r.snapshot(t)
	if err := b.e.Restore(bytes.NewReader(snap)); err != nil {
		t.Fatalf("restore: %v", err)
	}
	if again := b.snapshot(t); !bytes.Equal(again, snap) {
		t.Fatalf("restored engine's snapshot differs:\n got %s\nwant %s", again, snap)
	}
	b.tally = b.counts() // a restore reports no events
	return b
}

func showTime(t time.Time) string {
	if t.IsZero() {
		return "0"
	}
	return fmt.Sprint(t.UnixNano())
}

func showPrev(p engine.Previous) string {
	return fmt.Sprintf("{%d %s %s}", p.Fence, p.Outcome, showTime(p.EndedAt))
}

func showGrant(g engine.Grant) string {
	return fmt.Sprintf("grant %s %s f%d %q ttl%d exp%s waited%d prev%s", g.Key, g.Token, g.Fence, g.Owner, g.TTL,
		showTime(g.ExpiresAt), g.Waited, showPrev(g.Previous))
}

func showErr(err error) string {
	if err == nil {
		return "nil"
	}
	var le *engine.LeaseEndedError
	if errors.As(err, &le) {
		return fmt.Sprintf("%v at %s", err, showTime(le.EndedAt))
	}
	return err.Error()
}

func showEvent(ev engine.Event) string {
	return fmt.Sprintf("%s %s %q f%d t%s w%d exp%s held%d %s %s pos%d fq%v prev%s %q", ev.Type, ev.Key, ev.Owner, ev.Fence,
		showTime(ev.Time), ev.Waited, showTime(ev.ExpiresAt), ev.Held, ev.Outcome, ev.OnError, ev.Position, ev.FromQueue,
		showPrev(ev.Previous), ev.Reason)
}

func showInfo(in engine.KeyInfo) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s held%v lim%d n%d paused%v delay%s last%s", in.Key, in.Held, in.Limit, in.Waiters, in.Paused,
		showTime(in.DelayUntil), showPrev(in.Last))
	for _, h := range in.Holders {
		fmt.Fprintf(&b, " [%q f%d %s %s %s %d %d]", h.Owner, h.Fence, showTime(h.AcquiredAt), showTime(h.ExpiresAt), h.OnError, h.MaxHold, h.LockDelay)
	}
	for _, w := range in.Queue {
		fmt.Fprintf(&b, " <%q %s>", w.Owner, showTime(w.WaitingSince))
	}
	return b.String()
}

// world is what the operations know of the replicas' history, from the
// first replica's answers: the tokens and fences granted, by key.
type world struct {
	tokens map[string][]engine.Token
	fences map[string][]uint64
}

func (w *world) learn(g engine.Grant) {
	w.tokens[g.Key] = append(w.tokens[g.Key], g.Token)
	w.fences[g.Key] = append(w.fences[g.Key], g.Fence)
}

var (
	diffKeys   = []string{"k0", "k1", "k2", "p/k3"}
	diffLimits = map[string]int{"k0": 1, "k1": 0, "k2": 2, "p/k3": 3}
)

// randomOp draws one operation. It returns what to apply to a replica:
// the answer, rendered, so that two replicas' answers can be compared.
func randomOp(rng *rand.Rand, w *world, r0 *replica) func(*replica) string {
	k := diffKeys[rng.IntN(len(diffKeys))]
	pick := func(ts []engine.Token) (engine.Token, bool) {
		if len(ts) == 0 {
			return engine.Token{}, false
		}
		return ts[rng.IntN(len(ts))], true
	}
	switch rng.IntN(16) {
	case 0, 1, 2, 3:
		o := engine.AcquireOptions{Owner: fmt.Sprint("o", rng.IntN(100)), TTL: time.Duration(1+rng.IntN(5)) * time.Second,
			Wait: time.Duration(rng.IntN(6)) * time.Second, OnError: engine.OnError(rng.IntN(2)), Limit: diffLimits[k],
			Reserve: rng.IntN(5) == 0}
		if rng.IntN(3) != 0 {
			o.RequestID = fmt.Sprint("r", rng.IntN(4))
			o.Attempt = uint64(rng.IntN(3))
		}
		if rng.IntN(4) == 0 {
			o.MaxHold = time.Duration(1+rng.IntN(4)) * time.Second
		}
		if rng.IntN(4) == 0 {
			o.LockDelay = time.Duration(rng.IntN(3)) * time.Second
		}
		if rng.IntN(20) == 0 {
			o.Limit = 4 // disagrees with every key
		}
		return func(r *replica) string {
			g, h, err := r.e.Submit(k, o)
			if h != nil {
				r.hs = append(r.hs, h)
				return "queued"
			}
			if err == nil && r == r0 {
				w.learn(g)
			}
			return showGrant(g) + " " + showErr(err)
		}
	case 4:
		tok, ok := pick(w.tokens[k])
		failed := rng.IntN(2) == 0
		return func(r *replica) string {
			if !ok {
				return ""
			}
			end, err := r.e.Release(k, tok, failed)
			return fmt.Sprint(end, showErr(err))
		}
	case 5:
		tok, ok := pick(w.tokens[k])
		ttl := time.Duration(rng.IntN(3)) * time.Second
		return func(r *replica) string {
			if !ok {
				return ""
			}
			rn, err := r.e.Renew(k, tok, ttl)
			return fmt.Sprint(rn.Fence, rn.TTL, showTime(rn.ExpiresAt), showErr(err))
		}
	case 6:
		return func(r *replica) string { end, err := r.e.ForceRelease(k); return fmt.Sprint(end, showErr(err)) }
	case 7, 8:
		d := time.Duration(rng.IntN(1500)) * time.Millisecond
		return func(r *replica) string { r.clk.Advance(d); return "" }
	case 9:
		switch rng.IntN(6) {
		case 0:
			return func(r *replica) string { return fmt.Sprint(r.e.Pause(k)) }
		case 1:
			return func(r *replica) string { return fmt.Sprint(r.e.Resume(k)) }
		case 2:
			p := []string{"k", "p/"}[rng.IntN(2)]
			return func(r *replica) string { return fmt.Sprint(r.e.PausePrefix(p)) }
		case 3:
			p := []string{"k", "p/", ""}[rng.IntN(3)]
			return func(r *replica) string { return fmt.Sprint(r.e.ResumePrefix(p)) }
		case 4:
			return func(r *replica) string { return fmt.Sprint(r.e.Drain(k, "test")) }
		default:
			return func(r *replica) string { return fmt.Sprint(r.e.DrainPrefix("k", "all")) }
		}
	case 10, 11:
		id := fmt.Sprint("r", rng.IntN(4))
		wontReturn := rng.IntN(4) == 0
		attempt := uint64(rng.IntN(3))
		return func(r *replica) string { r.e.Detach(k, id, attempt, wontReturn); return "" }
	case 12:
		var f uint64
		if fs := w.fences[k]; len(fs) > 0 {
			f = fs[rng.IntN(len(fs))]
		}
		return func(r *replica) string { r.e.Abandon(k, f); return "" }
	case 13:
		back := time.Duration(rng.IntN(3000)) * time.Millisecond
		margin := time.Duration(rng.IntN(2000)) * time.Millisecond
		return func(r *replica) string { r.e.Extend(r.clk.Now().Add(-back), margin); return "" }
	case 14:
		return func(r *replica) string { r.e.ExpireDue(); return "" }
	default:
		f := uint64(0)
		if fs := w.fences[k]; len(fs) > 0 {
			f = fs[len(fs)-1]
		}
		return func(r *replica) string {
			st := r.e.CheckFence(k, f)
			rows, next := r.e.List("", "", 10)
			return fmt.Sprint(showInfo(r.e.Inspect(k, 10)), st.Live, showTime(st.ExpiresAt), st.Current, rows, next, r.e.Stats())
		}
	}
}

// collect learns the grants of r's waiters that have been answered.
func (w *world) collect(r *replica, seen map[*engine.Waiting]bool) {
	for _, h := range r.hs {
		select {
		case <-h.Done():
			if !seen[h] {
				seen[h] = true
				if g, err := h.Result(); err == nil {
					w.learn(g)
				}
			}
		default:
		}
	}
}

func showHandles(hs []*engine.Waiting) string {
	var b strings.Builder
	for _, h := range hs {
		select {
		case <-h.Done():
			g, err := h.Result()
			fmt.Fprintf(&b, "[%s %s]", showGrant(g), showErr(err))
		default:
			b.WriteString("[waiting]")
		}
	}
	return b.String()
}

var diffStart = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)

// runDifferential plays steps random operations on replica a; at step
// forkAt it restores replica b from a's snapshot (with forkAt < 0, b is a
// second replica made like a, from the same seed, no snapshot), and from
// then on plays every operation on both, which must answer alike, emit
// the same events, resolve their waiters alike and keep the same
// snapshot bytes; both must pass Check after every step.
func runDifferential(t *testing.T, seed uint64, steps, forkAt int) {
	rng := rand.New(rand.NewPCG(seed, 13))
	chacha := [32]byte{byte(seed), byte(seed >> 8), 1}
	a := newReplica(diffStart, rand.NewChaCha8(chacha))
	var b *replica
	if forkAt < 0 {
		b = newReplica(diffStart, rand.NewChaCha8(chacha))
	}
	w := &world{tokens: map[string][]engine.Token{}, fences: map[string][]uint64{}}
	seen := map[*engine.Waiting]bool{}
	var aEvents, aHandles int // a's events and waiters before the fork
	for step := range steps {
		if step == forkAt {
			b = a.fork(t)
			aEvents, aHandles = len(a.events), len(a.hs)
		}
		op := randomOp(rng, w, a)
		got := op(a)
		w.collect(a, seen)
		if err := a.e.Check(); err != nil {
			t.Fatalf("seed %d step %d: a: %v", seed, step, err)
		}
		a.checkCounts(t, fmt.Sprintf("seed %d step %d: a", seed, step))
		if b == nil {
			continue
		}
		if other := op(b); other != got {
			t.Fatalf("seed %d step %d: answers differ:\n a: %s\n b: %s", seed, step, got, other)
		}
		if err := b.e.Check(); err != nil {
			t.Fatalf("seed %d step %d: b: %v", seed, step, err)
		}
		b.checkCounts(t, fmt.Sprintf("seed %d step %d: b", seed, step))
		if ha, hb := showHandles(a.hs[aHandles:]), showHandles(b.hs); ha != hb {
			t.Fatalf("seed %d step %d: waiters differ:\n a: %s\n b: %s", seed, step, ha, hb)
		}
		if ea, eb := strings.Join(a.events[aEvents:], "\n"), strings.Join(b.events, "\n"); ea != eb {
			t.Fatalf("seed %d step %d: events differ:\n a:\n%s\n b:\n%s", seed, step, ea, eb)
		}
		if sa, sb := a.snapshot(t), b.snapshot(t); !bytes.Equal(sa, sb) {
			t.Fatalf("seed %d step %d: snapshots differ:\n a: %s\n b: %s", seed, step, sa, sb)
		}
	}
	if b == nil {
		return
	}
	for _, r := range []*replica{a, b} {
		r.e.ResumePrefix("")
		for _, k := range diffKeys {
			r.e.Resume(k)
		}
		r.clk.Advance(time.Hour)
		if err := r.e.Check(); err != nil {
			t.Fatalf("seed %d: at the end: %v", seed, err)
		}
	}
	if sa, sb := a.snapshot(t), b.snapshot(t); !bytes.Equal(sa, sb) {
		t.Fatalf("seed %d: final snapshots differ:\n a: %s\n b: %s", seed, sa, sb)
	}
	if s := b.e.Stats(); s != (engine.Stats{Remembered: s.Remembered}) {
		t.Fatalf("seed %d: an hour later Stats() = %+v, want nothing held or waiting", seed, s)
	}
}

// TestSnapshotDifferential: a replica restored from another's snapshot at
// a random point behaves exactly as the original from then on: the same
// answers, events, waiter outcomes and snapshot bytes after every one of
// a few hundred random operations (acquires with and without waits,
// request ids, limits, max holds and lock-delays; releases ok and failed,
// renewals, force-releases, pauses, prefixes, drains, detaches, abandons,
// extends, the passing of time).
func TestSnapshotDifferential(t *testing.T) {
	seeds := *snapSeeds
	if testing.Short() {
		seeds = 30
	}
	for i := range seeds {
		seed := *snapBase + uint64(i)
		rng := rand.New(rand.NewPCG(seed, 99))
		runDifferential(t, seed, 250, rng.IntN(200))
		if t.Failed() {
			return
		}
	}
}

// TestSnapshotDeterminism: two replicas fed the same operations from the
// start answer alike and hold byte-identical states.
func TestSnapshotDeterminism(t *testing.T) {
	for seed := range uint64(30) {
		runDifferential(t, seed+1000, 250, -1)
	}
}

// TestRestoreKeepsTimerOrder: a lease awaiting its claim and a waiter
// whose wait ends at the same instant: whichever timer was armed first
// decides whether the waiter is granted (the claim ends first and hands
// the key on) or times out. A restored replica must decide alike in both
// arming orders.
func TestRestoreKeepsTimerOrder(t *testing.T) {
	for _, claimFirst := range []bool{true, false} {
		t.Run(fmt.Sprint("claim first=", claimFirst), func(t *testing.T) {
			a := newReplica(diffStart, rand.NewChaCha8([32]byte{7}))
			mustSubmit(t, a.e, "k", withID(opts("h", time.Minute, 0), "h"))
			a.clk.Advance(time.Second)
			// The detach grace is 2s: the claim ends at 3s; the waiter's
			// wait is made to end then too.
			if claimFirst {
				a.e.Detach("k", "h", 0, false)
				mustQueue(t, a.e, "k", opts("w", time.Minute, 2*time.Second))
			} else {
				mustQueue(t, a.e, "k", opts("w", time.Minute, 2*time.Second))
				a.e.Detach("k", "h", 0, false)
			}
			a.clk.Advance(time.Second)
			b := a.fork(t)
			for _, r := range []*replica{a, b} {
				r.clk.Advance(time.Second)
				if err := r.e.Check(); err != nil {
					t.Fatal(err)
				}
			}
			if got := a.e.Inspect("k", 0).Held; got != claimFirst {
				t.Fatalf("original: held %v after the claim ended, want %v", got, claimFirst)
			}
			if sa, sb := a.snapshot(t), b.snapshot(t); !bytes.Equal(sa, sb) {
				t.Fatalf("states differ:\n original %s\n restored %s", sa, sb)
			}
		})
	}
}

// TestSnapshotShardedRoundTrip: a sharded (standalone) engine's snapshot
// restores too, and the restored engine writes the same bytes.
func TestSnapshotShardedRoundTrip(t *testing.T) {
	lim := engine.Limits{RememberOutcome: time.Hour, DetachGrace: 5 * time.Second}
	e, clk, _ := newEngine(t, lim)
	for i := range 20 {
		k := fmt.Sprint("k", i%7)
		g, _, err := e.Submit(k, withID(opts(k, time.Duration(1+i%3)*time.Second, time.Duration(i%4)*time.Second), fmt.Sprint("r", i)))
		if err == nil && g.Key != "" && i%2 == 0 {
			_, _ = e.Release(k, g.Token, i%4 == 0)
		}
		if i%5 == 0 {
			e.Detach(k, fmt.Sprint("r", i-1), 0, false)
		}
		clk.Advance(300 * time.Millisecond)
	}
	e.PausePrefix("k1")
	var b1 bytes.Buffer
	if err := e.Snapshot(&b1); err != nil {
		t.Fatal(err)
	}
	e2 := engine.New(fakeclock.New(clk.Now()), nil, lim)
	if err := e2.Restore(bytes.NewReader(b1.Bytes())); err != nil {
		t.Fatal(err)
	}
	checkEngine(t, e2)
	if got, want := e2.Stats(), e.Stats(); got != want {
		t.Fatalf("restored Stats() = %+v, want %+v", got, want)
	}
	var b2 bytes.Buffer
	if err := e2.Snapshot(&b2); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b1.Bytes(), b2.Bytes()) {
		t.Fatalf("restored engine's snapshot differs:\n got %s\nwant %s", b2.Bytes(), b1.Bytes())
	}
}

func TestRestoreRefuses(t *testing.T) {
	a := newReplica(diffStart, rand.NewChaCha8([32]byte{}))
	mustSubmit(t, a.e, "k", opts("h", time.Minute, 0))
	good := a.snapshot(t)
	tests := []struct {
		name string
		in   string
	}{
		{"empty", ""},
		{"not json", "mutexd"},
		{"unknown version", `{"v":2}`},
		{"no version", `{"fence":3}`},
		{"unknown field", `{"v":1,"x":1}`},
		{"trailing data", string(good) + "{}"},
		{"keys out of order", `{"v":1,"fence":9,"keys":[{"key":"b","limit":1,"paused":true},{"key":"a","limit":1,"paused":true}]}`},
		{"idle key", `{"v":1,"keys":[{"key":"a","limit":1}]}`},
		{"limit 0", `{"v":1,"keys":[{"key":"a","limit":0,"paused":true}]}`},
		{"fence never issued", `{"v":1,"fence":1,"keys":[{"key":"a","limit":1,"leases":[{"token":"00000000000000000000000000000000","fence":2,"ttl":1,"acquired_at":1,"expires_at":2}]}]}`},
		{"bad token", `{"v":1,"fence":1,"keys":[{"key":"a","limit":1,"leases":[{"token":"zz","fence":1,"ttl":1,"acquired_at":1,"expires_at":2}]}]}`},
		{"outcome out of range", `{"v":1,"memos":[{"key":"a","prev":{"outcome":9}}]}`},
		{"waiters with a free slot", `{"v":1,"keys":[{"key":"a","limit":1,"queue":[{"ttl":1,"wait":1,"since":1}]}]}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := newReplica(diffStart, rand.NewChaCha8([32]byte{}))
			if err := b.e.Restore(strings.NewReader(tc.in)); err == nil {
				t.Fatal("Restore accepted it")
			}
			if s := b.e.Stats(); s != (engine.Stats{}) {
				t.Fatalf("after a refused Restore, Stats() = %+v, want empty", s)
			}
		})
	}
	t.Run("engine not new", func(t *testing.T) {
		if err := a.e.Restore(bytes.NewReader(good)); err == nil {
			t.Fatal("Restore into an engine with state was accepted")
		}
	})
}

// FuzzRestore: Restore never panics; what it accepts passes Check and
// writes a snapshot that restores to the same bytes.
func FuzzRestore(f *testing.F) {
	for seed := range uint64(4) {
		a := newReplica(diffStart, rand.NewChaCha8([32]byte{byte(seed)}))
		rng := rand.New(rand.NewPCG(seed, 5))
		w := &world{tokens: map[string][]engine.Token{}, fences: map[string][]uint64{}}
		for range 60 {
			randomOp(rng, w, a)(a)
		}
		var b bytes.Buffer
		if err := a.e.Snapshot(&b); err != nil {
			f.Fatal(err)
		}
		f.Add(b.Bytes())
	}
	f.Add([]byte(`{"v":1}`))
	f.Add([]byte(`{"v":1,"keys":[{"key":"a","limit":2,"paused":true,"delay_until":5,"queue":[{"ttl":1,"wait":-5,"since":1,"request_id":"x","detached":true,"order":3}]}]}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		r := newReplica(diffStart, rand.NewChaCha8([32]byte{}))
		if err := r.e.Restore(bytes.NewReader(in)); err != nil {
			if !errors.Is(err, engine.ErrBadSnapshot) {
				t.Fatalf("Restore: %v, want ErrBadSnapshot", err)
			}
			return
		}
		if err := r.e.Check(); err != nil {
			t.Fatalf("accepted %s: %v", in, err)
		}
		out := r.snapshot(t)
		r2 := newReplica(diffStart, rand.NewChaCha8([32]byte{}))
		if err := r2.e.Restore(bytes.NewReader(out)); err != nil {
			t.Fatalf("its own snapshot %s: %v", out, err)
		}
		if again := r2.snapshot(t); !bytes.Equal(again, out) {
			t.Fatalf("snapshot of the restored engine differs:\n %s\n %s", again, out)
		}
		r.clk.Advance(time.Hour) // its timers run without panicking
		if err := r.e.Check(); err != nil {
			t.Fatalf("an hour after restoring %s: %v", in, err)
		}
	})
}
