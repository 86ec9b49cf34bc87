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
// PostgreSQL caches for it is made without nested loops too; SET LOCAL ...
// TO DEFAULT gives what follows in the transaction the session's setting
// back. Both SETs are local to the transaction, or to the implicit
// transaction of a batch sent outside one. It returns the statement's
// QueuedQuery, to read its rows with.
func queueWithoutNestLoop(b *pgx.Batch, sql string, args ...any) *pgx.QueuedQuery {
	b.Queue(`SET LOCAL enable_nestloop = off`)
	q := b.Queue(sql, args...)
	b.Queue(`SET LOCAL enable_nestloop TO DEFAULT`)
	return q
}
