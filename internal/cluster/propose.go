package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/hashicorp/raft"

	"github.com/mutexd/mutexd/internal/engine"
)

// applyTimeout bounds how long a leader waits to append one entry.
const applyTimeout = 5 * time.Second

// ErrNotLeader is a leader's answer to a forward it cannot append: it is
// not the leader (any more), or not yet promoted. The entry was not
// appended, so the forward may go elsewhere.
var ErrNotLeader = errors.New("not the cluster leader")

// ErrBadEntry is a forwarded entry the leader will never append.
var ErrBadEntry = errors.New("bad forwarded entry")

// errRefused is a leader's refusal of a forward it will never accept
// (its tokens differ from this node's, say): not worth sending again.
var errRefused = fmt.Errorf("%w: the leader refused a forwarded call", engine.ErrUnavailable)

// appendLocal appends c on this node, which must be the leader. An error
// wrapping ErrNotLeader means c was not appended.
func (n *Node) appendLocal(c *command) error {
	_, err := n.appendResult(c)
	return err
}

// appendResult is appendLocal that also returns what this (the leader's)
// replica made of c.
func (n *Node) appendResult(c *command) (*result, error) {
	if c.Time == 0 {
		c.Time = n.now().UnixNano()
	}
	b, err := json.Marshal(c)
	if err != nil {
		return nil, err
	}
	f := n.raft.Apply(b, applyTimeout)
	err = f.Error()
	switch {
	case err == nil:
		r, _ := f.Response().(*result)
		return r, nil
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrEnqueueTimeout), errors.Is(err, raft.ErrRaftShutdown):
		return nil, fmt.Errorf("%w: %w", ErrNotLeader, err)
	}
	return nil, err // raft.ErrLeadershipLost: appended, fate unknown
}

// idempotent ops may be appended twice with the same outcome: a forward
// whose answer was lost is sent again only for them.
var idempotent = [opMax]bool{opAcquire: true, opRelease: true, opRenew: true, opAbandon: true, opDetach: true, opPause: true, opResume: true}

// propose appends c through the leader and returns its result as this
// node's replica applied it. It retries with the same Seq while no leader
// is known or the leader changes, for as long as ctx and the bound allow.
func (n *Node) propose(ctx context.Context, c *command) (*result, error) {
	r, _, err := n.proposeOnce(ctx, c)
	return r, err
}

// proposeOnce is propose that also says whether c was sent more than
// once, so that it may have been appended twice.
func (n *Node) proposeOnce(ctx context.Context, c *command) (_ *result, twice bool, _ error) {
	c.Origin, c.Seq = n.cfg.NodeID, randomSeq()
	start := time.Now()
	s := n.pending.add(c.Seq)
	defer n.pending.remove(c.Seq)
	bound := time.NewTimer(n.proposeBound())
	defer bound.Stop()
	backoff := 5 * time.Millisecond
	send := true
	for {
		var retry <-chan time.Time
		if send {
			r, err := n.submit(ctx, c)
			switch {
			case err == nil && r != nil && !twice && !errors.Is(r.err, errUnpromoted):
				// The leader's replica applied it: its result is this
				// call's (a twice-sent entry waits for its first apply's).
				n.obs.Committed(time.Since(start))
				return r, false, nil
			case err == nil:
				send = false
			case errors.Is(err, errRefused):
				return nil, twice, err
			case errors.Is(err, ErrNotLeader), errors.Is(err, ErrNoLeader):
				retry = time.After(backoff) // not appended: send again
			case !idempotent[c.Op]:
				return nil, true, ErrUnknownOutcome
			default:
				twice = true // maybe appended: send again, with the same seq
				retry = time.After(backoff)
			}
			if retry != nil {
				backoff = min(2*backoff, 200*time.Millisecond)
			}
		}
		select {
		case <-s.ready:
			r, resend := n.pending.take(s)
			if r != nil {
				n.obs.Committed(time.Since(start))
				return r, twice, nil
			}
			if resend {
				// Every replica refused the entry (its leader had not
				// taken over yet): it had no effect.
				send = true
			}
		case <-retry:
		case <-n.stop:
			return nil, twice, engine.ErrUnavailable // shutting down
		case <-ctx.Done():
			return nil, twice, fmt.Errorf("%w: %w", engine.ErrCancelled, context.Cause(ctx))
		case <-bound.C:
			// No leader took it in time, or this replica is cut off from
			// the leader and has not applied it.
			return nil, twice, ErrNoLeader
		}
	}
}

// proposeBound is how long a call may wait for a leader: a failover's
// worth (detection, election, promotion) with room to spare.
func (n *Node) proposeBound() time.Duration {
	return 4*(n.cfg.HeartbeatTimeout+n.cfg.ElectionTimeout) + time.Second
}

// submit appends c on the leader: here, or by forwarding it. It returns
// the leader's result when it can stand for this replica's (nil when the
// caller must wait for this replica: a forwarded acquire that queued).
func (n *Node) submit(ctx context.Context, c *command) (*result, error) {
	if n.raft.State() == raft.Leader {
		if !n.promoted.Load() {
			return nil, ErrNotLeader
		}
		c.Time = 0 // stamped by appendResult
		return n.appendResult(c)
	}
	_, id := n.raft.LeaderWithID()
	api := n.apiOf(string(id))
	if id == "" || api == "" {
		return nil, ErrNoLeader
	}
	b, err := json.Marshal(c)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, applyTimeout+time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, api+ApplyPath, bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	if n.cfg.Token != "" {
		req.Header.Set("Authorization", "Bearer "+n.cfg.Token)
	}
	n.obs.Forwarded(opNames[c.Op])
	resp, err := n.hc.Do(req)
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) && op.Op == "dial" {
			return nil, ErrNoLeader // never sent
		}
		return nil, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	switch resp.StatusCode {
	case http.StatusOK:
		r, queued, err := decodeResult(body)
		if err != nil || queued {
			return nil, nil // appended: this replica's result will do
		}
		return r, nil
	case http.StatusNoContent:
		return nil, nil
	case http.StatusMisdirectedRequest:
		return nil, ErrNotLeader
	case http.StatusBadRequest, http.StatusUnauthorized, http.StatusForbidden:
		return nil, fmt.Errorf("%w (%d: %s)", errRefused, resp.StatusCode, bytes.TrimSpace(body))
	}
	return nil, fmt.Errorf("cluster: leader %s answered %d: %s", id, resp.StatusCode, bytes.TrimSpace(body))
}

// readIndex returns an index that a linearizable read must see applied:
// the leader's commit index, once it has confirmed it still leads.
func (n *Node) readIndex(ctx context.Context) (uint64, error) {
	if n.raft.State() == raft.Leader {
		if !n.promoted.Load() {
			return 0, ErrNotLeader
		}
		idx := n.raft.CommitIndex()
		if err := n.raft.VerifyLeader().Error(); err != nil {
			return 0, fmt.Errorf("%w: %w", ErrNotLeader, err)
		}
		return idx, nil
	}
	_, id := n.raft.LeaderWithID()
	api := n.apiOf(string(id))
	if id == "" || api == "" {
		return 0, ErrNoLeader
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, api+ReadIndexPath, nil)
	if err != nil {
		return 0, err
	}
	if n.cfg.Token != "" {
		req.Header.Set("Authorization", "Bearer "+n.cfg.Token)
	}
	n.obs.Forwarded(opReadIndex)
	resp, err := n.hc.Do(req)
	if err != nil {
		return 0, ErrNoLeader
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, ErrNoLeader
	}
	var out struct {
		Index uint64 `json:"index"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 4096)).Decode(&out); err != nil {
		return 0, ErrNoLeader
	}
	return out.Index, nil
}

// waitApplied waits until this replica has applied idx.
func (n *Node) waitApplied(ctx context.Context, idx uint64) error {
	// The FSM's own index, not raft's AppliedIndex: raft advances that
	// when it hands entries to the FSM goroutine, before they are applied,
	// and a read must see them applied. Raft's no-op and barrier entries
	// never reach the FSM, but the read index is a leader's commit index
	// after its promote entry, which comes after them.
	for n.fsm.applied.Load() < idx {
		ch := n.fsm.appliedChanged()
		if n.fsm.applied.Load() >= idx {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: %w", engine.ErrCancelled, context.Cause(ctx))
		case <-ch:
		}
	}
	return nil
}

// ReadBarrier makes the next read of this replica linearizable: it waits
// until the replica has applied everything the leader had committed when
// the barrier began. stale skips it.
func (n *Node) ReadBarrier(ctx context.Context, stale bool) error {
	if stale {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, n.proposeBound())
	defer cancel()
	backoff := 5 * time.Millisecond
	for {
		idx, err := n.readIndex(ctx)
		if err == nil {
			return n.waitApplied(ctx, idx)
		}
		select {
		case <-n.stop:
			return engine.ErrUnavailable
		case <-ctx.Done():
			if errors.Is(context.Cause(ctx), context.DeadlineExceeded) {
				return ErrNoLeader
			}
			return fmt.Errorf("%w: %w", engine.ErrCancelled, context.Cause(ctx))
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 200*time.Millisecond)
	}
}

// The leader's internal routes that followers call (served by
// internal/api, which names them the same).
const (
	ApplyPath     = "/v1/internal/apply"
	ReadIndexPath = "/v1/internal/read-index"
)
