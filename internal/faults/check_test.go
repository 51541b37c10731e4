package faults

import (
	"strings"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

// t0 turns milliseconds into the history's nanoseconds.
func t0(msec int64) int64 { return msec * int64(time.Millisecond) }

func acq(client int, key string, call, ret int64, res Result, token string, fence uint64) Op {
	return Op{Client: client, Key: key, Kind: OpAcquire, Call: t0(call), Return: t0(ret), Result: res, Token: token, Fence: fence, TTL: time.Second}
}

func waitAcq(client int, key string, call, ret, enqueued int64, wait time.Duration, res Result, token string, fence uint64) Op {
	o := acq(client, key, call, ret, res, token, fence)
	o.Wait, o.Enqueued = wait, t0(enqueued)
	return o
}

func rel(client int, key string, call, ret int64, res Result, token string) Op {
	return Op{Client: client, Key: key, Kind: OpRelease, Call: t0(call), Return: t0(ret), Result: res, Token: token, Outcome: "ok"}
}

func renew(client int, key string, call, ret int64, res Result, token string) Op {
	return Op{Client: client, Key: key, Kind: OpRenew, Call: t0(call), Return: t0(ret), Result: res, Token: token, TTL: time.Second}
}

func force(client int, key string, call, ret int64, res Result, fence uint64) Op {
	return Op{Client: client, Key: key, Kind: OpForce, Call: t0(call), Return: t0(ret), Result: res, Fence: fence}
}

// verdicts runs every history checker and returns which ones complained.
func verdicts(t *testing.T, ops []Op) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	for _, r := range CheckLinearizable(ops, 10*time.Second) {
		switch r.Result {
		case porcupine.Illegal:
			out["linearizable"] = append(out["linearizable"], r.Key+": not linearizable")
		case porcupine.Unknown:
			t.Fatalf("porcupine ran out of time on %d ops", r.Ops)
		}
	}
	for name, f := range map[string]func([]Op) []string{
		"single-holder": CheckSingleHolder, "fences": CheckFences, "fifo": CheckFIFO, "releases": CheckReleases,
	} {
		if bad := f(ops); len(bad) > 0 {
			out[name] = bad
		}
	}
	return out
}

// TestCheckersPassAGoodHistory: a history with hand-overs, a queue, an
// expiry, a renew, a failed try, a lost answer and a force-release is
// accepted by every checker (they do not cry wolf).
func TestCheckersPassAGoodHistory(t *testing.T) {
	ops := []Op{
		acq(1, "k", 0, 10, ResOK, "T1", 100),
		waitAcq(2, "k", 5, 520, 8, 3*time.Second, ResOK, "T2", 101), // queued behind T1
		acq(3, "k", 200, 205, ResTimeout, "", 0),                    // try-lock while held
		renew(1, "k", 300, 310, ResOK, "T1"),
		rel(1, "k", 500, 510, ResOK, "T1"),
		rel(2, "k", 600, 610, ResOK, "T2"),
		renew(1, "k", 700, 710, ResNotHolder, "T1"), // the released token is dead
		force(9, "k", 800, 805, ResNotHeld, 0),
		// T3 is never released: it may expire once 1s has passed since its call.
		acq(1, "k", 1000, 1010, ResOK, "T3", 102),
		waitAcq(2, "k", 1500, 2100, 1502, 3*time.Second, ResOK, "T4", 103),
		force(9, "k", 2200, 2210, ResOK, 103),
		// A force called before an acquire, answered after it: it was
		// applied after the grant and ended that lease, which a waiter
		// then took while T5's acquire still looked live.
		force(9, "k", 2290, 2330, ResOK, 104),
		acq(1, "k", 2300, 2310, ResOK, "T5", 104),
		waitAcq(2, "k", 2305, 2340, 2306, 3*time.Second, ResOK, "T6", 105),
		force(9, "k", 2400, 2410, ResOK, 105),
		// A lost answer: maybe granted (a lease nobody can use), which
		// explains the try that timed out right after.
		{Client: 4, Key: "k", Kind: OpAcquire, Call: t0(3000), Return: t0(3001), Result: ResUnknown, TTL: time.Second},
		acq(5, "k", 3050, 3060, ResTimeout, "", 0),
		// Another key, independent.
		acq(6, "j", 0, 10, ResOK, "J1", 99),
	}
	if v := verdicts(t, ops); len(v) > 0 {
		t.Fatalf("checkers rejected a good history: %v", v)
	}
	reg := NewRegister(func() int64 { return 0 })
	reg.Write("k", 100, 1)
	reg.Write("k", 101, 1)
	reg.Write("k", 100, 0) // past its deadline: not made, not a violation
	if bad := CheckRegister(reg.Rejects(), ops); len(bad) > 0 {
		t.Fatalf("register: %v", bad)
	}
}

// TestCheckersBite feeds each checker a history it must reject.
func TestCheckersBite(t *testing.T) {
	cases := []struct {
		name string
		ops  []Op
		want []string // the checkers that must complain
	}{{
		name: "two holders at once",
		ops: []Op{
			acq(1, "k", 0, 10, ResOK, "T1", 100),
			acq(2, "k", 100, 110, ResOK, "T2", 101), // T1 certainly lives until 1000ms
		},
		want: []string{"single-holder", "linearizable"},
	}, {
		name: "fence reused",
		ops: []Op{
			acq(1, "k", 0, 10, ResOK, "T1", 100),
			rel(1, "k", 20, 30, ResOK, "T1"),
			acq(2, "k", 40, 50, ResOK, "T2", 100),
		},
		want: []string{"fences", "linearizable"},
	}, {
		name: "fence going down",
		ops: []Op{
			acq(1, "k", 0, 10, ResOK, "T1", 200),
			rel(1, "k", 20, 30, ResOK, "T1"),
			acq(2, "k", 40, 50, ResOK, "T2", 150),
		},
		want: []string{"fences", "linearizable"},
	}, {
		name: "FIFO: a later waiter granted first",
		ops: []Op{
			acq(1, "k", 0, 10, ResOK, "H", 100),
			waitAcq(2, "k", 15, 900, 20, 3*time.Second, ResOK, "A", 102),
			waitAcq(3, "k", 100, 600, 105, 3*time.Second, ResOK, "B", 101),
			rel(1, "k", 500, 510, ResOK, "H"),
			rel(3, "k", 800, 810, ResOK, "B"),
		},
		want: []string{"fifo"},
	}, {
		name: "FIFO: a waiter in line times out while a later one is granted",
		ops: []Op{
			acq(1, "k", 0, 10, ResOK, "H", 100),
			waitAcq(2, "k", 15, 3015, 20, 3*time.Second, ResTimeout, "", 0),
			waitAcq(3, "k", 100, 600, 105, 3*time.Second, ResOK, "B", 101),
			rel(1, "k", 500, 510, ResOK, "H"),
		},
		want: []string{"fifo"},
	}, {
		name: "acknowledged release lost",
		ops: []Op{
			acq(1, "k", 0, 10, ResOK, "T1", 100),
			rel(1, "k", 100, 110, ResOK, "T1"),
			renew(1, "k", 200, 210, ResOK, "T1"),
		},
		want: []string{"releases", "linearizable"},
	}, {
		name: "not linearizable: a try-lock refused on a free key",
		ops: []Op{
			acq(1, "k", 0, 10, ResOK, "T1", 100),
			rel(1, "k", 20, 30, ResOK, "T1"),
			acq(2, "k", 40, 50, ResTimeout, "", 0),
		},
		want: []string{"linearizable"},
	}, {
		name: "not linearizable: a lease lost before its TTL",
		ops: []Op{
			acq(1, "k", 0, 10, ResOK, "T1", 100),
			renew(1, "k", 500, 510, ResNotHolder, "T1"),
		},
		want: []string{"linearizable"},
	}, {
		name: "not linearizable: a force-release names a fence nobody holds",
		ops: []Op{
			acq(1, "k", 0, 10, ResOK, "T1", 100),
			force(9, "k", 100, 110, ResOK, 99),
		},
		want: []string{"linearizable"},
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			v := verdicts(t, tc.ops)
			for _, name := range tc.want {
				if len(v[name]) == 0 {
					t.Errorf("checker %s accepted the history; verdicts: %v", name, v)
				}
			}
			t.Logf("verdicts: %v", v)
		})
	}
}

// TestRegisterBites: a write with a lower fence inside its lease is a
// violation, unless an operator force-released that lease first.
func TestRegisterBites(t *testing.T) {
	now := int64(0)
	reg := NewRegister(func() int64 { return now })
	reg.Write("k", 101, t0(1000))
	now = t0(10)
	if reg.Write("k", 100, t0(1000)) {
		t.Fatal("register accepted a lower fence")
	}
	bad := CheckRegister(reg.Rejects(), nil)
	if len(bad) != 1 || !strings.Contains(bad[0], "fence 100") {
		t.Fatalf("CheckRegister = %v, want one rejected write of fence 100", bad)
	}
	if bad := CheckRegister(reg.Rejects(), []Op{force(9, "k", 5, 6, ResOK, 100)}); len(bad) != 0 {
		t.Fatalf("CheckRegister after a force-release of fence 100 = %v, want none", bad)
	}
}
