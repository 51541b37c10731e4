package main

import (
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
)

// setDeathSignal has the kernel send sig to the command when mutexd dies.
// (The signal goes when the thread that started the command ends; Go ends
// a thread only under a goroutine that locked it and returned, which lock
// never does.)
func setDeathSignal(attr *syscall.SysProcAttr, sig syscall.Signal) { attr.Pdeathsig = sig }

// prSetChildSubreaper is PR_SET_CHILD_SUBREAPER from <linux/prctl.h>.
const prSetChildSubreaper = 36

// becomeSubreaper makes mutexd a child subreaper: a process the command
// started that is orphaned (its parent exited: "worker &" after the
// shell is gone, a double fork, a daemon that called setsid) is
// reparented to mutexd rather than to init, so it stays a descendant
// that lock can find and kill, even outside the command's process group.
func becomeSubreaper() error {
	if _, _, e := syscall.RawSyscall(syscall.SYS_PRCTL, prSetChildSubreaper, 1, 0); e != 0 {
		return e
	}
	return nil
}

// guardExe is the program the guard runs: this very binary, even if it
// was replaced or deleted on disk since it started.
func guardExe() (string, error) { return "/proc/self/exe", nil }

// procInfo is what lock needs to know of one process, from /proc/PID/stat.
type procInfo struct {
	ppid, pgrp int
	zombie     bool
	start      uint64 // start time in clock ticks since boot: tells a reused pid apart
}

// inGroup reports whether the process was in process group pgid.
func (p procInfo) inGroup(pgid int) bool { return p.pgrp == pgid }

// readProc reads /proc/PID/stat; ok is false when the process is gone.
func readProc(pid int) (procInfo, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procInfo{}, false
	}
	// "pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt
	// majflt cmajflt utime stime cutime cstime priority nice threads
	// itrealvalue starttime ...": comm may hold spaces and parentheses,
	// so the fields are counted from its last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return procInfo{}, false
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return procInfo{}, false
	}
	var p procInfo
	p.zombie = f[0] == "Z" || f[0] == "X"
	p.ppid, _ = strconv.Atoi(f[1])
	p.pgrp, _ = strconv.Atoi(f[2])
	p.start, _ = strconv.ParseUint(f[19], 10, 64)
	return p, true
}

// scanProcs reads every process in /proc.
func scanProcs() map[int]procInfo {
	d, err := os.Open("/proc")
	if err != nil {
		return nil
	}
	defer d.Close()
	names, _ := d.Readdirnames(-1)
	procs := make(map[int]procInfo, len(names))
	for _, n := range names {
		pid, err := strconv.Atoi(n)
		if err != nil {
			continue
		}
		if p, ok := readProc(pid); ok {
			procs[pid] = p
		}
	}
	return procs
}

// related returns the live processes that descend from mutexd or belong
// to process group pgid (0: none), with what was read of them. As a
// subreaper mutexd inherits every orphan among its descendants, so this
// is everything the command started that is still running, whatever
// group or session it moved to.
func related(pgid int) map[int]procInfo {
	procs := scanProcs()
	children := make(map[int][]int, len(procs))
	for pid, p := range procs {
		children[p.ppid] = append(children[p.ppid], pid)
	}
	out := make(map[int]procInfo)
	for pid, p := range procs {
		if pgid != 0 && p.pgrp == pgid && !p.zombie {
			out[pid] = p
		}
	}
	stack := append([]int(nil), children[os.Getpid()]...)
	for len(stack) > 0 {
		pid := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		p := procs[pid]
		if !p.zombie {
			out[pid] = p
		}
		stack = append(stack, children[pid]...)
	}
	return out
}

// Linux system call numbers of pidfd_open and pidfd_send_signal (the same
// on every architecture).
const (
	sysPidfdSendSignal = 424
	sysPidfdOpen       = 434
)

// signalProc sends sig to pid if it is still the process p was read from.
// Through a pidfd, a pid that ended and was reused by an unrelated process
// between the scan and the signal is never hit; without pidfds (Linux
// before 5.3) the start time is checked right before kill.
func signalProc(pid int, p procInfo, sig syscall.Signal) {
	fd, _, e := syscall.Syscall(sysPidfdOpen, uintptr(pid), 0, 0)
	if e == 0 {
		defer syscall.Close(int(fd))
	}
	if now, ok := readProc(pid); !ok || now.start != p.start {
		return // gone, or another process now
	}
	if e == 0 {
		syscall.Syscall6(sysPidfdSendSignal, fd, uintptr(sig), 0, 0, 0, 0)
		return
	}
	syscall.Kill(pid, sig)
}

// reapOrphans collects the exit status of mutexd's zombie children other
// than skip: orphans it inherited as a subreaper, which nothing else
// waits for. (The command and the guard are waited for by their
// exec.Cmd; reaping them here would rob those of their status.)
func reapOrphans(skip ...int) {
	self := os.Getpid()
	for pid, p := range scanProcs() {
		if p.ppid != self || !p.zombie || slices.Contains(skip, pid) {
			continue
		}
		var ws syscall.WaitStatus
		syscall.Wait4(pid, &ws, syscall.WNOHANG, nil)
	}
}

// tracksDescendants is true where related can see every descendant.
const tracksDescendants = true
