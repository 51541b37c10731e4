package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

// Observer is told what a node's metrics measure over time, as it
// happens. internal/metrics implements it, so that this package needs no
// metrics library. Its methods must be quick and must not block: some
// run in Raft's apply goroutine.
type Observer interface {
	// Committed is the time from proposing one call's entry to its
	// result in this replica (retries after a change of leader
	// included): what Raft adds to a call.
	Committed(d time.Duration)
	// AppliedBatch is the time the state machine took to apply one
	// batch of committed entries.
	AppliedBatch(d time.Duration)
	// Snapshotted is one snapshot's time from capture to persisted, and
	// its error (nil when it was persisted).
	Snapshotted(d time.Duration, err error)
	// Forwarded counts one call sent to the leader over HTTP, by op
	// (one of ForwardOps).
	Forwarded(op string)
	// LeaderChanged counts a leader this node learned of: the end of an
	// election, as this node saw it.
	LeaderChanged()
}

// nopObserver is the Observer of a node built without one.
type nopObserver struct{}

func (nopObserver) Committed(time.Duration)          {}
func (nopObserver) AppliedBatch(time.Duration)       {}
func (nopObserver) Snapshotted(time.Duration, error) {}
func (nopObserver) Forwarded(string)                 {}
func (nopObserver) LeaderChanged()                   {}

// opNames name the ops a follower forwards, for Observer.Forwarded.
var opNames = [opMax]string{
	opAcquire: "acquire", opRelease: "release", opRenew: "renew", opForce: "force",
	opAbandon: "abandon", opDetach: "detach", opPause: "pause", opResume: "resume",
	opPausePrefix: "pause_prefix", opResumePrefix: "resume_prefix",
	opDrain: "drain", opDrainPrefix: "drain_prefix",
}

// opReadIndex names a linearizable read's request for the leader's
// commit index, which a follower forwards too.
const opReadIndex = "read_index"

// ForwardOps are every op Observer.Forwarded may be told of, so that a
// metric can show each one at 0 before the first.
func ForwardOps() []string {
	var out []string
	for _, name := range opNames {
		if name != "" {
			out = append(out, name)
		}
	}
	return append(out, opReadIndex)
}

// errNotPersisted is a snapshot that Raft captured but gave up on before
// it was written (it could not create the file, say).
var errNotPersisted = errors.New("cluster: snapshot released before it was persisted")

// observedFSM times the state machine's work for the Observer. It keeps
// the clock out of fsm, whose Apply must read none.
type observedFSM struct {
	*fsm
	obs      Observer
	lastSnap *atomic.Int64 // unix nanoseconds of the last snapshot persisted
}

var _ raft.BatchingFSM = observedFSM{}

func (f observedFSM) Apply(l *raft.Log) any { return f.ApplyBatch([]*raft.Log{l})[0] }

func (f observedFSM) ApplyBatch(logs []*raft.Log) []any {
	start := time.Now()
	out := f.fsm.ApplyBatch(logs)
	f.obs.AppliedBatch(time.Since(start))
	return out
}

func (f observedFSM) Snapshot() (raft.FSMSnapshot, error) {
	start := time.Now()
	s, err := f.fsm.Snapshot()
	if err != nil {
		f.obs.Snapshotted(time.Since(start), err)
		return nil, err
	}
	return &observedSnapshot{FSMSnapshot: s, start: start, obs: f.obs, lastSnap: f.lastSnap}, nil
}

// observedSnapshot reports a snapshot once: when Persist returns, or,
// when Raft releases it unpersisted, as a failure.
type observedSnapshot struct {
	raft.FSMSnapshot
	start     time.Time
	obs       Observer
	lastSnap  *atomic.Int64
	persisted bool // Persist and Release run in Raft's one snapshot goroutine
}

func (s *observedSnapshot) Persist(sink raft.SnapshotSink) error {
	err := s.FSMSnapshot.Persist(sink)
	s.persisted = true
	if err == nil {
		s.lastSnap.Store(time.Now().UnixNano())
	}
	s.obs.Snapshotted(time.Since(s.start), err)
	return err
}

func (s *observedSnapshot) Release() {
	if !s.persisted {
		s.obs.Snapshotted(time.Since(s.start), errNotPersisted)
	}
	s.FSMSnapshot.Release()
}

// snapshotTime is when the newest snapshot in store was taken, from its
// id (term-index-milliseconds, as raft's file store names them); zero
// when there is none or the id says no time.
func snapshotTime(store raft.SnapshotStore) time.Time {
	metas, err := store.List()
	if err != nil || len(metas) == 0 {
		return time.Time{}
	}
	parts := strings.Split(metas[0].ID, "-")
	ms, err := strconv.ParseInt(parts[len(parts)-1], 10, 64)
	if len(parts) != 3 || err != nil || ms <= 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms)
}

// watchLeaderChanges tells the Observer of every leader this node learns
// of, from Raft's own observations (a poll could miss a quick flip).
func (n *Node) watchLeaderChanges(ch <-chan raft.Observation) {
	defer n.wg.Done()
	for {
		select {
		case <-n.stop:
			return
		case o := <-ch:
			if lo, ok := o.Data.(raft.LeaderObservation); ok && lo.LeaderID != "" {
				n.obs.LeaderChanged()
			}
		}
	}
}

// RaftStats is a node's Raft state, as its metrics read it at scrape time.
type RaftStats struct {
	// State is leader, follower, candidate or shutdown.
	State string
	Term  uint64
	// CommitIndex is the last index this node knows committed;
	// AppliedIndex the last its replica applied.
	CommitIndex, AppliedIndex uint64
	// FirstIndex and LastIndex bound the entries in this node's log (a
	// snapshot covers those before FirstIndex).
	FirstIndex, LastIndex uint64
	// LastSnapshot is when this node last persisted a snapshot (or, until
	// it has, when the newest one it holds was taken); StartedAt when it
	// opened. Both local clock readings, for an age.
	LastSnapshot, StartedAt time.Time
}

// RaftStats reads the node's Raft state. It is cheap: it asks no peer.
func (n *Node) RaftStats() RaftStats {
	st := RaftStats{
		State: stateName(n.raft.State()), Term: n.raft.CurrentTerm(),
		CommitIndex: n.raft.CommitIndex(), AppliedIndex: n.applied(),
		LastIndex: n.raft.LastIndex(), StartedAt: n.t0,
	}
	if first, err := n.store.FirstIndex(); err == nil {
		st.FirstIndex = first
	}
	if ns := n.lastSnap.Load(); ns != 0 {
		st.LastSnapshot = time.Unix(0, ns)
	}
	return st
}

// PeerStats is one server of the configuration, as it answered.
type PeerStats struct {
	ID    string
	Self  bool // this node, which answered without a call
	Voter bool
	// State is the server's own answer (leader, follower, candidate,
	// shutdown) or "unreachable".
	State string
	// AppliedIndex is the last index its replica applied; 0 when
	// unreachable.
	AppliedIndex uint64
}

// Peers reports every server of the configuration: this one from its
// own state, the others by asking each for its state and applied index,
// in parallel, each for at most half a second.
func (n *Node) Peers(ctx context.Context) []PeerStats {
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return nil
	}
	var out []PeerStats
	for _, s := range f.Configuration().Servers {
		out = append(out, PeerStats{ID: string(s.ID), Self: string(s.ID) == n.cfg.NodeID, Voter: s.Suffrage == raft.Voter})
	}
	var wg sync.WaitGroup
	for i := range out {
		if out[i].Self {
			out[i].State, out[i].AppliedIndex = stateName(n.raft.State()), n.applied()
			continue
		}
		api := n.apiOf(out[i].ID)
		wg.Go(func() { out[i].State, out[i].AppliedIndex = n.peerStats(ctx, api) })
	}
	wg.Wait()
	return out
}

// peerStats asks the member at api for its own state and applied index.
func (n *Node) peerStats(ctx context.Context, api string) (string, uint64) {
	if api == "" {
		return "unreachable", 0
	}
	ctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, api+"/v1/cluster?local=true", nil)
	if err != nil {
		return "unreachable", 0
	}
	if n.cfg.Token != "" {
		req.Header.Set("Authorization", "Bearer "+n.cfg.Token)
	}
	resp, err := n.hc.Do(req)
	if err != nil {
		return "unreachable", 0
	}
	defer resp.Body.Close()
	var out struct {
		State   string `json:"state"`
		Applied uint64 `json:"applied_index"`
	}
	if resp.StatusCode != http.StatusOK || json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&out) != nil || out.State == "" {
		return "unreachable", 0
	}
	return out.State, out.Applied
}
