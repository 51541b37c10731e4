package cluster

import "sync"

// pending hands the results of this node's entries, as this node applies
// them, to the requests waiting for them.
type pending struct {
	mu    sync.Mutex // guards waits
	waits map[uint64]chan *result
}

func newPending() *pending { return &pending{waits: make(map[uint64]chan *result)} }

// add registers seq before its entry is proposed, so that the result
// cannot be applied before anyone waits for it.
func (p *pending) add(seq uint64) <-chan *result {
	ch := make(chan *result, 1)
	p.mu.Lock()
	p.waits[seq] = ch
	p.mu.Unlock()
	return ch
}

func (p *pending) remove(seq uint64) {
	p.mu.Lock()
	delete(p.waits, seq)
	p.mu.Unlock()
}

// deliver hands r to seq's waiter. An entry appended twice (a forward
// whose answer was lost, sent again) is answered by its first apply.
func (p *pending) deliver(seq uint64, r *result) {
	p.mu.Lock()
	ch := p.waits[seq]
	delete(p.waits, seq)
	p.mu.Unlock()
	if ch != nil {
		ch <- r
	}
}
