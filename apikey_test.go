package c360_test

import (
	"testing"
	"time"

	"github.com/c360dev/c360"
)

// CheckKey is the one check of a key to issue, for the command line and
// createApiKey alike: a known role, known scopes, each once, each on the
// role it applies to.
func TestCheckKey(t *testing.T) {
	for _, tc := range []struct {
		role   c360.Role
		scopes []string
		want   string // the refusal's message, or "" when the key may be issued
	}{
		{c360.RoleAssistant, []string{"pii"}, ""},
		{c360.RoleAssistant, nil, ""},
		{c360.RoleAdmin, []string{}, ""},
		{c360.RoleAdmin, []string{"pii"}, "the pii scope applies to assistant keys only"},
		{c360.RoleAgent, []string{"pii"}, "the pii scope applies to assistant keys only"},
		{c360.RoleWrite, []string{"pii"}, "the pii scope applies to assistant keys only"},
		{c360.RoleClient, []string{"pii"}, "the pii scope applies to assistant keys only"},
		{c360.RoleAssistant, []string{"pii", "pii"}, `the scope "pii" is given twice`},
		{c360.RoleAssistant, []string{"PII"}, `unknown scope "PII": the known scope is pii`},
		{"owner", nil, `invalid role "owner": use admin, agent, assistant, write or client`},
	} {
		err := c360.CheckKey(tc.role, tc.scopes)
		if tc.want == "" {
			if err != nil {
				t.Errorf("CheckKey(%s, %q) = %v, want nil", tc.role, tc.scopes, err)
			}
			continue
		}
		if c360.ErrorCode(err) != c360.EINVALID || c360.ErrorMessage(err) != tc.want {
			t.Errorf("CheckKey(%s, %q) = %v, want BAD_USER_INPUT %q", tc.role, tc.scopes, err, tc.want)
		}
	}
}

// A principal is named by its key's prefix, the name the key listing shows
// and revocation takes, wherever it acts (the audit log, ledgers,
// provenance); one built without a prefix by its key's row id.
func TestPrincipalActor(t *testing.T) {
	p := &c360.Principal{KeyID: 12, KeyPrefix: "3f9a0c1b2d4e", Role: c360.RoleAgent}
	if got := p.Actor(); got != "key 3f9a0c1b2d4e" {
		t.Errorf("Actor() = %q, want key 3f9a0c1b2d4e", got)
	}
	if got := c360.NewAuditEntry(p, 1, "x", time.Time{}).Actor; got != p.Actor() {
		t.Errorf("the audit entry's actor = %q, want %q", got, p.Actor())
	}
	if got := (&c360.Principal{KeyID: 12, Role: c360.RoleAgent}).Actor(); got != "key #12" {
		t.Errorf("Actor() without a prefix = %q, want key #12", got)
	}
}
