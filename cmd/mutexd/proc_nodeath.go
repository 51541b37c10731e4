//go:build unix && !linux

package main

import (
	"os"
	"syscall"
)

// setDeathSignal does nothing: only Linux can signal a child when its
// parent dies.
func setDeathSignal(*syscall.SysProcAttr, syscall.Signal) {}

// becomeSubreaper does nothing: only Linux has child subreapers, so an
// orphan goes to init and lock can no longer find it.
func becomeSubreaper() error { return nil }

// guardExe is the program the guard runs: this binary.
func guardExe() (string, error) { return os.Executable() }

// procInfo is unused where processes cannot be listed.
type procInfo struct{}

func (procInfo) inGroup(int) bool { return true }

// related knows nothing where processes cannot be listed portably: lock
// relies on the command's process group alone.
func related(int) map[int]procInfo { return nil }

func signalProc(int, procInfo, syscall.Signal) {}

func reapOrphans(...int) {}

// tracksDescendants is false: related sees nothing here.
const tracksDescendants = false
