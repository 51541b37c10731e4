// Package loadgen is mutexd's load generator, the engine of `mutexd bench`
// and of the peer comparison in bench/: closed-loop clients that acquire,
// hold and release locks through a Target and measure throughput, hand-offs,
// fairness and latency.
//
// It is a fair client. Each client has its own Session (for mutexd: one
// keep-alive HTTP connection) and runs one cycle after another; every
// cycle is timed from the moment the client was ready to send, slow cycles
// included, and a cycle that fails (an error or a wait that ran out) is
// counted by code and timed too, in a histogram of its own, so that slow
// failures are not hidden and fast ones do not flatter the latency of
// successful cycles. Being closed-loop, a stalled server
// also slows the offered load: the latency figures are those of the
// requests made, not of a fixed schedule. Run with more clients to offer
// more load.
package loadgen

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Errors of sessions and of Run.
var (
	// ErrBusy is a session's answer to an acquire that was not granted
	// because another holder has the key and the wait was 0 (a try-lock),
	// or passed.
	ErrBusy = errors.New("lock busy")
	// ErrConfig is wrapped by every error of an invalid Config.
	ErrConfig = errors.New("invalid load generator configuration")
)

// Lease is a granted lock as a session sees it.
type Lease struct {
	Key string
	// Token is whatever the session needs to release the lease.
	Token string
	// Fence is the server's fencing token, 0 when it has none.
	Fence uint64
	// ExpiresAt is the lease's deadline as the server reported it; zero
	// when the server does not say.
	ExpiresAt time.Time
	// Handle is session-private state (a Redis value, an etcd mutex).
	Handle any
}

// Session is one client's connection to a lock service. Run never uses a
// session from two goroutines at once.
type Session interface {
	// Acquire obtains key for ttl, waiting up to wait for it (0: try once).
	// It returns ErrBusy (possibly wrapped) when the key stays taken, and a
	// *CodeError for a failure the report should count by code.
	Acquire(ctx context.Context, key string, ttl, wait time.Duration) (Lease, error)
	// Release gives the lease back.
	Release(ctx context.Context, l Lease) error
	// Close frees the session's connection.
	Close() error
}

// Target opens sessions to one lock service.
type Target interface {
	// Name identifies the service in reports.
	Name() string
	// Open returns the session of client id (0-based).
	Open(ctx context.Context, id int) (Session, error)
}

// CodeError is a failure with a short code ("timeout", "not_holder",
// "http_500", "conn") under which the report counts it.
type CodeError struct {
	Code string
	Err  error
}

// Error returns "code: " and the underlying error.
func (e *CodeError) Error() string { return e.Code + ": " + e.Err.Error() }

// Unwrap returns the underlying error.
func (e *CodeError) Unwrap() error { return e.Err }

// errorCode names err for the report's error table.
func errorCode(err error) string {
	var ce *CodeError
	switch {
	case errors.As(err, &ce):
		return ce.Code
	case errors.Is(err, ErrBusy):
		return "busy"
	case errors.Is(err, context.DeadlineExceeded):
		return "deadline"
	}
	return "other"
}

// Mode is what every client cycle does.
type Mode string

// The modes.
const (
	// ModeCycle acquires (waiting up to Wait), holds for Hold, releases.
	ModeCycle Mode = "cycle"
	// ModeTry acquires with wait 0 and retries at once while busy (a
	// spin-lock, as Redis clients do), holds for Hold, releases.
	ModeTry Mode = "try"
	// ModeExpire acquires and abandons the lease: the next grant of the
	// key comes from the lease's expiry. It measures expiry hand-over.
	ModeExpire Mode = "expire"
)

// Config is one load run.
type Config struct {
	// Clients is the number of concurrent clients, each with one session.
	Clients int
	// Duration is how long to measure; used when Requests is 0.
	Duration time.Duration
	// Requests, when positive, is the number of cycles to run in total
	// instead of a duration; failed cycles count towards it.
	Requests int64
	// Keys is the number of distinct keys; client i uses key i mod Keys.
	// 1 makes every client contend for one key.
	Keys int
	// KeyPrefix starts every key; make it unique per run so that leases
	// abandoned by an earlier run do not interfere.
	KeyPrefix string
	// TTL is every lease's lifetime.
	TTL time.Duration
	// Hold is how long a client keeps each lease before releasing it.
	Hold time.Duration
	// Wait bounds a waiting acquire (modes cycle and expire).
	Wait time.Duration
	Mode Mode
	// Progress, when set, is called about every ProgressEvery with the
	// figures so far, from a goroutine of Run's.
	Progress      func(Progress)
	ProgressEvery time.Duration
}

// MaxClients bounds Config.Clients: each client holds a connection of its
// own, and one source address has no more ephemeral ports than this. A
// larger number would only exhaust memory before the first request.
const MaxClients = 65535

// Validate reports the first invalid field.
func (c Config) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrConfig, fmt.Sprintf(format, args...))
	}
	switch {
	case c.Clients < 1 || c.Clients > MaxClients:
		return bad("clients must be from 1 to %d, got %d", MaxClients, c.Clients)
	case c.Keys < 1 || c.Keys > c.Clients:
		// Client i uses key i mod Keys: more keys than clients go unused.
		return bad("keys must be from 1 to the number of clients (%d), got %d", c.Clients, c.Keys)
	case c.Requests < 0:
		return bad("requests must not be negative, got %d", c.Requests)
	case c.Requests == 0 && c.Duration <= 0:
		return bad("give a positive duration or a number of requests")
	case c.TTL <= 0:
		return bad("ttl must be positive, got %s", c.TTL)
	case c.Hold < 0:
		return bad("hold must not be negative, got %s", c.Hold)
	case c.Wait < 0:
		return bad("wait must not be negative, got %s", c.Wait)
	}
	switch c.Mode {
	case ModeCycle, ModeTry, ModeExpire:
	default:
		return bad("mode must be cycle, try or expire, got %q", c.Mode)
	}
	return nil
}

// Progress is the running total shown while a run goes on.
type Progress struct {
	Elapsed time.Duration
	Cycles  int64
	Errors  int64
	// Rate is cycles per second over the last interval.
	Rate float64
}

// keySlot is what the generator itself knows of one key.
type keySlot struct {
	lastOwner atomic.Int64 // client of the previous grant, -1 before any
	holder    atomic.Int64 // client inside the critical section, -1 when none
	expiresAt atomic.Int64 // unix ns deadline of an abandoned lease, 0 if none
	_         [40]byte     // keep slots on separate cache lines
}

// client is one worker's state and figures, merged when the run ends.
type client struct {
	id       int
	key      int
	cycles   atomic.Int64
	errCount atomic.Int64
	grants   int64
	changes  int64
	busy     int64
	overlaps int64
	errors   map[string]int64
	acquire  *Histogram
	cycle    *Histogram
	lateness *Histogram
	failed   *Histogram
}

// graceAfterStop bounds how long clients may take to finish their cycle in
// flight once the measurement ends; they are then cancelled.
const graceAfterStop = 5 * time.Second

// Run opens cfg.Clients sessions on target, runs the load, closes the
// sessions and returns the figures. Cycles that end after the measurement
// window are not counted. It fails only for an invalid cfg or a session
// that cannot be opened; failures during the run are counted by code.
func Run(ctx context.Context, target Target, cfg Config) (*Result, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	sessions := make([]Session, cfg.Clients)
	defer func() {
		for _, s := range sessions {
			if s != nil {
				_ = s.Close()
			}
		}
	}()
	for i := range sessions {
		s, err := target.Open(ctx, i)
		if err != nil {
			return nil, fmt.Errorf("open session %d of %s: %w", i, target.Name(), err)
		}
		sessions[i] = s
	}
	keys := make([]string, cfg.Keys)
	for i := range keys {
		keys[i] = cfg.KeyPrefix + strconv.Itoa(i)
	}
	slots := make([]keySlot, cfg.Keys)
	for i := range slots {
		slots[i].lastOwner.Store(-1)
		slots[i].holder.Store(-1)
	}
	clients := make([]*client, cfg.Clients)
	for i := range clients {
		clients[i] = &client{id: i, key: i % cfg.Keys, errors: map[string]int64{},
			acquire: NewHistogram(), cycle: NewHistogram(), lateness: NewHistogram(), failed: NewHistogram()}
	}

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var stopped atomic.Bool
	var tickets atomic.Int64
	tickets.Store(cfg.Requests)
	start := time.Now()
	var end time.Time
	var endOnce sync.Once
	stop := func() {
		endOnce.Do(func() {
			end = time.Now()
			stopped.Store(true)
			time.AfterFunc(graceAfterStop, cancel)
		})
	}
	if cfg.Requests == 0 {
		t := time.AfterFunc(cfg.Duration, stop)
		defer t.Stop()
	}
	go func() { // an outside cancellation ends the measurement too
		<-runCtx.Done()
		stop()
	}()

	var wg sync.WaitGroup
	for i, c := range clients {
		wg.Go(func() {
			w := worker{cfg: cfg, s: sessions[i], c: c, key: keys[c.key], slot: &slots[c.key],
				stopped: &stopped, tickets: &tickets, limited: cfg.Requests > 0}
			w.run(runCtx)
		})
	}
	progressDone, finished := make(chan struct{}), make(chan struct{})
	if cfg.Progress != nil {
		go reportProgress(cfg, clients, start, finished, progressDone)
	} else {
		close(progressDone)
	}
	wg.Wait()
	stop()
	close(finished)
	<-progressDone
	return newResult(target.Name(), cfg, clients, end.Sub(start)), nil
}

func reportProgress(cfg Config, clients []*client, start time.Time, finished <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	every := cfg.ProgressEvery
	if every <= 0 {
		every = time.Second
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	var lastCycles int64
	last := start
	for {
		select {
		case <-finished:
			return
		case <-tick.C:
		}
		var p Progress
		for _, c := range clients {
			p.Cycles += c.cycles.Load()
			p.Errors += c.errCount.Load()
		}
		now := time.Now()
		p.Elapsed = now.Sub(start)
		p.Rate = float64(p.Cycles-lastCycles) / now.Sub(last).Seconds()
		lastCycles, last = p.Cycles, now
		cfg.Progress(p)
	}
}

// worker runs one client's cycles.
type worker struct {
	cfg     Config
	s       Session
	c       *client
	key     string
	slot    *keySlot
	stopped *atomic.Bool
	tickets *atomic.Int64
	limited bool
}

func (w *worker) run(ctx context.Context) {
	var holdTimer *time.Timer
	for !w.stopped.Load() && ctx.Err() == nil {
		if w.limited && w.tickets.Add(-1) < 0 {
			return
		}
		w.cycle(ctx, &holdTimer)
	}
}

// cycle runs one acquire, hold and release (or abandon), recording what
// happened unless the measurement has ended meanwhile.
func (w *worker) cycle(ctx context.Context, holdTimer **time.Timer) {
	cfg, c := w.cfg, w.c
	t0 := time.Now()
	var l Lease
	var err error
	for {
		wait := cfg.Wait
		if cfg.Mode == ModeTry {
			wait = 0
		}
		l, err = w.s.Acquire(ctx, w.key, cfg.TTL, wait)
		if cfg.Mode != ModeTry || !errors.Is(err, ErrBusy) || w.stopped.Load() || ctx.Err() != nil {
			break
		}
		c.busy++
	}
	if err != nil {
		w.fail(ctx, err, t0)
		return
	}
	t1 := time.Now()
	checkOverlap := cfg.Mode != ModeExpire && cfg.Hold < cfg.TTL/2
	if checkOverlap && !w.slot.holder.CompareAndSwap(-1, int64(c.id)) {
		c.overlaps++ // another client of ours holds a live lease of this key
	}
	if prev := w.slot.lastOwner.Swap(int64(c.id)); prev >= 0 && prev != int64(c.id) && !w.stopped.Load() {
		c.changes++
	}
	if exp := w.slot.expiresAt.Swap(0); exp != 0 && !w.stopped.Load() {
		c.lateness.Record(t1.Sub(time.Unix(0, exp)))
	}
	c.grants++
	if !w.stopped.Load() {
		c.acquire.Record(t1.Sub(t0))
	}
	if cfg.Hold > 0 {
		if *holdTimer == nil {
			*holdTimer = time.NewTimer(cfg.Hold)
		} else {
			(*holdTimer).Reset(cfg.Hold)
		}
		select {
		case <-(*holdTimer).C:
		case <-ctx.Done():
		}
	}
	if cfg.Mode == ModeExpire {
		exp := l.ExpiresAt
		if exp.IsZero() {
			exp = t1.Add(cfg.TTL) // the latest the server can have set
		}
		w.slot.expiresAt.Store(exp.UnixNano())
	} else {
		if checkOverlap {
			// Leave before the release is sent: the server may grant the
			// next client before our answer arrives.
			w.slot.holder.CompareAndSwap(int64(c.id), -1)
		}
		if err := w.s.Release(ctx, l); err != nil {
			w.fail(ctx, err, t0)
			return
		}
	}
	if !w.stopped.Load() {
		c.cycle.Record(time.Since(t0))
		c.cycles.Add(1)
	}
}

// fail counts err and times the failed cycle that began at t0, unless the
// run is over (a cancelled wait is no error).
func (w *worker) fail(ctx context.Context, err error, t0 time.Time) {
	if w.stopped.Load() || ctx.Err() != nil {
		return
	}
	w.c.failed.Record(time.Since(t0))
	w.c.errors[errorCode(err)]++
	w.c.errCount.Add(1)
	var ce *CodeError
	if errors.As(err, &ce) && ce.Code == "conn" {
		// A dead server answers at once; do not spin on it.
		select {
		case <-time.After(10 * time.Millisecond):
		case <-ctx.Done():
		}
	}
}
