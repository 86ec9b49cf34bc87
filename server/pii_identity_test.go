package server_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/server"
)

// An identity whose type says nothing of what it holds (user_id, crm_id,
// chatbot:webchat) may still hold an email address or a phone number
// inside its value: a channel's prefix (whatsapp:+1…, tel:+1…, wa_1…), a
// number written with a +, an address with a display name. An assistant without the pii
// scope reads them masked, as a trait's value under such a key is, in
// Customer.identities, a merge's identity, customerContext's identities
// and its text; one with the scope reads them whole, and the read is a
// pii.read.
func TestEmbeddedPersonalDataInIdentityValuesMaskedForAssistants(t *testing.T) {
	e := newSecEnv(t, server.Config{})
	values := []struct{ typ, value, raw, masked string }{
		{"crm_id", "+1 415 555 0188", "415 555 0188", "+1******0188"},
		{"chatbot:webchat", "whatsapp:+14155550199", "14155550199", "whatsapp:+1******0199"},
		{"user_id", "Ann Lee <ann.lee@corp.example>", "ann.lee@corp.example", "a***@corp.example"},
		{"sip_uri", "tel:+14155550177", "14155550177", "tel:+1******0177"},
		{"legacy_ref", "<jane.roe@example.com>", "jane.roe@example.com", "j***@example.com"},
		{"bot_session", "wa_14155550142", "14155550142", "wa_*******0142"},
	}
	// The first comes alone, a customer of its own, then with Jane's
	// email: the two merge, and the merge names an identity.
	ids := []map[string]any{}
	for _, v := range values {
		ids = append(ids, map[string]any{"type": v.typ, "value": v.value})
	}
	const identify = `mutation($ids: [IdentityInput!]!) { identify(input: {identities: $ids}) { id } }`
	gql(t, e.srv, e.keys["agent"], identify, map[string]any{"ids": ids[:1]}).ok(t, nil)
	gql(t, e.srv, e.keys["agent"], identify,
		map[string]any{"ids": append([]map[string]any{{"type": "email", "value": janeEmail}}, ids...)}).ok(t, nil)

	queries := []string{
		`query($id: ID!) { customer(id: $id) { identities { type value } merges { identity { type value } } } }`,
		`query($id: ID!) { customerContext(id: $id) { text identities { type value } merges { identity { type value } } } }`,
	}
	for _, q := range queries {
		body := gql(t, e.srv, e.keys["assistant"], q, map[string]any{"id": e.cust})
		body.ok(t, nil)
		data := string(body.Data)
		for _, v := range values {
			if strings.Contains(data, v.raw) {
				t.Errorf("assistant read %s %q unmasked: %s", v.typ, v.value, data)
			}
			if !strings.Contains(data, v.masked) {
				t.Errorf("assistant's answer lacks %s masked as %q: %s", v.typ, v.masked, data)
			}
		}
		if !strings.Contains(data, `"identity":{"type":"crm_id","value":"+1******0188"}`) {
			t.Errorf("the merge's identity is not read masked: %s", data)
		}
	}
	if got := e.auditLog(t, map[string]any{"a": c360.AuditPIIRead}); len(got) != 0 {
		t.Errorf("masked reads recorded as pii.read: %+v", got)
	}

	for _, q := range queries {
		body := gql(t, e.srv, e.keys["assistant+pii"], q, map[string]any{"id": e.cust})
		body.ok(t, nil)
		for _, v := range values {
			if !strings.Contains(string(body.Data), v.raw) {
				t.Errorf("assistant with the pii scope did not read %s %q whole: %s", v.typ, v.value, body.Data)
			}
		}
	}
	var fields []string
	for _, r := range e.auditLog(t, map[string]any{"a": c360.AuditPIIRead, "c": e.cust}) {
		fields = append(fields, r.Fields...)
	}
	for _, f := range []string{"identity.crm_id(phone)", "identity.chatbot:webchat(phone)", "identity.user_id(email)",
		"identity.sip_uri(phone)", "identity.legacy_ref(email)", "identity.bot_session(phone)",
		"customerContext.text.identity.crm_id", "customerContext.text.identity.user_id"} {
		if !slices.Contains(fields, f) {
			t.Errorf("pii.read fields %v lack %s", fields, f)
		}
	}
	for _, f := range fields {
		for _, v := range values {
			if strings.Contains(f, v.raw) {
				t.Errorf("the audit log holds an identity's value: %v", fields)
			}
		}
	}
}

// Ids of more digits than a phone number has (15), whatever joins them,
// are not phone numbers inside an identity's value: a Google Analytics
// client id, a Meta _fbp, a shop's id, a card-like number. (An order id
// written as a phone number is, or after a word and a colon, is masked:
// pii.TestIdentity.) An assistant without the pii scope
// reads them whole, as an id it can look up and tell apart, and a key
// that reads personal data reads them without a pii.read.
func TestAnalyticsIdsInIdentityValuesShownWithoutAudit(t *testing.T) {
	e := newSecEnv(t, server.Config{})
	values := map[string]string{
		"ga_client_id": "GA1.2.1234567890.1700000000",
		"fbp":          "fb.1.1700000000000.1234567890",
		"shop_ref":     "shop:12345678/987654321",
		"card_ref":     "4111 1111 1111 1111",
	}
	ids := []map[string]any{{"type": "email", "value": janeEmail}}
	for typ, v := range values {
		ids = append(ids, map[string]any{"type": typ, "value": v})
	}
	gql(t, e.srv, e.keys["agent"], `mutation($ids: [IdentityInput!]!) { identify(input: {identities: $ids}) { id } }`,
		map[string]any{"ids": ids}).ok(t, nil)

	const q = `query($id: ID!) { customer(id: $id) { identities { type value } } customerContext(id: $id) { text } }`
	for _, key := range []string{"assistant", "assistant+pii"} {
		body := gql(t, e.srv, e.keys[key], q, map[string]any{"id": e.cust})
		body.ok(t, nil)
		for typ, v := range values {
			if !strings.Contains(string(body.Data), `{"type":"`+typ+`","value":"`+v+`"}`) {
				t.Errorf("%s did not read %s %q whole: %s", key, typ, v, body.Data)
			}
		}
	}
	for _, r := range e.auditLog(t, map[string]any{"a": c360.AuditPIIRead, "c": e.cust}) {
		for _, f := range r.Fields {
			for typ := range values {
				if strings.Contains(f, typ) {
					t.Errorf("reading %s recorded as a pii.read: %v", typ, r.Fields)
				}
			}
		}
	}
}
