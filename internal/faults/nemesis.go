package faults

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"
)

// Nemesis breaks nodes and mends them. Every fault has its undo, so a run
// can end with the cluster whole and then be checked for agreement.
type Nemesis interface {
	// Kill ends the node's process with SIGKILL; Restart starts it again
	// on the same data directory.
	Kill(node int) error
	Restart(node int) error
	// Pause freezes the process (SIGSTOP); Resume thaws it (SIGCONT).
	Pause(node int) error
	Resume(node int) error
	// Isolate cuts every link between the node and its peers, both ways;
	// Heal restores every link.
	Isolate(node int) error
	Heal() error
}

var _ Nemesis = harnessNemesis{}

// harnessNemesis adapts Harness to Nemesis by node index.
type harnessNemesis struct{ h *Harness }

func (h *Harness) nemesis() Nemesis { return harnessNemesis{h} }

func (n harnessNemesis) Kill(i int) error    { return n.h.Kill(n.h.Nodes[i]) }
func (n harnessNemesis) Restart(i int) error { return n.h.Restart(n.h.Nodes[i]) }
func (n harnessNemesis) Pause(i int) error   { return n.h.Pause(n.h.Nodes[i]) }
func (n harnessNemesis) Resume(i int) error  { return n.h.Resume(n.h.Nodes[i]) }
func (n harnessNemesis) Isolate(i int) error { n.h.Net.Isolate(i, len(n.h.Nodes)); return nil }
func (n harnessNemesis) Heal() error         { n.h.Net.Heal(); return nil }

// FaultKind names a fault the schedule may choose.
type FaultKind string

// The faults.
const (
	FaultKill      FaultKind = "kill"
	FaultPause     FaultKind = "pause"
	FaultPartition FaultKind = "partition"
)

// Schedule is a nemesis's plan: one fault at a time, chosen at random.
type Schedule struct {
	Kinds []FaultKind
	// Gap is how long the nodes are left whole between faults, and Hold
	// how long a fault lasts (each uniform between its two bounds).
	Gap, Hold [2]time.Duration
	// LeaderBias is the chance a fault hits the leader rather than a
	// node chosen uniformly.
	LeaderBias float64
}

// FaultEvent is one injected fault, for the report.
type FaultEvent struct {
	Kind       FaultKind
	Node       int
	Leader     bool
	Start, End int64
	Err        string
}

func (e FaultEvent) String() string {
	s := fmt.Sprintf("%s n%d [%s..%s]", e.Kind, e.Node+1, ms(e.Start), ms(e.End))
	if e.Leader {
		s += " (leader)"
	}
	if e.Err != "" {
		s += " error: " + e.Err
	}
	return s
}

// Run injects faults until ctx ends, then undoes the one in force, and
// returns what it did. leader returns the leader's index or -1; now is
// the history's clock. The choices come from rng only, so a seed replays
// the same plan (the timing of the system under test differs).
func (s Schedule) Run(ctx context.Context, rng *rand.Rand, nem Nemesis, nodes int, leader func() int, now func() int64) []FaultEvent {
	var events []FaultEvent
	between := func(b [2]time.Duration) time.Duration {
		if b[1] <= b[0] {
			return b[0]
		}
		return b[0] + time.Duration(rng.Int64N(int64(b[1]-b[0])))
	}
	sleep := func(d time.Duration) bool {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(d):
			return true
		}
	}
	for len(s.Kinds) > 0 && sleep(between(s.Gap)) {
		kind := s.Kinds[rng.IntN(len(s.Kinds))]
		target, atLeader := rng.IntN(nodes), false
		if rng.Float64() < s.LeaderBias {
			if l := leader(); l >= 0 {
				target, atLeader = l, true
			}
		}
		hold := between(s.Hold)
		ev := FaultEvent{Kind: kind, Node: target, Leader: atLeader, Start: now()}
		var undo func() error
		var err error
		switch kind {
		case FaultKill:
			err, undo = nem.Kill(target), func() error { return nem.Restart(target) }
		case FaultPause:
			err, undo = nem.Pause(target), func() error { return nem.Resume(target) }
		case FaultPartition:
			err, undo = nem.Isolate(target), nem.Heal
		}
		if err == nil {
			// The fault is undone even when the run ends meanwhile.
			t := time.NewTimer(hold)
			select {
			case <-ctx.Done():
			case <-t.C:
			}
			t.Stop()
			err = undo()
		}
		ev.End = now()
		if err != nil {
			ev.Err = err.Error()
		}
		events = append(events, ev)
	}
	return events
}

// runInBackground runs s until ctx ends; wait returns its events once it
// has undone its last fault.
func runInBackground(ctx context.Context, s Schedule, rng *rand.Rand, nem Nemesis, nodes int, leader func() int, now func() int64) (wait func() []FaultEvent) {
	var wg sync.WaitGroup
	var events []FaultEvent
	wg.Go(func() { events = s.Run(ctx, rng, nem, nodes, leader, now) })
	return func() []FaultEvent { wg.Wait(); return events }
}
