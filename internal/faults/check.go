package faults

import (
	"fmt"
	"slices"
)

// lease is one grant as the history shows it: certainly held by its client
// from Start (the acquire's return) until End.
type lease struct {
	op    Op
	Start int64
	End   int64
}

// certainLeases returns every granted lease of ops with the interval in
// which the history proves it held: from the acquire's return until the
// earliest of its LiveUntil (the acquire's or a successful renew's call
// plus the TTL), the call of any release with its token, and the call of
// a force-release that ended it (or of one whose answer was lost),
// whenever that force was called.
func certainLeases(ops []Op) []lease {
	var leases []lease
	for _, o := range ops {
		if o.Kind == OpAcquire && o.Result == ResOK {
			leases = append(leases, lease{op: o, Start: o.Return, End: o.Call + int64(o.TTL)})
		}
	}
	for i := range leases {
		l := &leases[i]
		for _, o := range ops {
			if o.Key != l.op.Key {
				continue
			}
			switch {
			case o.Kind == OpRenew && o.Token == l.op.Token && o.Result == ResOK:
				l.End = max(l.End, o.Call+int64(o.TTL))
			}
		}
		for _, o := range ops {
			if o.Key != l.op.Key {
				continue
			}
			switch {
			case o.Kind == OpRelease && o.Token == l.op.Token:
				l.End = min(l.End, o.Call)
			case o.Kind == OpForce && (o.Result == ResUnknown || o.Result == ResOK && o.Fence == l.op.Fence):
				// A force that ended this lease, or may have (its answer was
				// lost), took effect somewhere after its call: possibly
				// before the acquire even returned, when the force was
				// called first but applied after the grant.
				l.End = min(l.End, o.Call)
			}
		}
	}
	return leases
}

// CheckSingleHolder reports two leases of one key that were both certainly
// held at the same moment.
func CheckSingleHolder(ops []Op) []string {
	var bad []string
	for _, key := range sortedKeys(byKey(ops)) {
		leases := certainLeases(byKey(ops)[key])
		slices.SortFunc(leases, func(a, b lease) int { return cmpInt(a.Start, b.Start) })
		for i, a := range leases {
			for _, b := range leases[i+1:] {
				if b.Start >= a.End {
					continue // sorted by Start, but a later b may still overlap a longer a
				}
				if a.op.Token == b.op.Token || a.Start >= a.End || b.Start >= b.End {
					continue
				}
				bad = append(bad, fmt.Sprintf("%s: two live holders: fence %d held [%s..%s) and fence %d held [%s..%s)",
					key, a.op.Fence, ms(a.Start), ms(a.End), b.op.Fence, ms(b.Start), ms(b.End)))
			}
		}
	}
	return bad
}

// grants returns the acquires that were granted (including a lease_ended
// answer, which names a grant), one per lease: an acquire answered twice
// with the same token and fence is one lease.
func grants(ops []Op) []Op {
	var out []Op
	for _, o := range ops {
		if o.Kind == OpAcquire && (o.Result == ResOK || o.Result == ResLeaseEnded) {
			out = append(out, o)
		}
	}
	return out
}

// CheckFences reports a fence granted to two different leases, and two
// grants of a key whose fences do not rise in the order the history proves
// (the first acquire returned before the second was called).
func CheckFences(ops []Op) []string {
	var bad []string
	seen := map[uint64]Op{}
	for _, g := range grants(ops) {
		if prev, ok := seen[g.Fence]; ok && (prev.Token != g.Token || prev.Key != g.Key || g.Token == "") {
			bad = append(bad, fmt.Sprintf("fence %d reused: %v and %v", g.Fence, prev, g))
			continue
		}
		seen[g.Fence] = g
	}
	groups := byKey(grants(ops))
	for _, key := range sortedKeys(groups) {
		gs := groups[key]
		byReturn := slices.Clone(gs)
		slices.SortFunc(byReturn, func(a, b Op) int { return cmpInt(a.Return, b.Return) })
		for _, b := range gs {
			// Every grant that returned before b was called must have a lower fence.
			for _, a := range byReturn {
				if a.Return >= b.Call {
					break
				}
				if a.Token == b.Token && a.Token != "" {
					continue
				}
				if a.Fence >= b.Fence {
					bad = append(bad, fmt.Sprintf("%s: fences not rising: fence %d granted (returned %s) before fence %d was asked for (called %s)",
						key, a.Fence, ms(a.Return), b.Fence, ms(b.Call)))
				}
			}
		}
	}
	return bad
}

// CheckFIFO reports a waiter overtaken by a later one: once a streaming
// acquire A has been told it is in line (Enqueued), no acquire B called
// after that may be granted before A: if both were granted, A's fence is
// the lower; if A timed out, B's grant returned no earlier than A's wait
// could end (A.Call + A.Wait, since the server counts the wait from when
// it received A). Acquires re-sent by request_id are not judged (their
// place is kept by the server, not shown by the history).
func CheckFIFO(ops []Op) []string {
	var bad []string
	for _, key := range sortedKeys(byKey(ops)) {
		kops := byKey(ops)[key]
		for _, a := range kops {
			if a.Kind != OpAcquire || a.Enqueued == 0 || a.Resent {
				continue
			}
			for _, b := range kops {
				if b.Kind != OpAcquire || b.Result != ResOK || b.Call <= a.Enqueued || b.Token == a.Token {
					continue
				}
				switch a.Result {
				case ResOK:
					if b.Fence < a.Fence {
						bad = append(bad, fmt.Sprintf("%s: FIFO: %v was in line at %s, yet %v (called later) was granted first", key, a, ms(a.Enqueued), b))
					}
				case ResTimeout:
					if b.Return < a.Call+int64(a.Wait) {
						bad = append(bad, fmt.Sprintf("%s: FIFO: %v was in line at %s and timed out, yet %v (called later) was granted while it still waited", key, a, ms(a.Enqueued), b))
					}
				}
			}
		}
	}
	return bad
}

// CheckReleases reports an acknowledged release that was lost: a renew
// with the token, called after the release returned ok, that succeeded.
func CheckReleases(ops []Op) []string {
	var bad []string
	for _, r := range ops {
		if r.Kind != OpRelease || r.Result != ResOK {
			continue
		}
		for _, o := range ops {
			if o.Kind == OpRenew && o.Token == r.Token && o.Key == r.Key && o.Call > r.Return && o.Result == ResOK {
				bad = append(bad, fmt.Sprintf("%s: release lost: %v returned ok, yet %v succeeded", r.Key, r, o))
			}
		}
	}
	return bad
}

// CheckRegister reports the fenced register's rejected writes, except
// those of a lease an operator force-released before the write (its holder
// cannot know, which is what the register is for).
func CheckRegister(rejects []Reject, ops []Op) []string {
	var bad []string
	for _, r := range rejects {
		forced := false
		for _, o := range ops {
			if o.Kind == OpForce && o.Key == r.Key && o.Call <= r.At && (o.Result == ResUnknown || o.Result == ResOK && o.Fence == r.Fence) {
				forced = true
				break
			}
		}
		if !forced {
			bad = append(bad, "fenced register: "+r.String())
		}
	}
	return bad
}
