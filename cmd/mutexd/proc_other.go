//go:build !unix

package main

import (
	"errors"
	"io"
	"os"
	"syscall"
)

// job is the command "mutexd lock" runs; see proc_unix.go.
type job struct{}

func lockSignals() []os.Signal { return []os.Signal{os.Interrupt} }

func startJob(argv, env []string, stdout, stderr io.Writer, dieWithUs bool) (*job, error) {
	return nil, errors.New("mutexd lock needs a Unix system")
}

func (j *job) forward(os.Signal)         {}
func (j *job) signal(sig syscall.Signal) {}
func (j *job) wait() int                 { return 1 }
