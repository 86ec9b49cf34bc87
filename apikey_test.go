package c360_test

import (
	"testing"

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
