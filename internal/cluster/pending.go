package cluster

import (
	"errors"
	"sync"
)

// pending hands the results of this node's entries, as this node applies
// them, to the requests waiting for them.
type pending struct {
	mu    sync.Mutex // guards waits and every slot's fields
	waits map[uint64]*slot
}

// slot is one request's mailbox: its result, or word that its entry was
// refused and must be sent again.
type slot struct {
	ready  chan struct{} // signalled when result or resend is set
	result *result
	resend bool
}

func newPending() *pending { return &pending{waits: make(map[uint64]*slot)} }

// add registers seq before its entry is proposed, so that the result
// cannot be applied before anyone waits for it.
func (p *pending) add(seq uint64) *slot {
	s := &slot{ready: make(chan struct{}, 1)}
	p.mu.Lock()
	p.waits[seq] = s
	p.mu.Unlock()
	return s
}

func (p *pending) remove(seq uint64) {
	p.mu.Lock()
	delete(p.waits, seq)
	p.mu.Unlock()
}

// deliver hands r to seq's waiter. An entry appended twice (a forward
// whose answer was lost, sent again) is answered by its first apply; an
// entry every replica refused (errUnpromoted) leaves the slot open and
// asks for it to be sent again. It never blocks: it runs in Raft's apply.
func (p *pending) deliver(seq uint64, r *result) {
	p.mu.Lock()
	s := p.waits[seq]
	if s != nil && s.result == nil {
		if errors.Is(r.err, errUnpromoted) {
			s.resend = true
		} else {
			s.result = r
		}
	}
	p.mu.Unlock()
	if s != nil {
		select {
		case s.ready <- struct{}{}:
		default:
		}
	}
}

// take returns the slot's result, or whether its entry must be sent
// again (clearing that word).
func (p *pending) take(s *slot) (r *result, resend bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	r, resend = s.result, s.resend
	s.resend = false
	return r, resend
}
