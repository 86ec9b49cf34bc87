package main

import (
	"context"
	"log/slog"
	"os"
	"runtime/debug"
	"strings"
	"sync"

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
// selects whose key every tool call runs with; DATABASE_URL the store. It
// serves the same GraphQL handler as `c360 serve` (roles, masking, audit,
// limits), without listening on any port. Logs go to stderr: stdout
// carries the protocol.
func (m *Main) mcpStdio(ctx context.Context, args []string) error {
	fs := newFlagSet("mcp", m.Stderr)
	if err := m.parse(fs, args); err != nil {
		return err
	}
	key := strings.TrimSpace(m.Getenv("C360_API_KEY"))
	if key == "" {
		return usageError("C360_API_KEY is not set: the MCP server acts with an API key (c360 apikey create --role assistant)")
	}
	log := slog.New(slog.NewJSONHandler(m.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	db, err := m.open(ctx)
	if err != nil {
		return err
	}
	defer db.Close()

	res := NewResolver(db)
	if _, err := m.connectors(res, log); err != nil {
		return err
	}
	limits, sec, err := m.startSecurity(db, res, log)
	if err != nil {
		return err
	}
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
	return newMCP(srv, db, log).ServeStdio(ctx, key, os.Stdin, m.Stdout)
}
