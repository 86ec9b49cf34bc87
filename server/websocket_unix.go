//go:build unix

package server

import (
	"net"
	"syscall"
)

// rawConn returns the socket of a hijacked connection when it can be waited
// on for data without reading it: a TCP or Unix socket, whose bytes all
// come from the socket (a TLS connection, say, buffers what it decrypted).
func rawConn(conn net.Conn) syscall.RawConn {
	var sc syscall.Conn
	switch c := conn.(type) {
	case *net.TCPConn:
		sc = c
	case *net.UnixConn:
		sc = c
	default:
		return nil
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return raw
}

// peekReadable is a syscall.RawConn.Read callback: it reports whether the
// socket has data, is at its end or failed, without taking any data;
// false makes Read wait until the socket is readable and ask again.
func peekReadable(fd uintptr) bool {
	var b [1]byte
	for {
		_, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK)
		if err != syscall.EINTR {
			return err != syscall.EAGAIN
		}
	}
}
