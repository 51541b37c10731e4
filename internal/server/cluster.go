package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/mutexd/mutexd/internal/api"
	"github.com/mutexd/mutexd/internal/cluster"
	"github.com/mutexd/mutexd/internal/config"
	"github.com/mutexd/mutexd/internal/engine"
	"github.com/mutexd/mutexd/internal/metrics"
)

// openCluster starts this server's Raft node; its engine reports to the
// same observers a standalone engine would.
func (s *Server) openCluster(limits engine.Limits, obs engine.Observer, raftObs cluster.Observer) error {
	c := s.cfg.Cluster
	peers := make([]cluster.Peer, len(c.Peers))
	for i, p := range c.Peers {
		peers[i] = cluster.Peer{ID: p.ID, Raft: p.Raft, API: p.API}
	}
	var token string
	if s.guard.Tokens().Enabled() {
		token = s.cfg.Auth.AdminTokens[0]
	}
	n, err := cluster.Open(cluster.Config{
		NodeID: c.NodeID, RaftListen: c.RaftListen, RaftAdvertise: c.RaftAdvertise, DataDir: c.DataDir, Peers: peers,
		HeartbeatTimeout: c.HeartbeatTimeout, ElectionTimeout: c.ElectionTimeout, FailoverMargin: c.FailoverMargin,
		SnapshotThreshold: c.SnapshotThreshold, SnapshotInterval: c.SnapshotInterval, TrailingLogs: c.TrailingLogs,
		Limits: limits,
		NewEngine: func(clock engine.Clock, l engine.Limits) *engine.Engine {
			return engine.New(clock, obs, l)
		},
		Restored: func(e *engine.Engine) { s.metrics.Recount(e.EachCount) },
		Token:    token,
		Log:      s.log,
		Observer: raftObs,
	})
	if errors.Is(err, cluster.ErrDataDir) {
		return fmt.Errorf("%w: %w", config.ErrInvalid, err)
	}
	s.node = n
	return err
}

// clusterAPI adapts a node to api.Cluster.
type clusterAPI struct{ n *cluster.Node }

var _ api.Cluster = clusterAPI{}

func (c clusterAPI) ReadBarrier(ctx context.Context, stale bool) error {
	return c.n.ReadBarrier(ctx, stale)
}

func (c clusterAPI) Status(ctx context.Context, local bool) api.ClusterStatus {
	st := c.n.Status(ctx, local)
	out := api.ClusterStatus{NodeID: st.NodeID, State: st.State, LeaderID: st.LeaderID, LeaderAPI: st.LeaderAPI,
		Term: st.Term, CommitIndex: st.CommitIndex, AppliedIndex: st.AppliedIndex, Nodes: make([]api.ClusterNode, len(st.Members))}
	for i, m := range st.Members {
		out.Nodes[i] = api.ClusterNode{ID: m.ID, Raft: m.Raft, API: m.API, Voter: m.Voter, State: m.State}
	}
	return out
}

func (c clusterAPI) Digest() ([]byte, uint64, error) { return c.n.Digest() }

func (c clusterAPI) Apply(ctx context.Context, entry []byte, admin bool) ([]byte, error) {
	res, err := c.n.Apply(ctx, entry, admin)
	return res, apiError(err)
}

func (c clusterAPI) ReadIndex(ctx context.Context) (uint64, error) {
	idx, err := c.n.ReadIndex(ctx)
	return idx, apiError(err)
}

// clusterAdmin adapts a node to api.ClusterAdmin.
type clusterAdmin struct{ n *cluster.Node }

var _ api.ClusterAdmin = clusterAdmin{}

func (c clusterAdmin) Join(ctx context.Context, m api.ClusterJoin, fwd bool) error {
	return apiError(c.n.Join(ctx, cluster.JoinRequest{ID: m.ID, Raft: m.Raft, API: m.API, Voter: m.Voter}, fwd))
}

func (c clusterAdmin) Remove(ctx context.Context, id string, fwd bool) error {
	return apiError(c.n.Remove(ctx, id, fwd))
}

func (c clusterAdmin) TransferLeadership(ctx context.Context, to string, fwd bool) error {
	return apiError(c.n.TransferLeadership(ctx, to, fwd))
}

func (c clusterAdmin) Snapshot(w io.Writer) (uint64, error) { return c.n.Snapshot(w) }

func (c clusterAdmin) Restore(ctx context.Context, file []byte, force, fwd bool) error {
	return apiError(c.n.Restore(ctx, file, force, fwd))
}

// renamed keeps err's detail under the API's sentinel: "<api's
// sentence><the rest of err's message>".
func renamed(apiErr, clusterErr, err error) error {
	return fmt.Errorf("%w%s", apiErr, strings.TrimPrefix(err.Error(), clusterErr.Error()))
}

// apiError gives the cluster's errors the API's names.
func apiError(err error) error {
	for _, m := range []struct{ c, a error }{
		{cluster.ErrMemberExists, api.ErrMemberExists}, {cluster.ErrUnknownMember, api.ErrUnknownMember},
		{cluster.ErrLastVoter, api.ErrLastVoter}, {cluster.ErrNotVoter, api.ErrNotVoter},
		{cluster.ErrClusterRunning, api.ErrClusterRunning}, {cluster.ErrBadSnapshot, api.ErrBadSnapshot},
	} {
		if errors.Is(err, m.c) {
			return renamed(m.a, m.c, err)
		}
	}
	switch {
	case errors.Is(err, cluster.ErrNotLeader):
		return fmt.Errorf("%w: %w", api.ErrNotLeader, err)
	case errors.Is(err, cluster.ErrBadEntry):
		return fmt.Errorf("%w: %w", api.ErrBadEntry, err)
	}
	return err
}

// clusterMetrics adapts a node to metrics.ClusterSource.
type clusterMetrics struct{ n *cluster.Node }

var _ metrics.ClusterSource = clusterMetrics{}

func (c clusterMetrics) RaftStats() metrics.RaftStats {
	st := c.n.RaftStats()
	return metrics.RaftStats{State: st.State, Term: st.Term, CommitIndex: st.CommitIndex, AppliedIndex: st.AppliedIndex,
		FirstIndex: st.FirstIndex, LastIndex: st.LastIndex, LastSnapshot: st.LastSnapshot, StartedAt: st.StartedAt}
}

func (c clusterMetrics) Peers(ctx context.Context) []metrics.Peer {
	peers := c.n.Peers(ctx)
	out := make([]metrics.Peer, len(peers))
	for i, p := range peers {
		out[i] = metrics.Peer{ID: p.ID, Self: p.Self, Voter: p.Voter, State: p.State, AppliedIndex: p.AppliedIndex}
	}
	return out
}
