package server_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/server"
)

// wantRefusedBeforeRun fails the test unless r refused the whole operation before it
// ran: no data, the code, the message and the path of the field refused,
// and 422 as for a validation error.
func wantRefusedBeforeRun(t *testing.T, r *response, code, message string, path ...any) {
	t.Helper()
	r.wantCode(t, code)
	if r.Status != http.StatusUnprocessableEntity {
		t.Errorf("status = %d, want 422 (refused before execution): %s", r.Status, r.Body)
	}
	if string(r.Data) != "" && string(r.Data) != "null" {
		t.Errorf("data = %s, want none: nothing ran", r.Data)
	}
	if message != "" && r.Errors[0].Message != message {
		t.Errorf("message = %q, want %q", r.Errors[0].Message, message)
	}
	if path != nil && !slices.Equal(r.Errors[0].Path, path) {
		t.Errorf("path = %v, want %v", r.Errors[0].Path, path)
	}
}

// A mutation that selects a field its key's role may not read is refused
// before it runs: answered FORBIDDEN with data null, it must not have
// stored anything, or the client's retry would store it twice. However the
// field is selected: directly, in a fragment, under @include.
func TestMutationSelectingAFieldItsRoleCannotReadChangesNothing(t *testing.T) {
	e := newEnv(t)
	write, _, err := e.db.CreateAPIKey(context.Background(), e.slug, c360.RoleWrite, nil)
	if err != nil {
		t.Fatal(err)
	}
	r := gql(t, e.srv, write, `mutation { track(input: {identities: [{type: "email", value: "dup@x.com"}],
		event: "Order Completed", properties: {total: 10}}) { id properties } }`, nil)
	wantRefusedBeforeRun(t, r, c360.EFORBIDDEN, "Event.properties needs an admin, agent or assistant key; this key's role is write",
		"track", "properties")
	if n := count(t, e.db, "events", e.ws); n != 0 {
		t.Errorf("track refused with FORBIDDEN stored %d events, want 0", n)
	}
	for _, tc := range []struct{ name, query string }{
		{"field", `mutation { identify(input: {identities: [{type: "email", value: "dup@x.com"}]}) { id traits } }`},
		{"fragment", `mutation { identify(input: {identities: [{type: "email", value: "dup@x.com"}]}) { id ...T } }
			fragment T on Customer { traits }`},
		{"inline fragment", `mutation { identify(input: {identities: [{type: "email", value: "dup@x.com"}]}) { id ... on Customer { traits } } }`},
		{"included", `mutation($t: Boolean!) { identify(input: {identities: [{type: "email", value: "dup@x.com"}]}) { id traits @include(if: $t) } }`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := gql(t, e.srv, write, tc.query, map[string]any{"t": true})
			wantRefusedBeforeRun(t, r, c360.EFORBIDDEN, "Customer.traits needs an admin, agent or assistant key; this key's role is write",
				"identify", "traits")
			if n := count(t, e.db, "customers", e.ws); n != 0 {
				t.Errorf("identify refused with FORBIDDEN left %d customers, want 0", n)
			}
		})
	}
	// A field left out by @skip or @include is not checked: it is not read.
	var out struct{ Identify struct{ ID string } }
	gql(t, e.srv, write, `mutation($t: Boolean!) { identify(input: {identities: [{type: "email", value: "dup@x.com"}]}) {
		id traits @include(if: $t) ... @skip(if: true) { identities { value } } } }`, map[string]any{"t": false}).ok(t, &out)
	if out.Identify.ID == "" {
		t.Error("identify selecting only what a write key reads: no id")
	}
}

// A mutation whose answer selects a connection with a page size or cursor
// its store refuses is refused with BAD_USER_INPUT before it runs: the
// identify stores nothing, the merge and the split (which cannot be undone)
// are not made.
func TestMutationWithABadNestedPageArgumentChangesNothing(t *testing.T) {
	e := newEnv(t)
	r := gql(t, e.srv, e.key, `mutation { identify(input: {identities: [{type: "email", value: "partial@example.com"}]}) {
		id events(first: 0) { edges { cursor } } } }`, nil)
	wantRefusedBeforeRun(t, r, c360.EINVALID, "first must be between 1 and 100", "identify", "events")
	if n := count(t, e.db, "customers", e.ws); n != 0 {
		t.Errorf("identify refused with BAD_USER_INPUT left %d customers, want 0", n)
	}
	r = gql(t, e.srv, e.key, `mutation($n: Int) { identify(input: {identities: [{type: "email", value: "partial@example.com"}]}) {
		id conversations { edges { node { messages(first: $n) { edges { cursor } } } } } } }`, map[string]any{"n": 101})
	wantRefusedBeforeRun(t, r, c360.EINVALID, "first must be between 1 and 100", "identify", "conversations", "edges", "node", "messages")
	if n := count(t, e.db, "customers", e.ws); n != 0 {
		t.Errorf("identify refused with BAD_USER_INPUT left %d customers, want 0", n)
	}

	a := e.identify(t, map[string]any{"identities": ids("email", "a@example.com", "phone", "+14155550142")})
	b := e.identify(t, map[string]any{"identities": ids("email", "b@example.com")})
	r = gql(t, e.srv, e.key, `mutation($s: ID!, $m: ID!) { mergeCustomers(survivorId: $s, mergedId: $m) {
		id events(after: "not-a-cursor") { edges { cursor } } } }`, map[string]any{"s": a.ID, "m": b.ID})
	wantRefusedBeforeRun(t, r, c360.EINVALID, "invalid cursor", "mergeCustomers", "events")
	var got struct{ Customer customerJSON }
	gql(t, e.srv, e.key, `query($id: ID!) { customer(id: $id) { id } }`, map[string]any{"id": b.ID}).ok(t, &got)
	if got.Customer.ID != b.ID {
		t.Errorf("mergeCustomers refused with BAD_USER_INPUT merged %s into %s anyway", b.ID, got.Customer.ID)
	}

	r = gql(t, e.srv, e.key, `mutation($c: ID!) { splitIdentity(customerId: $c, type: "phone", value: "+14155550142") {
		split { id conversations(after: "not-a-cursor") { edges { cursor } } } } }`, map[string]any{"c": a.ID})
	wantRefusedBeforeRun(t, r, c360.EINVALID, "invalid cursor", "splitIdentity", "split", "conversations")
	var by struct{ CustomerByIdentity customerJSON }
	gql(t, e.srv, e.key, `{ customerByIdentity(type: "phone", value: "+14155550142") { id } }`, nil).ok(t, &by)
	if by.CustomerByIdentity.ID != a.ID {
		t.Errorf("splitIdentity refused with BAD_USER_INPUT moved the phone to %s anyway", by.CustomerByIdentity.ID)
	}
}

// A mutation whose nested selections are all allowed runs as before:
// connections with their defaults and with valid arguments, a cursor the
// server handed out.
func TestMutationWithNestedConnectionsRuns(t *testing.T) {
	e := newEnv(t)
	e.track(t, map[string]any{"identities": ids("email", "nested@example.com"), "event": "Signed Up"})
	e.track(t, map[string]any{"identities": ids("email", "nested@example.com"), "event": "Order Completed"})
	const identify = `mutation($after: String) { identify(input: {identities: [{type: "email", value: "nested@example.com"}]}) {
		id events(first: 1, after: $after) { edges { cursor node { name properties } } pageInfo { hasNextPage endCursor } }
		conversations { edges { node { messages(first: 5) { edges { cursor } } } } } } }`
	var out struct {
		Identify struct {
			ID     string
			Events struct {
				Edges    []struct{ Node struct{ Name string } }
				PageInfo struct {
					HasNextPage bool
					EndCursor   string
				}
			}
		}
	}
	gql(t, e.srv, e.key, identify, nil).ok(t, &out)
	ev := out.Identify.Events
	if len(ev.Edges) != 1 || !ev.PageInfo.HasNextPage {
		t.Fatalf("identify's first page of events = %+v, want 1 of several", ev)
	}
	gql(t, e.srv, e.key, identify, map[string]any{"after": ev.PageInfo.EndCursor}).ok(t, &out)
	if len(out.Identify.Events.Edges) != 1 {
		t.Errorf("identify's events after %s = %+v, want the next one", ev.PageInfo.EndCursor, out.Identify.Events)
	}
}

// Over a websocket, a mutation refused before it runs gets an error
// message, and changes nothing.
func TestMutationRefusedOverWebsocketChangesNothing(t *testing.T) {
	e := newRTEnv(t, rtOptions{cfg: server.Config{Logger: slog.New(slog.DiscardHandler)}})
	write, _, err := e.db.CreateAPIKey(context.Background(), mustSlug(t, e.db, e.ws), c360.RoleWrite, nil)
	if err != nil {
		t.Fatal(err)
	}
	w := dialWS(t, wsURL(e.srv), "graphql-transport-ws", nil)
	w.init(write)
	w.subscribe("m", `mutation { identify(input: {identities: [{type: "email", value: "ws@example.com"}]}) { id traits } }`, nil)
	m := w.read()
	if m.Type != "error" || m.ID != "m" {
		t.Fatalf("got %s %q %s, want an error for m", m.Type, m.ID, m.Payload)
	}
	if want := fmt.Sprintf(`"code":%q`, c360.EFORBIDDEN); !strings.Contains(string(m.Payload), want) {
		t.Errorf("payload %s, want code FORBIDDEN", m.Payload)
	}
	if n := count(t, e.db, "customers", e.ws); n != 0 {
		t.Errorf("identify refused over a websocket left %d customers, want 0", n)
	}
}
