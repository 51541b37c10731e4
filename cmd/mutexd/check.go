package main

import (
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/mutexd/mutexd/client"
)

func newCheckCmd(stdout io.Writer) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "check KEY FENCE",
		Short: "Check that FENCE is a live lease of KEY (for a resource that cannot keep fences)",
		Long: `check asks the server whether FENCE is a live lease of KEY, for a
resource that cannot remember the highest fence it has seen (a script, a
webhook receiver, an object store): run it right before acting for the
holder of FENCE, and act only on exit status 0. The lease can still end
right after the answer; the check narrows that window, it does not close it.

Exit codes: 0 live (prints "live" and the expiry), 1 stale (prints the
key's live fences, if any) or the check could not be made: do not act;
2 bad usage.`,
		Example: `  mutexd check deploy:web "$FENCE" && publish-release`,
		Args:    cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			fence, err := strconv.ParseUint(args[1], 10, 64)
			if err != nil || fence == 0 || fence > 1<<53-1 {
				return usageError{err: fmt.Errorf("check: FENCE must be a whole number from 1 to 2^53-1, got %q", args[1])}
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
			st, err := c.CheckFence(ctx, args[0], fence)
			var ae *client.APIError
			switch {
			case errors.Is(err, client.ErrStaleFence) && errors.As(err, &ae):
				current := "none"
				if len(ae.CurrentFences) > 0 {
					f := make([]string, len(ae.CurrentFences))
					for i, n := range ae.CurrentFences {
						f[i] = strconv.FormatUint(n, 10)
					}
					current = strings.Join(f, " ")
				}
				fmt.Fprintf(stdout, "stale: fence %d is not a live lease of %s; live fences: %s\n", fence, args[0], current)
				return exitError{code: 1}
			case err != nil:
				return commandError(err, 1)
			}
			_, err = fmt.Fprintf(stdout, "live: fence %d of %s, expires %s\n", st.Fence, st.Key, formatTime(st.ExpiresAt))
			return err
		},
	}
	addClientFlags(cmd, timeoutUsage)
	return cmd
}
