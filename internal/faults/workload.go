package faults

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Workload is many clients contending for a few keys through every node,
// each with plain net/http, recording every operation in History. Its
// critical sections write to Register.
type Workload struct {
	URLs     []string
	Keys     []string
	Clients  int
	TTL      time.Duration
	History  *History
	Register *Register
	// Seed seeds every client's choices (client i uses Seed and i).
	Seed uint64

	http *http.Client
	// Errors are answers the workload did not expect (a 400, a 500):
	// a bug in the workload or the server, reported by the test.
	errMu  sync.Mutex
	errors []string
	// counts for the report
	granted, timeouts, unknown, resent, forced atomic.Int64
}

// answer is one HTTP exchange's outcome as the workload classifies it.
type answer struct {
	status int
	code   string // the error code of a JSON error body or a stream's final event
	body   []byte
	// definite is false when the request's fate is unknown: no answer,
	// a cut stream, a 503 (a node without a leader may or may not have
	// forwarded it) or a 5xx.
	definite bool
}

type grantBody struct {
	Token string `json:"token"`
	Fence uint64 `json:"fence"`
	TTLMS int64  `json:"ttl_ms"`
}

func (w *Workload) unexpected(format string, args ...any) {
	w.errMu.Lock()
	defer w.errMu.Unlock()
	if len(w.errors) < 20 {
		w.errors = append(w.errors, fmt.Sprintf(format, args...))
	}
}

// Errors returns the unexpected answers seen.
func (w *Workload) Errors() []string {
	w.errMu.Lock()
	defer w.errMu.Unlock()
	return append([]string(nil), w.errors...)
}

// Summary is a one-line account of the run.
func (w *Workload) Summary() string {
	return fmt.Sprintf("granted %d, timeouts %d, unknown %d, re-sent %d, forced %d",
		w.granted.Load(), w.timeouts.Load(), w.unknown.Load(), w.resent.Load(), w.forced.Load())
}

// Run drives the clients and one operator (force-releases) until ctx ends,
// and returns once every client has finished its operation in flight.
func (w *Workload) Run(ctx context.Context) {
	w.http = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: w.Clients + 4, MaxConnsPerHost: 4 * w.Clients}}
	defer w.http.CloseIdleConnections()
	var wg sync.WaitGroup
	for i := range w.Clients {
		rng := rand.New(rand.NewPCG(w.Seed, uint64(i)+1))
		wg.Go(func() { w.client(ctx, i, rng) })
	}
	wg.Go(func() { w.operator(ctx, rand.New(rand.NewPCG(w.Seed, 0))) })
	wg.Wait()
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func between(rng *rand.Rand, lo, hi time.Duration) time.Duration {
	return lo + time.Duration(rng.Int64N(int64(hi-lo)+1))
}

// client is one worker's loop: acquire (try, wait, streaming wait, or a
// wait it disconnects from and re-sends by request_id), then a critical
// section that writes to the register, renews and releases (ok or failed)
// or abandons the lease to expire; sometimes a renew after the release,
// which must fail.
func (w *Workload) client(ctx context.Context, id int, rng *rand.Rand) {
	for seq := 0; ctx.Err() == nil; seq++ {
		key := w.Keys[rng.IntN(len(w.Keys))]
		var wait, cancelAfter time.Duration
		stream := false
		switch r := rng.Float64(); {
		case r < 0.3:
		case r < 0.9:
			wait, stream = between(rng, 500*time.Millisecond, 3*time.Second), rng.IntN(2) == 0
		default:
			wait, cancelAfter = 3*time.Second, between(rng, 20*time.Millisecond, 500*time.Millisecond)
		}
		op := w.acquire(ctx, rng, id, fmt.Sprintf("c%d-%d", id, seq), key, wait, stream, cancelAfter)
		w.History.Add(op)
		if op.Result != ResOK {
			sleepCtx(ctx, between(rng, 10*time.Millisecond, 100*time.Millisecond))
			continue
		}
		w.hold(ctx, rng, id, op)
	}
}

// hold is a critical section under the lease op granted.
func (w *Workload) hold(ctx context.Context, rng *rand.Rand, id int, op Op) {
	liveUntil := op.Call + int64(op.TTL)
	for range 1 + rng.IntN(3) {
		w.Register.Write(op.Key, op.Fence, liveUntil)
		if !sleepCtx(ctx, between(rng, 20*time.Millisecond, 400*time.Millisecond)) {
			break
		}
		if rng.Float64() < 0.3 {
			r := w.simple(rng, id, OpRenew, op.Key, op.Token, "")
			w.History.Add(r)
			if r.Result == ResOK {
				liveUntil = max(liveUntil, r.Call+int64(r.TTL))
			}
		}
	}
	w.Register.Write(op.Key, op.Fence, liveUntil)
	switch r := rng.Float64(); {
	case r < 0.08:
		return // abandoned: the lease ends by expiry
	default:
		outcome := "ok"
		if r < 0.3 {
			outcome = "failed"
		}
		rel := w.simple(rng, id, OpRelease, op.Key, op.Token, outcome)
		w.History.Add(rel)
		if rel.Result == ResOK && rng.Float64() < 0.3 {
			w.History.Add(w.simple(rng, id, OpRenew, op.Key, op.Token, ""))
		}
	}
}

// operator force-releases a random key now and then, as an operator
// would; a force whose answer is lost is not retried (it might end the
// next holder's lease).
func (w *Workload) operator(ctx context.Context, rng *rand.Rand) {
	for sleepCtx(ctx, between(rng, 500*time.Millisecond, 2*time.Second)) {
		key := w.Keys[rng.IntN(len(w.Keys))]
		op := Op{Client: w.Clients, Key: key, Kind: OpForce, Call: w.History.Now()}
		node := rng.IntN(len(w.URLs))
		a := w.do(context.Background(), node, http.MethodDelete, "/v1/locks/"+url.PathEscape(key), nil, 5*time.Second, nil)
		op.Return, op.Node = w.History.Now(), node
		switch {
		case a.status == http.StatusOK:
			var g grantBody
			json.Unmarshal(a.body, &g)
			op.Result, op.Fence = ResOK, g.Fence
			w.forced.Add(1)
		case a.status == http.StatusNotFound && a.code == "not_held":
			op.Result = ResNotHeld
		case a.definite:
			w.unexpected("force %s: %d %s", key, a.status, a.body)
			op.Result = ResUnknown
		default:
			op.Result = ResUnknown
		}
		w.History.Add(op)
	}
}

// acquire asks for key until it has a definite answer, sending the same
// request_id again (to any node) after a cut or a deliberate disconnect,
// as the clients do: the whole exchange is one operation.
func (w *Workload) acquire(ctx context.Context, rng *rand.Rand, id int, reqID, key string, wait time.Duration, stream bool, cancelAfter time.Duration) Op {
	op := Op{Client: id, Key: key, Kind: OpAcquire, TTL: w.TTL, Wait: wait, Call: w.History.Now()}
	giveUp := op.Call + int64(wait) + int64(15*time.Second)
	for attempt := 0; ; attempt++ {
		node := rng.IntN(len(w.URLs))
		left := wait - time.Duration(w.History.Now()-op.Call)
		if attempt > 0 {
			op.Resent = true
			w.resent.Add(1)
			left = max(0, left)
		} else {
			left = wait
		}
		q := url.Values{"ttl": {w.TTL.String()}, "wait": {left.String()}, "request_id": {reqID}, "owner": {fmt.Sprintf("c%d", id)}}
		actx, cancel := context.WithCancel(context.Background())
		if attempt == 0 && cancelAfter > 0 {
			time.AfterFunc(cancelAfter, cancel)
		}
		var onQueued func()
		if stream && attempt == 0 {
			onQueued = func() {
				if op.Enqueued == 0 {
					op.Enqueued = w.History.Now()
				}
			}
		}
		a := w.do(actx, node, http.MethodPost, "/v1/locks/"+url.PathEscape(key)+"/acquire?"+q.Encode(), nil, left+10*time.Second, onQueued)
		cancel()
		op.Return, op.Node = w.History.Now(), node
		switch {
		case a.status == http.StatusOK && a.code == "":
			var g grantBody
			if err := json.Unmarshal(a.body, &g); err != nil || g.Token == "" {
				w.unexpected("acquire %s: grant without a token: %s", key, a.body)
				op.Result = ResUnknown
				return op
			}
			op.Result, op.Token, op.Fence = ResOK, g.Token, g.Fence
			w.granted.Add(1)
			return op
		case a.code == "timeout":
			op.Result = ResTimeout
			w.timeouts.Add(1)
			return op
		case a.code == "lease_ended":
			var g grantBody
			json.Unmarshal(a.body, &g)
			op.Result, op.Fence = ResLeaseEnded, g.Fence
			return op
		case a.definite && a.code != "superseded":
			w.unexpected("acquire %s: %d %s %s", key, a.status, a.code, a.body)
			op.Result = ResUnknown
			w.unknown.Add(1)
			return op
		}
		// No definite answer: the first send was cut on purpose, or a node
		// failed. Ask again, at once after a deliberate cut, else after a
		// pause (another node, maybe a new leader).
		if w.History.Now() > giveUp {
			op.Result = ResUnknown
			w.unknown.Add(1)
			return op
		}
		if !(attempt == 0 && cancelAfter > 0) {
			time.Sleep(between(rng, 50*time.Millisecond, 200*time.Millisecond))
		}
	}
}

// simple sends a renew or release, again to other nodes while the answer
// is unknown; a not_holder after an attempt of unknown fate is unknown
// (the earlier attempt may have been the one that released).
func (w *Workload) simple(rng *rand.Rand, id int, kind OpKind, key, token, outcome string) Op {
	op := Op{Client: id, Key: key, Kind: kind, Token: token, Outcome: outcome, Call: w.History.Now()}
	path := "/v1/locks/" + url.PathEscape(key)
	q := url.Values{"token": {token}}
	if kind == OpRenew {
		op.TTL = w.TTL
		path += "/renew"
		q.Set("ttl", w.TTL.String())
	} else {
		path += "/release"
		q.Set("outcome", outcome)
	}
	doubt := false
	for attempt := 0; attempt < 10; attempt++ {
		node := rng.IntN(len(w.URLs))
		a := w.do(context.Background(), node, http.MethodPost, path+"?"+q.Encode(), nil, 5*time.Second, nil)
		op.Return, op.Node = w.History.Now(), node
		switch {
		case a.status == http.StatusOK:
			op.Result = ResOK
			return op
		case a.code == "not_holder":
			op.Result = ResNotHolder
			if doubt {
				op.Result = ResUnknown
			}
			return op
		case a.code == "max_hold_reached":
			w.unexpected("%s %s: %s", kind, key, a.body)
			op.Result = ResUnknown
			return op
		case a.definite:
			w.unexpected("%s %s: %d %s", kind, key, a.status, a.body)
			op.Result = ResUnknown
			return op
		}
		doubt = true
		time.Sleep(between(rng, 50*time.Millisecond, 200*time.Millisecond))
	}
	op.Result = ResUnknown
	w.unknown.Add(1)
	return op
}

// do sends one request to node and classifies the answer. With onQueued
// the request asks for a stream (Accept: text/event-stream) and onQueued
// runs at every `queued` event; the final event is the answer.
func (w *Workload) do(ctx context.Context, node int, method, path string, body io.Reader, timeout time.Duration, onQueued func()) answer {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, w.URLs[node]+path, body)
	if err != nil {
		return answer{}
	}
	if onQueued != nil {
		req.Header.Set("Accept", "text/event-stream")
	}
	resp, err := w.http.Do(req)
	if err != nil {
		return answer{}
	}
	defer resp.Body.Close()
	if onQueued != nil && resp.StatusCode == http.StatusOK && strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		return readStream(resp.Body, onQueued)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return answer{}
	}
	a := answer{status: resp.StatusCode, body: b, definite: resp.StatusCode < 500}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error string `json:"error"`
		}
		json.Unmarshal(b, &e)
		a.code = e.Error
	}
	return a
}

// readStream reads a streaming acquire's events up to the final one.
func readStream(r io.Reader, onQueued func()) answer {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var event string
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "event:"):
			event = strings.TrimSpace(strings.TrimPrefix(line, "event:"))
		case strings.HasPrefix(line, "data:"):
			data := []byte(strings.TrimSpace(strings.TrimPrefix(line, "data:")))
			switch event {
			case "queued":
				onQueued()
			case "granted":
				return answer{status: http.StatusOK, body: data, definite: true}
			case "unavailable":
				return answer{status: http.StatusServiceUnavailable, code: event, body: data}
			case "":
			default:
				return answer{status: http.StatusConflict, code: event, body: data, definite: true}
			}
		}
	}
	return answer{} // cut before the final event
}

// ErrNoCluster is returned by the cluster calls of a standalone node.
var ErrNoCluster = errors.New("no /v1/cluster endpoint (standalone)")

// clusterInfo is the part of GET /v1/cluster the suite reads.
type clusterInfo struct {
	NodeID       string `json:"node_id"`
	State        string `json:"state"`
	LeaderID     string `json:"leader_id"`
	AppliedIndex uint64 `json:"applied_index"`
}

// getJSON GETs url into v within a second.
func getJSON(ctx context.Context, c *http.Client, u string, v any) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return 0, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return resp.StatusCode, fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	return resp.StatusCode, json.NewDecoder(resp.Body).Decode(v)
}

// Leader returns the index of the node the first answering node names as
// leader (node ids are n1, n2, ...), or -1.
func Leader(ctx context.Context, urls []string) int {
	c := &http.Client{}
	defer c.CloseIdleConnections()
	for _, u := range urls {
		var ci clusterInfo
		if _, err := getJSON(ctx, c, u+"/v1/cluster", &ci); err == nil && ci.LeaderID != "" {
			var i int
			if _, err := fmt.Sscanf(ci.LeaderID, "n%d", &i); err == nil && i >= 1 && i <= len(urls) {
				return i - 1
			}
		}
	}
	return -1
}

// CheckDigests waits (until ctx ends) for a moment when every node has
// applied the same index, and reports whether their state digests then
// differ. It returns ErrNoCluster when a node has no digest endpoint.
func CheckDigests(ctx context.Context, urls []string) (string, error) {
	c := &http.Client{}
	defer c.CloseIdleConnections()
	type digest struct {
		AppliedIndex uint64 `json:"applied_index"`
		Digest       string `json:"digest"`
	}
	last := "no answer yet"
	for {
		ds := make([]digest, len(urls))
		same := true
		for i, u := range urls {
			status, err := getJSON(ctx, c, u+"/v1/cluster/digest?stale=true", &ds[i])
			if status == http.StatusNotFound {
				return "", ErrNoCluster
			}
			if err != nil {
				last, same = err.Error(), false
				break
			}
			if ds[i].AppliedIndex != ds[0].AppliedIndex {
				last, same = fmt.Sprintf("applied indexes differ: %+v", ds[:i+1]), false
				break
			}
		}
		if same {
			for _, d := range ds[1:] {
				if d.Digest != ds[0].Digest {
					return fmt.Sprintf("state differs at applied index %d: %+v", ds[0].AppliedIndex, ds), nil
				}
			}
			return "", nil
		}
		if !sleepCtx(ctx, 200*time.Millisecond) {
			return "", fmt.Errorf("nodes never agreed on an applied index: %s", last)
		}
	}
}
