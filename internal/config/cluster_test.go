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
