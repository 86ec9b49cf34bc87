// Package seed fills a workspace with a realistic volume of customers,
// identities, events, conversations and messages using COPY, for the
// benchmarks. Every customer has one phone and one email. A share of them,
// the rich ones, have a full history: EventsPerCustomer events and one
// conversation of MessagesPerConv messages; the others share what the rich
// leave of the totals, as a real workspace has a few busy customers and
// many quiet ones. Skewed is the shape of `bench seed`: 1M customers make
// 10M events and 2M messages, and the customer-360 query of any of the
// 100k rich customers fills its pages (20 events, 10 messages).
package seed

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Options sizes the data set. With Rich, Events and Messages left zero
// every customer is rich: the uniform shape the tests seed.
type Options struct {
	Customers int
	// EventsPerCustomer and MessagesPerConv are a rich customer's events
	// and the messages of its one conversation.
	EventsPerCustomer int
	MessagesPerConv   int
	// Rich is how many customers are rich (0: all of them), spread evenly
	// over the indexes (RichCustomer).
	Rich int
	// Events and Messages are the totals (0: what the rich customers
	// have). The other customers share what the rich leave, as evenly as
	// whole numbers allow; one of them with messages has one conversation.
	Events, Messages int
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

// Skewed returns the shape of `bench seed` for n customers: 10% rich, with
// 25 events and a conversation of 12 messages each (more than the
// customer-360 query's pages of 20 and 10), and 10 events and 2 messages
// per customer in all, so 1M customers make 10M events and 2M messages.
// Fewer than ten customers have one rich one, and the totals it needs.
func Skewed(n int) Options {
	rich := max(n/10, 1)
	return Options{Customers: n, EventsPerCustomer: 25, MessagesPerConv: 12,
		Rich: rich, Events: max(10*n, 25*rich), Messages: max(2*n, 12*rich)}
}

// normalized fills in the defaults: all customers rich, totals those of
// the rich.
func (o Options) normalized() Options {
	if o.Rich == 0 {
		o.Rich = o.Customers
	}
	if o.Events == 0 {
		o.Events = o.Rich * o.EventsPerCustomer
	}
	if o.Messages == 0 {
		o.Messages = o.Rich * o.MessagesPerConv
	}
	return o
}

// Check says what is wrong with the options, if anything.
func (o Options) Check() error {
	o = o.normalized()
	switch {
	case o.Customers < 1:
		return fmt.Errorf("seed: want at least 1 customer, got %d", o.Customers)
	case o.EventsPerCustomer < 0 || o.MessagesPerConv < 0 || o.Events < 0 || o.Messages < 0:
		return fmt.Errorf("seed: negative events or messages")
	case o.Rich < 0 || o.Rich > o.Customers:
		return fmt.Errorf("seed: %d rich customers of %d", o.Rich, o.Customers)
	case o.Rich*o.EventsPerCustomer > o.Events:
		return fmt.Errorf("seed: %d rich customers with %d events each need %d events, more than the %d in all",
			o.Rich, o.EventsPerCustomer, o.Rich*o.EventsPerCustomer, o.Events)
	case o.Rich*o.MessagesPerConv > o.Messages:
		return fmt.Errorf("seed: %d rich customers with %d messages each need %d messages, more than the %d in all",
			o.Rich, o.MessagesPerConv, o.Rich*o.MessagesPerConv, o.Messages)
	case o.Rich == o.Customers && (o.Events != o.Rich*o.EventsPerCustomer || o.Messages != o.Rich*o.MessagesPerConv):
		return fmt.Errorf("seed: all %d customers are rich: the totals must be what they have", o.Customers)
	}
	return nil
}

// Totals returns the rows a seed of these options writes: events,
// conversations and messages.
func (o Options) Totals() (events, conversations, messages int) {
	o = o.normalized()
	conversations = o.Rich
	if rest := o.Customers - o.Rich; rest > 0 {
		// The others' messages are spread evenly, at most one more each
		// than another: min(rest, messages) of them have some.
		conversations += min(rest, o.Messages-o.Rich*o.MessagesPerConv)
	}
	return o.Events, conversations, o.Messages
}

// RichCustomers returns how many customers are rich.
func (o Options) RichCustomers() int { return o.normalized().Rich }

// RichCustomer returns the index of the k-th rich customer (0 ≤ k <
// RichCustomers()). The rich are spread evenly over the indexes, and so
// over the tables' pages and the customers' creation times.
func (o Options) RichCustomer(k int) int {
	o = o.normalized()
	return int(int64(k) * int64(o.Customers) / int64(o.Rich))
}

// richBefore counts the rich customers with an index below i: the k with
// k*Customers/Rich < i, that is k*Customers < i*Rich.
func (o Options) richBefore(i int) int {
	return int((int64(i)*int64(o.Rich) + int64(o.Customers) - 1) / int64(o.Customers))
}

// Shape returns the events of the i-th customer, whether it has a
// conversation, and that conversation's messages.
func (o Options) Shape(i int) (events int, conversation bool, messages int) {
	o = o.normalized()
	before := o.richBefore(i)
	if o.richBefore(i+1) > before {
		return o.EventsPerCustomer, true, o.MessagesPerConv
	}
	// The r-th of the rest customers gets its share of what the rich
	// leave: the difference of two floors, so the shares add up exactly.
	r, rest := int64(i-before), int64(o.Customers-o.Rich)
	share := func(total int) int {
		left := int64(total)
		return int(left*(r+1)/rest - left*r/rest)
	}
	events = share(o.Events - o.Rich*o.EventsPerCustomer)
	messages = share(o.Messages - o.Rich*o.MessagesPerConv)
	return events, messages > 0, messages
}

// searchIndexSQL makes the trigram index of customers' search text, as
// migration 00001 does; IF NOT EXISTS, because another seed may have made
// it meanwhile.
const searchIndexSQL = `CREATE INDEX IF NOT EXISTS customers_search_idx ON customers USING gin (search_text gin_trgm_ops)`

// rebuildShare is the least share of the customers table, once seeded,
// that a seed's customers must make for it to drop the search index and
// build it again after the load. The build reads every workspace's
// customers (about 7 s at a million): worth it for the query's million,
// not for a tenant's 200 beside them, which go in through the index.
const rebuildShare = 10 // percent

// dropsSearchIndex says whether a seed of n customers into a table of
// existing ones drops the search index: whether n is at least
// rebuildShare percent of the rows the table will hold.
func dropsSearchIndex(n, existing int64) bool {
	return n*100 >= (existing+n)*rebuildShare
}

// rebuildSearchIndex makes the search index again, trying twice: the
// database is left with the index, or with an error that says how to make
// it. The build may outlast the pool's statement timeout (postgres.Open's
// is 10 s; the build is about 7 s a million customers), so its transaction
// lifts that timeout for itself alone.
func rebuildSearchIndex(ctx context.Context, pool *pgxpool.Pool) error {
	build := func() error {
		return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `SET LOCAL statement_timeout = 0`); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, searchIndexSQL)
			return err
		})
	}
	first := build()
	if first == nil {
		return nil
	}
	again := build()
	if again == nil {
		return nil
	}
	return fmt.Errorf("rebuild search index, tried twice: %w (first try: %v); customers_search_idx is missing, "+
		"so customers(query:) reads every customer: make it with %s", again, first, searchIndexSQL)
}

// Phone returns the E.164 phone of the i-th seeded customer (0-based).
func Phone(i int) string { return "+1415" + strconv.Itoa(2000000+i) }

// Email returns the email of the i-th seeded customer.
func Email(i int) string { return "c" + strconv.Itoa(i) + "@bench.example" }

var eventNames = []string{"Product Viewed", "Product Added", "Checkout Started", "Order Completed", "Page Viewed"}

// Run seeds workspace ws. It runs as the pool's role and needs COPY rights on
// the tables; sequences are moved past the ids it writes. A seed of at
// least a tenth of the customers the table will hold drops the search
// index during the load and builds it again at the end, whether the seed
// ended well or not; a smaller one keeps it.
func Run(ctx context.Context, pool *pgxpool.Pool, ws int64, opt Options) (res *Result, err error) {
	if err := opt.Check(); err != nil {
		return nil, err
	}
	opt = opt.normalized()
	if opt.Log == nil {
		opt.Log = func(string, ...any) {}
	}
	start := time.Now()
	res = &Result{Customers: opt.Customers}
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

	// copyRows copies the rows of each customer in turn: count(c) of them
	// for customer c, made by row(c, j, i) for its j-th row and the
	// table's i-th.
	copyRows := func(table string, cols []string, count func(c int) int, row func(c, j, i int) []any) error {
		t := time.Now()
		src := &generator{customers: n, count: count, row: row}
		got, err := pool.CopyFrom(ctx, pgx.Identifier{table}, cols, src)
		if err != nil {
			return fmt.Errorf("copy %s: %w", table, err)
		}
		res.Rows += got
		opt.Log("  %-14s %10d rows in %6.1fs (%.0f rows/s)", table, got, time.Since(t).Seconds(), float64(got)/time.Since(t).Seconds())
		return nil
	}
	one := func(int) int { return 1 }
	events := func(c int) int { e, _, _ := opt.Shape(c); return e }
	conversations := func(c int) int {
		if _, conv, _ := opt.Shape(c); conv {
			return 1
		}
		return 0
	}
	messages := func(c int) int { _, _, m := opt.Shape(c); return m }
	traits := func(i int) string {
		return fmt.Sprintf(`{"name":"Customer %d","email":%q,"phone":%q,"plan":%q}`, i, Email(i), Phone(i), []string{"free", "pro", "team"}[i%3])
	}
	// A trigram index built once after a large load is far cheaper than
	// one maintained row by row during COPY. A small seed beside many
	// customers keeps it: the build would read them all for a few rows.
	var existing int64
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM customers`).Scan(&existing); err != nil {
		return nil, fmt.Errorf("count customers: %w", err)
	}
	if dropsSearchIndex(int64(n), existing) {
		if _, err := pool.Exec(ctx, `DROP INDEX IF EXISTS customers_search_idx`); err != nil {
			return nil, fmt.Errorf("drop search index: %w", err)
		}
		// The index serves every workspace's search (customers(query:)),
		// and no migration will make it again: a seed cut short by an
		// error or an interrupt puts it back all the same, on a context
		// the interrupt does not cancel. It is built last, when the seed
		// has ended either way.
		defer func() {
			if err != nil {
				opt.Log("  seed stopped (%v): rebuilding the search index", err)
			}
			t := time.Now()
			if rerr := rebuildSearchIndex(context.WithoutCancel(ctx), pool); rerr != nil {
				res, err = nil, errors.Join(err, rerr)
				return
			}
			opt.Log("  %-14s rebuilt in %.1fs", "search index", time.Since(t).Seconds())
			if res != nil {
				res.Elapsed = time.Since(start)
			}
		}()
	} else {
		opt.Log("  %-14s kept: %d customers go in beside %d", "search index", n, existing)
	}
	if err := copyRows("customers", []string{"workspace_id", "id", "traits", "version", "search_text", "created_at", "updated_at"}, one, func(c, _, _ int) []any {
		ts := now.Add(-time.Duration(n-c) * time.Second)
		e, _, m := opt.Shape(c)
		return []any{ws, c0 + int64(c), traits(c), int64(e + m),
			fmt.Sprintf("customer %d %s %s", c, Email(c), Phone(c)), ts, ts}
	}); err != nil {
		return nil, err
	}
	if err := copyRows("identities", []string{"workspace_id", "type", "value", "customer_id", "source", "first_seen", "last_seen"}, func(int) int { return 2 }, func(c, j, _ int) []any {
		typ, val := "phone", Phone(c)
		if j == 1 {
			typ, val = "email", Email(c)
		}
		return []any{ws, typ, val, c0 + int64(c), "seed", now, now}
	}); err != nil {
		return nil, err
	}
	if err := copyRows("events", []string{"workspace_id", "id", "customer_id", "type", "name", "properties", "identities", "source", "dedupe_key", "occurred_at", "received_at"}, events, func(c, j, i int) []any {
		ts := now.Add(-time.Duration(j) * time.Hour).Add(-time.Duration(c%3600) * time.Second)
		return []any{ws, e0 + int64(i), c0 + int64(c), "track", eventNames[i%len(eventNames)],
			fmt.Sprintf(`{"sku":"SKU-%d","price":%d}`, i%997, 5+i%200), `[{"type":"phone","value":"` + Phone(c) + `"}]`,
			"seed", "seed-" + strconv.FormatInt(e0+int64(i), 10), ts, ts}
	}); err != nil {
		return nil, err
	}
	// A customer's conversation has the id v0 + its index: the messages
	// below find it without a lookup, and the ids of customers without
	// one are simply skipped.
	if err := copyRows("conversations", []string{"workspace_id", "id", "customer_id", "channel", "status", "last_message_at", "last_inbound_at", "created_at"}, conversations, func(c, _, _ int) []any {
		ts := now.Add(-time.Duration(c%86400) * time.Second)
		return []any{ws, v0 + int64(c), c0 + int64(c), []string{"sms", "whatsapp"}[c%2], "open", ts, ts, ts.Add(-time.Hour)}
	}); err != nil {
		return nil, err
	}
	if err := copyRows("messages", []string{"workspace_id", "id", "conversation_id", "customer_id", "channel", "direction", "body", "status", "provider_id", "created_at"}, messages, func(c, j, i int) []any {
		ts := now.Add(-time.Duration(c%86400) * time.Second).Add(-time.Duration(j) * time.Minute)
		dir := []string{"inbound", "outbound"}[j%2]
		return []any{ws, m0 + int64(i), v0 + int64(c), c0 + int64(c), []string{"sms", "whatsapp"}[c%2], dir,
			"message " + strconv.Itoa(i), "delivered", "SMseed" + strconv.FormatInt(m0+int64(i), 10), ts}
	}); err != nil {
		return nil, err
	}
	for _, t := range []string{"customers", "events", "conversations", "messages"} {
		if _, err := pool.Exec(ctx, fmt.Sprintf(`SELECT setval(pg_get_serial_sequence('%s', 'id'), (SELECT max(id) FROM %s))`, t, t)); err != nil {
			return nil, fmt.Errorf("move %s sequence: %w", t, err)
		}
	}
	// ANALYZE samples every table the seed filled; like the index build it
	// may outlast the pool's statement timeout (a loaded host, tens of
	// millions of events), so it lifts that timeout for itself alone.
	if err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SET LOCAL statement_timeout = 0`); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `ANALYZE customers, identities, events, conversations, messages`)
		return err
	}); err != nil {
		return nil, fmt.Errorf("analyze: %w", err)
	}
	res.Elapsed = time.Since(start)
	return res, nil
}

// generator produces COPY rows on the fly, customer by customer, so
// seeding needs no memory per row.
type generator struct {
	customers int
	count     func(c int) int
	row       func(c, j, i int) []any
	// next is the customer after the current one c, whose j-th row of n
	// comes next; i counts the rows made.
	next, c, j, n, i int
	cur              []any
}

func (g *generator) Next() bool {
	for g.j >= g.n {
		if g.next >= g.customers {
			return false
		}
		g.c, g.j, g.n = g.next, 0, g.count(g.next)
		g.next++
	}
	g.cur = g.row(g.c, g.j, g.i)
	g.j++
	g.i++
	return true
}
func (g *generator) Values() ([]any, error) { return g.cur, nil }
func (g *generator) Err() error             { return nil }
