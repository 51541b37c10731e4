package api

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"
)

// ClusterAdmin is what an operator changes in a cluster: its members, its
// leader, and (for disaster recovery) its whole state. Every call may be
// made on any server: a follower forwards it to the leader, unless
// forwarded says another server did already (then ErrNotLeader, so that
// two servers that disagree on the leader cannot pass a call back and
// forth).
type ClusterAdmin interface {
	// Join adds a server; ErrMemberExists when its id, Raft address or
	// API URL is a member's.
	Join(ctx context.Context, m ClusterJoin, forwarded bool) error
	// Remove takes a member out; ErrUnknownMember, ErrLastVoter.
	Remove(ctx context.Context, id string, forwarded bool) error
	// TransferLeadership hands leadership to the voter to (any other
	// voter when empty) and returns once it has; ErrUnknownMember,
	// ErrNotVoter, ErrLastVoter.
	TransferLeadership(ctx context.Context, to string, forwarded bool) error
	// Snapshot writes this server's whole state as a snapshot file (read
	// it after a read barrier) and returns the log index it reflects.
	Snapshot(w io.Writer) (applied uint64, err error)
	// Restore replaces the cluster's state with a snapshot file's;
	// ErrBadSnapshot, and ErrClusterRunning unless force.
	Restore(ctx context.Context, file []byte, force, forwarded bool) error
}

// ClusterJoin is a server to add (POST /v1/cluster/members).
type ClusterJoin struct {
	ID, Raft, API string
	Voter         bool
}

// Errors a ClusterAdmin returns, mapped in toError. Each one means that
// nothing changed.
var (
	ErrMemberExists   = errors.New("a member already has this id or address")
	ErrUnknownMember  = errors.New("no such member")
	ErrLastVoter      = errors.New("it is the cluster's only voter")
	ErrNotVoter       = errors.New("the member is not a voter")
	ErrClusterRunning = errors.New("the cluster holds lock state")
	ErrBadSnapshot    = errors.New("not a mutexd cluster snapshot")
)

// ForwardedHeader marks an admin call a server forwarded to the leader
// (internal/cluster sends it, under the same name).
const ForwardedHeader = "Mutexd-Forwarded"

// MaxSnapshotBytes bounds a restore's body.
const MaxSnapshotBytes = 1 << 30

// memberIDPattern is cluster.node_id's.
var memberIDPattern = regexp.MustCompile(`^[a-z0-9-]{1,32}$`)

func (s *Server) clusterAdminRoutes() []route {
	return []route{
		{http.MethodPost, "/v1/cluster/members", tierAdmin, s.clusterJoin, answers(204, 400, 409, 413, 421, statusClientClosed, 503)},
		{http.MethodDelete, "/v1/cluster/members/:id", tierAdmin, s.clusterRemove, answers(204, 400, 404, 409, 413, 421, statusClientClosed, 503)},
		{http.MethodPost, "/v1/cluster/transfer-leadership", tierAdmin, s.clusterTransfer, answers(204, 400, 404, 409, 413, 421, statusClientClosed, 503)},
		{http.MethodGet, "/v1/cluster/snapshot", tierAdmin, s.clusterSnapshot, answers(200, 400, 413, statusClientClosed, 503)},
		{http.MethodPost, "/v1/cluster/snapshot/restore", tierAdmin, s.clusterRestore, answers(204, 400, 409, 413, 421, statusClientClosed, 503)},
	}
}

func forwardedByPeer(c echo.Context) bool { return c.Request().Header.Get(ForwardedHeader) != "" }

// clusterJoin serves POST /v1/cluster/members {"id","raft","api","voter"}.
func (s *Server) clusterJoin(c echo.Context) error {
	p, err := parseParams(c, s.bodyTimeout, pID, pRaft, pAPI, pVoter)
	if err != nil {
		return err
	}
	id, _ := p.get(pID)
	raftAddr, _ := p.get(pRaft)
	api, _ := p.get(pAPI)
	if err := checkMemberID(id); err != nil {
		return err
	}
	if host, port, err := net.SplitHostPort(raftAddr); err != nil || host == "" || port == "" {
		return badRequest("invalid_raft", "raft must be the new server's Raft host:port; got %q.", clip(raftAddr))
	}
	if u, err := url.Parse(api); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" {
		return badRequest("invalid_api", "api must be the new server's http:// or https:// base URL; got %q.", clip(api))
	}
	voter := true
	switch v, set := p.get(pVoter); {
	case !set:
	case v == "true":
	case v == "false":
		voter = false
	default:
		return badRequest("invalid_voter", "voter must be true or false; got %q.", clip(v))
	}
	if err := s.admin.Join(c.Request().Context(), ClusterJoin{ID: id, Raft: raftAddr, API: api, Voter: voter}, forwardedByPeer(c)); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}

func checkMemberID(id string) error {
	if !memberIDPattern.MatchString(id) {
		return badRequest("invalid_id", "A member id is 1 to 32 of a-z, 0-9 and -; got %q.", clip(id))
	}
	return nil
}

// clusterRemove serves DELETE /v1/cluster/members/{id}.
func (s *Server) clusterRemove(c echo.Context) error {
	if _, err := parseParams(c, s.bodyTimeout); err != nil {
		return err
	}
	id, err := url.PathUnescape(c.Param("id"))
	if err != nil {
		return badRequest("invalid_id", "The member id is not a valid path segment.")
	}
	if err := checkMemberID(id); err != nil {
		return err
	}
	if err := s.admin.Remove(c.Request().Context(), id, forwardedByPeer(c)); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}

// clusterTransfer serves POST /v1/cluster/transfer-leadership {"to"}.
func (s *Server) clusterTransfer(c echo.Context) error {
	p, err := parseParams(c, s.bodyTimeout, pTo)
	if err != nil {
		return err
	}
	to, _ := p.get(pTo)
	if to != "" {
		if err := checkMemberID(to); err != nil {
			return err
		}
	}
	if err := s.admin.TransferLeadership(c.Request().Context(), to, forwardedByPeer(c)); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}

// clusterSnapshot serves GET /v1/cluster/snapshot: this server's state,
// after a read barrier (so it holds every acknowledged write), as a file.
func (s *Server) clusterSnapshot(c echo.Context) error {
	if err := s.readBarrier(c); err != nil {
		return err
	}
	var buf bytesBuffer
	idx, err := s.admin.Snapshot(&buf)
	if err != nil {
		return err
	}
	h := c.Response().Header()
	h.Set("Content-Disposition", `attachment; filename="mutexd-snapshot-`+strconv.FormatUint(idx, 10)+`.snap"`)
	h.Set("Mutexd-Applied-Index", strconv.FormatUint(idx, 10))
	return c.Blob(http.StatusOK, "application/octet-stream", buf.b)
}

// clusterRestore serves POST /v1/cluster/snapshot/restore[?force=true]:
// the body is a file GET /v1/cluster/snapshot wrote.
func (s *Server) clusterRestore(c echo.Context) error {
	force := false
	switch v := c.QueryParam("force"); v {
	case "", "false":
	case "true":
		force = true
	default:
		return badRequest("invalid_force", "force must be true or false; got %q.", clip(v))
	}
	for name := range c.QueryParams() {
		if name != "force" {
			return unknownParam(name, []param{pForce})
		}
	}
	r := c.Request()
	if r.ContentLength > MaxSnapshotBytes {
		return errSnapshotTooLarge
	}
	rc := http.NewResponseController(c.Response())
	_ = rc.SetReadDeadline(time.Now().Add(10 * s.bodyTimeout)) // a large file, but it must keep coming
	file, err := io.ReadAll(io.LimitReader(r.Body, MaxSnapshotBytes+1))
	if err != nil {
		c.Response().Header().Set(echo.HeaderConnection, "close")
		return badRequest("invalid_body", "The snapshot file could not be read in time.")
	}
	_ = rc.SetReadDeadline(time.Time{})
	if len(file) > MaxSnapshotBytes {
		return errSnapshotTooLarge
	}
	if err := s.admin.Restore(r.Context(), file, force, forwardedByPeer(c)); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}

var errSnapshotTooLarge = &Error{Status: http.StatusRequestEntityTooLarge, Code: "body_too_large", Message: "The snapshot file is over 1 GiB."}

type bytesBuffer struct{ b []byte }

func (w *bytesBuffer) Write(p []byte) (int, error) { w.b = append(w.b, p...); return len(p), nil }
