// Command c360 runs the c360 customer-360 API and administers it: serve,
// migrate, workspace and apikey.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/c360dev/c360"
)

func main() {
	if os.Getenv("GOGC") == "" {
		// The heap is small and short-lived (a request's rows and JSON):
		// collecting at 200% growth instead of 100% halves GC work for a
		// few more megabytes. GOGC, when set, wins.
		debug.SetGCPercent(200)
	}
	// The first signal starts the graceful shutdown; a second kills the
	// process, as without a handler: an operator's second Ctrl-C, or an
	// orchestrator's, ends C360_SHUTDOWN_DELAY or a shutdown waiting on
	// its requests at once. The default handling is back before the
	// context ends, so before anything the shutdown does (/readyz
	// answering 503) can be seen: a second signal sent on seeing it is
	// never swallowed (TestSecondSignalKillsServe failed on that race
	// under load).
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-sigs
		signal.Reset(syscall.SIGINT, syscall.SIGTERM)
		cancel()
	}()
	m := NewMain(os.Stdout, os.Stderr, os.Getenv)
	if err := m.Run(ctx, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "c360:", errorText(err))
		os.Exit(exitCode(err))
	}
}

// errorText is what a command prints for err: the message of a domain
// error, else the error's text. A database that could not be reached is
// named with pgx's reason (user, database, host:port and cause, such as
// "connection refused" or a failed authentication; never the password):
// the domain message alone ("the database is unavailable; retry") leaves
// the operator to guess which setting is wrong.
func errorText(err error) string {
	msg := c360.ErrorMessageOrText(err)
	var ce *pgconn.ConnectError
	if errors.As(err, &ce) && !strings.Contains(msg, ce.Error()) {
		msg += ": " + ce.Error()
	}
	return msg
}

func exitCode(err error) int {
	if _, ok := err.(usageError); ok {
		return 2
	}
	return 1
}

// usageError is a mistake in the command line.
type usageError string

func (e usageError) Error() string { return string(e) }

const usage = `c360 — customer-360 API

Usage:
  c360 serve [--dev] [--no-migrate]
  c360 migrate up|down|status
  c360 workspace create --slug SLUG [--name NAME] [--json]
  c360 workspace update --slug SLUG [--twilio-account-sid SID] [--twilio-auth-token TOKEN|-]
                        [--twilio-sms-from NUMBER] [--twilio-whatsapp-from NUMBER]
                        [--twilio-messaging-service-sid SID]
                        [--whatsapp-app-secret S|-] [--whatsapp-verify-token T|-]
                        [--rotate-webhook-secret [--grace DURATION]] [--json]
  c360 workspace rules --slug SLUG [--limit TYPE=N ...] [--default-limit N]
                       [--priority t1,t2,...] [--blocked v1,v2,...] [--json]
  c360 apikey create --workspace SLUG --role admin|agent|assistant|write|client [--scopes pii,...] [--json]
  c360 apikey revoke --workspace SLUG --prefix PREFIX [--json]
  c360 apikey list --workspace SLUG [--json]
  c360 deadletter list --workspace SLUG [--pending] [--limit N] [--json]
  c360 deadletter replay --workspace SLUG --id ID [--json]
  c360 mcp --url URL    MCP over stdin/stdout for desktop assistants, bridged to the c360 server
                        at URL (https://c360.example.com/mcp) with C360_API_KEY; no database access
  c360 mcp              the same, opening DATABASE_URL itself: for trusted operator hosts only,
                        since whoever can read its configuration holds the database

Environment:
  DATABASE_URL          PostgreSQL connection URL (required by every command but c360 mcp --url)
  C360_ADDR             listen address (default :8080)
  C360_PUBLIC_URL       external base URL providers call (default http://localhost:<C360_ADDR's port>)
  C360_DEFAULT_REGION   region for national phone numbers (default US)
  C360_TWILIO_API_URL   override of Twilio's REST base URL
  C360_DB_MAX_CONNS     connection pool size (default 16)
  C360_API_KEY          c360 mcp: the API key every tool call acts with
  C360_MCP_URL          c360 mcp: the server's MCP endpoint to bridge to (as --url)
  C360_SHUTDOWN_TIMEOUT graceful shutdown deadline, cleanups included (default 25s)
  C360_SHUTDOWN_DELAY   on SIGTERM, keep serving this long, /readyz answering 503, before the
                        graceful shutdown: a load balancer's endpoint removal time (default 0s, at most 1m)
  C360_BODY_READ_TIMEOUT
                        longest a request's body may take to arrive; slower: 408 (default 30s)
  C360_INGEST_WORKERS   group-commit workers (default 2)
  C360_INGEST_QUEUE     ingest requests waiting for a group; past it, 503 + Retry-After (default 2048)
  C360_ALLOWED_ORIGINS  browser origins allowed to open websockets, comma-separated, or *
                        (default: same-origin pages and non-browser clients only)
  C360_WS_INIT_TIMEOUT  time a websocket may take to send connection_init (default 10s)
  C360_WS_PING_INTERVAL websocket ping interval (default 25s)
  C360_SUBSCRIBER_QUEUE changes queued per subscriber before it is closed as slow (default 64)
  C360_NOTIFY_INTERVAL  longest wait before telling other replicas of changes (default 5ms)
  C360_RESYNC_INTERVAL  how often every followed change feed is read again, for a lost notification (default 5s; off: never)
  C360_AUDIT_READS      whose reads are in the audit log before their answer leaves, the answer
                        refused if they cannot be: assistant (default), all, or async (none)
  C360_METRICS_ADDR     serve /metrics on this address instead of C360_ADDR (default: on C360_ADDR, unauthenticated)
  C360_PPROF_ADDR       serve Go's pprof (profiles, trace) on this address; keep it on loopback (default: off)
  C360_GRAPHQL_MAX_TOKENS, C360_GRAPHQL_MAX_FIELDS, C360_GRAPHQL_MAX_DEPTH,
  C360_GRAPHQL_MAX_ALIASES, C360_GRAPHQL_MAX_COMPLEXITY
                        GraphQL limits (defaults 10000, 500, 12, 30, 50000; docs/security.md)
  C360_RATE_KEY_RPS, C360_RATE_KEY_BURST
                        token bucket per API key (default 10000/s, burst 20000; -1: off)
  C360_RATE_WEBHOOK_RPS, C360_RATE_WEBHOOK_BURST
                        token bucket per workspace for verified webhooks, per write key
                        for the Segment API (/v1/ and /beacon/v1/batch) (default 10000/s, burst 20000; -1: off)
  C360_RATE_WEBHOOK_UNVERIFIED_RPS, C360_RATE_WEBHOOK_UNVERIFIED_BURST
                        token bucket per client address for webhook requests that fail
                        verification, Segment API (/v1/ and /beacon/v1/batch) requests without a valid
                        write key, and API keys that fail to authenticate on /graphql
                        and /mcp (default 10000/s, burst 20000; -1: off)
  C360_TRUSTED_PROXIES  proxies (addresses or CIDR prefixes, comma-separated) whose
                        X-Forwarded-For names the client of that per-address bucket
                        (default: none; the client is the connection's peer)
  C360_RATE_LOOKUP_RPS, C360_RATE_LOOKUP_BURST
                        token bucket per API key for the lookups by identity and searches
                        of keys that read personal data masked, one per lookup (an alias
                        counts as one) (default 5/s, burst 60; -1: off; docs/security.md)
`

// Main is the program: parsed configuration and what it opened. Tests run
// it as the binary runs, with their own input, output and environment.
type Main struct {
	// Stdin is what `c360 mcp` reads the protocol from.
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	Getenv         func(string) string
	// startupWait bounds how long serve holds a request that comes while
	// it starts (front.wait); 0 takes defaultStartupWait.
	startupWait time.Duration
}

// NewMain returns a Main reading os.Stdin and writing to stdout and stderr.
func NewMain(stdout, stderr io.Writer, getenv func(string) string) *Main {
	return &Main{Stdin: os.Stdin, Stdout: stdout, Stderr: stderr, Getenv: getenv}
}

// Run runs the subcommand in args until it ends or ctx is cancelled. A
// subcommand's -h prints its flags and is no error.
func (m *Main) Run(ctx context.Context, args []string) error {
	if err := m.run(ctx, args); !errors.Is(err, flag.ErrHelp) {
		return err
	}
	return nil
}

func (m *Main) run(ctx context.Context, args []string) error {
	if len(args) == 0 {
		fmt.Fprint(m.Stderr, usage)
		return usageError("no command given")
	}
	switch args[0] {
	case "serve":
		return m.serve(ctx, args[1:])
	case "migrate":
		return m.migrate(ctx, args[1:])
	case "workspace":
		return m.workspace(ctx, args[1:])
	case "apikey":
		return m.apikey(ctx, args[1:])
	case "deadletter":
		return m.deadletter(ctx, args[1:])
	case "mcp":
		return m.mcpStdio(ctx, args[1:])
	case "help", "-h", "--help":
		fmt.Fprint(m.Stdout, usage)
		return nil
	}
	fmt.Fprint(m.Stderr, usage)
	return usageError(fmt.Sprintf("unknown command %q", args[0]))
}
