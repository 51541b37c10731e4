package faults

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestCluster checks the cluster's promises one at a time against three
// real mutexd processes (a fresh cluster per subtest): any node answers
// every call, a queued waiter rides out the loss of the leader, a re-sent
// acquire keeps its place, a full stop and start keeps leases and fences,
// a leader's SIGTERM moves leadership, and a bad cluster section is one
// line and exit 2. Every wait is bounded.
func TestCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("runs real daemons")
	}
	bin := BuildBinary(t, t.TempDir())
	t.Run("any node answers", func(t *testing.T) { testAnyNode(t, bin) })
	t.Run("leader killed while a waiter queues", func(t *testing.T) { testLeaderKilledWaiter(t, bin) })
	t.Run("re-sent acquire keeps its place", func(t *testing.T) { testResentKeepsPlace(t, bin) })
	t.Run("full restart", func(t *testing.T) { testFullRestart(t, bin) })
	t.Run("leader SIGTERM", func(t *testing.T) { testLeaderSIGTERM(t, bin) })
	t.Run("bad config", func(t *testing.T) { testBadClusterConfig(t, bin) })
}

// cc is a test's HTTP client for one cluster.
type cc struct {
	t  *testing.T
	hc *http.Client
}

func newCC(t *testing.T) *cc {
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	t.Cleanup(hc.CloseIdleConnections)
	return &cc{t: t, hc: hc}
}

// reply is one answer: the status (0 when the call failed), the body and
// the error code of an error body.
type reply struct {
	status int
	body   []byte
	code   string
	err    error
	at     time.Time // when the answer was read
}

func (c *cc) do(method, u string, timeout time.Duration) reply {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, u, nil)
	if err != nil {
		return reply{err: err, at: time.Now()}
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return reply{err: err, at: time.Now()}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	r := reply{status: resp.StatusCode, body: b, err: err, at: time.Now()}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error string `json:"error"`
		}
		json.Unmarshal(b, &e)
		r.code = e.Error
	}
	return r
}

func (r reply) String() string {
	if r.err != nil {
		return "error: " + r.err.Error()
	}
	return fmt.Sprintf("%d %s", r.status, strings.TrimSpace(string(r.body)))
}

// grant is an acquire's or a renew's answer.
type grant struct {
	Token     string    `json:"token"`
	Fence     uint64    `json:"fence"`
	Owner     string    `json:"owner"`
	TTLMS     int64     `json:"ttl_ms"`
	ExpiresAt time.Time `json:"expires_at"`
	RequestID string    `json:"request_id"`
}

func (r reply) grant(t *testing.T, what string) grant {
	t.Helper()
	if r.status != http.StatusOK {
		t.Fatalf("%s: want 200, got %v", what, r)
	}
	var g grant
	if err := json.Unmarshal(r.body, &g); err != nil || g.Fence == 0 {
		t.Fatalf("%s: bad grant %s: %v", what, r.body, err)
	}
	return g
}

// acquire asks node for key; wait 0 tries once.
func (c *cc) acquire(node *Node, key, owner, requestID string, ttl, wait time.Duration) reply {
	q := url.Values{"ttl": {ttl.String()}, "wait": {wait.String()}, "owner": {owner}}
	if requestID != "" {
		q.Set("request_id", requestID)
	}
	return c.do(http.MethodPost, node.URL+"/v1/locks/"+url.PathEscape(key)+"/acquire?"+q.Encode(), wait+15*time.Second)
}

func (c *cc) release(node *Node, key, token string) reply {
	return c.do(http.MethodPost, node.URL+"/v1/locks/"+url.PathEscape(key)+"/release?token="+url.QueryEscape(token), 15*time.Second)
}

func (c *cc) renew(node *Node, key, token string, ttl time.Duration) reply {
	q := url.Values{"token": {token}, "ttl": {ttl.String()}}
	return c.do(http.MethodPost, node.URL+"/v1/locks/"+url.PathEscape(key)+"/renew?"+q.Encode(), 15*time.Second)
}

// keyInfo is the part of GET /v1/locks/{key} the tests read.
type keyInfo struct {
	Held   bool `json:"held"`
	Holder *struct {
		Owner     string    `json:"owner"`
		Fence     uint64    `json:"fence"`
		ExpiresAt time.Time `json:"expires_at"`
	} `json:"holder"`
	Waiters int `json:"waiters"`
	Queue   []struct {
		Owner string `json:"owner"`
	} `json:"queue"`
}

func (c *cc) inspect(node *Node, key string, stale bool) (keyInfo, reply) {
	u := node.URL + "/v1/locks/" + url.PathEscape(key)
	if stale {
		u += "?stale=true"
	}
	r := c.do(http.MethodGet, u, 10*time.Second)
	var ki keyInfo
	if r.status == http.StatusOK {
		if err := json.Unmarshal(r.body, &ki); err != nil {
			r.err = err
		}
	}
	return ki, r
}

// until polls cond every 20ms until it holds, failing t after limit.
func until(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, limit)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// retry sends f again while it answers 503 or fails to connect, for up
// to limit, and returns the last answer.
func retry(limit time.Duration, f func() reply) reply {
	deadline := time.Now().Add(limit)
	for {
		r := f()
		if (r.err == nil && r.status != http.StatusServiceUnavailable) || time.Now().After(deadline) {
			return r
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// startCluster starts three nodes and returns the harness, the leader's
// index and the followers' indexes.
func startCluster(t *testing.T, bin string) (*Harness, int, []int) {
	t.Helper()
	h, err := Start(t, bin, Options{Nodes: 3, Cluster: true, Extra: "lock:\n  detach_grace: 3s\n"})
	if err != nil {
		t.Fatalf("start cluster: %v", err)
	}
	leader := -1
	until(t, 20*time.Second, "a leader known", func() bool { leader = Leader(context.Background(), h.urls()); return leader >= 0 })
	var followers []int
	for i := range h.Nodes {
		if i != leader {
			followers = append(followers, i)
		}
	}
	return h, leader, followers
}

func (h *Harness) urls() []string {
	urls := make([]string, len(h.Nodes))
	for i, n := range h.Nodes {
		urls[i] = n.URL
	}
	return urls
}

// async runs f in a goroutine; the channel yields its answer.
func async(f func() reply) <-chan reply {
	ch := make(chan reply, 1)
	go func() { ch <- f() }()
	return ch
}

// recv waits for an asynchronous answer for at most limit.
func recv(t *testing.T, ch <-chan reply, limit time.Duration, what string) reply {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(limit):
		t.Fatalf("%s: no answer within %s", what, limit)
		return reply{}
	}
}

// notYet fails t if ch has answered.
func notYet(t *testing.T, ch <-chan reply, what string) {
	t.Helper()
	select {
	case r := <-ch:
		t.Fatalf("%s answered too early: %v", what, r)
	default:
	}
}

func testAnyNode(t *testing.T, bin string) {
	h, l, f := startCluster(t, bin)
	c := newCC(t)
	L, F1, F2 := h.Nodes[l], h.Nodes[f[0]], h.Nodes[f[1]]

	// A holder through one follower, a waiter through the other, a second
	// waiter through the leader; releases through other nodes hand the
	// lease on in the order they queued.
	hold := c.acquire(F1, "any", "holder", "", 30*time.Second, 0).grant(t, "acquire on a follower")
	w1 := async(func() reply { return c.acquire(F2, "any", "w1", "", 30*time.Second, 30*time.Second) })
	until(t, 10*time.Second, "w1 queued", func() bool { ki, _ := c.inspect(L, "any", false); return ki.Waiters == 1 })
	w2 := async(func() reply { return c.acquire(L, "any", "w2", "", 30*time.Second, 30*time.Second) })
	until(t, 10*time.Second, "w2 queued", func() bool { ki, _ := c.inspect(F1, "any", false); return ki.Waiters == 2 })
	ki, r := c.inspect(F2, "any", false)
	if r.status != http.StatusOK || !ki.Held || ki.Holder.Fence != hold.Fence || len(ki.Queue) != 2 || ki.Queue[0].Owner != "w1" || ki.Queue[1].Owner != "w2" {
		t.Fatalf("inspect on a follower: want held by fence %d with queue [w1 w2], got %v", hold.Fence, r)
	}
	if r := c.release(L, "any", hold.Token); r.status != http.StatusOK {
		t.Fatalf("release on the leader of a lease granted through a follower: %v", r)
	}
	g1 := recv(t, w1, 10*time.Second, "w1").grant(t, "w1 (queued through a follower)")
	if g1.Owner != "w1" || g1.Fence <= hold.Fence {
		t.Fatalf("w1's grant: %+v, want owner w1 and a fence above %d", g1, hold.Fence)
	}
	notYet(t, w2, "w2 (behind w1)")
	if r := c.release(F1, "any", g1.Token); r.status != http.StatusOK {
		t.Fatalf("release through a third node: %v", r)
	}
	g2 := recv(t, w2, 10*time.Second, "w2").grant(t, "w2 (queued through the leader)")
	if g2.Owner != "w2" || g2.Fence <= g1.Fence {
		t.Fatalf("w2's grant: %+v, want owner w2 and a fence above %d", g2, g1.Fence)
	}
	c.release(F2, "any", g2.Token)

	// A write through one node is seen at once by a read through another
	// (linearizable by default); stale=true answers from the local copy.
	nodes := []*Node{L, F1, F2}
	for i := range 30 {
		w, rd := nodes[i%3], nodes[(i+1+i/3%2)%3]
		key := fmt.Sprintf("read-%d", i%2)
		g := c.acquire(w, key, "reader", "", 10*time.Second, 0).grant(t, "acquire for a read")
		ki, r := c.inspect(rd, key, false)
		if r.status != http.StatusOK || !ki.Held || ki.Holder.Fence != g.Fence {
			t.Fatalf("round %d: read through %s right after a grant (fence %d) through %s: %v", i, rd.ID, g.Fence, w.ID, r)
		}
		if r := c.release(w, key, g.Token); r.status != http.StatusOK {
			t.Fatalf("round %d: release: %v", i, r)
		}
		ki, r = c.inspect(rd, key, false)
		if r.status != http.StatusOK || ki.Held {
			t.Fatalf("round %d: read through %s right after a release through %s: %v", i, rd.ID, w.ID, r)
		}
	}
	for _, n := range nodes {
		if _, r := c.inspect(n, "read-0", true); r.status != http.StatusOK {
			t.Fatalf("stale read on %s: %v", n.ID, r)
		}
		if r := c.do(http.MethodGet, n.URL+"/v1/locks/read-0?stale=maybe", 5*time.Second); r.status != http.StatusBadRequest || r.code != "invalid_stale" {
			t.Fatalf("stale=maybe on %s: want 400 invalid_stale, got %v", n.ID, r)
		}
	}
}

func testLeaderKilledWaiter(t *testing.T, bin string) {
	h, l, f := startCluster(t, bin)
	c := newCC(t)
	L, F1, F2 := h.Nodes[l], h.Nodes[f[0]], h.Nodes[f[1]]

	// "exp": the holder lets its lease run out; "rel": the holder renews
	// and releases once a new leader is in place.
	const ttl = 4 * time.Second
	sent := time.Now()
	exp := c.acquire(F1, "exp", "holder", "", ttl, 0).grant(t, "acquire exp")
	if exp.TTLMS != ttl.Milliseconds() {
		t.Fatalf("ttl_ms %d, want %d", exp.TTLMS, ttl.Milliseconds())
	}
	promised := sent.Add(ttl) // the holder may count on its lease until then
	rel := c.acquire(F1, "rel", "holder", "", 30*time.Second, 0).grant(t, "acquire rel")
	wexp := async(func() reply { return c.acquire(F2, "exp", "waiter", "", 30*time.Second, 30*time.Second) })
	wrel := async(func() reply { return c.acquire(F2, "rel", "waiter", "", 30*time.Second, 30*time.Second) })
	until(t, 10*time.Second, "both waiters queued", func() bool {
		a, _ := c.inspect(F1, "exp", false)
		b, _ := c.inspect(F1, "rel", false)
		return a.Waiters == 1 && b.Waiters == 1
	})
	if err := h.Kill(L); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	t.Logf("killed leader %s %s after exp's acquire was sent", L.ID, killed.Sub(sent).Round(time.Millisecond))

	// Until the promised time, every answered read says exp is still held
	// by its holder, and its waiter has no grant.
	for time.Now().Before(promised) {
		ki, r := c.inspect(F1, "exp", false)
		if r.status == http.StatusOK && r.at.Before(promised) && (!ki.Held || ki.Holder.Fence != exp.Fence) {
			t.Fatalf("exp's lease was cut short: read at %s before the promised end %s says %v",
				r.at.Sub(sent).Round(time.Millisecond), ttl, r)
		}
		time.Sleep(100 * time.Millisecond)
	}
	var newLeader string
	until(t, 15*time.Second, "a new leader", func() bool {
		var ci clusterInfo
		_, err := getJSON(context.Background(), c.hc, F1.URL+"/v1/cluster", &ci)
		newLeader = ci.LeaderID
		return err == nil && ci.LeaderID != "" && ci.LeaderID != L.ID
	})
	t.Logf("new leader %s", newLeader)

	r := recv(t, wexp, 30*time.Second, "exp's waiter")
	g := r.grant(t, "exp's waiter (through a surviving follower, across the failover)")
	if r.at.Before(promised) {
		t.Fatalf("exp's waiter was granted %s after the holder's send, before the promised %s", r.at.Sub(sent), ttl)
	}
	if g.Fence <= exp.Fence {
		t.Fatalf("exp's waiter got fence %d, not above the holder's %d", g.Fence, exp.Fence)
	}
	t.Logf("exp: waiter granted %s after the holder's send (lease promised %s; failover margin extends it)", r.at.Sub(sent).Round(time.Millisecond), ttl)

	notYet(t, wrel, "rel's waiter (the holder still holds)")
	rn := retry(10*time.Second, func() reply { return c.renew(F1, "rel", rel.Token, 30*time.Second) })
	if rg := rn.grant(t, "renew after the failover"); rg.Fence != rel.Fence {
		t.Fatalf("renew after the failover: fence %d, want %d", rg.Fence, rel.Fence)
	}
	notYet(t, wrel, "rel's waiter (the holder renewed)")
	released := time.Now()
	if r := retry(10*time.Second, func() reply { return c.release(F1, "rel", rel.Token) }); r.status != http.StatusOK {
		t.Fatalf("release after the failover: %v", r)
	}
	r = recv(t, wrel, 10*time.Second, "rel's waiter")
	if g := r.grant(t, "rel's waiter"); g.Fence <= rel.Fence {
		t.Fatalf("rel's waiter got fence %d, not above %d", g.Fence, rel.Fence)
	}
	t.Logf("rel: waiter granted %s after the release was sent", r.at.Sub(released).Round(time.Millisecond))
}

func testResentKeepsPlace(t *testing.T, bin string) {
	h, l, f := startCluster(t, bin)
	c := newCC(t)
	L, F1, F2 := h.Nodes[l], h.Nodes[f[0]], h.Nodes[f[1]]

	hold := c.acquire(L, "re", "holder", "", 30*time.Second, 0).grant(t, "holder")
	w1 := async(func() reply { return c.acquire(F1, "re", "w1", "rid-w1", 30*time.Second, 30*time.Second) })
	until(t, 10*time.Second, "w1 queued", func() bool { ki, _ := c.inspect(L, "re", false); return ki.Waiters == 1 })
	w2 := async(func() reply { return c.acquire(F2, "re", "w2", "rid-w2", 30*time.Second, 30*time.Second) })
	until(t, 10*time.Second, "w2 queued", func() bool { ki, _ := c.inspect(L, "re", false); return ki.Waiters == 2 })

	// w1's node dies under its long poll.
	if err := h.Kill(F1); err != nil {
		t.Fatal(err)
	}
	if r := recv(t, w1, 10*time.Second, "w1's cut poll"); r.status == http.StatusOK {
		t.Fatalf("w1's poll on the killed node answered a grant: %v", r)
	}
	// w1 sends again, same request_id, to another node: its place is kept
	// (still two waiters, w1 first), and the release goes to it.
	w1b := async(func() reply { return c.acquire(F2, "re", "w1", "rid-w1", 30*time.Second, 30*time.Second) })
	time.Sleep(300 * time.Millisecond) // let the re-send reach the queue
	ki, r := c.inspect(L, "re", false)
	if r.status != http.StatusOK || ki.Waiters != 2 || len(ki.Queue) != 2 || ki.Queue[0].Owner != "w1" || ki.Queue[1].Owner != "w2" {
		t.Fatalf("after w1's re-send: want two waiters, w1 first, got %v", r)
	}
	notYet(t, w1b, "w1's re-send (the holder still holds)")
	if r := c.release(L, "re", hold.Token); r.status != http.StatusOK {
		t.Fatalf("release: %v", r)
	}
	g1 := recv(t, w1b, 10*time.Second, "w1's re-send").grant(t, "w1's re-send")
	if g1.Owner != "w1" || g1.Fence <= hold.Fence {
		t.Fatalf("w1's re-send: %+v, want w1 with a fence above %d", g1, hold.Fence)
	}
	notYet(t, w2, "w2 (behind w1)")
	// Sending again once granted returns the same grant.
	again := c.acquire(L, "re", "w1", "rid-w1", 30*time.Second, 30*time.Second).grant(t, "w1 sent once more")
	if again.Token != g1.Token || again.Fence != g1.Fence {
		t.Fatalf("w1 sent once more after its grant: %+v, want token and fence of %+v", again, g1)
	}
	if r := c.release(F2, "re", g1.Token); r.status != http.StatusOK {
		t.Fatalf("w1's release: %v", r)
	}
	g2 := recv(t, w2, 10*time.Second, "w2").grant(t, "w2")
	if g2.Owner != "w2" || g2.Fence <= g1.Fence {
		t.Fatalf("w2: %+v, want w2 with a fence above %d", g2, g1.Fence)
	}
}

func testFullRestart(t *testing.T, bin string) {
	h, _, _ := startCluster(t, bin)
	c := newCC(t)
	n := h.Nodes
	held := c.acquire(n[0], "kept", "holder", "", time.Minute, 0).grant(t, "held lease")
	other := c.acquire(n[1], "other", "o", "", 30*time.Second, 0).grant(t, "other lease")
	if r := c.release(n[2], "other", other.Token); r.status != http.StatusOK {
		t.Fatalf("release other: %v", r)
	}

	// SIGTERM every node at once, then start them all again.
	var wg sync.WaitGroup
	for _, node := range n {
		wg.Go(func() { h.stop(node) })
	}
	wg.Wait()
	stopped := time.Now()
	for _, node := range n {
		if err := h.Restart(node); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for _, node := range n {
		if err := h.WaitReady(ctx, node); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("cluster ready again %s after the full stop", time.Since(stopped).Round(time.Millisecond))

	ki, r := c.inspect(n[2], "kept", false)
	if r.status != http.StatusOK || !ki.Held || ki.Holder.Fence != held.Fence {
		t.Fatalf("after the restart: want kept held by fence %d, got %v", held.Fence, r)
	}
	rn := retry(10*time.Second, func() reply { return c.renew(n[1], "kept", held.Token, time.Minute) })
	if g := rn.grant(t, "renew with the old token after the restart"); g.Fence != held.Fence {
		t.Fatalf("renew after the restart: fence %d, want %d", g.Fence, held.Fence)
	}
	// The lease is still exclusive.
	if r := c.acquire(n[0], "kept", "thief", "", 10*time.Second, 0); r.status == http.StatusOK {
		t.Fatalf("acquire of a held key after the restart was granted: %v", r)
	}
	if r := c.release(n[2], "kept", held.Token); r.status != http.StatusOK {
		t.Fatalf("release after the restart: %v", r)
	}
	for key, before := range map[string]uint64{"kept": held.Fence, "other": other.Fence} {
		g := c.acquire(n[1], key, "after", "", 10*time.Second, 0).grant(t, "acquire after the restart")
		if g.Fence <= before {
			t.Fatalf("%s: fence %d after the restart, not above %d before it", key, g.Fence, before)
		}
	}
}

func testLeaderSIGTERM(t *testing.T, bin string) {
	h, l, f := startCluster(t, bin)
	c := newCC(t)
	L := h.Nodes[l]
	followers := []*Node{h.Nodes[f[0]], h.Nodes[f[1]]}

	// Four clients acquire and release their own keys through the
	// followers as fast as they can; ok records every grant's time.
	var mu sync.Mutex
	var oks []time.Time
	failures := 0
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			node, key := followers[i%2], fmt.Sprintf("gap-%d", i)
			for ctx.Err() == nil {
				r := c.acquire(node, key, "gap", "", 5*time.Second, 0)
				mu.Lock()
				if r.status == http.StatusOK {
					oks = append(oks, r.at)
				} else {
					failures++
				}
				mu.Unlock()
				if r.status != http.StatusOK {
					time.Sleep(5 * time.Millisecond)
					continue
				}
				var g grant
				json.Unmarshal(r.body, &g)
				retry(5*time.Second, func() reply { return c.release(node, key, g.Token) })
			}
		})
	}
	defer func() { cancel(); wg.Wait() }()
	time.Sleep(time.Second)
	term := time.Now()
	stopped := async(func() reply { h.stop(L); return reply{at: time.Now()} })
	var newLeader string
	until(t, 15*time.Second, "leadership moved", func() bool {
		var ci clusterInfo
		_, err := getJSON(context.Background(), c.hc, followers[0].URL+"/v1/cluster", &ci)
		newLeader = ci.LeaderID
		return err == nil && ci.LeaderID != "" && ci.LeaderID != L.ID
	})
	moved := time.Now()
	exited := recv(t, stopped, 25*time.Second, "the old leader's exit")
	time.Sleep(2 * time.Second)
	cancel()
	wg.Wait()

	mu.Lock()
	defer mu.Unlock()
	gap, last, after := time.Duration(0), term, 0
	for _, at := range sortedTimes(oks) {
		if at.Before(term) {
			continue
		}
		gap = max(gap, at.Sub(last))
		last = at
		after++
	}
	if after == 0 {
		t.Fatalf("no acquire succeeded after the leader's SIGTERM (%d failures)", failures)
	}
	t.Logf("leader %s SIGTERM: %s led after %s, old process exited after %s; longest gap between successful acquires %s (%d grants after the SIGTERM, %d failed calls)",
		L.ID, newLeader, moved.Sub(term).Round(time.Millisecond), exited.at.Sub(term).Round(time.Millisecond), gap.Round(time.Millisecond), after, failures)
}

func sortedTimes(ts []time.Time) []time.Time {
	out := slices.Clone(ts)
	slices.SortFunc(out, func(a, b time.Time) int { return a.Compare(b) })
	return out
}

func testBadClusterConfig(t *testing.T, bin string) {
	dir := t.TempDir()
	listen, _ := freePort("127.0.0.1")
	raft, _ := freePort("127.0.0.1")
	peers := func(ids ...string) string {
		var b strings.Builder
		for i, id := range ids {
			addr := raft
			if i > 0 {
				addr = fmt.Sprintf("127.0.0.1:%d", 1+i)
			}
			fmt.Fprintf(&b, "    - {id: %s, raft: %s, api: http://127.0.0.1:%d}\n", id, addr, 10+i)
		}
		return b.String()
	}
	conf := func(node, dataDir, peerList string) string {
		return fmt.Sprintf("listen: %s\ncluster:\n  node_id: %s\n  raft_listen: %s\n  data_dir: %s\n  peers:\n%s", listen, node, raft, dataDir, peerList)
	}
	foreign := filepath.Join(dir, "foreign")
	os.MkdirAll(foreign, 0o700)
	os.WriteFile(filepath.Join(foreign, "node.json"), []byte(`{"node_id":"n2"}`+"\n"), 0o600)
	file := filepath.Join(dir, "a-file")
	os.WriteFile(file, nil, 0o600)
	cases := []struct {
		name, config, key string
	}{
		{"duplicate peer ids", conf("n1", filepath.Join(dir, "d1"), peers("n1", "n2", "n2")), "cluster.peers[2].id"},
		{"this node missing from peers", conf("n9", filepath.Join(dir, "d2"), strings.ReplaceAll(peers("n1", "n2", "n3"), raft, "127.0.0.1:9")), "cluster.peers"},
		{"data_dir of another node", conf("n1", foreign, peers("n1", "n2", "n3")), "cluster.data_dir"},
		{"data_dir not writable", conf("n1", filepath.Join(file, "data"), peers("n1", "n2", "n3")), "cluster.data_dir"},
	}
	if os.Geteuid() != 0 { // root writes anywhere
		ro := filepath.Join(dir, "read-only")
		os.MkdirAll(ro, 0o500)
		cases = append(cases, struct{ name, config, key string }{"read-only data_dir", conf("n1", ro, peers("n1", "n2", "n3")), "cluster.data_dir"})
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "bad.yaml")
			if err := os.WriteFile(path, []byte(tc.config), 0o600); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			out, err := exec.CommandContext(ctx, bin, "serve", "--config", path).CombinedOutput()
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() != 2 {
				t.Fatalf("want exit 2, got %v; output:\n%s", err, out)
			}
			lines := strings.Split(strings.TrimSpace(string(out)), "\n")
			if len(lines) != 1 || !strings.Contains(lines[0], tc.key+":") {
				t.Fatalf("want one line naming %s, got:\n%s", tc.key, out)
			}
			t.Logf("%s", lines[0])
		})
	}
}
