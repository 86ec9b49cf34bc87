package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/bench/seed"
	"github.com/c360dev/c360/postgres"
)

// printMachine prints what the numbers were measured on.
func printMachine() {
	model := ""
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		s := bufio.NewScanner(f)
		for s.Scan() {
			if k, v, ok := strings.Cut(s.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	fmt.Printf("# machine: %d CPUs (%s), %s/%s, %s\n# date: %s\n", runtime.NumCPU(), model, runtime.GOOS, runtime.GOARCH,
		runtime.Version(), time.Now().UTC().Format(time.RFC3339))
}

// bench is a seeded workspace and its keys.
type bench struct {
	ws        int64
	slug      string
	apiKey    string
	writeKey  string
	secret    string
	customers int
	// shape is the workspace's seed: query asks for its rich customers.
	shape seed.Options
}

// richPhone returns the phone of a random rich customer of b: the
// customer-360 query of one fills every page it reads.
func (b *bench) richPhone() string {
	return seed.Phone(b.shape.RichCustomer(rand.IntN(b.shape.RichCustomers())))
}

// seedsTableSQL makes the table of the query workspaces seeded to the end,
// with their shape. A row is written only once its seed is complete, so
// --reuse, which picks among them only, never measures a seed cut short,
// nor another benchmark's workspace (bench-tenant-*, bench-wh-*,
// bench-batch-*), nor a seed of another size or shape.
const seedsTableSQL = `CREATE TABLE IF NOT EXISTS bench_seeds (
	workspace_id  bigint PRIMARY KEY REFERENCES workspaces (id) ON DELETE CASCADE,
	customers     integer NOT NULL,
	rich          integer NOT NULL,
	rich_events   integer NOT NULL,
	rich_messages integer NOT NULL,
	events        bigint NOT NULL,
	messages      bigint NOT NULL,
	seconds       double precision NOT NULL,
	seeded_at     timestamptz NOT NULL DEFAULT now())`

// seedProgress prints the seed's progress lines (tests watch them).
var seedProgress = func(format string, args ...any) { fmt.Printf(format+"\n", args...) }

// openSeeding opens a store for seeding, whose statements never time out:
// COPY of millions of rows, a search index built over every workspace's
// customers, ANALYZE or a count of the customers beside millions of rows
// outlast postgres.Open's statement timeout (10 s), or the URL's.
func openSeeding(ctx context.Context, url string) (*postgres.DB, error) {
	return postgres.Open(ctx, url, func(c *pgxpool.Config) {
		c.ConnConfig.RuntimeParams["statement_timeout"] = "0"
	})
}

// seedWorkspace seeds a new query workspace (bench-query-*) in cfg.shape,
// or, with --reuse, finds one seeded before, seeding one only when there
// is none: make bench seeds its million customers once.
func seedWorkspace(ctx context.Context, cfg config) (*bench, error) {
	db, err := openSeeding(ctx, cfg.databaseURL)
	if err != nil {
		return nil, err
	}
	defer db.Close()
	if _, err := db.Pool.Exec(ctx, seedsTableSQL); err != nil {
		return nil, fmt.Errorf("create bench_seeds: %w", err)
	}
	shape := cfg.shape
	if cfg.reuse {
		b, err := reuseWorkspace(ctx, db, shape)
		if b != nil || err != nil {
			return b, err
		}
		fmt.Printf("\n## --reuse: no workspace seeded to the end in this shape; seeding one\n")
	}
	// Nanoseconds: two seeds in one second (a test's, a script's) do not collide.
	slug := fmt.Sprintf("bench-query-%d", time.Now().UnixNano())
	creds, err := db.CreateWorkspace(ctx, slug, "benchmark")
	if err != nil {
		return nil, err
	}
	events, conversations, messages := shape.Totals()
	fmt.Printf("\n## seed: %d customers (%d rich: %d events, a conversation of %d messages), %d events, %d conversations, %d messages into workspace %s\n",
		shape.Customers, shape.RichCustomers(), shape.EventsPerCustomer, shape.MessagesPerConv, events, conversations, messages, slug)
	shape.Log = seedProgress
	res, err := seed.Run(ctx, db.Pool, creds.ID, shape)
	if err != nil {
		return nil, err
	}
	if _, err := db.Pool.Exec(ctx, `INSERT INTO bench_seeds (workspace_id, customers, rich, rich_events, rich_messages, events, messages, seconds)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`, creds.ID, shape.Customers, shape.RichCustomers(), shape.EventsPerCustomer,
		shape.MessagesPerConv, events, messages, res.Elapsed.Seconds()); err != nil {
		return nil, fmt.Errorf("record the seed: %w", err)
	}
	fmt.Printf("  total %d rows in %.1fs (%.0f rows/s)\n", res.Rows, res.Elapsed.Seconds(), float64(res.Rows)/res.Elapsed.Seconds())
	return &bench{ws: creds.ID, slug: slug, apiKey: creds.APIKey, writeKey: creds.WriteKey, secret: creds.WebhookSecret,
		customers: shape.Customers, shape: cfg.shape}, nil
}

// reuseWorkspace finds the newest workspace seeded to the end in shape
// (bench_seeds) and issues it a new admin key (keys are stored hashed, so
// the seeding run's key cannot be read back); nil when there is none. Only
// the query benchmark needs nothing but that key.
func reuseWorkspace(ctx context.Context, db *postgres.DB, shape seed.Options) (*bench, error) {
	events, _, messages := shape.Totals()
	var (
		ws      int64
		slug    string
		seconds float64
	)
	err := db.Pool.QueryRow(ctx, `SELECT w.id, w.slug, s.seconds FROM bench_seeds s JOIN workspaces w ON w.id = s.workspace_id
		WHERE s.customers = $1 AND s.rich = $2 AND s.rich_events = $3 AND s.rich_messages = $4 AND s.events = $5 AND s.messages = $6
		ORDER BY s.seeded_at DESC, w.id DESC LIMIT 1`, shape.Customers, shape.RichCustomers(), shape.EventsPerCustomer,
		shape.MessagesPerConv, events, messages).Scan(&ws, &slug, &seconds)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	} else if err != nil {
		return nil, fmt.Errorf("--reuse: %w", err)
	}
	key, _, err := db.IssueAPIKey(ctx, ws, c360.RoleAdmin, nil)
	if err != nil {
		return nil, err
	}
	fmt.Printf("\n## reusing workspace %s (%d customers, seeded in %.0fs)\n", slug, shape.Customers, seconds)
	return &bench{ws: ws, slug: slug, apiKey: key, customers: shape.Customers, shape: shape}, nil
}

// serverProc is a running c360 serve process.
type serverProc struct {
	cmd *exec.Cmd
	URL string
}

// startServer runs the server binary on a free loopback port and waits
// until it is ready.
func startServer(ctx context.Context, cfg config, extraEnv ...string) (*serverProc, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := ln.Addr().String()
	ln.Close()
	cmd := serverCommand(cfg.binary, "serve")
	cmd.Env = append(os.Environ(), "DATABASE_URL="+cfg.databaseURL, "C360_ADDR="+addr, "C360_PUBLIC_URL=http://"+addr)
	cmd.Env = append(cmd.Env, extraEnv...)
	cmd.Stdout, cmd.Stderr = nil, nil
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", cfg.binary, err)
	}
	p := &serverProc{cmd: cmd, URL: "http://" + addr}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(p.URL + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return p, nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	p.Stop()
	return nil, fmt.Errorf("server did not become ready")
}

// serverCommand is the command that runs a server: it gets SIGTERM when
// this process dies (serverProcAttr, on Linux).
func serverCommand(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	cmd.SysProcAttr = serverProcAttr()
	return cmd
}

// Stop ends the server gracefully.
func (p *serverProc) Stop() {
	p.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		p.cmd.Process.Kill()
		<-done
	}
}

// RSS returns the server's resident memory in bytes.
func (p *serverProc) RSS() int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			var kb int64
			fmt.Sscan(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), &kb)
			return kb * 1024
		}
	}
	return 0
}

// gqlPost sends a GraphQL request with key and returns the answer, or an
// error for a status other than 200 or an answer with errors.
func gqlPost(ctx context.Context, client *http.Client, base, key string, body any) ([]byte, error) {
	b, err := json.Marshal(body)
	if err != nil {
		return nil, err
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+"/graphql", bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK || bytes.Contains(raw, []byte(`"errors"`)) {
		return raw, fmt.Errorf("status %d: %.200s", resp.StatusCode, raw)
	}
	return raw, nil
}
