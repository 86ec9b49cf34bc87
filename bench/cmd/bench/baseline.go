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

	fmt.Printf("\n## PostgreSQL baseline (synchronous_commit on)\n")
	if pgbench := findPgbench(); pgbench != "" {
		script := filepath.Join(os.TempDir(), "c360-insert.sql")
		os.WriteFile(script, []byte("INSERT INTO bench_baseline (k, v) VALUES (md5(random()::text), '{\"a\":1}');\n"), 0o644)
		secs := int(cfg.duration.Seconds())
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
