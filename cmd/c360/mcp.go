package main

import (
	"context"
	"log/slog"
	"runtime/debug"
	"strings"
	"sync"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/mcp"
	"github.com/c360dev/c360/postgres"
	"github.com/c360dev/c360/server"
)

// mountMCP mounts the MCP server (Streamable HTTP) at /mcp. Its tools run
// their GraphQL operations through srv itself.
func mountMCP(srv *server.Server, db *postgres.DB, log *slog.Logger) {
	srv.Handle("/mcp", newMCP(srv, db, log).Handler())
}

func newMCP(srv *server.Server, db *postgres.DB, log *slog.Logger) *mcp.Server {
	return mcp.New(mcp.Config{GraphQL: srv, Auth: db, Authenticate: srv.AuthenticateRequest, StatusOf: server.StatusOf,
		Logger: log, Version: version()})
}

// version is the module version the binary was built from, or "dev".
func version() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

// mcpStdio runs `c360 mcp`: one MCP session over stdin and stdout, for
// desktop assistants that start the server as a subprocess. C360_API_KEY
// selects whose key every tool call runs with. Logs go to stderr: stdout
// carries the protocol.
//
// With --url (or C360_MCP_URL) it is a bridge to a c360 server's /mcp
// (mcpBridge), and needs nothing but the key. Without, it opens
// DATABASE_URL itself and serves the same GraphQL handler as `c360 serve`
// (roles, masking, audit, limits), without listening on any port: whoever
// can read its configuration holds the database, so that mode is for
// trusted operator hosts only (docs/security.md).
func (m *Main) mcpStdio(ctx context.Context, args []string) error {
	fs := newFlagSet("mcp", m.Stderr)
	remote := fs.String("url", m.Getenv("C360_MCP_URL"),
		"bridge to this c360 server's MCP endpoint (https://c360.example.com/mcp) instead of opening DATABASE_URL")
	if err := m.parse(fs, args); err != nil {
		return err
	}
	if *remote != "" {
		return m.mcpBridge(ctx, *remote)
	}
	key := strings.TrimSpace(m.Getenv("C360_API_KEY"))
	if key == "" {
		return usageError("C360_API_KEY is not set: the MCP server acts with an API key (c360 apikey create --role assistant)")
	}
	log := slog.New(slog.NewJSONHandler(m.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	// Settings first, as serve reads them: a mistake is named before the
	// database is opened.
	_, sender, err := m.connectors(log)
	if err != nil {
		return err
	}
	limits, err := server.LimitsFromEnv(m.Getenv)
	if err != nil {
		return usageError(err.Error())
	}
	readAudit, err := m.readAudit()
	if err != nil {
		return err
	}
	db, err := m.open(ctx)
	if err != nil {
		return err
	}
	defer db.Close()

	res := NewResolver(db)
	res.MessageSender, res.ReadAudit = sender, readAudit
	sec := startSecurity(db, res, log)
	defer sec.stop()

	// Changes made here (observations, sent messages) reach the
	// subscribers of every `c360 serve` replica through the notifier.
	bg, stopBG := context.WithCancel(context.WithoutCancel(ctx))
	notifier := &postgres.Notifier{DB: db, Origin: postgres.NewOrigin(), Logger: log}
	db.OnCommit = notifier.Add
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		notifier.Run(bg)
	}()
	defer func() {
		stopBG()
		wg.Wait()
	}()

	srv := server.New(server.Config{Logger: log, Limits: limits}, db, res, db)
	return newMCP(srv, db, log).ServeStdio(ctx, key, m.Stdin, m.Stdout)
}

// mcpBridge runs `c360 mcp --url URL`: MCP over stdin and stdout, every
// tool call forwarded to the c360 server at URL with C360_API_KEY. The
// desktop that runs it holds only that key, which the server checks, masks
// and audits like any other; no database credentials or provider secrets.
func (m *Main) mcpBridge(ctx context.Context, remote string) error {
	endpoint, err := mcp.BridgeEndpoint(remote)
	if err != nil {
		return usageError("--url (C360_MCP_URL): " + c360.ErrorMessage(err))
	}
	key := strings.TrimSpace(m.Getenv("C360_API_KEY"))
	if key == "" {
		return usageError("C360_API_KEY is not set: the bridge acts with an API key (c360 apikey create --role assistant)")
	}
	log := slog.New(slog.NewJSONHandler(m.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	if m.Getenv("DATABASE_URL") != "" {
		log.Warn("DATABASE_URL is set but the bridge does not use it: remove it from the assistant's configuration, " +
			"where it gives whoever can read it the whole database")
	}
	return mcp.Bridge(ctx, mcp.BridgeConfig{URL: endpoint, Key: key, Logger: log, Version: version()}, m.Stdin, m.Stdout)
}
