package faults

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// BuildBinary builds cmd/mutexd into dir and returns its path. The daemon
// is built without the race detector: it is the system under test, run as
// users run it; the test process itself runs with -race.
func BuildBinary(t testing.TB, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "mutexd")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", "build", "-o", path, "github.com/mutexd/mutexd/cmd/mutexd").CombinedOutput()
	if err != nil {
		t.Fatalf("go build mutexd: %v\n%s", err, out)
	}
	return path
}

// Options shape a harness.
type Options struct {
	// Nodes is how many processes to run.
	Nodes int
	// Cluster writes a `cluster:` section (node_id, raft_listen, data_dir,
	// peers) into every node's configuration; without it each node is a
	// standalone daemon.
	Cluster bool
	// Extra is YAML appended to every configuration (top-level keys).
	Extra string
	// ClusterExtra is YAML added to every cluster section (its keys
	// indented by two spaces: "  snapshot_threshold: 64\n").
	ClusterExtra string
}

// Harness runs mutexd processes and the network between them.
type Harness struct {
	t    testing.TB
	bin  string
	opts Options
	// Net is the fault-injecting network between cluster nodes (its
	// proxies exist only in cluster mode).
	Net *Network
	// Nodes are the processes, by index; AddServer appends to it (from
	// the test's goroutine only), under mu for the proxies that read it.
	Nodes []*Node
	mu    sync.Mutex // guards Nodes against pids' reads
	dir   string
}

// Node is one mutexd process and its files. Its ports stay the same across
// restarts.
type Node struct {
	Index int
	ID    string
	// URL is the node's own API ("http://127.0.0.x:port"): clients talk to
	// it directly; only peers go through the proxies.
	URL        string
	listen     string
	raftListen string
	raftProxy  *Proxy
	apiProxy   *Proxy
	dataDir    string
	ConfigPath string
	LogPath    string

	mu     sync.Mutex // guards the following
	cmd    *exec.Cmd
	done   chan struct{} // closed when cmd has exited
	paused bool
}

// freePort returns a port free on ip right now.
func freePort(ip string) (string, error) {
	ln, err := net.Listen("tcp", ip+":0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// Start starts opts.Nodes processes of bin, each on its own loopback
// address 127.0.0.(10+i), waits until every one is ready, and stops them
// all when the test ends (printing the tail of each log if it failed).
func Start(t testing.TB, bin string, opts Options) (*Harness, error) {
	t.Helper()
	h := &Harness{t: t, bin: bin, opts: opts}
	h.Net = NewNetwork(h.pids)
	h.dir = t.TempDir() // before the cleanup, which reads the logs in it, so removed after it
	t.Cleanup(h.cleanup)
	for i := range opts.Nodes {
		n, err := h.newNode(i)
		if err != nil {
			return h, err
		}
		h.Nodes = append(h.Nodes, n)
	}
	// The proxies' goroutines read h.Nodes (pids): start them only once
	// it is complete, so that their reads follow every write to it.
	for _, n := range h.Nodes {
		if !opts.Cluster {
			break
		}
		var err error
		if n.raftProxy, err = h.Net.Proxy(n.Index, n.raftListen); err != nil {
			return h, err
		}
		if n.apiProxy, err = h.Net.Proxy(n.Index, n.listen); err != nil {
			return h, err
		}
	}
	for _, n := range h.Nodes {
		if err := os.WriteFile(n.ConfigPath, []byte(h.config(n)), 0o600); err != nil {
			return h, err
		}
	}
	for _, n := range h.Nodes {
		if err := h.start(n); err != nil {
			return h, err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for _, n := range h.Nodes {
		if err := h.WaitReady(ctx, n); err != nil {
			return h, err
		}
	}
	return h, nil
}

// newNode names node i and picks its ports, on its own loopback address
// 127.0.0.(10+i).
func (h *Harness) newNode(i int) (*Node, error) {
	ip := fmt.Sprintf("127.0.0.%d", 10+i)
	listen, err := freePort(ip)
	if err != nil {
		return nil, err
	}
	raft, err := freePort(ip)
	if err != nil {
		return nil, err
	}
	id := fmt.Sprintf("n%d", i+1)
	return &Node{Index: i, ID: id, URL: "http://" + listen, listen: listen, raftListen: raft,
		dataDir: filepath.Join(h.dir, id, "data"), ConfigPath: filepath.Join(h.dir, id+".yaml"),
		LogPath: filepath.Join(h.dir, id+".log")}, nil
}

// AddServer starts a new, empty cluster server (cluster.join: no peers,
// nothing bootstrapped) behind its own proxies, with extra added to its
// cluster section, and returns it without waiting: it is ready only once
// a member joins it to the cluster (JoinRaft and JoinAPI are the
// addresses to join it with).
func (h *Harness) AddServer(extra string) (*Node, error) {
	n, err := h.newNode(len(h.Nodes))
	if err != nil {
		return nil, err
	}
	if n.raftProxy, err = h.Net.Proxy(n.Index, n.raftListen); err != nil {
		return nil, err
	}
	if n.apiProxy, err = h.Net.Proxy(n.Index, n.listen); err != nil {
		return nil, err
	}
	h.mu.Lock()
	h.Nodes = append(h.Nodes, n)
	h.mu.Unlock()
	cfg := fmt.Sprintf("listen: %s\nlog:\n  level: info\n  format: text\ncluster:\n  node_id: %s\n  raft_listen: %s\n  raft_advertise: %s\n  data_dir: %s\n  join: true\n%s%s",
		n.listen, n.ID, n.raftListen, n.raftProxy.Addr(), n.dataDir, extra, h.opts.Extra)
	if err := os.WriteFile(n.ConfigPath, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	return n, h.start(n)
}

// JoinRaft is the Raft address the other members reach n at.
func (n *Node) JoinRaft() string { return n.raftProxy.Addr() }

// JoinAPI is the API URL the other members reach n at.
func (n *Node) JoinAPI() string { return "http://" + n.apiProxy.Addr() }

// DataDir is n's cluster.data_dir.
func (n *Node) DataDir() string { return n.dataDir }

// config is node n's configuration file. In cluster mode every peer's
// addresses are its proxies' (identical on every node, as the cluster
// requires), while raft_listen and listen are the node's own: so every
// connection between nodes, Raft and forwarded API calls alike, crosses a
// proxy that can cut it, and the workload reaches each node directly.
func (h *Harness) config(n *Node) string {
	var b strings.Builder
	fmt.Fprintf(&b, "listen: %s\nlog:\n  level: info\n  format: text\n", n.listen)
	if h.opts.Cluster {
		fmt.Fprintf(&b, "cluster:\n  node_id: %s\n  raft_listen: %s\n  raft_advertise: %s\n  data_dir: %s\n  peers:\n", n.ID, n.raftListen, n.raftProxy.Addr(), n.dataDir)
		for _, p := range h.Nodes {
			fmt.Fprintf(&b, "    - {id: %s, raft: %s, api: http://%s}\n", p.ID, p.raftProxy.Addr(), p.apiProxy.Addr())
		}
		b.WriteString(h.opts.ClusterExtra)
	}
	b.WriteString(h.opts.Extra)
	return b.String()
}

// start runs n's process (again, after a kill).
func (h *Harness) start(n *Node) error {
	if err := os.MkdirAll(n.dataDir, 0o700); err != nil {
		return err
	}
	logf, err := os.OpenFile(n.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close() // the child has its own descriptor
	fmt.Fprintf(logf, "=== faults: starting %s\n", n.ID)
	cmd := exec.Command(h.bin, "serve", "--config", n.ConfigPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", n.ID, err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	n.mu.Lock()
	n.cmd, n.done, n.paused = cmd, done, false
	n.mu.Unlock()
	return nil
}

// pids returns the running nodes' process ids by index.
func (h *Harness) pids() map[int]int {
	m := map[int]int{}
	h.mu.Lock()
	nodes := h.Nodes
	h.mu.Unlock()
	for _, n := range nodes {
		n.mu.Lock()
		if n.cmd != nil && !n.exited() {
			m[n.Index] = n.cmd.Process.Pid
		}
		n.mu.Unlock()
	}
	return m
}

// exited reports whether n's process has ended; n.mu must be held.
func (n *Node) exited() bool {
	if n.done == nil {
		return true
	}
	select {
	case <-n.done:
		return true
	default:
		return false
	}
}

// ErrExited is returned when a node's process ended while it was awaited.
var ErrExited = errors.New("mutexd exited")

// WaitReady polls n's /readyz until it answers 200, the process exits
// (ErrExited) or ctx ends.
func (h *Harness) WaitReady(ctx context.Context, n *Node) error {
	c := &http.Client{Timeout: time.Second}
	for {
		n.mu.Lock()
		done := n.done
		n.mu.Unlock()
		select {
		case <-done:
			return fmt.Errorf("%s: %w: %s", n.ID, ErrExited, lastLines(n.LogPath, 5))
		default:
		}
		if resp, err := c.Get(n.URL + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not ready: %w", n.ID, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (n *Node) signal(sig syscall.Signal) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil || n.exited() {
		return fmt.Errorf("%s: %w", n.ID, ErrExited)
	}
	switch sig {
	case syscall.SIGSTOP:
		n.paused = true
	case syscall.SIGCONT:
		n.paused = false
	}
	return n.cmd.Process.Signal(sig)
}

// Pause stops n's process (SIGSTOP): it keeps its sockets but answers
// nothing, as a long GC pause or a frozen VM.
func (h *Harness) Pause(n *Node) error { return n.signal(syscall.SIGSTOP) }

// Resume continues a paused process (SIGCONT).
func (h *Harness) Resume(n *Node) error { return n.signal(syscall.SIGCONT) }

// Kill ends n's process with SIGKILL and waits until it is gone.
func (h *Harness) Kill(n *Node) error {
	if err := n.signal(syscall.SIGKILL); err != nil {
		return err
	}
	n.mu.Lock()
	done := n.done
	n.mu.Unlock()
	select {
	case <-done:
		return nil
	case <-time.After(10 * time.Second):
		return fmt.Errorf("%s did not die of SIGKILL within 10s", n.ID)
	}
}

// Restart starts a killed node again with the same configuration and data
// directory.
func (h *Harness) Restart(n *Node) error { return h.start(n) }

// stop ends n: SIGCONT if paused, SIGTERM, and SIGKILL after 10s.
func (h *Harness) stop(n *Node) {
	n.mu.Lock()
	cmd, done := n.cmd, n.done
	n.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(syscall.SIGCONT)
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
		return
	case <-time.After(10 * time.Second):
	}
	cmd.Process.Kill()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		h.t.Errorf("%s (pid %d) survived SIGKILL for 10s", n.ID, cmd.Process.Pid)
	}
}

func (h *Harness) cleanup() {
	var wg sync.WaitGroup
	for _, n := range h.Nodes {
		wg.Go(func() { h.stop(n) })
	}
	wg.Wait()
	h.Net.Close()
	if h.t.Failed() {
		keep := os.Getenv("FAULTS_KEEP_LOGS") // a directory to copy the whole logs to
		for _, n := range h.Nodes {
			h.t.Logf("--- last lines of %s's log:\n%s", n.ID, lastLines(n.LogPath, 40))
			if keep != "" {
				if b, err := os.ReadFile(n.LogPath); err == nil {
					_ = os.MkdirAll(keep, 0o755)
					_ = os.WriteFile(filepath.Join(keep, n.ID+".log"), b, 0o644)
				}
			}
		}
	}
}

// lastLines returns the last n lines of the file at path.
func lastLines(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
