package cluster

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"github.com/mutexd/mutexd/internal/engine"
)

// fsm is the lock engine as a Raft state machine. Apply reads no clock,
// no randomness and no map order: the time is the entry's, tokens come
// from a generator seeded through the log, and the engine is
// Deterministic. raft calls Apply, ApplyBatch, Snapshot and Restore from
// one goroutine.
type fsm struct {
	self   string
	newEng func(engine.Clock, engine.Limits) *engine.Engine
	// restored is Config.Restored, or nil.
	restored func(*engine.Engine)
	limits   engine.Limits
	pending  *pending

	// eng and clock are replaced by Restore; readers take them through
	// state().
	mu    sync.RWMutex // guards eng, clock and rng
	eng   *engine.Engine
	clock *logClock
	rng   *rand.ChaCha8 // nil until the first leader seeds it
	// term is the Raft term of the last promote entry applied: only the
	// entries its leader appended after it (and older ones) are applied.
	term uint64
	// members maps a member's id to its API URL (opSetMember entries,
	// kept in snapshots): how a follower reaches whichever server leads.
	members map[string]string

	applied  atomic.Uint64
	appliedC chan struct{} // closed and replaced after every apply
	appliedM sync.Mutex    // guards appliedC
}

var _ raft.BatchingFSM = (*fsm)(nil)

func newFSM(self string, limits engine.Limits, newEng func(engine.Clock, engine.Limits) *engine.Engine, p *pending) *fsm {
	f := &fsm{self: self, newEng: newEng, limits: limits, pending: p, appliedC: make(chan struct{}), members: map[string]string{}}
	f.eng, f.clock = f.build()
	return f
}

// build makes an empty engine on a new log clock.
func (f *fsm) build() (*engine.Engine, *logClock) {
	clock := newLogClock()
	limits := f.limits
	limits.Deterministic = true
	limits.Tokens = f.token
	eng := f.newEng(clock, limits)
	clock.expireDue = eng.ExpireDue
	return eng, clock
}

// token draws a lease token from the log-seeded generator. It runs
// inside Apply only.
func (f *fsm) token() engine.Token {
	var t engine.Token
	if f.rng == nil {
		// No leader has seeded it: cannot happen, as a leader's first
		// entry seeds it before any acquire. A fixed seed keeps the
		// replicas identical all the same.
		f.rng = rand.NewChaCha8([32]byte{})
	}
	binary.LittleEndian.PutUint64(t[:8], f.rng.Uint64())
	binary.LittleEndian.PutUint64(t[8:], f.rng.Uint64())
	return t
}

func (f *fsm) state() (*engine.Engine, *logClock) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.eng, f.clock
}

// Apply applies one entry.
func (f *fsm) Apply(l *raft.Log) any {
	return f.ApplyBatch([]*raft.Log{l})[0]
}

// ApplyBatch applies the entries raft committed together.
func (f *fsm) ApplyBatch(logs []*raft.Log) []any {
	out := make([]any, len(logs))
	f.mu.Lock()
	for i, l := range logs {
		if l.Type != raft.LogCommand {
			continue
		}
		c, err := decodeCommand(l.Data)
		if err != nil {
			// Only a leader appends, after decoding it: cannot happen.
			out[i] = &result{err: err}
			continue
		}
		var r *result
		if c.Op != opPromote && l.Term > f.term {
			// A leader's entry from before its promote entry (it believed
			// itself promoted from an earlier term): its time would skip
			// the deadline restart. Every replica refuses it alike.
			r = &result{err: errUnpromoted}
		} else {
			if c.Op == opPromote {
				f.term = l.Term
			}
			r = f.applyLocked(c)
		}
		out[i] = r
		if c.Origin == f.self && c.Seq != 0 {
			f.pending.deliver(c.Seq, r)
		}
	}
	f.mu.Unlock()
	if n := len(logs); n > 0 {
		f.setApplied(logs[n-1].Index)
	}
	return out
}

func (f *fsm) applyLocked(c *command) *result {
	t := time.Unix(0, c.Time)
	e, clock := f.eng, f.clock
	if c.Op == opPromote {
		prev := clock.Now()
		clock.set(t)
		e.Extend(prev, c.Margin)
		if f.rng == nil && len(c.Seed) == 32 {
			f.rng = rand.NewChaCha8([32]byte(c.Seed))
		}
		clock.advance(t)
		return &result{}
	}
	clock.advance(t)
	r := &result{}
	switch c.Op {
	case opAcquire:
		r.grant, r.waiting, r.err = e.Submit(c.Key, c.options())
	case opRelease:
		r.ended, r.err = e.Release(c.Key, c.token(), c.Failed)
	case opRenew:
		if mutation == "skiprenew" { // a deliberately broken build: mutation.go
			r.renewal, r.err = mutantRenew(e, c)
			break
		}
		r.renewal, r.err = e.Renew(c.Key, c.token(), c.TTL)
	case opForce:
		r.ended, r.err = e.ForceRelease(c.Key)
	case opAbandon:
		e.Abandon(c.Key, c.Fence)
	case opDetach:
		e.Detach(c.Key, c.RequestID, c.Attempt, c.WontReturn)
	case opPause:
		r.ok = e.Pause(c.Key)
	case opResume:
		r.ok = e.Resume(c.Key)
	case opPausePrefix:
		r.n = e.PausePrefix(c.Key)
	case opResumePrefix:
		r.n = e.ResumePrefix(c.Key)
	case opDrain:
		r.n = e.Drain(c.Key, c.Reason)
	case opDrainPrefix:
		r.n = e.DrainPrefix(c.Key, c.Reason)
	case opSetMember:
		if c.API == "" {
			delete(f.members, c.MemberID)
		} else {
			f.members[c.MemberID] = c.API
		}
	case opTick:
	}
	return r
}

// memberAPI returns a member's API URL as the log last set it.
func (f *fsm) memberAPI(id string) (string, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	api, ok := f.members[id]
	return api, ok
}

// memberAPIs returns a copy of every member's API URL the log set.
func (f *fsm) memberAPIs() map[string]string {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return maps.Clone(f.members)
}

func (f *fsm) setApplied(i uint64) {
	f.applied.Store(i)
	f.appliedM.Lock()
	close(f.appliedC)
	f.appliedC = make(chan struct{})
	f.appliedM.Unlock()
}

// appliedChanged returns a channel closed at the next apply.
func (f *fsm) appliedChanged() <-chan struct{} {
	f.appliedM.Lock()
	defer f.appliedM.Unlock()
	return f.appliedC
}

// snapHeader precedes the engine's own snapshot.
type snapHeader struct {
	Version int    `json:"version"`
	Time    int64  `json:"time"`
	Term    uint64 `json:"term"`
	// Applied is the last entry the FSM applied, so that a replica
	// restored from the snapshot knows how far reads may trust it.
	Applied uint64 `json:"applied,omitempty"`
	RNG     []byte `json:"rng,omitempty"`
	// Members are the members' API URLs (encoding/json writes a map in
	// key order, so the encoding stays canonical).
	Members map[string]string `json:"members,omitempty"`
}

// errUnpromoted answers an entry its leader appended before its promote
// entry; the call is sent again.
var errUnpromoted = fmt.Errorf("%w: the leader had not taken over yet", ErrNotLeader)

// Snapshot captures the state. The engine is small, so it is written
// here, in the apply goroutine, into memory; Persist only copies bytes.
func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	b, err := f.encodeLocked()
	if err != nil {
		return nil, err
	}
	return snapBytes(b), nil
}

func (f *fsm) encodeLocked() ([]byte, error) {
	h := snapHeader{Version: 1, Time: f.clock.Now().UnixNano(), Term: f.term, Applied: f.applied.Load(), Members: f.members}
	if f.rng != nil {
		rb, err := f.rng.MarshalBinary()
		if err != nil {
			return nil, err
		}
		h.RNG = rb
	}
	var buf bytesBuffer
	if err := json.NewEncoder(&buf).Encode(h); err != nil {
		return nil, err
	}
	if err := f.eng.Snapshot(&buf); err != nil {
		return nil, err
	}
	return buf.b, nil
}

// Restore replaces the state with a snapshot's.
func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	br := bufio.NewReader(rc)
	line, err := br.ReadBytes('\n')
	if err != nil {
		return fmt.Errorf("cluster: snapshot header: %w", err)
	}
	var h snapHeader
	if err := json.Unmarshal(line, &h); err != nil || h.Version != 1 {
		return fmt.Errorf("cluster: snapshot header %q: version %d, %v", line, h.Version, err)
	}
	eng, clock := f.build()
	clock.set(time.Unix(0, h.Time))
	var rng *rand.ChaCha8
	if h.RNG != nil {
		rng = new(rand.ChaCha8)
		if err := rng.UnmarshalBinary(h.RNG); err != nil {
			return fmt.Errorf("cluster: snapshot token generator: %w", err)
		}
	}
	if err := eng.Restore(br); err != nil {
		return fmt.Errorf("cluster: snapshot: %w", err)
	}
	f.mu.Lock()
	old := f.eng
	members := h.Members
	if members == nil {
		members = map[string]string{}
	}
	f.eng, f.clock, f.rng, f.term, f.members = eng, clock, rng, h.Term, members
	f.setApplied(h.Applied)
	f.mu.Unlock()
	old.Close()
	if f.restored != nil {
		f.restored(eng)
	}
	return nil
}

// digest is the canonical encoding of the state, for comparing replicas.
func (f *fsm) digest() ([]byte, uint64, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	b, err := f.encodeLocked()
	return b, f.applied.Load(), err
}

type snapBytes []byte

func (s snapBytes) Persist(sink raft.SnapshotSink) error {
	if _, err := sink.Write(s); err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}

func (snapBytes) Release() {}

type bytesBuffer struct{ b []byte }

func (w *bytesBuffer) Write(p []byte) (int, error) { w.b = append(w.b, p...); return len(p), nil }
