package main

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/internal/logbuf"
	"github.com/c360dev/c360/internal/pgtest"
)

// TestMCPStdio runs the built binary as a desktop assistant does (`c360
// mcp` as a subprocess, MCP over its stdin and stdout) with an assistant
// key: tools answer with the key's masking, and its reads reach the audit
// log before the process exits.
func TestMCPStdio(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "c360")
	build := exec.Command("go", "build", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	db := pgtest.Open(t)
	ctx := context.Background()
	ws, slug, _ := pgtest.Workspace(t, db)
	key, _, err := db.CreateAPIKey(ctx, slug, c360.RoleAssistant, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Ingest(ctx, ws, []*c360.Event{{Type: c360.EventIdentify, Source: "test", DedupeKey: "stdio-1",
		Identities: []c360.Identity{{Type: "email", Value: "stdio@example.com"}, {Type: "phone", Value: "+14155550199"}},
		Traits:     map[string]any{"name": "Stdio Sam"}}}); err != nil {
		t.Fatal(err)
	}

	cmd := exec.Command(bin, "mcp")
	var stderr logbuf.Buffer
	cmd.Stderr = &stderr
	cmd.Env = append(os.Environ(), "DATABASE_URL="+pgtest.URL(t), "C360_API_KEY="+key)
	client := sdk.NewClient(&sdk.Implementation{Name: "desktop", Version: "1"}, nil)
	cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	cs, err := client.Connect(cctx, &sdk.CommandTransport{Command: cmd}, nil)
	if err != nil {
		t.Fatalf("connect: %v\nstderr: %s", err, stderr.String())
	}
	tools, err := cs.ListTools(cctx, nil)
	if err != nil || len(tools.Tools) != 6 {
		t.Fatalf("tools: %v %v", tools, err)
	}
	text := func(name string, args map[string]any) string {
		t.Helper()
		res, err := cs.CallTool(cctx, &sdk.CallToolParams{Name: name, Arguments: args})
		if err != nil || res.IsError {
			t.Fatalf("%s: %v %+v", name, err, res)
		}
		return res.Content[0].(*sdk.TextContent).Text
	}
	got := text("get_customer_context", map[string]any{"type": "phone", "value": "415 555 0199", "budget": 500})
	var out struct {
		Context struct {
			CustomerID string
			Text       string
		}
	}
	if err := json.Unmarshal([]byte(got), &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.Context.Text, "s***@example.com") || !strings.Contains(out.Context.Text, "+1******0199") ||
		strings.Contains(got, "stdio@example.com") || strings.Contains(got, "Stdio Sam") {
		t.Errorf("context over stdio is not masked for an assistant: %s", got)
	}
	text("record_observation", map[string]any{"customerId": out.Context.CustomerID, "text": "uses the desktop app"})
	if err := cs.Close(); err != nil {
		t.Logf("close: %v", err)
	}
	if strings.Contains(stderr.String(), key) {
		t.Errorf("stderr holds the API key: %s", stderr.String())
	}

	entries, _, _, err := db.FindAuditEntries(ctx, ws, c360.AuditFilter{Action: c360.AuditCustomerRead, First: 10})
	if err != nil || len(entries) != 1 || entries[0].Role != c360.RoleAssistant {
		t.Errorf("audit entries after the session = %+v, %v; want the assistant's read", entries, err)
	}
	m, err := db.ObservationsByCustomers(ctx, ws, []int64{entries[0].CustomerID}, time.Now(), c360.MaxPage)
	if err != nil || len(m[entries[0].CustomerID]) != 1 {
		t.Errorf("observations = %v, %v; want the one recorded over stdio", m, err)
	}
}

func TestMCPStdioNeedsAKey(t *testing.T) {
	c := newCLI(t)
	if _, _, err := c.run("mcp"); err == nil || !strings.Contains(err.Error(), "C360_API_KEY") || exitCodeOf(err) != 2 {
		t.Errorf("mcp without C360_API_KEY: %v, want a usage error naming it", err)
	}
	c.env["C360_API_KEY"] = "c360_000000000000_nope"
	_, _, err := c.run("mcp")
	if c360.ErrorCode(err) != c360.EUNAUTHENTICATED {
		t.Errorf("mcp with a bad key: %v, want UNAUTHENTICATED", err)
	}
	// What main prints and exits with, as docs/assistants.md says: the
	// domain message without its code, as for every command's error.
	printed := "c360: " + errorText(err)
	if printed != "c360: invalid API key" || exitCodeOf(err) != 1 {
		t.Errorf("mcp with a bad key prints %q and exits %d, want \"c360: invalid API key\" and 1", printed, exitCodeOf(err))
	}
	doc, derr := os.ReadFile("../../docs/assistants.md")
	if derr != nil {
		t.Fatal(derr)
	}
	_, section, _ := strings.Cut(string(doc), "### stdio with the database: `c360 mcp`")
	section, _, _ = strings.Cut(section, "\n#")
	if !strings.Contains(strings.Join(strings.Fields(section), " "), "`"+printed+"` on stderr and exits 1") {
		t.Errorf("docs/assistants.md's database-mode `c360 mcp` does not say a bad key prints `%s` on stderr and exits 1", printed)
	}
}
