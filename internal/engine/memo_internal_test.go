package engine

import (
	"fmt"
	"runtime"
	"testing"
	"time"
)

// sameShardKeys returns n keys that hash to the shard of "k0".
func sameShardKeys(e *Engine, n int) []string {
	sh := e.shardFor("k0")
	var keys []string
	for i := 0; len(keys) < n; i++ {
		if k := fmt.Sprint("k", i); e.shardFor(k) == sh {
			keys = append(keys, k)
		}
	}
	return keys
}

// TestRememberedRecordsEvictOldestFirst: a shard keeps at most its share
// of MaxRemembered records and evicts the oldest; request ids and key
// outcomes share the cap.
func TestRememberedRecordsEvictOldestFirst(t *testing.T) {
	clk := &stillClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	e := New(clk, nil, Limits{RememberOutcome: time.Hour, MaxRemembered: 2 * numShards})
	keys := sameShardKeys(e, 3)
	var fences []uint64
	for _, k := range keys {
		g, err := e.Acquire(t.Context(), k, AcquireOptions{TTL: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		fences = append(fences, g.Fence)
		if _, err := e.Release(k, g.Token, false); err != nil {
			t.Fatal(err)
		}
		clk.set(clk.Now().Add(time.Second))
	}
	if got := e.Stats().Remembered; got != 2 {
		t.Fatalf("Stats().Remembered = %d, want the cap 2", got)
	}
	if last := e.Inspect(keys[0], 0).Last; last.Outcome != OutcomeNone {
		t.Fatalf("oldest key still remembered: %+v", last)
	}
	for i, k := range keys[1:] {
		if last := e.Inspect(k, 0).Last; last.Fence != fences[i+1] {
			t.Fatalf("Inspect(%s).Last = %+v, want fence %d", k, last, fences[i+1])
		}
	}
	// An ended request id takes a slot too, evicting the oldest outcome.
	g, err := e.Acquire(t.Context(), keys[0], AcquireOptions{TTL: time.Minute, RequestID: "r"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Release(keys[0], g.Token, false); err != nil {
		t.Fatal(err)
	}
	if err := e.Check(); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Acquire(t.Context(), keys[0], AcquireOptions{TTL: time.Minute, RequestID: "r"}); err == nil {
		t.Fatal("re-sent id after its lease ended was granted again; want LeaseEndedError")
	}
	if last := e.Inspect(keys[1], 0).Last; last.Outcome != OutcomeNone {
		t.Fatalf("key %s should have been evicted by newer records: %+v", keys[1], last)
	}
}

// BenchmarkRememberedMemory reports the heap per remembered key outcome
// (16-byte keys, the record kept after the key went idle).
func BenchmarkRememberedMemory(b *testing.B) {
	n := max(b.N, 10_000)
	e := New(SystemClock{}, nil, Limits{RememberOutcome: time.Hour, MaxRemembered: 10 * n})
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("bench:%010d", i)
	}
	var before, after runtimeMem
	before.read()
	b.ResetTimer()
	for _, k := range keys {
		g, err := e.Acquire(b.Context(), k, AcquireOptions{TTL: time.Hour})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := e.Release(k, g.Token, false); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	after.read()
	if got := e.Stats().Remembered; got != n {
		b.Fatalf("remembered %d, want %d", got, n)
	}
	b.ReportMetric(float64(after.heap-before.heap)/float64(n), "bytes/record")
	keepAlive(keys, e)
}

type runtimeMem struct{ heap uint64 }

func (m *runtimeMem) read() {
	runtime.GC()
	var s runtime.MemStats
	runtime.ReadMemStats(&s)
	m.heap = s.HeapAlloc
}

func keepAlive(xs ...any) { runtime.KeepAlive(xs) }
