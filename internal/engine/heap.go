package engine

import (
	"container/heap"
	"slices"
	"strings"
)

// leaseHeap is a min-heap of live leases by deadline: the next expiry is
// always at index 0, so an expiry storm costs O(log n) per lease. It holds
// leases, not keys, so that a semaphore's holders expire each at its own
// deadline.
type leaseHeap []*lease

func (h leaseHeap) Len() int { return len(h) }

// Less breaks a tie by fence, so that leases due at the same instant end in
// one order whatever the heap's history (a replica restored from a
// snapshot must expire them as the others do).
func (h leaseHeap) Less(i, j int) bool {
	if c := h[i].expiresAt.Compare(h[j].expiresAt); c != 0 {
		return c < 0
	}
	return h[i].fence < h[j].fence
}
func (h leaseHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].heapIdx = int32(i)
	h[j].heapIdx = int32(j)
}

// Push and Pop implement heap.Interface; use push, remove and fix instead.
func (h *leaseHeap) Push(x any) {
	l := x.(*lease)
	l.heapIdx = int32(len(*h))
	*h = append(*h, l)
}

func (h *leaseHeap) Pop() any {
	old := *h
	n := len(old) - 1
	l := old[n]
	old[n] = nil
	*h = old[:n]
	l.heapIdx = -1
	return l
}

func (h *leaseHeap) push(l *lease) { heap.Push(h, l) }

func (h *leaseHeap) remove(l *lease) {
	if l.heapIdx >= 0 {
		heap.Remove(h, int(l.heapIdx))
	}
}

func (h *leaseHeap) fix(l *lease) { heap.Fix(h, int(l.heapIdx)) }

// delayHeap is a min-heap of keys in a lock-delay by the delay's end. It
// shares the shard's timer with leaseHeap.
type delayHeap []*keyState

func (h delayHeap) Len() int { return len(h) }

// Less breaks a tie by key, for the reason leaseHeap.Less breaks one.
func (h delayHeap) Less(i, j int) bool {
	if c := h[i].x.delayUntil.Compare(h[j].x.delayUntil); c != 0 {
		return c < 0
	}
	return h[i].key < h[j].key
}
func (h delayHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].x.delayIdx = i
	h[j].x.delayIdx = j
}

// Push and Pop implement heap.Interface.
func (h *delayHeap) Push(x any) {
	ks := x.(*keyState)
	ks.x.delayIdx = len(*h)
	*h = append(*h, ks)
}

func (h *delayHeap) Pop() any {
	old := *h
	n := len(old) - 1
	ks := old[n]
	old[n] = nil
	*h = old[:n]
	ks.x.delayIdx = -1
	return ks
}

func sortSummaries(rows []KeySummary) {
	slices.SortFunc(rows, func(a, b KeySummary) int { return strings.Compare(a.Key, b.Key) })
}
