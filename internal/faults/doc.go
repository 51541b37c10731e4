// Package faults is mutexd's fault-injection suite, of the kind Jepsen runs
// against etcd: it starts real `mutexd serve` processes (a harness), puts a
// fault-injecting TCP proxy in front of every node's Raft and peer-API
// ports (a network), injects faults with a seeded nemesis (kill -9 and
// restart, SIGSTOP/SIGCONT, partition and heal), drives many HTTP clients
// against every node (a workload that records a history of every operation
// with its invoke and return times), and judges the history afterwards
// (checkers: a porcupine linearizability check of each key's lock history,
// no two live holders, fences, FIFO, no lost release, a fenced register,
// and identical state on every node).
//
// It owns nothing the daemon runs: it only talks to the binary over HTTP
// and signals, so it knows the cluster only through its configuration file
// and its API, never through internal/cluster.
package faults
