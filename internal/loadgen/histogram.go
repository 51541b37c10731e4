package loadgen

import (
	"math"
	"math/bits"
	"time"
)

// Histogram records durations in log-linear buckets, like HdrHistogram:
// every power of two is split into 64 equal sub-buckets, so any recorded
// value is reported within 1/64 (1.6%) of itself, from 1 ns to about 9
// minutes (longer values are clamped and still counted), in a fixed
// 17 KiB. Recording never allocates. The zero value is not usable; use
// NewHistogram. A Histogram is not safe for concurrent use: give every
// client its own and Merge them at the end.
type Histogram struct {
	counts []uint64
	total  uint64
	sum    float64 // nanoseconds
	min    int64
	max    int64
}

const (
	subBits    = 7 // 128 sub-buckets in the first span, 64 in each later one
	subCount   = 1 << subBits
	subHalf    = subCount / 2
	maxShift   = 32 // values up to 2^(subBits+maxShift) ns ≈ 9.2 min
	numBuckets = subCount + maxShift*subHalf
	maxValue   = int64(1)<<(subBits+maxShift) - 1
)

// NewHistogram returns an empty histogram.
func NewHistogram() *Histogram {
	return &Histogram{counts: make([]uint64, numBuckets), min: math.MaxInt64}
}

// bucketOf returns the bucket index of v (0 ≤ v ≤ maxValue).
func bucketOf(v int64) int {
	if v < subCount {
		return int(v)
	}
	shift := bits.Len64(uint64(v)) - subBits // ≥ 1
	sub := int(v >> shift)                   // in [subHalf, subCount)
	return subCount + (shift-1)*subHalf + sub - subHalf
}

// bucketHigh returns the largest value that lands in bucket i.
func bucketHigh(i int) int64 {
	if i < subCount {
		return int64(i)
	}
	shift := (i-subCount)/subHalf + 1
	sub := int64((i-subCount)%subHalf + subHalf)
	return (sub+1)<<shift - 1
}

// Record adds one duration. Negative durations count as 0.
func (h *Histogram) Record(d time.Duration) {
	v := min(max(int64(d), 0), maxValue)
	h.counts[bucketOf(v)]++
	h.total++
	h.sum += float64(d)
	h.min = min(h.min, int64(d))
	h.max = max(h.max, int64(d))
}

// Merge adds every value recorded in o.
func (h *Histogram) Merge(o *Histogram) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.total += o.total
	h.sum += o.sum
	h.min = min(h.min, o.min)
	h.max = max(h.max, o.max)
}

// Count returns the number of recorded values.
func (h *Histogram) Count() uint64 { return h.total }

// Max returns the largest recorded value exactly (0 when empty).
func (h *Histogram) Max() time.Duration {
	if h.total == 0 {
		return 0
	}
	return time.Duration(h.max)
}

// Min returns the smallest recorded value exactly (0 when empty).
func (h *Histogram) Min() time.Duration {
	if h.total == 0 {
		return 0
	}
	return time.Duration(h.min)
}

// Mean returns the exact mean of the recorded values (0 when empty).
func (h *Histogram) Mean() time.Duration {
	if h.total == 0 {
		return 0
	}
	return time.Duration(h.sum / float64(h.total))
}

// Quantile returns the value at quantile q (0 < q ≤ 1): the upper edge of
// the bucket holding the ceil(q·n)-th smallest value, never above Max.
// So a reported p99 is never lower than the true one by more than the
// bucket resolution, and never higher than the largest value seen.
func (h *Histogram) Quantile(q float64) time.Duration {
	if h.total == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.total)))
	rank = min(max(rank, 1), h.total)
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			if i == numBuckets-1 { // clamped values: only max is known
				return time.Duration(h.max)
			}
			return time.Duration(min(bucketHigh(i), h.max))
		}
	}
	return time.Duration(h.max)
}

// Summary is a histogram's figures, in the units the report prints.
type Summary struct {
	Count uint64        `json:"count"`
	Min   time.Duration `json:"-"`
	Mean  time.Duration `json:"-"`
	P50   time.Duration `json:"-"`
	P90   time.Duration `json:"-"`
	P99   time.Duration `json:"-"`
	P999  time.Duration `json:"-"`
	Max   time.Duration `json:"-"`
}

// Summarize returns the histogram's count, min, mean, p50, p90, p99,
// p99.9 and max.
func (h *Histogram) Summarize() Summary {
	return Summary{
		Count: h.total, Min: h.Min(), Mean: h.Mean(),
		P50: h.Quantile(0.50), P90: h.Quantile(0.90), P99: h.Quantile(0.99), P999: h.Quantile(0.999),
		Max: h.Max(),
	}
}
