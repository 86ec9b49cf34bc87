// Package seed fills a workspace with a realistic volume of customers,
// identities, events, conversations and messages using COPY, for the
// benchmarks. The default shape per customer is one phone and one email,
// ten events, and one conversation with two messages: 1M customers make
// 10M events and 2M messages.
package seed

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Options sizes the data set.
type Options struct {
	Customers         int
	EventsPerCustomer int
	MessagesPerConv   int
	// Log receives progress lines.
	Log func(format string, args ...any)
}

// Result says what was written and how fast.
type Result struct {
	FirstCustomer int64
	Customers     int
	Rows          int64
	Elapsed       time.Duration
}

// Phone returns the E.164 phone of the i-th seeded customer (0-based).
func Phone(i int) string { return "+1415" + strconv.Itoa(2000000+i) }

// Email returns the email of the i-th seeded customer.
func Email(i int) string { return "c" + strconv.Itoa(i) + "@bench.example" }

var eventNames = []string{"Product Viewed", "Product Added", "Checkout Started", "Order Completed", "Page Viewed"}

// Run seeds workspace ws. It runs as the pool's role and needs COPY rights on
// the tables; sequences are moved past the ids it writes.
func Run(ctx context.Context, pool *pgxpool.Pool, ws int64, opt Options) (*Result, error) {
	if opt.Log == nil {
		opt.Log = func(string, ...any) {}
	}
	start := time.Now()
	res := &Result{Customers: opt.Customers}
	next := func(table string) (int64, error) {
		var id int64
		err := pool.QueryRow(ctx, `SELECT coalesce(max(id), 0) + 1 FROM `+table).Scan(&id)
		return id, err
	}
	c0, err := next("customers")
	if err != nil {
		return nil, fmt.Errorf("next customer id: %w", err)
	}
	e0, err := next("events")
	if err != nil {
		return nil, err
	}
	v0, err := next("conversations")
	if err != nil {
		return nil, err
	}
	m0, err := next("messages")
	if err != nil {
		return nil, err
	}
	res.FirstCustomer = c0
	now := time.Now().UTC()
	n := opt.Customers

	copyRows := func(table string, cols []string, count int, row func(i int) []any) error {
		t := time.Now()
		src := &generator{n: count, row: row}
		got, err := pool.CopyFrom(ctx, pgx.Identifier{table}, cols, src)
		if err != nil {
			return fmt.Errorf("copy %s: %w", table, err)
		}
		res.Rows += got
		opt.Log("  %-14s %10d rows in %6.1fs (%.0f rows/s)", table, got, time.Since(t).Seconds(), float64(got)/time.Since(t).Seconds())
		return nil
	}
	traits := func(i int) string {
		return fmt.Sprintf(`{"name":"Customer %d","email":%q,"phone":%q,"plan":%q}`, i, Email(i), Phone(i), []string{"free", "pro", "team"}[i%3])
	}
	// A trigram index built once after the load is far cheaper than one
	// maintained row by row during COPY.
	if _, err := pool.Exec(ctx, `DROP INDEX IF EXISTS customers_search_idx`); err != nil {
		return nil, fmt.Errorf("drop search index: %w", err)
	}
	if err := copyRows("customers", []string{"workspace_id", "id", "traits", "version", "search_text", "created_at", "updated_at"}, n, func(i int) []any {
		ts := now.Add(-time.Duration(n-i) * time.Second)
		return []any{ws, c0 + int64(i), traits(i), int64(opt.EventsPerCustomer + opt.MessagesPerConv),
			fmt.Sprintf("customer %d %s %s", i, Email(i), Phone(i)), ts, ts}
	}); err != nil {
		return nil, err
	}
	if err := copyRows("identities", []string{"workspace_id", "type", "value", "customer_id", "source", "first_seen", "last_seen"}, 2*n, func(i int) []any {
		c := i / 2
		typ, val := "phone", Phone(c)
		if i%2 == 1 {
			typ, val = "email", Email(c)
		}
		return []any{ws, typ, val, c0 + int64(c), "seed", now, now}
	}); err != nil {
		return nil, err
	}
	ne := opt.EventsPerCustomer
	if err := copyRows("events", []string{"workspace_id", "id", "customer_id", "type", "name", "properties", "identities", "source", "dedupe_key", "occurred_at", "received_at"}, n*ne, func(i int) []any {
		c := i / ne
		ts := now.Add(-time.Duration(i%ne) * time.Hour).Add(-time.Duration(c%3600) * time.Second)
		return []any{ws, e0 + int64(i), c0 + int64(c), "track", eventNames[i%len(eventNames)],
			fmt.Sprintf(`{"sku":"SKU-%d","price":%d}`, i%997, 5+i%200), `[{"type":"phone","value":"` + Phone(c) + `"}]`,
			"seed", "seed-" + strconv.FormatInt(e0+int64(i), 10), ts, ts}
	}); err != nil {
		return nil, err
	}
	if err := copyRows("conversations", []string{"workspace_id", "id", "customer_id", "channel", "status", "last_message_at", "last_inbound_at", "created_at"}, n, func(i int) []any {
		ts := now.Add(-time.Duration(i%86400) * time.Second)
		return []any{ws, v0 + int64(i), c0 + int64(i), []string{"sms", "whatsapp"}[i%2], "open", ts, ts, ts.Add(-time.Hour)}
	}); err != nil {
		return nil, err
	}
	nm := opt.MessagesPerConv
	if err := copyRows("messages", []string{"workspace_id", "id", "conversation_id", "customer_id", "channel", "direction", "body", "status", "provider_id", "created_at"}, n*nm, func(i int) []any {
		c := i / nm
		ts := now.Add(-time.Duration(c%86400) * time.Second).Add(-time.Duration(i%nm) * time.Minute)
		dir := []string{"inbound", "outbound"}[i%2]
		return []any{ws, m0 + int64(i), v0 + int64(c), c0 + int64(c), []string{"sms", "whatsapp"}[c%2], dir,
			"message " + strconv.Itoa(i), "delivered", "SMseed" + strconv.FormatInt(m0+int64(i), 10), ts}
	}); err != nil {
		return nil, err
	}
	t := time.Now()
	if _, err := pool.Exec(ctx, `CREATE INDEX customers_search_idx ON customers USING gin (search_text gin_trgm_ops)`); err != nil {
		return nil, fmt.Errorf("rebuild search index: %w", err)
	}
	opt.Log("  %-14s rebuilt in %.1fs", "search index", time.Since(t).Seconds())
	for _, t := range []string{"customers", "events", "conversations", "messages"} {
		if _, err := pool.Exec(ctx, fmt.Sprintf(`SELECT setval(pg_get_serial_sequence('%s', 'id'), (SELECT max(id) FROM %s))`, t, t)); err != nil {
			return nil, fmt.Errorf("move %s sequence: %w", t, err)
		}
	}
	if _, err := pool.Exec(ctx, `ANALYZE customers, identities, events, conversations, messages`); err != nil {
		return nil, fmt.Errorf("analyze: %w", err)
	}
	res.Elapsed = time.Since(start)
	return res, nil
}

// generator produces COPY rows on the fly, so seeding needs no memory per row.
type generator struct {
	n, i int
	row  func(i int) []any
	cur  []any
}

func (g *generator) Next() bool {
	if g.i >= g.n {
		return false
	}
	g.cur = g.row(g.i)
	g.i++
	return true
}
func (g *generator) Values() ([]any, error) { return g.cur, nil }
func (g *generator) Err() error             { return nil }
