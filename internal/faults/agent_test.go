package faults

import (
	"context"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestAgent checks the agent role against real processes: an app calling
// only the agent acquires, queues and releases; the leader's kill -9 while
// the app's long poll waits through the agent is ridden out (the app gets
// its grant, never an error); an agent that reaches no server answers 503
// and is not ready; a bad agent configuration is one line and exit 2.
func TestAgent(t *testing.T) {
	if testing.Short() {
		t.Skip("runs real daemons")
	}
	bin := BuildBinary(t, t.TempDir())
	t.Run("app through the agent, leader killed", func(t *testing.T) { testAgentFailover(t, bin) })
	t.Run("no server reachable", func(t *testing.T) { testAgentNoServer(t, bin) })
	t.Run("bad config", func(t *testing.T) { testAgentBadConfig(t, bin) })
}

func testAgentFailover(t *testing.T, bin string) {
	h, l, f := startCluster(t, bin)
	L := h.Nodes[l]
	// The leader first: the agent sends there until it dies, so the app's
	// long poll is the one the kill cuts.
	servers := []string{L.URL, h.Nodes[f[0]].URL, h.Nodes[f[1]].URL}
	a, err := StartAgent(t, bin, servers, "")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := h.WaitReady(ctx, a); err != nil {
		t.Fatalf("agent: %v", err)
	}
	c := newCC(t)

	// Acquire, queue and release through the agent only.
	hold := c.acquire(a, "app", "holder", "", 30*time.Second, 0).grant(t, "acquire through the agent")
	if !strings.HasPrefix(hold.RequestID, "agent-") {
		t.Fatalf("request_id %q, want one the agent made", hold.RequestID)
	}
	w := async(func() reply { return c.acquire(a, "app", "waiter", "", 30*time.Second, 30*time.Second) })
	until(t, 10*time.Second, "the waiter queued through the agent", func() bool { ki, _ := c.inspect(a, "app", false); return ki.Waiters == 1 })
	if r := c.release(a, "app", hold.Token); r.status != http.StatusOK {
		t.Fatalf("release through the agent: %v", r)
	}
	g := recv(t, w, 10*time.Second, "the waiter").grant(t, "the waiter")
	if g.Owner != "waiter" || g.Fence <= hold.Fence {
		t.Fatalf("waiter's grant %+v, want owner waiter and a fence above %d", g, hold.Fence)
	}
	if r := c.release(a, "app", g.Token); r.status != http.StatusOK {
		t.Fatalf("release: %v", r)
	}
	if r := c.do(http.MethodPost, a.URL+"/v1/locks/app/release?token=nope", 10*time.Second); r.status != http.StatusConflict || r.code != "not_holder" {
		t.Fatalf("a bad release through the agent: want the server's 409 not_holder, got %v", r)
	}

	// The leader dies while the app's long poll waits through the agent.
	hold = c.acquire(a, "fo", "holder", "", 30*time.Second, 0).grant(t, "acquire fo")
	w = async(func() reply { return c.acquire(a, "fo", "waiter", "", 30*time.Second, 40*time.Second) })
	until(t, 10*time.Second, "the waiter queued", func() bool { ki, _ := c.inspect(a, "fo", false); return ki.Waiters == 1 })
	if err := h.Kill(L); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	t.Logf("killed the leader %s", L.ID)
	time.Sleep(200 * time.Millisecond) // let the cut poll be re-sent before the release
	notYet(t, w, "the waiter (the holder still holds)")
	// The release through the agent is answered once a new leader is in
	// place: the app sees no error.
	if r := c.release(a, "fo", hold.Token); r.status != http.StatusOK {
		t.Fatalf("release through the agent during the failover: %v (want 200: the agent rides it out)", r)
	}
	t.Logf("release answered %s after the kill", time.Since(killed).Round(time.Millisecond))
	r := recv(t, w, 20*time.Second, "the waiter across the failover")
	g = r.grant(t, "the waiter across the failover (no error allowed)")
	if g.Owner != "waiter" || g.Fence <= hold.Fence {
		t.Fatalf("waiter's grant %+v, want owner waiter and a fence above %d", g, hold.Fence)
	}
	if n := agentFailovers(t, c, a); n < 1 {
		t.Fatalf("mutexd_agent_failovers_total = %v, want at least 1", n)
	}
	// The console and the metrics are the agent's own.
	if r := c.do(http.MethodGet, a.URL+"/ui/", 5*time.Second); r.status != http.StatusOK {
		t.Fatalf("console through the agent: %v", r)
	}
}

var failoversLine = regexp.MustCompile(`(?m)^mutexd_agent_failovers_total ([0-9.e+]+)$`)

func agentFailovers(t *testing.T, c *cc, a *Node) float64 {
	t.Helper()
	r := c.do(http.MethodGet, a.URL+"/metrics", 5*time.Second)
	m := failoversLine.FindSubmatch(r.body)
	if r.status != http.StatusOK || m == nil {
		t.Fatalf("agent metrics: no mutexd_agent_failovers_total in %v", r)
	}
	n, _ := strconv.ParseFloat(string(m[1]), 64)
	return n
}

func testAgentNoServer(t *testing.T, bin string) {
	dead, _ := freePort("127.0.0.1") // nobody listens there
	a, err := StartAgent(t, bin, []string{"http://" + dead}, "")
	if err != nil {
		t.Fatal(err)
	}
	c := newCC(t)
	until(t, 10*time.Second, "the agent up", func() bool {
		return c.do(http.MethodGet, a.URL+"/healthz", time.Second).status == http.StatusOK
	})
	time.Sleep(1500 * time.Millisecond) // a probe or two
	if r := c.do(http.MethodGet, a.URL+"/readyz", 5*time.Second); r.status != http.StatusServiceUnavailable {
		t.Fatalf("/readyz with no server: want 503, got %v", r)
	}
	start := time.Now()
	r := c.acquire(a, "k", "app", "", 10*time.Second, 0)
	if r.status != http.StatusServiceUnavailable || r.code != "unavailable" {
		t.Fatalf("acquire with no server: want 503 unavailable, got %v", r)
	}
	t.Logf("acquire answered %v after %s", r, time.Since(start).Round(time.Millisecond))
	if r := c.do(http.MethodGet, a.URL+"/v1/locks/k", 20*time.Second); r.status != http.StatusServiceUnavailable || r.code != "unavailable" {
		t.Fatalf("inspect with no server: want 503 unavailable, got %v", r)
	}
}

func testAgentBadConfig(t *testing.T, bin string) {
	listen, _ := freePort("127.0.0.1")
	for _, tc := range []struct{ name, config, key string }{
		{"no servers", "cluster:\n  role: agent\n", "cluster.servers"},
		{"bad server url", "cluster:\n  role: agent\n  servers: [127.0.0.1:7070]\n", "cluster.servers[0]"},
		{"a server's key", "cluster:\n  role: agent\n  servers: [http://127.0.0.1:7070]\n  data_dir: d\n", "cluster.data_dir"},
		{"unknown role", "cluster:\n  role: proxy\n", "cluster.role"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "bad.yaml")
			if err := os.WriteFile(path, []byte("listen: "+listen+"\n"+tc.config), 0o600); err != nil {
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
