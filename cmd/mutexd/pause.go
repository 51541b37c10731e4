package main

import (
	"context"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/mutexd/mutexd/client"
)

// newPauseCmd returns "mutexd pause" (resume false) or "mutexd resume".
func newPauseCmd(stdout io.Writer, resume bool) *cobra.Command {
	verb, short, long := "pause", "Stop granting KEY, or every key under --prefix (admin)",
		`pause stops the server from granting KEY, or every active key that starts
with --prefix: holders keep their leases, waiters their places, and new
acquires still queue, until "mutexd resume". For maintenance on what the
keys protect. It needs an admin token in MUTEXD_TOKEN when the server
requires tokens.`
	if resume {
		verb, short, long = "resume", "Grant KEY, or every key under --prefix, again after pause (admin)",
			`resume lets the server grant KEY, or every paused key that starts with
--prefix, again after "mutexd pause". It needs an admin token in
MUTEXD_TOKEN when the server requires tokens.`
	}
	cmd := &cobra.Command{
		Use:   verb + " KEY | " + verb + " --prefix PREFIX",
		Short: short,
		Long:  long + "\n\nExit codes: 0 done, 1 failures, 2 bad usage.",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			key, prefix, err := keyOrPrefix(cmd, args)
			if err != nil {
				return err
			}
			c, err := newAPIClient(cmd)
			if err != nil {
				return err
			}
			ctx, cancel, err := callContext(cmd, 0)
			if err != nil {
				return err
			}
			defer cancel()
			if prefix != "" {
				n, err := prefixOp(ctx, c, resume, prefix)
				if err != nil {
					return commandError(err, 1)
				}
				_, err = fmt.Fprintf(stdout, "%s %d keys under %s\n", pastTense(verb), n, shellQuote(prefix))
				return err
			}
			op := c.Pause
			if resume {
				op = c.Resume
			}
			st, err := op(ctx, key)
			if err != nil {
				return commandError(err, 1)
			}
			state := "paused"
			if !st.Paused {
				state = "not paused"
			}
			if !st.Changed {
				state = "already " + state
			}
			_, err = fmt.Fprintf(stdout, "%s %s\n", shellQuote(st.Key), state)
			return err
		},
	}
	addClientFlags(cmd, timeoutUsage)
	cmd.Flags().String("prefix", "", "act on every active key that starts with PREFIX instead of one KEY")
	return cmd
}

func prefixOp(ctx context.Context, c *client.Client, resume bool, prefix string) (int, error) {
	if resume {
		return c.ResumePrefix(ctx, prefix)
	}
	return c.PausePrefix(ctx, prefix)
}

func pastTense(verb string) string {
	if verb == "pause" {
		return "paused"
	}
	return "resumed"
}

// keyOrPrefix reads "KEY" or "--prefix PREFIX": exactly one of them.
func keyOrPrefix(cmd *cobra.Command, args []string) (key, prefix string, err error) {
	prefix, _ = cmd.Flags().GetString("prefix")
	switch {
	case cmd.Flags().Changed("prefix") && len(args) > 0:
		return "", "", usageError{err: fmt.Errorf("%s: give KEY or --prefix, not both", cmd.Name())}
	case cmd.Flags().Changed("prefix") && prefix == "":
		return "", "", usageError{err: fmt.Errorf("%s: --prefix must not be empty (it would match every key)", cmd.Name())}
	case prefix == "" && len(args) == 0:
		return "", "", usageError{err: fmt.Errorf("%s: give KEY or --prefix PREFIX (see mutexd %s --help)", cmd.Name(), cmd.Name())}
	case prefix != "":
		return "", prefix, nil
	}
	return args[0], "", nil
}
