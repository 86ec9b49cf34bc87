package main

import (
	"context"
	"encoding/json"
	"strconv"
	"testing"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/internal/pgtest"
)

func TestWorkspaceRules(t *testing.T) {
	c := newCLI(t)
	slug := uniqueSlug("rules")
	c.mustRun("workspace", "create", "--slug", slug)

	var got struct {
		Limits       map[string]int `json:"limits"`
		DefaultLimit int            `json:"defaultLimit"`
		Priority     []string       `json:"priority"`
		Blocked      []string       `json:"blocked"`
	}
	decodeOne(t, c.mustRun("workspace", "rules", "--slug", slug, "--json"), &got)
	if got.Limits["user_id"] != 1 || got.DefaultLimit != 5 {
		t.Fatalf("default rules = %+v, want user_id 1, default 5", got)
	}

	out := c.mustRun("workspace", "rules", "--slug", slug, "--limit", "email=2", "--default-limit", "3",
		"--priority", "crm_id, user_id", "--blocked", "qa@example.com", "--json")
	decodeOne(t, out, &got)
	if got.Limits["email"] != 2 || got.Limits["user_id"] != 1 || got.DefaultLimit != 3 ||
		len(got.Priority) != 2 || got.Priority[0] != "crm_id" || len(got.Blocked) != 1 {
		t.Errorf("updated rules = %+v", got)
	}
	// Printing again reads what was stored.
	decodeOne(t, c.mustRun("workspace", "rules", "--slug", slug, "--json"), &got)
	if got.Limits["email"] != 2 || got.DefaultLimit != 3 {
		t.Errorf("stored rules = %+v", got)
	}
	// As text, the limits are written as --limit takes them, sorted by
	// type: not Go's map syntax.
	want := "identity rules of " + slug + "\n  limits:        email=2, user_id=1 (others 3)\n  priority:      crm_id, user_id\n  blocked:       qa@example.com\n"
	if text := c.mustRun("workspace", "rules", "--slug", slug); text != want {
		t.Errorf("workspace rules printed\n%s\nwant\n%s", text, want)
	}

	for _, bad := range [][]string{
		{"--limit", "email=0"},
		{"--limit", "email"},
		{"--limit", "Email=2"},
		{"--priority", "email,email"},
	} {
		args := append([]string{"workspace", "rules", "--slug", slug}, bad...)
		if _, _, err := c.run(args...); err == nil {
			t.Errorf("c360 %v: no error, want a refusal", bad)
		}
	}
	if _, _, err := c.run("workspace", "rules", "--slug", "no-such-workspace"); err == nil {
		t.Errorf("unknown workspace: no error")
	}
}

// Changes of identity rules and provider secrets made on the command line
// are audited with the command line as actor, as over GraphQL: the rules in
// detail.rules, which secret changed but never the secret.
func TestWorkspaceChangesAreAudited(t *testing.T) {
	c := newCLI(t)
	ctx := context.Background()
	slug := uniqueSlug("audited")
	var cr creds
	decodeOne(t, c.mustRun("workspace", "create", "--slug", slug, "--json"), &cr)
	ws, _ := strconv.ParseInt(cr.ID, 10, 64)
	db := pgtest.Open(t)
	entries := func(action string) []*c360.AuditEntry {
		t.Helper()
		es, _, _, err := db.FindAuditEntries(ctx, ws, c360.AuditFilter{First: 10, Action: action})
		if err != nil {
			t.Fatal(err)
		}
		return es
	}

	c.mustRun("workspace", "rules", "--slug", slug) // printing changes nothing
	if es := entries(c360.AuditIdentityRulesUpdate); len(es) != 0 {
		t.Errorf("after printing the rules: %d entries, want none", len(es))
	}
	c.mustRun("workspace", "rules", "--slug", slug, "--blocked", "qa@example.com")
	es := entries(c360.AuditIdentityRulesUpdate)
	if len(es) != 1 || es[0].Actor != c360.ActorCLI {
		t.Fatalf("identity_rules.update entries = %+v, want one by cli", es)
	}
	rules, _ := json.Marshal(es[0].Detail["rules"])
	if got, want := string(rules), `{"blocked":["qa@example.com"],"defaultLimit":5,"limits":{"user_id":1},"priority":[]}`; got != want {
		t.Errorf("detail.rules = %s, want %s", got, want)
	}

	c.mustRun("workspace", "update", "--slug", slug, "--twilio-account-sid", "AC1") // no secret
	if es := entries(c360.AuditProviderSecretUpdate); len(es) != 0 {
		t.Errorf("after a change of no secret: %d entries, want none", len(es))
	}
	c.mustRun("workspace", "update", "--slug", slug, "--twilio-auth-token", "tok-secret-1", "--whatsapp-app-secret", "app-secret-2")
	es = entries(c360.AuditProviderSecretUpdate)
	if len(es) != 1 || es[0].Actor != c360.ActorCLI {
		t.Fatalf("provider_secret.update entries = %+v, want one by cli", es)
	}
	detail, _ := json.Marshal(es[0].Detail)
	if got, want := string(detail), `{"secrets":["twilioAuthToken","whatsappAppSecret"]}`; got != want {
		t.Errorf("detail = %s, want %s", got, want)
	}
}

// A rule flag given empty clears the rule; --default-limit 0 and a type's
// limit given twice are refused as usage errors, as updateIdentityRules
// refuses them, and change nothing.
func TestWorkspaceRulesClearAndRefuse(t *testing.T) {
	c := newCLI(t)
	slug := uniqueSlug("clear")
	c.mustRun("workspace", "create", "--slug", slug)
	type rules struct {
		Limits       map[string]int `json:"limits"`
		DefaultLimit int            `json:"defaultLimit"`
		Priority     []string       `json:"priority"`
		Blocked      []string       `json:"blocked"`
	}
	var got rules
	decodeOne(t, c.mustRun("workspace", "rules", "--slug", slug, "--limit", "email=2", "--default-limit", "3",
		"--priority", "crm_id,user_id", "--blocked", "qa@example.com,test@example.com", "--json"), &got)
	if len(got.Priority) != 2 || len(got.Blocked) != 2 {
		t.Fatalf("rules = %+v, want two priorities and two blocked values", got)
	}

	for _, bad := range [][]string{
		{"--default-limit", "0"},
		{"--default-limit", "-1"},
		{"--limit", "email=2", "--limit", "email=3"},
		// Given twice, the second would replace the first: a second
		// blocked address would unblock the first.
		{"--blocked", "qa2@example.com", "--blocked", "test2@example.com"},
		{"--priority", "user_id", "--priority", "crm_id"},
	} {
		args := append([]string{"workspace", "rules", "--slug", slug}, bad...)
		if _, _, err := c.run(args...); exitCode(err) != 2 || err == nil {
			t.Errorf("c360 %v: %v (exit %d), want a usage error", bad, err, exitCodeOf(err))
		}
	}
	decodeOne(t, c.mustRun("workspace", "rules", "--slug", slug, "--json"), &got)
	if got.Limits["email"] != 2 || got.DefaultLimit != 3 || len(got.Blocked) != 2 || got.Blocked[0] != "qa@example.com" ||
		len(got.Priority) != 2 || got.Priority[0] != "crm_id" {
		t.Errorf("after the refusals: %+v, want the rules unchanged", got)
	}

	decodeOne(t, c.mustRun("workspace", "rules", "--slug", slug, "--blocked", "", "--json"), &got)
	if len(got.Blocked) != 0 || len(got.Priority) != 2 {
		t.Errorf(`after --blocked "": %+v, want no blocked value and the priority kept`, got)
	}
	decodeOne(t, c.mustRun("workspace", "rules", "--slug", slug, "--priority", "", "--json"), &got)
	if len(got.Priority) != 0 {
		t.Errorf(`after --priority "": %+v, want no priority`, got)
	}
	decodeOne(t, c.mustRun("workspace", "rules", "--slug", slug, "--json"), &got)
	if len(got.Blocked) != 0 || len(got.Priority) != 0 || got.Limits["email"] != 2 {
		t.Errorf("stored rules = %+v, want both lists cleared, the limits kept", got)
	}
}
