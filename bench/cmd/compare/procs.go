package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mutexd/mutexd/internal/loadgen"
)

// proc is one server process started by the driver.
type proc struct {
	name    string
	cmd     *exec.Cmd
	addr    string // what the target needs: a base URL or host:port
	started time.Time
	ready   time.Duration // from exec to the first healthy answer
}

// freePort returns a loopback port that was free a moment ago.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// start runs bin with args, logging to dir/name.log.
func start(name, dir, bin string, env []string, args ...string) (*proc, io.ReadCloser, error) {
	logf, err := os.Create(filepath.Join(dir, name+".log"))
	if err != nil {
		return nil, nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = logf
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, nil, err
	}
	p := &proc{name: name, cmd: cmd, started: time.Now()}
	if err := cmd.Start(); err != nil {
		return nil, nil, fmt.Errorf("start %s: %w", name, err)
	}
	return p, stdout, nil
}

// stop kills the process and waits for it.
func (p *proc) stop() {
	if p == nil || p.cmd.Process == nil {
		return
	}
	_ = p.cmd.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() { _ = p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = p.cmd.Process.Kill()
		<-done
	}
}

// rssKiB reads the process's resident set size from /proc.
func (p *proc) rssKiB() (int64, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(raw)) {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			return strconv.ParseInt(f[1], 10, 64)
		}
	}
	return 0, errors.New("no VmRSS in /proc status")
}

// cpu returns the CPU time the process has used so far, in clock ticks
// of 10 ms (user + system, from /proc/PID/stat).
func (p *proc) cpu() int64 {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	// The command name (field 2) may hold spaces; fields count from its ')'.
	f := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+1:]))
	if len(f) < 13 {
		return 0
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return utime + stime
}

// waitHTTP polls url until it answers 200.
func waitHTTP(ctx context.Context, p *proc, url string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	c := &http.Client{Timeout: time.Second}
	for {
		if resp, err := c.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				p.ready = time.Since(p.started)
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s never answered %s (see its log)", p.name, url)
		case <-time.After(time.Millisecond):
		}
	}
}

// startMutexd starts the daemon at bin under name (its log is dir/name.log).
func startMutexd(ctx context.Context, name, dir, bin string, env ...string) (*proc, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	p, out, err := start(name, dir, bin, env, "serve", "--listen", addr, "--log-level", "warn")
	if err != nil {
		return nil, err
	}
	go func() { _, _ = io.Copy(io.Discard, out) }()
	p.addr = "http://" + addr
	return p, waitHTTP(ctx, p, p.addr+"/readyz")
}

func startCeiling(ctx context.Context, dir, bin, mode string) (*proc, error) {
	p, out, err := start("ceiling-"+mode, dir, bin, nil, "-mode", mode)
	if err != nil {
		return nil, err
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		p.stop()
		return nil, fmt.Errorf("ceiling %s printed no address: %w", mode, err)
	}
	p.addr = "http://" + strings.TrimSpace(line)
	return p, waitHTTP(ctx, p, p.addr+"/readyz")
}

func startRedis(ctx context.Context, dir string) (*proc, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	p, out, err := start("redis", dir, "redis-server", nil, "--port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--daemonize", "no", "--maxclients", "20000")
	if err != nil {
		return nil, err
	}
	go func() { _, _ = io.Copy(io.Discard, out) }()
	p.addr = "127.0.0.1:" + strconv.Itoa(port)
	c := redis.NewClient(&redis.Options{Addr: p.addr, MaxRetries: -1})
	defer c.Close()
	deadline := time.Now().Add(30 * time.Second)
	for c.Ping(ctx).Err() != nil {
		if time.Now().After(deadline) {
			p.stop()
			return nil, errors.New("redis-server never answered PING (see its log)")
		}
		time.Sleep(5 * time.Millisecond)
	}
	p.ready = time.Since(p.started)
	return p, nil
}

func startEtcd(ctx context.Context, dir string) (*proc, error) {
	cport, err := freePort()
	if err != nil {
		return nil, err
	}
	pport, err := freePort()
	if err != nil {
		return nil, err
	}
	client := "http://127.0.0.1:" + strconv.Itoa(cport)
	peer := "http://127.0.0.1:" + strconv.Itoa(pport)
	p, out, err := start("etcd", dir, "etcd", nil, "--name", "bench", "--data-dir", filepath.Join(dir, "etcd-data"),
		"--listen-client-urls", client, "--advertise-client-urls", client,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
		"--initial-cluster", "bench="+peer, "--logger", "zap", "--log-level", "warn")
	if err != nil {
		return nil, err
	}
	go func() { _, _ = io.Copy(io.Discard, out) }()
	p.addr = client
	return p, waitHTTP(ctx, p, client+"/health")
}

// version runs bin with args and returns the first line it prints.
func version(bin string, args ...string) string {
	out, err := exec.Command(bin, args...).CombinedOutput()
	if err != nil {
		return "unknown (" + err.Error() + ")"
	}
	line, _, _ := strings.Cut(string(out), "\n")
	return strings.TrimSpace(line)
}

// measureWaitingRSS holds one lease on a key of a fresh mutexd while n-1
// clients queue behind it, and returns the daemon's idle RSS and its RSS
// per waiting connection.
func measureWaitingRSS(ctx context.Context, dir, bin string, n int) (idleKiB int64, perWaiterKiB float64, readyIn time.Duration, err error) {
	// Room for every waiter and the inspection calls below.
	p, err := startMutexd(ctx, "mutexd-rss", dir, bin, "MUTEXD_LIMITS_MAX_CONNECTIONS="+strconv.Itoa(n+100))
	if err != nil {
		return 0, 0, 0, err
	}
	defer p.stop()
	readyIn = p.ready
	time.Sleep(time.Second) // let start-up garbage settle
	if idleKiB, err = p.rssKiB(); err != nil {
		return 0, 0, 0, err
	}
	// One client holds the key for the whole run; the others queue. Once
	// all n-1 are queued, the RSS is sampled for a few seconds of steady
	// state (median), then the run is cut short.
	hold := time.Minute
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	type outcome struct {
		res *loadgen.Result
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		res, err := loadgen.Run(runCtx, loadgen.HTTPTarget{BaseURL: p.addr}, loadgen.Config{
			Clients: n, Keys: 1, KeyPrefix: "rss-", Duration: hold, TTL: 10 * time.Minute, Hold: hold,
			Wait: 5 * time.Minute, Mode: loadgen.ModeCycle, // within lock.max_ttl and lock.max_wait
		})
		done <- outcome{res, err}
	}()
	deadline := time.Now().Add(40 * time.Second)
	for queued(p.addr+"/v1/locks/rss-0") < n-1 {
		if time.Now().After(deadline) {
			cancel()
			<-done
			return 0, 0, 0, fmt.Errorf("only %d of %d clients queued within 40s", queued(p.addr+"/v1/locks/rss-0"), n-1)
		}
		time.Sleep(250 * time.Millisecond)
	}
	var samples []int64
	for range 8 {
		time.Sleep(500 * time.Millisecond)
		if v, err := p.rssKiB(); err == nil {
			samples = append(samples, v)
		}
	}
	busy := median(samples)
	cancel()
	o := <-done
	if o.err != nil {
		return 0, 0, 0, o.err
	}
	return idleKiB, float64(busy-idleKiB) / float64(n-1), readyIn, nil
}

// queued returns the waiters count of a key's inspection, -1 on failure.
func queued(url string) int {
	resp, err := http.Get(url)
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	var v struct {
		Waiters int `json:"waiters"`
	}
	if json.NewDecoder(resp.Body).Decode(&v) != nil {
		return -1
	}
	return v.Waiters
}
