package events

import (
	"time"

	"github.com/mutexd/mutexd/internal/engine"
)

// History bounds: what the hub remembers of past events, so that a console
// opened after an incident can show it (see Subscription.Replay), and its
// worst-case memory: (HistoryRecent + HistoryKeys*HistoryPerKey) items of
// about 160 bytes, about 2.8 MB, plus the key and owner strings they keep
// alive, each at most a key's and an owner's size.
const (
	// HistoryRecent is how many of the latest events, of any key, the hub
	// keeps: the history of a stream of every key or of a prefix.
	HistoryRecent = 1024
	// HistoryPerKey is how many of a key's latest events the hub keeps, so
	// that a busy server does not push a quiet key's incident out of its
	// history within seconds.
	HistoryPerKey = 16
	// HistoryKeys is how many keys' histories the hub keeps: the keys with
	// the most recent events; the one whose last event is the oldest gives
	// its place up to a new key.
	HistoryKeys = 1024
)

// historic reports whether the history keeps ev. A queued or renewed event
// is left out: a long queue or a holder renewing every few seconds would
// repeat them until they pushed the grants, expiries and force-releases an
// operator looks for out of a key's history.
func historic(ev *engine.Event) bool {
	return ev.Type != engine.EventQueued && ev.Type != engine.EventRenewed
}

// ring is a fixed number of the latest items of a sequence, oldest first.
type ring struct {
	items []Item
	next  int // where the next item goes
	full  bool
}

func (r *ring) add(it Item) {
	r.items[r.next] = it
	r.next++
	if r.next == len(r.items) {
		r.next, r.full = 0, true
	}
}

// each calls fn with the items, oldest first, until fn returns false.
func (r *ring) each(fn func(*Item) bool) {
	if r.full {
		for i := r.next; i < len(r.items); i++ {
			if !fn(&r.items[i]) {
				return
			}
		}
	}
	for i := 0; i < r.next; i++ {
		if !fn(&r.items[i]) {
			return
		}
	}
}

// keyHistory is one key's latest events, in a list of keys ordered by
// their latest event (most recent first).
type keyHistory struct {
	key        string
	ring       ring
	slots      [HistoryPerKey]Item
	prev, next *keyHistory
}

// history is the hub's memory of past events. The hub's mutex guards it.
type history struct {
	recent     ring
	recentBuf  [HistoryRecent]Item
	keys       map[string]*keyHistory
	head, tail *keyHistory // most and least recently active
}

func (h *history) init() {
	h.recent.items = h.recentBuf[:]
	h.keys = make(map[string]*keyHistory)
}

// add remembers it.
func (h *history) add(it Item) {
	h.recent.add(it)
	if h.head != nil && h.head.key == it.Event.Key { // a burst on one key: no lookup
		h.head.ring.add(it)
		return
	}
	k := h.keys[it.Event.Key]
	switch {
	case k == nil && len(h.keys) < HistoryKeys:
		k = &keyHistory{key: it.Event.Key}
		k.ring.items = k.slots[:]
		h.keys[k.key] = k
	case k == nil: // the least recently active key gives its place up
		k = h.tail
		h.unlink(k)
		delete(h.keys, k.key)
		*k = keyHistory{key: it.Event.Key}
		k.ring.items = k.slots[:]
		h.keys[k.key] = k
	default:
		h.unlink(k)
	}
	k.next = h.head
	if h.head != nil {
		h.head.prev = k
	}
	h.head = k
	if h.tail == nil {
		h.tail = k
	}
	k.ring.add(it)
}

func (h *history) unlink(k *keyHistory) {
	if k.prev != nil {
		k.prev.next = k.next
	} else {
		h.head = k.next
	}
	if k.next != nil {
		k.next.prev = k.prev
	} else {
		h.tail = k.prev
	}
	k.prev, k.next = nil, nil
}

// replay returns the remembered events f selects with after < ID <= upto,
// oldest first.
func (h *history) replay(f Filter, after, upto uint64) []Item {
	var out []Item
	pick := func(it *Item) bool {
		if it.ID > after && it.ID <= upto && f.match(it.Event.Key) {
			out = append(out, *it)
		}
		return true
	}
	if f.Key != "" {
		if k := h.keys[f.Key]; k != nil {
			k.ring.each(pick)
		}
	} else {
		h.recent.each(pick)
	}
	return out
}

// Counts are how many events of each kind a hub has seen.
type Counts struct {
	Granted   uint64
	Released  uint64 // ended with outcome released
	Failed    uint64 // ended with outcome failed
	Expired   uint64
	Forced    uint64
	Timeout   uint64
	Aborted   uint64
	Cancelled uint64
	Queued    uint64
	Renewed   uint64
}

// add counts ev.
func (c *Counts) add(ev *engine.Event) {
	switch ev.Type {
	case engine.EventGranted:
		c.Granted++
	case engine.EventEnded:
		switch ev.Outcome {
		case engine.OutcomeFailed:
			c.Failed++
		case engine.OutcomeExpired:
			c.Expired++
		case engine.OutcomeForced:
			c.Forced++
		default:
			c.Released++
		}
	case engine.EventTimeout:
		c.Timeout++
	case engine.EventAborted:
		c.Aborted++
	case engine.EventCancelled:
		c.Cancelled++
	case engine.EventQueued:
		c.Queued++
	case engine.EventRenewed:
		c.Renewed++
	}
}

func (c *Counts) plus(o *Counts) {
	c.Granted += o.Granted
	c.Released += o.Released
	c.Failed += o.Failed
	c.Expired += o.Expired
	c.Forced += o.Forced
	c.Timeout += o.Timeout
	c.Aborted += o.Aborted
	c.Cancelled += o.Cancelled
	c.Queued += o.Queued
	c.Renewed += o.Renewed
}

// Window is the span Stats.LastMinute covers.
const Window = time.Minute

// second is the events counted in one second of event time.
type second struct {
	unix int64
	n    Counts
}

// counters are the hub's totals and the last Window's counts, one slot per
// second of the events' own times (the engine's clock), so counting needs
// no clock of its own. The hub's mutex guards them.
type counters struct {
	total   Counts
	seconds [int(Window / time.Second)]second
}

func (c *counters) add(ev *engine.Event) {
	c.total.add(ev)
	u := ev.Time.Unix()
	s := &c.seconds[uint64(u)%uint64(len(c.seconds))]
	if s.unix != u {
		*s = second{unix: u}
	}
	s.n.add(ev)
}

// lastWindow sums the seconds in (now-Window, now].
func (c *counters) lastWindow(now time.Time) Counts {
	var out Counts
	u := now.Unix()
	for i := range c.seconds {
		s := &c.seconds[i]
		if s.unix > u-int64(len(c.seconds)) && s.unix <= u {
			out.plus(&s.n)
		}
	}
	return out
}

// Stats are a hub's counts of the events it has seen.
type Stats struct {
	// Since is when the hub began counting (the daemon's start).
	Since time.Time
	// Total counts every event since Since.
	Total Counts
	// LastMinute counts the events of the last Window before the time
	// Stats was asked for (fewer if Since is more recent).
	LastMinute Counts
	// LastID is the ID of the latest event.
	LastID uint64
}

// Stats returns the hub's counts as of now.
func (h *Hub) Stats(now time.Time) Stats {
	h.mu.Lock()
	defer h.mu.Unlock()
	return Stats{Since: h.since, Total: h.counts.total, LastMinute: h.counts.lastWindow(now), LastID: h.seq}
}

// Replay returns the events the hub remembers that the subscription's
// filter selects, with an ID after after and published before the
// subscription began, oldest first: for a filter by key, up to
// HistoryPerKey of the key's latest; otherwise those among the latest
// HistoryRecent of every key. With the events received on Events, they make
// an ordered stream without repeats. What the hub has forgotten is not
// replayed, and neither are queued and renewed events (see historic):
// replay is history to show, not a log to rebuild state from.
func (s *Subscription) Replay(after uint64) []Item {
	h := s.hub
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.history.replay(s.filter, after, s.start)
}

// Start returns the ID of the latest event published before the
// subscription began: the first event on Events has a greater one, and
// Replay returns none greater.
func (s *Subscription) Start() uint64 { return s.start }
