package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/connectors/chatbot"
	"github.com/c360dev/c360/internal/logbuf"
	"github.com/c360dev/c360/internal/pgtest"
	"github.com/c360dev/c360/server"
)

func TestMain(m *testing.M) {
	code := m.Run()
	pgtest.Drop()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// cli runs c360 commands against this binary's test database.
type cli struct {
	t   *testing.T
	env map[string]string
}

func newCLI(t *testing.T) *cli {
	return &cli{t: t, env: map[string]string{"DATABASE_URL": pgtest.URL(t)}}
}

// run runs one command and returns its stdout, stderr and error.
func (c *cli) run(args ...string) (string, string, error) {
	c.t.Helper()
	var stdout, stderr logbuf.Buffer
	m := NewMain(&stdout, &stderr, func(k string) string { return c.env[k] })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := m.Run(ctx, args)
	return stdout.String(), stderr.String(), err
}

// mustRun runs a command that must succeed and returns its stdout.
func (c *cli) mustRun(args ...string) string {
	c.t.Helper()
	out, errOut, err := c.run(args...)
	if err != nil {
		c.t.Fatalf("c360 %s: %v\nstderr: %s", strings.Join(args, " "), err, errOut)
	}
	return out
}

var slugSeq int

func uniqueSlug(prefix string) string {
	slugSeq++
	return fmt.Sprintf("%s-%d-%d", prefix, time.Now().UnixNano()%1e9, slugSeq)
}

type creds struct {
	ID            string `json:"id"`
	Slug          string `json:"slug"`
	APIKey        string `json:"apiKey"`
	WriteKey      string `json:"writeKey"`
	WebhookSecret string `json:"webhookSecret"`
}

// decodeOne decodes stdout as exactly one JSON object into v.
func decodeOne(t *testing.T, stdout string, v any) {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(stdout))
	if err := dec.Decode(v); err != nil {
		t.Fatalf("stdout is not a JSON object: %v\n%s", err, stdout)
	}
	var extra json.RawMessage
	if err := dec.Decode(&extra); err != io.EOF {
		t.Fatalf("stdout has more than one JSON value (next: %s, err %v):\n%s", extra, err, stdout)
	}
	if strings.TrimSpace(stdout)[0] != '{' {
		t.Fatalf("stdout is not a JSON object: %s", stdout)
	}
}

func TestWorkspaceCreate(t *testing.T) {
	c := newCLI(t)
	slug := uniqueSlug("acme")
	out := c.mustRun("workspace", "create", "--slug", slug, "--name", "Acme Inc", "--json")
	var got creds
	decodeOne(t, out, &got)
	var fields map[string]any
	json.Unmarshal([]byte(out), &fields)
	for _, k := range []string{"id", "slug", "apiKey", "writeKey", "webhookSecret"} {
		if v, ok := fields[k]; !ok || fmt.Sprint(v) == "" {
			t.Errorf("field %q = %v, want non-empty", k, v)
		}
	}
	if got.Slug != slug {
		t.Errorf("slug = %q, want %q", got.Slug, slug)
	}
	if got.APIKey == got.WriteKey {
		t.Error("apiKey and writeKey are the same")
	}

	db := pgtest.Open(t)
	ctx := context.Background()
	p, err := db.Authenticate(ctx, got.APIKey)
	if err != nil {
		t.Fatalf("authenticate apiKey: %v", err)
	}
	if p.Role != c360.RoleAdmin {
		t.Errorf("apiKey role = %q, want admin", p.Role)
	}
	if fmt.Sprint(p.WorkspaceID) != got.ID {
		t.Errorf("apiKey workspace = %d, want %s", p.WorkspaceID, got.ID)
	}
	w, err := db.Authenticate(ctx, got.WriteKey)
	if err != nil {
		t.Fatalf("authenticate writeKey: %v", err)
	}
	if w.Role != c360.RoleWrite {
		t.Errorf("writeKey role = %q, want write", w.Role)
	}
	ws, err := db.FindWorkspaceBySlug(ctx, slug)
	if err != nil {
		t.Fatal(err)
	}
	if ws.Name != "Acme Inc" || ws.WebhookSecret != got.WebhookSecret {
		t.Errorf("stored workspace name %q secret %q, want %q %q", ws.Name, ws.WebhookSecret, "Acme Inc", got.WebhookSecret)
	}
	// Keys are stored hashed: no row holds the secret in clear, one holds its SHA-256.
	var clear, hashed int
	if err := db.Pool.QueryRow(ctx, `
		SELECT count(*) FILTER (WHERE hash = convert_to($1, 'UTF8') OR prefix = $1),
		       count(*) FILTER (WHERE hash = sha256(convert_to($1, 'UTF8')))
		FROM api_keys`, got.APIKey).Scan(&clear, &hashed); err != nil {
		t.Fatal(err)
	}
	if clear != 0 || hashed != 1 {
		t.Errorf("api_keys rows with the key in clear = %d, hashed = %d, want 0 and 1", clear, hashed)
	}

	// Without --json, a human-readable text that still shows the key once.
	slug2 := uniqueSlug("plain")
	text := c.mustRun("workspace", "create", "--slug", slug2)
	if !strings.Contains(text, slug2) || !strings.Contains(text, "c360_") {
		t.Errorf("text output = %q, want the slug and the keys", text)
	}

	t.Run("duplicate slug", func(t *testing.T) {
		out, _, err := c.run("workspace", "create", "--slug", slug, "--json")
		if err == nil {
			t.Fatalf("second create of %q succeeded, want an error; stdout %s", slug, out)
		}
		if code := c360.ErrorCode(err); code != c360.ECONFLICT {
			t.Errorf("error code = %q, want %q (%v)", code, c360.ECONFLICT, err)
		}
		if out != "" {
			t.Errorf("stdout = %q, want nothing", out)
		}
	})
	for _, bad := range []string{"Bad Slug", "-leading", "UPPER", "a/b", strings.Repeat("a", 64)} {
		t.Run("invalid slug "+bad, func(t *testing.T) {
			out, _, err := c.run("workspace", "create", "--slug", bad, "--json")
			if err == nil {
				t.Fatalf("create --slug %q succeeded, want an error; stdout %s", bad, out)
			}
			if code := c360.ErrorCode(err); code != c360.EINVALID {
				t.Errorf("error code = %q, want %q (%v)", code, c360.EINVALID, err)
			}
		})
	}
	t.Run("missing slug", func(t *testing.T) {
		_, _, err := c.run("workspace", "create", "--json")
		if err == nil || exitCode(err) != 2 {
			t.Errorf("create without --slug: err %v (exit %d), want a usage error (exit 2)", err, exitCodeOf(err))
		}
	})
}

// A provider secret given as "-" is read from standard input, so that it
// is not in the process's arguments: its first line, the line break
// dropped. An empty input (which would clear it), two lines, or two
// secrets both "-" are refused, and change nothing.
func TestWorkspaceUpdateReadsASecretFromStdin(t *testing.T) {
	c := newCLI(t)
	slug := uniqueSlug("stdin")
	c.mustRun("workspace", "create", "--slug", slug, "--json")
	stdinLeft := 0 // what the last run left unread of its standard input
	run := func(stdin string, args ...string) error {
		var stdout, stderr logbuf.Buffer
		m := NewMain(&stdout, &stderr, func(k string) string { return c.env[k] })
		in := strings.NewReader(stdin)
		m.Stdin = in
		defer func() { stdinLeft = in.Len() }()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		return m.Run(ctx, append([]string{"workspace", "update", "--slug", slug}, args...))
	}
	db := pgtest.Open(t)
	// Read from the table: the store caches a workspace it has read.
	token := func() string {
		t.Helper()
		var tok string
		if err := db.Pool.QueryRow(context.Background(), `SELECT twilio_auth_token FROM workspaces WHERE slug = $1`, slug).Scan(&tok); err != nil {
			t.Fatal(err)
		}
		return tok
	}
	if err := run("tok-from-stdin\r\n", "--twilio-auth-token", "-", "--twilio-account-sid", "AC2"); err != nil {
		t.Fatal(err)
	}
	if got := token(); got != "tok-from-stdin" {
		t.Fatalf("token = %q, want tok-from-stdin", got)
	}
	for _, tc := range []struct {
		stdin string
		args  []string
	}{
		{"", []string{"--twilio-auth-token", "-"}},
		{"\n", []string{"--twilio-auth-token", "-"}},
		{"one\ntwo\n", []string{"--twilio-auth-token", "-"}},
		{strings.Repeat("x", 5000), []string{"--twilio-auth-token", "-"}},
		{"s\n", []string{"--twilio-auth-token", "-", "--whatsapp-app-secret", "-"}},
		// A pasted secret's stray white space would break every signature
		// check unseen; so would bytes that are not text.
		{"   \n", []string{"--twilio-auth-token", "-"}},
		{" tok \n", []string{"--twilio-auth-token", "-"}},
		{"ab\xffcd\n", []string{"--twilio-auth-token", "-"}},
		{"", []string{"--twilio-auth-token", "tok "}},
	} {
		if err := run(tc.stdin, tc.args...); err == nil || exitCode(err) != 2 {
			t.Errorf("stdin %.20q, %v: err %v, want a usage error", tc.stdin, tc.args, err)
		}
		if got := token(); got != "tok-from-stdin" {
			t.Fatalf("after a refused update (stdin %.20q, %v) the token is %q", tc.stdin, tc.args, got)
		}
	}
	// The flag's last value counts, as for any flag: a later value given
	// whole is stored, and standard input is not read. A byte-order mark
	// before a piped secret is dropped.
	if err := run("from-stdin\n", "--twilio-auth-token", "-", "--twilio-auth-token", "tok-last"); err != nil {
		t.Fatal(err)
	}
	if stdinLeft != len("from-stdin\n") {
		t.Errorf("standard input was read (%d bytes left), though the flag's last value was given whole", stdinLeft)
	}
	if got := token(); got != "tok-last" {
		t.Errorf("token = %q, want tok-last (the flag's last value)", got)
	}
	if err := run("\ufefftok-bom\n", "--twilio-auth-token", "-"); err != nil {
		t.Fatal(err)
	}
	if got := token(); got != "tok-bom" {
		t.Errorf("token = %q, want tok-bom (the mark dropped)", got)
	}
}

func exitCodeOf(err error) int {
	if err == nil {
		return 0
	}
	return exitCode(err)
}

func TestWorkspaceUpdate(t *testing.T) {
	c := newCLI(t)
	slug := uniqueSlug("upd")
	c.mustRun("workspace", "create", "--slug", slug, "--json")
	c.mustRun("workspace", "update", "--slug", slug, "--twilio-auth-token", "tok-123", "--twilio-account-sid", "AC1")
	c.mustRun("workspace", "update", "--slug", slug, "--whatsapp-verify-token", "verify-me")

	db := pgtest.Open(t)
	w, err := db.FindWorkspaceBySlug(context.Background(), slug)
	if err != nil {
		t.Fatal(err)
	}
	if w.TwilioAuthToken != "tok-123" || w.TwilioAccountSID != "AC1" {
		t.Errorf("twilio token %q sid %q, want tok-123 AC1", w.TwilioAuthToken, w.TwilioAccountSID)
	}
	// A later update leaves settings it does not name alone.
	if w.WhatsAppVerifyToken != "verify-me" {
		t.Errorf("whatsapp verify token = %q, want verify-me", w.WhatsAppVerifyToken)
	}

	_, _, err = c.run("workspace", "update", "--slug", uniqueSlug("nobody"), "--twilio-auth-token", "x")
	if err == nil {
		t.Fatal("update of an unknown slug succeeded, want an error")
	}
	if code := c360.ErrorCode(err); code != c360.ENOTFOUND {
		t.Errorf("unknown slug: code = %q, want %q (%v)", code, c360.ENOTFOUND, err)
	}
	if _, _, err := c.run("workspace", "update", "--slug", slug, "--no-such-flag", "x"); err == nil || exitCode(err) != 2 {
		t.Errorf("unknown flag: err %v, want a usage error", err)
	}
	if _, _, err := c.run("workspace", "frobnicate"); err == nil || exitCode(err) != 2 {
		t.Errorf("workspace frobnicate: err %v, want a usage error", err)
	}
}

func TestAPIKeyCreate(t *testing.T) {
	c := newCLI(t)
	slug := uniqueSlug("keys")
	c.mustRun("workspace", "create", "--slug", slug, "--json")
	db := pgtest.Open(t)
	for _, role := range []c360.Role{c360.RoleAgent, c360.RoleAssistant, c360.RoleAdmin, c360.RoleWrite, c360.RoleClient} {
		out := c.mustRun("apikey", "create", "--workspace", slug, "--role", string(role), "--json")
		var got struct {
			APIKey string `json:"apiKey"`
		}
		decodeOne(t, out, &got)
		if got.APIKey == "" {
			t.Fatalf("role %s: apiKey is empty: %s", role, out)
		}
		p, err := db.Authenticate(context.Background(), got.APIKey)
		if err != nil {
			t.Fatalf("role %s: authenticate: %v", role, err)
		}
		if p.Role != role {
			t.Errorf("key role = %q, want %q", p.Role, role)
		}
	}

	for _, tc := range []struct {
		name string
		args []string
		code string // domain code, or "" for a usage error
	}{
		{"invalid role", []string{"--workspace", slug, "--role", "superuser"}, c360.EINVALID},
		{"uppercase role", []string{"--workspace", slug, "--role", "Agent"}, c360.EINVALID},
		{"unknown workspace", []string{"--workspace", uniqueSlug("nobody"), "--role", "agent"}, c360.ENOTFOUND},
		{"missing role", []string{"--workspace", slug}, ""},
		{"missing workspace", []string{"--role", "agent"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, _, err := c.run(append([]string{"apikey", "create", "--json"}, tc.args...)...)
			if err == nil {
				t.Fatalf("succeeded with stdout %q, want an error", out)
			}
			if tc.code == "" {
				if exitCode(err) != 2 {
					t.Errorf("exit code = %d, want 2 (usage): %v", exitCode(err), err)
				}
			} else if code := c360.ErrorCode(err); code != tc.code {
				t.Errorf("code = %q, want %q (%v)", code, tc.code, err)
			}
			if out != "" {
				t.Errorf("stdout = %q, want nothing", out)
			}
		})
	}
}

func TestMigrate(t *testing.T) {
	c := newCLI(t)
	// pgtest migrated the database already: up has nothing to do, twice.
	c.mustRun("migrate", "up")
	c.mustRun("migrate", "up")
	status := c.mustRun("migrate", "status")
	var line string
	for _, l := range strings.Split(status, "\n") {
		if strings.HasPrefix(l, "00001") {
			line = l
		}
	}
	if line == "" {
		t.Fatalf("migrate status does not list 00001:\n%s", status)
	}
	if !strings.Contains(line, "applied") || strings.Contains(line, "pending") {
		t.Errorf("migrate status line = %q, want 00001 applied", line)
	}
	if _, _, err := c.run("migrate", "sideways"); err == nil || exitCode(err) != 2 {
		t.Errorf("migrate sideways: err %v, want a usage error", err)
	}
	if _, _, err := c.run("migrate"); err == nil || exitCode(err) != 2 {
		t.Errorf("migrate without a command: err %v, want a usage error", err)
	}
}

// workspace update keeps a sender number in E.164, as Twilio writes the
// numbers it compares with (an inbound WhatsApp message's To), and refuses
// a sender that is no number with a usage error (exit 2) naming the flag,
// changing nothing: before, "+1 415 555 0198" was kept with its spaces and
// every WhatsApp send was refused as outside the 24-hour window.
func TestWorkspaceUpdateSenderNumbers(t *testing.T) {
	c := newCLI(t)
	ctx := context.Background()
	slug := uniqueSlug("sender")
	c.mustRun("workspace", "create", "--slug", slug, "--json")
	c.mustRun("workspace", "update", "--slug", slug, "--twilio-whatsapp-from", "whatsapp:+1 415 555 0198", "--twilio-sms-from", "+1 (415) 555-0199")
	w, err := pgtest.Open(t).FindWorkspaceBySlug(ctx, slug)
	if err != nil || w.TwilioWhatsAppFrom != "+14155550198" || w.TwilioSMSFrom != "+14155550199" {
		t.Fatalf("senders = %+v, %v; want +14155550198 and +14155550199", w, err)
	}
	for _, tc := range [][]string{
		{"--twilio-sms-from", "+1 234", "--twilio-auth-token", "changed"},
		{"--twilio-whatsapp-from", "415-555-01OO"},
	} {
		_, _, err := c.run(append([]string{"workspace", "update", "--slug", slug}, tc...)...)
		if exitCodeOf(err) != 2 || err == nil || !strings.HasPrefix(err.Error(), tc[0]+" ") || !strings.Contains(err.Error(), "international form") {
			t.Errorf("%v: err %v (exit %d), want a usage error naming %s", tc, err, exitCodeOf(err), tc[0])
		}
	}
	if after, err := pgtest.Open(t).FindWorkspaceBySlug(ctx, slug); err != nil || after.TwilioSMSFrom != w.TwilioSMSFrom ||
		after.TwilioWhatsAppFrom != w.TwilioWhatsAppFrom || after.TwilioAuthToken != w.TwilioAuthToken {
		t.Errorf("after the refusals: %+v, %v; want nothing changed", after, err)
	}
}

func TestUsageErrors(t *testing.T) {
	c := newCLI(t)
	_, stderr, err := c.run("frobnicate")
	if err == nil {
		t.Fatal("unknown command succeeded, want an error")
	}
	if exitCode(err) != 2 {
		t.Errorf("exit code = %d, want 2 for a usage error (%v)", exitCode(err), err)
	}
	if !strings.Contains(err.Error(), "frobnicate") || !strings.Contains(stderr, "Usage:") {
		t.Errorf("err %q, stderr %q: want the command named and the usage", err, stderr)
	}
	if _, stderr, err := c.run(); err == nil || exitCode(err) != 2 || !strings.Contains(stderr, "Usage:") {
		t.Errorf("no command: err %v, stderr %q, want a usage error and the usage", err, stderr)
	}
	if out, _, err := c.run("help"); err != nil || !strings.Contains(out, "c360 serve") {
		t.Errorf("help: err %v, stdout %q, want the usage on stdout", err, out)
	}
	// A subcommand's -h prints its flags and is no error (exit 0).
	for _, args := range [][]string{{"serve", "-h"}, {"workspace", "create", "-h"}, {"apikey", "list", "--help"}} {
		if _, stderr, err := c.run(args...); err != nil || !strings.Contains(stderr, "-") {
			t.Errorf("%v: err %v, stderr %q, want its flags and no error", args, err, stderr)
		}
	}
	// A group without its subcommand names every subcommand it has.
	for _, tc := range []struct {
		group string
		subs  []string
	}{
		{"workspace", []string{"create", "update", "rules"}},
		{"apikey", []string{"create", "revoke", "list"}},
		{"migrate", []string{"up", "down", "status"}},
	} {
		_, _, err := c.run(tc.group)
		if err == nil || exitCode(err) != 2 {
			t.Errorf("%s alone: err %v, want a usage error", tc.group, err)
			continue
		}
		for _, sub := range tc.subs {
			if !strings.Contains(err.Error(), sub) {
				t.Errorf("%s alone: err %q does not name %s", tc.group, err, sub)
			}
		}
	}
}

func TestMissingDatabaseURL(t *testing.T) {
	for _, args := range [][]string{
		{"migrate", "status"},
		{"workspace", "create", "--slug", "nodb"},
		{"apikey", "create", "--workspace", "nodb", "--role", "agent"},
		{"serve", "--no-migrate"},
	} {
		var stdout, stderr logbuf.Buffer
		m := NewMain(&stdout, &stderr, func(string) string { return "" })
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := m.Run(ctx, args)
		cancel()
		if err == nil {
			t.Errorf("%v without DATABASE_URL succeeded, want an error", args)
			continue
		}
		if !strings.Contains(c360.ErrorMessageOrText(err), "DATABASE_URL") {
			t.Errorf("%v: error %q does not mention DATABASE_URL", args, err)
		}
	}
}

// An unknown migrate command is refused as such (exit 2) before the
// database is opened: without DATABASE_URL it was reported as missing that.
func TestUnknownMigrateCommandRefusedFirst(t *testing.T) {
	for _, env := range []map[string]string{{}, {"DATABASE_URL": "postgres://c360@127.0.0.1:1/c360?sslmode=disable"}} {
		var stdout, stderr logbuf.Buffer
		m := NewMain(&stdout, &stderr, func(k string) string { return env[k] })
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := m.Run(ctx, []string{"migrate", "sideways"})
		cancel()
		if exitCode(err) != 2 || !strings.Contains(c360.ErrorMessageOrText(err), `unknown migrate command "sideways"`) {
			t.Errorf("migrate sideways (DATABASE_URL %q): %v (exit %d), want the unknown command refused", env["DATABASE_URL"], err, exitCode(err))
		}
	}
}

// C360_DB_MAX_CONNS is read through Main's Getenv, like the rest of the
// configuration, and a bad value stops every command that opens the store.
func TestDBMaxConnsFromGetenv(t *testing.T) {
	c := newCLI(t)
	for _, v := range []string{"0", "-1", "many", "4294967296"} {
		c.env["C360_DB_MAX_CONNS"] = v
		_, _, err := c.run("migrate", "status")
		if err == nil || !strings.Contains(err.Error(), "C360_DB_MAX_CONNS") {
			t.Errorf("C360_DB_MAX_CONNS=%s: err %v, want an error naming it", v, err)
		}
	}
	c.env["C360_DB_MAX_CONNS"] = "4"
	c.mustRun("migrate", "status")
}

// freeAddr returns a loopback address with a port that was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func TestServeGracefulShutdown(t *testing.T) {
	c := newCLI(t)
	slug := uniqueSlug("serve")
	var cr creds
	decodeOne(t, c.mustRun("workspace", "create", "--slug", slug, "--json"), &cr)

	addr := freeAddr(t)
	var stdout, stderr logbuf.Buffer
	env := map[string]string{"DATABASE_URL": c.env["DATABASE_URL"], "C360_ADDR": addr, "C360_SHUTDOWN_TIMEOUT": "5s"}
	m := NewMain(&stdout, &stderr, func(k string) string { return env[k] })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx, []string{"serve", "--no-migrate"}) }()

	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	base := "http://" + addr
	waitHealthy(t, base, done, &stderr)

	// The served API works end to end with the key the CLI printed.
	req, _ := http.NewRequest(http.MethodPost, base+"/graphql",
		strings.NewReader(`{"query":"mutation { identify(input: {identities: [{type: \"email\", value: \"served@example.com\"}]}) { id version } }"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+cr.APIKey)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"version":1`) {
		t.Errorf("identify through serve = %d %s, want 200 with version 1", resp.StatusCode, body)
	}
	if resp, err := client.Get(base + "/readyz"); err != nil || resp.StatusCode != http.StatusOK {
		t.Errorf("GET /readyz = %v %v, want 200", resp, err)
	} else {
		resp.Body.Close()
	}
	tr.CloseIdleConnections()

	start := time.Now()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("serve returned %v after cancel, want nil", err)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("shutdown took %v, want under 3s", d)
		}
	case <-time.After(6 * time.Second):
		t.Fatalf("serve did not return within 6s of cancel\nstderr: %s", stderr.String())
	}
	if _, err := client.Get(base + "/healthz"); err == nil {
		t.Error("server still answers after shutdown")
	}
	if !strings.Contains(stderr.String(), "serving") {
		t.Errorf("stderr has no start log line:\n%s", stderr.String())
	}
}

func TestServeListenError(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	env := map[string]string{"DATABASE_URL": pgtest.URL(t), "C360_ADDR": ln.Addr().String()}
	var stdout, stderr logbuf.Buffer
	m := NewMain(&stdout, &stderr, func(k string) string { return env[k] })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = m.Run(ctx, []string{"serve", "--no-migrate"})
	if err == nil {
		t.Fatal("serve on a taken port returned nil, want an error")
	}
	if errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("serve on a taken port ran until the deadline: %v", err)
	}
	if !strings.Contains(err.Error(), ln.Addr().String()) {
		t.Errorf("error %q does not name the address", err)
	}
}

// TestWorkspaceRotateWebhookSecret: workspace update --rotate-webhook-secret
// prints a new secret once; the chatbot webhook refuses the old one and
// accepts the new one, and the rotation is audited without the secret.
func TestWorkspaceRotateWebhookSecret(t *testing.T) {
	c := newCLI(t)
	ctx := context.Background()
	slug := uniqueSlug("rotate")
	var cr creds
	decodeOne(t, c.mustRun("workspace", "create", "--slug", slug, "--json"), &cr)

	// The chatbot webhook, on the store the rotation runs through (as serve
	// and the command would be in one process): its cached workspace must
	// not keep the old secret.
	db := pgtest.Open(t)
	h := chatbot.New(chatbot.Config{Store: db, Now: time.Now, StatusOf: server.StatusOf})
	post := func(secret string) int {
		t.Helper()
		body := []byte(`{"sessionId":"s-1","identities":[{"type":"email","value":"rotate@example.com"}],` +
			`"turns":[{"id":"1","role":"user","text":"hi","time":"2025-03-01T11:58:00Z"}]}`)
		req := httptest.NewRequest(http.MethodPost, "/webhooks/chatbot/"+slug, bytes.NewReader(body))
		req.SetPathValue("workspace", slug)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set(chatbot.SignatureHeader, chatbot.Sign(secret, time.Now(), body))
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec.Code
	}
	if code := post(cr.WebhookSecret); code != http.StatusOK {
		t.Fatalf("webhook signed with the first secret: %d, want 200", code)
	}

	w, secret, err := db.RotateWebhookSecret(ctx, slug, 0)
	if err != nil {
		t.Fatal(err)
	}
	if secret == cr.WebhookSecret || !strings.HasPrefix(secret, "whsec_") || w.WebhookSecret != secret {
		t.Fatalf("rotated secret %q (workspace has %q), want a new whsec_ secret", secret, w.WebhookSecret)
	}
	if code := post(cr.WebhookSecret); code != http.StatusUnauthorized {
		t.Errorf("webhook signed with the rotated-out secret: %d, want 401", code)
	}
	if code := post(secret); code != http.StatusOK {
		t.Errorf("webhook signed with the new secret: %d, want 200", code)
	}

	// The command: --json gives the new secret, text says it is shown once.
	var out struct{ ID, Slug, WebhookSecret string }
	decodeOne(t, c.mustRun("workspace", "update", "--slug", slug, "--rotate-webhook-secret", "--json"), &out)
	if out.Slug != slug || out.ID != cr.ID || !strings.HasPrefix(out.WebhookSecret, "whsec_") || out.WebhookSecret == secret {
		t.Errorf("update --rotate-webhook-secret --json = %+v, want the workspace and a new secret", out)
	}
	// Another process (this test's store caches for 5 s) sees it at once.
	if w, err := pgtest.Open(t).FindWorkspaceBySlug(ctx, slug); err != nil || w.WebhookSecret != out.WebhookSecret {
		t.Errorf("stored secret after the command: %v %v, want %s", w, err, out.WebhookSecret)
	}
	text := c.mustRun("workspace", "update", "--slug", slug, "--rotate-webhook-secret")
	if !strings.Contains(text, "new webhook secret: whsec_") || !strings.Contains(text, "shown once") {
		t.Errorf("update --rotate-webhook-secret printed:\n%s\nwant the new secret, shown once", text)
	}
	// Without the flag the secret stays and is not printed.
	before, _ := pgtest.Open(t).FindWorkspaceBySlug(ctx, slug)
	if text := c.mustRun("workspace", "update", "--slug", slug, "--json"); strings.Contains(text, "whsec_") {
		t.Errorf("update without --rotate-webhook-secret printed a secret: %s", text)
	}
	if after, _ := pgtest.Open(t).FindWorkspaceBySlug(ctx, slug); after.WebhookSecret != before.WebhookSecret {
		t.Error("update without --rotate-webhook-secret changed the secret")
	}

	// Audited with the command line as actor, never with the secret.
	ws, _ := strconv.ParseInt(cr.ID, 10, 64)
	entries, _, _, err := db.FindAuditEntries(ctx, ws, c360.AuditFilter{First: 10, Action: c360.AuditWebhookSecretRotate})
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 2 || entries[0].Actor != c360.ActorCLI {
		t.Errorf("audit entries = %+v, want 2 by %s (the two commands)", entries, c360.ActorCLI)
	}
	for _, e := range entries {
		if strings.Contains(fmt.Sprint(e.Detail), "whsec_") {
			t.Errorf("audit entry holds the secret: %+v", e)
		}
	}

	// An unknown workspace is NOT_FOUND (exit 1) and prints no secret.
	stdout, _, err := c.run("workspace", "update", "--slug", uniqueSlug("nobody"), "--rotate-webhook-secret")
	if c360.ErrorCode(err) != c360.ENOTFOUND || exitCodeOf(err) != 1 || stdout != "" {
		t.Errorf("rotate on an unknown slug: err %v (exit %d), stdout %q; want NOT_FOUND, exit 1, nothing printed", err, exitCodeOf(err), stdout)
	}
}

// TestWorkspaceRotateWebhookSecretGrace: --rotate-webhook-secret keeps the
// secret it replaces working for --grace (24h unless given), says until
// when, and keeps one previous secret; --grace 0 refuses it at once; a
// --grace out of range or without --rotate-webhook-secret is refused and
// changes nothing. The previous secret is never printed.
func TestWorkspaceRotateWebhookSecretGrace(t *testing.T) {
	c := newCLI(t)
	ctx := context.Background()
	slug := uniqueSlug("grace")
	var cr creds
	decodeOne(t, c.mustRun("workspace", "create", "--slug", slug, "--json"), &cr)
	admin := pgtest.Open(t)
	// post sends a request signed with secret to a chatbot webhook on a
	// store of its own, whose cache cannot hold the workspace from before.
	n := 0
	post := func(secret string) (int, string) {
		t.Helper()
		n++
		h := chatbot.New(chatbot.Config{Store: pgtest.Open(t), Now: time.Now, StatusOf: server.StatusOf})
		body := []byte(fmt.Sprintf(`{"sessionId":"s-%d","identities":[{"type":"email","value":"grace@example.com"}],`+
			`"turns":[{"id":"1","role":"user","text":"hi","time":"2025-03-01T11:58:00Z"}]}`, n))
		req := httptest.NewRequest(http.MethodPost, "/webhooks/chatbot/"+slug, bytes.NewReader(body))
		req.SetPathValue("workspace", slug)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set(chatbot.SignatureHeader, chatbot.Sign(secret, time.Now(), body))
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		var refusal struct{ Message string }
		json.Unmarshal(rec.Body.Bytes(), &refusal)
		return rec.Code, refusal.Message
	}
	stored := func() *c360.Workspace {
		t.Helper()
		w, err := pgtest.Open(t).FindWorkspaceBySlug(ctx, slug)
		if err != nil {
			t.Fatal(err)
		}
		return w
	}
	type rotation struct {
		Slug, WebhookSecret string
		PreviousValidUntil  *string
	}
	// rotate runs the command with --json and checks what every rotation
	// prints: the new secret, never a previous one.
	rotate := func(args ...string) (rotation, map[string]any) {
		t.Helper()
		out := c.mustRun(append([]string{"workspace", "update", "--slug", slug, "--rotate-webhook-secret", "--json"}, args...)...)
		var r rotation
		decodeOne(t, out, &r)
		var fields map[string]any
		json.Unmarshal([]byte(out), &fields)
		if w := stored(); r.WebhookSecret != w.WebhookSecret || (w.PreviousWebhookSecret != "" && strings.Contains(out, w.PreviousWebhookSecret)) {
			t.Fatalf("rotate %v printed %s: want the new secret and never the previous one", args, out)
		}
		return r, fields
	}
	until := func(r rotation, grace time.Duration) time.Time {
		t.Helper()
		if r.PreviousValidUntil == nil {
			t.Fatalf("previousValidUntil is null, want the end of a %s grace", grace)
		}
		at, err := time.Parse(time.RFC3339, *r.PreviousValidUntil)
		if err != nil {
			t.Fatalf("previousValidUntil %q: %v", *r.PreviousValidUntil, err)
		}
		if d := time.Until(at); d > grace || d < grace-time.Minute {
			t.Errorf("previousValidUntil %s is %s away, want about %s", at, d, grace)
		}
		if exp := stored().PreviousWebhookSecretExpiresAt; exp == nil || !exp.Equal(at) {
			t.Errorf("previousValidUntil %s, stored expiry %v: want the same instant", at, exp)
		}
		return at
	}

	// The default grace, 24 hours: both secrets are accepted.
	second, fields := rotate()
	until(second, 24*time.Hour)
	if w := stored(); w.PreviousWebhookSecret != cr.WebhookSecret {
		t.Error("the secret replaced is not kept as the previous one")
	}
	if code, _ := post(cr.WebhookSecret); code != http.StatusOK {
		t.Errorf("signed with the old secret during the grace: %d, want 200", code)
	}
	if code, _ := post(second.WebhookSecret); code != http.StatusOK {
		t.Errorf("signed with the new secret: %d, want 200", code)
	}
	if len(fields) != 4 {
		t.Errorf("--json printed %v, want id, slug, webhookSecret and previousValidUntil", fields)
	}

	// The text says until when; rotating again keeps only the secret it
	// replaces: the first one is refused although its grace had not ended.
	text := c.mustRun("workspace", "update", "--slug", slug, "--rotate-webhook-secret", "--grace", "1h")
	third := stored()
	exp := third.PreviousWebhookSecretExpiresAt
	if exp == nil || third.PreviousWebhookSecret != second.WebhookSecret {
		t.Fatalf("after a second rotation, the previous secret is not the second one (expiry %v)", exp)
	}
	want := "The previous one keeps working until " + exp.UTC().Format(time.RFC3339)
	if !strings.Contains(text, "new webhook secret: "+third.WebhookSecret) || !strings.Contains(text, want) ||
		strings.Contains(text, "refused from now on") || strings.Contains(text, second.WebhookSecret) {
		t.Errorf("update --rotate-webhook-secret --grace 1h printed:\n%s\nwant the new secret and %q, never the previous one", text, want)
	}
	if d := time.Until(*exp); d > time.Hour || d < 59*time.Minute {
		t.Errorf("--grace 1h: the previous secret expires in %s", d)
	}
	if code, _ := post(cr.WebhookSecret); code != http.StatusUnauthorized {
		t.Errorf("signed with the first secret after a second rotation: %d, want 401", code)
	}
	if code, _ := post(second.WebhookSecret); code != http.StatusOK {
		t.Errorf("signed with the second secret during its grace: %d, want 200", code)
	}

	// The grace ended (set in the past, not waited for): the previous
	// secret is refused as a wrong one is.
	if _, err := admin.Pool.Exec(ctx, `UPDATE workspaces SET previous_webhook_secret_expires_at = now() - interval '1 second' WHERE slug = $1`, slug); err != nil {
		t.Fatal(err)
	}
	_, wrongMsg := post("whsec_guess")
	if code, msg := post(second.WebhookSecret); code != http.StatusUnauthorized || msg != wrongMsg {
		t.Errorf("signed with the previous secret after its expiry: %d %q, want 401 %q", code, msg, wrongMsg)
	}
	if code, _ := post(third.WebhookSecret); code != http.StatusOK {
		t.Errorf("signed with the current secret: %d, want 200", code)
	}

	// --grace 0: as before grace periods, the old secret is refused at once.
	fourth, fields := rotate("--grace", "0")
	if v, ok := fields["previousValidUntil"]; !ok || v != nil || fourth.PreviousValidUntil != nil {
		t.Errorf("--grace 0 --json: previousValidUntil %v (present %v), want null", v, ok)
	}
	if w := stored(); w.PreviousWebhookSecret != "" || w.PreviousWebhookSecretExpiresAt != nil {
		t.Errorf("--grace 0 kept a previous secret (expiry %v)", w.PreviousWebhookSecretExpiresAt)
	}
	if code, _ := post(third.WebhookSecret); code != http.StatusUnauthorized {
		t.Errorf("signed with the old secret after --grace 0: %d, want 401", code)
	}
	if code, _ := post(fourth.WebhookSecret); code != http.StatusOK {
		t.Errorf("signed with the new secret after --grace 0: %d, want 200", code)
	}
	text = c.mustRun("workspace", "update", "--slug", slug, "--rotate-webhook-secret", "--grace", "0s")
	if !strings.Contains(text, "The previous one is refused from now on") || strings.Contains(text, "keeps working") {
		t.Errorf("--grace 0 printed:\n%s\nwant the previous one refused from now on", text)
	}
	fifth := stored()
	sixth, _ := rotate("--grace", "168h")
	until(sixth, 7*24*time.Hour)

	// Refusals: a usage error naming --grace, nothing printed, nothing changed.
	before := stored()
	ws, _ := strconv.ParseInt(cr.ID, 10, 64)
	audits := func() []*c360.AuditEntry {
		t.Helper()
		entries, _, _, err := admin.FindAuditEntries(ctx, ws, c360.AuditFilter{First: 50, Action: c360.AuditWebhookSecretRotate})
		if err != nil {
			t.Fatal(err)
		}
		return entries
	}
	audited := len(audits())
	for _, args := range [][]string{
		{"--rotate-webhook-secret", "--grace", "-1s"},
		{"--rotate-webhook-secret", "--grace", "168h1s"},
		{"--rotate-webhook-secret", "--grace", "8760h"},
		{"--grace", "1h"},
		{"--grace", "0"},
		{"--grace", "1h", "--twilio-sms-from", "+15550001111"},
		{"--rotate-webhook-secret", "--grace", "1d"},
	} {
		stdout, _, err := c.run(append([]string{"workspace", "update", "--slug", slug}, args...)...)
		if exitCodeOf(err) != 2 || !strings.Contains(fmt.Sprint(err), "grace") || stdout != "" {
			t.Errorf("update %v: err %v (exit %d), stdout %q; want a usage error naming --grace, exit 2, nothing printed", args, err, exitCodeOf(err), stdout)
		}
		after := stored()
		if after.WebhookSecret != before.WebhookSecret || after.PreviousWebhookSecret != before.PreviousWebhookSecret ||
			!after.PreviousWebhookSecretExpiresAt.Equal(*before.PreviousWebhookSecretExpiresAt) || after.TwilioSMSFrom != before.TwilioSMSFrom {
			t.Errorf("update %v changed the workspace", args)
		}
	}
	if got := len(audits()); got != audited {
		t.Errorf("refused commands were audited: %d entries, want %d", got, audited)
	}

	// Each rotation is audited with its grace and the end of it, never a
	// secret; newest first.
	entries := audits()
	var graces []any
	for _, e := range entries {
		graces = append(graces, e.Detail["graceSeconds"])
		for _, s := range []string{cr.WebhookSecret, second.WebhookSecret, third.WebhookSecret, fourth.WebhookSecret, fifth.WebhookSecret, sixth.WebhookSecret} {
			if strings.Contains(fmt.Sprint(e.Detail), s) {
				t.Errorf("audit entry holds a secret: %+v", e)
			}
		}
	}
	if fmt.Sprint(graces) != "[604800 0 0 3600 86400]" {
		t.Errorf("audited graces (newest first) %v, want [604800 0 0 3600 86400]", graces)
	}
	if len(entries) == 5 {
		if entries[0].Detail["previousValidUntil"] != *sixth.PreviousValidUntil {
			t.Errorf("audit detail %v, want previousValidUntil %s", entries[0].Detail, *sixth.PreviousValidUntil)
		}
		if _, ok := entries[1].Detail["previousValidUntil"]; ok {
			t.Errorf("audit detail of a rotation with no grace: %v, want no previousValidUntil", entries[1].Detail)
		}
	}
}

// A DATABASE_URL that cannot be used is refused with the reason and never
// with the password: an unescaped @ in it would make pgx take the rest of
// the password as the host, which every connection error then printed.
func TestMalformedDatabaseURLIsNamedWithoutThePassword(t *testing.T) {
	for _, tc := range []struct{ url, want string }{
		{"postgres://c360:Tr0ub4dor@3xyzzy@127.0.0.1:1/c360?sslmode=disable", "percent-encode the password (@ as %40)"},
		// pgx ends the userinfo only at the first @ before a /: a # or ?
		// earlier in the password does not end it.
		{"postgres://c360:Tr0ub#4dor@3xyzzy@127.0.0.1:1/c360?sslmode=disable", "percent-encode the password (@ as %40)"},
		{"postgresql://c360:Tr0ub?4dor@3xyzzy@127.0.0.1:1/c360?sslmode=disable", "percent-encode the password (@ as %40)"},
		{"postgres://c360:Tr0ub4dor3xyzzy@127.0.0.1:1/c360?sslmode=disable&pool_max_conns=abc", "pool_max_conns"},
		{"postgres://c360:Tr0ub4dor3xyzzy@127.0.0.1:1/c360?sslmode=requir", "sslmode"},
	} {
		for _, args := range [][]string{{"migrate", "status"}, {"workspace", "create", "--slug", "badurl"}} {
			var stdout, stderr logbuf.Buffer
			m := NewMain(&stdout, &stderr, func(k string) string {
				if k == "DATABASE_URL" {
					return tc.url
				}
				return ""
			})
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			err := m.Run(ctx, args)
			cancel()
			msg := c360.ErrorMessageOrText(err)
			if err == nil || exitCode(err) != 2 || !strings.Contains(msg, tc.want) || !strings.Contains(msg, "DATABASE_URL") {
				t.Errorf("%s with %s: %v (exit %d), want exit 2 naming DATABASE_URL and %q", args, tc.url, err, exitCode(err), tc.want)
			}
			if err == nil {
				continue
			}
			for _, out := range []string{msg, err.Error(), errorText(err), stdout.String(), stderr.String()} {
				if strings.Contains(out, "xyzzy") {
					t.Errorf("%s with %s: the password reached the output: %q", args, tc.url, out)
				}
			}
		}
	}
}

// A keyword/value DATABASE_URL is not read as a URL: a password holding
// "://" and @s is only a value there, which pgx parses.
func TestKeywordValueDatabaseURLWithAtSignsIsAccepted(t *testing.T) {
	u, err := url.Parse(pgtest.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	dsn := fmt.Sprintf("host=%s port=%s user=%s dbname=%s sslmode=disable password='a://@@'",
		u.Hostname(), u.Port(), u.User.Username(), strings.TrimPrefix(u.Path, "/"))
	c := &cli{t: t, env: map[string]string{"DATABASE_URL": dsn}}
	stdout, stderr, err := c.run("migrate", "status")
	if err != nil {
		t.Fatalf("migrate status with %s: %v (exit %d), stderr %q; want it accepted", dsn, err, exitCode(err), stderr)
	}
	if !strings.Contains(stdout, "00001_init.sql") {
		t.Errorf("migrate status printed %q %q, want the migrations' states", stdout, stderr)
	}
}

// A command that cannot reach the database says where it tried and why,
// as pgx says it, without the password: "the database is unavailable;
// retry" alone leaves the operator to guess.
func TestUnreachableDatabaseIsNamed(t *testing.T) {
	env := map[string]string{"DATABASE_URL": "postgres://c360:s3cretpw@127.0.0.1:1/c360?sslmode=disable"}
	for _, args := range [][]string{
		{"workspace", "create", "--slug", "unreachable"},
		{"apikey", "create", "--workspace", "unreachable", "--role", "agent"},
		{"apikey", "list", "--workspace", "unreachable"},
		{"migrate", "status"},
	} {
		var stdout, stderr logbuf.Buffer
		m := NewMain(&stdout, &stderr, func(k string) string { return env[k] })
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		err := m.Run(ctx, args)
		cancel()
		if err == nil {
			t.Errorf("%v with the database down succeeded", args)
			continue
		}
		got := errorText(err)
		if !strings.Contains(got, "127.0.0.1:1") || !strings.Contains(got, "connection refused") {
			t.Errorf("%v: %q, want host:port and pgx's cause", args, got)
		}
		if strings.Contains(got, "s3cretpw") || strings.Contains(stderr.String(), "s3cretpw") {
			t.Errorf("%v: the password reached the output: %q", args, got)
		}
	}
}
