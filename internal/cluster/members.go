package cluster

import (
	"bufio"
	"bytes"
	"context"
	crand "crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/hashicorp/raft"

	"github.com/mutexd/mutexd/internal/engine"
)

// Errors of the membership and snapshot calls. Each one means nothing was
// changed.
var (
	// ErrMemberExists refuses a join whose id, Raft address or API URL a
	// member already has.
	ErrMemberExists = errors.New("a member already has this id or address")
	// ErrUnknownMember names no member of the configuration.
	ErrUnknownMember = errors.New("no such member")
	// ErrLastVoter refuses to remove the only voter (the cluster would
	// have nobody to elect), or to hand leadership on when no other voter
	// exists.
	ErrLastVoter = errors.New("it is the cluster's only voter")
	// ErrNotVoter refuses to hand leadership to a non-voter.
	ErrNotVoter = errors.New("the member is not a voter")
	// ErrClusterRunning refuses a restore onto a cluster that holds lock
	// state (any key or remembered outcome), unless forced: a restore
	// replaces every lease and waiter with the backup's.
	ErrClusterRunning = errors.New("the cluster holds lock state; a restore would replace it")
	// ErrBadSnapshot is a restore body that is not a snapshot this
	// version of mutexd wrote.
	ErrBadSnapshot = errors.New("not a mutexd cluster snapshot")
)

// The admin routes a node forwards to the leader (served by internal/api,
// which names them the same).
const (
	MembersPath          = "/v1/cluster/members"
	TransferPath         = "/v1/cluster/transfer-leadership"
	SnapshotRestorePath  = "/v1/cluster/snapshot/restore"
	ForwardedHeader      = "Mutexd-Forwarded"
	snapshotMagic        = "mutexd-cluster-snapshot"
	snapshotFileVersion  = 1
	maxForwardErrorBytes = 16 << 10
)

// JoinRequest is a server to add.
type JoinRequest struct {
	ID    string `json:"id"`
	Raft  string `json:"raft"`
	API   string `json:"api"`
	Voter bool   `json:"voter"`
}

// leading reports whether this node leads and has taken over (its
// promote entry applied).
func (n *Node) leading() bool { return n.raft.State() == raft.Leader && n.promoted.Load() }

// configuration is the latest Raft configuration.
func (n *Node) configuration() ([]raft.Server, error) {
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNotLeader, err)
	}
	return f.Configuration().Servers, nil
}

// Join adds a server (a voter, or a non-voter that only replicates) and
// records its API URL in the log. On a follower it is forwarded to the
// leader, unless fwd says it was forwarded already (ErrNotLeader then).
// A clashing id, Raft address or API URL is ErrMemberExists; the same
// join again (a retry after a lost answer) changes nothing and succeeds.
func (n *Node) Join(ctx context.Context, j JoinRequest, fwd bool) error {
	if !n.leading() {
		b, _ := json.Marshal(j)
		return n.forwardAdmin(ctx, fwd, http.MethodPost, MembersPath, b)
	}
	servers, err := n.configuration()
	if err != nil {
		return err
	}
	for _, s := range servers {
		if string(s.ID) == j.ID && string(s.Address) == j.Raft && n.apiOf(j.ID) == j.API && (s.Suffrage == raft.Voter) == j.Voter {
			return nil // this very join, sent again after an answer was lost
		}
	}
	for _, s := range servers {
		switch {
		case string(s.ID) == j.ID:
			return fmt.Errorf("%w: id %q is a member's", ErrMemberExists, j.ID)
		case string(s.Address) == j.Raft:
			return fmt.Errorf("%w: raft address %q is member %s's", ErrMemberExists, j.Raft, s.ID)
		case n.apiOf(string(s.ID)) == j.API:
			return fmt.Errorf("%w: api %q is member %s's", ErrMemberExists, j.API, s.ID)
		}
	}
	// The URL first: the new server finds it in the log it catches up
	// with, before it can be asked to forward anything.
	if err := n.appendLocal(&command{Op: opSetMember, MemberID: j.ID, API: j.API}); err != nil {
		return leaderError(err)
	}
	add := n.raft.AddNonvoter
	if j.Voter {
		add = n.raft.AddVoter
	}
	if err := add(raft.ServerID(j.ID), raft.ServerAddress(j.Raft), 0, applyTimeout).Error(); err != nil {
		return leaderError(err)
	}
	n.log.Info("member joined", "member", j.ID, "raft", j.Raft, "api", j.API, "voter", j.Voter)
	return nil
}

// Remove takes a member out of the configuration and forgets its API
// URL. It refuses to remove the only voter (ErrLastVoter). A leader that
// removes itself steps down once the change is committed.
func (n *Node) Remove(ctx context.Context, id string, fwd bool) error {
	if !n.leading() {
		return n.forwardAdmin(ctx, fwd, http.MethodDelete, MembersPath+"/"+id, nil)
	}
	servers, err := n.configuration()
	if err != nil {
		return err
	}
	var found *raft.Server
	voters := 0
	for i, s := range servers {
		if s.Suffrage == raft.Voter {
			voters++
		}
		if string(s.ID) == id {
			found = &servers[i]
		}
	}
	switch {
	case found == nil:
		return fmt.Errorf("%w: %q", ErrUnknownMember, id)
	case found.Suffrage == raft.Voter && voters == 1:
		return fmt.Errorf("%w: %q", ErrLastVoter, id)
	}
	if err := n.raft.RemoveServer(raft.ServerID(id), 0, applyTimeout).Error(); err != nil {
		return leaderError(err)
	}
	n.log.Info("member removed", "member", id)
	if id != n.cfg.NodeID {
		if err := n.appendLocal(&command{Op: opSetMember, MemberID: id}); err != nil {
			n.log.Warn("could not forget a removed member's API URL", "member", id, "err", err)
		}
	}
	return nil
}

// TransferLeadership hands leadership to the voter to, or to the most
// up-to-date other voter when to is empty, and returns once it has.
func (n *Node) TransferLeadership(ctx context.Context, to string, fwd bool) error {
	if !n.leading() {
		b, _ := json.Marshal(map[string]string{"to": to})
		return n.forwardAdmin(ctx, fwd, http.MethodPost, TransferPath, b)
	}
	servers, err := n.configuration()
	if err != nil {
		return err
	}
	var target *raft.Server
	others := 0
	for i, s := range servers {
		if s.Suffrage == raft.Voter && string(s.ID) != n.cfg.NodeID {
			others++
		}
		if string(s.ID) == to {
			target = &servers[i]
		}
	}
	switch {
	case to != "" && target == nil:
		return fmt.Errorf("%w: %q", ErrUnknownMember, to)
	case to == n.cfg.NodeID:
		return nil // it leads already
	case target != nil && target.Suffrage != raft.Voter:
		return fmt.Errorf("%w: %q", ErrNotVoter, to)
	case others == 0:
		return fmt.Errorf("%w: no other voter to lead", ErrLastVoter)
	}
	var f raft.Future
	if target != nil {
		f = n.raft.LeadershipTransferToServer(target.ID, target.Address)
	} else {
		f = n.raft.LeadershipTransfer()
	}
	if err := f.Error(); err != nil {
		return leaderError(err)
	}
	n.log.Info("leadership transferred", "to", to)
	return nil
}

// leaderError names a raft error of a call on the leader: not appended
// when it lost leadership or timed out queueing, unknown otherwise.
func leaderError(err error) error {
	switch {
	case errors.Is(err, ErrNotLeader):
		return err
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrEnqueueTimeout), errors.Is(err, raft.ErrRaftShutdown),
		errors.Is(err, raft.ErrLeadershipTransferInProgress):
		return fmt.Errorf("%w: %w", ErrNotLeader, err)
	}
	return fmt.Errorf("%w: %w", ErrUnknownOutcome, err)
}

// snapshotFileHeader is the first line of a snapshot file, before the
// state machine's own encoding.
type snapshotFileHeader struct {
	Magic        string `json:"format"`
	Version      int    `json:"version"`
	NodeID       string `json:"node_id"`
	AppliedIndex uint64 `json:"applied_index"`
	Created      string `json:"created"`
}

// Snapshot writes this replica's whole state to w as a snapshot file (a
// backup): one JSON header line, then the state machine's canonical
// encoding. Call ReadBarrier first for a state that includes every
// acknowledged write. It returns the applied index the file reflects.
func (n *Node) Snapshot(w io.Writer) (uint64, error) {
	b, idx, err := n.fsm.digest()
	if err != nil {
		return 0, err
	}
	h, _ := json.Marshal(snapshotFileHeader{Magic: snapshotMagic, Version: snapshotFileVersion, NodeID: n.cfg.NodeID,
		AppliedIndex: idx, Created: time.Now().UTC().Format(time.RFC3339)})
	if _, err := w.Write(append(h, '\n')); err != nil {
		return 0, err
	}
	_, err = w.Write(b)
	return idx, err
}

// Restore replaces the whole cluster's state with a snapshot file's (a
// disaster-recovery step, through raft's Restore on the leader: every
// member installs it). The members and their API URLs stay the running
// cluster's. It refuses a cluster that holds lock state unless force
// (ErrClusterRunning). The leader then promotes again, so every restored
// lease gets back the time it had left when the backup was taken, plus
// the failover margin.
func (n *Node) Restore(ctx context.Context, file []byte, force, fwd bool) error {
	state, err := n.checkSnapshot(file)
	if err != nil {
		return err
	}
	if !n.leading() {
		path := SnapshotRestorePath
		if force {
			path += "?force=true"
		}
		return n.forwardAdmin(ctx, fwd, http.MethodPost, path, file)
	}
	if e, _ := n.fsm.state(); !force {
		if st := e.Stats(); st.Keys > 0 || st.Remembered > 0 {
			return fmt.Errorf("%w (%d keys, %d remembered outcomes); pass force to replace it", ErrClusterRunning, st.Keys, st.Remembered)
		}
	}
	// Keep the running cluster's members: the backup's may be gone.
	nl := bytes.IndexByte(state, '\n')
	var h snapHeader
	if err := json.Unmarshal(state[:nl], &h); err != nil {
		return fmt.Errorf("%w: %w", ErrBadSnapshot, err)
	}
	h.Members = n.fsm.memberAPIs()
	hb, err := json.Marshal(h)
	if err != nil {
		return err
	}
	state = append(append(hb, '\n'), state[nl+1:]...)

	n.promoted.Store(false) // nothing else is appended until the new promote entry
	defer func() {
		if n.raft.State() == raft.Leader {
			n.promoted.Store(true)
		}
	}()
	meta := &raft.SnapshotMeta{Version: raft.SnapshotVersionMax, Size: int64(len(state))}
	if err := n.raft.Restore(meta, bytes.NewReader(state), 30*time.Second); err != nil {
		return leaderError(err)
	}
	seed := make([]byte, 32)
	crand.Read(seed)
	if err := n.appendLocal(&command{Op: opPromote, Margin: n.cfg.FailoverMargin, Seed: seed}); err != nil {
		return leaderError(err)
	}
	n.log.Warn("cluster state restored from a snapshot file", "forced", force)
	return nil
}

// checkSnapshot parses a snapshot file and decodes its state into a
// scratch engine, so that raft is never handed one it cannot restore
// (raft stops the server on a failed restore). It returns the state
// machine's part.
func (n *Node) checkSnapshot(file []byte) ([]byte, error) {
	nl := bytes.IndexByte(file, '\n')
	if nl < 0 {
		return nil, fmt.Errorf("%w: no header line", ErrBadSnapshot)
	}
	var fh snapshotFileHeader
	if err := json.Unmarshal(file[:nl], &fh); err != nil || fh.Magic != snapshotMagic {
		return nil, fmt.Errorf("%w: the first line is not a mutexd snapshot header", ErrBadSnapshot)
	}
	if fh.Version != snapshotFileVersion {
		return nil, fmt.Errorf("%w: file version %d, this mutexd reads %d", ErrBadSnapshot, fh.Version, snapshotFileVersion)
	}
	state := file[nl+1:]
	br := bufio.NewReader(bytes.NewReader(state))
	line, err := br.ReadBytes('\n')
	var h snapHeader
	if err != nil || json.Unmarshal(line, &h) != nil || h.Version != 1 {
		return nil, fmt.Errorf("%w: bad state header", ErrBadSnapshot)
	}
	limits := n.cfg.Limits
	limits.Deterministic = true
	e := engine.New(newLogClock(), nil, limits)
	defer e.Close()
	if err := e.Restore(br); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadSnapshot, err)
	}
	return state, nil
}

// forwardAdmin sends an admin call to the leader's API and maps its
// answer back to this package's errors. A call forwarded once is not
// forwarded again (ErrNotLeader), so two servers that disagree on the
// leader cannot pass it back and forth; the first server retries while no
// leader is known or the one it asked no longer leads, within a
// failover's time.
func (n *Node) forwardAdmin(ctx context.Context, fwd bool, method, path string, body []byte) error {
	if fwd {
		return ErrNotLeader
	}
	ctx, cancel := context.WithTimeout(ctx, n.proposeBound()+applyTimeout)
	defer cancel()
	backoff := 5 * time.Millisecond
	for {
		err := n.forwardOnce(ctx, method, path, body)
		if !errors.Is(err, ErrNotLeader) && !errors.Is(err, ErrNoLeader) {
			return err
		}
		select {
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

func (n *Node) forwardOnce(ctx context.Context, method, path string, body []byte) error {
	if n.leading() {
		return ErrNotLeader // it became the leader: the caller asks it directly
	}
	_, id := n.raft.LeaderWithID()
	api := n.apiOf(string(id))
	if id == "" || api == "" {
		return ErrNoLeader
	}
	req, err := http.NewRequestWithContext(ctx, method, api+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set(ForwardedHeader, n.cfg.NodeID)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if n.cfg.Token != "" {
		req.Header.Set("Authorization", "Bearer "+n.cfg.Token)
	}
	resp, err := n.hc.Do(req)
	if err != nil {
		return ErrNoLeader
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 == 2 {
		return nil
	}
	var e struct {
		Code    string `json:"error"`
		Message string `json:"message"`
	}
	_ = json.NewDecoder(io.LimitReader(resp.Body, maxForwardErrorBytes)).Decode(&e)
	if sentinel, ok := forwardedErrors[e.Code]; ok {
		return fmt.Errorf("%w (leader %s: %s)", sentinel, id, e.Message)
	}
	switch resp.StatusCode {
	case http.StatusMisdirectedRequest:
		return ErrNotLeader
	case http.StatusServiceUnavailable:
		return fmt.Errorf("%w (leader %s: %s)", ErrUnknownOutcome, id, e.Message)
	}
	return fmt.Errorf("%w (leader %s answered %d %s: %s)", errRefused, id, resp.StatusCode, e.Code, e.Message)
}

// forwardedErrors are the API codes of this file's errors, as the leader
// answers them (internal/api/errors.go maps them).
var forwardedErrors = map[string]error{
	"member_exists":    ErrMemberExists,
	"unknown_member":   ErrUnknownMember,
	"last_voter":       ErrLastVoter,
	"not_voter":        ErrNotVoter,
	"cluster_running":  ErrClusterRunning,
	"invalid_snapshot": ErrBadSnapshot,
	"not_leader":       ErrNotLeader,
}
