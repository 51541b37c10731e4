// Package cluster replicates the lock engine on hashicorp/raft: a node is
// a Raft server whose state machine is a Deterministic engine driven by
// the log (fsm.go), with bbolt for the log and files for snapshots. It
// answers the API through the same calls as a standalone engine (the
// api.Locker interface), forwarding what only the leader may append, and
// waiting for results in its own replica, so that a caller of any node
// rides out a change of leader. docs/cluster.md says what it promises
// and why.
package cluster

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime/pprof"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"

	"github.com/mutexd/mutexd/internal/engine"
)

// Peer is one server of the cluster.
type Peer struct {
	ID   string // node id
	Raft string // Raft transport address, host:port
	API  string // base URL of its HTTP API
}

// Config is what a node needs. Timeouts of zero take the defaults below.
type Config struct {
	NodeID     string
	RaftListen string
	// RaftAdvertise is the address peers dial; RaftListen when empty.
	RaftAdvertise string
	DataDir       string
	// Peers are the initial voters, the same list on every node. Empty,
	// the node bootstraps nothing: it waits for a leader to add it (Join).
	Peers []Peer
	// HeartbeatTimeout and ElectionTimeout are hashicorp/raft's; LAN
	// defaults.
	HeartbeatTimeout time.Duration
	ElectionTimeout  time.Duration
	// FailoverMargin is added to every lease's remaining time when a new
	// leader takes over (engine.Extend).
	FailoverMargin time.Duration
	// SnapshotThreshold, SnapshotInterval and TrailingLogs are Raft's;
	// zero takes the defaults below.
	SnapshotThreshold int
	SnapshotInterval  time.Duration
	TrailingLogs      int
	// Limits and NewEngine make the replica's engine (NewEngine binds the
	// observers: metrics, events, the lease log).
	Limits    engine.Limits
	NewEngine func(engine.Clock, engine.Limits) *engine.Engine
	// Restored, if set, is called with the engine a snapshot installed,
	// once the one it replaced is closed: a restore reports no events, so
	// observers that count from them (metrics' live gauges) must count
	// again from its state. It runs in the apply goroutine.
	Restored func(*engine.Engine)
	// Token authenticates this node's forwarded calls (an admin token);
	// empty when auth is off.
	Token string
	// HTTPClient forwards to the leader; nil makes one.
	HTTPClient *http.Client
	Log        *slog.Logger
	// Observer is told of commits, applies, snapshots, forwards and
	// leader changes as they happen (the metrics); nil tells no one.
	Observer Observer
}

// Defaults for a LAN: a dead leader is noticed within one to two
// heartbeat timeouts and replaced within about a second after that.
const (
	DefaultHeartbeatTimeout = 500 * time.Millisecond
	DefaultElectionTimeout  = 500 * time.Millisecond
	DefaultFailoverMargin   = time.Second
	// The state is small: snapshot often, keep a bounded tail.
	DefaultSnapshotThreshold = 8192
	DefaultSnapshotInterval  = 30 * time.Second
	DefaultTrailingLogs      = 10240
)

// Errors of a node.
var (
	// ErrNoLeader means no leader is known, or it could not be reached
	// in time: the call may be sent again (with the same request id).
	ErrNoLeader = fmt.Errorf("%w: no cluster leader reachable", engine.ErrUnavailable)
	// ErrUnknownOutcome means a call that is not safe to repeat reached
	// a leader that was lost before it answered: it may or may not have
	// been applied.
	ErrUnknownOutcome = fmt.Errorf("%w: the leader was lost before it answered; the call may have been applied", engine.ErrUnavailable)
	// ErrDataDir wraps a data_dir this node cannot use.
	ErrDataDir = errors.New("cluster.data_dir")
)

// Node is one server of a cluster.
type Node struct {
	cfg     Config
	log     *slog.Logger
	raft    *raft.Raft
	fsm     *fsm
	pending *pending
	trans   *raft.NetworkTransport
	store   *raftboltdb.BoltStore
	hc      *http.Client
	// seedAPIs are the initial peers' API URLs from the configuration,
	// used until the log sets them (apiOf).
	seedAPIs map[string]string
	t0       time.Time // the leader's clock reads t0's wall time plus monotonic time since

	notify   <-chan bool // raft's leadership changes
	promoted atomic.Bool // leader, and its promote entry applied
	ready    atomic.Bool

	obs      Observer
	observed chan raft.Observation // raft's leader observations, for obs
	lastSnap atomic.Int64          // unix nanoseconds; see RaftStats.LastSnapshot

	stop chan struct{}
	wg   sync.WaitGroup
}

// Open starts a node: it opens (or creates) data_dir, bootstraps the
// initial peers on first start, and joins the election.
func Open(cfg Config) (*Node, error) {
	if cfg.HeartbeatTimeout <= 0 {
		cfg.HeartbeatTimeout = DefaultHeartbeatTimeout
	}
	if cfg.ElectionTimeout <= 0 {
		cfg.ElectionTimeout = DefaultElectionTimeout
	}
	if cfg.FailoverMargin <= 0 {
		cfg.FailoverMargin = DefaultFailoverMargin
	}
	if cfg.SnapshotThreshold <= 0 {
		cfg.SnapshotThreshold = DefaultSnapshotThreshold
	}
	if cfg.SnapshotInterval <= 0 {
		cfg.SnapshotInterval = DefaultSnapshotInterval
	}
	if cfg.TrailingLogs <= 0 {
		cfg.TrailingLogs = DefaultTrailingLogs
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Observer == nil {
		cfg.Observer = nopObserver{}
	}
	n := &Node{cfg: cfg, log: cfg.Log.With("component", "cluster"), pending: newPending(), seedAPIs: make(map[string]string),
		t0: time.Now(), stop: make(chan struct{}), obs: cfg.Observer, observed: make(chan raft.Observation, 16)}
	for _, p := range cfg.Peers {
		n.seedAPIs[p.ID] = p.API
	}
	n.hc = cfg.HTTPClient
	if n.hc == nil {
		n.hc = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64, IdleConnTimeout: time.Minute, DialContext: (&net.Dialer{Timeout: time.Second}).DialContext}}
	}
	if err := checkDataDir(cfg); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrDataDir, err)
	}
	n.fsm = newFSM(cfg.NodeID, cfg.Limits, cfg.NewEngine, n.pending)
	n.fsm.restored = cfg.Restored
	if err := n.openRaft(); err != nil {
		n.closeStores()
		return nil, err
	}
	n.wg.Add(3)
	go n.watchLeadership()
	go n.watchReady()
	go n.watchLeaderChanges(n.observed)
	if mutation == "followerclock" { // a deliberately broken build: mutation.go
		n.wg.Add(1)
		go n.mutantOwnClock()
	}
	return n, nil
}

func (n *Node) openRaft() error {
	cfg := n.cfg
	hlog := hclog.New(&hclog.LoggerOptions{Name: "raft", Level: hclog.Warn, Output: slogWriter{n.log}})
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.NodeID)
	rc.HeartbeatTimeout = cfg.HeartbeatTimeout
	rc.ElectionTimeout = cfg.ElectionTimeout
	// A leader steps down after this long without hearing from a majority:
	// as long as raft allows, so that a CPU-starved moment (a GC pause, a
	// busy machine) does not cost an election.
	rc.LeaderLeaseTimeout = cfg.HeartbeatTimeout
	// A follower learns that an entry committed from the next append or
	// heartbeat; a node waits for its own replica before it answers, so
	// this bounds what a call through a follower adds.
	rc.CommitTimeout = time.Millisecond
	rc.MaxAppendEntries = 512
	rc.BatchApplyCh = true
	rc.SnapshotInterval = cfg.SnapshotInterval
	rc.SnapshotThreshold = uint64(cfg.SnapshotThreshold)
	rc.TrailingLogs = uint64(cfg.TrailingLogs)
	rc.Logger = hlog
	notify := make(chan bool, 16)
	rc.NotifyCh = notify
	n.notify = notify

	// The freelist is rebuilt on open rather than written with every
	// commit: one page fewer per fsync'd transaction.
	store, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(cfg.DataDir, "raft.db"),
		BoltOptions: &bbolt.Options{Timeout: time.Second, NoFreelistSync: true, FreelistType: bbolt.FreelistMapType}})
	if err != nil {
		return fmt.Errorf("%w: raft log: %w", ErrDataDir, err)
	}
	n.store = store
	snaps, err := raft.NewFileSnapshotStoreWithLogger(filepath.Join(cfg.DataDir, "snapshots"), 2, hlog)
	if err != nil {
		return fmt.Errorf("%w: snapshots: %w", ErrDataDir, err)
	}
	advertise := cfg.RaftAdvertise
	if advertise == "" {
		advertise = cfg.RaftListen
	}
	adv, err := net.ResolveTCPAddr("tcp", advertise)
	if err != nil {
		return fmt.Errorf("cluster.raft_advertise: %w", err)
	}
	trans, err := raft.NewTCPTransportWithLogger(cfg.RaftListen, adv, 4, 5*time.Second, hlog)
	if err != nil {
		return fmt.Errorf("cluster.raft_listen: %w", err)
	}
	n.trans = trans
	has, err := raft.HasExistingState(store, store, snaps)
	if err != nil {
		return err
	}
	if t := snapshotTime(snaps); !t.IsZero() {
		n.lastSnap.Store(t.UnixNano())
	}
	// Replication reads the entries it sends from this cache rather than
	// from bbolt (a tenth of the leader's CPU under load).
	logs, err := raft.NewLogCache(1024, store)
	if err != nil {
		return err
	}
	r, err := raft.NewRaft(rc, observedFSM{fsm: n.fsm, obs: n.obs, lastSnap: &n.lastSnap}, logs, store, snaps, trans)
	if err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	n.raft = r
	// Registered before the first election can end (an election timeout
	// away at least); a full channel drops an observation, never blocks
	// Raft.
	r.RegisterObserver(raft.NewObserver(n.observed, false, func(o *raft.Observation) bool {
		_, ok := o.Data.(raft.LeaderObservation)
		return ok
	}))
	if !has && len(cfg.Peers) > 0 {
		var servers []raft.Server
		for _, p := range cfg.Peers {
			servers = append(servers, raft.Server{ID: raft.ServerID(p.ID), Address: raft.ServerAddress(p.Raft), Suffrage: raft.Voter})
		}
		if err := r.BootstrapCluster(raft.Configuration{Servers: servers}).Error(); err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
			return fmt.Errorf("cluster: bootstrap: %w", err)
		}
	}
	return nil
}

// checkDataDir makes data_dir and refuses one that another node or
// cluster wrote.
func checkDataDir(cfg Config) error {
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return err
	}
	type identity struct {
		NodeID string `json:"node_id"`
		Peers  []Peer `json:"initial_peers"`
	}
	want := identity{NodeID: cfg.NodeID, Peers: cfg.Peers}
	path := filepath.Join(cfg.DataDir, "node.json")
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		b, _ = json.MarshalIndent(want, "", "  ")
		if err := os.WriteFile(path, append(b, '\n'), 0o600); err != nil {
			return err
		}
		return nil
	case err != nil:
		return err
	}
	var got identity
	if err := json.Unmarshal(b, &got); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if got.NodeID != cfg.NodeID {
		return fmt.Errorf("%s belongs to node %q, not %q", cfg.DataDir, got.NodeID, cfg.NodeID)
	}
	return nil
}

// now is the time a leader stamps on entries: the wall clock at start
// plus monotonic time since, so that a wall-clock step cannot cut leases.
func (n *Node) now() time.Time { return n.t0.Add(time.Since(n.t0)) }

// watchLeadership runs lead while this node is the leader.
func (n *Node) watchLeadership() {
	defer n.wg.Done()
	var cancel context.CancelFunc = func() {}
	var led sync.WaitGroup
	defer func() { cancel(); led.Wait() }()
	for {
		select {
		case <-n.stop:
			return
		case leader := <-n.notify:
			cancel()
			led.Wait()
			n.promoted.Store(false)
			if leader {
				ctx, stop := context.WithCancel(context.Background())
				cancel = stop
				led.Add(1)
				go func() { defer led.Done(); n.lead(ctx) }()
			}
		}
	}
}

// lead is a new leader's work: catch up with every committed entry,
// append the promote entry that restarts every deadline, then tick.
func (n *Node) lead(ctx context.Context) {
	if err := n.raft.Barrier(0).Error(); err != nil {
		n.log.Warn("new leader could not catch up", "err", err)
		return
	}
	seed := make([]byte, 32)
	crand.Read(seed)
	c := &command{Op: opPromote, Time: n.now().UnixNano(), Margin: n.cfg.FailoverMargin, Seed: seed}
	if err := n.appendLocal(c); err != nil {
		n.log.Warn("new leader could not promote", "err", err)
		return
	}
	n.promoted.Store(true)
	n.log.Info("leading", "term", n.raft.CurrentTerm())
	n.seedMembers()
	n.tick(ctx)
}

// apiOf returns a member's API URL: as the log set it, else as the
// initial peers gave it.
func (n *Node) apiOf(id string) string {
	if api, ok := n.fsm.memberAPI(id); ok {
		return api
	}
	return n.seedAPIs[id]
}

// seedMembers records in the log the API URL of every initial peer that
// is still a member and has none there yet (a cluster's first leader, or
// one upgraded from a version that kept them in the configuration only).
func (n *Node) seedMembers() {
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return
	}
	set := n.fsm.memberAPIs()
	for _, s := range f.Configuration().Servers {
		id := string(s.ID)
		if _, ok := set[id]; ok || n.seedAPIs[id] == "" {
			continue
		}
		if err := n.appendLocal(&command{Op: opSetMember, MemberID: id, API: n.seedAPIs[id]}); err != nil {
			n.log.Warn("could not record a member's API URL", "member", id, "err", err)
			return
		}
	}
}

// tick appends a tick entry whenever the leader's clock passes the
// replicas' earliest timer, so that deadlines are acted on when nobody
// calls.
func (n *Node) tick(ctx context.Context) {
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		_, clock := n.fsm.state()
		wait := time.Second // also notices a clock replaced by a restore
		if d, ok := clock.next(); ok {
			wait = min(wait, d.Sub(n.now()))
		}
		if wait <= 0 {
			if err := n.appendLocal(&command{Op: opTick, Time: n.now().UnixNano()}); err != nil {
				if ctx.Err() != nil {
					return
				}
				wait = 10 * time.Millisecond
			} else {
				continue
			}
		}
		t.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-clock.changed:
		case <-t.C:
		}
	}
}

// watchReady keeps readiness: a known leader, and this replica caught up
// with the commit index it knew when it learned of that leader.
func (n *Node) watchReady() {
	defer n.wg.Done()
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	var leader raft.ServerID
	var target uint64
	for {
		select {
		case <-n.stop:
			n.setReady(false)
			return
		case <-t.C:
		}
		_, id := n.raft.LeaderWithID()
		if id != leader {
			leader, target = id, n.raft.CommitIndex()
		}
		ok := id != "" && n.applied() >= target
		if n.raft.State() == raft.Leader {
			ok = n.promoted.Load()
		}
		n.setReady(ok)
	}
}

func (n *Node) setReady(ok bool) { n.ready.Store(ok) }

// Ready reports whether the node knows a leader and has caught up with
// the commit index it knew when it learned of it (GET /readyz).
func (n *Node) Ready() bool { return n.ready.Load() }

func (n *Node) applied() uint64 { return max(n.fsm.applied.Load(), n.raft.AppliedIndex()) }

// Close stops the node. A leader hands leadership to another voter first,
// so that calls pause for an election's worth of time at most.
func (n *Node) Close() error {
	done := make(chan error, 1)
	go func() { done <- n.close() }()
	select {
	case err := <-done:
		return err
	case <-time.After(closeBound):
		// The process is about to exit anyway: say where it is stuck.
		var b bytes.Buffer
		_ = pprof.Lookup("goroutine").WriteTo(&b, 1)
		n.log.Error("cluster shutdown did not finish; the goroutines follow", "after", closeBound.String(), "goroutines", b.String())
		return errors.New("cluster: shutdown did not finish in time")
	}
}

// closeBound bounds Close: a leadership transfer, Raft's shutdown and the
// node's own goroutines take well under it.
const closeBound = 20 * time.Second

func (n *Node) close() error {
	if n.raft.State() == raft.Leader && n.voters() > 1 {
		if err := n.raft.LeadershipTransfer().Error(); err != nil {
			n.log.Warn("leadership transfer before shutdown failed", "err", err)
		}
	}
	close(n.stop)
	err := n.raft.Shutdown().Error()
	n.wg.Wait()
	e, _ := n.fsm.state()
	e.Close()
	n.closeStores()
	return err
}

// voters counts the voters of the latest configuration.
func (n *Node) voters() int {
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return 0
	}
	k := 0
	for _, s := range f.Configuration().Servers {
		if s.Suffrage == raft.Voter {
			k++
		}
	}
	return k
}

func (n *Node) closeStores() {
	if n.trans != nil {
		n.trans.Close()
	}
	if n.store != nil {
		n.store.Close()
	}
}

// randomSeq names a request among this node's waiting ones.
func randomSeq() uint64 {
	var b [8]byte
	crand.Read(b[:])
	return binary.LittleEndian.Uint64(b[:]) | 1
}

// slogWriter sends hashicorp/raft's log lines to slog.
type slogWriter struct{ log *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	line := trimNewline(p)
	level := slog.LevelInfo
	switch {
	case bytes.Contains(line, []byte("[ERROR]")):
		level = slog.LevelError
	case bytes.Contains(line, []byte("[WARN]")):
		level = slog.LevelWarn
	}
	w.log.Log(context.Background(), level, string(line))
	return len(p), nil
}

func trimNewline(p []byte) []byte {
	for len(p) > 0 && (p[len(p)-1] == '\n' || p[len(p)-1] == '\r') {
		p = p[:len(p)-1]
	}
	return p
}

var _ io.Writer = slogWriter{}
