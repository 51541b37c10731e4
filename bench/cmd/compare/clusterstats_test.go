package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mutexd/mutexd/internal/loadgen"
)

func TestPercentile(t *testing.T) {
	ms := func(xs ...int) []time.Duration {
		var out []time.Duration
		for _, x := range xs {
			out = append(out, time.Duration(x)*time.Millisecond)
		}
		return out
	}
	tests := []struct {
		name string
		xs   []time.Duration
		q    float64
		want time.Duration
	}{
		{"empty", nil, 0.99, 0},
		{"one", ms(7), 0.5, 7 * time.Millisecond},
		{"median of odd, unsorted", ms(5, 1, 3), 0.5, 3 * time.Millisecond},
		{"nearest rank of even takes the lower middle", ms(4, 1, 3, 2), 0.5, 2 * time.Millisecond},
		{"p99 of five is the largest", ms(900, 1200, 800, 2500, 1000), 0.99, 2500 * time.Millisecond},
		{"p99 of 200 is the 198th", ms(seq(200)...), 0.99, 198 * time.Millisecond},
		{"p100", ms(1, 2, 3), 1, 3 * time.Millisecond},
		{"tiny q is the smallest", ms(3, 2, 1), 0.0001, time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := percentile(tt.xs, tt.q); got != tt.want {
				t.Errorf("percentile(%v, %v) = %v, want %v", tt.xs, tt.q, got, tt.want)
			}
		})
	}
}

func seq(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i + 1
	}
	return out
}

func TestCheckFIFO(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(msec int) time.Time { return t0.Add(time.Duration(msec) * time.Millisecond) }
	margin := 10 * time.Millisecond
	tests := []struct {
		name            string
		recs            []grantRecord
		overtaken, dups int
	}{
		{"empty", nil, 0, 0},
		{"in send order", []grantRecord{{0, at(0), 1}, {1, at(20), 2}, {2, at(40), 3}}, 0, 0},
		{"given out of fence order, still FIFO", []grantRecord{{2, at(40), 3}, {0, at(0), 1}, {1, at(20), 2}}, 0, 0},
		{"inversion within the margin is not measurable", []grantRecord{{0, at(5), 1}, {1, at(0), 2}}, 0, 0},
		{"a newcomer passes a waiter sent 30 ms earlier", []grantRecord{{0, at(0), 1}, {1, at(50), 2}, {2, at(20), 3}}, 1, 0},
		{"one late grant passed by many counts once per overtaken grant", []grantRecord{{0, at(100), 1}, {1, at(0), 2}, {2, at(10), 3}}, 2, 0},
		{"reused fence", []grantRecord{{0, at(0), 1}, {1, at(20), 1}}, 0, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := checkFIFO(tt.recs, margin)
			if got.Grants != len(tt.recs) || got.Overtaken != tt.overtaken || got.DuplicateFences != tt.dups || got.Margin != margin {
				t.Errorf("checkFIFO = %+v, want %d grants, %d overtaken, %d duplicate fences", got, len(tt.recs), tt.overtaken, tt.dups)
			}
			if want := tt.overtaken == 0 && tt.dups == 0; got.strict() != want {
				t.Errorf("strict() = %v, want %v", got.strict(), want)
			}
		})
	}
}

func TestMeasureOutage(t *testing.T) {
	sig := time.Unix(2000, 0)
	at := func(msec int) time.Time { return sig.Add(time.Duration(msec) * time.Millisecond) }
	tests := []struct {
		name            string
		sent, answered  []time.Time
		ok              bool
		recovery, pause time.Duration
	}{
		{"nothing after the signal", []time.Time{at(-50)}, []time.Time{at(-40)}, false, 0, 0},
		{"an answer after the signal to a request sent before it does not count",
			[]time.Time{at(-10), at(900)}, []time.Time{at(5), at(1000)}, true, time.Second, 1005 * time.Millisecond}, // the window starts 1 s before the signal
		{"steady probes before, a gap, then recovery",
			[]time.Time{at(-400), at(-200), at(-20), at(1200), at(1300)},
			[]time.Time{at(-390), at(-190), at(-10), at(1250), at(1260)},
			true, 1250 * time.Millisecond, 1260 * time.Millisecond},
		{"a gap that ended before the signal is not the pause",
			[]time.Time{at(-910), at(-310), at(-300), at(10)},
			[]time.Time{at(-900), at(-300), at(-290), at(100)},
			true, 100 * time.Millisecond, 390 * time.Millisecond},
		{"the earliest answer wins even if listed later",
			[]time.Time{at(10), at(20)}, []time.Time{at(300), at(100)}, true, 100 * time.Millisecond, 1100 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, ok := measureOutage(tt.sent, tt.answered, sig)
			if ok != tt.ok || o.Recovery != tt.recovery || o.Pause != tt.pause {
				t.Errorf("measureOutage = %+v, %v; want recovery %v, pause %v, %v", o, ok, tt.recovery, tt.pause, tt.ok)
			}
		})
	}
}

func TestSpliceSection(t *testing.T) {
	const h = "## Cluster: x"
	sec := h + "\n\nnew body\n"
	tests := []struct {
		name, doc, want string
	}{
		{"empty doc", "", sec},
		{"appended after the last section", "# B\n\n## One\n\ntext\n", "# B\n\n## One\n\ntext\n\n" + sec},
		{"replaces a middle section", "# B\n\n" + h + "\n\nold\n\n### sub\n\nold too\n\n## Next\n\nkept\n", "# B\n\n" + sec + "\n## Next\n\nkept\n"},
		{"replaces the last section", "# B\n\n" + h + "\n\nold\n", "# B\n\n" + sec},
		{"a longer heading is another section", "# B\n\n" + h + " more\n\nx\n", "# B\n\n" + h + " more\n\nx\n\n" + sec},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := spliceSection(tt.doc, h, sec)
			if got != tt.want {
				t.Errorf("spliceSection =\n%q\nwant\n%q", got, tt.want)
			}
			if ex := extractSection(got, h); ex != sec {
				t.Errorf("extractSection after splice = %q, want %q", ex, sec)
			}
			if again := spliceSection(got, h, sec); again != got {
				t.Errorf("splicing twice changed the document:\n%q\nthen\n%q", got, again)
			}
		})
	}
	if ex := extractSection("# B\n\n## Other\n", h); ex != "" {
		t.Errorf("extractSection of a doc without it = %q, want empty", ex)
	}
}

// fakeTarget grants every acquire with the next fence.
type fakeTarget struct{ fence *uint64 }

func (f fakeTarget) Name() string { return "fake" }
func (f fakeTarget) Open(context.Context, int) (loadgen.Session, error) {
	return fakeSession(f), nil
}

type fakeSession struct{ fence *uint64 }

func (s fakeSession) Acquire(_ context.Context, key string, _, _ time.Duration) (loadgen.Lease, error) {
	*s.fence++
	return loadgen.Lease{Key: key, Fence: *s.fence}, nil
}
func (fakeSession) Release(context.Context, loadgen.Lease) error { return nil }
func (fakeSession) Close() error                                 { return nil }

func TestRecordingTarget(t *testing.T) {
	var fence uint64
	rec := &recordingTarget{Target: fakeTarget{&fence}}
	var sessions []loadgen.Session
	for id := range 3 {
		s, err := rec.Open(t.Context(), id)
		if err != nil {
			t.Fatal(err)
		}
		sessions = append(sessions, s)
	}
	for round := range 2 {
		for _, s := range sessions {
			if _, err := s.Acquire(t.Context(), "k", time.Second, time.Second); err != nil {
				t.Fatalf("round %d: %v", round, err)
			}
		}
	}
	got := rec.grants()
	if len(got) != 6 {
		t.Fatalf("recorded %d grants, want 6", len(got))
	}
	seen := map[uint64]int{}
	for _, g := range got {
		seen[g.Fence] = g.Client
		if g.Sent.IsZero() {
			t.Errorf("grant %+v has no send time", g)
		}
	}
	for f := uint64(1); f <= 6; f++ {
		if c, ok := seen[f]; !ok || c != int(f-1)%3 {
			t.Errorf("fence %d: client %d (recorded %v), want client %d", f, c, ok, (f-1)%3)
		}
	}
	if r := checkFIFO(got, 0); !r.strict() {
		t.Errorf("round-robin grants in send order: %+v, want strict FIFO", r)
	}
}

func TestSpreadTarget(t *testing.T) {
	var a, b uint64
	tg := spreadTarget{label: "x", members: []loadgen.Target{fakeTarget{&a}, fakeTarget{&b}}}
	for id := range 5 {
		s, err := tg.Open(t.Context(), id)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Acquire(t.Context(), "k", time.Second, 0); err != nil {
			t.Fatal(err)
		}
	}
	if a != 3 || b != 2 {
		t.Errorf("clients 0..4 on two members: %d and %d acquires, want 3 and 2", a, b)
	}
}

func TestMutexdClusterConfig(t *testing.T) {
	got := mutexdClusterConfig(1, "/data/n2", []int{7070, 7080, 7090}, []int{7171, 7172, 7173})
	for _, want := range []string{
		"listen: 127.0.0.1:7080\n",
		"  node_id: n2\n",
		"  raft_listen: 127.0.0.1:7172\n",
		"  data_dir: \"/data/n2\"\n",
		"    - {id: n1, raft: \"127.0.0.1:7171\", api: \"http://127.0.0.1:7070\"}\n",
		"    - {id: n3, raft: \"127.0.0.1:7173\", api: \"http://127.0.0.1:7090\"}\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("config lacks %q:\n%s", want, got)
		}
	}
}

func TestWriteKeepingCluster(t *testing.T) {
	path := filepath.Join(t.TempDir(), "BENCHMARKS.md")
	cluster := clusterHeading + "\n\nmeasured by -systems cluster\n"
	if err := writeKeepingCluster(path, "# Benchmarks\n\n## Targets\n\nfirst\n"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(spliceSection(mustRead(t, path), clusterHeading, cluster)), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := writeKeepingCluster(path, "# Benchmarks\n\n## Targets\n\nsecond\n"); err != nil {
		t.Fatal(err)
	}
	got := mustRead(t, path)
	if want := "# Benchmarks\n\n## Targets\n\nsecond\n\n" + cluster; got != want {
		t.Errorf("after a standalone run:\n%q\nwant\n%q", got, want)
	}
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
