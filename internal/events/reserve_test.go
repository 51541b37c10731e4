package events_test

import (
	"errors"
	"testing"

	"github.com/mutexd/mutexd/internal/events"
)

// TestReservedPlaces: Subscribe stops short of the reserved places,
// SubscribeReserved may take them, and both stop at the limit.
func TestReservedPlaces(t *testing.T) {
	hub := events.New(3, 1, 4)
	defer hub.Close()
	mustSubscribe(t, hub, events.Filter{})
	mustSubscribe(t, hub, events.Filter{})
	if _, err := hub.Subscribe(events.Filter{}); !errors.Is(err, events.ErrTooManySubscribers) {
		t.Fatalf("third Subscribe of 3 with 1 reserved: err = %v, want ErrTooManySubscribers", err)
	}
	if _, err := hub.SubscribeReserved(events.Filter{}); err != nil {
		t.Fatalf("SubscribeReserved into the reserve: %v", err)
	}
	if _, err := hub.SubscribeReserved(events.Filter{}); !errors.Is(err, events.ErrTooManySubscribers) {
		t.Fatalf("fourth SubscribeReserved of 3: err = %v, want ErrTooManySubscribers", err)
	}
	if n := hub.Subscribers(); n != 3 {
		t.Fatalf("Subscribers() = %d, want 3", n)
	}
}
