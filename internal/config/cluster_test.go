package config_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/mutexd/mutexd/internal/config"
)

const threePeers = `
  peers:
    - {id: n1, raft: 127.0.0.1:7171, api: http://127.0.0.1:7070}
    - {id: n2, raft: 127.0.0.1:7172, api: http://127.0.0.1:7080}
    - {id: n3, raft: 127.0.0.1:7173, api: http://127.0.0.1:7090}
`

func TestClusterSection(t *testing.T) {
	c, err := load(t, "cluster:\n  node_id: n1\n  raft_listen: 127.0.0.1:7171\n  data_dir: d\n"+threePeers)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("Validate() = %v, want nil", err)
	}
	if !c.Cluster.Enabled() || len(c.Cluster.Peers) != 3 || c.Cluster.Peers[2] != (config.Peer{ID: "n3", Raft: "127.0.0.1:7173", API: "http://127.0.0.1:7090"}) {
		t.Fatalf("cluster = %+v", c.Cluster)
	}
}

// TestClusterJoin: a server to be added to a running cluster has no peers.
func TestClusterJoin(t *testing.T) {
	c, err := load(t, "cluster:\n  node_id: n4\n  raft_listen: 127.0.0.1:7174\n  data_dir: d\n  join: true\n")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("Validate() = %v, want nil", err)
	}
	if !c.Cluster.Join || len(c.Cluster.Peers) != 0 {
		t.Fatalf("cluster = %+v, want join and no peers", c.Cluster)
	}
}

func TestClusterPeersFromEnv(t *testing.T) {
	t.Setenv("MUTEXD_CLUSTER_NODE_ID", "n2")
	t.Setenv("MUTEXD_CLUSTER_RAFT_LISTEN", "127.0.0.1:7172")
	t.Setenv("MUTEXD_CLUSTER_DATA_DIR", "d")
	t.Setenv("MUTEXD_CLUSTER_PEERS", "n1@127.0.0.1:7171@http://127.0.0.1:7070, n2@127.0.0.1:7172@http://127.0.0.1:7080")
	c, err := load(t, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("Validate() = %v", err)
	}
	if got := c.Cluster.Peers; len(got) != 2 || got[1].API != "http://127.0.0.1:7080" {
		t.Fatalf("peers = %+v", got)
	}
}

func TestClusterBadInput(t *testing.T) {
	base := "cluster:\n  node_id: n1\n  raft_listen: 127.0.0.1:7171\n  data_dir: d\n"
	for _, tc := range []struct {
		name, yaml, want string
	}{
		{"duplicate ids", base + "  peers:\n    - {id: n1, raft: 127.0.0.1:7171, api: http://a:1}\n    - {id: n1, raft: 127.0.0.1:7172, api: http://b:1}\n", `cluster.peers[1].id: "n1" is listed twice`},
		{"this node missing", strings.Replace(base, "n1\n", "n9\n", 1) + threePeers, `cluster.peers: does not list this server (cluster.node_id "n9")`},
		{"bad node id", strings.Replace(base, "n1\n", "N_1\n", 1) + threePeers, "cluster.node_id"},
		{"raft address differs", strings.Replace(base, "7171", "7999", 1) + threePeers, "cluster.peers[0].raft"},
		{"unspecified raft_listen", strings.Replace(base, "127.0.0.1:7171", "0.0.0.0:7171", 1) + threePeers, "cluster.raft_listen"},
		{"no data_dir", strings.Replace(base, "  data_dir: d\n", "", 1) + threePeers, "cluster.data_dir: is required"},
		{"no peers", base, "cluster.peers: is required"},
		{"join with peers", base + "  join: true\n" + threePeers, "cluster.peers: must be empty with cluster.join"},
		{"bad api", base + "  peers:\n    - {id: n1, raft: 127.0.0.1:7171, api: ftp://a}\n", "cluster.peers[0].api"},
		{"peers without node_id", "cluster:\n" + threePeers, "cluster.node_id: is required"},
		{"tiny timeout", base + threePeers + "  heartbeat_timeout: 1ms\n", "cluster.heartbeat_timeout"},
		{"auth without admin token", base + threePeers + "auth:\n  tokens: [" + strings.Repeat("a", 20) + "]\n", "auth.admin_tokens"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := load(t, tc.yaml)
			if err == nil {
				err = c.Validate()
			}
			if err == nil || !errors.Is(err, config.ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error = %v, want ErrInvalid naming %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("error spans lines: %q", err)
			}
		})
	}
	t.Run("unknown peer key", func(t *testing.T) {
		_, err := load(t, base+"  peers:\n    - {id: n1, raft: 127.0.0.1:7171, api: http://a:1, voter: true}\n")
		if err == nil {
			t.Fatal("an unknown key in a peer was accepted")
		}
	})
}

func TestClusterAgent(t *testing.T) {
	c, err := load(t, "cluster:\n  role: agent\n  servers: [http://10.0.0.1:7070, https://b.example:7070/]\n")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("Validate() = %v, want nil", err)
	}
	if !c.Cluster.Agent() || c.Cluster.Enabled() || len(c.Cluster.Servers) != 2 {
		t.Fatalf("cluster = %+v, want an agent (not a server) with 2 servers", c.Cluster)
	}
	t.Setenv("MUTEXD_CLUSTER_ROLE", "agent")
	t.Setenv("MUTEXD_CLUSTER_SERVERS", "http://a:1, http://b:2,http://c:3")
	c, err = load(t, "")
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Cluster.Servers; !c.Cluster.Agent() || len(got) != 3 || got[1] != "http://b:2" {
		t.Fatalf("from the environment: role %q servers %q, want agent and 3 servers", c.Cluster.Role, got)
	}
}

func TestClusterAgentBadInput(t *testing.T) {
	agent := "cluster:\n  role: agent\n  servers: [http://a:1]\n"
	for _, tc := range []struct {
		name, yaml, want string
	}{
		{"unknown role", "cluster:\n  role: client\n", `cluster.role: "client" must be server or agent`},
		{"agent without servers", "cluster:\n  role: agent\n", "cluster.servers: is required for cluster.role agent"},
		{"agent with node_id", agent + "  node_id: n1\n", "cluster.node_id: must not be set on an agent"},
		{"agent with data_dir", agent + "  data_dir: d\n", "cluster.data_dir: must not be set on an agent"},
		{"agent with raft_listen", agent + "  raft_listen: 127.0.0.1:7171\n", "cluster.raft_listen: must not be set on an agent"},
		{"agent with peers", agent + threePeers, "cluster.peers: must not be set on an agent"},
		{"bad server url", "cluster:\n  role: agent\n  servers: [http://a:1, 'ftp://b']\n", `cluster.servers[1]: "ftp://b" must be an http:// or https:// URL`},
		{"server url without host", "cluster:\n  role: agent\n  servers: ['http://']\n", "cluster.servers[0]"},
		{"server url listed twice", "cluster:\n  role: agent\n  servers: [http://a:1, http://a:1]\n", `cluster.servers[1]: "http://a:1" is listed twice`},
		{"servers on a server", "cluster:\n  node_id: n1\n  raft_listen: 127.0.0.1:7171\n  data_dir: d\n  servers: [http://a:1]\n" + threePeers, "cluster.servers: is for cluster.role agent only"},
		{"role server without node_id", "cluster:\n  role: server\n", "cluster.node_id: is required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := load(t, tc.yaml)
			if err == nil {
				err = c.Validate()
			}
			if err == nil || !errors.Is(err, config.ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error = %v, want ErrInvalid naming %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("error spans lines: %q", err)
			}
		})
	}
}
