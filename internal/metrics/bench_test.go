package metrics_test

import (
	"strconv"
	"testing"
	"time"

	"github.com/mutexd/mutexd/internal/engine"
)

// BenchmarkOnEvent is the observer's cost of one uncontended cycle as the
// engine reports it: an immediate grant and its release, in a namespace
// that already has its label.
func BenchmarkOnEvent(b *testing.B) {
	m := newMetrics(50)
	granted := engine.Event{Type: engine.EventGranted, Key: "user:1"}
	ended := engine.Event{Type: engine.EventEnded, Key: "user:1", Outcome: engine.OutcomeReleased, Held: time.Millisecond}
	b.ReportAllocs()
	for b.Loop() {
		m.OnEvent(granted)
		m.OnEvent(ended)
	}
}

// BenchmarkOnEventQueued is a contended cycle: a waiter queues, the holder
// ends, the waiter is granted from the queue, and its lease ends.
func BenchmarkOnEventQueued(b *testing.B) {
	m := newMetrics(50)
	evs := []engine.Event{
		{Type: engine.EventQueued, Key: "job:7"},
		{Type: engine.EventGranted, Key: "job:7", FromQueue: true, Waited: time.Millisecond},
		{Type: engine.EventEnded, Key: "job:7", Outcome: engine.OutcomeReleased, Held: time.Millisecond},
	}
	m.OnEvent(engine.Event{Type: engine.EventGranted, Key: "job:7"})
	b.ReportAllocs()
	for b.Loop() {
		for i := range evs {
			m.OnEvent(evs[i])
		}
	}
}

// BenchmarkOnEventParallel runs the uncontended cycle from every P over
// 16 namespaces, as a busy daemon's shards would.
func BenchmarkOnEventParallel(b *testing.B) {
	m := newMetrics(50)
	var keys [16]string
	for i := range keys {
		keys[i] = "ns" + strconv.Itoa(i) + ":k"
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			k := keys[i%len(keys)]
			i++
			m.OnEvent(engine.Event{Type: engine.EventGranted, Key: k})
			m.OnEvent(engine.Event{Type: engine.EventEnded, Key: k, Outcome: engine.OutcomeReleased, Held: time.Millisecond})
		}
	})
}
