package main

import "syscall"

// serverProcAttr has the kernel send the server SIGTERM when the bench
// process dies, whatever kills it: a worker's panic and SIGKILL skip the
// deferred srv.Stop, and a server left behind (its parent now PID 1) would
// hold its port, its connections and the next run's CPU.
func serverProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
}
