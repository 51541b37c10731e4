package client_test

import (
	"fmt"
	"log/slog"
	"os"
	"testing"

	"github.com/mutexd/mutexd/internal/servertest"
)

// TestMain runs a daemon for the examples, which find it the way programs
// do: through MUTEXD_ADDR.
func TestMain(m *testing.M) {
	s, err := servertest.Run(slog.New(slog.DiscardHandler))
	if err != nil {
		fmt.Fprintln(os.Stderr, "start mutexd for the examples:", err)
		os.Exit(1)
	}
	os.Setenv("MUTEXD_ADDR", s.URL)
	code := m.Run()
	if err := s.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "stop mutexd:", err)
		code = 1
	}
	os.Exit(code)
}
