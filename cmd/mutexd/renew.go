package main

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"
)

func newRenewCmd(stdout io.Writer) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "renew KEY [TOKEN]",
		Short: "Extend a lease (TOKEN defaults to $MUTEXD_LEASE_TOKEN)",
		Long: `renew extends the lease TOKEN holds on KEY by --ttl from now (default: the
lease's own TTL) and prints the new expiry.

Exit codes: 0 renewed, 3 not the holder (the lease expired, was released,
or the token is wrong), 1 other failures, 2 bad usage.`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ttl, typed := typedDuration(cmd.Flags(), "ttl")
			if ttl < 0 {
				return usageError{err: fmt.Errorf("renew: --ttl must not be negative, got %s", typed)}
			}
			l, err := leaseArgs(cmd, args)
			if err != nil {
				return err
			}
			ctx, cancel, err := callContext(cmd, 0)
			if err != nil {
				return err
			}
			defer cancel()
			if err := l.Renew(ctx, ttl); err != nil {
				return commandError(err, 1)
			}
			_, err = fmt.Fprintf(stdout, "renewed %s until %s (ttl %s)\n", l.Key, formatTime(l.ExpiresAt()), l.TTL())
			return err
		},
	}
	addClientFlags(cmd, timeoutUsage)
	durationFlag(cmd.Flags(), "ttl", 0, "new time to live, a Go duration or whole seconds (default the lease's own)")
	return cmd
}
