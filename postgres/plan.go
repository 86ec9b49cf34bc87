package postgres

import "github.com/jackc/pgx/v5"

// Plans of statements over array parameters.
//
// Statements run as prepared statements, and after its fifth run
// PostgreSQL may give one a generic plan, made without the parameters'
// values. That plan guesses an array parameter holds 10 elements, and once
// the tables hold ten workspaces or more it takes "id = ANY($2)" to find a
// single row. From those guesses a nested loop that, for each row of one
// side, reads the other side by a whole array costs least: for n ids that
// is n² comparisons or n index searches of n keys each.

// queueWithoutNestLoop queues a statement that joins rows found by array
// parameters, with nested loops off for it alone: its sides are then
// hashed or merged, whatever the guesses, in time linear in the arrays.
// The setting is in place before the statement's first run, so the plan
// PostgreSQL caches for it is made without nested loops too; it is put
// back on after it. Both are set_config(..., true), local to the
// transaction, or to the implicit transaction of a batch sent outside one
// (where SET LOCAL would also work, but warn in the server's log). c360
// runs with the planner's settings as PostgreSQL ships them, on. It
// returns the statement's QueuedQuery, to read its rows with.
func queueWithoutNestLoop(b *pgx.Batch, sql string, args ...any) *pgx.QueuedQuery {
	b.Queue(`SELECT set_config('enable_nestloop', 'off', true)`)
	q := b.Queue(sql, args...)
	b.Queue(`SELECT set_config('enable_nestloop', 'on', true)`)
	return q
}

// queueUpdateByKey queues an UPDATE ... FROM unnest(...) that finds its
// rows by key ("id = ANY($2)"), with nested loops off as
// queueWithoutNestLoop has them, and bitmap and sequential scans off too:
// the table is then read by its key index, and hashed against the array.
// For a workspace the statistics take to be small (one created since the
// last ANALYZE), the planner otherwise hashes the array against a bitmap
// scan of the whole workspace, which grows with the workspace until the
// next ANALYZE (TestUnknownWorkspacePlansStayKeyLookups). The settings go
// back on after it, for the rest of the transaction: c360 runs with the
// planner's settings as PostgreSQL ships them.
func queueUpdateByKey(b *pgx.Batch, sql string, args ...any) *pgx.QueuedQuery {
	b.Queue(`SELECT set_config('enable_nestloop', 'off', true), set_config('enable_bitmapscan', 'off', true),
		set_config('enable_seqscan', 'off', true)`)
	q := b.Queue(sql, args...)
	b.Queue(`SELECT set_config('enable_nestloop', 'on', true), set_config('enable_bitmapscan', 'on', true),
		set_config('enable_seqscan', 'on', true)`)
	return q
}
