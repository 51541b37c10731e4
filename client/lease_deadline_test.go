package client

import (
	"errors"
	"testing"
	"time"
)

// TestNewLeasePastDeadline: a grant that arrives after its local deadline
// arms a timer that fires at once; under -race this caught newLease
// writing l.timer while the timer's checkDeadline read it.
func TestNewLeasePastDeadline(t *testing.T) {
	c, err := New("http://127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	for range 200 {
		// ttl 1ms: the deadline minus the safety margin has passed already.
		l := newLease(c, grantJSON{Key: "k", Token: "t", TTLMS: 1}, time.Now().Add(-time.Second))
		<-l.Lost()
		if err := l.Err(); !errors.Is(err, ErrLeaseLost) {
			t.Fatalf("Err() = %v, want ErrLeaseLost", err)
		}
	}
}
