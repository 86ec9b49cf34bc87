package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	stdlog "log"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/internal/logbuf"
	"github.com/c360dev/c360/internal/pgtest"
)

func TestAPIKeyRevokeAndList(t *testing.T) {
	c := newCLI(t)
	ctx := context.Background()
	slug := uniqueSlug("revoke")
	var cr creds
	decodeOne(t, c.mustRun("workspace", "create", "--slug", slug, "--json"), &cr)
	ws, _ := strconv.ParseInt(cr.ID, 10, 64)

	var k struct {
		APIKey, Role, Prefix string
		Scopes               []string
	}
	decodeOne(t, c.mustRun("apikey", "create", "--workspace", slug, "--role", "assistant", "--scopes", "pii", "--json"), &k)
	if k.Prefix == "" || !strings.HasPrefix(k.APIKey, "c360_"+k.Prefix+"_") || k.Role != "assistant" || fmt.Sprint(k.Scopes) != "[pii]" {
		t.Fatalf("apikey create --json = %+v, want the key, its role, its prefix and its scopes [pii]", k)
	}
	// A key without scopes says so: "scopes": [], not null nor left out,
	// so a masked assistant key is told apart from a pii one.
	maskedWS := uniqueSlug("masked")
	c.mustRun("workspace", "create", "--slug", maskedWS, "--json")
	masked := c.mustRun("apikey", "create", "--workspace", maskedWS, "--role", "assistant", "--json")
	var m map[string]any
	decodeOne(t, masked, &m)
	if sc, ok := m["scopes"].([]any); !ok || len(sc) != 0 {
		t.Fatalf("apikey create --json without --scopes = %s, want \"scopes\": []", masked)
	}
	db := pgtest.Open(t)
	p, err := db.Authenticate(ctx, k.APIKey)
	if err != nil {
		t.Fatalf("authenticate the new key: %v", err)
	}
	if !p.HasScope(c360.ScopePII) || p.KeyPrefix != k.Prefix {
		t.Errorf("principal = %+v, want scope pii and prefix %s", p, k.Prefix)
	}

	out := c.mustRun("apikey", "list", "--workspace", slug, "--json")
	var keys []map[string]any
	if err := json.Unmarshal([]byte(out), &keys); err != nil {
		t.Fatalf("apikey list --json: %v\n%s", err, out)
	}
	if len(keys) != 3 { // admin, write, the assistant
		t.Errorf("apikey list shows %d keys, want 3: %s", len(keys), out)
	}
	if keys[0]["prefix"] != k.Prefix || fmt.Sprint(keys[0]["scopes"]) != "[pii]" || keys[0]["revokedAt"] != nil {
		t.Errorf("newest key = %v, want the assistant key, scope pii, not revoked", keys[0])
	}
	for _, secret := range []string{k.APIKey, cr.APIKey, cr.WriteKey} {
		if strings.Contains(out, secret[len("c360_")+13:]) {
			t.Errorf("apikey list shows a secret: %s", out)
		}
	}

	var revoked struct {
		Prefix    string
		RevokedAt *time.Time
	}
	decodeOne(t, c.mustRun("apikey", "revoke", "--workspace", slug, "--prefix", k.Prefix, "--json"), &revoked)
	if revoked.Prefix != k.Prefix || revoked.RevokedAt == nil {
		t.Errorf("apikey revoke --json = %+v, want the key with revokedAt", revoked)
	}
	// A process that had not cached the key refuses it at once (one that
	// had, within 5 s: see server's TestAPIKeyManagementAndRevocation).
	if _, err := pgtest.Open(t).Authenticate(ctx, k.APIKey); c360.ErrorCode(err) != c360.EUNAUTHENTICATED {
		t.Errorf("authenticate a revoked key: %v, want UNAUTHENTICATED", err)
	}
	if text := c.mustRun("apikey", "list", "--workspace", slug); !strings.Contains(text, k.Prefix) || !strings.Contains(text, "REVOKED") {
		t.Errorf("apikey list:\n%s\nwant a table with the revoked key", text)
	}
	// Revoking it again changes nothing: it says so, with the first
	// revocation's time, in text and JSON, and records nothing.
	want := fmt.Sprintf("assistant key %s of %s already revoked at %s\n", k.Prefix, slug, revoked.RevokedAt.UTC().Format(time.RFC3339))
	if text := c.mustRun("apikey", "revoke", "--workspace", slug, "--prefix", k.Prefix); text != want {
		t.Errorf("apikey revoke of a revoked key printed %q, want %q", text, want)
	}
	var again struct{ RevokedAt *time.Time }
	decodeOne(t, c.mustRun("apikey", "revoke", "--workspace", slug, "--prefix", k.Prefix, "--json"), &again)
	if again.RevokedAt == nil || !again.RevokedAt.Equal(*revoked.RevokedAt) {
		t.Errorf("apikey revoke --json of a revoked key: revokedAt %v, want %v", again.RevokedAt, revoked.RevokedAt)
	}
	if entries, _, _, err := db.FindAuditEntries(ctx, ws, c360.AuditFilter{First: 10, Action: c360.AuditAPIKeyRevoke}); err != nil || len(entries) != 1 {
		t.Errorf("apikey.revoke entries after revoking three times = %+v, %v; want 1", entries, err)
	}

	// The changes are audited, with the command line as actor.
	for _, action := range []string{c360.AuditAPIKeyCreate, c360.AuditAPIKeyRevoke} {
		entries, _, _, err := db.FindAuditEntries(ctx, ws, c360.AuditFilter{First: 10, Action: action})
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, e := range entries {
			if e.Actor == c360.ActorCLI && e.Detail["prefix"] == k.Prefix {
				found = true
			}
		}
		if !found {
			t.Errorf("%s entries = %+v, want one by cli for %s", action, entries, k.Prefix)
		}
	}

	other := uniqueSlug("other")
	c.mustRun("workspace", "create", "--slug", other, "--json")
	for _, tc := range []struct {
		name string
		args []string
		code string // domain code, or "" for a usage error
	}{
		{"unknown prefix", []string{"revoke", "--workspace", slug, "--prefix", "000000000000"}, c360.ENOTFOUND},
		{"another workspace's key", []string{"revoke", "--workspace", other, "--prefix", prefixOf(cr.APIKey)}, c360.ENOTFOUND},
		{"unknown workspace", []string{"revoke", "--workspace", uniqueSlug("nobody"), "--prefix", k.Prefix}, c360.ENOTFOUND},
		{"missing prefix", []string{"revoke", "--workspace", slug}, ""},
		{"list without workspace", []string{"list"}, ""},
		{"unknown scope", []string{"create", "--workspace", slug, "--role", "agent", "--scopes", "PII"}, c360.EINVALID},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, _, err := c.run(append([]string{"apikey"}, tc.args...)...)
			if err == nil {
				t.Fatalf("succeeded with %q, want an error", out)
			}
			if tc.code == "" {
				if exitCode(err) != 2 {
					t.Errorf("exit code = %d, want 2 (usage): %v", exitCode(err), err)
				}
			} else if code := c360.ErrorCode(err); code != tc.code {
				t.Errorf("code = %q, want %q (%v)", code, tc.code, err)
			}
		})
	}
	// The admin key of the first workspace still works: nothing else was revoked.
	if _, err := pgtest.Open(t).Authenticate(ctx, cr.APIKey); err != nil {
		t.Errorf("the admin key stopped working: %v", err)
	}
}

// The command line refuses what createApiKey refuses, with the same
// message (c360.CheckKey; TestAPIKeyScopesApplyToTheirRole): the pii scope
// on a key other than an assistant's, and a scope given twice. Nothing is
// issued.
func TestAPIKeyScopesOfTheCommandLine(t *testing.T) {
	c := newCLI(t)
	slug := uniqueSlug("scopes")
	c.mustRun("workspace", "create", "--slug", slug, "--json")
	keys := func() int {
		t.Helper()
		var ks []map[string]any
		if err := json.Unmarshal([]byte(c.mustRun("apikey", "list", "--workspace", slug, "--json")), &ks); err != nil {
			t.Fatal(err)
		}
		return len(ks)
	}
	before := keys()
	for _, tc := range []struct{ role, scopes, want string }{
		{"admin", "pii", "the pii scope applies to assistant keys only"},
		{"agent", "pii", "the pii scope applies to assistant keys only"},
		{"write", "pii", "the pii scope applies to assistant keys only"},
		{"client", "pii", "the pii scope applies to assistant keys only"},
		{"assistant", "pii,pii", `the scope "pii" is given twice`},
		{"assistant", "pii, pii", `the scope "pii" is given twice`},
	} {
		out, _, err := c.run("apikey", "create", "--workspace", slug, "--role", tc.role, "--scopes", tc.scopes, "--json")
		if c360.ErrorCode(err) != c360.EINVALID || c360.ErrorMessage(err) != tc.want {
			t.Errorf("apikey create --role %s --scopes %s = %q, %v; want BAD_USER_INPUT %q", tc.role, tc.scopes, out, err, tc.want)
		}
	}
	if n := keys(); n != before {
		t.Errorf("apikey list shows %d keys after the refusals, want %d", n, before)
	}
	c.mustRun("apikey", "create", "--workspace", slug, "--role", "agent", "--json")
	c.mustRun("apikey", "create", "--workspace", slug, "--role", "assistant", "--scopes", "pii", "--json")
}

func prefixOf(secret string) string { return secret[len("c360_") : len("c360_")+12] }

// TestSecretsNeverLogged runs the server as `c360 serve` runs it, with its
// log captured, through a flow that handles every kind of secret: keys
// issued and used, a Twilio auth token and WhatsApp secret set, bad keys
// and bad signatures tried. No secret may appear in the log.
func TestSecretsNeverLogged(t *testing.T) {
	c := newCLI(t)
	slug := uniqueSlug("hygiene")
	var cr creds
	decodeOne(t, c.mustRun("workspace", "create", "--slug", slug, "--json"), &cr)
	const (
		authToken = "twilio-auth-token-5f0c1d2e3a4b"
		appSecret = "whatsapp-app-secret-77aa88bb"
		verify    = "whatsapp-verify-token-99cc"
	)
	c.mustRun("workspace", "update", "--slug", slug, "--twilio-account-sid", "AC0123456789abcdef0123456789abcdef",
		"--twilio-auth-token", authToken, "--whatsapp-app-secret", appSecret, "--whatsapp-verify-token", verify)

	addr := freeAddr(t)
	var stdout, stderr logbuf.Buffer
	env := map[string]string{"DATABASE_URL": c.env["DATABASE_URL"], "C360_ADDR": addr, "C360_SHUTDOWN_TIMEOUT": "5s"}
	m := NewMain(&stdout, &stderr, func(k string) string { return env[k] })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	stdOut := stdlog.Writer()
	go func() { done <- m.Run(ctx, []string{"serve", "--no-migrate"}) }()
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	base := "http://" + addr
	for deadline := time.Now().Add(10 * time.Second); ; {
		if resp, err := client.Get(base + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve did not start\nstderr: %s", stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	send := func(method, path, ctype, auth, body string, hdr map[string]string) string {
		t.Helper()
		req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	gqlBody := func(q string) string {
		b, _ := json.Marshal(map[string]any{"query": q})
		return string(b)
	}
	// Issue a key through GraphQL, use every key, and try bad ones.
	var created struct {
		Data struct {
			CreateAPIKey struct{ APIKey string }
		}
	}
	json.Unmarshal([]byte(send("POST", "/graphql", "application/json", "Bearer "+cr.APIKey,
		gqlBody(`mutation { createApiKey(role: AGENT) { apiKey } }`), nil)), &created)
	agentKey := created.Data.CreateAPIKey.APIKey
	if agentKey == "" {
		t.Fatal("createApiKey returned no key")
	}
	send("POST", "/graphql", "application/json", "Bearer "+agentKey,
		gqlBody(`mutation { identify(input: {identities: [{type: "email", value: "log@example.com"}]}) { id } }`), nil)
	send("POST", "/graphql", "application/json", "Bearer "+cr.WriteKey,
		gqlBody(`mutation { track(input: {identities: [{type: "email", value: "log@example.com"}], event: "E"}) { id } }`), nil)
	wrong := cr.APIKey[:len("c360_")+13] + "not-the-secret-at-all"
	send("POST", "/graphql", "application/json", "Bearer "+wrong, gqlBody(`{ __typename }`), nil)
	send("POST", "/graphql", "application/json", "Bearer "+agentKey+"x", gqlBody(`{ __typename }`), nil)
	send("POST", "/graphql", "application/json", "Basic "+base64.StdEncoding.EncodeToString([]byte(cr.APIKey+":")), gqlBody(`{ __typename }`), nil)
	// A query that fails, with a secret in its text.
	send("POST", "/graphql", "application/json", "Bearer "+cr.APIKey, gqlBody(`{ customerByIdentity(type: "email", value: "`+cr.WebhookSecret+`") { id } }`), nil)
	// The Segment API with a good and a bad write key.
	seg := `{"userId":"u1","event":"Logged","messageId":"log-1"}`
	send("POST", "/v1/track", "application/json", "Basic "+base64.StdEncoding.EncodeToString([]byte(cr.WriteKey+":")), seg, nil)
	send("POST", "/v1/track", "application/json", "Basic "+base64.StdEncoding.EncodeToString([]byte(wrong+":")), seg, nil)
	// RudderStack's beacon path carries the write key in its query string.
	beacon := `{"batch":[{"type":"track","userId":"u1","event":"Beacon","messageId":"log-2"}]}`
	send("POST", "/beacon/v1/batch?writeKey="+cr.WriteKey, "text/plain;charset=UTF-8", "", beacon, nil)
	send("POST", "/beacon/v1/batch?writeKey="+wrong, "text/plain;charset=UTF-8", "", beacon, nil)
	// Provider webhooks with bad signatures.
	send("POST", "/webhooks/twilio/"+slug, "application/x-www-form-urlencoded", "",
		"From=%2B14155550100&To=%2B14155550199&Body=hi&MessageSid=SMlog", map[string]string{"X-Twilio-Signature": "bad"})
	send("POST", "/webhooks/whatsapp/"+slug, "application/json", "", `{"object":"whatsapp_business_account","entry":[]}`,
		map[string]string{"X-Hub-Signature-256": "sha256=00"})
	send("GET", "/webhooks/whatsapp/"+slug+"?hub.mode=subscribe&hub.verify_token=wrong-"+verify+"&hub.challenge=1", "", "", "", nil)
	send("POST", "/webhooks/chatbot/"+slug, "application/json", "", `{"turns":[]}`,
		map[string]string{"X-C360-Signature": fmt.Sprintf("t=%d,v1=00", time.Now().Unix())})
	// A websocket handshake gorilla refuses: gqlgen logs it with the
	// standard log package.
	send("GET", "/graphql", "", "", "", map[string]string{"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13"})

	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not stop")
	}
	// serve gives the log package back as it found it: a later serve in
	// this process, or a test, must not write into this one's handler.
	if stdlog.Writer() != stdOut {
		t.Errorf("after serve, the log package still writes to %T, not to what it wrote to before", stdlog.Writer())
	}
	logs := stderr.String()
	if !strings.Contains(logs, "serving") {
		t.Fatalf("no server log captured:\n%s", logs)
	}
	// Every line is the JSON handler's, the libraries' lines too.
	if !strings.Contains(logs, "unable to upgrade") {
		t.Errorf("no line for the refused handshake:\n%s", logs)
	}
	for _, line := range strings.Split(strings.TrimSpace(logs), "\n") {
		if !json.Valid([]byte(line)) {
			t.Errorf("a log line that is not JSON: %s", line)
		}
	}
	for name, secret := range map[string]string{
		"admin key":      cr.APIKey,
		"admin secret":   cr.APIKey[len("c360_")+13:],
		"write key":      cr.WriteKey,
		"write secret":   cr.WriteKey[len("c360_")+13:],
		"agent key":      agentKey,
		"agent secret":   agentKey[len("c360_")+13:],
		"webhook secret": cr.WebhookSecret,
		"auth token":     authToken,
		"app secret":     appSecret,
		"verify token":   verify,
		"wrong key":      "not-the-secret-at-all",
	} {
		if strings.Contains(logs, secret) {
			t.Errorf("the log contains the %s:\n%s", name, grepLine(logs, secret))
		}
	}
}

func grepLine(s, sub string) string {
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			return l
		}
	}
	return ""
}
