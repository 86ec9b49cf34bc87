package main

import (
	"testing"
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
