//go:build !unix

package server

import (
	"net"
	"syscall"
)

// rawConn returns nil: connections are not waited on without reading (see
// wsConn.NextReader).
func rawConn(net.Conn) syscall.RawConn { return nil }

func peekReadable(uintptr) bool { return true }
