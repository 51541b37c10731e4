package loadgen

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"
)

// Result is the figures of one run.
type Result struct {
	Target  string        `json:"target"`
	Mode    Mode          `json:"mode"`
	Clients int           `json:"clients"`
	Keys    int           `json:"keys"`
	TTL     time.Duration `json:"-"`
	Hold    time.Duration `json:"-"`
	Elapsed time.Duration `json:"-"`

	// Cycles are completed acquire+release (or acquire+abandon) cycles
	// within the measurement window.
	Cycles       int64   `json:"cycles"`
	CyclesPerSec float64 `json:"cycles_per_sec"`
	// OwnerChanges are grants whose previous grant of the same key went to
	// another client: real hand-offs.
	OwnerChanges   int64   `json:"owner_changes"`
	HandoffsPerSec float64 `json:"handoffs_per_sec"`
	// Grants counts every grant, including those after the window.
	Grants int64 `json:"grants"`
	// Busy counts try-lock refusals (mode try).
	Busy int64 `json:"busy"`
	// Overlaps counts grants made while another client of this run held
	// an unexpired lease of the key: 0 for a correct lock service.
	Overlaps int64 `json:"overlaps"`
	// Fairness is Jain's index over the clients' cycle counts among the
	// clients of each key, averaged over keys: 1 when all share equally,
	// 1/n when one client gets everything.
	Fairness float64 `json:"jain_fairness"`

	Acquire Summary `json:"acquire"`
	Cycle   Summary `json:"cycle"`
	// ExpiryLateness is the time from an abandoned lease's deadline to the
	// next grant of its key (mode expire).
	ExpiryLateness Summary `json:"expiry_lateness"`
	// Failed is the time from the start of each failed cycle (one counted
	// in Errors) to its failure: slow failures, such as waits that ran out,
	// stay visible, and fast ones do not flatter Acquire and Cycle.
	Failed Summary `json:"failed"`

	Errors      map[string]int64 `json:"errors"`
	ErrorsTotal int64            `json:"errors_total"`
}

func newResult(target string, cfg Config, clients []*client, elapsed time.Duration) *Result {
	r := &Result{Target: target, Mode: cfg.Mode, Clients: cfg.Clients, Keys: cfg.Keys, TTL: cfg.TTL, Hold: cfg.Hold,
		Elapsed: elapsed, Errors: map[string]int64{}}
	acq, cyc, late, failed := NewHistogram(), NewHistogram(), NewHistogram(), NewHistogram()
	perKey := make([][]float64, cfg.Keys)
	for _, c := range clients {
		n := c.cycles.Load()
		r.Cycles += n
		r.OwnerChanges += c.changes
		r.Grants += c.grants
		r.Busy += c.busy
		r.Overlaps += c.overlaps
		for code, k := range c.errors {
			r.Errors[code] += k
			r.ErrorsTotal += k
		}
		acq.Merge(c.acquire)
		cyc.Merge(c.cycle)
		late.Merge(c.lateness)
		failed.Merge(c.failed)
		perKey[c.key] = append(perKey[c.key], float64(n))
	}
	var jain float64
	for _, xs := range perKey {
		jain += Jain(xs)
	}
	r.Fairness = jain / float64(len(perKey))
	if s := elapsed.Seconds(); s > 0 {
		r.CyclesPerSec = float64(r.Cycles) / s
		r.HandoffsPerSec = float64(r.OwnerChanges) / s
	}
	r.Acquire, r.Cycle, r.ExpiryLateness, r.Failed = acq.Summarize(), cyc.Summarize(), late.Summarize(), failed.Summarize()
	return r
}

// Jain returns Jain's fairness index of xs: (Σx)² / (n·Σx²), 1 for an
// empty or all-zero slice.
func Jain(xs []float64) float64 {
	var sum, sq float64
	for _, x := range xs {
		sum += x
		sq += x * x
	}
	if sq == 0 {
		return 1
	}
	return sum * sum / (float64(len(xs)) * sq)
}

// MarshalJSON writes the summary's durations in microseconds.
func (s Summary) MarshalJSON() ([]byte, error) {
	us := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }
	return json.Marshal(struct {
		Count uint64  `json:"count"`
		Min   float64 `json:"min_us"`
		Mean  float64 `json:"mean_us"`
		P50   float64 `json:"p50_us"`
		P90   float64 `json:"p90_us"`
		P99   float64 `json:"p99_us"`
		P999  float64 `json:"p999_us"`
		Max   float64 `json:"max_us"`
	}{s.Count, us(s.Min), us(s.Mean), us(s.P50), us(s.P90), us(s.P99), us(s.P999), us(s.Max)})
}

// MarshalJSON adds the durations in milliseconds and seconds.
func (r *Result) MarshalJSON() ([]byte, error) {
	type plain Result
	return json.Marshal(struct {
		*plain
		TTLMs    int64   `json:"ttl_ms"`
		HoldMs   float64 `json:"hold_ms"`
		ElapsedS float64 `json:"elapsed_s"`
	}{(*plain)(r), r.TTL.Milliseconds(), float64(r.Hold.Microseconds()) / 1e3, r.Elapsed.Seconds()})
}

// WriteText writes the human summary of r.
func (r *Result) WriteText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "target %s, mode %s, %d clients on %d keys, ttl %s, hold %s, %.2fs measured\n",
		r.Target, r.Mode, r.Clients, r.Keys, r.TTL, r.Hold, r.Elapsed.Seconds())
	fmt.Fprintf(&b, "  cycles       %d (%.0f/s)\n", r.Cycles, r.CyclesPerSec)
	fmt.Fprintf(&b, "  hand-offs    %d owner changes (%.0f/s)\n", r.OwnerChanges, r.HandoffsPerSec)
	fmt.Fprintf(&b, "  fairness     %.4f (Jain, per key over its clients)\n", r.Fairness)
	if r.Busy > 0 {
		fmt.Fprintf(&b, "  busy         %d try-lock refusals\n", r.Busy)
	}
	fmt.Fprintf(&b, "  overlaps     %d\n", r.Overlaps)
	b.WriteString("  latency          count      p50      p90      p99    p99.9      max\n")
	row := func(name string, s Summary) {
		if s.Count == 0 {
			return
		}
		fmt.Fprintf(&b, "  %-12s %9d %8s %8s %8s %8s %8s\n", name, s.Count,
			FormatDuration(s.P50), FormatDuration(s.P90), FormatDuration(s.P99), FormatDuration(s.P999), FormatDuration(s.Max))
	}
	row("acquire", r.Acquire)
	row("cycle", r.Cycle)
	row("expiry late", r.ExpiryLateness)
	row("failed", r.Failed)
	if r.ErrorsTotal == 0 {
		b.WriteString("  errors       none\n")
	} else {
		fmt.Fprintf(&b, "  errors       %d:", r.ErrorsTotal)
		for _, code := range slices.Sorted(maps.Keys(r.Errors)) {
			fmt.Fprintf(&b, " %s=%d", code, r.Errors[code])
		}
		b.WriteString("\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// FormatDuration prints d with three significant digits in µs, ms or s.
func FormatDuration(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return fmt.Sprintf("%.0fµs", float64(d)/1e3)
	case d < time.Second:
		return fmt.Sprintf("%.2fms", float64(d)/1e6)
	}
	return fmt.Sprintf("%.2fs", d.Seconds())
}
