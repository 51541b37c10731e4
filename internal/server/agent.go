package server

import (
	"github.com/mutexd/mutexd/internal/agent"
)

// openAgent makes this daemon an agent (cluster.role agent): no engine and
// no Raft, every API call forwarded to cluster.servers. Its metrics go on
// the daemon's registry beside the API's route metrics.
func (s *Server) openAgent() error {
	a, err := agent.New(agent.Config{
		Servers:     s.cfg.Cluster.Servers,
		DefaultWait: s.cfg.Lock.DefaultWait,
		Registerer:  s.metrics.Registry(),
		Log:         s.log,
	})
	if err != nil {
		return err
	}
	s.agent = a
	return nil
}

// clusterReady is a cluster server's or an agent's readiness: its node
// knows a leader and has caught up, or some server the agent reaches does.
func (s *Server) clusterReady() bool {
	if s.agent != nil {
		return s.agent.Ready()
	}
	return s.node.Ready()
}
