package faults

import (
	"fmt"
	"math"
	"time"

	"github.com/anishathalye/porcupine"
)

// never is the return time of an operation whose fate is unknown: it may
// take effect at any point after its call.
const never = math.MaxInt64

// lockInput is what the model sees of a call. Call and Return are the
// history's times, which the model needs to decide when a lease may
// expire (porcupine orders operations but does not pass their times).
type lockInput struct {
	Kind   OpKind
	Token  string
	TTL    int64
	Call   int64
	Return int64
}

type lockOutput struct {
	Result Result
	Token  string
	Fence  uint64
}

// lockState is one key with limit 1, as the server promises it: at most one
// holder, fences rising. It is comparable, so porcupine can merge equal
// states.
type lockState struct {
	Held  bool
	Token string // "" for a lease nobody in the history holds the token of
	Fence uint64 // 0 when unknown (a grant whose answer was lost)
	// LiveUntil is when the holder's lease may first end by expiry: the
	// call of its acquire or latest successful renew plus the TTL (the
	// server counts the TTL from when it received the request, which is
	// later). Before it the lease certainly lives; after it, it may have
	// expired or (after a failover, a pause) still live: both are allowed.
	LiveUntil int64
	LastFence uint64
	// Floor is the time of the latest expiry the model assumed: every
	// operation ordered after it must have returned after it.
	Floor int64
}

func (s lockState) String() string {
	if !s.Held {
		return fmt.Sprintf("free (last fence %d)", s.LastFence)
	}
	return fmt.Sprintf("held by %s fence %d live until %s (last fence %d)", short(s.Token), s.Fence, ms(s.LiveUntil), s.LastFence)
}

func (s lockState) free() lockState {
	return lockState{LastFence: s.LastFence, Floor: s.Floor}
}

func (s lockState) heldBy(token string) bool { return s.Held && token != "" && s.Token == token }

// lockModel is the sequential specification of one key's lock. Expiry is
// not an operation anyone calls, so the model is nondeterministic: before
// any operation that may have been linearized after a lease's LiveUntil,
// the lease may or may not have expired.
var lockModel = porcupine.NondeterministicModel{
	Init: func() []any { return []any{lockState{}} },
	Step: func(state, input, output any) []any {
		s, in, out := state.(lockState), input.(lockInput), output.(lockOutput)
		if in.Return < s.Floor {
			return nil
		}
		candidates := []lockState{s}
		if s.Held && in.Return >= max(s.LiveUntil, s.Floor) {
			e := s.free()
			e.Floor = max(s.Floor, s.LiveUntil)
			candidates = append(candidates, e)
		}
		var next []any
		for _, c := range candidates {
			for _, n := range step(c, in, out) {
				next = append(next, n)
			}
		}
		return next
	},
	DescribeOperation: func(input, output any) string {
		in, out := input.(lockInput), output.(lockOutput)
		s := fmt.Sprintf("%s(%s) -> %s", in.Kind, short(in.Token+out.Token), out.Result)
		if out.Fence != 0 {
			s += fmt.Sprintf(" fence %d", out.Fence)
		}
		return s
	},
	DescribeState: func(state any) string { return state.(lockState).String() },
}

// step applies one operation to a state in which no expiry happens first.
func step(s lockState, in lockInput, out lockOutput) []lockState {
	switch in.Kind {
	case OpAcquire:
		switch out.Result {
		case ResOK, ResLeaseEnded:
			if s.Held || out.Fence <= s.LastFence {
				return nil
			}
			n := lockState{Held: true, Token: out.Token, Fence: out.Fence, LiveUntil: in.Call + in.TTL, LastFence: out.Fence, Floor: s.Floor}
			if out.Result == ResLeaseEnded {
				// Granted to nobody who answered: it may have ended any time.
				n.Token, n.LiveUntil = "", in.Call
			}
			return []lockState{n}
		case ResTimeout:
			if !s.Held {
				return nil
			}
			return []lockState{s}
		case ResUnknown:
			if s.Held {
				return []lockState{s}
			}
			phantom := lockState{Held: true, LiveUntil: in.Call, LastFence: s.LastFence, Floor: s.Floor}
			return []lockState{s, phantom}
		}
	case OpRelease:
		switch out.Result {
		case ResOK:
			if !s.heldBy(in.Token) {
				return nil
			}
			return []lockState{s.free()}
		case ResNotHolder:
			if s.heldBy(in.Token) {
				return nil
			}
			return []lockState{s}
		case ResUnknown:
			if s.heldBy(in.Token) {
				return []lockState{s, s.free()}
			}
			return []lockState{s}
		}
	case OpRenew:
		switch out.Result {
		case ResOK:
			if !s.heldBy(in.Token) {
				return nil
			}
			n := s
			n.LiveUntil = max(s.LiveUntil, in.Call+in.TTL)
			return []lockState{n}
		case ResNotHolder:
			if s.heldBy(in.Token) {
				return nil
			}
			return []lockState{s}
		}
	case OpForce:
		switch out.Result {
		case ResOK:
			if !s.Held || (s.Fence != 0 && s.Fence != out.Fence) || (s.Fence == 0 && out.Fence <= s.LastFence) {
				return nil
			}
			n := s.free()
			n.LastFence = max(s.LastFence, out.Fence)
			return []lockState{n}
		case ResNotHeld:
			if s.Held {
				return nil
			}
			return []lockState{s}
		case ResUnknown:
			if s.Held {
				return []lockState{s, s.free()}
			}
			return []lockState{s}
		}
	}
	return nil
}

// porcupineOps turns one key's operations into porcupine's form. A renew
// whose fate is unknown changes nothing the model can see (a lease may
// outlive its LiveUntil anyway) and is left out; every other unknown
// operation may take effect any time after its call.
func porcupineOps(ops []Op) []porcupine.Operation {
	var out []porcupine.Operation
	for _, o := range ops {
		if o.Kind == OpRenew && o.Result == ResUnknown {
			continue
		}
		ret := o.Return
		if o.Result == ResUnknown {
			ret = never
		}
		out = append(out, porcupine.Operation{
			ClientId: o.Client,
			Input:    lockInput{Kind: o.Kind, Token: o.Token, TTL: int64(o.TTL), Call: o.Call, Return: ret},
			Call:     o.Call,
			Output:   lockOutput{Result: o.Result, Token: o.Token, Fence: o.Fence},
			Return:   ret,
		})
	}
	return out
}

// LinearizabilityReport is the porcupine verdict on one key.
type LinearizabilityReport struct {
	Key    string
	Ops    int
	Result porcupine.CheckResult
	Took   time.Duration
	// Info is porcupine's partial linearizations, for VisualizeKey.
	Info porcupine.LinearizationInfo
}

// CheckLinearizable checks every key's history against the lock model,
// giving porcupine at most timeout per key (a key that runs out is
// reported Unknown: inconclusive, not a violation).
func CheckLinearizable(ops []Op, timeout time.Duration) []LinearizabilityReport {
	var reports []LinearizabilityReport
	groups := byKey(ops)
	model := lockModel.ToModel()
	for _, key := range sortedKeys(groups) {
		pops := porcupineOps(groups[key])
		start := time.Now()
		res, info := porcupine.CheckOperationsVerbose(model, pops, timeout)
		reports = append(reports, LinearizabilityReport{Key: key, Ops: len(pops), Result: res, Took: time.Since(start), Info: info})
	}
	return reports
}

// VisualizeLinearizability writes porcupine's HTML view of a report to
// path: the longest linearizations it found and where they got stuck.
func VisualizeLinearizability(r LinearizabilityReport, path string) error {
	return porcupine.VisualizePath(lockModel.ToModel(), r.Info, path)
}
