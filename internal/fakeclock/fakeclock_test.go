package fakeclock

import (
	"fmt"
	"testing"
	"time"
)

// TestBeforeDeadlineAndSeq: timers with one deadline fire in arming order
// (their Seq), after the BeforeDeadline hook has run once at that
// deadline with the clock reading it.
func TestBeforeDeadlineAndSeq(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	c := New(start)
	var got []string
	c.BeforeDeadline(func() { got = append(got, fmt.Sprint("hook@", c.Now().Sub(start))) })
	b := c.AfterFunc(2*time.Second, func() { got = append(got, "b") })
	a := c.AfterFunc(time.Second, func() { got = append(got, "a") })
	c.AfterFunc(2*time.Second, func() { got = append(got, "c") })
	if b.(*timer).Seq() >= a.(*timer).Seq() {
		t.Fatalf("Seq %d then %d, want increasing in arming order", b.(*timer).Seq(), a.(*timer).Seq())
	}
	c.Advance(3 * time.Second)
	if want := "[hook@1s a hook@2s b c]"; fmt.Sprint(got) != want {
		t.Fatalf("ran %v, want %s", got, want)
	}
}
