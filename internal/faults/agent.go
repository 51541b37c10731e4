package faults

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// StartAgent starts a mutexd agent (cluster.role agent) forwarding to
// servers, on its own loopback port, and stops it when the test ends. It
// does not wait for it to be ready: an agent is ready only while a server
// reports a leader (see Harness.WaitReady).
func StartAgent(t testing.TB, bin string, servers []string, extra string) (*Node, error) {
	t.Helper()
	dir := t.TempDir()
	listen, err := freePort("127.0.0.1")
	if err != nil {
		return nil, err
	}
	n := &Node{Index: -1, ID: "agent", URL: "http://" + listen, listen: listen, dataDir: filepath.Join(dir, "unused"),
		ConfigPath: filepath.Join(dir, "agent.yaml"), LogPath: filepath.Join(dir, "agent.log")}
	conf := fmt.Sprintf("listen: %s\nlog:\n  level: info\n  format: text\ncluster:\n  role: agent\n  servers: [%s]\n%s",
		listen, strings.Join(servers, ", "), extra)
	if err := os.WriteFile(n.ConfigPath, []byte(conf), 0o600); err != nil {
		return nil, err
	}
	h := &Harness{t: t, bin: bin}
	t.Cleanup(func() {
		h.stop(n)
		if t.Failed() {
			t.Logf("--- last lines of the agent's log:\n%s", lastLines(n.LogPath, 40))
		}
	})
	return n, h.start(n)
}
