// Package events fans the lock engine's transitions out to live
// subscribers (the /v1/events stream and the console), counts them (the
// totals and last minute of GET /v1/stats), and remembers a bounded history
// of them that a new subscriber can replay (a console opened after an
// incident). It is an engine.Observer that costs the engine one short
// critical section per transition, and never makes the engine wait for a
// subscriber: each has a bounded buffer, and one that falls behind is cut
// off.
package events

import (
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mutexd/mutexd/internal/engine"
)

// Errors returned by Subscribe.
var (
	// ErrTooManySubscribers means the hub already has its maximum number of
	// subscribers.
	ErrTooManySubscribers = errors.New("too many event subscribers")
	// ErrClosed means the hub is closed (the daemon is shutting down).
	ErrClosed = errors.New("event hub is closed")
)

// Item is one event as a subscriber receives it.
type Item struct {
	// ID increases strictly with every event the hub publishes, whether
	// anyone subscribes or not; a subscriber sees its events in increasing
	// ID order (with gaps where its filter skips events).
	ID    uint64
	Event engine.Event
}

// Filter selects events by key. The zero Filter selects every event.
type Filter struct {
	// Key, when set, selects only events of exactly this key.
	Key string
	// Prefix selects only events of keys that start with it.
	Prefix string
}

func (f Filter) match(key string) bool {
	return (f.Key == "" || key == f.Key) && strings.HasPrefix(key, f.Prefix)
}

// Hub is the fan-out. Create it with New; it is safe for concurrent use.
type Hub struct {
	max      int
	reserved int // the last of max that only SubscribeReserved takes
	buffer   int
	n        atomic.Int32  // len(subs), read without the lock
	cut      atomic.Uint64 // subscribers cut off for falling behind

	since   time.Time
	mu      sync.Mutex // guards the following; serialises publishing, so IDs are in channel order
	seq     uint64     // the ID of the latest event
	subs    map[*Subscription]struct{}
	closed  bool
	counts  counters
	history history
}

var _ engine.Observer = (*Hub)(nil)

// New returns a hub that admits at most max subscribers, each with a buffer
// of buffer events. The last reserved of the max places go only to
// SubscribeReserved.
func New(max, reserved, buffer int) *Hub {
	h := &Hub{max: max, reserved: reserved, buffer: buffer, since: time.Now(), subs: make(map[*Subscription]struct{})}
	h.history.init()
	return h
}

// Subscription is one subscriber's feed. Read Events until it is closed,
// then check Overflowed; call Close when done.
type Subscription struct {
	hub    *Hub
	filter Filter
	start  uint64 // the ID of the latest event before it began
	ch     chan Item
	// overflowed is written under hub.mu before ch is closed, so a reader
	// that saw ch closed reads it safely.
	overflowed bool
}

// Subscribe adds a subscriber for the events f selects. It fails with
// ErrTooManySubscribers when all places but the reserved ones are taken,
// and ErrClosed after Close.
func (h *Hub) Subscribe(f Filter) (*Subscription, error) {
	return h.subscribe(f, h.max-h.reserved)
}

// SubscribeReserved is Subscribe for a subscriber that may take the
// reserved places too (the API lets admin tokens, so that clients holding
// every other place do not lock the console out).
func (h *Hub) SubscribeReserved(f Filter) (*Subscription, error) {
	return h.subscribe(f, h.max)
}

func (h *Hub) subscribe(f Filter, max int) (*Subscription, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, ErrClosed
	}
	if len(h.subs) >= max {
		return nil, ErrTooManySubscribers
	}
	s := &Subscription{hub: h, filter: f, start: h.seq, ch: make(chan Item, h.buffer)}
	h.subs[s] = struct{}{}
	h.n.Store(int32(len(h.subs)))
	return s, nil
}

// Subscribers returns the number of subscribers.
func (h *Hub) Subscribers() int { return int(h.n.Load()) }

// Overflows returns how many subscribers were cut off so far because they
// fell a whole buffer behind.
func (h *Hub) Overflows() uint64 { return h.cut.Load() }

// Events delivers the subscription's events in order. It is closed when
// the subscriber fell behind (Overflowed reports true), when the hub
// closes, or after Close.
func (s *Subscription) Events() <-chan Item { return s.ch }

// Overflowed reports whether the subscription was cut off because its
// buffer was full: events after the last one delivered were lost. Call it
// after Events is closed.
func (s *Subscription) Overflowed() bool {
	s.hub.mu.Lock()
	defer s.hub.mu.Unlock()
	return s.overflowed
}

// Close ends the subscription. It is safe to call more than once.
func (s *Subscription) Close() {
	h := s.hub
	h.mu.Lock()
	defer h.mu.Unlock()
	h.dropLocked(s)
}

func (h *Hub) dropLocked(s *Subscription) {
	if _, ok := h.subs[s]; !ok {
		return
	}
	delete(h.subs, s)
	close(s.ch)
	h.n.Store(int32(len(h.subs)))
}

// OnEvent counts ev, remembers it (see historic) and publishes it to every
// subscriber whose filter selects it. The engine calls it with a shard
// locked: it never blocks. A subscriber whose buffer is full is cut off
// (its Events channel closes after what it has buffered) instead of
// delaying the engine or anyone else.
func (h *Hub) OnEvent(ev engine.Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.seq++
	it := Item{ID: h.seq, Event: ev}
	h.counts.add(&it.Event)
	if historic(&it.Event) {
		h.history.add(it)
	}
	if len(h.subs) == 0 {
		return
	}
	for s := range h.subs {
		if !s.filter.match(ev.Key) {
			continue
		}
		select {
		case s.ch <- it:
		default:
			s.overflowed = true
			h.cut.Add(1)
			h.dropLocked(s)
		}
	}
}

// Close ends every subscription and refuses new ones, so open streams end
// and a graceful HTTP shutdown is not held up by them.
func (h *Hub) Close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	for s := range h.subs {
		h.dropLocked(s)
	}
}
