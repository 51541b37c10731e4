package main

import (
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/mutexd/mutexd/client"
)

func newReleaseCmd(stdout io.Writer) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "release KEY [TOKEN]",
		Short: "Release a lease (TOKEN defaults to $MUTEXD_LEASE_TOKEN)",
		Long: `release ends the lease TOKEN holds on KEY; the next waiter is granted at
once. --failed releases with outcome=failed: the next holder is told, and on
an on_error=stop key the queued waiters are aborted.

Exit codes: 0 released, 3 not the holder (the lease expired, was released,
or the token is wrong), 1 other failures, 2 bad usage.`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			l, err := leaseArgs(cmd, args)
			if err != nil {
				return err
			}
			failed, _ := cmd.Flags().GetBool("failed")
			ctx, cancel, err := callContext(cmd, 0)
			if err != nil {
				return err
			}
			defer cancel()
			handled := false
			if socket := os.Getenv(lockSocketEnv); socket != "" {
				// Run by "mutexd lock": if this is its lease, it must
				// end it, or it would take the end for a lost lease.
				handled, err = releaseThroughLock(ctx, socket, l.Key, l.Token, failed)
			}
			switch {
			case handled:
			case failed:
				err = l.Fail(ctx)
			default:
				err = l.Release(ctx)
			}
			if err != nil {
				return commandError(err, 1)
			}
			_, err = fmt.Fprintf(stdout, "released %s\n", l.Key)
			return err
		},
	}
	addClientFlags(cmd, timeoutUsage)
	cmd.Flags().Bool("failed", false, "release with outcome=failed")
	return cmd
}

// leaseArgs returns the lease named by KEY [TOKEN] on the command's server.
func leaseArgs(cmd *cobra.Command, args []string) (*client.Lease, error) {
	token, err := tokenArg(cmd, args, 1)
	if err != nil {
		return nil, err
	}
	c, err := newAPIClient(cmd)
	if err != nil {
		return nil, err
	}
	return c.Lease(args[0], token), nil
}
