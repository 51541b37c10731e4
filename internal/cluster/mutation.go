package cluster

import (
	"time"

	"github.com/mutexd/mutexd/internal/engine"
)

// Deliberately broken builds, for proving that the fault suite's checkers
// catch what they are meant to (internal/faults TestMutationsBite, `make
// mutations`). A build tag picks one (mutation_*.go sets the constant
// mutation); the branches that call these functions are
// `if mutation == "..."` on a constant, so a normal build contains none of
// them. Each is a bug the design rules out:
//
//   - followerclock: every replica advances its log clock from its own
//     wall clock, so leases expire on each node's own clock rather than at
//     the time in the leader's entries (node.go, Open).
//   - skiprenew: a renewal is answered but does not move the deadline, so
//     expiry ignores it: an expiry no longer conditional on the lease's
//     latest term (fsm.go, applyLocked).
//   - grantlocal: a node grants a free key from its own replica before
//     anything is committed (locker.go, Acquire).

// mutantOwnClock is followerclock: this replica's clock follows its own
// wall clock, firing expiries whatever the log says.
func (n *Node) mutantOwnClock() {
	defer n.wg.Done()
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-n.stop:
			return
		case <-t.C:
		}
		n.fsm.mu.Lock()
		n.fsm.clock.advance(time.Now())
		n.fsm.mu.Unlock()
	}
}

// mutantRenew is skiprenew: it answers the renewal as granted but puts
// the lease's deadline back where it was.
func mutantRenew(e *engine.Engine, c *command) (engine.Renewal, error) {
	before := e.Inspect(c.Key, 0)
	r, err := e.Renew(c.Key, c.token(), c.TTL)
	if err != nil {
		return r, err
	}
	for _, h := range before.Holders {
		if h.Fence == r.Fence {
			now := r.ExpiresAt.Add(-r.TTL)
			e.Renew(c.Key, c.token(), max(h.ExpiresAt.Sub(now), time.Nanosecond))
		}
	}
	return r, nil
}

// mutantGrantLocal is grantlocal: a key free in this replica is granted
// from it at once, without a log entry.
func (n *Node) mutantGrantLocal(key string, o engine.AcquireOptions) (engine.Grant, bool) {
	n.fsm.mu.Lock()
	defer n.fsm.mu.Unlock()
	o.Wait, o.RequestID, o.OnPosition = 0, "", nil
	g, w, err := n.fsm.eng.Submit(key, o)
	if err != nil || w != nil {
		return engine.Grant{}, false
	}
	return g, true
}
