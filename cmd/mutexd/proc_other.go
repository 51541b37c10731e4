//go:build !unix

package main

import (
	"errors"
	"io"
	"os"
)

// job is the command "mutexd lock" runs; see proc_unix.go.
type job struct{ status int }

func lockSignals() []os.Signal { return []os.Signal{os.Interrupt} }

func startJob(argv, env []string, stdout, stderr io.Writer, dieWithUs bool, cleanup string, warn io.Writer) (*job, error) {
	return nil, errors.New("mutexd lock needs a Unix system")
}

func runLockGuard([]string) int { return 1 }

// tracksDescendants is false: nothing runs here.
const tracksDescendants = false

func (j *job) exited() <-chan struct{}  { return nil }
func (j *job) forward(os.Signal)        {}
func (j *job) terminate()               {}
func (j *job) others() map[int]struct{} { return nil }
func (j *job) killAll()                 {}
