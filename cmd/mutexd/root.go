package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"
)

// run executes the command line args and returns the error to exit with.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	root := newRootCmd(stdout, stderr)
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if err != nil && isFlagError(err) {
		return usageError{err: err}
	}
	return err
}

func newRootCmd(stdout, stderr io.Writer) *cobra.Command {
	serve := newServeCmd(stderr)
	root := &cobra.Command{
		Use:           "mutexd",
		Short:         "A lock server: keyed FIFO leases over HTTP",
		Long:          "mutexd is a lock server: keyed, strictly FIFO, leased locks over a plain HTTP JSON API.\nWith no subcommand it serves (same as \"mutexd serve\").",
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          unknownCommand,
		RunE:          serve.RunE,
		// Suggest subcommands within two edits ("lok" -> lock).
		SuggestionsMinimumDistance: 2,
	}
	root.Flags().AddFlagSet(serve.Flags())
	root.AddCommand(serve, newVersionCmd(stdout), newHealthcheckCmd(stdout), newBenchCmd(stdout, stderr),
		newLockCmd(stdout, stderr), newAcquireCmd(stdout), newReleaseCmd(stdout), newRenewCmd(stdout),
		newStatusCmd(stdout), newLsCmd(stdout))
	return root
}

// unknownCommand refuses arguments to the root command: they can only be a
// mistyped subcommand, so it suggests the ones it resembles.
func unknownCommand(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return nil
	}
	msg := fmt.Sprintf("unknown command %q; run 'mutexd --help' for the list", args[0])
	if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
		msg = fmt.Sprintf("unknown command %q; did you mean %s?", args[0], strings.Join(s, " or "))
	}
	return usageError{err: errors.New(msg)}
}

// isFlagError reports errors cobra raises for bad flags or arguments.
func isFlagError(err error) bool {
	msg := err.Error()
	for _, s := range []string{"unknown flag", "unknown shorthand", "flag needs an argument", "invalid argument", "unknown command", "accepts ", "requires at least", "requires at most", "arg(s)"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}
