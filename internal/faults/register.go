package faults

import (
	"fmt"
	"sync"
)

// Register is the fenced register every critical section writes to: the
// store a lock protects, reduced to the one rule the README asks of it
// (reject a write whose fence is lower than the highest seen for the key).
// A holder writes only while its lease is certainly live by its own clock,
// and the deadline is checked under the register's lock, so a rejected
// write means a lease with a higher fence was granted while this one was
// certainly live: two holders at once.
type Register struct {
	now func() int64

	mu      sync.Mutex // guards the following
	high    map[string]uint64
	writes  int
	late    int // writes not made: the lease was no longer certainly live
	rejects []Reject
}

// Reject is a write the register refused.
type Reject struct {
	Key     string
	Fence   uint64
	Highest uint64
	At      int64
}

func (r Reject) String() string {
	return fmt.Sprintf("%s: write with fence %d at %s rejected, fence %d already wrote", r.Key, r.Fence, ms(r.At), r.Highest)
}

// NewRegister returns an empty register reading time from now (a
// History's Now).
func NewRegister(now func() int64) *Register {
	return &Register{now: now, high: map[string]uint64{}}
}

// Write writes fence to key if now is before deadline (the end of the
// writer's certainly-live lease), and reports whether it was accepted.
// A write past the deadline is not made (and not a violation).
func (r *Register) Write(key string, fence uint64, deadline int64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	at := r.now()
	if at >= deadline {
		r.late++
		return false
	}
	r.writes++
	if h := r.high[key]; fence < h {
		r.rejects = append(r.rejects, Reject{Key: key, Fence: fence, Highest: h, At: at})
		return false
	}
	r.high[key] = fence
	return true
}

// Stats returns the writes made and those not made for lateness.
func (r *Register) Stats() (writes, late int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.writes, r.late
}

// Rejects returns the refused writes.
func (r *Register) Rejects() []Reject {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Reject(nil), r.rejects...)
}
