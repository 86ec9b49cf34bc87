package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// benchBaseline measures what PostgreSQL itself does on this machine, so
// c360's figures can be read as ratios: durable single-row inserts with
// pgbench, and COPY through pgx.
func benchBaseline(ctx context.Context, cfg config) (inserts, copyRate float64, err error) {
	pool, err := pgxpool.New(ctx, cfg.databaseURL)
	if err != nil {
		return 0, 0, err
	}
	defer pool.Close()
	if _, err := pool.Exec(ctx, `CREATE TABLE IF NOT EXISTS bench_baseline (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, k text NOT NULL, v jsonb NOT NULL, at timestamptz NOT NULL DEFAULT now())`); err != nil {
		return 0, 0, fmt.Errorf("create baseline table: %w", err)
	}
	defer pool.Exec(context.WithoutCancel(ctx), `DROP TABLE IF EXISTS bench_baseline`)

	d, err := readDurability(ctx, pool)
	if err != nil {
		return 0, 0, err
	}
	fmt.Printf("\n## PostgreSQL baseline (%s)\n", d)
	if pgbench := findPgbench(); pgbench != "" {
		script := filepath.Join(os.TempDir(), "c360-insert.sql")
		os.WriteFile(script, []byte("INSERT INTO bench_baseline (k, v) VALUES (md5(random()::text), '{\"a\":1}');\n"), 0o644)
		secs := max(1, int(cfg.duration.Seconds()))
		out, err := exec.CommandContext(ctx, pgbench, "-n", "-c", "32", "-j", "2", "-T", fmt.Sprint(secs), "-M", "prepared", "-f", script, cfg.databaseURL).CombinedOutput()
		if err != nil {
			return 0, 0, fmt.Errorf("pgbench: %v: %s", err, out)
		}
		m := regexp.MustCompile(`tps = ([0-9.]+)`).FindSubmatch(out)
		if m != nil {
			fmt.Sscan(string(m[1]), &inserts)
		}
		lat := regexp.MustCompile(`latency average = ([0-9.]+ ms)`).FindSubmatch(out)
		latency := ""
		if lat != nil {
			latency = string(lat[1])
		}
		fmt.Printf("pgbench single-row INSERT, 32 clients      %10.0f/s  latency avg %s\n", inserts, latency)
	} else {
		fmt.Println("pgbench not found; install postgresql-contrib or the server package")
	}

	const rows = 1_000_000
	t := time.Now()
	n, err := pool.CopyFrom(ctx, pgx.Identifier{"bench_baseline"}, []string{"k", "v"}, pgx.CopyFromSlice(rows, func(i int) ([]any, error) {
		return []any{fmt.Sprintf("key-%d", i), `{"a":1}`}, nil
	}))
	if err != nil {
		return inserts, 0, fmt.Errorf("copy: %w", err)
	}
	copyRate = float64(n) / time.Since(t).Seconds()
	fmt.Printf("COPY via pgx, 1 stream                      %10.0f rows/s\n", copyRate)
	return inserts, copyRate, nil
}

// durability is how the server commits, as a session of DATABASE_URL
// sees it: pgbench's and the baseline's sessions, and the server's unless
// its pool sets synchronous_commit itself (postgres.Open asks for on when
// the URL does not say).
type durability struct {
	version, fsync, synchronousCommit, fullPageWrites, walSyncMethod string
}

// querier is a pool or a connection.
type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// readDurability asks the server (SHOW, through current_setting).
func readDurability(ctx context.Context, q querier) (durability, error) {
	var d durability
	err := q.QueryRow(ctx, `SELECT current_setting('server_version'), current_setting('fsync'), current_setting('synchronous_commit'),
		current_setting('full_page_writes'), current_setting('wal_sync_method')`).
		Scan(&d.version, &d.fsync, &d.synchronousCommit, &d.fullPageWrites, &d.walSyncMethod)
	if err != nil {
		return d, fmt.Errorf("read the server's durability settings: %w", err)
	}
	return d, nil
}

func (d durability) String() string {
	return fmt.Sprintf("fsync %s, synchronous_commit %s, full_page_writes %s, wal_sync_method %s",
		d.fsync, d.synchronousCommit, d.fullPageWrites, d.walSyncMethod)
}

// notDurable names what makes a commit not durable: fsync off (nothing
// reaches the disk when it is said to) or synchronous_commit off (a
// commit is answered before its WAL is flushed). Either makes writes
// faster than any durable deployment: the ingest figures, pgbench's and
// the ratios to it would not be comparable. "" when neither is off.
func (d durability) notDurable() string {
	var off []string
	if d.fsync == "off" {
		off = append(off, "fsync off")
	}
	if d.synchronousCommit == "off" {
		off = append(off, "synchronous_commit off")
	}
	return strings.Join(off, " and ")
}

// checkDurability prints the server's settings in the header, and refuses
// a run on a server that does not make commits durable unless allowed,
// when it is one that measures (measures: not bench seed); allowed, or
// seeding, it warns.
func checkDurability(ctx context.Context, url string, measures, allow bool) error {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	d, err := readDurability(ctx, conn)
	if err != nil {
		return err
	}
	fmt.Printf("# postgres: %s; %s\n", d.version, d)
	off := d.notDurable()
	switch {
	case off == "":
		return nil
	case measures && !allow:
		return fmt.Errorf("the server runs with %s: commits are not durable, so its figures would not be comparable; "+
			"fix the server (or DATABASE_URL), or pass --allow-nondurable to measure anyway", off)
	}
	fmt.Printf("# WARNING: %s: COMMITS ARE NOT DURABLE; write figures are not those of a durable server\n", strings.ToUpper(off))
	return nil
}

func findPgbench() string {
	if p, err := exec.LookPath("pgbench"); err == nil {
		return p
	}
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/pgbench")
	if len(matches) > 0 {
		return matches[len(matches)-1]
	}
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		p := filepath.Join(strings.TrimSpace(string(out)), "pgbench")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return ""
}
