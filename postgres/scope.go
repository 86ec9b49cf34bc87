package postgres

import (
	"context"
	"strconv"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Every tenant read and write runs on the app pool, as the role c360_app,
// inside a transaction that has set the workspace it acts for (migration
// 00006). Row-level security then holds even if a query forgets its
// workspace_id filter; the filters stay, and keep the indexes in use.

// appRole is the non-owner role the app pool runs as.
const appRole = "c360_app"

const setWorkspaceSQL = `SELECT set_config('c360.workspace_id', $1, true)`

// querier is what store methods read and write through.
type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// scoped runs single statements for one workspace. Each call is one round
// trip: a pipelined batch of set_config and the statement, which share the
// batch's implicit transaction, so the setting ends with the statement.
type scoped struct {
	pool *pgxpool.Pool
	ws   string
}

var _ querier = scoped{}

// as returns a querier for workspace ws.
func (db *DB) as(ws int64) scoped { return scoped{pool: db.app, ws: strconv.FormatInt(ws, 10)} }

func (s scoped) send(ctx context.Context, sql string, args []any) pgx.BatchResults {
	b := &pgx.Batch{}
	b.Queue(setWorkspaceSQL, s.ws)
	b.Queue(sql, args...)
	return s.pool.SendBatch(ctx, b)
}

// Query runs a statement that returns rows; closing the rows ends the batch.
func (s scoped) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	br := s.send(ctx, sql, args)
	if _, err := br.Exec(); err != nil {
		br.Close()
		return nil, err
	}
	rows, err := br.Query()
	if err != nil {
		br.Close()
		return nil, err
	}
	return &scopedRows{Rows: rows, br: br}, nil
}

// QueryRow runs a statement that returns at most one row.
func (s scoped) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	rows, err := s.Query(ctx, sql, args...)
	return &scopedRow{rows: rows, err: err}
}

// Exec runs a statement that returns no rows.
func (s scoped) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	br := s.send(ctx, sql, args)
	defer br.Close()
	if _, err := br.Exec(); err != nil {
		return pgconn.CommandTag{}, err
	}
	return br.Exec()
}

type scopedRows struct {
	pgx.Rows
	br pgx.BatchResults
}

func (r *scopedRows) Close() {
	r.Rows.Close()
	r.br.Close()
}

type scopedRow struct {
	rows pgx.Rows
	err  error
}

func (r *scopedRow) Scan(dest ...any) error {
	if r.err != nil {
		return r.err
	}
	defer r.rows.Close()
	if !r.rows.Next() {
		if err := r.rows.Err(); err != nil {
			return err
		}
		return pgx.ErrNoRows
	}
	if err := r.rows.Scan(dest...); err != nil {
		return err
	}
	r.rows.Close()
	return r.rows.Err()
}

// beginSQL opens a transaction for workspace ws in the same round trip
// (simple protocol; ws is a number, so formatting it is safe).
func beginSQL(ws int64) string {
	return "BEGIN; SELECT set_config('c360.workspace_id', '" + strconv.FormatInt(ws, 10) + "', true)"
}

// byPrefix returns a querier whose statements may read the API key with
// this public prefix (the by_prefix policy), before its workspace is known.
func (db *DB) byPrefix(prefix string) keyScope { return keyScope{pool: db.app, prefix: prefix} }

type keyScope struct {
	pool   *pgxpool.Pool
	prefix string
}

func (s keyScope) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	b := &pgx.Batch{}
	b.Queue(`SELECT set_config('c360.key_prefix', $1, true)`, s.prefix)
	b.Queue(sql, args...)
	br := s.pool.SendBatch(ctx, b)
	if _, err := br.Exec(); err != nil {
		br.Close()
		return &scopedRow{err: err}
	}
	rows, err := br.Query()
	if err != nil {
		br.Close()
		return &scopedRow{err: err}
	}
	return &scopedRow{rows: &scopedRows{Rows: rows, br: br}}
}
