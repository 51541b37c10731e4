package client

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
)

// ClusterStatus is GET /v1/cluster: a server's view of its cluster.
type ClusterStatus struct {
	NodeID       string          `json:"node_id"`
	State        string          `json:"state"`
	LeaderID     string          `json:"leader_id"`
	LeaderAPI    string          `json:"leader_api"`
	Term         uint64          `json:"term"`
	CommitIndex  uint64          `json:"commit_index"`
	AppliedIndex uint64          `json:"applied_index"`
	Nodes        []ClusterMember `json:"nodes"`
	// Raw is the server's JSON document as it sent it.
	Raw json.RawMessage `json:"-"`
}

// ClusterMember is one server of the cluster's configuration.
type ClusterMember struct {
	ID    string `json:"id"`
	Raft  string `json:"raft"`
	API   string `json:"api"`
	Voter bool   `json:"voter"`
	// State is the member's own answer (leader, follower, candidate) or
	// unreachable.
	State string `json:"state"`
}

// ClusterStatus asks a server of a cluster who leads and how each member
// is (any valid token). A standalone server has no such route (404).
func (c *Client) ClusterStatus(ctx context.Context) (*ClusterStatus, error) {
	resp, err := c.do(ctx, request{method: http.MethodGet, path: "/v1/cluster"})
	if err != nil {
		return nil, fmt.Errorf("cluster status: %w", err)
	}
	var st ClusterStatus
	if err := decode(resp, &st); err != nil {
		return nil, fmt.Errorf("cluster status: %w", err)
	}
	st.Raw = resp.body
	return &st, nil
}

// JoinMember adds a server to the cluster (an admin call): id, its Raft
// host:port, and its API base URL; voter false adds a non-voter, which
// replicates but does not vote. The server must run with cluster.join.
// A clashing id or address returns ErrMemberExists.
func (c *Client) JoinMember(ctx context.Context, id, raftAddr, api string, voter bool) error {
	body := map[string]any{"id": id, "raft": raftAddr, "api": api, "voter": voter}
	if _, err := c.do(ctx, request{method: http.MethodPost, path: "/v1/cluster/members", body: body}); err != nil {
		return fmt.Errorf("join %s: %w", id, err)
	}
	return nil
}

// RemoveMember takes a server out of the cluster (an admin call);
// ErrUnknownMember, ErrLastVoter.
func (c *Client) RemoveMember(ctx context.Context, id string) error {
	if id == "" {
		return fmt.Errorf("remove: %w: the member id is empty", ErrInvalid)
	}
	if _, err := c.do(ctx, request{method: http.MethodDelete, path: "/v1/cluster/members/" + url.PathEscape(id)}); err != nil {
		return fmt.Errorf("remove %s: %w", id, err)
	}
	return nil
}

// TransferLeadership hands the cluster's leadership to the voter to, or
// to any other voter when to is empty, and returns once it has (an admin
// call).
func (c *Client) TransferLeadership(ctx context.Context, to string) error {
	var body any
	if to != "" {
		body = map[string]string{"to": to}
	}
	if _, err := c.do(ctx, request{method: http.MethodPost, path: "/v1/cluster/transfer-leadership", body: body}); err != nil {
		return fmt.Errorf("transfer leadership: %w", err)
	}
	return nil
}

// maxSnapshot bounds a snapshot file, as the server bounds a restore.
const maxSnapshot = 1 << 30

// SaveSnapshot returns the cluster's whole state as a snapshot file (an
// admin call): a backup, which RestoreSnapshot takes.
func (c *Client) SaveSnapshot(ctx context.Context) ([]byte, error) {
	resp, err := c.do(ctx, request{method: http.MethodGet, path: "/v1/cluster/snapshot", limit: maxSnapshot})
	if err != nil {
		return nil, fmt.Errorf("snapshot save: %w", err)
	}
	return resp.body, nil
}

// RestoreSnapshot replaces the cluster's whole state with a snapshot
// file's (an admin call, for disaster recovery). A cluster that holds lock
// state refuses with ErrClusterRunning unless force.
func (c *Client) RestoreSnapshot(ctx context.Context, file []byte, force bool) error {
	if len(file) == 0 {
		return fmt.Errorf("snapshot restore: %w: the file is empty", ErrInvalid)
	}
	q := url.Values{}
	if force {
		q.Set("force", "true")
	}
	if _, err := c.do(ctx, request{method: http.MethodPost, path: "/v1/cluster/snapshot/restore", query: q, raw: file}); err != nil {
		return fmt.Errorf("snapshot restore: %w", err)
	}
	return nil
}
