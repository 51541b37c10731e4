package engine

import (
	"container/heap"
	"slices"
	"strings"
)

// leaseHeap is a min-heap of held keys by lease deadline: the next expiry is
// always at index 0, so an expiry storm costs O(log n) per lease.
type leaseHeap []*keyState

func (h leaseHeap) Len() int           { return len(h) }
func (h leaseHeap) Less(i, j int) bool { return h[i].lease.expiresAt.Before(h[j].lease.expiresAt) }
func (h leaseHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].heapIdx = i
	h[j].heapIdx = j
}

// Push and Pop implement heap.Interface; use push, remove and fix instead.
func (h *leaseHeap) Push(x any) {
	ks := x.(*keyState)
	ks.heapIdx = len(*h)
	*h = append(*h, ks)
}

func (h *leaseHeap) Pop() any {
	old := *h
	n := len(old) - 1
	ks := old[n]
	old[n] = nil
	*h = old[:n]
	ks.heapIdx = -1
	return ks
}

func (h *leaseHeap) push(ks *keyState) { heap.Push(h, ks) }

func (h *leaseHeap) remove(ks *keyState) {
	if ks.heapIdx >= 0 {
		heap.Remove(h, ks.heapIdx)
	}
}

func (h *leaseHeap) fix(ks *keyState) { heap.Fix(h, ks.heapIdx) }

func sortSummaries(rows []KeySummary) {
	slices.SortFunc(rows, func(a, b KeySummary) int { return strings.Compare(a.Key, b.Key) })
}
