package server_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/internal/logbuf"
	"github.com/c360dev/c360/internal/pgtest"
	"github.com/c360dev/c360/postgres"
	"github.com/c360dev/c360/server"
)

func TestAuthenticationErrors(t *testing.T) {
	e := newEnv(t)
	const q = `{ customers(first: 1) { edges { cursor } } }`
	for _, tc := range []struct {
		name, header string
	}{
		{"missing", ""},
		{"not bearer", "Basic " + e.key},
		{"empty bearer", "Bearer "},
		{"well-formed unknown", "Bearer c360_000000000000_xxxxxxxxxxxxxxxxxxxxxxxx"},
		{"garbage", "Bearer abc"},
		{"known prefix wrong secret", "Bearer " + e.key[:len("c360_")+12] + "_wrong-secret"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/graphql", strings.NewReader(`{"query":"`+q+`"}`))
			req.Header.Set("Content-Type", "application/json")
			if tc.header != "" {
				req.Header.Set("Authorization", tc.header)
			}
			r := do(t, e.srv, req)
			r.wantCode(t, c360.EUNAUTHENTICATED)
			if r.Status != http.StatusUnauthorized {
				t.Errorf("status = %d, want 401", r.Status)
			}
			if len(r.Data) > 0 && string(r.Data) != "null" {
				t.Errorf("data = %s, want none", r.Data)
			}
		})
	}
	// The same key with the proper header works: the refusals above are
	// about the key, not the query.
	gql(t, e.srv, e.key, q, nil).ok(t, nil)
}

func TestInvalidInputWritesNothing(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct {
		name       string
		identities []map[string]any
		traits     any
	}{
		{"invalid phone", ids("email", "valid@example.com", "phone", "1-800-FLOWERS"), map[string]any{"name": "x"}},
		{"too short phone", ids("phone", "12"), nil},
		{"invalid email", ids("email", "bob@localhost", "user_id", "u-1"), nil},
		{"email without at", ids("email", "bob.example.com"), nil},
		{"identity type Email", ids("Email", "valid@example.com"), nil},
		{"identity type with space", ids("crm id", "1"), nil},
		{"no identity", []map[string]any{}, nil},
		{"traits not an object", ids("email", "valid@example.com"), 5},
		{"traits a list", ids("email", "valid@example.com"), []any{"a"}},
		{"traits a string", ids("email", "valid@example.com"), "name=x"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			input := map[string]any{"identities": tc.identities}
			if tc.traits != nil {
				input["traits"] = tc.traits
			}
			r := gql(t, e.srv, e.key, identifyMutation, map[string]any{"input": input})
			r.wantCode(t, c360.EINVALID)
			if strings.Contains(r.Body, "internal error") {
				t.Errorf("refusal reads as an internal error: %s", r.Body)
			}
			track := map[string]any{"identities": tc.identities, "event": "Clicked"}
			if tc.traits != nil {
				track["properties"] = tc.traits
			}
			gql(t, e.srv, e.key, trackMutation, map[string]any{"input": track}).wantCode(t, c360.EINVALID)
			for _, table := range []string{"customers", "events", "identities", "customer_changes"} {
				if got := count(t, e.db, table, e.ws); got != 0 {
					t.Errorf("%s rows after refused input = %d, want 0", table, got)
				}
			}
		})
	}
	// Inline literals take the same path as variables.
	gql(t, e.srv, e.key, `mutation { identify(input: {identities: [{type: "email", value: "v@example.com"}], traits: 5}) { id } }`, nil).
		wantCode(t, c360.EINVALID)
	gql(t, e.srv, e.key, `mutation { track(input: {identities: [{type: "email", value: "v@example.com"}], event: ""}) { id } }`, nil).
		wantCode(t, c360.EINVALID)
	if got := count(t, e.db, "customers", e.ws); got != 0 {
		t.Errorf("customers after refused input = %d, want 0", got)
	}
}

func TestQueryErrors(t *testing.T) {
	e := newEnv(t)
	e.identify(t, map[string]any{"identities": ids("email", "q@example.com")})
	for _, tc := range []struct {
		name, query string
		vars        map[string]any
	}{
		{"invalid id literal", `{ customer(id: "abc") { id } }`, nil},
		{"invalid id variable", `query($id: ID!) { customer(id: $id) { id } }`, map[string]any{"id": "abc"}},
		{"negative id", `{ customer(id: "-5") { id } }`, nil},
		{"invalid customers cursor", `{ customers(first: 1, after: "not a cursor!") { edges { cursor } } }`, nil},
		{"invalid base64 cursor", `{ customers(first: 1, after: "bm9wZQ") { edges { cursor } } }`, nil},
		{"invalid events cursor", `{ customers(first: 1) { edges { node { events(first: 1, after: "%%%") { edges { cursor } } } } } }`, nil},
		{"first 0", `{ customers(first: 0) { edges { cursor } } }`, nil},
		{"first 1000", `{ customers(first: 1000) { edges { cursor } } }`, nil},
		{"first negative", `{ customers(first: -1) { edges { cursor } } }`, nil},
		{"events first 1000", `{ customers(first: 1) { edges { node { events(first: 1000) { edges { cursor } } } } } }`, nil},
		{"syntax error", `{ customers(first: 1) { edges { cursor }`, nil},
		{"unknown field", `{ customers(first: 1) { edges { node { shoeSize } } } }`, nil},
		{"unknown root field", `{ everything }`, nil},
		{"invalid identity type lookup", `{ customerByIdentity(type: "Email", value: "q@example.com") { id } }`, nil},
		{"invalid email lookup", `{ customerByIdentity(type: "email", value: "not an email") { id } }`, nil},
		{"query too long", `query($q: String) { customers(query: $q) { edges { cursor } } }`, map[string]any{"q": strings.Repeat("a", 101)}},
		{"invalid timestamp", trackMutation, map[string]any{"input": map[string]any{
			"identities": ids("email", "q@example.com"), "event": "E", "timestamp": "yesterday"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := gql(t, e.srv, e.key, tc.query, tc.vars)
			r.wantCode(t, c360.EINVALID)
			if r.Status >= 500 {
				t.Errorf("status = %d, want below 500", r.Status)
			}
		})
	}

	t.Run("unknown customer id", func(t *testing.T) {
		var out struct{ Customer *customerJSON }
		r := gql(t, e.srv, e.key, `{ customer(id: "999999999") { id } }`, nil)
		r.ok(t, &out)
		if out.Customer != nil {
			t.Errorf("customer = %+v, want null", out.Customer)
		}
		if string(r.Data) != `{"customer":null}` {
			t.Errorf("data = %s, want {\"customer\":null}", r.Data)
		}
	})
	t.Run("unknown identity", func(t *testing.T) {
		r := gql(t, e.srv, e.key, `{ customerByIdentity(type: "email", value: "nobody@example.com") { id } }`, nil)
		r.ok(t, nil)
		if string(r.Data) != `{"customerByIdentity":null}` {
			t.Errorf("data = %s, want {\"customerByIdentity\":null}", r.Data)
		}
	})
	t.Run("first 100 is allowed", func(t *testing.T) {
		gql(t, e.srv, e.key, `{ customers(first: 100) { edges { cursor } } }`, nil).ok(t, nil)
	})
}

func TestRoles(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	creds, err := e.db.CreateWorkspace(ctx, fmt.Sprintf("roles-%d", time.Now().UnixNano()), "roles")
	if err != nil {
		t.Fatal(err)
	}
	assistant, _, err := e.db.CreateAPIKey(ctx, creds.Slug, c360.RoleAssistant, nil)
	if err != nil {
		t.Fatal(err)
	}
	agent, _, err := e.db.CreateAPIKey(ctx, creds.Slug, c360.RoleAgent, nil)
	if err != nil {
		t.Fatal(err)
	}
	identify := map[string]any{"input": map[string]any{"identities": ids("email", "roles@example.com")}}

	// The write key ingests but reads nothing.
	var w struct{ Identify struct{ ID string } }
	gql(t, e.srv, creds.WriteKey, `mutation($input: IdentifyInput!) { identify(input: $input) { id } }`, identify).ok(t, &w)
	for _, q := range []string{
		fmt.Sprintf(`{ customer(id: %q) { id } }`, w.Identify.ID),
		`{ customerByIdentity(type: "email", value: "roles@example.com") { id } }`,
		`{ customers(first: 5) { edges { cursor } } }`,
	} {
		r := gql(t, e.srv, creds.WriteKey, q, nil)
		r.wantCode(t, c360.EFORBIDDEN)
		if strings.Contains(r.Body, "roles@example.com\"") && strings.Contains(r.Body, w.Identify.ID) {
			t.Errorf("write key read a profile: %s", r.Body)
		}
	}

	// The assistant reads but cannot ingest.
	before := count(t, e.db, "events", creds.ID)
	gql(t, e.srv, assistant, identifyMutation, map[string]any{"input": map[string]any{
		"identities": ids("email", "assistant@example.com")}}).wantCode(t, c360.EFORBIDDEN)
	gql(t, e.srv, assistant, trackMutation, map[string]any{"input": map[string]any{
		"identities": ids("email", "assistant@example.com"), "event": "E"}}).wantCode(t, c360.EFORBIDDEN)
	if got := count(t, e.db, "events", creds.ID); got != before {
		t.Errorf("events after refused assistant writes = %d, want %d", got, before)
	}
	var a struct{ Customer *struct{ ID string } }
	gql(t, e.srv, assistant, `query($id: ID!) { customer(id: $id) { id } }`, map[string]any{"id": w.Identify.ID}).ok(t, &a)
	if a.Customer == nil || a.Customer.ID != w.Identify.ID {
		t.Errorf("assistant customer(id) = %+v, want id %s", a.Customer, w.Identify.ID)
	}

	// The agent reads and ingests.
	gql(t, e.srv, agent, identifyMutation, map[string]any{"input": map[string]any{
		"identities": ids("email", "agent@example.com")}}).ok(t, nil)
	gql(t, e.srv, agent, `{ customers(first: 5) { edges { cursor } } }`, nil).ok(t, nil)
}

// panickingStore is the real store whose FindProfile (what customer(id)
// calls) panics.
type panickingStore struct{ *postgres.DB }

func (panickingStore) FindProfile(context.Context, int64, c360.CustomerKey, c360.ProfileRequest) (*c360.Customer, *c360.Profiles, error) {
	panic("secret detail: the vault combination is 1234")
}

func TestPanicIsInternal(t *testing.T) {
	db := pgtest.Open(t)
	_, _, key := pgtest.Workspace(t, db)
	r := newResolver(db)
	r.CustomerService = panickingStore{db}
	var logs logbuf.Buffer
	srv := serveWith(t, server.Config{Logger: slog.New(slog.NewTextHandler(&logs, nil))}, db, r, db)

	resp := gql(t, srv, key, `{ customer(id: "1") { id } }`, nil)
	resp.wantCode(t, c360.EINTERNAL)
	if resp.Errors[0].Message != "internal error" {
		t.Errorf("message = %q, want %q", resp.Errors[0].Message, "internal error")
	}
	if strings.Contains(resp.Body, "secret detail") || strings.Contains(resp.Body, "vault") {
		t.Errorf("panic text reached the client: %s", resp.Body)
	}
	if !strings.Contains(logs.String(), "secret detail") {
		t.Errorf("panic was not logged; logs:\n%s", logs.String())
	}
	// The server survives the panic.
	gql(t, srv, key, `{ customers(first: 1) { edges { cursor } } }`, nil).ok(t, nil)
}

// failingStore fails FindProfile with err.
type failingStore struct {
	*postgres.DB
	err error
}

func (s failingStore) FindProfile(context.Context, int64, c360.CustomerKey, c360.ProfileRequest) (*c360.Customer, *c360.Profiles, error) {
	return nil, nil, s.err
}

// A resolver error that is none of the domain's is answered INTERNAL,
// without its text, and logged as an error of the server's; so is a
// cancellation the request did not ask for (only a request or
// subscription the client ended goes unlogged, TestWebsocketLegacyIDReuseAfterStop).
func TestInternalErrorsAreLogged(t *testing.T) {
	db := pgtest.Open(t)
	_, _, key := pgtest.Workspace(t, db)
	for _, tc := range []struct {
		name string
		err  error
	}{
		{"a plain error", errors.New("secret detail: disk 7 failed")},
		{"a cancellation of the store's own", fmt.Errorf("secret detail: %w", context.Canceled)},
	} {
		r := newResolver(db)
		r.CustomerService = failingStore{db, tc.err}
		var logs logbuf.Buffer
		srv := serveWith(t, server.Config{Logger: slog.New(slog.NewTextHandler(&logs, nil))}, db, r, db)
		resp := gql(t, srv, key, `{ customer(id: "1") { id } }`, nil)
		resp.wantCode(t, c360.EINTERNAL)
		if strings.Contains(resp.Body, "secret detail") {
			t.Errorf("%s: the error's text reached the client: %s", tc.name, resp.Body)
		}
		if out := logs.String(); !strings.Contains(out, "level=ERROR") || !strings.Contains(out, "secret detail") {
			t.Errorf("%s: not logged as an error; logs:\n%s", tc.name, out)
		}
	}
}

// leaks lists texts of database errors that must never reach a client.
var leaks = []string{"SQLSTATE", "dial", "127.0.0.1", "refused", "closed pool", "pgx", "connect:", "54329"}

func assertNoLeak(t *testing.T, body string) {
	t.Helper()
	for _, s := range leaks {
		if strings.Contains(body, s) {
			t.Errorf("response leaks %q: %s", s, body)
		}
	}
}

func TestDatabaseErrorsDoNotLeak(t *testing.T) {
	db := pgtest.Open(t)
	ws, _, key := pgtest.Workspace(t, db)
	ctx := context.Background()

	// A store whose pool is closed.
	closed, err := postgres.Open(ctx, pgtest.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	closed.Close()
	// A store whose database does not answer: nothing listens on port 1.
	down, err := postgres.Open(ctx, "postgres://c360@127.0.0.1:1/c360?sslmode=disable&connect_timeout=2")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(down.Close)

	for _, tc := range []struct {
		name  string
		store *postgres.DB
		codes []string
	}{
		{"closed pool", closed, []string{c360.EINTERNAL, c360.EUNAVAILABLE}},
		{"database down", down, []string{c360.EUNAVAILABLE}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := serve(t, db, newResolver(tc.store), db)
			for _, q := range []string{
				fmt.Sprintf(`{ customer(id: "%d") { id } }`, ws),
				`{ customerByIdentity(type: "email", value: "x@example.com") { id } }`,
				`{ customers(first: 5) { edges { node { id identities { type } } } } }`,
				`mutation { identify(input: {identities: [{type: "email", value: "x@example.com"}]}) { id } }`,
			} {
				r := gql(t, srv, key, q, nil)
				if len(r.Errors) == 0 {
					t.Errorf("%s: no error, want one; body %s", q, r.Body)
					continue
				}
				code := r.code()
				if !contains(tc.codes, code) {
					t.Errorf("%s: code = %q, want one of %v; body %s", q, code, tc.codes, r.Body)
				}
				assertNoLeak(t, r.Body)
			}
		})
	}

	t.Run("authentication with the database down", func(t *testing.T) {
		// A fresh key, so no replica cache can answer for the database.
		fresh, _, err := db.CreateAPIKey(ctx, mustSlug(t, db, ws), c360.RoleAgent, nil)
		if err != nil {
			t.Fatal(err)
		}
		srv := serve(t, down, newResolver(down), down)
		r := gql(t, srv, fresh, `{ customers(first: 1) { edges { cursor } } }`, nil)
		r.wantCode(t, c360.EUNAVAILABLE)
		if r.Status != http.StatusServiceUnavailable {
			t.Errorf("status = %d, want 503", r.Status)
		}
		if r.Header.Get("Retry-After") == "" {
			t.Error("503 without Retry-After")
		}
		assertNoLeak(t, r.Body)

		resp, err := srv.Client().Get(srv.URL + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusServiceUnavailable {
			t.Errorf("GET /readyz with the database down = %d, want 503", resp.StatusCode)
		}
		assertNoLeak(t, string(b))
	})
}

func mustSlug(t *testing.T, db *postgres.DB, ws int64) string {
	t.Helper()
	var slug string
	if err := db.Pool.QueryRow(context.Background(), `SELECT slug FROM workspaces WHERE id = $1`, ws).Scan(&slug); err != nil {
		t.Fatal(err)
	}
	return slug
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
