package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/mutexd/mutexd/internal/config"
	"github.com/mutexd/mutexd/internal/server"
)

func newServeCmd(stderr io.Writer) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the lock server (the default)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := config.Load(cmd.Flags())
			if err != nil {
				return usageError{err: err}
			}
			log := newLogger(stderr, cfg.Log)
			for _, name := range config.UnknownEnv(os.Environ()) {
				log.Warn("environment variable matches no configuration key; it is ignored (see the configuration table in README.md)", "name", name)
			}
			srv, err := server.New(cfg, buildVersion(), log)
			if errors.Is(err, config.ErrInvalid) {
				return usageError{err: err}
			} else if err != nil {
				return err
			}
			stop := reloadOnHangup(cmd.Context(), srv)
			defer stop()
			return srv.Run(cmd.Context())
		},
	}
	config.AddFlags(cmd.Flags())
	return cmd
}

// reloadOnHangup calls srv.Reload on every SIGHUP (tokens file, TLS
// certificate) until ctx ends or the returned stop is called; stop waits
// for the watcher to exit.
func reloadOnHangup(ctx context.Context, srv *server.Server) (stop func()) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-hup:
				_ = srv.Reload() // logged by Reload; the old settings stay
			case <-ctx.Done():
				return
			}
		}
	}()
	return func() {
		signal.Stop(hup)
		cancel()
		<-done
	}
}

func newLogger(w io.Writer, c config.Log) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.Level)) // validated by config
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}
