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
	return root.ExecuteContext(ctx)
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
		newStatusCmd(stdout), newLsCmd(stdout), newCheckCmd(stdout), newPauseCmd(stdout, false), newPauseCmd(stdout, true),
		newDrainCmd(stdout), newClusterCmd(stdout))
	// Bad flags and bad arguments are usage errors (exit 2) in every
	// command: cobra reports both as plain errors.
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err: err} })
	usageArgs(root.Commands())
	return root
}

// usageArgs makes the argument checks of cmds and of their subcommands
// (mutexd cluster ...) report usage errors.
func usageArgs(cmds []*cobra.Command) {
	for _, c := range cmds {
		if check := c.Args; check != nil {
			c.Args = func(c *cobra.Command, args []string) error {
				if err := check(c, args); err != nil {
					path := strings.TrimPrefix(c.CommandPath(), "mutexd ")
					return usageError{err: fmt.Errorf("%s: %w (see mutexd %s --help)", c.Name(), err, path)}
				}
				return nil
			}
		}
		usageArgs(c.Commands())
	}
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
