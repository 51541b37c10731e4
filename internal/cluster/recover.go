package cluster

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"

	"github.com/mutexd/mutexd/internal/engine"
)

// ErrRecover wraps why an offline recovery could not run; nothing was
// changed.
var ErrRecover = errors.New("cluster recover")

// Recover is the way out of a lost quorum, run on a stopped server
// (hashicorp/raft's RecoverCluster): it rewrites this server's data_dir so
// that its configuration has exactly the voters named, each with the Raft
// address the last known configuration gave it. Run it, with the same
// voters, on every surviving server, then start them: they elect a leader
// among themselves, with every entry their logs hold (leases and waiters
// included; the new leader's promote entry restarts their deadlines).
// Entries that a lost server had not replicated to any survivor are lost
// with it. It returns the configuration it found and the one it wrote.
func Recover(dataDir, nodeID string, voters []string) (before, after []Peer, _ error) {
	if len(voters) == 0 {
		return nil, nil, fmt.Errorf("%w: name at least one voter", ErrRecover)
	}
	if !slices.Contains(voters, nodeID) {
		return nil, nil, fmt.Errorf("%w: the voters must include this server (%s)", ErrRecover, nodeID)
	}
	if _, err := os.Stat(filepath.Join(dataDir, "raft.db")); err != nil {
		return nil, nil, fmt.Errorf("%w: %s holds no Raft log: %w", ErrRecover, dataDir, err)
	}
	store, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(dataDir, "raft.db"),
		BoltOptions: &bbolt.Options{Timeout: time.Second}})
	if err != nil {
		if errors.Is(err, bbolt.ErrTimeout) {
			return nil, nil, fmt.Errorf("%w: %s is in use: stop the server first", ErrRecover, dataDir)
		}
		return nil, nil, fmt.Errorf("%w: raft log: %w", ErrRecover, err)
	}
	defer store.Close()
	hlog := hclog.New(&hclog.LoggerOptions{Name: "raft", Level: hclog.Warn, Output: os.Stderr})
	snaps, err := raft.NewFileSnapshotStoreWithLogger(filepath.Join(dataDir, "snapshots"), 2, hlog)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: snapshots: %w", ErrRecover, err)
	}
	_, trans := raft.NewInmemTransport("")
	conf := raft.DefaultConfig()
	conf.LocalID = raft.ServerID(nodeID)
	conf.Logger = hlog
	scratch := func() *fsm {
		return newFSM(nodeID, engine.Limits{}, func(c engine.Clock, l engine.Limits) *engine.Engine { return engine.New(c, nil, l) }, newPending())
	}
	old, err := raft.GetConfiguration(conf, scratch(), store, store, snaps, trans)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: reading the configuration: %w", ErrRecover, err)
	}
	before = peersOf(old.Servers)
	var next raft.Configuration
	for _, id := range voters {
		i := slices.IndexFunc(old.Servers, func(s raft.Server) bool { return string(s.ID) == id })
		if i < 0 {
			return before, nil, fmt.Errorf("%w: %q is not a member of the last configuration this server knows", ErrRecover, id)
		}
		s := old.Servers[i]
		s.Suffrage = raft.Voter
		next.Servers = append(next.Servers, s)
	}
	conf = raft.DefaultConfig()
	conf.LocalID = raft.ServerID(nodeID)
	conf.Logger = hlog
	if err := raft.RecoverCluster(conf, scratch(), store, store, snaps, trans, next); err != nil {
		return before, nil, fmt.Errorf("%w: %w", ErrRecover, err)
	}
	return before, peersOf(next.Servers), nil
}

// peersOf names servers by id and Raft address.
func peersOf(servers []raft.Server) []Peer {
	out := make([]Peer, len(servers))
	for i, s := range servers {
		out[i] = Peer{ID: string(s.ID), Raft: string(s.Address)}
	}
	return out
}
