package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/mutexd/mutexd/client"
)

// Exit codes of the client commands (acquire, release, renew, status, ls,
// lock, check, pause, resume, drain), beyond 0 (done), 1 (any other
// failure) and 2 (bad usage, or a parameter the server rejected, such as a
// --limit that disagrees with the key's).
const (
	// exitNotHolder: release or renew was refused because the token is not
	// the key's live lease (it expired, was released, or is wrong).
	exitNotHolder = 3
	// exitConflict: not acquired within --wait (EX_TEMPFAIL from
	// sysexits.h, as flock -E uses); lock's --conflict-exit-code changes it.
	exitConflict = 75
)

// addClientFlags adds the flags every client command shares; timeoutUsage
// says what --timeout bounds for this command.
func addClientFlags(cmd *cobra.Command, timeoutUsage string) {
	cmd.Flags().String("addr", "", "server address, or a cluster's servers separated by commas, tried in turn (default $MUTEXD_ADDR, else derived from $MUTEXD_LISTEN, else "+defaultAddr+"); the bearer token comes from $MUTEXD_TOKEN")
	durationFlag(cmd.Flags(), "timeout", 30*time.Second, timeoutUsage)
}

// Usage texts of --timeout.
const (
	timeoutUsage        = "give up a call that takes longer (a Go duration or whole seconds)"
	acquireTimeoutUsage = "give up a call that takes longer; an acquire may take --wait on top"
)

// newAPIClient returns a client for the command's server address (or
// list of a cluster's servers), sending $MUTEXD_TOKEN as its bearer token.
// A bad entry is a usage error naming it.
func newAPIClient(cmd *cobra.Command) (*client.Client, error) {
	c, err := client.New(serverAddr(cmd), client.WithToken(os.Getenv("MUTEXD_TOKEN")))
	if err != nil {
		return nil, usageError{err: err}
	}
	return c, nil
}

// addAcquireFlags adds the flags of the commands that acquire; ttlUsage
// says what happens to the lease while it is held.
func addAcquireFlags(cmd *cobra.Command, defaultOwner, ttlUsage string) {
	f := cmd.Flags()
	durationFlag(f, "ttl", 30*time.Second, ttlUsage)
	durationFlag(f, "wait", 30*time.Second, "how long to wait in the queue (a Go duration or whole seconds); 0 tries once")
	f.String("owner", defaultOwner, "owner name shown by status and ls")
	f.String("on-error", "continue", "continue or stop: with stop, waiters queued when this holder fails are aborted")
	f.Int("limit", 1, "slots of the key: up to N holders at once (a semaphore); every holder and waiter of a key must agree")
	durationFlag(f, "max-hold", 0, "end the lease this long after its grant whatever its renewals (0: no cap; the server's lock.max_hold bounds it)")
	durationFlag(f, "lock-delay", 0, "after this lease expires or is force-released, grant the key to nobody for this long (0 to 60s; default: the server's lock.default_lock_delay)")
	f.String("request-id", "", "idempotency key of the acquire (1 to 64 printable ASCII characters; default: a fresh random one): run again with the same one, it gets the same lease or its place in the queue")
}

// acquireOptions reads the flags addAcquireFlags added.
func acquireOptions(cmd *cobra.Command) ([]client.AcquireOption, time.Duration, error) {
	f := cmd.Flags()
	ttl, ttlText := typedDuration(f, "ttl")
	wait, waitText := typedDuration(f, "wait")
	owner, _ := f.GetString("owner")
	onError, _ := f.GetString("on-error")
	if ttl < time.Second {
		return nil, 0, usageError{err: fmt.Errorf("--ttl must be at least 1s, got %s", ttlText)}
	}
	if wait < 0 {
		return nil, 0, usageError{err: fmt.Errorf("--wait must not be negative, got %s", waitText)}
	}
	opts := []client.AcquireOption{client.TTL(ttl), client.Wait(wait), client.Owner(owner)}
	if f.Changed("limit") {
		n, _ := f.GetInt("limit")
		if n < 1 || n > 10000 {
			return nil, 0, usageError{err: fmt.Errorf("--limit must be a whole number from 1 to 10000, got %d", n)}
		}
		opts = append(opts, client.Limit(n))
	}
	if f.Changed("max-hold") {
		d, typed := typedDuration(f, "max-hold")
		if d < 0 || (d > 0 && d < ttl) {
			return nil, 0, usageError{err: fmt.Errorf("--max-hold must be 0 or at least --ttl (%s), got %s", ttlText, typed)}
		}
		opts = append(opts, client.MaxHold(d))
	}
	if f.Changed("lock-delay") {
		d, typed := typedDuration(f, "lock-delay")
		if d < 0 || d > time.Minute {
			return nil, 0, usageError{err: fmt.Errorf("--lock-delay must be from 0 to 60s, got %s", typed)}
		}
		opts = append(opts, client.LockDelay(d))
	}
	if f.Changed("request-id") {
		id, _ := f.GetString("request-id")
		if !printableASCII(id, 64) {
			return nil, 0, usageError{err: fmt.Errorf("--request-id must be 1 to 64 printable ASCII characters, got %q", id)}
		}
		opts = append(opts, client.RequestID(id))
	}
	switch onError {
	case "continue":
	case "stop":
		opts = append(opts, client.OnError(client.Stop))
	default:
		return nil, 0, usageError{err: fmt.Errorf("--on-error must be continue or stop, got %q", onError)}
	}
	return opts, wait, nil
}

// printableASCII reports whether s has 1 to max bytes, each from '!' to
// '~'.
func printableASCII(s string, max int) bool {
	if s == "" || len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '!' || s[i] > '~' {
			return false
		}
	}
	return true
}

// defaultOwner names this machine, for the owner column of status and ls.
func defaultOwner() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "mutexd-cli"
	}
	return h
}

// tokenArg returns args[i], else $MUTEXD_LEASE_TOKEN (what lock and
// "acquire -o env" provide), so a token need not appear in ps.
func tokenArg(cmd *cobra.Command, args []string, i int) (string, error) {
	if len(args) > i {
		return args[i], nil
	}
	if t := os.Getenv("MUTEXD_LEASE_TOKEN"); t != "" {
		return t, nil
	}
	return "", usageError{err: errors.New(cmd.Name() + ": no TOKEN: pass it after KEY or set MUTEXD_LEASE_TOKEN")}
}

// commandError turns a client error into the command's exit: usage errors
// exit 2, a refused token exitNotHolder, a wait that passed
// conflictCode, anything else 1. The message is one line.
func commandError(err error, conflictCode int) error {
	msg := strings.ReplaceAll(err.Error(), "\n", "; ")
	switch {
	case errors.Is(err, client.ErrInvalid), errors.Is(err, client.ErrLimitMismatch):
		return usageError{err: errors.New(msg)}
	case errors.Is(err, client.ErrNotHolder):
		return exitError{code: exitNotHolder, msg: msg}
	case errors.Is(err, client.ErrTimeout):
		return exitError{code: conflictCode, msg: msg}
	case errors.Is(err, client.ErrUnauthorized):
		if os.Getenv("MUTEXD_TOKEN") == "" {
			msg += " (set MUTEXD_TOKEN to a client token)"
		} else {
			msg += " (MUTEXD_TOKEN is not a token this server accepts)"
		}
	case errors.Is(err, client.ErrForbidden):
		msg += " (this call needs an admin token in MUTEXD_TOKEN)"
	}
	return exitError{code: 1, msg: msg}
}

// outputFlag returns -o, which must be one of formats.
func outputFlag(cmd *cobra.Command, formats ...string) (string, error) {
	out, _ := cmd.Flags().GetString("output")
	if !slices.Contains(formats, out) {
		return "", usageError{err: fmt.Errorf("%s: -o must be %s or %s, got %q", cmd.Name(), strings.Join(formats[:len(formats)-1], ", "), formats[len(formats)-1], out)}
	}
	return out, nil
}

// timeoutFlag returns --timeout, which must be positive: a zero or
// negative one would fail every call as if the server were unreachable.
func timeoutFlag(cmd *cobra.Command) (time.Duration, error) {
	timeout, typed := typedDuration(cmd.Flags(), "timeout")
	if timeout <= 0 {
		return 0, usageError{err: fmt.Errorf("%s: --timeout must be positive, got %s", cmd.Name(), typed)}
	}
	return timeout, nil
}

// callContext bounds a call by --timeout plus extra.
func callContext(cmd *cobra.Command, extra time.Duration) (context.Context, context.CancelFunc, error) {
	timeout, err := timeoutFlag(cmd)
	if err != nil {
		return nil, nil, err
	}
	ctx, cancel := context.WithTimeout(cmd.Context(), timeout+extra)
	return ctx, cancel, nil
}
