// Command demo is the docker-compose demo app: it shares mutexd's network
// namespace like a pod sidecar's app and keeps it busy so the Grafana
// dashboard has something to show: workers contending on a few keys in
// three namespaces, plus a scripted round every few seconds that produces
// timeouts, aborts, disconnects, expirations and force-releases.
//
// Environment: DEMO_MUTEXD (default http://127.0.0.1:7070), DEMO_WORKERS
// (default 6), DEMO_TOKEN (a bearer token, needed when mutexd has auth
// tokens configured; an admin token, since the demo lists keys and
// force-releases one).
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/mutexd/mutexd/internal/demo"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewJSONHandler(os.Stdout, nil))
	if err := run(ctx, log); err != nil {
		log.Error("demo stopped", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, log *slog.Logger) error {
	base := os.Getenv("DEMO_MUTEXD")
	if base == "" {
		base = "http://127.0.0.1:7070"
	}
	workers := 6
	if s := os.Getenv("DEMO_WORKERS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 1000 {
			return fmt.Errorf("DEMO_WORKERS: want a number from 1 to 1000, got %q", s)
		}
		workers = n
	}
	c, err := demo.New(base, os.Getenv("DEMO_TOKEN"))
	if err != nil {
		return fmt.Errorf("DEMO_MUTEXD: %w", err)
	}
	if err := awaitReady(ctx, base); err != nil {
		return err
	}
	log.Info("demo started", "mutexd", base, "workers", workers)

	total := demo.Tally{}
	var mu sync.Mutex // guards total
	add := func(t demo.Tally) {
		mu.Lock()
		total.Add(t)
		mu.Unlock()
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		// In spells of 15s, so the progress line counts the workers too.
		repeat(ctx, log, "contend", 0, func() (demo.Tally, error) {
			cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
			defer cancel()
			return c.Contend(cctx, demo.ContendOptions{
				Workers:    workers,
				Keys:       []string{"orders:1", "orders:2", "orders:3", "billing:eu", "billing:us", "reports:daily"},
				MaxHold:    400 * time.Millisecond,
				Wait:       2 * time.Second,
				TTL:        3 * time.Second,
				FailEvery:  30,
				CrashEvery: 60,
			})
		}, add)
	})
	for _, ns := range []string{"orders", "billing"} {
		wg.Go(func() {
			repeat(ctx, log, "round "+ns, 5*time.Second, func() (demo.Tally, error) {
				return c.Round(ctx, ns)
			}, add)
		})
	}
	tick := time.NewTicker(15 * time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			wg.Wait()
			log.Info("demo stopped", "seen", total)
			return nil
		case <-tick.C:
			mu.Lock()
			log.Info("demo progress", "seen", total)
			mu.Unlock()
		}
	}
}

// repeat runs fn until ctx ends, pausing between runs; an error (mutexd
// restarting, say) is logged and the loop goes on.
func repeat(ctx context.Context, log *slog.Logger, name string, pause time.Duration, fn func() (demo.Tally, error), add func(demo.Tally)) {
	for ctx.Err() == nil {
		t, err := fn()
		add(t)
		if err != nil && ctx.Err() == nil {
			log.Warn("demo step failed", "step", name, "err", err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(pause):
		}
	}
}

// awaitReady polls base/readyz until it answers 200 or ctx ends.
func awaitReady(ctx context.Context, base string) error {
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/readyz", nil)
		if err != nil {
			return err
		}
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return errors.New("stopped before mutexd was ready")
		case <-time.After(500 * time.Millisecond):
		}
	}
}
