package engine

import "time"

// EventType names an engine transition.
type EventType uint8

const (
	// EventQueued: a waiter joined a key's queue at Position (1 = next).
	EventQueued EventType = iota + 1
	// EventGranted: a lease was granted; FromQueue says whether it waited.
	EventGranted
	// EventEnded: a lease ended with Outcome after Held.
	EventEnded
	// EventTimeout: a waiter's wait passed without a grant.
	EventTimeout
	// EventAborted: a waiter was aborted by a failed OnErrorStop holder.
	EventAborted
	// EventCancelled: a waiter gave up (its context ended) or the engine closed.
	EventCancelled
	// EventRenewed: a live lease was renewed until ExpiresAt.
	EventRenewed
	// EventSuperseded: a waiter's place was taken over by a later acquire
	// with the same RequestID (the queue's length does not change).
	EventSuperseded
	// EventDrained: an operator drained the queue; the waiter left with
	// Reason.
	EventDrained
	// EventPaused: an operator paused the key; no grants until resumed.
	EventPaused
	// EventResumed: an operator resumed the key.
	EventResumed
	// EventDelayed: a lease with a lock-delay ended by expiry or
	// force-release; nobody is granted the key before ExpiresAt.
	EventDelayed
)

var eventNames = [...]string{"", "queued", "granted", "ended", "timeout", "aborted", "cancelled", "renewed",
	"superseded", "drained", "paused", "resumed", "delayed"}

// String returns the event type's name.
func (t EventType) String() string { return eventNames[t] }

// Event is one engine transition. Events of one key are delivered in the
// order of its transitions. It never carries a token.
type Event struct {
	Type  EventType
	Key   string
	Owner string
	// Fence is the lease's fence for EventGranted, EventEnded and EventRenewed.
	Fence uint64
	Time  time.Time
	// Waited is the time since arrival for grants and ended waits.
	Waited time.Duration
	// ExpiresAt is the lease's deadline for EventGranted and EventRenewed,
	// and the end of the lock-delay for EventDelayed.
	ExpiresAt time.Time
	// Held is the lease's hold time for EventEnded.
	Held time.Duration
	// Outcome is how the lease ended, for EventEnded.
	Outcome Outcome
	// OnError is the holder's strategy, for EventGranted and EventEnded.
	OnError OnError
	// Position is the waiter's place in the queue for EventQueued.
	Position int
	// FromQueue is true for a grant to a waiter that had been queued.
	FromQueue bool
	// Previous is the lease that ended just before this grant.
	Previous Previous
	// Reason is the operator's reason, for EventDrained.
	Reason string
}

// Observer receives every engine transition. OnEvent is called with the
// key's shard locked, so it must be fast, must not block, and must not call
// back into the engine.
type Observer interface {
	OnEvent(Event)
}

// Observers fans events out to several observers in order.
type Observers []Observer

// OnEvent calls every observer.
func (os Observers) OnEvent(ev Event) {
	for _, o := range os {
		o.OnEvent(ev)
	}
}

type nopObserver struct{}

func (nopObserver) OnEvent(Event) {}
