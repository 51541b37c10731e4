package cluster

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/mutexd/mutexd/internal/engine"
)

// The calls of api.Locker. Writes are appended through the leader and
// answered from this node's replica as it applies them; reads are served
// by this replica after ReadBarrier.

// Acquire appends the acquire and, when it queues, waits in this replica
// for the grant. Every acquire carries a request id (one is made when the
// caller sent none), so that a call sent again, to this node or another,
// finds its place. A wait that this replica cannot see resolved (the
// cluster lost its leader for longer than the wait) ends with
// ErrNoLeader after the wait plus a failover's time; the waiter keeps its
// place for the detach grace meanwhile.
func (n *Node) Acquire(ctx context.Context, key string, o engine.AcquireOptions) (engine.Grant, error) {
	if o.RequestID == "" {
		o.RequestID = fmt.Sprintf("mutexd-%016x%016x", randomSeq(), randomSeq())
	}
	if mutation == "grantlocal" { // a deliberately broken build: mutation.go
		if g, ok := n.mutantGrantLocal(key, o); ok {
			return g, nil
		}
	}
	c := &command{Op: opAcquire, Key: key, Owner: o.Owner, TTL: o.TTL, Wait: o.Wait, OnError: o.OnError, Reserve: o.Reserve,
		RequestID: o.RequestID, Limit: o.Limit, MaxHold: o.MaxHold, LockDelay: o.LockDelay}
	for {
		r, twice, err := n.proposeOnce(ctx, c)
		if err != nil {
			return engine.Grant{}, err
		}
		if r.waiting == nil {
			if r.err == nil && ctx.Err() != nil {
				n.detach(key, o.RequestID, c.Seq, ctx)
				return engine.Grant{}, fmt.Errorf("%w: %w", engine.ErrCancelled, context.Cause(ctx))
			}
			return r.grant, r.err
		}
		g, err := n.await(ctx, key, o, c.Seq, r.waiting)
		if errors.Is(err, engine.ErrSuperseded) && twice && ctx.Err() == nil {
			// This call's entry was appended twice (a forward whose
			// answer was lost, sent again) and the second took the
			// first's place: wait for that one, by sending once more.
			continue
		}
		return g, err
	}
}

// await waits for w, the waiter of attempt, in this replica. It tells
// the caller's place in line (OnPosition) when it starts and, while it
// waits, whenever that place changes (checked every second).
func (n *Node) await(ctx context.Context, key string, o engine.AcquireOptions, attempt uint64, w *engine.Waiting) (engine.Grant, error) {
	bound := time.NewTimer(o.Wait + n.proposeBound())
	defer bound.Stop()
	var posC <-chan time.Time
	pos := 0
	if o.OnPosition != nil {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		posC = t.C
		if pos = w.Position(); pos > 0 {
			o.OnPosition(pos)
		}
	}
	for {
		select {
		case <-w.Done():
			g, err := w.Result()
			if err == nil && ctx.Err() != nil {
				n.detach(key, o.RequestID, attempt, ctx)
				return engine.Grant{}, fmt.Errorf("%w: %w", engine.ErrCancelled, context.Cause(ctx))
			}
			return g, err
		case <-ctx.Done():
			n.detach(key, o.RequestID, attempt, ctx)
			return engine.Grant{}, fmt.Errorf("%w: %w", engine.ErrCancelled, context.Cause(ctx))
		case <-bound.C:
			n.detach(key, o.RequestID, attempt, ctx)
			return engine.Grant{}, ErrNoLeader
		case <-posC:
			if p := w.Position(); p > 0 && p != pos {
				pos = p
				o.OnPosition(p)
			}
		}
	}
}

// detach tells the cluster, in the background, that the caller of the
// acquire with id has gone (engine.Detach).
func (n *Node) detach(key, id string, attempt uint64, ctx context.Context) {
	wont := errors.Is(context.Cause(ctx), engine.ErrWontReturn)
	n.background(&command{Op: opDetach, Key: key, RequestID: id, Attempt: attempt, WontReturn: wont})
}

// background appends c without a caller waiting, bounded in time.
func (n *Node) background(c *command) {
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), n.proposeBound())
		defer cancel()
		go func() {
			select {
			case <-n.stop:
				cancel()
			case <-ctx.Done():
			}
		}()
		if _, err := n.propose(ctx, c); err != nil {
			n.log.Warn("could not tell the cluster", "op", c.Op, "err", err)
		}
	}()
}

// write appends c for a caller that waits for it.
func (n *Node) write(c *command) (*result, error) {
	ctx, cancel := context.WithTimeout(context.Background(), n.proposeBound())
	defer cancel()
	r, err := n.propose(ctx, c)
	if errors.Is(err, engine.ErrCancelled) {
		return nil, ErrNoLeader
	}
	return r, err
}

// Release ends the lease named by token.
func (n *Node) Release(key string, token engine.Token, failed bool) (engine.Ended, error) {
	r, err := n.write(&command{Op: opRelease, Key: key, Token: &token, Failed: failed})
	if err != nil {
		return engine.Ended{}, err
	}
	return r.ended, r.err
}

// Abandon says the caller of key's lease with fence never saw its grant.
func (n *Node) Abandon(key string, fence uint64) {
	n.background(&command{Op: opAbandon, Key: key, Fence: fence})
}

// Renew extends the lease named by token.
func (n *Node) Renew(key string, token engine.Token, ttl time.Duration) (engine.Renewal, error) {
	r, err := n.write(&command{Op: opRenew, Key: key, Token: &token, TTL: ttl})
	if err != nil {
		return engine.Renewal{}, err
	}
	return r.renewal, r.err
}

// ForceRelease ends the key's leases.
func (n *Node) ForceRelease(key string) (engine.Ended, error) {
	r, err := n.write(&command{Op: opForce, Key: key})
	if err != nil {
		return engine.Ended{}, err
	}
	return r.ended, r.err
}

// Pause, Resume, PausePrefix, ResumePrefix, Drain and DrainPrefix are
// the operators' calls (api.Operator). They are not sent twice when a
// leader is lost before it answers: ErrUnknownOutcome.
func (n *Node) Pause(key string) (bool, error)  { return n.flag(opPause, key) }
func (n *Node) Resume(key string) (bool, error) { return n.flag(opResume, key) }
func (n *Node) PausePrefix(prefix string) (int, error) {
	return n.count(&command{Op: opPausePrefix, Key: prefix})
}
func (n *Node) ResumePrefix(prefix string) (int, error) {
	return n.count(&command{Op: opResumePrefix, Key: prefix})
}
func (n *Node) Drain(key, reason string) (int, error) {
	return n.count(&command{Op: opDrain, Key: key, Reason: reason})
}
func (n *Node) DrainPrefix(prefix, reason string) (int, error) {
	return n.count(&command{Op: opDrainPrefix, Key: prefix, Reason: reason})
}

func (n *Node) flag(o op, key string) (bool, error) {
	r, err := n.write(&command{Op: o, Key: key})
	if err != nil {
		return false, err
	}
	return r.ok, nil
}

func (n *Node) count(c *command) (int, error) {
	r, err := n.write(c)
	if err != nil {
		return 0, err
	}
	return r.n, nil
}

// Inspect, List, Stats, CheckFence and EachOldestWaiter read this replica.
func (n *Node) Inspect(key string, maxQueue int) engine.KeyInfo {
	e, _ := n.fsm.state()
	return e.Inspect(key, maxQueue)
}
func (n *Node) List(prefix, after string, limit int) ([]engine.KeySummary, string) {
	e, _ := n.fsm.state()
	return e.List(prefix, after, limit)
}
func (n *Node) Stats() engine.Stats {
	e, _ := n.fsm.state()
	return e.Stats()
}
func (n *Node) CheckFence(key string, fence uint64) engine.FenceStatus {
	e, _ := n.fsm.state()
	return e.CheckFence(key, fence)
}
func (n *Node) EachOldestWaiter(fn func(key string, since time.Time)) {
	e, _ := n.fsm.state()
	e.EachOldestWaiter(fn)
}
