//go:build unix

package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"time"
	"unsafe"
)

// job is the command "mutexd lock" runs, with everything it starts.
//
// Normally it runs in a process group of its own, so that a signal (a
// forwarded SIGTERM, or the SIGKILL of a lost lease) reaches everything
// it started, and a terminal's Ctrl-C is delivered once, by mutexd. When
// mutexd runs in the foreground of a terminal, the command instead stays
// in mutexd's group so that it can read the terminal; it then receives the
// terminal's own signals directly, and mutexd does not send them again.
//
// With kill (killing the command when the lease is lost), three things
// make sure nothing the command started outlives what protects it:
//   - On Linux mutexd is a child subreaper, so every descendant, even one
//     that left the group or the session, stays mutexd's descendant and
//     is found through /proc and killed (killAll).
//   - The process group is led by a guard: a tiny second mutexd process
//     whose standard input is a pipe from lock. When lock dies in any way
//     (kill -9, the OOM killer), the kernel closes the pipe, the guard
//     reads end-of-file and SIGKILLs its own group: the command and all
//     of it that stayed in the group. The guard ignores the signals lock
//     passes on to the group. It leads the group before the command
//     starts, so there is no moment in which the command's children could
//     escape it, and a pipe's end-of-file, unlike a parent-death signal,
//     does not depend on which thread started the guard.
//   - The command itself also gets SIGKILL as its parent-death signal
//     (Linux), for when there is no guard.
type job struct {
	cmd      *exec.Cmd
	ownGroup bool
	pgid     int // the command's process group, when ownGroup

	guard     *exec.Cmd     // nil without a guard
	guardPipe *os.File      // the guard's standard input; closing it fires the guard
	guardDone chan struct{} // closed when the guard has been waited for

	done   chan struct{} // closed when the command has exited and been waited for
	status int           // the command's exit status, set before done closes
}

// lockSignals are the signals "mutexd lock" passes on to its command.
func lockSignals() []os.Signal { return []os.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP} }

// startJob starts argv with env and the given stdout and stderr; stdin is
// mutexd's own. With dieWithUs, the command is killed if mutexd itself
// dies, since nothing would renew its lease; on Linux mutexd then becomes
// a subreaper, and the guard, when it starts, removes cleanup (a
// directory) when mutexd dies. Warnings go to warn.
func startJob(argv, env []string, stdout, stderr io.Writer, dieWithUs bool, cleanup string, warn io.Writer) (*job, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env, cmd.Stdin, cmd.Stdout, cmd.Stderr = env, os.Stdin, stdout, stderr
	// Output that is not a file is copied through pipes, which a leftover
	// process could hold open forever; the copy is cut off this long after
	// the command exits. (mutexd's own stdout and stderr are files: they
	// are handed to the command as they are.)
	cmd.WaitDelay = time.Second
	j := &job{cmd: cmd, ownGroup: !foregroundOfTerminal(os.Stdin), done: make(chan struct{})}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: j.ownGroup}
	if dieWithUs {
		setDeathSignal(cmd.SysProcAttr, syscall.SIGKILL)
		if err := becomeSubreaper(); err != nil {
			fmt.Fprintf(warn, "mutexd: warning: cannot become a subreaper: %v\n", err)
		}
		if j.ownGroup {
			if err := j.startGuard(cleanup); err != nil {
				fmt.Fprintf(warn, "mutexd: warning: cannot start the guard (%v): if mutexd lock is killed outright, the command's other processes survive it\n", err)
			} else {
				cmd.SysProcAttr.Pgid = j.pgid
			}
		}
	}
	if err := cmd.Start(); err != nil {
		j.stopGuard()
		return nil, err
	}
	if j.ownGroup && j.pgid == 0 {
		j.pgid = cmd.Process.Pid
	}
	go func() {
		_ = cmd.Wait()
		ps := cmd.ProcessState
		if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			j.status = 128 + int(ws.Signal())
		} else {
			j.status = ps.ExitCode()
		}
		close(j.done)
	}()
	return j, nil
}

// startGuard starts the guard as the leader of a new process group, and
// waits until it ignores the signals lock passes on.
func (j *job) startGuard(cleanup string) error {
	exe, err := guardExe()
	if err != nil {
		return err
	}
	inR, inW, err := os.Pipe()
	if err != nil {
		return err
	}
	readyR, readyW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		return err
	}
	g := &exec.Cmd{Path: exe, Args: []string{guardArg0, cleanup}, Stdin: inR, Stdout: readyW,
		SysProcAttr: &syscall.SysProcAttr{Setpgid: true}}
	err = g.Start()
	inR.Close()
	readyW.Close()
	defer readyR.Close()
	if err != nil {
		inW.Close()
		return err
	}
	j.guard, j.guardPipe, j.guardDone = g, inW, make(chan struct{})
	go func() { _ = g.Wait(); close(j.guardDone) }()
	if _, err := readyR.Read(make([]byte, 1)); err != nil {
		j.stopGuard()
		return errors.New("it did not start")
	}
	j.pgid = g.Process.Pid
	return nil
}

// stopGuard fires the guard, which kills its group, and waits for it.
func (j *job) stopGuard() {
	if j.guard == nil {
		return
	}
	j.guardPipe.Close()
	<-j.guardDone
	j.guard, j.pgid = nil, 0
}

// runLockGuard is the guard's program (see job): it waits for end-of-file
// on its standard input, the pipe from lock, and then kills its process
// group, itself included. args[1] is a directory of lock's to remove.
func runLockGuard(args []string) int {
	signal.Ignore(syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGPIPE)
	if _, err := os.Stdout.Write([]byte{1}); err != nil {
		return 1
	}
	os.Stdout.Close()
	_, _ = io.Copy(io.Discard, os.Stdin)
	if len(args) > 1 && args[1] != "" {
		os.RemoveAll(args[1])
	}
	_ = syscall.Kill(0, syscall.SIGKILL)
	return 1
}

// exited is closed when the command has exited; status is then valid.
func (j *job) exited() <-chan struct{} { return j.done }

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

// signal sends sig to the command: its process group when it has one
// (and the command itself if it left the group, as setsid(1) does).
func (j *job) signal(sig syscall.Signal) {
	if !j.ownGroup {
		_ = j.cmd.Process.Signal(sig)
		return
	}
	_ = syscall.Kill(-j.pgid, sig)
	if pg, err := syscall.Getpgid(j.cmd.Process.Pid); err == nil && pg != j.pgid {
		_ = j.cmd.Process.Signal(sig)
	}
}

// terminate asks everything the command started to stop: SIGTERM to it
// (its group) and, where mutexd can see them, to its descendants that
// left the group.
func (j *job) terminate() {
	j.signal(syscall.SIGTERM)
	for pid, p := range j.others() {
		if !j.ownGroup || !p.inGroup(j.pgid) {
			signalProc(pid, p, syscall.SIGTERM)
		}
	}
}

// others returns the processes of the command, other than its first
// process and the guard, that are still running: on Linux, its live
// descendants and group members; elsewhere nothing is known.
func (j *job) others() map[int]procInfo {
	procs := related(j.groupID())
	delete(procs, j.cmd.Process.Pid)
	if j.guard != nil {
		delete(procs, j.guard.Process.Pid)
	}
	return procs
}

// groupID is the command's own process group, 0 when it has none.
func (j *job) groupID() int {
	if j.ownGroup {
		return j.pgid
	}
	return 0
}

// killAll SIGKILLs the command, its process group and every descendant
// mutexd can see, guard included, and returns once they are all gone
// and waited for. It does not give up: its caller must not release the
// lease while any of them could still act.
func (j *job) killAll() {
	var skip []int
	skip = append(skip, j.cmd.Process.Pid)
	if j.guard != nil {
		skip = append(skip, j.guard.Process.Pid)
	}
	for i := 0; ; i++ {
		_ = j.cmd.Process.Signal(syscall.SIGKILL)
		if j.ownGroup {
			_ = syscall.Kill(-j.pgid, syscall.SIGKILL)
		}
		procs := related(j.groupID())
		for pid, p := range procs {
			signalProc(pid, p, syscall.SIGKILL)
		}
		reapOrphans(skip...)
		if len(procs) == 0 && j.gone() {
			break
		}
		time.Sleep(min(time.Millisecond<<i, 50*time.Millisecond))
	}
	<-j.done
	if j.guard != nil {
		j.guardPipe.Close()
		<-j.guardDone
	}
}

// gone reports whether the command has exited and been waited for, and
// its process group (when it has one) has no member left, not even a
// zombie.
func (j *job) gone() bool {
	select {
	case <-j.done:
	default:
		return false
	}
	return !j.ownGroup || errors.Is(syscall.Kill(-j.pgid, 0), syscall.ESRCH)
}

// foregroundOfTerminal reports whether f is a terminal whose foreground
// process group is mutexd's.
func foregroundOfTerminal(f *os.File) bool {
	var pgrp int32
	_, _, errno := syscall.Syscall(syscall.SYS_IOCTL, f.Fd(), uintptr(syscall.TIOCGPGRP), uintptr(unsafe.Pointer(&pgrp)))
	return errno == 0 && int(pgrp) == syscall.Getpgrp()
}
