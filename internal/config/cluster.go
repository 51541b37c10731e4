package config

import (
	"fmt"
	"net"
	"net/url"
	"reflect"
	"regexp"
	"strings"
	"time"
)

// Cluster makes the daemon a server of a replicated cluster (hashicorp/raft;
// docs/cluster.md), or an agent in front of one. Without node_id or role
// agent it runs standalone, in memory.
type Cluster struct {
	// Role is "server" (the default: a server when node_id is set) or
	// "agent": a stateless daemon that forwards every call to Servers.
	Role string `mapstructure:"role"`
	// Servers are the API URLs an agent forwards to (any server answers
	// every call); agents only.
	Servers []string `mapstructure:"servers"`
	// NodeID names this server, [a-z0-9-]{1,32}, unique in the cluster.
	NodeID string `mapstructure:"node_id"`
	// RaftListen is the Raft transport's host:port, advertised to the
	// peers as given (so not 0.0.0.0) unless RaftAdvertise says otherwise.
	RaftListen string `mapstructure:"raft_listen"`
	// RaftAdvertise is the address the peers dial, when it is not
	// RaftListen (behind NAT or a proxy); this server's entry in Peers
	// must give it.
	RaftAdvertise string `mapstructure:"raft_advertise"`
	// DataDir holds the Raft log (bbolt) and the snapshots.
	DataDir string `mapstructure:"data_dir"`
	// Peers are the initial voters, the same list on every server.
	Peers []Peer `mapstructure:"peers"`
	// Join makes a new server that is to be added to a running cluster
	// (mutexd cluster join): it bootstraps nothing, has no peers, and
	// learns the members from the leader once added.
	Join bool `mapstructure:"join"`
	// HeartbeatTimeout and ElectionTimeout are Raft's (0: 500ms each, for
	// a LAN).
	HeartbeatTimeout time.Duration `mapstructure:"heartbeat_timeout"`
	ElectionTimeout  time.Duration `mapstructure:"election_timeout"`
	// FailoverMargin is added to every lease's remaining time when a new
	// leader takes over (0: 1s).
	FailoverMargin time.Duration `mapstructure:"failover_margin"`
	// SnapshotThreshold, SnapshotInterval and TrailingLogs are Raft's: a
	// snapshot is taken when this many entries were appended since the
	// last one (checked every interval), and the log then keeps this many
	// entries behind it, for followers a little behind (0: 8192, 30s and
	// 10240). A server further behind, or a new one, installs the
	// snapshot instead.
	SnapshotThreshold int           `mapstructure:"snapshot_threshold"`
	SnapshotInterval  time.Duration `mapstructure:"snapshot_interval"`
	TrailingLogs      int           `mapstructure:"trailing_logs"`
}

// Peer is one server in cluster.peers.
type Peer struct {
	ID   string `mapstructure:"id"`
	Raft string `mapstructure:"raft"`
	API  string `mapstructure:"api"`
}

// Advertise is the Raft address the peers dial.
func (c Cluster) Advertise() string {
	if c.RaftAdvertise != "" {
		return c.RaftAdvertise
	}
	return c.RaftListen
}

// Enabled reports whether the daemon is a cluster server.
func (c Cluster) Enabled() bool { return c.NodeID != "" && c.Role != RoleAgent }

// The values of cluster.role.
const (
	RoleServer = "server"
	RoleAgent  = "agent"
)

// Agent reports whether the daemon is an agent: no Raft and no state, every
// call forwarded to Servers.
func (c Cluster) Agent() bool { return c.Role == RoleAgent }

var nodeIDPattern = regexp.MustCompile(`^[a-z0-9-]{1,32}$`)

// validate appends the cluster section's errors through bad.
func (c Cluster) validate(auth Auth, bad func(key, format string, args ...any)) {
	switch c.Role {
	case "", RoleServer:
	case RoleAgent:
		c.validateAgent(bad)
		return
	default:
		bad("cluster.role", "%q must be server or agent", clipValue(c.Role))
		return
	}
	if len(c.Servers) > 0 {
		bad("cluster.servers", "is for cluster.role agent only (a server's peers are cluster.peers)")
	}
	if !c.Enabled() {
		if len(c.Peers) > 0 || c.RaftListen != "" || c.DataDir != "" || c.Role == RoleServer {
			bad("cluster.node_id", "is required when the cluster section is set")
		}
		return
	}
	if !nodeIDPattern.MatchString(c.NodeID) {
		bad("cluster.node_id", "%q must be 1 to 32 of a-z, 0-9 and -", clipValue(c.NodeID))
	}
	if host, port, err := net.SplitHostPort(c.RaftListen); err != nil || port == "" || host == "" {
		bad("cluster.raft_listen", "%q is not a host:port address", clipValue(c.RaftListen))
	} else if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() && c.RaftAdvertise == "" {
		bad("cluster.raft_listen", "%q is advertised to the peers as given, so it must name this server, not %s (or set cluster.raft_advertise)", c.RaftListen, host)
	}
	if c.RaftAdvertise != "" {
		if host, port, err := net.SplitHostPort(c.RaftAdvertise); err != nil || port == "" || host == "" {
			bad("cluster.raft_advertise", "%q is not a host:port address", clipValue(c.RaftAdvertise))
		} else if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
			bad("cluster.raft_advertise", "%q must name this server, not %s", c.RaftAdvertise, host)
		}
	}
	if c.DataDir == "" {
		bad("cluster.data_dir", "is required")
	}
	switch {
	case c.Join && len(c.Peers) > 0:
		bad("cluster.peers", "must be empty with cluster.join: a joining server learns the members from the cluster")
	case len(c.Peers) == 0 && !c.Join:
		bad("cluster.peers", "is required: the initial voters, this server among them (or set cluster.join to add this server to a running cluster)")
	}
	ids, raftAddrs := map[string]bool{}, map[string]bool{}
	self := false
	for i, p := range c.Peers {
		key := fmt.Sprintf("cluster.peers[%d]", i)
		if !nodeIDPattern.MatchString(p.ID) {
			bad(key+".id", "%q must be 1 to 32 of a-z, 0-9 and -", clipValue(p.ID))
		}
		if ids[p.ID] {
			bad(key+".id", "%q is listed twice", p.ID)
		}
		ids[p.ID] = true
		if _, port, err := net.SplitHostPort(p.Raft); err != nil || port == "" {
			bad(key+".raft", "%q is not a host:port address", clipValue(p.Raft))
		}
		if raftAddrs[p.Raft] {
			bad(key+".raft", "%q is listed twice", p.Raft)
		}
		raftAddrs[p.Raft] = true
		if u, err := url.Parse(p.API); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" {
			bad(key+".api", "%q must be an http:// or https:// URL with a host", clipValue(p.API))
		}
		if p.ID == c.NodeID {
			self = true
			if adv := c.Advertise(); p.Raft != adv {
				bad(key+".raft", "%q differs from %q, the Raft address this server advertises (cluster.raft_advertise, or else cluster.raft_listen)", p.Raft, adv)
			}
		}
	}
	if len(c.Peers) > 0 && !self {
		bad("cluster.peers", "does not list this server (cluster.node_id %q)", c.NodeID)
	}
	for _, d := range []struct {
		key string
		v   time.Duration
	}{{"cluster.heartbeat_timeout", c.HeartbeatTimeout}, {"cluster.election_timeout", c.ElectionTimeout}, {"cluster.failover_margin", c.FailoverMargin}} {
		if d.v != 0 && d.v < 10*time.Millisecond {
			bad(d.key, "must be at least 10ms (or 0 for the default), got %s", d.v)
		}
	}
	if c.SnapshotInterval != 0 && c.SnapshotInterval < 10*time.Millisecond {
		bad("cluster.snapshot_interval", "must be at least 10ms (or 0 for the default), got %s", c.SnapshotInterval)
	}
	if c.SnapshotThreshold < 0 {
		bad("cluster.snapshot_threshold", "must not be negative (0 is the default), got %d", c.SnapshotThreshold)
	}
	if c.TrailingLogs < 0 {
		bad("cluster.trailing_logs", "must not be negative (0 is the default), got %d", c.TrailingLogs)
	}
	if auth.Enabled() && len(auth.AdminTokens) == 0 {
		bad("auth.admin_tokens", "a cluster with auth on needs an admin token: servers forward calls to the leader with the first one")
	}
}

// validateAgent checks an agent's section: servers to forward to, and
// none of a server's keys (an agent has no Raft and no state).
func (c Cluster) validateAgent(bad func(key, format string, args ...any)) {
	for _, k := range []struct {
		key string
		set bool
	}{{"cluster.node_id", c.NodeID != ""}, {"cluster.raft_listen", c.RaftListen != ""}, {"cluster.raft_advertise", c.RaftAdvertise != ""},
		{"cluster.data_dir", c.DataDir != ""}, {"cluster.peers", len(c.Peers) > 0}} {
		if k.set {
			bad(k.key, "must not be set on an agent (cluster.role agent has no Raft and no state)")
		}
	}
	if len(c.Servers) == 0 {
		bad("cluster.servers", "is required for cluster.role agent: the servers' API URLs")
	}
	seen := map[string]bool{}
	for i, s := range c.Servers {
		key := fmt.Sprintf("cluster.servers[%d]", i)
		if u, err := url.Parse(s); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
			bad(key, "%q must be an http:// or https:// URL with a host", clipValue(s))
			continue
		}
		if seen[s] {
			bad(key, "%q is listed twice", clipValue(s))
		}
		seen[s] = true
	}
}

// clipValue shortens a value quoted in an error.
func clipValue(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}

var peerListType = reflect.TypeFor[[]Peer]()

// peerListHook reads cluster.peers from the environment or a flag:
// "id@raft-host:port@api-url" entries, comma-separated.
func peerListHook(_ reflect.Type, to reflect.Type, raw any) (any, error) {
	if to != peerListType {
		return raw, nil
	}
	if l, ok := raw.([]any); ok && len(l) == 0 {
		return []Peer(nil), nil // an empty list is the default, nil
	}
	s, ok := raw.(string)
	if !ok {
		return raw, nil
	}
	var out []Peer
	for _, e := range strings.Split(s, ",") {
		if e = strings.TrimSpace(e); e == "" {
			continue
		}
		parts := strings.SplitN(e, "@", 3)
		if len(parts) != 3 {
			return nil, fmt.Errorf("want id@raft-host:port@api-url entries, comma-separated, got %q", clipValue(e))
		}
		out = append(out, Peer{ID: parts[0], Raft: parts[1], API: parts[2]})
	}
	return out, nil
}
