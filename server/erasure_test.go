package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/internal/pgtest"
)

const eraseMutation = `mutation($id: ID!, $reason: String!) { eraseCustomer(id: $id, reason: $reason) {
	customerId mergedCustomerIds mergedCustomers formerCustomerIds identities eventsScrubbed messages conversations consents
	observations changes mergeRecords separations deadLetters auditEntriesScrubbed erasedAt } }`

type erasureAnswer struct {
	EraseCustomer struct {
		CustomerID           string   `json:"customerId"`
		MergedCustomerIDs    []string `json:"mergedCustomerIds"`
		MergedCustomers      int      `json:"mergedCustomers"`
		FormerCustomerIDs    []string `json:"formerCustomerIds"`
		Identities           int      `json:"identities"`
		EventsScrubbed       int      `json:"eventsScrubbed"`
		Messages             int      `json:"messages"`
		Conversations        int      `json:"conversations"`
		Consents             int      `json:"consents"`
		Observations         int      `json:"observations"`
		Changes              int      `json:"changes"`
		MergeRecords         int      `json:"mergeRecords"`
		Separations          int      `json:"separations"`
		DeadLetters          int      `json:"deadLetters"`
		AuditEntriesScrubbed int      `json:"auditEntriesScrubbed"`
		ErasedAt             string   `json:"erasedAt"`
	} `json:"eraseCustomer"`
}

// An admin erases a person through GraphQL by a merged-away id: the answer
// names the customer the id lived in and counts what went; refusals (a key
// that is not an admin's, a bad reason, an unknown id, another
// workspace's admin) change nothing; live subscribers of the customer on
// every subscription get the erased change or a NOT_FOUND end, never a
// hang; a resume with an old cursor is NOT_FOUND; lookups and search find
// nobody; the audit log records the erasure without personal data; and a
// new event with a former identifier makes a new customer.
func TestEraseCustomerThroughGraphQL(t *testing.T) {
	e := newRTEnv(t, rtOptions{audit: true})
	ctx := context.Background()
	slug := ""
	if err := e.db.Pool.QueryRow(ctx, `SELECT slug FROM workspaces WHERE id = $1`, e.ws).Scan(&slug); err != nil {
		t.Fatal(err)
	}
	agent, _, err := e.db.CreateAPIKey(ctx, slug, c360.RoleAgent, nil)
	if err != nil {
		t.Fatal(err)
	}
	otherWS, _, otherAdmin := pgtest.Workspace(t, e.db)

	at := time.Now().UTC().Add(-time.Minute)
	ann := ingest(t, e.db, e.ws, []c360.Identity{{Type: "email", Value: "ann@example.com"}, {Type: "phone", Value: "+14155550101"}},
		map[string]any{"name": "Ann Lee"})
	if _, err := e.db.Ingest(ctx, e.ws, []*c360.Event{{Type: c360.EventMessage, Source: "twilio", DedupeKey: "SMann1", OccurredAt: at,
		Identities: []c360.Identity{{Type: "phone", Value: "+14155550101"}},
		Message:    &c360.MessageInput{Channel: c360.ChannelSMS, Direction: c360.DirectionInbound, Body: "hi, Ann here", Status: "received"}}}); err != nil {
		t.Fatal(err)
	}
	bob := ingest(t, e.db, e.ws, []c360.Identity{{Type: "user_id", Value: "u-ann"}}, nil)
	gql(t, e.srv, e.key, `mutation($s: ID!, $m: ID!) { mergeCustomers(survivorId: $s, mergedId: $m, force: true) { id } }`,
		map[string]any{"s": fmt.Sprint(ann), "m": fmt.Sprint(bob)}).ok(t, nil)
	zed := ingest(t, e.db, e.ws, email("zed@example.com"), map[string]any{"name": "Zed"})

	c := dialWS(t, wsURL(e.srv), "graphql-transport-ws", nil)
	c.init(e.key)
	c.subscribe("ann", subCustomer, map[string]any{"id": fmt.Sprint(ann)})
	c.subscribe("bob", subCustomer, map[string]any{"id": fmt.Sprint(bob)})
	c.subscribe("msgs", `subscription($id: ID) { conversationMessages(customerId: $id) { id body } }`, map[string]any{"id": fmt.Sprint(ann)})
	c.subscribe("all", `subscription { customerChanges { `+changeFields+` } }`, nil)
	waitFor(t, "subscriptions", func() bool { return e.hub.Stats().Streams == 4 })
	var last struct {
		Customer struct {
			Version int64 `json:"version"`
		} `json:"customer"`
	}
	gql(t, e.srv, e.key, `query($id: ID!) { customer(id: $id) { version } }`, map[string]any{"id": fmt.Sprint(ann)}).ok(t, &last)
	resume := hubCursor(ann, last.Customer.Version)

	// Refusals change nothing.
	e.audit.Flush(ctx)
	before := erasureTableCounts(t, e)
	vars := func(id int64, reason string) map[string]any {
		return map[string]any{"id": fmt.Sprint(id), "reason": reason}
	}
	for _, tc := range []struct {
		name, key string
		vars      map[string]any
		code      string
	}{
		{"agent", agent, vars(bob, "ticket 42"), c360.EFORBIDDEN},
		{"empty reason", e.key, vars(bob, " "), c360.EINVALID},
		{"long reason", e.key, vars(bob, strings.Repeat("x", c360.MaxErasureReasonLen+1)), c360.EINVALID},
		{"reason with an email", e.key, vars(bob, "asked by ann@example.com"), c360.EINVALID},
		{"reason with a phone", e.key, vars(bob, "called from +1 415 555 0101"), c360.EINVALID},
		{"reason with a phone's area code in parentheses", e.key, vars(bob, "called from (212) 555-0100"), c360.EINVALID},
		// Hers, written as no phone number or address is: the erasure
		// finds them among what it loads.
		{"reason with her number written bare", e.key, vars(bob, "she called from 4155550101"), c360.EINVALID},
		{"reason with her number in groups", e.key, vars(bob, "she called from 415 555 0101"), c360.EINVALID},
		{"reason with her name", e.key, vars(bob, "request of ann lee"), c360.EINVALID},
		{"reason with her user_id", e.key, vars(bob, "account U-ANN"), c360.EINVALID},
		{"reason with a NUL", e.key, vars(bob, "ticket\u0000 42"), c360.EINVALID},
		{"unknown id", e.key, vars(ann+1_000_000, "ticket 42"), c360.ENOTFOUND},
		{"another workspace's admin", otherAdmin, vars(bob, "ticket 42"), c360.ENOTFOUND},
	} {
		if r := gql(t, e.srv, tc.key, eraseMutation, tc.vars); r.code() != tc.code {
			t.Errorf("%s: code %q, want %q: %s", tc.name, r.code(), tc.code, r.Body)
		}
	}
	if after := erasureTableCounts(t, e); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Fatalf("refusals changed rows: %v, want %v", after, before)
	}
	if n := countWS(t, e, "customers", otherWS); n != 0 {
		t.Fatalf("the other workspace has %d customers", n)
	}

	// Erased through Bob's id: Ann's customer, with Bob's row. A request's
	// number of ten digits or more, alone or in groups, is no phone number.
	const reason = "ticket 1234567890, DSAR 2024061501, DSAR 2024-000123-45, ticket 1234 5678 90, Zendesk 4815 1623 42, case (2024) 5550100123"
	var out erasureAnswer
	gql(t, e.srv, e.key, eraseMutation, vars(bob, reason)).ok(t, &out)
	got := out.EraseCustomer
	if got.CustomerID != fmt.Sprint(ann) || fmt.Sprint(got.MergedCustomerIDs) != fmt.Sprintf("[%d]", bob) || got.MergedCustomers != 1 || got.FormerCustomerIDs == nil || len(got.FormerCustomerIDs) != 0 ||
		got.Identities != 3 || got.EventsScrubbed != 3 || got.Messages != 1 || got.Conversations != 1 || got.Consents != 0 ||
		got.MergeRecords != 1 || got.Changes == 0 || got.ErasedAt == "" {
		t.Errorf("eraseCustomer = %+v", got)
	}

	// Live subscribers: the erased change, then the end, NOT_FOUND.
	got4 := map[string][]wsMsg{}
	for done := 0; done < 5; {
		m := c.read()
		got4[m.ID] = append(got4[m.ID], m)
		if m.Type == "complete" || m.ID == "all" {
			done++
		}
	}
	for _, id := range []string{"ann", "bob"} {
		ms := got4[id]
		if len(ms) != 3 || ms[0].Type != "next" || ms[2].Type != "complete" {
			t.Fatalf("%s's stream got %v, want the erased change, an error and complete", id, ms)
		}
		var p struct {
			Data struct {
				C change `json:"customerChanged"`
			} `json:"data"`
		}
		if err := json.Unmarshal(ms[0].Payload, &p); err != nil {
			t.Fatal(err)
		}
		if ch := p.Data.C; ch.Kind != c360.ChangeErased || ch.CustomerID != fmt.Sprint(ann) || ch.Customer != nil || len(ch.Diff) != 0 {
			t.Errorf("%s's stream got %+v, want the erased change of %d, without a customer", id, ch, ann)
		}
		if !strings.Contains(string(ms[1].Payload), `"code":"NOT_FOUND"`) || !strings.Contains(string(ms[1].Payload), "erased") {
			t.Errorf("%s's stream ended with %s, want NOT_FOUND: erased", id, ms[1].Payload)
		}
	}
	if ms := got4["msgs"]; len(ms) != 2 || !strings.Contains(string(ms[0].Payload), `"code":"NOT_FOUND"`) || ms[1].Type != "complete" {
		t.Errorf("conversationMessages got %v, want NOT_FOUND and complete", ms)
	}
	// The workspace's stream gets the erased change of each erased
	// customer: ann's, and bob's, merged into her.
	erasedIDs := map[string]bool{}
	for _, m := range got4["all"] {
		var all struct {
			Data struct {
				C change `json:"customerChanges"`
			} `json:"data"`
		}
		if json.Unmarshal(m.Payload, &all) != nil || all.Data.C.Kind != c360.ChangeErased || all.Data.C.Customer != nil {
			t.Errorf("workspace stream got %s, want an erased change", m.Payload)
		}
		erasedIDs[all.Data.C.CustomerID] = true
	}
	if want := map[string]bool{fmt.Sprint(ann): true, fmt.Sprint(bob): true}; len(got4["all"]) != 2 || !maps.Equal(erasedIDs, want) {
		t.Errorf("workspace stream got %v, want the erased changes of %d and %d", got4["all"], ann, bob)
	}
	waitFor(t, "streams to end", func() bool { return e.hub.Stats().Streams == 1 })
	// Resuming, or subscribing anew, finds nobody.
	c.subscribe("resume", subCustomer, map[string]any{"id": fmt.Sprint(ann), "after": resume})
	wantError(t, c, "resume", c360.ENOTFOUND)
	c.subscribe("again", subCustomer, map[string]any{"id": fmt.Sprint(bob)})
	wantError(t, c, "again", c360.ENOTFOUND)

	// Lookups and search find nobody; Zed is still there.
	var found struct {
		Customer  *struct{ ID string } `json:"customer"`
		ByEmail   *struct{ ID string } `json:"byEmail"`
		ByPhone   *struct{ ID string } `json:"byPhone"`
		ByUser    *struct{ ID string } `json:"byUser"`
		Customers struct {
			Edges []struct{} `json:"edges"`
		} `json:"customers"`
		Zed *struct{ ID string } `json:"zed"`
	}
	gql(t, e.srv, e.key, `query($id: ID!, $zed: ID!) { customer(id: $id) { id }
		byEmail: customerByIdentity(type: "email", value: "ann@example.com") { id }
		byPhone: customerByIdentity(type: "phone", value: "(415) 555-0101") { id }
		byUser: customerByIdentity(type: "user_id", value: "u-ann") { id }
		customers(query: "ann", first: 10) { edges { cursor } }
		zed: customer(id: $zed) { id } }`, map[string]any{"id": fmt.Sprint(bob), "zed": fmt.Sprint(zed)}).ok(t, &found)
	if found.Customer != nil || found.ByEmail != nil || found.ByPhone != nil || found.ByUser != nil || len(found.Customers.Edges) != 0 {
		t.Errorf("after erasure found %+v, want nobody", found)
	}
	if found.Zed == nil {
		t.Error("Zed was erased too")
	}

	// The audit log names the erasure and the customer, with no personal
	// data in any of its entries.
	e.audit.Flush(ctx)
	var log struct {
		AuditLog struct {
			Edges []struct {
				Node struct {
					Action     string         `json:"action"`
					CustomerID string         `json:"customerId"`
					Detail     map[string]any `json:"detail"`
				} `json:"node"`
			} `json:"edges"`
		} `json:"auditLog"`
	}
	gql(t, e.srv, e.key, `{ auditLog(first: 50, action: "customer.erase") { edges { node { action customerId detail } } } }`, nil).ok(t, &log)
	if len(log.AuditLog.Edges) != 1 {
		t.Fatalf("customer.erase entries: %d, want 1", len(log.AuditLog.Edges))
	}
	entry := log.AuditLog.Edges[0].Node
	if entry.CustomerID != fmt.Sprint(ann) || entry.Detail["reason"] != reason || fmt.Sprint(entry.Detail["erasedId"]) != fmt.Sprint(bob) {
		t.Errorf("audit entry = %+v", entry)
	}
	var rows []string
	r, err := e.db.Pool.Query(ctx, `SELECT a::text FROM audit_log a WHERE workspace_id = $1`, e.ws)
	if err != nil {
		t.Fatal(err)
	}
	for r.Next() {
		var s string
		if err := r.Scan(&s); err != nil {
			t.Fatal(err)
		}
		rows = append(rows, s)
	}
	r.Close()
	for _, s := range rows {
		for _, p := range []string{"ann@example.com", "4155550101", "Ann Lee", "u-ann"} {
			if strings.Contains(s, p) {
				t.Errorf("audit entry holds %q: %s", p, s)
			}
		}
	}

	// A new event with a former identifier: a new customer.
	var fresh struct {
		Identify struct {
			ID     string         `json:"id"`
			Traits map[string]any `json:"traits"`
		} `json:"identify"`
	}
	gql(t, e.srv, e.key, `mutation { identify(input: {identities: [{type: "email", value: "ann@example.com"}]}) { id traits } }`, nil).ok(t, &fresh)
	if fresh.Identify.ID == fmt.Sprint(ann) || fresh.Identify.ID == fmt.Sprint(bob) || len(fresh.Identify.Traits) != 0 {
		t.Errorf("identify after erasure = %+v, want a new customer without traits", fresh.Identify)
	}
	raw, _ := json.Marshal(fresh)
	if strings.Contains(string(raw), "Ann Lee") {
		t.Errorf("the new customer holds the erased name: %s", raw)
	}
}

// erasureTableCounts counts the rows of the tables an erasure changes, in
// the env's workspace.
func erasureTableCounts(t *testing.T, e *rtEnv) []int {
	t.Helper()
	var out []int
	for _, table := range []string{"customers", "identities", "events", "conversations", "messages", "customer_changes", "merges", "audit_log"} {
		out = append(out, countWS(t, e, table, e.ws))
	}
	return out
}

func countWS(t *testing.T, e *rtEnv, table string, ws int64) int {
	t.Helper()
	return count(t, e.db, table, ws)
}
