package server

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mutexd/mutexd/internal/engine"
)

// leaseLog logs one line per lease that ends in failure or expiry (and per
// force-release). The engine calls OnEvent with a shard locked, so lines
// are queued and written by one goroutine; when the queue is full (an
// expiry storm) lines are dropped and counted rather than slowing grants.
type leaseLog struct {
	log     *slog.Logger
	ch      chan leaseEnd
	done    chan struct{}
	dropped atomic.Int64
	once    sync.Once
}

const leaseLogQueue = 4096

// leaseEnd is what a log line needs of an engine.Event. The queue holds
// these rather than whole events: the queue is live heap that every
// garbage collection scans, and whole events made it a third of the idle
// daemon's heap.
type leaseEnd struct {
	key, owner string
	fence      uint64
	held       time.Duration
	outcome    engine.Outcome // OutcomeNone: no line, only the drop report
	onError    engine.OnError
}

func newLeaseLog(log *slog.Logger) *leaseLog {
	return &leaseLog{log: log, ch: make(chan leaseEnd, leaseLogQueue), done: make(chan struct{})}
}

// OnEvent queues the events worth a log line.
func (l *leaseLog) OnEvent(ev engine.Event) {
	if ev.Type != engine.EventEnded || ev.Outcome == engine.OutcomeReleased {
		return
	}
	select {
	case l.ch <- leaseEnd{key: ev.Key, owner: ev.Owner, fence: ev.Fence, held: ev.Held, outcome: ev.Outcome, onError: ev.OnError}:
	default:
		l.dropped.Add(1)
	}
}

// start runs the writer until stop is called. ch is never closed, since
// the engine may still report a release after shutdown; the writer drains
// what is queued when stopped.
func (l *leaseLog) start(wg *sync.WaitGroup) {
	wg.Go(func() {
		for {
			select {
			case ev := <-l.ch:
				l.write(ev)
			case <-l.done:
				for {
					select {
					case ev := <-l.ch:
						l.write(ev)
					default:
						l.write(leaseEnd{}) // reports drops, if any
						return
					}
				}
			}
		}
	})
}

// stop ends the writer once it has written what is queued.
func (l *leaseLog) stop() { l.once.Do(func() { close(l.done) }) }

func (l *leaseLog) write(ev leaseEnd) {
	if n := l.dropped.Swap(0); n > 0 {
		l.log.Warn("lease-end log lines dropped under load", "dropped", n)
	}
	if ev.outcome == engine.OutcomeNone {
		return
	}
	level := slog.LevelWarn
	msg := "lease expired"
	switch ev.outcome {
	case engine.OutcomeFailed:
		msg = "lease released as failed"
	case engine.OutcomeForced:
		msg, level = "lease force-released", slog.LevelInfo
	}
	l.log.Log(context.Background(), level, msg, "key", ev.key, "owner", ev.owner, "fence", ev.fence,
		"held_ms", ev.held.Milliseconds(), "on_error", ev.onError.String())
}
