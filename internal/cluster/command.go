package cluster

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/mutexd/mutexd/internal/engine"
)

// op is what a log entry does to the lock state.
type op uint8

const (
	opAcquire op = iota + 1
	opRelease
	opRenew
	opForce
	opAbandon
	opDetach
	opPause
	opResume
	opPausePrefix
	opResumePrefix
	opDrain
	opDrainPrefix
	// opTick only moves the log's time, so that deadlines are acted on
	// when nobody calls. Only a leader makes it.
	opTick
	// opPromote is a new leader's first entry: it restarts every deadline
	// (engine.Extend) and seeds the token generator once. Only a leader
	// makes it.
	opPromote
	// opSetMember records a member's API URL (MemberID, API; an empty API
	// forgets it), so that every replica can forward to any leader,
	// including one that joined after it started. Only a leader makes it.
	opSetMember
	opMax
)

// adminOps need an admin token when forwarded with auth on, as their
// routes do.
var adminOps = [opMax]bool{opForce: true, opPause: true, opResume: true, opPausePrefix: true, opResumePrefix: true, opDrain: true, opDrainPrefix: true}

// command is one log entry. Time is the leader's clock when it appended
// the entry: every replica decides with it and never with its own clock.
// Origin and Seq name the node that waits for the result and its request,
// so that node, applying the entry itself, hands the result over.
type command struct {
	Op     op     `json:"op"`
	Time   int64  `json:"t,omitempty"`
	Origin string `json:"o,omitempty"`
	Seq    uint64 `json:"s,omitempty"`

	Key        string         `json:"k,omitempty"` // or the prefix
	Token      *engine.Token  `json:"tok,omitempty"`
	Fence      uint64         `json:"f,omitempty"`
	Failed     bool           `json:"failed,omitempty"`
	TTL        time.Duration  `json:"ttl,omitempty"`
	Wait       time.Duration  `json:"wait,omitempty"`
	Owner      string         `json:"owner,omitempty"`
	OnError    engine.OnError `json:"on_error,omitempty"`
	Limit      int            `json:"limit,omitempty"`
	MaxHold    time.Duration  `json:"max_hold,omitempty"`
	LockDelay  time.Duration  `json:"lock_delay,omitempty"`
	RequestID  string         `json:"rid,omitempty"`
	Reserve    bool           `json:"reserve,omitempty"`
	WontReturn bool           `json:"wont_return,omitempty"`
	Reason     string         `json:"reason,omitempty"`
	Margin     time.Duration  `json:"margin,omitempty"`
	Attempt    uint64         `json:"attempt,omitempty"` // of a detach: the acquire entry's Seq
	Seed       []byte         `json:"seed,omitempty"`
	MemberID   string         `json:"mid,omitempty"`
	API        string         `json:"api,omitempty"`
}

// errBadCommand is a forwarded entry this node will not append.
var errBadCommand = errors.New("bad command")

func decodeCommand(b []byte) (*command, error) {
	var c command
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("%w: %w", errBadCommand, err)
	}
	if c.Op == 0 || c.Op >= opMax {
		return nil, fmt.Errorf("%w: unknown op %d", errBadCommand, c.Op)
	}
	return &c, nil
}

func (c *command) options() engine.AcquireOptions {
	return engine.AcquireOptions{
		Owner: c.Owner, TTL: c.TTL, Wait: c.Wait, OnError: c.OnError, Reserve: c.Reserve,
		RequestID: c.RequestID, Attempt: c.Seq, Limit: c.Limit, MaxHold: c.MaxHold, LockDelay: c.LockDelay,
	}
}

func (c *command) token() engine.Token {
	if c.Token == nil {
		return engine.Token{}
	}
	return *c.Token
}

// result is what applying a command gave, handed to the node that waits
// for it.
type result struct {
	grant   engine.Grant
	waiting *engine.Waiting
	ended   engine.Ended
	renewal engine.Renewal
	n       int
	ok      bool
	err     error
}
