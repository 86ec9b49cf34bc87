package pgtest

import (
	"errors"
	"net"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"
)

// FatalServer listens as a PostgreSQL server that refuses every connection
// at startup with a FATAL error of SQLSTATE code, as PostgreSQL does when
// it has no connection slot left ("53300", "sorry, too many clients
// already") or is starting up or shutting down (57P03, 57P01). It returns
// a URL for postgres.Open; the server stops when the test ends. A real
// PostgreSQL cannot be brought to these states without harming every
// other test, so the wire protocol is spoken by hand here, with pgx's own
// pgproto3.
func FatalServer(t testing.TB, code, message string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer conn.Close()
				refuse(conn, code, message)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	return "postgres://c360@" + ln.Addr().String() + "/c360?sslmode=disable"
}

// refuse reads a client's startup message (declining SSL and GSS
// encryption if asked first) and answers it with a FATAL ErrorResponse.
func refuse(conn net.Conn, code, message string) {
	be := pgproto3.NewBackend(conn, conn)
	for {
		msg, err := be.ReceiveStartupMessage()
		if err != nil {
			return
		}
		switch msg.(type) {
		case *pgproto3.SSLRequest, *pgproto3.GSSEncRequest:
			if _, err := conn.Write([]byte{'N'}); err != nil {
				return
			}
			continue
		}
		break
	}
	be.Send(&pgproto3.ErrorResponse{Severity: "FATAL", SeverityUnlocalized: "FATAL", Code: code, Message: message})
	be.Flush()
}
