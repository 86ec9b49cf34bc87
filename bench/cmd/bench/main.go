// Command bench runs c360's load generators against a real server process
// and a real PostgreSQL, and prints results for BENCHMARKS.md.
//
//	bench baseline                       PostgreSQL alone: pgbench inserts, COPY
//	bench seed    --customers N          COPY a data set into a new workspace: 10 events and
//	                                     2 messages per customer in all, 10% of the customers
//	                                     rich (25 events, a conversation of 12 messages), the
//	                                     others sharing the rest (--rich-*, --*-per-customer)
//	bench query   [--customers N] [--reuse] [--cpuprofile DIR]
//	                                     the customer-360 query: GraphQL vs hand-written SQL, on
//	                                     tables prewarmed into shared buffers (pg_prewarm); then
//	                                     its parts at one client ({ __typename }, the lookup alone);
//	                                     then open loop at --query-rate (80% of the one-client
//	                                     rate) with --query-senders, on which its p50/p99 target
//	                                     is judged; it asks for the rich customers, whose answers
//	                                     fill its pages. --customers is 1,000,000 unless given;
//	                                     --reuse takes the newest complete seed of the same shape,
//	                                     else seeds one
//	bench webhooks [--webhook-workers 1,8,32,64,128] [--phones N] [--cpuprofile DIR]
//	                                     signed single Twilio webhooks: acknowledged events/s, p50/p99
//	bench batch   [--batch-workers 4,16,32] [--users N] [--cpuprofile DIR]
//	                                     Segment /v1/batch, 100 events per request: events/s
//	bench fanout  [--subscribers 1000,10000] [--fanout-shared N]
//	                                     websocket subscribers: RSS each, ingest-to-delivery p50/p99,
//	                                     and delivery after the write's answer
//	bench all     [--customers N] [--reuse]
//	                                     everything, in order (make bench runs all --reuse)
//
// The header names the machine and the server's durability settings
// (fsync, synchronous_commit, full_page_writes, wal_sync_method); a run
// that measures refuses a server with fsync or synchronous_commit off
// unless --allow-nondurable is given.
//
// DATABASE_URL selects the database, which the tool migrates at start (make
// bench gives it one of its own, c360_bench); the server binary is bin/c360
// (make bench builds it). Every run is bounded in time and talks only to
// loopback. ^C or SIGTERM ends a run and stops the server it started; on
// Linux the server also gets SIGTERM when the tool dies otherwise (a
// panic, SIGKILL). A flag value no run can use is refused before anything
// starts.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"math"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/c360dev/c360/bench/seed"
	"github.com/c360dev/c360/postgres"
)

func main() {
	// SIGTERM too: a run ended by kill or a CI timeout stops its server
	// (the deferred srv.Stop) as one ended by ^C does. A panic skips the
	// defers: the server then gets SIGTERM from the kernel (serverCommand).
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

type config struct {
	databaseURL string
	binary      string
	customers   int
	duration    time.Duration
	workers     []int
	// workersSet is true when --workers was given: it then overrides the
	// levels of benchmarks that have their own (webhooks, batch).
	workersSet bool
	// reuse picks up the newest workspace an earlier run seeded to the end
	// in the same shape (--customers and the seed's flags) instead of
	// seeding again.
	reuse bool
	// shape is the data set of seed and query (seed.Options, from
	// --customers and the --rich-* and --*-per-customer flags).
	shape seed.Options
}

func run(ctx context.Context, args []string) error {
	cmd := "all"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	var cfg config
	fs.IntVar(&cfg.customers, "customers", 1_000_000, "customers to seed (the issue's 1M; the first seed of 1M takes a few minutes)")
	richPercent := fs.Int("rich-percent", defaultRichPercent, "seed: percent of customers with a full history (--rich-events, --rich-messages); query asks for them")
	richEvents := fs.Int("rich-events", defaultRichEvents, "seed: events of a rich customer (the query reads 20)")
	richMessages := fs.Int("rich-messages", defaultRichMessages, "seed: messages of a rich customer's conversation (the query reads 10)")
	eventsPer := fs.Int("events-per-customer", defaultEventsPer, "seed: events per customer in all; the others share what the rich leave")
	messagesPer := fs.Int("messages-per-customer", defaultMessagesPer, "seed: messages per customer in all; the others share what the rich leave")
	fs.DurationVar(&cfg.duration, "duration", 10*time.Second, "length of each load run")
	fs.StringVar(&cfg.binary, "binary", "bin/c360", "server binary")
	allowNondurable := fs.Bool("allow-nondurable", false, "measure even on a server with fsync or synchronous_commit off (a warning is printed)")
	fs.BoolVar(&cfg.reuse, "reuse", false, "query: reuse the newest workspace an earlier run seeded to the end with these --customers and seed flags, seeding one if none")
	workers := fs.String("workers", "1,4,16,64", "concurrency levels for rising-concurrency runs")
	fanout := fanoutFlags(fs)
	ingest := ingestFlags(fs)
	query := queryFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	// The flag package stops at the first word that is not a flag: a
	// command after the flags would be dropped without a word.
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected %q: the command comes first (bench query --reuse)", fs.Arg(0))
	}
	fs.Visit(func(f *flag.Flag) { cfg.workersSet = cfg.workersSet || f.Name == "workers" })
	var err error
	if cfg.workers, err = parseCounts("--workers", *workers); err != nil {
		return err
	}
	if *richPercent < 1 || *richPercent > 100 {
		return fmt.Errorf("--rich-percent: want 1 to 100, got %d", *richPercent)
	}
	if err := checkFlags(cfg, fanout, ingest); err != nil {
		return err
	}
	if err := query.check(); err != nil {
		return err
	}
	cfg.shape = seedShape(cfg.customers, *richPercent, *richEvents, *richMessages, *eventsPer, *messagesPer)
	if err := cfg.shape.Check(); err != nil {
		return err
	}
	cfg.databaseURL = os.Getenv("DATABASE_URL")
	if cfg.databaseURL == "" {
		return fmt.Errorf("DATABASE_URL is not set")
	}
	printMachine()
	if err := checkDurability(ctx, cfg.databaseURL, cmd != "seed", *allowNondurable); err != nil {
		return err
	}
	if err := migrate(ctx, cfg.databaseURL); err != nil {
		return err
	}
	switch cmd {
	case "seed":
		_, err := seedWorkspace(ctx, cfg)
		return err
	case "baseline":
		_, _, err := benchBaseline(ctx, cfg)
		return err
	case "query":
		return benchQuery(ctx, cfg, ingest.profileDir, query)
	case "webhooks":
		return benchWebhooks(ctx, cfg, ingest)
	case "batch":
		return benchBatch(ctx, cfg, ingest)
	case "fanout":
		return benchFanout(ctx, cfg, fanout)
	case "all":
		if _, _, err := benchBaseline(ctx, cfg); err != nil {
			return err
		}
		if err := benchQuery(ctx, cfg, ingest.profileDir, query); err != nil {
			return err
		}
		if err := benchWebhooks(ctx, cfg, ingest); err != nil {
			return err
		}
		if err := benchBatch(ctx, cfg, ingest); err != nil {
			return err
		}
		return benchFanout(ctx, cfg, fanout)
	}
	return fmt.Errorf("unknown command %q", cmd)
}

// The seed flags' defaults: seed.Skewed's shape.
const (
	defaultRichPercent  = 10
	defaultRichEvents   = 25
	defaultRichMessages = 12
	defaultEventsPer    = 10
	defaultMessagesPer  = 2
)

// seedShape is the data set of seed and query for n customers and the
// seed flags. At the flags' defaults it is seed.Skewed(n), whose floors
// give a few customers the totals their rich one needs (bench seed
// --customers 5: one rich customer of 25 events and 12 messages, where 5·2
// messages in all were too few); 1M customers get the same options as
// before those floors, so --reuse still finds a 1M seed made earlier.
// Other values are taken as given, and Options.Check refuses totals too
// small for the rich.
func seedShape(n, richPercent, richEvents, richMessages, eventsPer, messagesPer int) seed.Options {
	if richPercent == defaultRichPercent && richEvents == defaultRichEvents && richMessages == defaultRichMessages &&
		eventsPer == defaultEventsPer && messagesPer == defaultMessagesPer {
		return seed.Skewed(n)
	}
	return seed.Options{Customers: n, Rich: max(n*richPercent/100, 1),
		EventsPerCustomer: richEvents, MessagesPerConv: richMessages, Events: n * eventsPer, Messages: n * messagesPer}
}

// parseCounts reads a flag's comma-separated list of counts, each at
// least 1 (concurrency levels, subscribers).
func parseCounts(name, list string) ([]int, error) {
	var out []int
	for _, s := range strings.Split(list, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%s: bad value %q: want counts of at least 1, comma-separated", name, s)
		}
		out = append(out, n)
	}
	return out, nil
}

// checkFlags refuses, before any database or server is touched, the
// values the benchmarks would divide by, take a remainder or a random
// number below, or size a run with: --fanout-rate 0 divided time.Second
// by 0, --phones 0 took i%0 and --users 0 rng.IntN(0), each a panic in a
// worker, which skipped the deferred stop of the server.
func checkFlags(cfg config, fc *fanoutConfig, ic *ingestConfig) error {
	positive := func(name string, n int) error {
		if n < 1 {
			return fmt.Errorf("%s: want at least 1, got %d", name, n)
		}
		return nil
	}
	if cfg.duration <= 0 {
		return fmt.Errorf("--duration: want a positive length (10s), got %s", cfg.duration)
	}
	// The fan-out paces its writes with a ticker of time.Second/rate,
	// which must be at least 1 ns.
	if fc.rate < 1 || fc.rate > 1_000_000 {
		return fmt.Errorf("--fanout-rate: want 1 to 1000000 changes/s, got %d", fc.rate)
	}
	for _, c := range []struct {
		name string
		n    int
	}{{"--fanout-writes", fc.writes}, {"--phones", ic.phones}, {"--users", ic.users}, {"--webhook-senders", ic.webhookSenders}} {
		if err := positive(c.name, c.n); err != nil {
			return err
		}
	}
	switch {
	case fc.shared < 0:
		return fmt.Errorf("--fanout-shared: want 0 (one customer each) or more, got %d", fc.shared)
	case fc.idle < 0:
		return fmt.Errorf("--fanout-idle: want 0 or more, got %s", fc.idle)
	case ic.tenants < 0:
		return fmt.Errorf("--tenants: want 0 or more, got %d", ic.tenants)
	case !(ic.webhookRate >= 0) || math.IsInf(ic.webhookRate, 1):
		return fmt.Errorf("--webhook-rate: want 0 (no open-loop run) or a rate, got %v", ic.webhookRate)
	}
	for _, l := range []struct{ name, list string }{
		{"--subscribers", fc.subscribers}, {"--webhook-workers", ic.webhookWorkers}, {"--batch-workers", ic.batchWorkers},
	} {
		if _, err := parseCounts(l.name, l.list); err != nil {
			return err
		}
	}
	return nil
}

// migrate applies the server's pending migrations to the database, as
// internal/pgtest does for the tests': the tool creates workspaces and
// seeds before any server starts, so a fresh database must be migrated
// first. Applied migrations are logged on stderr, apart from the figures.
func migrate(ctx context.Context, url string) error {
	db, err := postgres.Open(ctx, url)
	if err != nil {
		return err
	}
	defer db.Close()
	m, err := db.NewMigrator()
	if err != nil {
		return err
	}
	defer m.Close()
	return m.Up(ctx, slog.New(slog.NewTextHandler(os.Stderr, nil)))
}
