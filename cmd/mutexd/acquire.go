package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/mutexd/mutexd/client"
)

func newAcquireCmd(stdout io.Writer) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "acquire KEY",
		Short: "Acquire a lock and print the lease (renew and release it yourself)",
		Long: `acquire waits for the lock on KEY and prints the lease. Nothing renews it:
it expires after --ttl unless renewed with "mutexd renew". For a command
that runs while the lock is held, "mutexd lock" is simpler and safer.

  -o json   the lease as JSON (the fields of the API's acquire answer)
  -o env    export lines for eval: MUTEXD_KEY, MUTEXD_FENCE, MUTEXD_LEASE_TOKEN,
            MUTEXD_PREVIOUS_OUTCOME, MUTEXD_PREVIOUS_FENCE (see mutexd lock)
  -o token  the token alone

Exit codes: 0 acquired, 75 not acquired within --wait, 1 other failures,
2 bad usage.`,
		Example: `  eval "$(mutexd acquire --ttl 5m -o env backup:db)" && run-backup && mutexd release backup:db`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			out, err := outputFlag(cmd, "json", "env", "token")
			if err != nil {
				return err
			}
			opts, wait, err := acquireOptions(cmd)
			if err != nil {
				return err
			}
			c, err := newAPIClient(cmd)
			if err != nil {
				return err
			}
			ctx, cancel, err := callContext(cmd, wait)
			if err != nil {
				return err
			}
			defer cancel()
			l, err := c.Acquire(ctx, args[0], opts...)
			if err != nil {
				return commandError(err, exitConflict)
			}
			if err := printLease(stdout, l, out); err != nil {
				// Nobody got the token: release the lease rather than leave
				// it held, unreleasable, for its TTL.
				rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
				defer rcancel()
				if rerr := l.Release(rctx); rerr != nil {
					return fmt.Errorf("acquire %s: cannot print the lease (%w), nor release it (%w): it ends by itself within its TTL", l.Key, err, rerr)
				}
				return fmt.Errorf("acquire %s: cannot print the lease, released it: %w", l.Key, err)
			}
			return nil
		},
	}
	addClientFlags(cmd, acquireTimeoutUsage)
	addAcquireFlags(cmd, defaultOwner(), "lease time to live (a Go duration or whole seconds); renew it with mutexd renew before it runs out")
	cmd.Flags().StringP("output", "o", "json", "json, env or token")
	return cmd
}

// releaseTimeout bounds the release of a lease acquire could not print.
const releaseTimeout = 10 * time.Second

// leaseJSON is the lease as acquire -o json prints it: the API's grant.
type leaseJSON struct {
	Key       string        `json:"key"`
	Token     string        `json:"token"`
	Fence     uint64        `json:"fence"`
	Owner     string        `json:"owner"`
	TTLMS     int64         `json:"ttl_ms"`
	ExpiresAt string        `json:"expires_at"`
	WaitedMS  int64         `json:"waited_ms"`
	Previous  *previousJSON `json:"previous"`
	Limit     int           `json:"limit"`
	RequestID string        `json:"request_id,omitempty"`
}

// previousJSON is a grant's previous as the API writes it.
type previousJSON struct {
	Fence   uint64 `json:"fence"`
	Outcome string `json:"outcome"`
	EndedAt string `json:"ended_at,omitempty"`
}

func previousOf(p *client.Previous) *previousJSON {
	if p == nil {
		return nil
	}
	j := &previousJSON{Fence: p.Fence, Outcome: p.Outcome}
	if !p.EndedAt.IsZero() {
		j.EndedAt = formatTime(p.EndedAt)
	}
	return j
}

func printLease(w io.Writer, l *client.Lease, format string) error {
	var err error
	switch format {
	case "token":
		_, err = fmt.Fprintln(w, l.Token)
	case "env":
		outcome, fence := previousEnv(l.Previous)
		_, err = fmt.Fprintf(w, "export MUTEXD_KEY=%s\nexport MUTEXD_FENCE=%d\nexport MUTEXD_LEASE_TOKEN=%s\nexport MUTEXD_PREVIOUS_OUTCOME=%s\nexport MUTEXD_PREVIOUS_FENCE=%s\n",
			shellQuote(l.Key), l.Fence, l.Token, shellQuote(outcome), fence)
	default:
		err = writeJSON(w, leaseJSON{
			Key: l.Key, Token: l.Token, Fence: l.Fence, Owner: l.Owner,
			TTLMS: l.TTL().Milliseconds(), ExpiresAt: formatTime(l.ExpiresAt()),
			WaitedMS: l.Waited.Milliseconds(), Previous: previousOf(l.Previous),
			Limit: l.Limit, RequestID: l.RequestID,
		})
	}
	return err
}

// previousEnv returns MUTEXD_PREVIOUS_OUTCOME and MUTEXD_PREVIOUS_FENCE:
// how the key's last lease ended, both empty when the server knows of
// none.
func previousEnv(p *client.Previous) (outcome, fence string) {
	if p == nil {
		return "", ""
	}
	return p.Outcome, strconv.FormatUint(p.Fence, 10)
}

// writeJSON prints v as indented JSON.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// writeRawJSON writes a JSON document from the server indented, as
// writeJSON writes the ones it encodes.
func writeRawJSON(w io.Writer, raw []byte) error {
	var b bytes.Buffer
	if err := json.Indent(&b, bytes.TrimSpace(raw), "", "  "); err != nil {
		return fmt.Errorf("malformed answer from the server: %w", err)
	}
	b.WriteByte('\n')
	_, err := w.Write(b.Bytes())
	return err
}

// formatTime prints a time as the API does: RFC 3339 UTC with milliseconds.
func formatTime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z07:00") }

// shellQuote quotes s for a POSIX shell.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.:/@%+=,") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
