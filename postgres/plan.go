package postgres

import (
	"strings"

	"github.com/jackc/pgx/v5"
)

// Plans of statements over array parameters.
//
// Statements run as prepared statements, and after its fifth run
// PostgreSQL may give one a generic plan, made without the parameters'
// values. That plan guesses an array parameter holds 10 elements, and once
// the tables hold ten workspaces or more it takes "id = ANY($2)" to find a
// single row. From those guesses a nested loop that, for each row of one
// side, reads the other side by a whole array costs least: for n ids that
// is n² comparisons or n index searches of n keys each.

// plannerOff turns some of the planner's methods off for the statements
// queued between its off and on statements, and on again after them. The
// settings are in place before a statement's first run, so the plan
// PostgreSQL caches for it is made without those methods too. Both are
// set_config(..., true), local to the transaction, or to the implicit
// transaction of a batch sent outside one (where SET LOCAL would also
// work, but warn in the server's log). c360 runs with the planner's
// settings as PostgreSQL ships them, on.
type plannerOff struct{ off, on string }

func withoutPlans(methods ...string) plannerOff {
	set := func(value string) string {
		parts := make([]string, len(methods))
		for i, m := range methods {
			parts[i] = "set_config('enable_" + m + "', '" + value + "', true)"
		}
		return "SELECT " + strings.Join(parts, ", ")
	}
	return plannerOff{off: set("off"), on: set("on")}
}

var (
	// noNestLoop is for a statement that joins rows found by array
	// parameters: its sides are hashed or merged, whatever the guesses, in
	// time linear in the arrays.
	noNestLoop = withoutPlans("nestloop")
	// byKeyOnly is for an UPDATE ... FROM unnest(...) that finds its rows
	// by key ("id = ANY($2)"): nested loops off, as for noNestLoop, and
	// bitmap and sequential scans off too, so the table is read by its key
	// index and hashed against the array. For a workspace the statistics
	// take to be small (one created since the last ANALYZE), the planner
	// otherwise hashes the array against a bitmap scan of the whole
	// workspace, which grows with it until the next ANALYZE
	// (TestUnknownWorkspacePlansStayKeyLookups).
	byKeyOnly = withoutPlans("nestloop", "bitmapscan", "seqscan")
)

// queue queues one statement with the methods off, and returns it, to read
// its rows with.
func (p plannerOff) queue(b *pgx.Batch, sql string, args ...any) *pgx.QueuedQuery {
	b.Queue(p.off)
	q := b.Queue(sql, args...)
	b.Queue(p.on)
	return q
}
