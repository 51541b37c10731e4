package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/mutexd/mutexd/client"
)

// guardArg0 is the program name under which the mutexd binary runs as
// the guard of a "mutexd lock" command (see job). main and TestMain check
// for it before anything else.
const guardArg0 = "mutexd-lock-guard"

const lockUsage = "usage: mutexd lock [flags] KEY -- COMMAND [ARGS...]"

// lockArgs checks that the command line is KEY -- COMMAND [ARGS...]; dash
// is where "--" stood (-1 when absent). The usual slip, a command without
// the "--", gets the fixed command line to copy.
func lockArgs(dash int, args []string) error {
	switch {
	case dash == 1 && len(args) >= 2:
		return nil
	case dash == -1 && len(args) >= 2:
		return usageError{err: fmt.Errorf("lock: %s; did you mean mutexd lock %s -- %s?", lockUsage, shellQuote(args[0]), shellJoin(args[1:]))}
	}
	return usageError{err: errors.New("lock: " + lockUsage)}
}

// shellJoin quotes each argument for a POSIX shell and joins them.
func shellJoin(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = shellQuote(a)
	}
	return strings.Join(q, " ")
}

func newLockCmd(stdout, stderr io.Writer) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "lock [flags] KEY -- COMMAND [ARGS...]",
		Short: "Run a command while holding a lock: flock(1) across machines",
		Long: `lock waits for the lock on KEY, runs COMMAND while holding it, renews the
lease in the background (every third of --ttl), and releases it when the
command exits: with outcome ok on exit status 0, failed otherwise. It exits
with the command's own status. The command finds MUTEXD_KEY, MUTEXD_FENCE,
MUTEXD_LEASE_TOKEN and MUTEXD_ADDR in its environment, and how the key's
last lease ended, while the server remembers it (lock.remember_outcome):
MUTEXD_PREVIOUS_OUTCOME (released, failed, expired or forced) and
MUTEXD_PREVIOUS_FENCE, both empty when there is none; "failed" or
"expired" means the last run did not finish cleanly. SIGINT, SIGTERM and
SIGHUP are passed on to it.

If the lease is lost while the command runs (the daemon is gone, or an
operator force-released the key), --on-lost kill (the default) sends
SIGTERM to everything the command started, then SIGKILL to all of it after
--kill-after or as soon as the command's first process exits, and lock
exits 1 with one line saying why, once all of it is gone; --on-lost warn
only prints a warning. With kill, what the command leaves running when it
exits is stopped too (SIGTERM, SIGKILL after --kill-after) before the lease
is released, and if lock itself is killed outright, the command's process
group is killed with it. A "mutexd release" run by the command ends the
lease through lock (MUTEXD_LOCK_SOCKET) and is not a lost lease.

Exit codes: the command's status (128+N if signal N ended it); 75 (or
--conflict-exit-code) when not acquired within --wait, without running the
command; 1 when the daemon cannot be reached or the lease was lost; 2 on
bad usage; 126 or 127 when COMMAND cannot be run; 128+N when signal N
interrupted the wait.`,
		Example: `  # A cron job that must never overlap, across every machine that runs it:
  */5 * * * * mutexd lock --wait 0 --ttl 1m report:hourly -- /usr/local/bin/build-report`,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := lockArgs(cmd.ArgsLenAtDash(), args); err != nil {
				return err
			}
			r, err := newLockRun(cmd, args[0], args[1:], stdout, stderr)
			if err != nil {
				return err
			}
			return r.run(cmd.Context())
		},
	}
	addClientFlags(cmd, acquireTimeoutUsage)
	addAcquireFlags(cmd, defaultOwner()+":"+strconv.Itoa(os.Getpid()), "lease time to live (a Go duration or whole seconds); renewed in the background while the command runs")
	f := cmd.Flags()
	f.String("on-lost", "kill", "kill or warn: what to do with the command when the lease is lost")
	f.Duration("kill-after", 0, "with --on-lost kill, send SIGKILL this long after SIGTERM (default: a tenth of --ttl, at most 5s, so the command is dead by the time the server could grant the key to another)")
	f.Int("conflict-exit-code", exitConflict, "exit code when not acquired within --wait")
	return cmd
}

// lockRun is one "mutexd lock" invocation.
type lockRun struct {
	c            *client.Client
	key          string
	argv         []string
	opts         []client.AcquireOption
	wait         time.Duration
	timeout      time.Duration // for each call, on top of wait for the acquire
	killAfter    time.Duration
	warnOnLost   bool
	conflictCode int
	stdout       io.Writer
	stderr       io.Writer
}

func newLockRun(cmd *cobra.Command, key string, argv []string, stdout, stderr io.Writer) (*lockRun, error) {
	opts, wait, err := acquireOptions(cmd)
	if err != nil {
		return nil, usageError{err: fmt.Errorf("lock: %w", err)}
	}
	r := &lockRun{key: key, argv: argv, opts: opts, wait: wait, stdout: stdout, stderr: stderr}
	f := cmd.Flags()
	if r.timeout, err = timeoutFlag(cmd); err != nil {
		return nil, err
	}
	r.killAfter, _ = f.GetDuration("kill-after")
	r.conflictCode, _ = f.GetInt("conflict-exit-code")
	onLost, _ := f.GetString("on-lost")
	switch {
	case onLost != "kill" && onLost != "warn":
		return nil, usageError{err: fmt.Errorf("lock: --on-lost must be kill or warn, got %q", onLost)}
	case r.conflictCode < 0 || r.conflictCode > 255:
		return nil, usageError{err: fmt.Errorf("lock: --conflict-exit-code must be 0 to 255, got %d", r.conflictCode)}
	case r.killAfter < 0:
		return nil, usageError{err: fmt.Errorf("lock: --kill-after must not be negative, got %s", r.killAfter)}
	}
	r.warnOnLost = onLost == "warn"
	if r.c, err = newAPIClient(cmd); err != nil {
		return nil, err
	}
	return r, nil
}

// run acquires, runs the command under the lease, and releases. Signals
// are handled here rather than through ctx: they go to the command, and
// the lease must outlive them until the command has exited.
func (r *lockRun) run(ctx context.Context) error {
	ctx = context.WithoutCancel(ctx)
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, lockSignals()...)
	defer signal.Stop(sigs)

	lease, err := r.acquire(ctx, sigs)
	if err != nil {
		return err
	}
	lease.KeepAlive(ctx)
	prevOutcome, prevFence := previousEnv(lease.Previous)
	env := append(os.Environ(),
		"MUTEXD_KEY="+lease.Key,
		"MUTEXD_FENCE="+strconv.FormatUint(lease.Fence, 10),
		"MUTEXD_LEASE_TOKEN="+lease.Token,
		"MUTEXD_ADDR="+strings.Join(r.c.Servers(), ","), // all of a cluster's, for the command's own calls
		"MUTEXD_PREVIOUS_OUTCOME="+prevOutcome,
		"MUTEXD_PREVIOUS_FENCE="+prevFence)
	// A command that ends its lease through lock is not stopped for it;
	// without the socket, it would be (see handoff.go).
	h, err := listenHandoff(lease.Key, lease.Token, func(failed bool) error {
		ctx, cancel := context.WithTimeout(context.Background(), r.timeout)
		defer cancel()
		if failed {
			return lease.Fail(ctx)
		}
		return lease.Release(ctx)
	})
	cleanup := ""
	if err != nil {
		fmt.Fprintf(r.stderr, "mutexd: warning: no %s (%v): a command that releases its lease itself is taken for a lost one\n", lockSocketEnv, err)
		env = append(env, lockSocketEnv+"=")
	} else {
		defer h.close()
		env = append(env, lockSocketEnv+"="+h.path())
		cleanup = h.dir
	}
	j, err := startJob(r.argv, env, r.stdout, r.stderr, !r.warnOnLost, cleanup, r.stderr)
	if err != nil {
		h.close()
		r.release(lease, false)
		code := 126
		if errors.Is(err, exec.ErrNotFound) || errors.Is(err, os.ErrNotExist) {
			code = 127
		}
		return exitError{code: code, msg: fmt.Sprintf("lock %s: cannot run %s: %v", r.key, r.argv[0], unwrapExec(err))}
	}

	lostErr := r.supervise(j, lease, sigs)
	status := j.status
	// No release through the socket may race with lock's own.
	h.close()
	switch {
	case h.released():
		// The command ended the lease itself; it was not lost.
	case lostErr != nil:
		// A lease lost by the clock (renewals unanswered) may still be live
		// on the server; give it back rather than make the next holder wait
		// out its TTL. A lease that is really gone answers not_holder.
		r.releaseLost(lease)
		if !r.warnOnLost {
			return exitError{code: 1, msg: fmt.Sprintf("lock %s: %v; the command was stopped (exit status %d)", r.key, lostErr, status)}
		}
	default:
		// A loss in the last moment shows as a failed release (a warning):
		// the command finished on its own.
		r.release(lease, status == 0)
	}
	return exitStatus(status)
}

// supervise passes signals on to the command until it has exited and,
// with --on-lost kill, until nothing it started is left, and returns why
// the lease was lost (nil if it was not).
//
// With --on-lost kill:
//   - A lost lease sends SIGTERM to everything the command started, and
//     SIGKILL to all of it at --kill-after, or as soon as the command's
//     first process exits, whichever comes first: the lease is gone, and
//     what remains must not outlive the deadline.
//   - When the command exits with the lease still held, what it left
//     running (background jobs it did not wait for) would otherwise go on
//     after the release, unprotected: it gets SIGTERM, and SIGKILL after
//     --kill-after unless it is gone by then (or at once if the lease is
//     lost meanwhile). Where lock cannot see processes (not Linux) it is
//     killed at once.
//
// Either way supervise returns only when all of it is gone, so lock
// never releases while any of it runs. --on-lost warn kills nothing.
func (r *lockRun) supervise(j *job, lease *client.Lease, sigs <-chan os.Signal) error {
	grace := r.killAfter
	if grace == 0 {
		// Lost fires SafetyMargin before the server's deadline, so by
		// default SIGKILL lands by that deadline.
		grace = client.SafetyMargin(lease.TTL())
	}
	lost, exited := lease.Lost(), j.exited()
	var kill, poll <-chan time.Time
	var lostErr error // set once the loss is seen
wait:
	for {
		select {
		case sig := <-sigs:
			j.forward(sig)
		case <-lost:
			lost, lostErr = nil, lease.Err()
			if r.warnOnLost {
				fmt.Fprintf(r.stderr, "mutexd: warning: %v; the command keeps running (--on-lost warn)\n", lostErr)
				continue
			}
			if exited == nil {
				break wait // only leftovers are running: no grace for them
			}
			j.terminate()
			kill = time.After(grace)
		case <-kill:
			break wait
		case <-exited:
			exited = nil
			if r.warnOnLost || lostErr != nil || !tracksDescendants || len(j.others()) == 0 {
				break wait
			}
			j.terminate()
			kill = time.After(grace)
			t := time.NewTicker(20 * time.Millisecond)
			defer t.Stop()
			poll = t.C
		case <-poll:
			if len(j.others()) == 0 {
				break wait
			}
		}
	}
	if r.warnOnLost {
		<-j.exited()
	} else {
		j.killAll()
	}
	return lostErr
}

// acquire waits for the lock. A signal while waiting gives up the wait
// (the server drops the waiter) and ends lock with 128+N.
func (r *lockRun) acquire(ctx context.Context, sigs <-chan os.Signal) (*client.Lease, error) {
	actx, cancel := context.WithTimeout(ctx, r.wait+r.timeout)
	defer cancel()
	type result struct {
		lease *client.Lease
		err   error
	}
	done := make(chan result, 1)
	go func() {
		l, err := r.c.Acquire(actx, r.key, r.opts...)
		done <- result{l, err}
	}()
	select {
	case res := <-done:
		switch {
		case errors.Is(res.err, client.ErrTimeout):
			return nil, exitError{code: r.conflictCode, msg: fmt.Sprintf("lock %s: not acquired within --wait %s; %s not run", r.key, r.wait, r.argv[0])}
		case res.err != nil:
			return nil, commandError(fmt.Errorf("lock: %w", res.err), r.conflictCode)
		}
		return res.lease, nil
	case sig := <-sigs:
		cancel()
		if res := <-done; res.err == nil {
			r.release(res.lease, true) // granted just as the signal came
		}
		code := 1
		if s, ok := sig.(syscall.Signal); ok {
			code = 128 + int(s)
		}
		return nil, exitError{code: code, msg: fmt.Sprintf("lock %s: interrupted by %v while waiting; %s not run", r.key, sig, r.argv[0])}
	}
}

// release ends the lease with the command's outcome. A failure is only
// warned about: the command has run, and the lease expires by itself.
func (r *lockRun) release(l *client.Lease, ok bool) {
	ctx, cancel := context.WithTimeout(context.Background(), r.timeout)
	defer cancel()
	var err error
	if ok {
		err = l.Release(ctx)
	} else {
		err = l.Fail(ctx)
	}
	if err != nil {
		fmt.Fprintf(r.stderr, "mutexd: warning: %v; the lease ends by itself within its TTL\n", err)
	}
}

// releaseLost releases, with outcome failed, a lease declared lost; it is
// silent, since the loss has been reported and the server most likely
// answers not_holder.
func (r *lockRun) releaseLost(l *client.Lease) {
	ctx, cancel := context.WithTimeout(context.Background(), r.timeout)
	defer cancel()
	_ = l.Fail(ctx)
}

// exitStatus passes a command's exit status on, silently.
func exitStatus(status int) error {
	if status == 0 {
		return nil
	}
	return exitError{code: status}
}

// unwrapExec drops exec's repetition of the command name.
func unwrapExec(err error) error {
	var ee *exec.Error
	if errors.As(err, &ee) {
		return ee.Err
	}
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
