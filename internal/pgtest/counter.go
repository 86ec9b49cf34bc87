package pgtest

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// StatementCounter counts the SQL statements a pool sends, whether alone or
// in a pipelined batch, and the round trips they took (a statement alone,
// or a batch). The set_config statements that scope a batch to a
// workspace (row-level security) are not counted as statements: they travel
// with the statement they scope, in the same round trip. A statement that
// reads a table and sets a setting as it goes (FindProfile's lookup) counts.
type StatementCounter struct {
	n     atomic.Int64
	trips atomic.Int64
	mu    sync.Mutex
	sql   []string
}

// Install returns a postgres.Option-compatible function that installs c.
func (c *StatementCounter) Install(cfg *pgxpool.Config) { cfg.ConnConfig.Tracer = c }

func (c *StatementCounter) record(sql string) {
	s := strings.Join(strings.Fields(sql), " ")
	scoping := strings.HasPrefix(s, "SELECT set_config('c360.") && !strings.Contains(s, " FROM ")
	if scoping || strings.HasPrefix(s, "BEGIN; SELECT set_config") {
		return
	}
	c.n.Add(1)
	c.mu.Lock()
	c.sql = append(c.sql, s)
	c.mu.Unlock()
}

// TraceQueryStart implements pgx.QueryTracer.
func (c *StatementCounter) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	c.trips.Add(1)
	c.record(d.SQL)
	return ctx
}

// TraceQueryEnd implements pgx.QueryTracer.
func (c *StatementCounter) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// TraceBatchStart implements pgx.BatchTracer.
func (c *StatementCounter) TraceBatchStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceBatchStartData) context.Context {
	c.trips.Add(1)
	return ctx
}

// TraceBatchQuery implements pgx.BatchTracer: each query of a batch counts.
func (c *StatementCounter) TraceBatchQuery(_ context.Context, _ *pgx.Conn, d pgx.TraceBatchQueryData) {
	c.record(d.SQL)
}

// TraceBatchEnd implements pgx.BatchTracer.
func (c *StatementCounter) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData) {}

// Count returns the statements counted since the last Reset.
func (c *StatementCounter) Count() int64 { return c.n.Load() }

// RoundTrips returns the round trips counted since the last Reset.
func (c *StatementCounter) RoundTrips() int64 { return c.trips.Load() }

// Reset starts counting again.
func (c *StatementCounter) Reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n.Store(0)
	c.trips.Store(0)
	c.sql = nil
}

// Statements lists the statements counted since the last Reset, for
// failure messages.
func (c *StatementCounter) Statements() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var b strings.Builder
	for i, s := range c.sql {
		if len(s) > 160 {
			s = s[:160] + "…"
		}
		fmt.Fprintf(&b, "  %d: %s\n", i+1, s)
	}
	return b.String()
}
