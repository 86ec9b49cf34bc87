package postgres

import (
	"context"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/c360dev/c360"
)

// The tenant pool's size comes from MaxConns (C360_DB_MAX_CONNS), else the
// URL's pool_max_conns, else 16; the owner pool stays at 4. Opening a pool
// does not connect, so no server need listen at the URL.
func TestPoolSizeOrder(t *testing.T) {
	const url = "postgres://c360@127.0.0.1:1/none"
	for _, tc := range []struct {
		name string
		url  string
		opts []Option
		want int32
	}{
		{"default", url, nil, 16},
		{"url", url + "?pool_max_conns=5", nil, 5},
		{"option", url, []Option{MaxConns(3)}, 3},
		{"option over url", url + "?pool_max_conns=5", []Option{MaxConns(3)}, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			db, err := Open(context.Background(), tc.url, tc.opts...)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			if got := db.app.Config().MaxConns; got != tc.want {
				t.Errorf("tenant pool max conns = %d, want %d", got, tc.want)
			}
			if got := db.Pool.Config().MaxConns; got != 4 {
				t.Errorf("owner pool max conns = %d, want 4", got)
			}
		})
	}
}

// A statement's error of the server's state (out of memory or disk, too
// many connections, shutting down, an I/O error) is unavailability, a
// retry's to cure; one of the statement's own (a value too large, a
// broken constraint) is not.
func TestInterpretStatementError(t *testing.T) {
	for _, tc := range []struct {
		code string
		want string
	}{
		{"53000", c360.EUNAVAILABLE},
		{"53100", c360.EUNAVAILABLE},
		{"53200", c360.EUNAVAILABLE},
		{"53300", c360.EUNAVAILABLE},
		{"53400", c360.EUNAVAILABLE},
		{"58000", c360.EUNAVAILABLE},
		{"58030", c360.EUNAVAILABLE},
		{"57P01", c360.EUNAVAILABLE},
		{"57P02", c360.EUNAVAILABLE},
		{"57P03", c360.EUNAVAILABLE},
		{"08006", c360.EUNAVAILABLE},
		{"54000", c360.EINTERNAL}, // program_limit_exceeded: the value's fault
		{"23505", c360.ECONFLICT},
	} {
		err := interpretError(fmt.Errorf("insert: %w", &pgconn.PgError{Severity: "ERROR", Code: tc.code}))
		if got := c360.ErrorCode(err); got != tc.want {
			t.Errorf("%s: code %s, want %s", tc.code, got, tc.want)
		}
		if got, want := c360.EventFault(err), tc.want != c360.EUNAVAILABLE; got != want {
			t.Errorf("%s: event fault %v, want %v", tc.code, got, want)
		}
	}
}
