package cluster

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// Status is what GET /v1/cluster shows.
type Status struct {
	NodeID       string
	State        string // leader, follower, candidate, shutdown
	LeaderID     string
	LeaderAPI    string
	Term         uint64
	CommitIndex  uint64
	AppliedIndex uint64
	Members      []Member
}

// Member is one server of the configuration.
type Member struct {
	ID, Raft, API string
	Voter         bool
	// State is the member's own answer, or "unreachable".
	State string
}

// Status reports this node's view; unless local, it asks every other
// member for its state (in parallel, briefly).
func (n *Node) Status(ctx context.Context, local bool) Status {
	_, leader := n.raft.LeaderWithID()
	st := Status{
		NodeID: n.cfg.NodeID, State: stateName(n.raft.State()), LeaderID: string(leader), LeaderAPI: n.apiOf(string(leader)),
		Term: n.raft.CurrentTerm(), CommitIndex: n.raft.CommitIndex(), AppliedIndex: n.applied(),
	}
	var servers []raft.Server
	if f := n.raft.GetConfiguration(); f.Error() == nil {
		servers = f.Configuration().Servers
	}
	st.Members = make([]Member, len(servers))
	var wg sync.WaitGroup
	for i, s := range servers {
		m := Member{ID: string(s.ID), Raft: string(s.Address), API: n.apiOf(string(s.ID)), Voter: s.Suffrage == raft.Voter}
		switch {
		case m.ID == n.cfg.NodeID:
			m.State = st.State
		case local:
			m.State = "unknown"
		default:
			wg.Add(1)
			go func() {
				defer wg.Done()
				st.Members[i].State = n.peerState(ctx, m.API)
			}()
		}
		st.Members[i] = m
	}
	wg.Wait()
	return st
}

// peerState asks a member for its own state.
func (n *Node) peerState(ctx context.Context, api string) string {
	ctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, api+"/v1/cluster?local=true", nil)
	if err != nil {
		return "unreachable"
	}
	if n.cfg.Token != "" {
		req.Header.Set("Authorization", "Bearer "+n.cfg.Token)
	}
	resp, err := n.hc.Do(req)
	if err != nil {
		return "unreachable"
	}
	defer resp.Body.Close()
	var out struct {
		State string `json:"state"`
	}
	if resp.StatusCode != http.StatusOK || json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&out) != nil {
		return "unreachable"
	}
	return out.State
}

func stateName(s raft.RaftState) string {
	switch s {
	case raft.Leader:
		return "leader"
	case raft.Follower:
		return "follower"
	case raft.Candidate:
		return "candidate"
	}
	return "shutdown"
}

// Digest hashes this replica's whole state (the canonical snapshot) and
// reports the index it reflects.
func (n *Node) Digest() ([]byte, uint64, error) {
	b, idx, err := n.fsm.digest()
	if err != nil {
		return nil, 0, err
	}
	sum := sha256.Sum256(b)
	return sum[:], idx, nil
}

// Apply appends an entry a follower forwarded and returns the leader's
// result, encoded, for the follower to answer with. admin says whether
// the caller may make admin calls. A tick, promote or member entry is
// never taken from the wire: only a leader makes its own.
func (n *Node) Apply(ctx context.Context, entry []byte, admin bool) ([]byte, error) {
	c, err := decodeCommand(entry)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadEntry, err)
	}
	switch {
	case c.Op == opTick || c.Op == opPromote || c.Op == opSetMember:
		return nil, fmt.Errorf("%w: op %d is the leader's own", ErrBadEntry, c.Op)
	case adminOps[c.Op] && !admin:
		return nil, fmt.Errorf("%w: op %d needs an admin token", ErrBadEntry, c.Op)
	case c.Origin == "" || c.Seq == 0:
		return nil, fmt.Errorf("%w: no origin", ErrBadEntry)
	}
	if n.raft.State() != raft.Leader || !n.promoted.Load() {
		return nil, ErrNotLeader
	}
	c.Time = 0
	r, err := n.appendResult(c)
	if err != nil {
		if errors.Is(err, ErrNotLeader) {
			return nil, err
		}
		return nil, ErrUnknownOutcome
	}
	if r == nil {
		return []byte(`{"queued":true}`), nil // cannot happen: wait for the replica's own
	}
	return encodeResult(r)
}

// ReadIndex is the leader's commit index, once it confirmed it leads.
func (n *Node) ReadIndex(ctx context.Context) (uint64, error) {
	if n.raft.State() != raft.Leader {
		return 0, ErrNotLeader
	}
	return n.readIndex(ctx)
}
