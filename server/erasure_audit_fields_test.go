package server_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/server"
)

// A read of personal data is audited by its path, and the path holds the
// keys of the traits read: a contact's name, an invitee's address (masked
// but for its first letter and domain). Once the customer is erased, her
// entries no longer hold them: the keys read * (docs/erasure.md, Audit
// log).
func TestEraseCustomerGeneralisesTheFieldsOfItsAuditedReads(t *testing.T) {
	e := newSecEnv(t, server.Config{})
	traits := map[string]any{"contacts": map[string]any{"Emma Doe": map[string]any{"phone": "+14155550166"},
		"bob.smith@example.com": "accepted"}}
	gql(t, e.srv, e.keys["agent"], `mutation($email: String!, $traits: JSON!) {
		identify(input: {identities: [{type: "email", value: $email}], traits: $traits}) { id } }`,
		map[string]any{"email": janeEmail, "traits": traits}).ok(t, nil)
	gql(t, e.srv, e.keys["agent"], `query($id: ID!) { customer(id: $id) { traits } }`, map[string]any{"id": e.cust}).ok(t, nil)

	fields := func() []string {
		var out []string
		for _, r := range e.auditLog(t, map[string]any{"a": c360.AuditPIIRead, "c": e.cust}) {
			out = append(out, r.Fields...)
		}
		return out
	}
	before := fields()
	for _, f := range []string{"traits.contacts.Emma Doe.phone", "traits.contacts.b***@example.com"} {
		if !slices.Contains(before, f) {
			t.Fatalf("pii.read fields %q lack %s", before, f)
		}
	}
	gql(t, e.srv, e.keys["admin"], `mutation($id: ID!) { eraseCustomer(id: $id, reason: "ticket 12") { customerId } }`,
		map[string]any{"id": e.cust}).ok(t, nil)
	after := fields()
	if len(after) == 0 {
		t.Fatal("the erasure removed the customer's pii.read entries; they are kept, generalised")
	}
	for _, f := range after {
		if strings.Contains(f, "Emma") || strings.Contains(f, "@example") || strings.Contains(f, "contacts") {
			t.Errorf("after the erasure a pii.read field holds a key of her traits: %q", after)
			break
		}
	}
	if !slices.Contains(after, "traits.*.*.phone") {
		t.Errorf("pii.read fields %q lack traits.*.*.phone", after)
	}
}
