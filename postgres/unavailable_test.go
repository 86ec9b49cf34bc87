package postgres_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/internal/pgtest"
	"github.com/c360dev/c360/postgres"
)

// A server that refuses the connection at startup, out of connection slots
// or memory or disk, shutting down or starting up, is unavailable, not the
// event's fault: pgx returns the server's FATAL error inside a
// *pgconn.ConnectError, and the store answers UNAVAILABLE (503 with
// Retry-After at every connector, so the provider retries) rather than
// INTERNAL, and keeps no dead letter of an event that did nothing wrong.
func TestRefusedConnectionIsUnavailable(t *testing.T) {
	for _, tc := range []struct{ code, message string }{
		{"53300", "sorry, too many clients already"},
		{"53300", "remaining connection slots are reserved for roles with the SUPERUSER attribute"},
		{"53000", "insufficient resources"},
		{"53100", "could not extend file: No space left on device"},
		{"53200", "out of memory"},
		{"53400", "configuration limit exceeded"},
		{"58000", "system error"},
		{"58030", "could not open file: Input/output error"},
		{"57P01", "terminating connection due to administrator command"},
		{"57P02", "terminating connection due to crash of another server process"},
		{"57P03", "the database system is starting up"},
		{"28000", "no pg_hba.conf entry for host"},
	} {
		t.Run(tc.code, func(t *testing.T) {
			db, err := postgres.Open(context.Background(), pgtest.FatalServer(t, tc.code, tc.message))
			if err != nil {
				t.Fatal(err)
			}
			db.StartIngest(postgres.IngestConfig{})
			t.Cleanup(db.Close)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()

			_, err = db.FindWorkspaceBySlug(ctx, "acme")
			if c360.ErrorCode(err) != c360.EUNAVAILABLE || c360.EventFault(err) {
				t.Errorf("find workspace: %v (code %s, event fault %v), want UNAVAILABLE, not the event's fault",
					err, c360.ErrorCode(err), c360.EventFault(err))
			}
			_, err = db.Ingest(ctx, 1, []*c360.Event{track("refused-1", ids("user_id", "u"))})
			var kept *c360.DeadLetteredError
			if c360.ErrorCode(err) != c360.EUNAVAILABLE || c360.EventFault(err) || errors.As(err, &kept) {
				t.Errorf("ingest: %v (code %s, event fault %v), want UNAVAILABLE, not the event's fault",
					err, c360.ErrorCode(err), c360.EventFault(err))
			}
		})
	}
}
