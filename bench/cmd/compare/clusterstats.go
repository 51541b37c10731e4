package main

import (
	"context"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/mutexd/mutexd/internal/loadgen"
)

// percentile returns the nearest-rank q-quantile (0 < q ≤ 1) of xs: the
// smallest value with at least q·n of the values at or below it. With
// five samples the p99 is the largest, which is what the report says.
func percentile(xs []time.Duration, q float64) time.Duration {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	rank := int(math.Ceil(q*float64(len(s)))) - 1
	return s[min(max(rank, 0), len(s)-1)]
}

// grantRecord is one granted acquire as a client saw it.
type grantRecord struct {
	Client int
	Sent   time.Time // the acquire request left the client
	Fence  uint64    // the server's fencing token: increases with every grant of the key
}

// fifoResult is the outcome of checkFIFO.
type fifoResult struct {
	Grants int
	// Overtaken counts grants that came after a grant whose request was
	// sent more than the margin later: a waiter passed by a newcomer.
	Overtaken int
	// DuplicateFences counts grants whose fence an earlier grant had.
	DuplicateFences int
	// Margin is how much earlier a request must have been sent to count
	// as ahead: the client sees when it sent, not when the server queued.
	Margin time.Duration
}

// strict reports whether the history shows no overtaking and no reused fence.
func (f fifoResult) strict() bool { return f.Overtaken == 0 && f.DuplicateFences == 0 }

// checkFIFO checks the grants of one key for FIFO order where the history
// can show it. The fences give the order of the grants; two requests are
// known to be ordered only if one was sent more than margin before the
// other (the client does not see when the server enqueued it, and in a
// cluster a request through a follower reaches the leader's queue later
// than one sent to the leader at the same moment). A grant is overtaken if
// an earlier grant's request was sent more than margin after its own.
func checkFIFO(recs []grantRecord, margin time.Duration) fifoResult {
	s := slices.Clone(recs)
	slices.SortStableFunc(s, func(a, b grantRecord) int {
		switch {
		case a.Fence < b.Fence:
			return -1
		case a.Fence > b.Fence:
			return 1
		}
		return 0
	})
	res := fifoResult{Grants: len(s), Margin: margin}
	var latest time.Time // the latest send among the grants so far
	for i, r := range s {
		if i > 0 && r.Fence == s[i-1].Fence {
			res.DuplicateFences++
		}
		if i > 0 && r.Sent.Add(margin).Before(latest) {
			res.Overtaken++
		}
		if r.Sent.After(latest) {
			latest = r.Sent
		}
	}
	return res
}

// recordingTarget wraps a target and keeps every grant of its sessions,
// for the FIFO check. Each session appends to its own slice (loadgen uses
// a session from one goroutine), so the hot path takes no lock.
type recordingTarget struct {
	loadgen.Target

	mu       sync.Mutex // guards the following
	sessions []*recordingSession
}

func (t *recordingTarget) Open(ctx context.Context, id int) (loadgen.Session, error) {
	s, err := t.Target.Open(ctx, id)
	if err != nil {
		return nil, err
	}
	rs := &recordingSession{Session: s, id: id}
	t.mu.Lock()
	t.sessions = append(t.sessions, rs)
	t.mu.Unlock()
	return rs, nil
}

// grants returns every grant recorded; call it after the run.
func (t *recordingTarget) grants() []grantRecord {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []grantRecord
	for _, s := range t.sessions {
		out = append(out, s.recs...)
	}
	return out
}

type recordingSession struct {
	loadgen.Session
	id   int
	recs []grantRecord
}

func (s *recordingSession) Acquire(ctx context.Context, key string, ttl, wait time.Duration) (loadgen.Lease, error) {
	sent := time.Now()
	l, err := s.Session.Acquire(ctx, key, ttl, wait)
	if err == nil {
		s.recs = append(s.recs, grantRecord{Client: s.id, Sent: sent, Fence: l.Fence})
	}
	return l, err
}

// outage is what the probes saw around one signal to the leader.
type outage struct {
	// Recovery is from the signal to the answer of the first successful
	// acquire sent after it through a surviving member.
	Recovery time.Duration
	// Pause is the longest stretch without a successful acquire answer
	// from the last answer before the signal (at most one second before
	// it) to that first answer: gaps that end before the signal are the
	// machine's noise, not the failover's.
	Pause time.Duration
}

// measureOutage derives the outage from the probes' successful acquires
// (send and answer times, in any order) and the signal's time. ok is
// false when no acquire sent after the signal succeeded.
func measureOutage(sent, answered []time.Time, signal time.Time) (o outage, ok bool) {
	var first time.Time
	for i := range sent {
		if !sent[i].Before(signal) && (first.IsZero() || answered[i].Before(first)) {
			first = answered[i]
		}
	}
	if first.IsZero() {
		return outage{}, false
	}
	o.Recovery = first.Sub(signal)
	from := signal.Add(-time.Second)
	for _, a := range answered {
		if a.Before(signal) && a.After(from) {
			from = a
		}
	}
	var in []time.Time
	for _, a := range answered {
		if !a.Before(from) && !a.After(first) {
			in = append(in, a)
		}
	}
	slices.SortFunc(in, func(a, b time.Time) int { return a.Compare(b) })
	prev := from
	for _, a := range in {
		o.Pause = max(o.Pause, a.Sub(prev))
		prev = a
	}
	return o, true
}

// spliceSection replaces the section of doc that starts with the line
// heading (up to the next "## " heading) by section, or appends section
// when doc has none. section starts with its heading line.
func spliceSection(doc, heading, section string) string {
	start, end, ok := findSection(doc, heading)
	section = strings.TrimRight(section, "\n") + "\n"
	if !ok {
		if doc != "" && !strings.HasSuffix(doc, "\n\n") {
			doc = strings.TrimRight(doc, "\n") + "\n\n"
		}
		return doc + section
	}
	rest := doc[end:]
	if rest != "" {
		section += "\n"
	}
	return doc[:start] + section + rest
}

// extractSection returns the section of doc that starts with the line
// heading, up to the next "## " heading, or "".
func extractSection(doc, heading string) string {
	start, end, ok := findSection(doc, heading)
	if !ok {
		return ""
	}
	return strings.TrimRight(doc[start:end], "\n") + "\n"
}

// findSection returns the byte range of heading's section in doc.
func findSection(doc, heading string) (start, end int, ok bool) {
	pos := 0
	start = -1
	for line := range strings.Lines(doc) {
		t := strings.TrimRight(line, "\r\n")
		switch {
		case start < 0 && t == heading:
			start = pos
		case start >= 0 && strings.HasPrefix(t, "## "):
			return start, pos, true
		}
		pos += len(line)
	}
	if start < 0 {
		return 0, 0, false
	}
	return start, len(doc), true
}
