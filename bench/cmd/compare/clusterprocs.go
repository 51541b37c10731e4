package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/mutexd/mutexd/bench/peers"
	"github.com/mutexd/mutexd/internal/loadgen"
)

// cluster is a three-member replicated lock service on loopback, as the
// cluster scenarios drive it: every member can be signalled and started
// again on its own data, and the leader and the Raft term are read from
// the members themselves.
type cluster interface {
	// name is the system's name in the report ("mutexd", "etcd").
	name() string
	// size is the number of members.
	size() int
	// memberTarget speaks to member i only.
	memberTarget(i int) loadgen.Target
	// leader returns the index of the live member that reports itself
	// leader, the one with the highest term if several do (an old leader
	// that has not heard of the new term yet): what another member names
	// may be a term behind.
	leader(ctx context.Context) (int, error)
	// leaderOf returns the index of the member that member i names as
	// leader, -1 when it names none.
	leaderOf(ctx context.Context, i int) (int, error)
	// term returns the highest Raft term among the live members.
	term(ctx context.Context) (uint64, error)
	// signal sends sig to member i and waits until it has exited.
	signal(i int, sig syscall.Signal) error
	// restart starts member i again on its data directory.
	restart(ctx context.Context, i int) error
	// waitHealthy waits until every member runs and answers healthy (which
	// for both systems means: it knows a leader).
	waitHealthy(ctx context.Context) error
	// stop ends every member.
	stop()
}

// spreadTarget opens client id's session on member id mod n, so a load is
// shared evenly by the members (2 in 3 clients then go through a follower).
type spreadTarget struct {
	label   string
	members []loadgen.Target
}

var _ loadgen.Target = spreadTarget{}

func (t spreadTarget) Name() string { return t.label }

func (t spreadTarget) Open(ctx context.Context, id int) (loadgen.Session, error) {
	return t.members[id%len(t.members)].Open(ctx, id)
}

// allMembers is a spreadTarget over every member of c.
func allMembers(c cluster) spreadTarget {
	t := spreadTarget{label: c.name()}
	for i := range c.size() {
		t.members = append(t.members, c.memberTarget(i))
	}
	return t
}

// member is one server process of a cluster that can be stopped and
// started again with the same arguments.
type member struct {
	name string
	bin  string
	args []string
	log  string // its stdout and stderr, appended over restarts
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
}

func (m *member) start() error {
	logf, err := os.OpenFile(m.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close() // the child has its own copy
	cmd := exec.Command(m.bin, m.args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", m.name, err)
	}
	m.cmd, m.done = cmd, make(chan struct{})
	done := m.done
	go func() { _ = cmd.Wait(); close(done) }()
	return nil
}

func (m *member) running() bool {
	if m.done == nil {
		return false
	}
	select {
	case <-m.done:
		return false
	default:
		return true
	}
}

// signal sends sig and waits for the exit; after 20 s it kills.
func (m *member) signal(sig syscall.Signal) error {
	if !m.running() {
		return fmt.Errorf("%s is not running", m.name)
	}
	if err := m.cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("signal %s: %w", m.name, err)
	}
	select {
	case <-m.done:
		return nil
	case <-time.After(20 * time.Second):
		_ = m.cmd.Process.Kill()
		<-m.done
		return fmt.Errorf("%s did not exit within 20s of %s; killed", m.name, sig)
	}
}

func (m *member) stop() {
	if m.running() {
		_ = m.signal(syscall.SIGTERM)
	}
}

// lastLines returns the end of the member's log, for error messages.
func (m *member) lastLines(n int) string {
	raw, _ := os.ReadFile(m.log)
	lines := strings.Split(strings.TrimSpace(string(raw)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// waitMemberHTTP polls url until it answers 200, the member exits or
// ctx ends.
func waitMemberHTTP(ctx context.Context, m *member, url string) error {
	c := &http.Client{Timeout: time.Second}
	for {
		if resp, err := c.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s never answered %s: %w (its log ends:\n%s)", m.name, url, ctx.Err(), m.lastLines(5))
		case <-m.done:
			return fmt.Errorf("%w: %s exited: %s", errMemberExited, m.name, m.lastLines(3))
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// errMemberExited is returned while waiting for a member that exited.
var errMemberExited = errors.New("member exited")

// loopbackPorts returns n ports that were free a moment ago.
func loopbackPorts(n int) ([]int, error) {
	out := make([]int, n)
	for i := range out {
		p, err := freePort()
		if err != nil {
			return nil, err
		}
		out[i] = p
	}
	return out, nil
}

// etcdCluster is three etcd members on loopback, each with its own data
// directory (etcd fsyncs its WAL by default: durable).
type etcdCluster struct {
	members []*member
	clients []string // client URL of each member
	ids     []uint64 // member ID of each member, learnt at the start
	admin   *clientv3.Client
}

var _ cluster = (*etcdCluster)(nil)

// startEtcdCluster starts an n-member etcd cluster with default timeouts
// (heartbeat 100 ms, election 1 s) under dir and waits until it is healthy.
func startEtcdCluster(ctx context.Context, dir string, n int) (*etcdCluster, error) {
	ports, err := loopbackPorts(2 * n)
	if err != nil {
		return nil, err
	}
	c := &etcdCluster{}
	var initial []string
	for i := range n {
		initial = append(initial, fmt.Sprintf("e%d=http://127.0.0.1:%d", i+1, ports[n+i]))
	}
	for i := range n {
		name := fmt.Sprintf("e%d", i+1)
		client, peer := fmt.Sprintf("http://127.0.0.1:%d", ports[i]), fmt.Sprintf("http://127.0.0.1:%d", ports[n+i])
		c.clients = append(c.clients, client)
		c.members = append(c.members, &member{name: "etcd-" + name, bin: "etcd", log: filepath.Join(dir, "etcd-"+name+".log"),
			args: []string{"--name", name, "--data-dir", filepath.Join(dir, "etcd-"+name),
				"--listen-client-urls", client, "--advertise-client-urls", client,
				"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
				"--initial-cluster", strings.Join(initial, ","), "--initial-cluster-state", "new",
				"--initial-cluster-token", "mutexd-bench", "--logger", "zap", "--log-level", "warn"}})
	}
	for _, m := range c.members {
		if err := m.start(); err != nil {
			c.stop()
			return nil, err
		}
	}
	admin, err := clientv3.New(clientv3.Config{Endpoints: c.clients, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		c.stop()
		return nil, err
	}
	c.admin = admin
	if err := c.waitHealthy(ctx); err != nil {
		c.stop()
		return nil, err
	}
	sts := c.status(ctx)
	for i := range c.members {
		st, ok := sts[i]
		if !ok {
			c.stop()
			return nil, fmt.Errorf("etcd member %d answered no status", i+1)
		}
		c.ids = append(c.ids, st.Header.MemberId)
	}
	return c, nil
}

func (c *etcdCluster) name() string { return "etcd" }
func (c *etcdCluster) size() int    { return len(c.members) }

func (c *etcdCluster) memberTarget(i int) loadgen.Target { return peers.Etcd{Endpoint: c.clients[i]} }

// status asks every live member for its status, by member index.
func (c *etcdCluster) status(ctx context.Context) map[int]*clientv3.StatusResponse {
	out := map[int]*clientv3.StatusResponse{}
	for i, m := range c.members {
		if !m.running() {
			continue
		}
		sctx, cancel := context.WithTimeout(ctx, time.Second)
		st, err := c.admin.Status(sctx, c.clients[i])
		cancel()
		if err == nil {
			out[i] = st
		}
	}
	return out
}

func (c *etcdCluster) leader(ctx context.Context) (int, error) {
	lead, term := -1, uint64(0)
	for i, st := range c.status(ctx) {
		if st.Leader == c.ids[i] && (lead < 0 || st.RaftTerm > term) {
			lead, term = i, st.RaftTerm
		}
	}
	if lead < 0 {
		return -1, errors.New("etcd: no live member reports itself leader")
	}
	return lead, nil
}

func (c *etcdCluster) leaderOf(ctx context.Context, i int) (int, error) {
	sctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	st, err := c.admin.Status(sctx, c.clients[i])
	if err != nil {
		return -1, err
	}
	return slices.Index(c.ids, st.Leader), nil
}

func (c *etcdCluster) term(ctx context.Context) (uint64, error) {
	var t uint64
	sts := c.status(ctx)
	for _, st := range sts {
		t = max(t, st.RaftTerm)
	}
	if len(sts) == 0 {
		return 0, errors.New("etcd: no member answered its status")
	}
	return t, nil
}

func (c *etcdCluster) signal(i int, sig syscall.Signal) error { return c.members[i].signal(sig) }

func (c *etcdCluster) restart(ctx context.Context, i int) error {
	// On its existing data directory etcd ignores the --initial-* flags
	// and rejoins with the membership stored there.
	return c.members[i].start()
}

func (c *etcdCluster) waitHealthy(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	for i, m := range c.members {
		// /health is 200 only while the member has a leader and serves a
		// quorum read.
		if err := waitMemberHTTP(ctx, m, c.clients[i]+"/health"); err != nil {
			return err
		}
	}
	return nil
}

func (c *etcdCluster) stop() {
	if c.admin != nil {
		_ = c.admin.Close()
	}
	for _, m := range c.members {
		m.stop()
	}
}

// mutexdCluster is three mutexd servers in cluster mode (CLUSTER-SPEC:
// `mutexd serve --config FILE` with a cluster: block), each with its own
// Raft data directory.
type mutexdCluster struct {
	members []*member
	ids     []string // node_id of each member
	apis    []string // API base URL of each member
	http    *http.Client
}

var _ cluster = (*mutexdCluster)(nil)

// errNoClusterMode is returned when the mutexd binary refuses the cluster
// configuration: a build from before cluster mode.
var errNoClusterMode = errors.New("this mutexd build rejects the cluster: configuration (no cluster mode yet?); run the etcd side alone with -cluster-systems etcd")

// mutexdClusterConfig is the configuration file of node i of n, whose API
// and Raft ports are apis[i] and rafts[i].
func mutexdClusterConfig(i int, dataDir string, apis, rafts []int) string {
	var b strings.Builder
	// pprof lets a stuck member's goroutines be read (dumpGoroutines).
	fmt.Fprintf(&b, "listen: 127.0.0.1:%d\ndebug:\n  pprof: true\ncluster:\n  node_id: n%d\n  raft_listen: 127.0.0.1:%d\n  data_dir: %s\n  peers:\n",
		apis[i], i+1, rafts[i], strconv.Quote(dataDir))
	for j := range apis {
		fmt.Fprintf(&b, "    - {id: n%d, raft: \"127.0.0.1:%d\", api: \"http://127.0.0.1:%d\"}\n", j+1, rafts[j], apis[j])
	}
	return b.String()
}

// startMutexdCluster starts n mutexd nodes of bin under dir with the
// default Raft timeouts (set MUTEXD_CLUSTER_* in the environment to tune
// them) and waits until every node is ready.
func startMutexdCluster(ctx context.Context, dir, bin string, n int) (*mutexdCluster, error) {
	ports, err := loopbackPorts(2 * n)
	if err != nil {
		return nil, err
	}
	apis, rafts := ports[:n], ports[n:]
	c := &mutexdCluster{http: &http.Client{Timeout: 2 * time.Second}}
	for i := range n {
		name := fmt.Sprintf("n%d", i+1)
		cfg := filepath.Join(dir, "mutexd-"+name+".yaml")
		if err := os.WriteFile(cfg, []byte(mutexdClusterConfig(i, filepath.Join(dir, "mutexd-"+name), apis, rafts)), 0o644); err != nil {
			return nil, err
		}
		c.ids = append(c.ids, name)
		c.apis = append(c.apis, fmt.Sprintf("http://127.0.0.1:%d", apis[i]))
		c.members = append(c.members, &member{name: "mutexd-" + name, bin: bin, log: filepath.Join(dir, "mutexd-"+name+".log"),
			args: []string{"serve", "--config", cfg, "--log-level", "warn"}})
	}
	for _, m := range c.members {
		if err := m.start(); err != nil {
			c.stop()
			return nil, err
		}
	}
	if err := c.waitHealthy(ctx); err != nil {
		c.stop()
		if errors.Is(err, errMemberExited) && rejectsCluster(c.members[0].lastLines(3)) {
			return nil, fmt.Errorf("%w: %s", errNoClusterMode, c.members[0].lastLines(1))
		}
		return nil, err
	}
	return c, nil
}

// rejectsCluster reports whether a mutexd log line is the configuration
// loader's refusal of the cluster keys.
func rejectsCluster(log string) bool {
	return strings.Contains(log, "invalid configuration") && strings.Contains(log, "cluster")
}

func (c *mutexdCluster) name() string { return "mutexd" }
func (c *mutexdCluster) size() int    { return len(c.members) }

func (c *mutexdCluster) memberTarget(i int) loadgen.Target {
	return loadgen.HTTPTarget{Label: "mutexd", BaseURL: c.apis[i]}
}

// clusterStatus is the part of GET /v1/cluster the benchmark reads.
type clusterStatus struct {
	NodeID   string `json:"node_id"`
	State    string `json:"state"`
	LeaderID string `json:"leader_id"`
	Term     uint64 `json:"term"`
}

func (c *mutexdCluster) status(ctx context.Context) map[int]clusterStatus {
	out := map[int]clusterStatus{}
	for i, m := range c.members {
		if !m.running() {
			continue
		}
		if st, err := c.statusOf(ctx, i); err == nil {
			out[i] = st
		}
	}
	return out
}

// statusOf is GET /v1/cluster of member i.
func (c *mutexdCluster) statusOf(ctx context.Context, i int) (clusterStatus, error) {
	var st clusterStatus
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.apis[i]+"/v1/cluster", nil)
	if err != nil {
		return st, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("GET /v1/cluster of %s: status %d", c.ids[i], resp.StatusCode)
	}
	return st, json.NewDecoder(resp.Body).Decode(&st)
}

func (c *mutexdCluster) leaderOf(ctx context.Context, i int) (int, error) {
	st, err := c.statusOf(ctx, i)
	if err != nil {
		return -1, err
	}
	return slices.Index(c.ids, st.LeaderID), nil
}

func (c *mutexdCluster) leader(ctx context.Context) (int, error) {
	lead, term := -1, uint64(0)
	for i, st := range c.status(ctx) {
		if st.State == "leader" && (lead < 0 || st.Term > term) {
			lead, term = i, st.Term
		}
	}
	if lead < 0 {
		return -1, errors.New(`mutexd: no live node reports state "leader" in GET /v1/cluster`)
	}
	return lead, nil
}

func (c *mutexdCluster) term(ctx context.Context) (uint64, error) {
	var t uint64
	sts := c.status(ctx)
	for _, st := range sts {
		t = max(t, st.Term)
	}
	if len(sts) == 0 {
		return 0, errors.New("mutexd: no node answered GET /v1/cluster")
	}
	return t, nil
}

func (c *mutexdCluster) signal(i int, sig syscall.Signal) error { return c.members[i].signal(sig) }

func (c *mutexdCluster) restart(ctx context.Context, i int) error { return c.members[i].start() }

func (c *mutexdCluster) waitHealthy(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	for i, m := range c.members {
		// /readyz is 200 once the node knows a leader and has caught up.
		if err := waitMemberHTTP(ctx, m, c.apis[i]+"/readyz"); err != nil {
			c.dumpGoroutines("unhealthy")
			return err
		}
	}
	return nil
}

// dumpGoroutines writes every running member's goroutines beside its log
// (as <log>.goroutines-<why>), so that a member that stops making
// progress can be diagnosed after the run (keep it with BENCH_KEEP=1).
func (c *mutexdCluster) dumpGoroutines(why string) {
	for i, m := range c.members {
		if !m.running() {
			continue
		}
		resp, err := c.http.Get(c.apis[i] + "/debug/pprof/goroutine?debug=2")
		if err != nil {
			log.Printf("%s: goroutine dump: %v", m.name, err)
			continue
		}
		name := strings.TrimSuffix(m.log, ".log") + ".goroutines-" + why + "-" + time.Now().Format("150405")
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err == nil {
			err = os.WriteFile(name, b, 0o644)
		}
		if err != nil {
			log.Printf("%s: goroutine dump: %v", m.name, err)
			continue
		}
		log.Printf("%s: goroutines written to %s", m.name, name)
	}
}

func (c *mutexdCluster) stop() {
	for _, m := range c.members {
		m.stop()
	}
}
