package main

import "syscall"

// setDeathSignal has the kernel send sig to the command when mutexd dies.
// (The signal goes when the thread that started the command ends; Go ends
// a thread only under a goroutine that locked it and returned, which lock
// never does.)
func setDeathSignal(attr *syscall.SysProcAttr, sig syscall.Signal) { attr.Pdeathsig = sig }
