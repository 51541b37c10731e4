package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"regexp"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/mutexd/mutexd/client"
	"github.com/mutexd/mutexd/internal/cluster"
	"github.com/mutexd/mutexd/internal/config"
)

// newClusterCmd is "mutexd cluster": a cluster's operations, through the
// HTTP API of any server (or agent), except recover, which runs offline.
func newClusterCmd(stdout io.Writer) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cluster",
		Short: "Operate a cluster: status, join, remove, transfer-leadership, snapshot, recover",
		Long: `cluster operates a cluster of mutexd servers (docs/cluster.md, "Operations").
Every subcommand but recover goes through the HTTP API of the servers in
--addr (any server, or an agent), with the admin token in MUTEXD_TOKEN when
the servers require tokens.

Exit codes: 0 done, 1 failures, 2 bad usage or a refusal that changed
nothing (a clashing join, an unknown member, the last voter, a restore onto
a cluster that holds lock state).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return usageError{err: errors.New("cluster: name a subcommand (see mutexd cluster --help)")}
		},
	}
	snapshot := &cobra.Command{
		Use:   "snapshot",
		Short: "Save the cluster's state to a file, or restore it from one",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return usageError{err: errors.New("cluster snapshot: name save or restore (see mutexd cluster snapshot --help)")}
		},
	}
	snapshot.AddCommand(newSnapshotSaveCmd(stdout), newSnapshotRestoreCmd(stdout))
	cmd.AddCommand(newClusterStatusCmd(stdout), newClusterJoinCmd(stdout), newClusterRemoveCmd(stdout),
		newClusterTransferCmd(stdout), snapshot, newClusterRecoverCmd(stdout))
	return cmd
}

func newClusterStatusCmd(stdout io.Writer) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the cluster's leader, term, indexes and members",
		Long: `status shows who leads, the term and the commit and applied indexes of
the server asked, and every member: id, Raft address, API URL, voter or
not, and its state as it reports it (or unreachable). -o json prints the
/v1/cluster document.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
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
			st, err := c.ClusterStatus(ctx)
			if err != nil {
				return clusterError(err)
			}
			if out == "json" {
				return writeRawJSON(stdout, st.Raw)
			}
			return printClusterStatus(stdout, st)
		},
	}
	addClientFlags(cmd, timeoutUsage)
	cmd.Flags().StringP("output", "o", "table", "table or json")
	return cmd
}

func printClusterStatus(w io.Writer, st *client.ClusterStatus) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	leader := st.LeaderID
	if leader == "" {
		leader = "(none known)"
	}
	fmt.Fprintf(tw, "asked\t%s (%s)\n", st.NodeID, st.State)
	fmt.Fprintf(tw, "leader\t%s\n", leader)
	fmt.Fprintf(tw, "term\t%d\n", st.Term)
	fmt.Fprintf(tw, "commit index\t%d\n", st.CommitIndex)
	fmt.Fprintf(tw, "applied index\t%d\n", st.AppliedIndex)
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATE\tVOTER\tRAFT\tAPI")
	for _, m := range st.Nodes {
		voter := "yes"
		if !m.Voter {
			voter = "no"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", m.ID, m.State, voter, m.Raft, m.API)
	}
	return tw.Flush()
}

var memberIDPattern = regexp.MustCompile(`^[a-z0-9-]{1,32}$`)

func checkMemberID(cmd *cobra.Command, what, id string) error {
	if !memberIDPattern.MatchString(id) {
		return usageError{err: fmt.Errorf("%s: %s must be 1 to 32 of a-z, 0-9 and -, got %q", cmd.Name(), what, id)}
	}
	return nil
}

func newClusterJoinCmd(stdout io.Writer) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "join ID RAFT API [--nonvoter]",
		Short: "Add a server to the cluster (admin)",
		Long: `join adds the server ID, whose Raft transport is at RAFT (host:port) and
whose HTTP API is at API (a base URL), to the cluster, as a voter or, with
--nonvoter, as a non-voter that replicates without voting. Start that
server first with cluster.join: true and no peers: it catches up from the
leader's latest snapshot and log. An id, Raft address or API URL that a
member already has is refused (exit 2) and nothing changes.`,
		Args: cobra.ExactArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, raftAddr, api := args[0], args[1], args[2]
			if err := checkMemberID(cmd, "ID", id); err != nil {
				return err
			}
			if host, port, err := net.SplitHostPort(raftAddr); err != nil || host == "" || port == "" {
				return usageError{err: fmt.Errorf("join: RAFT must be a host:port, got %q", raftAddr)}
			}
			if u, err := url.Parse(api); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				return usageError{err: fmt.Errorf("join: API must be an http:// or https:// URL, got %q", api)}
			}
			nonvoter, _ := cmd.Flags().GetBool("nonvoter")
			return clusterCall(cmd, func(c *client.Client, ctx context.Context) error {
				if err := c.JoinMember(ctx, id, raftAddr, api, !nonvoter); err != nil {
					return err
				}
				kind := "voter"
				if nonvoter {
					kind = "non-voter"
				}
				_, err := fmt.Fprintf(stdout, "joined %s as a %s\n", id, kind)
				return err
			})
		},
	}
	addClientFlags(cmd, timeoutUsage)
	cmd.Flags().Bool("nonvoter", false, "add it as a non-voter (replicates, does not vote)")
	return cmd
}

func newClusterRemoveCmd(stdout io.Writer) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "remove ID",
		Short: "Take a server out of the cluster (admin)",
		Long: `remove takes the member ID out of the cluster's configuration (a failed
server, before a replacement joins). The cluster's only voter is never
removed (exit 2); neither is an unknown id.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkMemberID(cmd, "ID", args[0]); err != nil {
				return err
			}
			return clusterCall(cmd, func(c *client.Client, ctx context.Context) error {
				if err := c.RemoveMember(ctx, args[0]); err != nil {
					return err
				}
				_, err := fmt.Fprintf(stdout, "removed %s\n", args[0])
				return err
			})
		},
	}
	addClientFlags(cmd, timeoutUsage)
	return cmd
}

func newClusterTransferCmd(stdout io.Writer) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "transfer-leadership [--to ID]",
		Short: "Hand the cluster's leadership to another voter (admin)",
		Long: `transfer-leadership makes the leader hand over to the voter --to, or to
the most up-to-date other voter, and returns once it has (before
maintenance on the leader's machine). Writes pause for about one election
round.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			to, _ := cmd.Flags().GetString("to")
			if to != "" {
				if err := checkMemberID(cmd, "--to", to); err != nil {
					return err
				}
			}
			return clusterCall(cmd, func(c *client.Client, ctx context.Context) error {
				if err := c.TransferLeadership(ctx, to); err != nil {
					return err
				}
				msg := "leadership transferred"
				if st, err := c.ClusterStatus(ctx); err == nil && st.LeaderID != "" {
					msg += "; the leader is " + st.LeaderID
				}
				_, err := fmt.Fprintln(stdout, msg)
				return err
			})
		},
	}
	addClientFlags(cmd, timeoutUsage)
	cmd.Flags().String("to", "", "the voter to lead (default: the most up-to-date other voter)")
	return cmd
}

func newSnapshotSaveCmd(stdout io.Writer) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "save FILE",
		Short: "Write the cluster's whole state to FILE (a backup; admin)",
		Long: `save writes the cluster's whole lock state (leases, queues, fences,
members' API URLs) as the server asked holds it after a linearizable read
barrier, to FILE ("-" for standard output). It is the backup that
"mutexd cluster snapshot restore" takes.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return clusterCall(cmd, func(c *client.Client, ctx context.Context) error {
				b, err := c.SaveSnapshot(ctx)
				if err != nil {
					return err
				}
				if args[0] == "-" {
					_, err = stdout.Write(b)
					return err
				}
				if err := writeFileAtomic(args[0], b); err != nil {
					return fmt.Errorf("snapshot save: %w", err)
				}
				_, err = fmt.Fprintf(stdout, "saved %d bytes to %s\n", len(b), args[0])
				return err
			})
		},
	}
	addClientFlags(cmd, timeoutUsage)
	return cmd
}

// writeFileAtomic writes b to path through a temporary file in the same
// directory, so that a failed save never leaves half a backup under path.
func writeFileAtomic(path string, b []byte) error {
	f, err := os.CreateTemp(dirOf(path), ".mutexd-snapshot-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

func dirOf(path string) string {
	if i := strings.LastIndexByte(path, os.PathSeparator); i >= 0 {
		return path[:i+1]
	}
	return "."
}

func newSnapshotRestoreCmd(stdout io.Writer) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "restore FILE [--force]",
		Short: "Replace the cluster's whole state with FILE's (disaster recovery; admin)",
		Long: `restore replaces the whole cluster's lock state with the one "mutexd
cluster snapshot save" wrote to FILE: a disaster-recovery step, onto a
fresh cluster. Every member installs it; the members stay the running
cluster's. Leases in the file get back the time they had left when it was
saved (plus cluster.failover_margin). A cluster that holds any lock state
refuses (exit 2) unless --force, which throws that state away.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			b, err := os.ReadFile(args[0])
			if err != nil {
				return usageError{err: fmt.Errorf("snapshot restore: %w", err)}
			}
			force, _ := cmd.Flags().GetBool("force")
			return clusterCall(cmd, func(c *client.Client, ctx context.Context) error {
				if err := c.RestoreSnapshot(ctx, b, force); err != nil {
					return err
				}
				_, err := fmt.Fprintf(stdout, "restored the cluster's state from %s\n", args[0])
				return err
			})
		},
	}
	addClientFlags(cmd, timeoutUsage)
	cmd.Flags().Bool("force", false, "replace a cluster that holds lock state (its leases and waiters are lost)")
	return cmd
}

func newClusterRecoverCmd(stdout io.Writer) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "recover --config FILE --voters ID[,ID...]",
		Short: "Make the surviving servers of a lost quorum a working cluster (offline)",
		Long: `recover is the way out of a lost quorum (most voters gone for good). Stop
every surviving server, run recover on each with the same --voters (the
survivors' ids; this server among them) and its own --config, then start
them: they elect a leader among themselves with every entry their logs
hold, so held leases and queues are kept (their deadlines restart as on
any failover). Then join fresh servers to restore the cluster's size.
It rewrites data_dir: run it only on a stopped server, only after a quorum
is lost for good. Writes that no survivor had received are lost.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			voters, _ := cmd.Flags().GetStringSlice("voters")
			if len(voters) == 0 {
				return usageError{err: errors.New("recover: --voters is required: the surviving servers' ids")}
			}
			for _, id := range voters {
				if err := checkMemberID(cmd, "--voters", id); err != nil {
					return err
				}
			}
			cfg, err := config.Load(cmd.Flags())
			if err != nil {
				return usageError{err: err}
			}
			if !cfg.Cluster.Enabled() {
				return usageError{err: errors.New("recover: the configuration has no cluster.node_id")}
			}
			before, after, err := cluster.Recover(cfg.Cluster.DataDir, cfg.Cluster.NodeID, voters)
			if err != nil {
				return usageError{err: err}
			}
			ids := func(ps []cluster.Peer) string {
				var out []string
				for _, p := range ps {
					out = append(out, p.ID+"@"+p.Raft)
				}
				return strings.Join(out, ",")
			}
			_, err = fmt.Fprintf(stdout, "recovered %s: voters were %s, now %s; start the server\n", cfg.Cluster.NodeID, ids(before), ids(after))
			return err
		},
	}
	config.AddFlags(cmd.Flags())
	cmd.Flags().StringSlice("voters", nil, "the surviving servers' ids, the same on every one, comma-separated")
	return cmd
}

// clusterCall runs an admin call with a client for --addr, bounded by
// --timeout, and turns its error into the command's exit.
func clusterCall(cmd *cobra.Command, call func(*client.Client, context.Context) error) error {
	c, err := newAPIClient(cmd)
	if err != nil {
		return err
	}
	ctx, cancel, err := callContext(cmd, 0)
	if err != nil {
		return err
	}
	defer cancel()
	if err := call(c, ctx); err != nil {
		return clusterError(err)
	}
	return nil
}

// clusterError is commandError, with the refusals that changed nothing
// (a clashing join, an unknown member, the last voter, a non-voter, a
// running cluster) as usage errors: exit 2.
func clusterError(err error) error {
	for _, refusal := range []error{client.ErrMemberExists, client.ErrUnknownMember, client.ErrLastVoter, client.ErrNotVoter, client.ErrClusterRunning} {
		if errors.Is(err, refusal) {
			return usageError{err: errors.New(strings.ReplaceAll(err.Error(), "\n", "; "))}
		}
	}
	return commandError(err, 1)
}
