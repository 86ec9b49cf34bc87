package resolver

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/99designs/gqlgen/graphql"
	"github.com/vektah/gqlparser/v2/ast"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/graph/model"
	"github.com/c360dev/c360/pii"
)

// fieldCtx returns ctx as gqlgen gives it to a directive on Type.field.
func fieldCtx(ctx context.Context, object, field string) context.Context {
	return graphql.WithFieldContext(ctx, &graphql.FieldContext{Object: object,
		Field: graphql.CollectedField{Field: &ast.Field{Name: field}}})
}

func principalCtx(role c360.Role, scopes ...string) context.Context {
	return c360.NewContextWithPrincipal(context.Background(),
		&c360.Principal{WorkspaceID: 1, KeyID: 2, KeyPrefix: "abc", Role: role, Scopes: scopes})
}

func TestHasRole(t *testing.T) {
	r := &Resolver{}
	admins := []c360.Role{c360.RoleAdmin}
	readers := []c360.Role{c360.RoleAdmin, c360.RoleAgent, c360.RoleAssistant}
	for _, tc := range []struct {
		roles []c360.Role
		role  c360.Role
		want  string // error code, "" when the field runs
	}{
		{admins, c360.RoleAdmin, ""},
		{admins, c360.RoleAgent, c360.EFORBIDDEN},
		{admins, c360.RoleAssistant, c360.EFORBIDDEN},
		{admins, c360.RoleWrite, c360.EFORBIDDEN},
		{readers, c360.RoleAssistant, ""},
		{readers, c360.RoleWrite, c360.EFORBIDDEN},
		{readers, "", c360.EUNAUTHENTICATED},
	} {
		ctx := fieldCtx(context.Background(), "Query", "customers")
		if tc.role != "" {
			ctx = fieldCtx(principalCtx(tc.role), "Query", "customers")
		}
		ran := false
		_, err := r.hasRole(ctx, nil, func(context.Context) (any, error) { ran = true; return "ok", nil }, tc.roles)
		if got := c360.ErrorCode(err); got != tc.want || ran != (tc.want == "") {
			t.Errorf("roles %v, caller %q: code %q, ran %v; want code %q", tc.roles, tc.role, got, ran, tc.want)
		}
	}
}

func TestPIIDirective(t *testing.T) {
	r := &Resolver{}
	jane := &c360.IdentityRecord{Identity: c360.Identity{Type: "email", Value: "jane@example.com"}, CustomerID: 9}
	traits := map[string]any{"email": "jane@example.com", "plan": "pro"}
	for _, tc := range []struct {
		name  string
		ctx   context.Context
		want  string
		pii   string // fields recorded as pii.read
		reads string
	}{
		{"assistant", principalCtx(c360.RoleAssistant), "j***@example.com|map[email:j***@example.com plan:pro]", "", ""},
		{"assistant with pii", principalCtx(c360.RoleAssistant, c360.ScopePII), "jane@example.com|map[email:jane@example.com plan:pro]", "[identity.email traits.email]", ""},
		{"agent", principalCtx(c360.RoleAgent), "jane@example.com|map[email:jane@example.com plan:pro]", "[identity.email traits.email]", ""},
	} {
		ctx, col := withCollector(tc.ctx)
		v, err := r.pii(fieldCtx(ctx, "Identity", "value"), jane,
			func(context.Context) (any, error) { return jane.Value, nil }, model.PiiKindIdentityValue)
		if err != nil {
			t.Fatal(err)
		}
		m, err := r.pii(fieldCtx(ctx, "Customer", "traits"), &c360.Customer{ID: 9},
			func(context.Context) (any, error) { return traits, nil }, model.PiiKindJSON)
		if err != nil {
			t.Fatal(err)
		}
		if got := fmt.Sprint(v, "|", m); got != tc.want {
			t.Errorf("%s: got %s, want %s", tc.name, got, tc.want)
		}
		if recorded := piiRead(col, 9); recorded != tc.pii {
			t.Errorf("%s: pii.read fields %q, want %q", tc.name, recorded, tc.pii)
		}
	}
	if traits["email"] != "jane@example.com" {
		t.Errorf("masking changed the stored traits: %v", traits)
	}
}

// withCollector returns ctx with an audit collector of its own, for its
// principal.
func withCollector(ctx context.Context) (context.Context, *collector) {
	col := &collector{p: c360.PrincipalFromContext(ctx)}
	return context.WithValue(ctx, collectorKey{}, col), col
}

// piiRead returns the fields col noted as read unmasked of customer, as
// the audit log would list them ("" for none).
func piiRead(col *collector, customer int64) string {
	var recorded string
	for _, e := range col.drain(time.Now()) {
		if e.Action == c360.AuditPIIRead && e.CustomerID == customer {
			recorded = fmt.Sprint(e.Fields)
		}
	}
	return recorded
}

// An event's properties come as stored (json.RawMessage): one without
// personal data passes on as the same bytes; one with it is masked for a
// key that may not see it, and noted for the audit log for one that may.
func TestPIIDirectiveOnStoredObjects(t *testing.T) {
	r := &Resolver{}
	event := &c360.Event{ID: 4, CustomerID: 9}
	plain := json.RawMessage(`{"sku": "SKU-0", "price": 5}`)
	personal := json.RawMessage(`{"sku": "SKU-0", "contact": {"email": "jane@example.com"}}`)
	stored := bytes.Clone(personal)
	for _, tc := range []struct {
		name string
		ctx  context.Context
		in   json.RawMessage
		want string
		pii  string
	}{
		{"assistant, plain", principalCtx(c360.RoleAssistant), plain, `{"sku": "SKU-0", "price": 5}`, ""},
		{"assistant, personal", principalCtx(c360.RoleAssistant), personal, `{"contact":{"email":"j***@example.com"},"sku":"SKU-0"}`, ""},
		{"agent, personal", principalCtx(c360.RoleAgent), personal, string(personal), "[properties.contact.email]"},
		// An escape sends the object to be decoded; with nothing personal
		// in it, the stored bytes still pass on.
		{"assistant, escaped, plain", principalCtx(c360.RoleAssistant), json.RawMessage(`{"note": "say \"hi\""}`),
			`{"note": "say \"hi\""}`, ""},
		// Decoded to be masked, numbers keep every digit, even past float64.
		{"assistant, personal, large numbers", principalCtx(c360.RoleAssistant),
			json.RawMessage(`{"email": "jane@example.com", "n": 12345678901234567, "big": 1e400}`),
			`{"big":1e400,"email":"j***@example.com","n":12345678901234567}`, ""},
	} {
		ctx, col := withCollector(tc.ctx)
		v, err := r.pii(fieldCtx(ctx, "Event", "properties"), event,
			func(context.Context) (any, error) { return tc.in, nil }, model.PiiKindJSON)
		if err != nil {
			t.Fatal(err)
		}
		got, ok := v.(json.RawMessage)
		if !ok || string(got) != tc.want {
			t.Errorf("%s: got %T %s, want %s", tc.name, v, v, tc.want)
		}
		if recorded := piiRead(col, 9); recorded != tc.pii {
			t.Errorf("%s: pii.read fields %q, want %q", tc.name, recorded, tc.pii)
		}
	}
	if !bytes.Equal(personal, stored) || !strings.Contains(string(personal), "jane@example.com") {
		t.Errorf("masking changed the stored object: %s, was %s", personal, stored)
	}
	// Stored bytes that do not decode are an error, never passed on.
	ctx := fieldCtx(principalCtx(c360.RoleAssistant), "Event", "properties")
	if v, err := r.pii(ctx, event, func(context.Context) (any, error) { return json.RawMessage(`{"email": `), nil },
		model.PiiKindJSON); err == nil {
		t.Errorf("undecodable properties gave %s and no error", v)
	}
}

// The audit log names an identity's personal data by its type when the
// type says what it holds (the same rule as masking, pii.IdentityKind),
// else by type and the kind its value's shape revealed.
func TestIdentityField(t *testing.T) {
	for _, c := range []struct {
		typ  string
		kind pii.Kind
		want string
	}{
		{"email", pii.KindEmail, "email"},
		{"phone", pii.KindPhone, "phone"},
		{"whatsapp", pii.KindPhone, "whatsapp"},
		{"sms", pii.KindPhone, "sms"},
		{"loyalty_id", pii.KindEmail, "loyalty_id(email)"},
		{"", pii.KindPhone, "phone"},
	} {
		if got := identityField(c.typ, c.kind); got != c.want {
			t.Errorf("identityField(%q, %s) = %q, want %q", c.typ, c.kind, got, c.want)
		}
	}
}
