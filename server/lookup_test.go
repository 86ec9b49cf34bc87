package server_test

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/server"
)

// aliasedLookups writes a query of n aliased customerByIdentity lookups of
// phones, selecting only the id: what a key that reads masked data would
// send to test n guesses at a masked number in one request.
func aliasedLookups(phones ...string) string {
	var b strings.Builder
	b.WriteString("query Guess {")
	for i, p := range phones {
		fmt.Fprintf(&b, ` g%d: customerByIdentity(type: "phone", value: %q) { id }`, i, p)
	}
	b.WriteString(" }")
	return b.String()
}

// Every lookup by identity or search a key that reads masked data makes is
// audited, even one selecting only the id: a customer.read of the customer
// found naming the lookup, and one entry per request counting those that
// found nobody. An agent's lookups, which read unmasked data audited as
// pii.read, record no customer.read.
func TestMaskedLookupsAreAudited(t *testing.T) {
	e := newSecEnv(t, server.Config{})
	// Jane's number and three wrong guesses, in one request.
	gql(t, e.srv, e.keys["assistant"], aliasedLookups(janePhone, "+14155550101", "+14155550102", "+14155550103"), nil).ok(t, nil)
	gql(t, e.srv, e.keys["assistant"], `query Search($hit: String!) {
		hit: customers(query: $hit) { edges { node { id } } }
		miss: customers(query: "nobody@example.com") { edges { node { id } } }
		context: customerContext(identity: {type: "email", value: $hit}) { customerId }
		none: customerContext(identity: {type: "email", value: "nobody@example.com"}) { customerId } }`,
		map[string]any{"hit": janeEmail}).ok(t, nil)

	rows := e.auditLog(t, map[string]any{"a": c360.AuditCustomerRead})
	type entry struct {
		fields   string
		notFound any
	}
	got := map[string]entry{} // operation and customer ("" for nobody) -> entry
	for _, r := range rows {
		if r.Actor != "key "+prefixOf(e.keys["assistant"]) {
			t.Errorf("customer.read by %s: %+v, want only the assistant's", r.Actor, r)
		}
		c := ""
		if r.CustomerID != nil {
			c = *r.CustomerID
		}
		got[fmt.Sprint(r.Detail["operation"], " ", c)] = entry{fmt.Sprint(r.Fields), r.Detail["notFound"]}
	}
	want := map[string]entry{
		"Guess " + e.cust:  {"[lookup.customerByIdentity(phone)]", nil},
		"Guess ":           {"[lookup.customerByIdentity(phone)]", 3},
		"Search " + e.cust: {"[customerContext.customerId lookup.customerContext(email) lookup.customers(email)]", nil},
		"Search ":          {"[lookup.customerContext(email) lookup.customers(email)]", 2},
	}
	for k, w := range want {
		g, ok := got[k]
		if !ok || g.fields != w.fields || fmt.Sprint(g.notFound) != fmt.Sprint(w.notFound) {
			t.Errorf("customer.read of %q = %+v (found %v), want %+v", k, g, ok, w)
		}
	}
	if len(rows) != len(want) {
		t.Errorf("customer.read rows = %+v, want %d", rows, len(want))
	}

	// An agent's lookups read unmasked data: no customer.read, hit or miss.
	gql(t, e.srv, e.keys["agent"], aliasedLookups(janePhone, "+14155550101"), nil).ok(t, nil)
	if n := len(e.auditLog(t, map[string]any{"a": c360.AuditCustomerRead})); n != len(want) {
		t.Errorf("customer.read rows after an agent's lookups = %d, want %d", n, len(want))
	}
}

// A key that reads masked data has a bucket of lookups of its own
// (LookupRate): each lookup by identity or search takes a token, an alias
// counting as one, and past the burst a lookup is refused with
// RATE_LIMITED, the rest of the request answered. An agent's lookups and a
// lookup by id take none.
func TestMaskedLookupsRateLimited(t *testing.T) {
	e := newSecEnv(t, server.Config{Limits: server.Limits{LookupRate: server.Rate{RPS: 0.001, Burst: 10}}})
	guesses := make([]string, 12)
	for i := range guesses {
		guesses[i] = janePhone // all right: each answered one finds Jane
	}
	resp := gql(t, e.srv, e.keys["assistant"], aliasedLookups(guesses...), nil)
	var data map[string]*struct{ ID string }
	if err := json.Unmarshal(resp.Data, &data); err != nil {
		t.Fatalf("decode %s: %v", resp.Body, err)
	}
	found := 0
	for _, c := range data {
		if c != nil {
			found++
		}
	}
	limited := 0
	for _, err := range resp.Errors {
		if err.Extensions["code"] == c360.ERATELIMITED && strings.Contains(err.Message, "lookups") {
			limited++
		}
	}
	if found != 10 || limited != 2 || len(resp.Errors) != 2 {
		t.Errorf("12 lookups with a burst of 10: %d answered, %d RATE_LIMITED; want 10 and 2: %s", found, limited, resp.Body)
	}

	// The bucket is empty: searches and lookups by context are refused too;
	// a read by id is not a lookup.
	for _, q := range []string{
		`{ customers(query: "jane@example.com") { edges { node { id } } } }`,
		`{ customerContext(identity: {type: "email", value: "jane@example.com"}) { customerId } }`,
	} {
		gql(t, e.srv, e.keys["assistant"], q, nil).wantCode(t, c360.ERATELIMITED)
	}
	gql(t, e.srv, e.keys["assistant"], `query($id: ID!) { customer(id: $id) { id } }`, map[string]any{"id": e.cust}).ok(t, nil)

	// Keys that read personal data unmasked are not limited by it.
	for _, key := range []string{"agent", "admin", "assistant+pii"} {
		resp := gql(t, e.srv, e.keys[key], aliasedLookups(guesses...), nil)
		resp.ok(t, nil)
		if n := strings.Count(string(resp.Data), `"id":"`+e.cust+`"`); n != 12 {
			t.Errorf("%s's 12 lookups found Jane %d times, want 12: %s", key, n, resp.Data)
		}
	}
	// A refused lookup ran nothing: it is not audited as one.
	for _, r := range e.auditLog(t, map[string]any{"a": c360.AuditCustomerRead}) {
		if slices.Contains(r.Fields, "lookup.customers(email)") || slices.Contains(r.Fields, "lookup.customerContext(email)") {
			t.Errorf("a refused lookup is audited as made: %+v", r)
		}
	}
}

// The default bound is what docs/security.md states.
func TestDefaultLookupRate(t *testing.T) {
	if got, want := server.DefaultLimits.LookupRate, (server.Rate{RPS: 5, Burst: 60}); got != want {
		t.Errorf("DefaultLimits.LookupRate = %+v, want %+v", got, want)
	}
}
