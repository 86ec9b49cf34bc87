package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/c360dev/c360/bench/load"
)

// query360 is what a console asks when a call comes in: the profile, its
// identities, the last 20 events, and the conversations with their last 10
// messages.
const query360 = `query($phone: String!) { customerByIdentity(type: "phone", value: $phone) {
  id traits version
  identities { type value }
  events(first: 20) { edges { node { id type name properties occurredAt } } }
  conversations(first: 5) { edges { node { id channel status lastMessageAt
    messages(first: 10) { edges { node { id direction body status createdAt } } } } } }
} }`

func benchQuery(ctx context.Context, cfg config, profileDir string) error {
	b, err := seedWorkspace(ctx, cfg)
	if err != nil {
		return err
	}
	env, pprofAddr, err := pprofEnv(profileDir)
	if err != nil {
		return err
	}
	srv, err := startServer(ctx, cfg, env...)
	if err != nil {
		return err
	}
	defer srv.Stop()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256}}
	// post sends query with the phone of a random rich customer, and
	// checks that the answer has no error and holds want.
	post := func(ctx context.Context, query, want string) error {
		raw, err := gqlPost(ctx, client, srv.URL, b.apiKey, map[string]any{"query": query,
			"variables": map[string]any{"phone": b.richPhone()}})
		if err == nil && !bytes.Contains(raw, []byte(want)) {
			err = fmt.Errorf("no %s in the answer: %.200s", want, raw)
		}
		return err
	}
	gql := func(ctx context.Context, w, seq int) error { return post(ctx, query360, `"events"`) }
	pool, err := pgxpool.New(ctx, cfg.databaseURL)
	if err != nil {
		return err
	}
	defer pool.Close()
	sql := func(ctx context.Context, w, seq int) error {
		return raw360(ctx, pool, b.ws, b.richPhone())
	}

	prewarm(ctx, pool)
	fmt.Printf("\n## customer-360 query by phone over %d customers, asking for the %d rich ones\n", b.customers, b.shape.RichCustomers())
	for i, workers := range cfg.workers {
		// Warm both paths so the runs compare steady states.
		load.Run(ctx, "warm-up", workers, time.Second, 0, gql)
		g := runProfiled(ctx, i == len(cfg.workers)-1, pprofAddr, profileDir, "graphql customer-360", workers, cfg.duration, gql)
		s := load.Run(ctx, "raw SQL (pgx) customer-360", workers, cfg.duration, 0, sql)
		fmt.Println(g)
		fmt.Println(s)
		fmt.Printf("  ratio graphql/raw = %.0f%%\n", 100*g.PerSecond()/s.PerSecond())
	}
	// The same server with less of the query, one client: what a request
	// costs with no field at all, and with the lookup alone, against the
	// whole customer-360 above (BENCHMARKS.md, "Where the query's time goes").
	fmt.Println("\n## parts of the customer-360, one client")
	for _, part := range []struct{ name, query, want string }{
		{"graphql { __typename }", `{ __typename }`, `"Query"`},
		{"graphql lookup { id }", `query($phone: String!) { customerByIdentity(type: "phone", value: $phone) { id } }`, `"id"`},
		{"graphql customer-360", query360, `"events"`},
	} {
		op := func(ctx context.Context, w, seq int) error { return post(ctx, part.query, part.want) }
		load.Run(ctx, "warm-up", 1, time.Second, 0, op)
		fmt.Println(load.Run(ctx, part.name, 1, cfg.duration/2, 0, op))
	}
	return nil
}

// raw360 reads the same data as query360 with hand-written SQL: the
// customer, then one pipelined batch for identities, events and the
// conversations with their messages.
func raw360(ctx context.Context, pool *pgxpool.Pool, ws int64, phone string) error {
	var id int64
	var traits map[string]any
	var version int64
	err := pool.QueryRow(ctx, `SELECT c.id, c.traits, c.version FROM identities i
		JOIN customers c ON c.workspace_id = i.workspace_id AND c.id = i.customer_id
		WHERE i.workspace_id = $1 AND i.type = 'phone' AND i.value = $2`, ws, phone).Scan(&id, &traits, &version)
	if err != nil {
		return fmt.Errorf("customer: %w", err)
	}
	batch := &pgx.Batch{}
	batch.Queue(`SELECT type, value FROM identities WHERE workspace_id = $1 AND customer_id = $2`, ws, id)
	batch.Queue(`SELECT id, type, name, properties, occurred_at FROM events WHERE workspace_id = $1 AND customer_id = $2
		ORDER BY occurred_at DESC, id DESC LIMIT 20`, ws, id)
	batch.Queue(`SELECT c.id, c.channel, c.status, c.last_message_at, m.id, m.direction, m.body, m.status, m.created_at
		FROM (SELECT * FROM conversations WHERE workspace_id = $1 AND customer_id = $2
		      ORDER BY coalesce(last_message_at, created_at) DESC, id DESC LIMIT 5) c
		CROSS JOIN LATERAL (SELECT * FROM messages m WHERE m.workspace_id = $1 AND m.conversation_id = c.id
		      ORDER BY m.created_at DESC, m.id DESC LIMIT 10) m`, ws, id)
	br := pool.SendBatch(ctx, batch)
	defer br.Close()
	for i := 0; i < 3; i++ {
		rows, err := br.Query()
		if err != nil {
			return err
		}
		n := 0
		for rows.Next() {
			if _, err := rows.Values(); err != nil {
				rows.Close()
				return err
			}
			n++
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		if i == 1 && n == 0 {
			return fmt.Errorf("no events for customer %d", id)
		}
	}
	return nil
}

// profileTables are the tables the customer-360 reads.
var profileTables = []string{"customers", "identities", "consents", "events", "conversations", "messages"}

// prewarm loads the tables the customer-360 reads, with their indexes, into
// PostgreSQL's shared buffers (pg_prewarm), so that both paths are measured
// on the steady state of a database sized for its data rather than on
// whatever the OS page cache kept; a VM may reclaim that cache
// proactively. Where pg_prewarm is missing, the run goes on cold and says so.
func prewarm(ctx context.Context, pool *pgxpool.Pool) {
	start := time.Now()
	var blocks int64
	err := pool.QueryRow(ctx, `SELECT 1 FROM pg_available_extensions WHERE name = 'pg_prewarm'`).Scan(new(int))
	if err == nil {
		_, err = pool.Exec(ctx, `CREATE EXTENSION IF NOT EXISTS pg_prewarm`)
	}
	if err == nil {
		err = pool.QueryRow(ctx, `SELECT coalesce(sum(pg_prewarm(c.oid)), 0) FROM pg_class c
			WHERE c.oid = ANY($1::regclass[])
			   OR c.oid IN (SELECT indexrelid FROM pg_index WHERE indrelid = ANY($1::regclass[]))`, profileTables).Scan(&blocks)
	}
	if err != nil {
		fmt.Printf("  prewarm: skipped (%v): the run reads through a cold cache\n", err)
		return
	}
	fmt.Printf("  prewarm: %d MiB into shared buffers in %s\n", blocks*8/1024, time.Since(start).Round(time.Second))
}
