package main

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"
)

func newDrainCmd(stdout io.Writer) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "drain KEY | drain --prefix PREFIX [--reason R]",
		Short: "Answer every waiter of KEY, or of every key under --prefix, with drained (admin)",
		Long: `drain empties the queue of KEY, or of every key that starts with --prefix:
each waiter is answered 409 drained with --reason; holders keep their
leases. With "mutexd pause" first, nothing new is granted either. It needs
an admin token in MUTEXD_TOKEN when the server requires tokens.

Exit codes: 0 done, 1 failures, 2 bad usage.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			key, prefix, err := keyOrPrefix(cmd, args)
			if err != nil {
				return err
			}
			reason, _ := cmd.Flags().GetString("reason")
			if len(reason) > 256 {
				return usageError{err: fmt.Errorf("drain: --reason must be at most 256 bytes, got %d", len(reason))}
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
			var n int
			what := shellQuote(key)
			if prefix != "" {
				n, err = c.DrainPrefix(ctx, prefix, reason)
				what = "keys under " + shellQuote(prefix)
			} else {
				n, err = c.Drain(ctx, key, reason)
			}
			if err != nil {
				return commandError(err, 1)
			}
			_, err = fmt.Fprintf(stdout, "drained %d waiters of %s\n", n, what)
			return err
		},
	}
	addClientFlags(cmd, timeoutUsage)
	cmd.Flags().String("prefix", "", "drain every key that starts with PREFIX instead of one KEY")
	cmd.Flags().String("reason", "", "told to every drained waiter (default: the server's \"drained by an operator\")")
	return cmd
}
