//go:build unix

package main

import (
	"io"
	"os"
	"os/exec"
	"syscall"
	"unsafe"
)

// job is the command "mutexd lock" runs.
//
// Normally it runs in a process group of its own, so that a signal (a
// forwarded SIGTERM, or the SIGKILL of a lost lease) reaches everything
// it started, and a terminal's Ctrl-C is delivered once, by mutexd. When
// mutexd runs in the foreground of a terminal, the command instead stays
// in mutexd's group so that it can read the terminal; it then receives the
// terminal's own signals directly, and mutexd does not send them again.
type job struct {
	cmd      *exec.Cmd
	ownGroup bool
}

// lockSignals are the signals "mutexd lock" passes on to its command.
func lockSignals() []os.Signal { return []os.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP} }

// startJob starts argv with env and the given stdout and stderr; stdin is
// mutexd's own. With dieWithUs, the command is killed if mutexd itself
// dies (where the system can do that), since nothing would renew its lease.
func startJob(argv, env []string, stdout, stderr io.Writer, dieWithUs bool) (*job, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env, cmd.Stdin, cmd.Stdout, cmd.Stderr = env, os.Stdin, stdout, stderr
	j := &job{cmd: cmd, ownGroup: !foregroundOfTerminal(os.Stdin)}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: j.ownGroup}
	if dieWithUs {
		setDeathSignal(cmd.SysProcAttr, syscall.SIGKILL)
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return j, nil
}

// forward passes on a signal mutexd received.
func (j *job) forward(sig os.Signal) {
	s, ok := sig.(syscall.Signal)
	if !ok {
		return
	}
	if !j.ownGroup && (s == syscall.SIGINT || s == syscall.SIGHUP) {
		return // the terminal sent it to the command too
	}
	j.signal(s)
}

// signal sends sig to the command (its process group when it has one).
func (j *job) signal(sig syscall.Signal) {
	pid := j.cmd.Process.Pid
	if j.ownGroup {
		pid = -pid
	}
	_ = syscall.Kill(pid, sig)
}

// wait waits for the command and returns its exit status as a shell
// reports it: the exit code, or 128+N when signal N killed it.
func (j *job) wait() int {
	_ = j.cmd.Wait()
	ps := j.cmd.ProcessState
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ps.ExitCode()
}

// foregroundOfTerminal reports whether f is a terminal whose foreground
// process group is mutexd's.
func foregroundOfTerminal(f *os.File) bool {
	var pgrp int32
	_, _, errno := syscall.Syscall(syscall.SYS_IOCTL, f.Fd(), uintptr(syscall.TIOCGPGRP), uintptr(unsafe.Pointer(&pgrp)))
	return errno == 0 && int(pgrp) == syscall.Getpgrp()
}
