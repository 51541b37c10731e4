package faults

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestMembership checks the operations of a cluster against real mutexd
// processes: a new, empty server joins a running cluster and catches up
// from a snapshot; a failed server is replaced without losing a lease; a
// rolling restart of every server under load loses no lease and no queued
// waiter; a lost quorum is recovered offline with leases kept; a backup
// restored onto a fresh cluster brings its leases back; and every bad
// input is refused with nothing changed. Every wait is bounded.
func TestMembership(t *testing.T) {
	if testing.Short() {
		t.Skip("runs real daemons")
	}
	bin := BuildBinary(t, t.TempDir())
	t.Run("join catches up from a snapshot", func(t *testing.T) { testJoinFromSnapshot(t, bin) })
	t.Run("replace a failed server", func(t *testing.T) { testReplaceServer(t, bin) })
	t.Run("rolling restart under load", func(t *testing.T) { testRollingRestart(t, bin) })
	t.Run("lost quorum recovered", func(t *testing.T) { testLostQuorum(t, bin) })
	t.Run("backup restored onto a fresh cluster", func(t *testing.T) { testBackupRestore(t, bin) })
	t.Run("bad input changes nothing", func(t *testing.T) { testMembershipBadInput(t, bin) })
}

// cli runs the mutexd binary's client command args against addrs and
// returns its exit code and output.
func cli(t *testing.T, bin string, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return 0, string(out)
	case errors.As(err, &exit):
		return exit.ExitCode(), string(out)
	}
	t.Fatalf("mutexd %v: %v\n%s", args, err, out)
	return 0, ""
}

// send makes a call with a JSON or raw body.
func (c *cc) send(method, u string, body []byte) reply {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, u, bytes.NewReader(body))
	if err != nil {
		return reply{err: err}
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return reply{err: err}
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	b.ReadFrom(resp.Body)
	r := reply{status: resp.StatusCode, body: b.Bytes(), at: time.Now()}
	var e struct {
		Error string `json:"error"`
	}
	json.Unmarshal(r.body, &e)
	r.code = e.Error
	return r
}

// members is GET /v1/cluster's member list, by id.
type memberInfo struct {
	ID, Raft, API, State string
	Voter                bool
}

func (c *cc) members(t *testing.T, node *Node) (leader string, ms map[string]memberInfo) {
	t.Helper()
	var st struct {
		LeaderID string       `json:"leader_id"`
		Nodes    []memberInfo `json:"nodes"`
	}
	if _, err := getJSON(context.Background(), c.hc, node.URL+"/v1/cluster", &st); err != nil {
		t.Fatalf("GET /v1/cluster on %s: %v", node.ID, err)
	}
	ms = map[string]memberInfo{}
	for _, m := range st.Nodes {
		ms[m.ID] = m
	}
	return st.LeaderID, ms
}

// snapshots counts the Raft snapshots in a node's data_dir.
func snapshots(n *Node) int {
	es, _ := os.ReadDir(filepath.Join(n.DataDir(), "snapshots"))
	k := 0
	for _, e := range es {
		if e.IsDir() && !strings.HasSuffix(e.Name(), ".tmp") {
			k++
		}
	}
	return k
}

// join adds n through via, sending the same join again while the answer
// is 503 (a leader lost in the middle: the outcome is unknown, and the
// same join again is harmless), as the Go client and the CLI do.
func join(c *cc, via *Node, n *Node, voter bool) reply {
	b, _ := json.Marshal(map[string]any{"id": n.ID, "raft": n.JoinRaft(), "api": n.JoinAPI(), "voter": voter})
	return retry(20*time.Second, func() reply { return c.send(http.MethodPost, via.URL+"/v1/cluster/members", b) })
}

func waitReady(t *testing.T, h *Harness, n *Node) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := h.WaitReady(ctx, n); err != nil {
		t.Fatal(err)
	}
}

func sameDigests(t *testing.T, nodes ...*Node) {
	t.Helper()
	urls := make([]string, len(nodes))
	for i, n := range nodes {
		urls[i] = n.URL
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if diff, err := CheckDigests(ctx, urls); err != nil || diff != "" {
		t.Fatalf("digests: %s %v", diff, err)
	}
}

// Small snapshots, often, with a short tail: a joining server finds the
// log it needs compacted away and must install a snapshot.
const compactingCluster = "  snapshot_threshold: 64\n  snapshot_interval: 200ms\n  trailing_logs: 16\n"

func testJoinFromSnapshot(t *testing.T, bin string) {
	h, err := Start(t, bin, Options{Nodes: 3, Cluster: true, ClusterExtra: compactingCluster})
	if err != nil {
		t.Fatal(err)
	}
	c := newCC(t)
	n := h.Nodes
	kept := c.acquire(n[0], "kept", "holder", "", 2*time.Minute, 0).grant(t, "kept")
	// Enough entries for several snapshots and a compacted log.
	for i := range 120 {
		g := retry(10*time.Second, func() reply { return c.acquire(n[i%3], "churn", "churn", "", 10*time.Second, 0) }).grant(t, "churn")
		if r := retry(10*time.Second, func() reply { return c.release(n[(i+1)%3], "churn", g.Token) }); r.status != http.StatusOK {
			t.Fatalf("release churn: %v", r)
		}
	}
	until(t, 10*time.Second, "every server took a snapshot", func() bool {
		return snapshots(n[0]) > 0 && snapshots(n[1]) > 0 && snapshots(n[2]) > 0
	})

	// The new server snapshots nothing itself: a snapshot in its data_dir
	// is one it installed from the leader.
	n4, err := h.AddServer("  snapshot_threshold: 1000000\n  snapshot_interval: 1h\n")
	if err != nil {
		t.Fatal(err)
	}
	if r := join(c, n[1], n4, true); r.status != http.StatusNoContent { // through any server
		t.Fatalf("join n4: %v", r)
	}
	waitReady(t, h, n4)
	if k := snapshots(n4); k == 0 {
		t.Fatalf("n4 holds no snapshot: it did not catch up from one")
	}
	ki, r := c.inspect(n4, "kept", true)
	if r.status != http.StatusOK || !ki.Held || ki.Holder.Fence != kept.Fence {
		t.Fatalf("kept on n4: want held by fence %d, got %v", kept.Fence, r)
	}
	sameDigests(t, n[0], n[1], n[2], n4)
	// n4 has no peers in its configuration: it knows every member's API
	// URL from the snapshot and log it caught up with, and forwards to
	// the leader with it.
	_, ms := c.members(t, n4)
	if len(ms) != 4 || !ms["n4"].Voter {
		t.Fatalf("members seen by n4: %+v", ms)
	}
	for _, node := range []*Node{n[0], n[1], n[2], n4} {
		if got := ms[node.ID].API; got != node.JoinAPI() {
			t.Fatalf("n4 sees %s's API as %q, want %q", node.ID, got, node.JoinAPI())
		}
	}
	g4 := retry(10*time.Second, func() reply { return c.acquire(n4, "via-follower-n4", "x", "", 10*time.Second, 0) }).grant(t, "acquire forwarded by n4")
	if r := c.release(n4, "via-follower-n4", g4.Token); r.status != http.StatusOK {
		t.Fatalf("release forwarded by n4: %v", r)
	}

	// n4 leads: the others reach it only through the API URL the log
	// gave them (their configuration lists n1 to n3).
	if r := c.send(http.MethodPost, n[0].URL+"/v1/cluster/transfer-leadership", []byte(`{"to":"n4"}`)); r.status != http.StatusNoContent {
		t.Fatalf("transfer to n4: %v", r)
	}
	until(t, 10*time.Second, "n4 leads", func() bool { l, _ := c.members(t, n[2]); return l == "n4" })
	g := retry(10*time.Second, func() reply { return c.acquire(n[2], "via-n4", "x", "", 10*time.Second, 0) }).grant(t, "acquire through a follower of n4")
	if r := c.release(n[0], "via-n4", g.Token); r.status != http.StatusOK {
		t.Fatalf("release through a follower of n4: %v", r)
	}
	if r := c.release(n4, "kept", kept.Token); r.status != http.StatusOK {
		t.Fatalf("release kept on n4: %v", r)
	}
}

func testReplaceServer(t *testing.T, bin string) {
	h, l, f := startCluster(t, bin)
	c := newCC(t)
	n := h.Nodes
	leader, stays, fails := n[l], n[f[0]], n[f[1]]
	a := c.acquire(stays, "a", "holder-a", "", 2*time.Minute, 0).grant(t, "a")
	b := c.acquire(leader, "b", "holder-b", "", 2*time.Minute, 0).grant(t, "b")
	waiter := async(func() reply { return c.acquire(stays, "a", "waiter", "w-1", time.Minute, 40*time.Second) })
	until(t, 10*time.Second, "the waiter queued", func() bool { ki, _ := c.inspect(leader, "a", false); return ki.Waiters == 1 })

	if err := h.Kill(fails); err != nil {
		t.Fatal(err)
	}
	if code, out := cli(t, bin, "cluster", "remove", fails.ID, "--addr", stays.URL); code != 0 {
		t.Fatalf("cluster remove %s: exit %d: %s", fails.ID, code, out)
	}
	n4, err := h.AddServer("")
	if err != nil {
		t.Fatal(err)
	}
	if code, out := cli(t, bin, "cluster", "join", n4.ID, n4.JoinRaft(), n4.JoinAPI(), "--addr", stays.URL); code != 0 {
		t.Fatalf("cluster join: exit %d: %s", code, out)
	}
	waitReady(t, h, n4)
	code, out := cli(t, bin, "cluster", "status", "-o", "json", "--addr", n4.URL)
	if code != 0 || !strings.Contains(out, `"n4"`) || strings.Contains(out, `"`+fails.ID+`"`) {
		t.Fatalf("cluster status after the replacement: exit %d: %s", code, out)
	}
	_, table := cli(t, bin, "cluster", "status", "--addr", n4.URL)
	t.Logf("after the replacement:\n%s", table)

	for key, g := range map[string]grant{"a": a, "b": b} {
		ki, r := c.inspect(n4, key, false)
		if r.status != http.StatusOK || !ki.Held || ki.Holder.Fence != g.Fence {
			t.Fatalf("%s after the replacement: want held by fence %d, got %v", key, g.Fence, r)
		}
	}
	if ki, _ := c.inspect(n4, "a", false); ki.Waiters != 1 {
		t.Fatalf("a's waiter after the replacement: %d waiters, want 1", ki.Waiters)
	}
	if r := c.release(n4, "a", a.Token); r.status != http.StatusOK {
		t.Fatalf("release a through n4: %v", r)
	}
	if g := recv(t, waiter, 20*time.Second, "the waiter's grant").grant(t, "waiter"); g.Fence <= a.Fence {
		t.Fatalf("waiter's fence %d, not above %d", g.Fence, a.Fence)
	}
	if r := c.release(n4, "b", b.Token); r.status != http.StatusOK {
		t.Fatalf("release b through n4: %v", r)
	}
	sameDigests(t, leader, stays, n4)
}

// testRollingRestart restarts every server, one at a time, while clients
// queue for three keys through every server: each acquire is sent again
// with its request id to the next server when its server goes away, so it
// keeps its place, and must end granted; each lease must be released
// while live; no two clients may hold a key at once.
func testRollingRestart(t *testing.T, bin string) {
	h, _, _ := startCluster(t, bin)
	c := newCC(t)
	n := h.Nodes
	ctx, cancel := context.WithCancel(context.Background())
	var (
		wg       sync.WaitGroup
		holders  [3]atomic.Int32
		grants   atomic.Int64
		mu       sync.Mutex
		problems []string
	)
	fail := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		problems = append(problems, fmt.Sprintf(format, args...))
	}
	for i := range 9 {
		wg.Go(func() {
			key := fmt.Sprintf("rr-%d", i%3)
			for round := 0; ctx.Err() == nil; round++ {
				rid := fmt.Sprintf("c%d-%d", i, round)
				var g grant
				for attempt := 0; ; attempt++ {
					if attempt > 200 {
						fail("%s: acquire %s never answered", key, rid)
						return
					}
					r := c.acquire(n[(i+attempt)%3], key, fmt.Sprintf("c%d", i), rid, 20*time.Second, 30*time.Second)
					if r.err != nil || r.status == http.StatusServiceUnavailable {
						time.Sleep(20 * time.Millisecond)
						continue // its server went away: the next one, same request id
					}
					if r.status != http.StatusOK {
						fail("%s: acquire %s: %v (a lost waiter)", key, rid, r)
						return
					}
					json.Unmarshal(r.body, &g)
					break
				}
				if k := holders[i%3].Add(1); k != 1 {
					fail("%s: %d holders at once", key, k)
				}
				grants.Add(1)
				time.Sleep(20 * time.Millisecond)
				holders[i%3].Add(-1)
				ambiguous := false // an attempt that may have been applied
				for attempt := 0; ; attempt++ {
					r := c.release(n[(i+attempt)%3], key, g.Token)
					if r.err != nil || r.status == http.StatusServiceUnavailable {
						ambiguous = true
						if attempt > 200 {
							fail("%s: release never answered", key)
							return
						}
						time.Sleep(20 * time.Millisecond)
						continue
					}
					if r.status == http.StatusOK {
						break
					}
					if !ambiguous || r.code != "not_holder" {
						fail("%s: release of fence %d: %v (a lost lease)", key, g.Fence, r)
						break
					}
					// An earlier attempt may have released it: the
					// request id says how the lease ended.
					end := retry(20*time.Second, func() reply { return c.acquire(n[(i+attempt)%3], key, "check", rid, 20*time.Second, 0) })
					var le struct {
						Outcome string `json:"outcome"`
						Fence   uint64 `json:"fence"`
					}
					json.Unmarshal(end.body, &le)
					if end.code != "lease_ended" || le.Outcome != "released" || le.Fence != g.Fence {
						fail("%s: fence %d ended %v, not released (a lost lease)", key, g.Fence, end)
					}
					break
				}
			}
		})
	}
	time.Sleep(time.Second)
	before := grants.Load()
	start := time.Now()
	for _, node := range n {
		h.stop(node) // SIGTERM: a leader hands over first
		if err := h.Restart(node); err != nil {
			t.Fatal(err)
		}
		waitReady(t, h, node)
		time.Sleep(500 * time.Millisecond)
	}
	restarted := time.Since(start)
	time.Sleep(time.Second)
	cancel()
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	for _, p := range problems {
		t.Error(p)
	}
	during := grants.Load() - before
	if during == 0 {
		t.Fatalf("no lease granted during the rolling restart")
	}
	t.Logf("rolling restart of 3 servers in %s under 9 queueing clients: %d grants during it, none lost", restarted.Round(time.Millisecond), during)
	sameDigests(t, n...)
}

func testLostQuorum(t *testing.T, bin string) {
	h, l, f := startCluster(t, bin)
	c := newCC(t)
	n := h.Nodes
	survivor := n[f[0]]
	kept := c.acquire(n[l], "kept", "holder", "", 3*time.Minute, 0).grant(t, "kept")
	// The survivor has the lease in its log before the others go.
	until(t, 10*time.Second, "the survivor has the lease", func() bool {
		ki, _ := c.inspect(survivor, "kept", true)
		return ki.Held
	})
	for _, i := range []int{l, f[1]} {
		if err := h.Kill(n[i]); err != nil {
			t.Fatal(err)
		}
	}
	if r := c.acquire(survivor, "x", "x", "", 10*time.Second, 0); r.status != http.StatusServiceUnavailable {
		t.Fatalf("a write without a quorum: want 503, got %v", r)
	}
	// recover refuses a running server's data_dir.
	if code, out := cli(t, bin, "cluster", "recover", "--config", survivor.ConfigPath, "--voters", survivor.ID); code != 2 || strings.Count(strings.TrimSpace(out), "\n") != 0 {
		t.Fatalf("recover on a running server: want exit 2 and one line, got %d: %s", code, out)
	}
	h.stop(survivor)
	code, out := cli(t, bin, "cluster", "recover", "--config", survivor.ConfigPath, "--voters", survivor.ID)
	if code != 0 {
		t.Fatalf("recover: exit %d: %s", code, out)
	}
	t.Logf("%s", strings.TrimSpace(out))
	if err := h.Restart(survivor); err != nil {
		t.Fatal(err)
	}
	waitReady(t, h, survivor)
	ki, r := c.inspect(survivor, "kept", false)
	if r.status != http.StatusOK || !ki.Held || ki.Holder.Fence != kept.Fence {
		t.Fatalf("kept after the recovery: want held by fence %d, got %v", kept.Fence, r)
	}
	if g := c.renew(survivor, "kept", kept.Token, time.Minute).grant(t, "renew after the recovery"); g.Fence != kept.Fence {
		t.Fatalf("renew after the recovery: fence %d, want %d", g.Fence, kept.Fence)
	}
	// Back to three servers.
	var fresh []*Node
	for range 2 {
		nn, err := h.AddServer("")
		if err != nil {
			t.Fatal(err)
		}
		if r := join(c, survivor, nn, true); r.status != http.StatusNoContent {
			t.Fatalf("join %s: %v", nn.ID, r)
		}
		waitReady(t, h, nn)
		fresh = append(fresh, nn)
	}
	if r := c.release(fresh[1], "kept", kept.Token); r.status != http.StatusOK {
		t.Fatalf("release after the recovery: %v", r)
	}
	sameDigests(t, survivor, fresh[0], fresh[1])
}

func testBackupRestore(t *testing.T, bin string) {
	a, _, _ := startCluster(t, bin)
	c := newCC(t)
	kept := c.acquire(a.Nodes[1], "kept", "holder", "", 3*time.Minute, 0).grant(t, "kept")
	file := filepath.Join(t.TempDir(), "backup.snap")
	if code, out := cli(t, bin, "cluster", "snapshot", "save", file, "--addr", a.Nodes[2].URL); code != 0 {
		t.Fatalf("snapshot save: exit %d: %s", code, out)
	}
	// A running cluster refuses the restore without --force, unchanged.
	code, out := cli(t, bin, "cluster", "snapshot", "restore", file, "--addr", a.Nodes[0].URL)
	if code != 2 || strings.Count(strings.TrimSpace(out), "\n") != 0 || !strings.Contains(out, "cluster_running") {
		t.Fatalf("restore onto a running cluster: want exit 2, one line naming cluster_running, got %d: %s", code, out)
	}

	// Disaster: cluster a is gone. A fresh cluster takes the backup.
	b, _, _ := startCluster(t, bin)
	for _, node := range a.Nodes {
		a.stop(node)
	}
	if code, out := cli(t, bin, "cluster", "snapshot", "restore", file, "--addr", b.Nodes[1].URL); code != 0 {
		t.Fatalf("restore onto a fresh cluster: exit %d: %s", code, out)
	}
	for _, node := range b.Nodes {
		ki, r := c.inspect(node, "kept", false)
		if r.status != http.StatusOK || !ki.Held || ki.Holder.Fence != kept.Fence {
			t.Fatalf("kept on %s after the restore: want held by fence %d, got %v", node.ID, kept.Fence, r)
		}
	}
	if g := c.renew(b.Nodes[0], "kept", kept.Token, time.Minute).grant(t, "renew after the restore"); g.Fence != kept.Fence {
		t.Fatalf("renew after the restore: fence %d, want %d", g.Fence, kept.Fence)
	}
	if r := c.acquire(b.Nodes[2], "kept", "thief", "", 10*time.Second, 0); r.status == http.StatusOK {
		t.Fatalf("a restored lease is not exclusive: %v", r)
	}
	next := c.acquire(b.Nodes[2], "new", "n", "", 10*time.Second, 0).grant(t, "a new key after the restore")
	if next.Fence <= kept.Fence {
		t.Fatalf("fence %d after the restore, not above %d", next.Fence, kept.Fence)
	}
	sameDigests(t, b.Nodes...)
}

func testMembershipBadInput(t *testing.T, bin string) {
	h, l, f := startCluster(t, bin)
	c := newCC(t)
	n := h.Nodes
	c.acquire(n[l], "k", "holder", "", time.Minute, 0).grant(t, "k")
	digest := func() string {
		var d struct {
			Digest string `json:"digest"`
		}
		if _, err := getJSON(context.Background(), c.hc, n[l].URL+"/v1/cluster/digest", &d); err != nil {
			t.Fatal(err)
		}
		return d.Digest
	}
	before := digest()
	other := n[f[0]]
	body := func(id, raft, api string) []byte {
		b, _ := json.Marshal(map[string]any{"id": id, "raft": raft, "api": api})
		return b
	}
	for _, tc := range []struct {
		name, method, path string
		body               []byte
		status             int
		code               string
	}{
		{"join with a member's id", "POST", "/v1/cluster/members", body(n[1].ID, "127.0.0.1:1", "http://127.0.0.1:2"), 409, "member_exists"},
		{"join with a member's raft address", "POST", "/v1/cluster/members", body("n9", n[1].JoinRaft(), "http://127.0.0.1:2"), 409, "member_exists"},
		{"join with a member's api", "POST", "/v1/cluster/members", body("n9", "127.0.0.1:1", n[1].JoinAPI()), 409, "member_exists"},
		{"join with a bad id", "POST", "/v1/cluster/members", body("N 9", "127.0.0.1:1", "http://127.0.0.1:2"), 400, "invalid_id"},
		{"join with a bad raft address", "POST", "/v1/cluster/members", body("n9", "nowhere", "http://127.0.0.1:2"), 400, "invalid_raft"},
		{"join with a bad api", "POST", "/v1/cluster/members", body("n9", "127.0.0.1:1", "ftp://x"), 400, "invalid_api"},
		{"join with a bad voter", "POST", "/v1/cluster/members", []byte(`{"id":"n9","raft":"127.0.0.1:1","api":"http://127.0.0.1:2","voter":"maybe"}`), 400, "invalid_voter"},
		{"remove an unknown member", "DELETE", "/v1/cluster/members/n9", nil, 404, "unknown_member"},
		{"transfer to an unknown member", "POST", "/v1/cluster/transfer-leadership", []byte(`{"to":"n9"}`), 404, "unknown_member"},
		{"restore onto a running cluster", "POST", "/v1/cluster/snapshot/restore", nil, 0, ""}, // body filled below
		{"restore garbage", "POST", "/v1/cluster/snapshot/restore?force=true", []byte("not a snapshot\n{}\n"), 400, "invalid_snapshot"},
		{"restore with a bad force", "POST", "/v1/cluster/snapshot/restore?force=yes", []byte("x"), 400, "invalid_force"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.status == 0 {
				snap := c.send(http.MethodGet, other.URL+"/v1/cluster/snapshot", nil)
				if snap.status != http.StatusOK {
					t.Fatalf("snapshot: %v", snap)
				}
				tc.body, tc.status, tc.code = snap.body, 409, "cluster_running"
			}
			for _, via := range []*Node{n[l], other} { // on the leader, and forwarded by a follower
				r := c.send(tc.method, via.URL+tc.path, tc.body)
				if r.status != tc.status || r.code != tc.code {
					t.Fatalf("via %s: want %d %s, got %v", via.ID, tc.status, tc.code, r)
				}
			}
		})
	}
	if code, out := cli(t, bin, "cluster", "join", n[1].ID, "127.0.0.1:1", "http://127.0.0.1:2", "--addr", other.URL); code != 2 ||
		strings.Count(strings.TrimSpace(out), "\n") != 0 || !strings.Contains(out, "member_exists") {
		t.Fatalf("cli join with a member's id: want exit 2 and one line, got %d: %s", code, out)
	}
	if after := digest(); after != before {
		t.Fatalf("the refusals changed the state: digest %s, was %s", after, before)
	}
	if _, ms := c.members(t, other); len(ms) != 3 {
		t.Fatalf("the refusals changed the members: %+v", ms)
	}

	// The only voter of a one-server cluster is never removed.
	one, err := Start(t, bin, Options{Nodes: 1, Cluster: true})
	if err != nil {
		t.Fatal(err)
	}
	if r := c.send(http.MethodDelete, one.Nodes[0].URL+"/v1/cluster/members/n1", nil); r.status != 409 || r.code != "last_voter" {
		t.Fatalf("remove the last voter: want 409 last_voter, got %v", r)
	}
	if code, out := cli(t, bin, "cluster", "remove", "n1", "--addr", one.Nodes[0].URL); code != 2 || !strings.Contains(out, "last_voter") {
		t.Fatalf("cli remove the last voter: want exit 2, got %d: %s", code, out)
	}
	if _, ms := c.members(t, one.Nodes[0]); len(ms) != 1 {
		t.Fatalf("members after the refused remove: %+v", ms)
	}
}
