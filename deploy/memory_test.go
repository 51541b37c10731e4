package deploy_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mutexd/mutexd/internal/config"
)

// memoryModel is what mutexd's resident memory costs, measured with the
// static binary on linux/amd64 and rounded up. deploy/README.md ("Sizing
// memory") gives the same figures as a formula; TestSidecarMemoryWorstCase
// checks them against the daemon filled to the sidecar's limits.
var memoryModel = struct {
	// base is the idle daemon (about 12 MiB), room for garbage, and the
	// events hub's history when full (17,408 events: 2.8 MB, plus their
	// keys and owners, about 7 MB at the longest).
	base          int64
	perConnection int64 // an open client connection, idle or waiting (20–22 KiB measured)
	perWaiter     int64 // an acquire waiting on an HTTP/2 stream (16 KiB measured)
	perKey        int64 // an active key (0.5–0.7 KiB measured)
	perSubscriber int64 // an event stream with a full buffer (about 400 KiB measured)
	// perRemembered is a remembered outcome or request id (lock.max_remembered):
	// a record of about 192 bytes, plus its key and id.
	perRemembered int64
}{24 << 20, 22 << 10, 16 << 10, 1 << 10, 512 << 10, 512}

// worstCase is the resident memory mutexd may reach with every limit in l
// used at once: HTTP/1.1 waiters are counted as connections, HTTP/2 ones
// as waiters too, so the sum holds for both.
func worstCase(l config.Limits, remembered int) int64 {
	m := memoryModel
	return m.base + int64(l.MaxConnections)*m.perConnection + int64(l.MaxWaiters)*m.perWaiter +
		int64(l.MaxKeys)*m.perKey + int64(l.MaxSubscribers)*m.perSubscriber + int64(remembered)*m.perRemembered
}

// goRuntimeEnv are the Go runtime's own environment variables, which a
// container may set for mutexd besides its configuration keys.
var goRuntimeEnv = []string{"GOMEMLIMIT", "GOGC", "GOMAXPROCS", "GODEBUG"}

// containerLimits returns the limits a container's environment gives
// mutexd, and its lock.max_remembered: the defaults, overridden by its
// MUTEXD_LIMITS_MAX_* and MUTEXD_LOCK_MAX_REMEMBERED variables.
func containerLimits(t *testing.T, env []k8sEnv) (config.Limits, int) {
	t.Helper()
	l := config.Default().Limits
	remembered := config.Default().Lock.MaxRemembered
	fields := map[string]*int{
		"MUTEXD_LOCK_MAX_REMEMBERED":        &remembered,
		"MUTEXD_LIMITS_MAX_CONNECTIONS":     &l.MaxConnections,
		"MUTEXD_LIMITS_MAX_WAITERS":         &l.MaxWaiters,
		"MUTEXD_LIMITS_MAX_WAITERS_PER_KEY": &l.MaxWaitersPerKey,
		"MUTEXD_LIMITS_MAX_KEYS":            &l.MaxKeys,
		"MUTEXD_LIMITS_MAX_SUBSCRIBERS":     &l.MaxSubscribers,
	}
	for _, e := range env {
		if f, ok := fields[e.Name]; ok {
			n, err := strconv.Atoi(e.Value)
			if err != nil {
				t.Fatalf("%s=%q: %v", e.Name, e.Value, err)
			}
			*f = n
		}
	}
	return l, remembered
}

// goMemLimit parses a GOMEMLIMIT value as the Go runtime does: a number of
// bytes with an optional unit B, KiB, MiB, GiB or TiB.
func goMemLimit(t *testing.T, v string) int64 {
	t.Helper()
	m := regexp.MustCompile(`^(\d+)(B|KiB|MiB|GiB|TiB)?$`).FindStringSubmatch(v)
	if m == nil {
		t.Fatalf("GOMEMLIMIT=%q is not a number of bytes with a unit B, KiB, MiB, GiB or TiB", v)
	}
	n, err := strconv.ParseInt(m[1], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	shift := map[string]uint{"": 0, "B": 0, "KiB": 10, "MiB": 20, "GiB": 30, "TiB": 40}[m[2]]
	return n << shift
}

// TestSidecarMemory checks the sidecar's memory settings fit together: the
// limits mutexd is configured with need at most the container's memory
// limit by the sizing formula, and GOMEMLIMIT is set below that limit
// (with room for what the Go runtime does not count) but above the
// request, so the collector works harder before the kernel kills mutexd.
func TestSidecarMemory(t *testing.T) {
	_, m := sidecarMutexd(t)
	checkContainerMemory(t, m)
	readme := string(readFile(t, "deploy/README.md"))
	if !strings.Contains(readme, "\n## Sizing memory\n") {
		t.Error(`deploy/README.md has no section "## Sizing memory"`)
	}
	for _, fig := range []string{"24 MiB", "22 KiB", "16 KiB", "1 KiB", "512 KiB", "0.5 KiB"} {
		if !strings.Contains(readme, fig) {
			t.Errorf("deploy/README.md's sizing formula lacks the figure %s the tests use", fig)
		}
	}
}

// checkContainerMemory checks a mutexd container's memory settings fit
// together (see TestSidecarMemory).
func checkContainerMemory(t *testing.T, m k8sContainer) {
	t.Helper()
	limit := quantityBytes(t, m.Resources.Limits["memory"])
	request := quantityBytes(t, m.Resources.Requests["memory"])
	l, remembered := containerLimits(t, m.Env)
	need := worstCase(l, remembered)
	t.Logf("limits %+v need %.1f MiB; memory limit %.1f MiB", l, float64(need)/(1<<20), float64(limit)/(1<<20))
	if need > limit {
		t.Errorf("mutexd's limits (max_connections %d, max_waiters %d, max_keys %d, max_subscribers %d) need up to %.1f MiB, more than the memory limit %s: lower them or raise the limit (deploy/README.md, \"Sizing memory\")",
			l.MaxConnections, l.MaxWaiters, l.MaxKeys, l.MaxSubscribers, float64(need)/(1<<20), m.Resources.Limits["memory"])
	}
	if l.MaxWaitersPerKey > l.MaxWaiters {
		t.Errorf("max_waiters_per_key %d exceeds max_waiters %d", l.MaxWaitersPerKey, l.MaxWaiters)
	}
	gml := ""
	for _, e := range m.Env {
		if e.Name == "GOMEMLIMIT" {
			gml = e.Value
		}
	}
	if gml == "" {
		t.Fatal("mutexd container sets no GOMEMLIMIT: without it the Go heap may grow to twice its live size and past the memory limit before a collection")
	}
	g := goMemLimit(t, gml)
	if g > limit*9/10 || g < request {
		t.Errorf("GOMEMLIMIT=%s, want between the memory request %s and 90%% of the limit %s (the runtime does not count the binary's own pages)",
			gml, m.Resources.Requests["memory"], m.Resources.Limits["memory"])
	}
}

// TestSidecarMemoryWorstCase runs the daemon built as the Dockerfile builds
// it with the sidecar's limits and GOMEMLIMIT, fills every limit at once
// (active keys, event streams that stop reading, acquires waiting on
// HTTP/2 streams, every remaining connection open), proves each limit is in
// force, and requires the resident memory to stay within the sizing
// formula and so within the container's memory limit.
func TestSidecarMemoryWorstCase(t *testing.T) {
	if testing.Short() {
		t.Skip("fills a daemon to its limits")
	}
	_, m := sidecarMutexd(t)
	limit := quantityBytes(t, m.Resources.Limits["memory"])
	l, remembered := containerLimits(t, m.Env)
	if worstCase(l, remembered) > limit {
		t.Fatalf("the sidecar's limits need up to %.1f MiB by the formula, over its memory limit (TestSidecarMemory says more); not filling a daemon to them", float64(worstCase(l, remembered))/(1<<20))
	}
	var env []string
	for _, e := range m.Env {
		if strings.HasPrefix(e.Name, "MUTEXD_LIMITS_") || e.Name == "GOMEMLIMIT" {
			env = append(env, e.Name+"="+e.Value)
		}
	}
	d := startDaemon(t, filepath.Join(builtBinaries(t), "mutexd"), env...)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()

	// One keep-alive connection takes every key but one.
	h1 := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
	defer h1.CloseIdleConnections()
	acquire := func(c *http.Client, key, query string) (int, string) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, d.url+"/v1/locks/"+key+"/acquire?"+query, nil)
		resp, err := c.Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for i := range l.MaxKeys - 1 {
		if code, body := acquire(h1, fmt.Sprintf("k%d", i), "ttl=10m&wait=0"); code != http.StatusOK {
			t.Fatalf("acquire key %d of %d: %d %s", i+1, l.MaxKeys-1, code, body)
		}
	}
	if code, body := acquire(h1, "hot", "ttl=10m&wait=0"); code != http.StatusOK {
		t.Fatalf("acquire hot: %d %s", code, body)
	}
	if code, body := acquire(h1, "one-too-many", "ttl=10m&wait=0"); code != http.StatusTooManyRequests || !strings.Contains(body, "too_many_keys") {
		t.Errorf("acquire past max_keys %d: %d %s, want 429 too_many_keys", l.MaxKeys, code, body)
	}

	// Event streams that never read: each buffers the events that follow.
	for i := range l.MaxSubscribers {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, d.url+"/v1/events", nil)
		resp, err := (&http.Client{Transport: &http.Transport{}}).Do(req)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("event stream %d: %v %v", i+1, resp, err)
		}
		t.Cleanup(func() { resp.Body.Close() })
	}

	// Waiters on HTTP/2 streams (h2c), each queued behind the held key.
	// At most as many connections as the waiters need (100 streams each):
	// requests sent before a connection is up would otherwise each dial
	// one, and under load enough of them to hit max_connections.
	h2t := &http.Transport{Protocols: new(http.Protocols), MaxConnsPerHost: (l.MaxWaiters + 99) / 100}
	h2t.Protocols.SetUnencryptedHTTP2(true)
	h2 := &http.Client{Transport: h2t}
	defer h2t.CloseIdleConnections()
	var wg sync.WaitGroup
	defer wg.Wait()
	waitCtx, stopWaiting := context.WithCancel(ctx)
	defer stopWaiting()
	for range l.MaxWaiters {
		wg.Go(func() {
			req, _ := http.NewRequestWithContext(waitCtx, http.MethodPost, d.url+"/v1/locks/hot/acquire?ttl=10m&wait=5m", nil)
			if resp, err := h2.Do(req); err == nil {
				resp.Body.Close()
			}
		})
	}
	waiters := func() int {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, d.url+"/v1/locks/hot", nil)
		resp, err := h1.Do(req)
		if err != nil {
			return -1
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		n := regexp.MustCompile(`"waiters":(\d+)`).FindSubmatch(b)
		if n == nil {
			return -1
		}
		v, _ := strconv.Atoi(string(n[1]))
		return v
	}
	for deadline := time.Now().Add(60 * time.Second); waiters() < l.MaxWaiters; {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d waiters queued within 60s", waiters(), l.MaxWaiters)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if code, body := acquire(h1, "hot", "ttl=10m&wait=1s"); code != http.StatusTooManyRequests || !strings.Contains(body, "too_many_waiters") {
		t.Errorf("acquire past max_waiters %d: %d %s, want 429 too_many_waiters", l.MaxWaiters, code, body)
	}

	// Every connection left open, idle after one request. The ones in
	// use: the keys' client, the streams, the HTTP/2 connections (250
	// streams each) and a margin for connections still closing.
	used := 1 + l.MaxSubscribers + (l.MaxWaiters+249)/250 + 5
	var idle []*http.Transport
	defer func() {
		for _, tr := range idle {
			tr.CloseIdleConnections()
		}
	}()
	for i := range l.MaxConnections - used {
		tr := &http.Transport{}
		idle = append(idle, tr)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, d.url+"/healthz", nil)
		resp, err := (&http.Client{Transport: tr}).Do(req)
		if err != nil {
			t.Fatalf("connection %d of %d: %v", i+1, l.MaxConnections-used, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("connection %d of %d: %s", i+1, l.MaxConnections-used, resp.Status)
		}
	}

	var peak int64
	for range 10 {
		time.Sleep(300 * time.Millisecond)
		peak = max(peak, residentBytes(t, d.pid))
	}
	need := worstCase(l, remembered)
	t.Logf("mutexd filled to %+v: %.1f MiB resident; the formula allows %.1f MiB, the container %.1f MiB",
		l, float64(peak)/(1<<20), float64(need)/(1<<20), float64(limit)/(1<<20))
	if peak > need || peak > limit {
		t.Errorf("mutexd filled to its limits uses %.1f MiB, over the formula's %.1f MiB or the memory limit %.1f MiB: re-measure the figures in deploy/README.md",
			float64(peak)/(1<<20), float64(need)/(1<<20), float64(limit)/(1<<20))
	}
	stopWaiting()
}
