package api

import (
	"context"
	"encoding/hex"
	"errors"
	"io"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/mutexd/mutexd/internal/auth"
)

// Cluster is what a replicated Locker adds (internal/cluster, adapted by
// internal/server).
type Cluster interface {
	// ReadBarrier waits until the Locker's reads are linearizable: they
	// see every write acknowledged before the barrier began. stale
	// returns at once (the local copy may lag).
	ReadBarrier(ctx context.Context, stale bool) error
	// Status is GET /v1/cluster's answer; local skips asking the other
	// nodes for their state.
	Status(ctx context.Context, local bool) ClusterStatus
	// Digest is a hash of this node's whole lock state and the log index
	// it was taken at, for comparing replicas.
	Digest() (digest []byte, applied uint64, err error)
	// Apply appends an entry a follower forwarded and returns the
	// leader's result for it, opaque to the API. admin says whether the
	// caller's token is an admin's (or auth is off). ErrNotLeader means it
	// was not appended.
	Apply(ctx context.Context, entry []byte, admin bool) ([]byte, error)
	// ReadIndex is the commit index a follower's linearizable read must
	// wait for. ErrNotLeader when this node cannot give one.
	ReadIndex(ctx context.Context) (uint64, error)
}

// Errors a Cluster returns, mapped in toError.
var (
	// ErrNotLeader answers a forward to a node that is not (or no longer)
	// the leader: nothing was appended, so the forward may go elsewhere.
	ErrNotLeader = errors.New("this node is not the cluster leader")
	// ErrBadEntry answers a forward this node will never append.
	ErrBadEntry = errors.New("bad forwarded entry")
)

// The cluster's internal routes, which followers call on the leader.
const (
	InternalApplyPath     = "/v1/internal/apply"
	InternalReadIndexPath = "/v1/internal/read-index"
)

// ClusterStatus is GET /v1/cluster.
type ClusterStatus struct {
	NodeID       string        `json:"node_id"`
	State        string        `json:"state"`
	LeaderID     string        `json:"leader_id"`
	LeaderAPI    string        `json:"leader_api"`
	Term         uint64        `json:"term"`
	CommitIndex  uint64        `json:"commit_index"`
	AppliedIndex uint64        `json:"applied_index"`
	Nodes        []ClusterNode `json:"nodes"`
}

// ClusterNode is one member in ClusterStatus.
type ClusterNode struct {
	ID    string `json:"id"`
	Raft  string `json:"raft"`
	API   string `json:"api"`
	Voter bool   `json:"voter"`
	// State is the member's own answer (leader, follower, candidate) or
	// unreachable.
	State string `json:"state"`
}

// readBarrier parses a read's parameters (stale only) and waits for the
// cluster's read barrier.
func (s *Server) readBarrier(c echo.Context) error {
	p, err := parseParams(c, s.bodyTimeout, pStale)
	if err != nil {
		return err
	}
	return s.barrier(c, &p)
}

// barrier waits for a linearizable read unless p says stale=true.
func (s *Server) barrier(c echo.Context, p *params) error {
	stale, err := staleParam(p)
	if err != nil || s.cluster == nil {
		return err
	}
	return s.cluster.ReadBarrier(c.Request().Context(), stale)
}

func staleParam(p *params) (bool, error) {
	switch v, _ := p.get(pStale); v {
	case "", "false":
		return false, nil
	case "true":
		return true, nil
	default:
		return false, badRequest("invalid_stale", "stale must be true or false; got %q.", clip(v))
	}
}

// clusterStatus serves GET /v1/cluster.
func (s *Server) clusterStatus(c echo.Context) error {
	p, err := parseParams(c, s.bodyTimeout, pLocal)
	if err != nil {
		return err
	}
	local := false
	switch v, _ := p.get(pLocal); v {
	case "", "false":
	case "true":
		local = true
	default:
		return badRequest("invalid_local", "local must be true or false; got %q.", clip(v))
	}
	return c.JSON(http.StatusOK, s.cluster.Status(c.Request().Context(), local))
}

type digestJSON struct {
	AppliedIndex uint64 `json:"applied_index"`
	Digest       string `json:"digest"`
}

// clusterDigest serves GET /v1/cluster/digest: this node's state as of
// its applied index (or, without stale=true, after a read barrier).
func (s *Server) clusterDigest(c echo.Context) error {
	if err := s.readBarrier(c); err != nil {
		return err
	}
	d, idx, err := s.cluster.Digest()
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, digestJSON{AppliedIndex: idx, Digest: hex.EncodeToString(d)})
}

// internalApply serves POST /v1/internal/apply: an entry a follower
// forwarded. Its route needs an admin token, which nodes forward with;
// admin ops are checked again by the cluster.
func (s *Server) internalApply(c echo.Context) error {
	body, err := io.ReadAll(io.LimitReader(c.Request().Body, MaxBodyBytes+1))
	if err != nil {
		return badRequest("invalid_body", "The request body could not be read.")
	}
	if len(body) > MaxBodyBytes {
		return echo.ErrStatusRequestEntityTooLarge
	}
	admin := s.authorize(c, auth.Admin) == nil
	res, err := s.cluster.Apply(c.Request().Context(), body, admin)
	if err != nil {
		return err
	}
	return c.JSONBlob(http.StatusOK, res)
}

type readIndexJSON struct {
	Index uint64 `json:"index"`
}

// internalReadIndex serves GET /v1/internal/read-index.
func (s *Server) internalReadIndex(c echo.Context) error {
	idx, err := s.cluster.ReadIndex(c.Request().Context())
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, readIndexJSON{Index: idx})
}
