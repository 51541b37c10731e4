package main

import (
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/mutexd/mutexd/client"
)

func newStatusCmd(stdout io.Writer) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "status KEY",
		Short: "Show who holds KEY and who waits for it",
		Long: `status shows KEY's holder (owner, fence, acquisition and expiry), its
on_error policy and its queue in arrival order (the first 100); every
holder of a key with several slots (--limit); whether it is paused or in a
lock-delay; and how its last lease ended, while the server remembers it.
Tokens are never shown. -o json prints the same fields as the API's answer.

Exit codes: 0 (held or not), 1 failures, 2 bad usage.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			out, err := outputFlag(cmd, "table", "json")
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
			st, err := c.Inspect(ctx, args[0])
			if err != nil {
				return commandError(err, 1)
			}
			if out == "json" {
				return writeRawJSON(stdout, st.Raw) // the API's own fields and time format
			}
			return printStatus(stdout, st, time.Now())
		},
	}
	addClientFlags(cmd, timeoutUsage)
	cmd.Flags().StringP("output", "o", "table", "table or json")
	return cmd
}

func printStatus(w io.Writer, st *client.KeyStatus, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "key\t%s\n", st.Key)
	if h := st.Holder; st.Held && h != nil {
		fmt.Fprintf(tw, "held\tyes\n")
		fmt.Fprintf(tw, "owner\t%s\n", h.Owner)
		fmt.Fprintf(tw, "fence\t%d\n", h.Fence)
		fmt.Fprintf(tw, "acquired\t%s (%s ago)\n", formatTime(h.AcquiredAt), roundAge(now.Sub(h.AcquiredAt)))
		fmt.Fprintf(tw, "expires\t%s (in %s)\n", formatTime(h.ExpiresAt), roundAge(h.ExpiresAt.Sub(now)))
		fmt.Fprintf(tw, "on_error\t%s\n", h.OnError)
	} else {
		fmt.Fprintf(tw, "held\tno\n")
	}
	if st.Limit > 1 {
		fmt.Fprintf(tw, "slots\t%d of %d held\n", len(st.Holders), st.Limit)
	}
	if st.Paused {
		fmt.Fprintf(tw, "paused\tyes: nothing is granted until mutexd resume\n")
	}
	if d := st.DelayUntil; d != nil && d.After(now) {
		fmt.Fprintf(tw, "delayed\tuntil %s (in %s)\n", formatTime(*d), roundAge(d.Sub(now)))
	}
	if p := st.Last; p != nil {
		fmt.Fprintf(tw, "last\t%s, fence %d, %s (%s ago)\n", p.Outcome, p.Fence, formatTime(p.EndedAt), roundAge(now.Sub(p.EndedAt)))
	}
	fmt.Fprintf(tw, "waiters\t%d\n", st.Waiters)
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(st.Holders) > 1 {
		fmt.Fprintln(w)
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "HOLDER\tFENCE\tACQUIRED\tEXPIRES")
		for _, h := range st.Holders {
			fmt.Fprintf(tw, "%s\t%d\t%s (%s ago)\t%s (in %s)\n", h.Owner, h.Fence, formatTime(h.AcquiredAt), roundAge(now.Sub(h.AcquiredAt)), formatTime(h.ExpiresAt), roundAge(h.ExpiresAt.Sub(now)))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if len(st.Queue) == 0 {
		return nil
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "#\tOWNER\tWAITING SINCE")
	for i, q := range st.Queue {
		fmt.Fprintf(tw, "%d\t%s\t%s (%s)\n", i+1, q.Owner, formatTime(q.WaitingSince), roundAge(now.Sub(q.WaitingSince)))
	}
	if st.Waiters > len(st.Queue) {
		fmt.Fprintf(tw, "…\t%d more\n", st.Waiters-len(st.Queue))
	}
	return tw.Flush()
}

// roundAge prints a duration to a readable precision.
func roundAge(d time.Duration) time.Duration {
	switch {
	case d < 0:
		return 0
	case d < time.Second:
		return d.Round(time.Millisecond)
	case d < time.Minute:
		return d.Round(100 * time.Millisecond)
	}
	return d.Round(time.Second)
}
