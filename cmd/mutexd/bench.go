package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/mutexd/mutexd/internal/loadgen"
)

func newBenchCmd(stdout, stderr io.Writer) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Load-test a mutexd server: cycles/s, hand-offs, fairness, latency percentiles",
		Long: `bench runs closed-loop clients against a mutexd server, each with its own
keep-alive connection, and prints throughput, hand-offs (owner changes),
Jain fairness, acquire and cycle latency percentiles and errors by code.

  --keys 1 makes every client contend for one key; the default gives each
  client its own key (uncontended). --mode cycle acquires, holds for
  --hold and releases; try spins on wait=0 acquires like a Redis client;
  expire abandons every lease and times the grant that follows its expiry.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f := cmd.Flags()
			cfg := loadgen.Config{KeyPrefix: "bench-" + strconv.FormatInt(time.Now().UnixNano(), 36) + ":"}
			cfg.Clients, _ = f.GetInt("clients")
			cfg.Duration, _ = f.GetDuration("duration")
			cfg.Requests, _ = f.GetInt64("requests")
			cfg.Keys, _ = f.GetInt("keys")
			cfg.TTL, _ = f.GetDuration("ttl")
			cfg.Hold, _ = f.GetDuration("hold")
			cfg.Wait, _ = f.GetDuration("wait")
			mode, _ := f.GetString("mode")
			cfg.Mode = loadgen.Mode(mode)
			out, _ := f.GetString("output")
			if out != "text" && out != "json" {
				return usageError{err: fmt.Errorf("bench: --output must be text or json, got %q", out)}
			}
			if cfg.Keys == 0 {
				cfg.Keys = cfg.Clients
			}
			if !f.Changed("wait") && cfg.Mode == loadgen.ModeExpire {
				cfg.Wait = cfg.TTL + 30*time.Second // a waiter must outlive the abandoned lease
			}
			cfg.Progress, cfg.ProgressEvery = progressPrinter(stderr)
			if err := cfg.Validate(); err != nil {
				return usageError{err: fmt.Errorf("bench: %w", err)}
			}
			addr, err := oneServerAddr(cmd)
			if err != nil {
				return err
			}
			target := loadgen.HTTPTarget{BaseURL: addr}
			res, err := loadgen.Run(cmd.Context(), target, cfg)
			if errors.Is(err, loadgen.ErrConfig) {
				return usageError{err: fmt.Errorf("bench: %w", err)}
			} else if err != nil {
				return fmt.Errorf("bench: %w", err)
			}
			if isTerminal(stderr) {
				fmt.Fprint(stderr, "\r\033[K")
			}
			if out == "json" {
				enc := json.NewEncoder(stdout)
				enc.SetIndent("", "  ")
				err = enc.Encode(res)
			} else {
				err = res.WriteText(stdout)
			}
			if err != nil {
				return err
			}
			switch {
			case res.Overlaps > 0:
				return exitError{code: 1, msg: fmt.Sprintf("bench: %d grants overlapped a live lease: mutual exclusion violated", res.Overlaps)}
			case res.Cycles == 0:
				return exitError{code: 1, msg: "bench: no cycle completed"}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.String("addr", "", "server address (default $MUTEXD_ADDR or "+defaultAddr+")")
	f.Int("clients", 50, "concurrent clients, one connection each")
	durationFlag(f, "duration", 10*time.Second, "how long to measure (unless --requests)")
	f.Int64("requests", 0, "run this many cycles in total (failed ones included) instead of running for --duration")
	f.Int("keys", 0, "distinct keys; client i uses key i mod keys; 1 = fully contended (default: one per client)")
	durationFlag(f, "ttl", 30*time.Second, "lease TTL of every acquire")
	durationFlag(f, "hold", 0, "how long to keep each lease before releasing it")
	durationFlag(f, "wait", 30*time.Second, "how long a waiting acquire may queue (modes cycle and expire)")
	f.String("mode", string(loadgen.ModeCycle), "cycle, try or expire")
	f.StringP("output", "o", "text", "text or json")
	return cmd
}

// progressPrinter returns the progress callback: a one-line display
// rewritten in place on a terminal, a plain line per interval otherwise.
func progressPrinter(w io.Writer) (func(loadgen.Progress), time.Duration) {
	if isTerminal(w) {
		return func(p loadgen.Progress) {
			fmt.Fprintf(w, "\r\033[K%5.1fs  %d cycles  %.0f/s  %d errors", p.Elapsed.Seconds(), p.Cycles, p.Rate, p.Errors)
		}, 250 * time.Millisecond
	}
	return func(p loadgen.Progress) {
		fmt.Fprintf(w, "%.1fs %d cycles %.0f/s %d errors\n", p.Elapsed.Seconds(), p.Cycles, p.Rate, p.Errors)
	}, time.Second
}

// isTerminal reports whether w is a character device such as a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
