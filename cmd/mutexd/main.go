// Command mutexd is a lock server: keyed FIFO leases over HTTP. With no
// subcommand, or with "serve", it runs the daemon; see README.md.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// version is set at build time with -ldflags "-X main.version=v1.2.3".
var version = "dev"

func main() {
	if len(os.Args) > 0 && os.Args[0] == guardArg0 {
		os.Exit(runLockGuard(os.Args))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(exitCode(err, os.Stderr))
}

// usageError marks errors in how mutexd was invoked or configured: bad
// flags, bad arguments, invalid configuration. They exit with code 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// exitError carries a specific exit code (a child's status, say) and an
// optional message.
type exitError struct {
	code int
	msg  string
}

func (e exitError) Error() string { return e.msg }

// exitCode prints err as one line and returns the process exit code.
func exitCode(err error, stderr io.Writer) int {
	if err == nil {
		return 0
	}
	var ee exitError
	if errors.As(err, &ee) {
		if ee.msg != "" {
			fmt.Fprintln(stderr, "mutexd:", ee.msg)
		}
		return ee.code
	}
	fmt.Fprintln(stderr, "mutexd:", err)
	if errors.As(err, new(usageError)) {
		return 2
	}
	return 1
}
