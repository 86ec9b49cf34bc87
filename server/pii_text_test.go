package server_test

import (
	"context"
	"strings"
	"testing"

	"github.com/c360dev/c360"
)

// Free text carries personal data too: a message body, the ledger's reason
// for a merge. An assistant without the pii scope sees it masked.
func TestFreeTextMaskedForAssistants(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	assistant, _, err := e.db.CreateAPIKey(ctx, e.slug, c360.RoleAssistant, nil)
	if err != nil {
		t.Fatal(err)
	}
	withPII, _, err := e.db.CreateAPIKey(ctx, e.slug, c360.RoleAssistant, []string{c360.ScopePII})
	if err != nil {
		t.Fatal(err)
	}
	// An inbound SMS whose body holds an email, and a merge whose reason names a phone.
	_, err = e.db.Ingest(ctx, e.ws, []*c360.Event{{Type: c360.EventMessage, Source: "twilio", DedupeKey: "SMtext",
		Identities: []c360.Identity{{Type: "phone", Value: "+14155550133"}},
		Message: &c360.MessageInput{Channel: "sms", Direction: "inbound", Body: "write to jane.doe@example.com or call +1 415 555 0177",
			ProviderID: "SMtext", Status: "received"}}})
	if err != nil {
		t.Fatal(err)
	}
	e.identify(t, map[string]any{"identities": ids("email", "jane.doe@example.com")})
	e.identify(t, map[string]any{"identities": ids("email", "jane.doe@example.com", "phone", "+14155550133")})

	const q = `{ customerByIdentity(type: "phone", value: "+14155550133") {
		merges { reason }
		conversations { edges { node { messages { edges { node { body } } } } } } } }`
	masked := gql(t, e.srv, assistant, q, nil)
	masked.ok(t, nil)
	for _, secret := range []string{"jane.doe@example.com", "+1 415 555 0177"} {
		if strings.Contains(string(masked.Data), secret) {
			t.Errorf("assistant without pii scope saw %q: %s", secret, masked.Data)
		}
	}
	if !strings.Contains(string(masked.Data), `email \"j***@example.com\" links`) || !strings.Contains(string(masked.Data), "0177") {
		t.Errorf("masked answer lacks the masked forms: %s", masked.Data)
	}
	clear := gql(t, e.srv, withPII, q, nil)
	clear.ok(t, nil)
	for _, secret := range []string{`email \"jane.doe@example.com\" links`, "+1 415 555 0177"} {
		if !strings.Contains(string(clear.Data), secret) {
			t.Errorf("assistant with the pii scope did not see %q: %s", secret, clear.Data)
		}
	}
}
