//go:build !linux

package main

import "syscall"

// serverProcAttr: only Linux has a parent-death signal; elsewhere a server
// outlives a bench process that dies without its deferred srv.Stop.
func serverProcAttr() *syscall.SysProcAttr { return nil }
