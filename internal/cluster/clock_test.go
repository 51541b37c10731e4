package cluster

import (
	"testing"
	"time"
)

func TestLogClockFiresInDeadlineThenArmingOrder(t *testing.T) {
	c := newLogClock()
	t0 := time.Unix(1000, 0)
	c.set(t0)
	var got []string
	var expired []time.Time
	c.expireDue = func() { expired = append(expired, c.now) } // called with c.mu released
	c.AfterFunc(2*time.Second, func() { got = append(got, "b") })
	c.AfterFunc(time.Second, func() { got = append(got, "a1") })
	c.AfterFunc(time.Second, func() { got = append(got, "a2") })
	stopped := c.AfterFunc(time.Second, func() { got = append(got, "stopped") })
	if !stopped.Stop() || stopped.Stop() {
		t.Fatal("Stop of an armed timer = false, or of a stopped one = true")
	}
	reset := c.AfterFunc(500*time.Millisecond, func() { got = append(got, "reset") })
	reset.Reset(time.Second) // armed again after a1 and a2: fires after them
	if d, ok := c.next(); !ok || !d.Equal(t0.Add(time.Second)) {
		t.Fatalf("next() = %v, %v; want %v", d, ok, t0.Add(time.Second))
	}
	c.advance(t0.Add(1500 * time.Millisecond))
	if want := []string{"a1", "a2", "reset"}; !equal(got, want) {
		t.Fatalf("fired %v, want %v", got, want)
	}
	if len(expired) != 3 || !expired[0].Equal(t0.Add(time.Second)) {
		t.Fatalf("expireDue ran at %v, want before each timer at its deadline", expired)
	}
	if now := c.Now(); !now.Equal(t0.Add(1500 * time.Millisecond)) {
		t.Fatalf("Now() = %v after advance", now)
	}
	c.advance(t0) // never backwards
	if now := c.Now(); !now.Equal(t0.Add(1500 * time.Millisecond)) {
		t.Fatalf("advance moved the clock back to %v", now)
	}
	c.advance(t0.Add(time.Hour))
	if want := []string{"a1", "a2", "reset", "b"}; !equal(got, want) {
		t.Fatalf("fired %v, want %v", got, want)
	}
}

func TestLogClockSignalsAnEarlierDeadline(t *testing.T) {
	c := newLogClock()
	c.AfterFunc(time.Hour, func() {})
	<-c.changed // the first timer is the earliest
	c.AfterFunc(2*time.Hour, func() {})
	select {
	case <-c.changed:
		t.Fatal("a later timer signalled a change")
	default:
	}
	c.AfterFunc(time.Minute, func() {})
	select {
	case <-c.changed:
	default:
		t.Fatal("an earlier timer did not signal")
	}
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
