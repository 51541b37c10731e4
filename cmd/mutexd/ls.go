package main

import (
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/mutexd/mutexd/client"
)

func newLsCmd(stdout io.Writer) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "ls [PREFIX]",
		Short: "List the keys that are held or waited for",
		Long: `ls lists the active keys (held, or with waiters), sorted, optionally only
those starting with PREFIX, fetching page after page. -o json prints
{"locks":[...]}.

Exit codes: 0 listed (even none), 1 failures, 2 bad usage.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			out, err := outputFlag(cmd, "table", "json")
			if err != nil {
				return err
			}
			limit, _ := cmd.Flags().GetInt("limit")
			if limit < 0 {
				return usageError{err: fmt.Errorf("ls: --limit must not be negative, got %d", limit)}
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
			o := client.ListOptions{Limit: 1000}
			if len(args) == 1 {
				o.Prefix = args[0]
			}
			rows := []client.KeySummary{}
			for {
				if limit > 0 {
					o.Limit = min(o.Limit, limit-len(rows))
				}
				page, err := c.List(ctx, o)
				if err != nil {
					return commandError(err, 1)
				}
				rows = append(rows, page.Locks...)
				if page.Next == "" || (limit > 0 && len(rows) >= limit) {
					break
				}
				o.After = page.Next
			}
			if out == "json" {
				return writeJSON(stdout, struct {
					Locks []client.KeySummary `json:"locks"`
				}{rows})
			}
			tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "KEY\tHELD\tOWNER\tWAITERS")
			for _, r := range rows {
				held, owner := "no", r.Owner
				if r.Held {
					held = "yes"
				}
				if owner == "" {
					owner = "-"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\n", r.Key, held, owner, r.Waiters)
			}
			return tw.Flush()
		},
	}
	addClientFlags(cmd, timeoutUsage)
	cmd.Flags().StringP("output", "o", "table", "table or json")
	cmd.Flags().Int("limit", 0, "show at most this many keys (0: all)")
	return cmd
}
