package server_test

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var (
	chaosDuration = flag.Duration("chaos.duration", 20*time.Second, "how long TestChaos runs its clients")
	chaosClients  = flag.Int("chaos.clients", 200, "concurrent HTTP clients in TestChaos")
	chaosSeed     = flag.Uint64("chaos.seed", 42, "seed of TestChaos's clients' random choices")
)

// chaosKeys are the contended keys.
var chaosKeys = []string{"alpha", "beta", "gamma", "delta", "epsilon"}

// answerMargin is how late past its wait an acquire may be answered.
const answerMargin = 2 * time.Second

// section is one key's shared critical section and fenced register, as the
// clients see them.
type section struct {
	mu sync.Mutex // guards the following
	// inside maps the fence of every holder inside to the end of its lease
	// as the holder believes it (from when it sent the acquire or renew).
	inside map[uint64]time.Time
	// revoked holds fences the operator force-released: their holders no
	// longer hold, whatever they believe.
	revoked map[uint64]bool
	// lastEntered is the highest fence that entered.
	lastEntered uint64
	// register is the fenced register: the highest fence written.
	register uint64
}

// chaos is the shared state and tallies of one run.
type chaos struct {
	t        *testing.T
	url      string
	sections map[string]*section
	deadline time.Time

	mu         sync.Mutex // guards violations and fences
	violations []string
	fences     map[uint64]string

	grants, expiries, aborts, cancels, timeouts, refused, unavailable atomic.Int64
	renewals, releases, lostReleases, forced, vanishedWaits, vanished atomic.Int64
	staleRejected, staleAccepted, writes                              atomic.Int64
	worstLate                                                         atomic.Int64
}

func (c *chaos) violate(format string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.violations) < 50 {
		c.violations = append(c.violations, fmt.Sprintf(format, args...))
	} else {
		c.violations = append(c.violations, "")
	}
}

// grantJSON is the part of acquire's, renew's and errors' bodies the test reads.
type grantJSON struct {
	Token    string `json:"token"`
	Fence    uint64 `json:"fence"`
	WaitedMS int64  `json:"waited_ms"`
	Previous *struct {
		Fence   uint64 `json:"fence"`
		Outcome string `json:"outcome"`
	} `json:"previous"`
	Error string `json:"error"`
}

// chaosClient is one HTTP client with its own connections, which it can
// drop abruptly (RST) to vanish.
type chaosClient struct {
	c     *chaos
	id    int
	rng   *rand.Rand
	http  *http.Client
	tr    *http.Transport
	mu    sync.Mutex
	conns []*net.TCPConn
}

func newChaosClient(c *chaos, id int) *chaosClient {
	cl := &chaosClient{c: c, id: id, rng: rand.New(rand.NewPCG(uint64(id), *chaosSeed))}
	var d net.Dialer
	cl.tr = &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := d.DialContext(ctx, network, addr)
		if err == nil {
			cl.mu.Lock()
			cl.conns = append(cl.conns, conn.(*net.TCPConn))
			cl.mu.Unlock()
		}
		return conn, err
	}}
	cl.http = &http.Client{Transport: cl.tr}
	return cl
}

// vanish resets every connection of the client, as a crashed process would.
func (cl *chaosClient) vanish() {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	for _, conn := range cl.conns {
		_ = conn.SetLinger(0)
		_ = conn.Close()
	}
	cl.conns = nil
}

func (cl *chaosClient) post(ctx context.Context, path string) (int, grantJSON, error) {
	req, _ := http.NewRequestWithContext(ctx, "POST", cl.c.url+path, nil)
	resp, err := cl.http.Do(req)
	if err != nil {
		return 0, grantJSON{}, err
	}
	defer resp.Body.Close()
	var g grantJSON
	raw, err := io.ReadAll(resp.Body)
	if err == nil {
		err = json.Unmarshal(raw, &g)
	}
	return resp.StatusCode, g, err
}

// run loops until the deadline: acquire one of the keys with a random
// wait and a short TTL, and, once granted, behave as a careful holder, a
// crashing holder or a paused (zombie) holder.
func (cl *chaosClient) run() {
	c := cl.c
	defer cl.tr.CloseIdleConnections()
	for time.Now().Before(c.deadline) {
		key := chaosKeys[cl.rng.IntN(len(chaosKeys))]
		ttl := time.Duration(1+cl.rng.IntN(2)) * time.Second
		wait := time.Duration(cl.rng.IntN(3000)) * time.Millisecond
		onError := "continue"
		if cl.rng.IntN(5) == 0 {
			onError = "stop"
		}
		path := fmt.Sprintf("/v1/locks/%s/acquire?ttl=%s&wait=%s&on_error=%s&owner=c%d", key, ttl, wait, onError, cl.id)

		if cl.rng.IntN(30) == 0 { // vanish mid-wait (or just after a grant)
			killed := make(chan struct{})
			kill := time.AfterFunc(time.Duration(cl.rng.IntN(500))*time.Millisecond, func() { cl.vanish(); close(killed) })
			_, _, _ = cl.post(context.Background(), path)
			if !kill.Stop() {
				<-killed // it must not reset the next iteration's connection
			}
			cl.vanish()
			c.vanishedWaits.Add(1)
			continue
		}

		sent := time.Now()
		code, g, err := cl.post(context.Background(), path)
		if late := time.Since(sent) - wait; late > 0 && late > time.Duration(c.worstLate.Load()) {
			c.worstLate.Store(int64(late))
		}
		if late := time.Since(sent) - wait; late > answerMargin {
			c.violate("client %d: acquire with wait %s answered after %s", cl.id, wait, time.Since(sent))
		}
		if err != nil {
			c.violate("client %d: acquire: %v", cl.id, err)
			continue
		}
		switch code {
		case 200:
		case 423:
			c.timeouts.Add(1)
			continue
		case 409:
			if g.Error != "aborted" {
				c.violate("client %d: acquire answered 409 %q", cl.id, g.Error)
			}
			c.aborts.Add(1)
			continue
		case 429:
			c.refused.Add(1)
			continue
		case 503:
			c.unavailable.Add(1)
			continue
		default:
			c.violate("client %d: acquire answered %d %q", cl.id, code, g.Error)
			continue
		}
		c.grants.Add(1)
		c.checkGrant(key, g)
		cl.hold(key, g, ttl, sent)
	}
}

// checkGrant checks fences: unique across all grants, and above the fence
// of the lease that ended before.
func (c *chaos) checkGrant(key string, g grantJSON) {
	c.mu.Lock()
	if other, dup := c.fences[g.Fence]; dup {
		c.mu.Unlock()
		c.violate("fence %d granted twice (%s and %s)", g.Fence, other, key)
		return
	}
	c.fences[g.Fence] = key
	c.mu.Unlock()
	if p := g.Previous; p != nil {
		if p.Fence >= g.Fence {
			c.violate("%s: fence %d granted after fence %d", key, g.Fence, p.Fence)
		}
		if p.Outcome == "expired" {
			c.expiries.Add(1)
		}
	}
}

// hold is a holder's life: enter the critical section, write to the
// register, maybe renew, then leave and release, vanish, or pause past the
// lease and try a stale write.
func (cl *chaosClient) hold(key string, g grantJSON, ttl time.Duration, sent time.Time) {
	c := cl.c
	s := c.sections[key]
	// The server granted at least waited_ms after the acquire was sent, so
	// its deadline is no earlier than this.
	until := sent.Add(time.Duration(g.WaitedMS)*time.Millisecond + ttl)
	if !c.enter(s, key, g.Fence, until) {
		return
	}
	c.write(s, key, g.Fence, until)
	if cl.rng.IntN(4) == 0 {
		time.Sleep(time.Duration(cl.rng.IntN(int(ttl/time.Millisecond)/4)) * time.Millisecond)
		renewSent := time.Now()
		code, _, err := cl.post(context.Background(), fmt.Sprintf("/v1/locks/%s/renew?token=%s&ttl=%s", key, g.Token, ttl))
		switch {
		case err != nil:
			c.violate("client %d: renew: %v", cl.id, err)
		case code == 200:
			c.renewals.Add(1)
			c.extend(s, g.Fence, renewSent.Add(ttl))
			until = renewSent.Add(ttl)
		case code != 409:
			c.violate("client %d: renew answered %d", cl.id, code)
		}
	}
	time.Sleep(time.Duration(cl.rng.IntN(50)) * time.Millisecond)
	c.write(s, key, g.Fence, until)

	switch r := cl.rng.IntN(40); {
	case r < 1: // vanish mid-hold: the lease must expire by itself
		c.leave(s, g.Fence)
		cl.vanish()
		c.vanished.Add(1)
		return
	case r < 3: // pause past the lease, then write as a zombie
		time.Sleep(time.Until(until) + ttl + time.Duration(cl.rng.IntN(500))*time.Millisecond)
		c.staleWrite(s, g.Fence)
		c.leave(s, g.Fence)
	default:
		c.leave(s, g.Fence)
	}
	outcome := "ok"
	if cl.rng.IntN(4) == 0 {
		outcome = "failed"
	}
	code, body, err := cl.post(context.Background(), fmt.Sprintf("/v1/locks/%s/release?token=%s&outcome=%s", key, g.Token, outcome))
	switch {
	case err != nil:
		c.violate("client %d: release: %v", cl.id, err)
	case code == 200:
		c.releases.Add(1)
	case code == 409 && body.Error == "not_holder":
		c.lostReleases.Add(1)
	default:
		c.violate("client %d: release answered %d %q", cl.id, code, body.Error)
	}
}

// enter puts a holder into the critical section, checking that nobody else
// inside holds an unexpired, unrevoked lease and that fences grow. A holder
// whose lease already ended (by its own clock, or by force) stays out.
func (c *chaos) enter(s *section, key string, fence uint64, until time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	if s.revoked[fence] || !now.Before(until) {
		return false
	}
	for other, otherUntil := range s.inside {
		if !s.revoked[other] && now.Before(otherUntil) {
			c.violate("%s: fence %d entered while fence %d holds until %s", key, fence, other, otherUntil.Sub(now))
		}
	}
	if fence <= s.lastEntered {
		c.violate("%s: fence %d entered after fence %d", key, fence, s.lastEntered)
	}
	s.lastEntered = fence
	s.inside[fence] = until
	return true
}

func (c *chaos) extend(s *section, fence uint64, until time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.inside[fence]; ok {
		s.inside[fence] = until
	}
}

func (c *chaos) leave(s *section, fence uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.inside, fence)
}

// write is a live holder's write to the fenced register: it must be
// accepted.
func (c *chaos) write(s *section, key string, fence uint64, until time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.revoked[fence] || !time.Now().Before(until) {
		return // no longer live: not a live write
	}
	c.writes.Add(1)
	if fence < s.register {
		c.violate("%s: live write with fence %d rejected: register at %d", key, fence, s.register)
		return
	}
	s.register = fence
}

// staleWrite is a zombie's write after its lease ended: the register
// rejects it if anyone was granted the key since.
func (c *chaos) staleWrite(s *section, fence uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if fence < s.register {
		c.staleRejected.Add(1)
		return
	}
	c.staleAccepted.Add(1) // nobody took the key meanwhile: harmless
	s.register = fence
}

// operator force-releases random keys now and then. It holds the key's
// section while it does, so the holder it evicts is marked revoked before
// the next holder can enter.
func (c *chaos) operator(client *http.Client) {
	rng := rand.New(rand.NewPCG(7, 7))
	for time.Now().Before(c.deadline) {
		time.Sleep(time.Duration(100+rng.IntN(300)) * time.Millisecond)
		key := chaosKeys[rng.IntN(len(chaosKeys))]
		s := c.sections[key]
		s.mu.Lock()
		req, _ := http.NewRequest("DELETE", c.url+"/v1/locks/"+key, nil)
		resp, err := client.Do(req)
		if err != nil {
			s.mu.Unlock()
			c.violate("operator: %v", err)
			continue
		}
		var body struct {
			Fence uint64 `json:"fence"`
			Error string `json:"error"`
		}
		_ = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		switch resp.StatusCode {
		case 200:
			s.revoked[body.Fence] = true
			c.forced.Add(1)
		case 404:
		default:
			c.violate("operator: force-release answered %d %q", resp.StatusCode, body.Error)
		}
		s.mu.Unlock()
	}
}

// TestChaos proves mutual exclusion against the real daemon under load and
// faults: -chaos.clients clients (default 200) for -chaos.duration
// (default 20s; 3s with -short) over five keys with random waits, 1-2s
// TTLs, renewals, releases ok and failed, on_error=stop queues,
// force-releases, clients that reset their connections mid-wait and
// mid-hold, and holders that pause past their lease. Every holder checks a
// shared critical section and writes to a fenced register. See the README.
func TestChaos(t *testing.T) {
	dur := *chaosDuration
	if testing.Short() {
		dur = 3 * time.Second
	}
	cfg := testConfig()
	cfg.Lock.DefaultWait = 0
	cfg.Limits.MaxWaitersPerKey = 60 // so some acquires meet the 429
	d := startDaemon(t, cfg)
	eng := d.srv.Engine()
	baseline := runtime.NumGoroutine()

	c := &chaos{t: t, url: d.url, sections: map[string]*section{}, fences: map[uint64]string{},
		deadline: time.Now().Add(dur)}
	for _, k := range chaosKeys {
		c.sections[k] = &section{inside: map[uint64]time.Time{}, revoked: map[uint64]bool{}}
	}
	var wg sync.WaitGroup
	opTr := &http.Transport{}
	wg.Go(func() { c.operator(&http.Client{Transport: opTr}) })
	for i := range *chaosClients {
		wg.Go(newChaosClient(c, i).run)
	}
	wg.Wait()
	opTr.CloseIdleConnections()

	// Leases of vanished holders run out within their TTL (at most 2s).
	eventually(t, 15*time.Second, "the daemon ends with 0 keys, 0 waiters, 0 held", func() bool {
		st := eng.Stats()
		return st.Keys == 0 && st.Waiters == 0 && st.Held == 0
	})
	if err := eng.Check(); err != nil {
		t.Error(err)
	}
	eventually(t, 30*time.Second, fmt.Sprintf("goroutines back near the baseline of %d", baseline), func() bool {
		return runtime.NumGoroutine() <= baseline+10
	})

	c.mu.Lock()
	defer c.mu.Unlock()
	for _, v := range c.violations {
		if v != "" {
			t.Error(v)
		}
	}
	summary := fmt.Sprintf("chaos: %s, %d clients, %d keys: grants %d, expiries %d, aborts %d, cancels %d, timeouts %d, 429s %d, 503s %d, renewals %d, releases %d (+%d lost), forced %d, vanished mid-hold %d, live writes %d, stale writes rejected %d (accepted %d), worst lateness %s, violations: %d",
		dur, *chaosClients, len(chaosKeys), c.grants.Load(), c.expiries.Load(), c.aborts.Load(), c.vanishedWaits.Load(),
		c.timeouts.Load(), c.refused.Load(), c.unavailable.Load(), c.renewals.Load(), c.releases.Load(), c.lostReleases.Load(),
		c.forced.Load(), c.vanished.Load(), c.writes.Load(), c.staleRejected.Load(), c.staleAccepted.Load(),
		time.Duration(c.worstLate.Load()).Round(time.Millisecond), len(c.violations))
	fmt.Println(summary)
	t.Log(summary)
	// A full run must have exercised what it claims to.
	if dur < 10*time.Second {
		return
	}
	for name, n := range map[string]int64{"grants": c.grants.Load(), "expiries": c.expiries.Load(), "aborts": c.aborts.Load(),
		"vanished waits": c.vanishedWaits.Load(), "force-releases": c.forced.Load(), "renewals": c.renewals.Load(),
		"stale writes rejected": c.staleRejected.Load()} {
		if n == 0 {
			t.Errorf("no %s happened: the chaos was not chaotic enough", name)
		}
	}
	if strings.Contains(summary, "violations: 0") != (len(c.violations) == 0) {
		t.Fatal("summary disagrees with the violations")
	}
}
