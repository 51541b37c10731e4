package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mutexd/mutexd/internal/loadgen"
)

// TestEtcdCluster starts three etcd members, runs a little load through
// all of them, kills the leader, sees another one take over, starts the
// old leader again and stops everything.
func TestEtcdCluster(t *testing.T) {
	if _, err := exec.LookPath("etcd"); err != nil {
		t.Skip("etcd is not installed (bench/run.sh installs it)")
	}
	if testing.Short() {
		t.Skip("starts three etcd processes")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	c, err := startEtcdCluster(ctx, t.TempDir(), 3)
	if err != nil {
		t.Fatal(err)
	}
	defer c.stop()
	lead, err := c.leader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	term, err := c.term(ctx)
	if err != nil || term == 0 {
		t.Fatalf("term = %d, %v; want > 0", term, err)
	}
	res, err := loadgen.Run(ctx, allMembers(c), loadgen.Config{Clients: 3, Keys: 1, Requests: 30, TTL: 5 * time.Second,
		Wait: 5 * time.Second, Mode: loadgen.ModeCycle, KeyPrefix: "test-"})
	if err != nil {
		t.Fatal(err)
	}
	if res.Grants < 30 || res.ErrorsTotal != 0 || res.Overlaps != 0 {
		t.Errorf("30 cycles on one key over three members: %d grants, errors %v, %d overlaps", res.Grants, res.Errors, res.Overlaps)
	}

	if err := c.signal(lead, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		l, err := c.leader(ctx)
		if err == nil && l != lead {
			if seen, err := c.leaderOf(ctx, l); err != nil || seen != l {
				t.Errorf("the new leader e%d names e%d as leader (%v)", l+1, seen+1, err)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no new leader 30s after killing e%d (last: %d, %v)", lead+1, l, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if t2, err := c.term(ctx); err != nil || t2 <= term {
		t.Errorf("term after the election = %d, %v; want > %d", t2, err, term)
	}
	if err := c.restart(ctx, lead); err != nil {
		t.Fatal(err)
	}
	if err := c.waitHealthy(ctx); err != nil {
		t.Fatal(err)
	}
	c.stop()
	for _, m := range c.members {
		if m.running() {
			t.Errorf("%s still runs after stop", m.name)
		}
	}
}

// TestFailoverEtcd runs one failover measurement of each kind on etcd.
func TestFailoverEtcd(t *testing.T) {
	if _, err := exec.LookPath("etcd"); err != nil {
		t.Skip("etcd is not installed (bench/run.sh installs it)")
	}
	if testing.Short() {
		t.Skip("starts three etcd processes")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	c, err := startEtcdCluster(ctx, t.TempDir(), 3)
	if err != nil {
		t.Fatal(err)
	}
	defer c.stop()
	for _, sig := range []syscall.Signal{syscall.SIGKILL, syscall.SIGTERM} {
		f, err := failover(ctx, c, sig, 0)
		if err != nil {
			t.Fatalf("%s: %v", sig, err)
		}
		if f.Err != "" || f.Outage.Recovery <= 0 || f.Outage.Pause <= 0 {
			t.Errorf("%s: %+v, want a positive recovery and pause", sig, f)
		}
		t.Logf("%s: first acquire after %s, longest pause %s", sig, f.Outage.Recovery, f.Outage.Pause)
	}
}

// TestMutexdWithoutClusterMode: a mutexd that refuses the cluster keys
// makes the start fail with errNoClusterMode, not a 60 s wait.
func TestMutexdWithoutClusterMode(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "old-mutexd")
	script := "#!/bin/sh\necho 'mutexd: invalid configuration: x.yaml: unknown key \"cluster.node_id\"' >&2\nexit 2\n"
	if err := os.WriteFile(bin, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	_, err := startMutexdCluster(ctx, dir, bin, 3)
	if !errors.Is(err, errNoClusterMode) {
		t.Fatalf("start = %v, want errNoClusterMode", err)
	}
	if !strings.Contains(err.Error(), `unknown key "cluster.node_id"`) {
		t.Errorf("error %q does not quote mutexd's own message", err)
	}
}

// TestMutexdClusterStatus reads the leader and the term from fake nodes
// that answer GET /v1/cluster as the spec says.
func TestMutexdClusterStatus(t *testing.T) {
	// n1 is an old leader that has not heard of term 8 yet.
	bodies := []string{
		`{"node_id":"n1","state":"leader","leader_id":"n1","term":7}`,
		`{"node_id":"n2","state":"follower","leader_id":"n3","term":8}`,
		`{"node_id":"n3","state":"leader","leader_id":"n3","term":8}`,
	}
	c := &mutexdCluster{ids: []string{"n1", "n2", "n3"}, http: &http.Client{Timeout: time.Second}}
	for i, body := range bodies {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/v1/cluster" {
				http.NotFound(w, r)
				return
			}
			fmt.Fprint(w, body)
		}))
		defer srv.Close()
		c.apis = append(c.apis, srv.URL)
		// A live process stands for the node, so running() is true.
		m := &member{name: fmt.Sprintf("n%d", i+1), bin: "sleep", args: []string{"60"}, log: filepath.Join(t.TempDir(), "log")}
		if err := m.start(); err != nil {
			t.Fatal(err)
		}
		defer m.signal(syscall.SIGKILL)
		c.members = append(c.members, m)
	}
	if l, err := c.leader(t.Context()); err != nil || l != 2 {
		t.Errorf("leader = %d, %v; want 2", l, err)
	}
	for i, want := range []int{0, 2, 2} {
		if l, err := c.leaderOf(t.Context(), i); err != nil || l != want {
			t.Errorf("leaderOf(%d) = %d, %v; want %d", i, l, err, want)
		}
	}
	if term, err := c.term(t.Context()); err != nil || term != 8 {
		t.Errorf("term = %d, %v; want 8", term, err)
	}
	// With n3's process gone, the stale n1 is all that claims to lead;
	// with n1's too, nobody alive does.
	if err := c.members[2].signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if l, err := c.leader(t.Context()); err != nil || l != 0 {
		t.Errorf("leader = %d, %v with n3 dead; want 0", l, err)
	}
	if err := c.members[0].signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if l, err := c.leader(t.Context()); err == nil {
		t.Errorf("leader = %d with both claimants dead, want an error", l)
	}
}
