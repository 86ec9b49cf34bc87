package server_test

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/server"
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

// A change's diff names identities and free text under keys that say
// nothing of them: identities a limit dropped (the new customer's change
// names the phone it could not take, and the other customer's emails), a
// custom phone identity, an operator's reason. An assistant without the pii scope reads them masked,
// as it reads Customer.identities and merges; one with it reads them whole.
func TestChangeDiffsMaskedForAssistants(t *testing.T) {
	e := newRTEnv(t, rtOptions{})
	ctx := context.Background()
	slug := workspaceSlug(t, e)
	masked, _, err := e.db.CreateAPIKey(ctx, slug, c360.RoleAssistant, nil)
	if err != nil {
		t.Fatal(err)
	}
	clear, _, err := e.db.CreateAPIKey(ctx, slug, c360.RoleAssistant, []string{c360.ScopePII})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.db.UpdateIdentityRules(ctx, e.ws, c360.IdentityRules{Limits: map[string]int{"email": 1}, DefaultLimit: 5}); err != nil {
		t.Fatal(err)
	}
	phone := c360.Identity{Type: "phone", Value: "+14155550122"}
	cust := ingest(t, e.db, e.ws, []c360.Identity{phone, {Type: "email", Value: "first@example.com"}}, nil)

	clients := map[string]*wsClient{}
	for name, key := range map[string]string{"masked": masked, "clear": clear} {
		c := dialWS(t, wsURL(e.srv), "graphql-transport-ws", nil)
		c.init(key)
		c.subscribe("1", `subscription { customerChanges { kind diff } }`, nil)
		clients[name] = c
	}
	waitFor(t, "both subscriptions to start", func() bool { return e.hub.Stats().Subscribers >= 2 })

	now := time.Now().UTC()
	for _, ids := range [][]c360.Identity{
		{phone, {Type: "work_phone", Value: "(415) 555-0177"}},
		{phone, {Type: "email", Value: "second.secret@example.com"}}, // dropped by the limit
	} {
		if _, err := e.db.Ingest(ctx, e.ws, []*c360.Event{{Type: c360.EventIdentify, Identities: ids,
			Source: "test", DedupeKey: randomID(), OccurredAt: now, ReceivedAt: now}}); err != nil {
			t.Fatal(err)
		}
	}
	other := ingest(t, e.db, e.ws, []c360.Identity{{Type: "user_id", Value: "u-other"}}, nil)
	if _, err := e.db.MergeCustomers(ctx, e.ws, cust, other, true, "key x", "caller confirmed 415-555-0100 and jane@example.com"); err != nil {
		t.Fatal(err)
	}
	secrets := []string{"(415) 555-0177", "second.secret@example.com", "+14155550122", "415-555-0100", "jane@example.com"}
	for name, c := range clients {
		var diffs []string
		// identity_added, created (dropped), created (other), merged_into,
		// merged: in order per customer, in any order across customers.
		for range 5 {
			var ch struct {
				Kind string
				Diff json.RawMessage
			}
			c.next("1", "customerChanges", &ch)
			diffs = append(diffs, ch.Kind+" "+string(ch.Diff))
		}
		all := strings.Join(diffs, "\n")
		for _, s := range secrets {
			if got := strings.Contains(all, s); got != (name == "clear") {
				t.Errorf("%s assistant: %q in its diffs = %v, want %v:\n%s", name, s, got, name == "clear", all)
			}
		}
		if name == "masked" {
			for _, want := range []string{`"value":"******0177"`, `s***@example.com`, `+1******0122`, `j***@example.com`} {
				if !strings.Contains(all, want) {
					t.Errorf("masked assistant's diffs lack %s:\n%s", want, all)
				}
			}
		}
	}
}

// A change's diff copies an event's name and an observation's source,
// free text their writers chose: an assistant without the pii scope reads
// them masked in the change feed as it reads Event.name and
// Observation.source, a number alone included; one with it reads them whole.
func TestChangeDiffMasksEventNameAndObservationSource(t *testing.T) {
	e := newRTEnv(t, rtOptions{})
	ctx := context.Background()
	slug := workspaceSlug(t, e)
	masked, _, err := e.db.CreateAPIKey(ctx, slug, c360.RoleAssistant, nil)
	if err != nil {
		t.Fatal(err)
	}
	clear, _, err := e.db.CreateAPIKey(ctx, slug, c360.RoleAssistant, []string{c360.ScopePII})
	if err != nil {
		t.Fatal(err)
	}
	phone := c360.Identity{Type: "phone", Value: "+14155550122"}
	cust := ingest(t, e.db, e.ws, []c360.Identity{phone}, nil)
	clients := map[string]*wsClient{}
	for name, key := range map[string]string{"masked": masked, "clear": clear} {
		c := dialWS(t, wsURL(e.srv), "graphql-transport-ws", nil)
		c.init(key)
		c.subscribe("1", `subscription { customerChanges { kind diff } }`, nil)
		clients[name] = c
	}
	waitFor(t, "both subscriptions to start", func() bool { return e.hub.Stats().Subscribers >= 2 })

	now := time.Now().UTC()
	if _, err := e.db.Ingest(ctx, e.ws, []*c360.Event{{Type: c360.EventTrack, Name: "Callback requested by +14155550199",
		Identities: []c360.Identity{phone}, Source: "segment", DedupeKey: randomID(), OccurredAt: now, ReceivedAt: now}}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.db.RecordObservation(ctx, e.ws, c360.ObservationInput{CustomerID: cust, Text: "asked for a callback",
		Source: "4155550188", RecordedBy: "key x", RecordedByRole: c360.RoleAgent}); err != nil {
		t.Fatal(err)
	}
	for name, c := range clients {
		var diffs []string
		for range 2 {
			var ch struct {
				Kind string
				Diff json.RawMessage
			}
			c.next("1", "customerChanges", &ch)
			diffs = append(diffs, string(ch.Diff))
		}
		all := strings.Join(diffs, "\n")
		for _, s := range []string{"+14155550199", "4155550188"} {
			if got := strings.Contains(all, s); got != (name == "clear") {
				t.Errorf("%s assistant: %q in its diffs = %v, want %v:\n%s", name, s, got, name == "clear", all)
			}
		}
		if name == "masked" {
			for _, want := range []string{`"name":"Callback requested by +1******0199"`, `"source":"******0188"`} {
				if !strings.Contains(all, want) {
					t.Errorf("masked assistant's diffs lack %s:\n%s", want, all)
				}
			}
		}
	}
}

// An observation's source and an event's name are free text their writers
// chose: an agent may record "call from +14155550100" as a source, and an
// app may name an event after whom it concerns. An assistant without the
// pii scope reads them masked, in the structured fields and in
// customerContext's text; an agent reads them whole, and its read is
// audited as pii.read.
func TestObservationSourceAndEventNameMaskedForAssistants(t *testing.T) {
	e := newSecEnv(t, server.Config{})
	const (
		source = "call from " + janePhone + ", cc " + janeEmail
		name   = "Callback requested by " + janePhone
	)
	gql(t, e.srv, e.keys["agent"], `mutation($id: ID!, $source: String!) {
		recordObservation(customerId: $id, text: "asked for a callback", source: $source) { id } }`,
		map[string]any{"id": e.cust, "source": source}).ok(t, nil)
	gql(t, e.srv, e.keys["agent"], `mutation($email: String!, $name: String!) {
		track(input: {identities: [{type: "email", value: $email}], event: $name}) { id } }`,
		map[string]any{"email": janeEmail, "name": name}).ok(t, nil)

	queries := []string{
		`query($id: ID!) { customer(id: $id) { observations { text source } } }`,
		`query($id: ID!) { customer(id: $id) { events(first: 10) { edges { node { name } } } } }`,
		`query($id: ID!) { customerContext(id: $id) { text observations { source } recentEvents { name } } }`,
	}
	for _, q := range queries {
		body := gql(t, e.srv, e.keys["assistant"], q, map[string]any{"id": e.cust})
		body.ok(t, nil)
		for _, raw := range []string{janeEmail, janePhone} {
			if strings.Contains(string(body.Data), raw) {
				t.Errorf("assistant read %q unmasked: %s", raw, body.Data)
			}
		}
		if !strings.Contains(string(body.Data), janePhoneMasked) {
			t.Errorf("assistant's answer lacks the masked phone %q: %s", janePhoneMasked, body.Data)
		}
	}
	if got := e.auditLog(t, map[string]any{"a": c360.AuditPIIRead}); len(got) != 0 {
		t.Errorf("masked reads recorded as pii.read: %+v", got)
	}

	// An agent reads them whole, and the read is audited.
	for _, q := range queries {
		body := gql(t, e.srv, e.keys["agent"], q, map[string]any{"id": e.cust})
		body.ok(t, nil)
		if !strings.Contains(string(body.Data), janePhone) {
			t.Errorf("agent did not read %q whole: %s", janePhone, body.Data)
		}
	}
	var fields []string
	for _, r := range e.auditLog(t, map[string]any{"a": c360.AuditPIIRead, "c": e.cust}) {
		fields = append(fields, r.Fields...)
	}
	for _, f := range []string{"source(email)", "source(phone)", "name(phone)",
		"customerContext.text.observations.source.email", "customerContext.text.observations.source.phone",
		"customerContext.text.events.name.phone"} {
		if !slices.Contains(fields, f) {
			t.Errorf("pii.read fields %v lack %s", fields, f)
		}
	}
}

// Keys of traits and properties are data too: an app may keep invitees by
// address or replies by number. An assistant without the pii scope reads
// such keys masked wherever a trait's or property's name is shown
// (Customer.traits, TraitSource.name, Event.properties as stored,
// customerContext's traits and text); an agent reads them whole, and the
// audit log names them masked.
func TestKeysHoldingPersonalDataMaskedForAssistants(t *testing.T) {
	e := newSecEnv(t, server.Config{})
	const (
		invitee = "bob.smith@example.com"
		number  = "+14155550177"
	)
	invitees := map[string]any{invitee: "accepted", number: "declined"}
	gql(t, e.srv, e.keys["agent"], `mutation($email: String!, $traits: JSON!, $props: JSON!) {
		identify(input: {identities: [{type: "email", value: $email}], traits: $traits}) { id }
		track(input: {identities: [{type: "email", value: $email}], event: "Invited", properties: $props}) { id } }`,
		map[string]any{"email": janeEmail, "traits": map[string]any{"invitees": invitees, invitee: "vip, via alice@example.com"},
			"props": map[string]any{"invitees": invitees}}).ok(t, nil)

	queries := []string{
		`query($id: ID!) { customer(id: $id) { traits traitSources { name value } } }`,
		`query($id: ID!) { customer(id: $id) { events(first: 10) { edges { node { properties } } } } }`,
		`query($id: ID!) { customerContext(id: $id) { text traits } }`,
	}
	for _, q := range queries {
		body := gql(t, e.srv, e.keys["assistant"], q, map[string]any{"id": e.cust})
		body.ok(t, nil)
		for _, raw := range []string{invitee, number} {
			if strings.Contains(string(body.Data), raw) {
				t.Errorf("assistant read %q unmasked: %s", raw, body.Data)
			}
		}
		if !strings.Contains(string(body.Data), "b***@example.com") || !strings.Contains(string(body.Data), "+1******0177") {
			t.Errorf("assistant's answer lacks the masked keys: %s", body.Data)
		}
	}
	for _, q := range queries {
		body := gql(t, e.srv, e.keys["agent"], q, map[string]any{"id": e.cust})
		body.ok(t, nil)
		if !strings.Contains(string(body.Data), invitee) || !strings.Contains(string(body.Data), number) {
			t.Errorf("agent did not read the keys whole: %s", body.Data)
		}
	}
	var fields []string
	for _, r := range e.auditLog(t, map[string]any{"a": c360.AuditPIIRead, "c": e.cust}) {
		fields = append(fields, r.Fields...)
	}
	all := strings.Join(fields, " ")
	for _, f := range []string{"traits.invitees.b***@example.com", "properties.invitees.+1******0177",
		"customerContext.text.traits.b***@example.com", "name(email)", "traitSources.b***@example.com"} {
		if !slices.Contains(fields, f) {
			t.Errorf("pii.read fields %v lack %s", fields, f)
		}
	}
	if strings.Contains(all, invitee) || strings.Contains(all, number) {
		t.Errorf("the audit log holds a key's personal data: %v", fields)
	}
}

// A number alone is an id or a time, not a phone number, as a key as it is
// as a value: an assistant reads keys such as a Unix time or an EAN-13
// whole (traits, TraitSource.name, stored properties), and an agent's
// reads of them are not audited as phone numbers.
func TestNumberKeysAreNotPhoneNumbers(t *testing.T) {
	e := newSecEnv(t, server.Config{})
	keys := map[string]any{"1700000000": "seen", "4006381333931": map[string]any{"qty": 2}, "20240115103000": "batch"}
	var out struct{ Identify struct{ ID string } }
	gql(t, e.srv, e.keys["agent"], `mutation($email: String!, $traits: JSON!, $props: JSON!) {
		identify(input: {identities: [{type: "email", value: $email}], traits: $traits}) { id }
		track(input: {identities: [{type: "email", value: $email}], event: "Scanned", properties: $props}) { id } }`,
		map[string]any{"email": "scanner@example.com", "traits": keys, "props": keys}).ok(t, &out)

	queries := []string{
		`query($id: ID!) { customer(id: $id) { traits traitSources { name value } } }`,
		`query($id: ID!) { customer(id: $id) { events(first: 10) { edges { node { properties } } } } }`,
	}
	for _, q := range queries {
		body := gql(t, e.srv, e.keys["assistant"], q, map[string]any{"id": out.Identify.ID})
		body.ok(t, nil)
		for k := range keys {
			if !strings.Contains(string(body.Data), `"`+k+`"`) {
				t.Errorf("assistant did not read key %s whole: %s", k, body.Data)
			}
		}
		gql(t, e.srv, e.keys["agent"], q, map[string]any{"id": out.Identify.ID}).ok(t, nil)
	}
	for _, r := range e.auditLog(t, map[string]any{"a": c360.AuditPIIRead, "c": out.Identify.ID}) {
		t.Errorf("reads of number keys audited as personal data: %v", r.Fields)
	}
}

// Phone numbers under keys that name a phone in several words
// (home_phone_number, contact_mobile, phoneNumbers) and under custom
// identity types that name one (msisdn) are masked for an assistant
// without the pii scope wherever they are read: traits, trait sources,
// event properties, identities and customerContext's text; an agent reads
// them whole.
func TestPhoneKeysByWordsMaskedForAssistants(t *testing.T) {
	e := newSecEnv(t, server.Config{})
	numbers := []string{"4155550166", "4155550167", "4155550168", "14155550169"}
	gql(t, e.srv, e.keys["agent"], `mutation($email: String!, $traits: JSON!, $props: JSON!, $msisdn: String!) {
		identify(input: {identities: [{type: "email", value: $email}, {type: "msisdn", value: $msisdn}], traits: $traits}) { id }
		track(input: {identities: [{type: "email", value: $email}], event: "Signed Up", properties: $props}) { id } }`,
		map[string]any{"email": janeEmail, "msisdn": numbers[3],
			"traits": map[string]any{"home_phone_number": numbers[0], "contact_mobile": numbers[1], "email_verified": true},
			"props":  map[string]any{"phoneNumbers": []any{numbers[2]}}}).ok(t, nil)
	queries := []string{
		`query($id: ID!) { customer(id: $id) { traits traitSources { name value } identities { type value } } }`,
		`query($id: ID!) { customer(id: $id) { events(first: 10) { edges { node { properties } } } } }`,
		`query($id: ID!) { customerContext(id: $id) { text traits identities { type value } } }`,
	}
	for _, q := range queries {
		masked := gql(t, e.srv, e.keys["assistant"], q, map[string]any{"id": e.cust})
		masked.ok(t, nil)
		for _, n := range numbers {
			if strings.Contains(string(masked.Data), n) {
				t.Errorf("assistant read %s unmasked: %s", n, masked.Data)
			}
		}
		if strings.Contains(q, "traits") && !strings.Contains(string(masked.Data), `"email_verified":true`) {
			t.Errorf("assistant's traits lack the flag email_verified: %s", masked.Data)
		}
		clear := gql(t, e.srv, e.keys["agent"], q, map[string]any{"id": e.cust})
		clear.ok(t, nil)
		if !strings.Contains(string(clear.Data), "41555501") {
			t.Errorf("agent did not read the numbers: %s", clear.Data)
		}
	}
}
