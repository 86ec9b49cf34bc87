package server_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/internal/logbuf"
	"github.com/c360dev/c360/internal/pgtest"
	"github.com/c360dev/c360/server"
)

func TestGraphQLOverGET(t *testing.T) {
	e := newEnv(t)
	e.identify(t, map[string]any{"identities": ids("email", "get@example.com")})
	get := func(query string) *response {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, e.srv.URL+"/graphql?query="+url.QueryEscape(query), nil)
		req.Header.Set("Authorization", "Bearer "+e.key)
		return do(t, e.srv, req)
	}
	var out struct{ CustomerByIdentity *struct{ ID string } }
	get(`{ customerByIdentity(type: "email", value: "get@example.com") { id } }`).ok(t, &out)
	if out.CustomerByIdentity == nil {
		t.Error("GET query found no customer, want one")
	}

	// GET is safe: a mutation over GET is refused and writes nothing, with
	// 405 and Allow: POST (GraphQL over HTTP: MUST), as is a subscription.
	before := count(t, e.db, "events", e.ws)
	for _, q := range []string{
		`mutation { identify(input: {identities: [{type: "email", value: "viaget@example.com"}]}) { id } }`,
		`query Q { __typename } mutation M { identify(input: {identities: [{type: "email", value: "viaget@example.com"}]}) { id } }&operationName=M`,
		`subscription { customerChanges { kind } }`,
	} {
		query, opName, _ := strings.Cut(q, "&operationName=")
		req, _ := http.NewRequest(http.MethodGet, e.srv.URL+"/graphql?query="+url.QueryEscape(query)+"&operationName="+opName, nil)
		req.Header.Set("Authorization", "Bearer "+e.key)
		r := do(t, e.srv, req)
		if r.Status != http.StatusMethodNotAllowed || r.Header.Get("Allow") != "POST" || r.code() != c360.EINVALID {
			t.Errorf("%s over GET: %d, Allow %q, %s; want 405, Allow: POST, BAD_USER_INPUT", q, r.Status, r.Header.Get("Allow"), r.Body)
		}
	}
	if got := count(t, e.db, "events", e.ws); got != before {
		t.Errorf("events after a mutation over GET = %d, want %d", got, before)
	}
}

// /graphql answers a method it does not serve with 405 and the methods it
// does (RFC 9110: a 405 MUST carry Allow).
func TestGraphQLMethodNotAllowedNamesTheMethods(t *testing.T) {
	e := newEnv(t)
	for _, method := range []string{http.MethodPut, http.MethodDelete, http.MethodPatch} {
		req, _ := http.NewRequest(method, e.srv.URL+"/graphql", strings.NewReader(`{"query":"{ __typename }"}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+e.key)
		r := do(t, e.srv, req)
		if r.Status != http.StatusMethodNotAllowed || r.Header.Get("Allow") != "OPTIONS, GET, POST" || r.code() != c360.EINVALID {
			t.Errorf("%s /graphql: %d, Allow %q, %s; want 405, Allow: OPTIONS, GET, POST, BAD_USER_INPUT",
				method, r.Status, r.Header.Get("Allow"), r.Body)
		}
	}
	// HEAD (no body) is refused alike, and OPTIONS names the same methods.
	for method, status := range map[string]int{http.MethodHead: http.StatusMethodNotAllowed, http.MethodOptions: http.StatusOK} {
		req, _ := http.NewRequest(method, e.srv.URL+"/graphql", nil)
		req.Header.Set("Authorization", "Bearer "+e.key)
		res, err := e.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != status || res.Header.Get("Allow") != "OPTIONS, GET, POST" {
			t.Errorf("%s /graphql: %d, Allow %q; want %d, Allow: OPTIONS, GET, POST", method, res.StatusCode, res.Header.Get("Allow"), status)
		}
	}
}

func TestIntrospection(t *testing.T) {
	const q = `{ __schema { queryType { name } } }`
	t.Run("production", func(t *testing.T) {
		e := newEnv(t)
		var logs logbuf.Buffer
		srv := serveWith(t, server.Config{Logger: slog.New(slog.NewTextHandler(&logs, nil))}, e.db, newResolver(e.db), e.db)
		r := gql(t, srv, e.key, q, nil)
		if len(r.Errors) == 0 {
			t.Fatalf("introspection with Dev off answered %s, want a refusal", r.Body)
		}
		// Disabled introspection is a refusal, not a server fault: GraphiQL
		// asks for the schema on every load.
		if code := r.code(); code != c360.EFORBIDDEN && code != c360.EINVALID {
			t.Errorf("introspection with Dev off: code = %q, want %q or %q; body %s", code, c360.EFORBIDDEN, c360.EINVALID, r.Body)
		}
		if !strings.Contains(strings.ToLower(r.Errors[0].Message), "introspection") {
			t.Errorf("message = %q, want it to say introspection is disabled", r.Errors[0].Message)
		}
		if strings.Contains(logs.String(), "level=ERROR") {
			t.Errorf("a client's introspection query was logged as a server error:\n%s", logs.String())
		}
		// __typename is not introspection and always answers.
		var tn struct {
			Typename string `json:"__typename"`
		}
		gql(t, srv, e.key, `{ __typename }`, nil).ok(t, &tn)
		if tn.Typename != "Query" {
			t.Errorf("__typename = %q, want Query", tn.Typename)
		}
	})
	t.Run("dev", func(t *testing.T) {
		db := pgtest.Open(t)
		_, _, key := pgtest.Workspace(t, db)
		srv := serveWith(t, server.Config{Dev: true, Logger: slog.New(slog.DiscardHandler)}, db, newResolver(db), db)
		var out struct {
			Schema struct{ QueryType struct{ Name string } } `json:"__schema"`
		}
		gql(t, srv, key, q, nil).ok(t, &out)
		if out.Schema.QueryType.Name != "Query" {
			t.Errorf("__schema.queryType.name = %q, want Query", out.Schema.QueryType.Name)
		}
	})
}

func TestMergedCustomerResolvesToSurvivor(t *testing.T) {
	e := newEnv(t)
	a := e.identify(t, map[string]any{
		"identities": ids("email", "merge@example.com"),
		"traits":     map[string]any{"name": "Merge Person"},
	})
	var byPhone struct{ Track struct{ ID string } }
	gql(t, e.srv, e.key, trackMutation, map[string]any{"input": map[string]any{
		"identities": ids("phone", "+1 415 555 0177"), "event": "Called"}}).ok(t, &byPhone)
	var bc struct{ CustomerByIdentity *customerJSON }
	gql(t, e.srv, e.key, `{ customerByIdentity(type: "phone", value: "+14155550177") { id } }`, nil).ok(t, &bc)
	if bc.CustomerByIdentity == nil || bc.CustomerByIdentity.ID == a.ID {
		t.Fatalf("phone customer = %+v, want a second customer", bc.CustomerByIdentity)
	}
	b := bc.CustomerByIdentity.ID

	// One event names both: the two profiles become one.
	linked := e.identify(t, map[string]any{"identities": ids("email", "merge@example.com", "phone", "(415) 555-0177")})
	if linked.ID != a.ID && linked.ID != b {
		t.Fatalf("linking identify returned %s, want %s or %s", linked.ID, a.ID, b)
	}
	for _, id := range []string{a.ID, b} {
		var out struct{ Customer *customerJSON }
		gql(t, e.srv, e.key, `query($id: ID!) { customer(id: $id) { `+customerFields+` } }`, map[string]any{"id": id}).ok(t, &out)
		if out.Customer == nil || out.Customer.ID != linked.ID {
			t.Errorf("customer(%s) = %+v, want the survivor %s", id, out.Customer, linked.ID)
			continue
		}
		if len(out.Customer.Identities) != 2 || out.Customer.Traits["name"] != "Merge Person" {
			t.Errorf("survivor identities %v traits %v, want both identities and name Merge Person",
				out.Customer.Identities, out.Customer.Traits)
		}
	}
	var p customerPage
	gql(t, e.srv, e.key, customersQuery, map[string]any{"first": 10}).ok(t, &p)
	if len(p.Customers.Edges) != 1 || p.Customers.Edges[0].Node.ID != linked.ID {
		t.Errorf("customers after merge = %v, want only the survivor %s", p.Customers.Edges, linked.ID)
	}
	var ev struct {
		Customer struct {
			Events struct{ Edges []struct{ Node eventJSON } }
		}
	}
	gql(t, e.srv, e.key, `query($id: ID!) { customer(id: $id) { events(first: 10) { edges { node { id type } } } } }`,
		map[string]any{"id": linked.ID}).ok(t, &ev)
	if n := len(ev.Customer.Events.Edges); n != 3 {
		t.Errorf("survivor has %d events, want 3 (both profiles' and the linking one)", n)
	}
}

// TestEveryGraphQLErrorHasCode covers requests refused by the transports
// before execution: the contract says every error carries extensions.code.
func TestEveryGraphQLErrorHasCode(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct {
		name, method, path, ctype, body, accept string
	}{
		{"malformed JSON body", http.MethodPost, "/graphql", "application/json", `{"query": `, ""},
		{"unsupported content type", http.MethodPost, "/graphql", "text/plain", `{ __typename }`, ""},
		{"a response's content type", http.MethodPost, "/graphql", "application/graphql-response+json", `{"query":"{ __typename }"}`, ""},
		{"unsupported method", http.MethodPut, "/graphql", "application/json", `{"query":"{ __typename }"}`, ""},
		{"GET with malformed variables", http.MethodGet, "/graphql?query=" + url.QueryEscape(`query($a: Int) { __typename }`) + "&variables=%7B", "", "", ""},
		{"GET mutation", http.MethodGet, "/graphql?query=" + url.QueryEscape(`mutation { track(input: {identities: [], event: "x"}) { id } }`), "", "", ""},
		// gqlgen's GET transport answers these four without a code.
		{"GET with variables not an object", http.MethodGet, "/graphql?query=" + url.QueryEscape(`{ __typename }`) + "&variables=5", "", "", ""},
		{"GET with variables an array", http.MethodGet, "/graphql?query=" + url.QueryEscape(`{ __typename }`) + "&variables=%5B1%5D", "", "", ""},
		{"GET with extensions not an object", http.MethodGet, "/graphql?query=" + url.QueryEscape(`{ __typename }`) + "&extensions=%5B%5D", "", "", ""},
		{"GET with a malformed escape", http.MethodGet, "/graphql?query=" + url.QueryEscape(`{ __typename }`) + "&x=%zz", "", "", ""},
		{"GET with blank variables", http.MethodGet, "/graphql?query=" + url.QueryEscape(`{ __typename }`) + "&variables=%20", "", "", ""},
		// No SSE transport takes a GET: gqlgen's GET transport answers it,
		// whatever it accepts.
		{"GET accepting an event stream, variables not an object", http.MethodGet, "/graphql?query=" + url.QueryEscape(`{ __typename }`) + "&variables=5", "", "", "text/event-stream"},
		{"GET accepting an event stream, a mutation", http.MethodGet, "/graphql?query=" + url.QueryEscape(`mutation { track(input: {identities: [], event: "x"}) { id } }`), "", "", "text/event-stream"},
		// A plain POST cannot stream: gqlgen's transport held it open until
		// the first change, or for ever.
		{"a subscription over a plain POST", http.MethodPost, "/graphql", "application/json", `{"query":"subscription { customerChanges { kind } }"}`, ""},
		{"a subscription over a POST accepting graphql-response+json", http.MethodPost, "/graphql", "application/json", `{"query":"subscription { customerChanges { kind } }"}`, "application/graphql-response+json"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// An answer that never comes fails the case, not the whole run.
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, tc.method, e.srv.URL+tc.path, strings.NewReader(tc.body))
			if tc.accept != "" {
				req.Header.Set("Accept", tc.accept)
			}
			if tc.ctype != "" {
				req.Header.Set("Content-Type", tc.ctype)
			}
			req.Header.Set("Authorization", "Bearer "+e.key)
			r := do(t, e.srv, req)
			if r.Status < 400 || r.Status >= 500 {
				t.Errorf("status = %d, want 4xx", r.Status)
			}
			if len(r.Errors) == 0 {
				t.Fatalf("no errors in %s", r.Body)
			}
			if code := r.code(); code == "" || code == c360.EINTERNAL {
				t.Errorf("errors[0].extensions.code = %q, want a client error code; body %s", code, r.Body)
			}
		})
	}
}

// A body that is not a GraphQL request's JSON object is refused with 400
// and a message that names what is wrong, not Go's types, and the answer
// never repeats the body: it may carry a secret (a mutation's token).
func TestMalformedBodiesAreRefusedWithoutEcho(t *testing.T) {
	e := newEnv(t)
	const secret = "s3cret-token-0000"
	for _, tc := range []struct{ name, body, want string }{
		{"variables not an object", `{"query":"{ __typename }","variables":5,"token":"` + secret + `"}`, "variables must be an object"},
		{"variables a string", `{"query":"{ __typename }","variables":"` + secret + `"}`, "variables must be an object"},
		{"query not a string", `{"query":["` + secret + `"]}`, "query must be a string"},
		{"operationName not a string", `{"query":"{ __typename }","operationName":{"x":"` + secret + `"}}`, "operationName must be a string"},
		{"extensions not an object", `{"query":"{ __typename }","extensions":"` + secret + `"}`, "extensions must be an object"},
		{"not JSON", `{"query":"{ __typename }" "` + secret + `"}`, "the body is not valid JSON: invalid character '\"' after object key:value pair (at byte 27)"},
		{"cut short", `{"variables":{"token":"` + secret, "the body is not valid JSON: it ends inside a value"},
		{"empty", ``, "the body is empty"},
		{"batched operations", ` [{"query":"{ __typename }","variables":{"token":"` + secret + `"}}]`, "batched operations are not supported"},
		{"not an object", `"` + secret + `"`, "the body must be a JSON object"},
		// The decoder keeps a key's first type error, and matches keys in
		// any case: the last value being right does not make it right.
		{"a key given twice", `{"query":1,"query":"{ __typename }","variables":{"token":"` + secret + `"}}`, "query must be a string"},
		{"a key in another case", `{"Variables":[1],"variables":{"token":"` + secret + `"},"query":"{ __typename }"}`, `the body's key "Variables" is not "variables": keys are case-sensitive`},
		// Refused whatever the values: encoding/json would run the last
		// copy, or the other case, where a proxy or firewall that reads the
		// first copy, or the exact key, sees a harmless query.
		{"a key given twice, both strings", `{"query":"{ __typename }","query":"mutation { identify(input: {identities: [{type: \"email\", value: \"` + secret + `@example.com\"}]}) { id } }"}`, `the body gives the key "query" more than once`},
		{"a valid key in another case", `{"Query":"{ __typename }","variables":{"token":"` + secret + `"}}`, `the body's key "Query" is not "query": keys are case-sensitive`},
		// One JSON value and nothing after it: the decoder read the first
		// and ignored the rest.
		{"two JSON values", `{"query":"{ __typename }"}{"query":"{ __typename }","variables":{"token":"` + secret + `"}}`, "the body holds more than one JSON value (another starts at byte 27)"},
		{"data after the object", `{"query":"{ __typename }"} ` + secret, "the body has data after its JSON object (at byte 28)"},
		{"an object begun only", ` {`, "the body is not valid JSON: it ends inside a value"},
		{"a key without a value", `{"query"`, "the body is not valid JSON: it ends inside a value"},
	} {
		for _, accept := range []string{"application/json", "text/event-stream"} { // POST and SSE
			t.Run(tc.name+" "+accept, func(t *testing.T) {
				req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/graphql", strings.NewReader(tc.body))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Accept", accept)
				req.Header.Set("Authorization", "Bearer "+e.key)
				r := do(t, e.srv, req)
				if r.Status != http.StatusBadRequest || r.code() != c360.EINVALID || len(r.Errors) != 1 || !strings.Contains(r.Errors[0].Message, tc.want) {
					t.Errorf("answer %d %s, want 400 BAD_USER_INPUT saying %q", r.Status, r.Body, tc.want)
				}
				if strings.Contains(r.Body, secret) || strings.Contains(r.Body, "Go struct") {
					t.Errorf("the answer repeats the body or names Go types: %s", r.Body)
				}
			})
		}
	}
	// The body is decoded only for a caller who may run it: without a key,
	// the answer is 401 whatever the body.
	req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/graphql", strings.NewReader(`{"query":1}`))
	req.Header.Set("Content-Type", "application/json")
	if r := do(t, e.srv, req); r.Status != http.StatusUnauthorized || r.code() != c360.EUNAUTHENTICATED {
		t.Errorf("a malformed body without a key: %d %s, want 401 UNAUTHENTICATED", r.Status, r.Body)
	}
	// Every key may be null, as the GraphQL over HTTP spec lets a client
	// send it, and white space may follow the object. A key that is not a
	// request's is ignored, given twice too: nothing reads it.
	req, _ = http.NewRequest(http.MethodPost, e.srv.URL+"/graphql",
		strings.NewReader(` {"query":"{ __typename }","variables":null,"operationName":null,"extensions":null,"id":"x","id":"y"}`+" \r\n\t"))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+e.key)
	if r := do(t, e.srv, req); r.Status != http.StatusOK || len(r.Errors) != 0 || !strings.Contains(r.Body, `"__typename":"Query"`) {
		t.Errorf("a request with null keys: %d %s, want its data", r.Status, r.Body)
	}
}

// A body refused for its shape runs nothing: not the first of two
// operations, not one followed by junk, not the last copy of a key given
// twice, not a key in another case. Each of these ran its mutation and
// answered 200 when the decoder read the first JSON value only, took the
// last copy of a key, and matched keys in any case.
func TestRefusedBodyStoresNothing(t *testing.T) {
	e := newEnv(t)
	identify := func(email string) string {
		q, _ := json.Marshal(`mutation { identify(input: {identities: [{type: "email", value: "` + email + `"}]}) { id } }`)
		return string(q)
	}
	stored := func() int {
		t.Helper()
		var n int
		if err := e.db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM identities WHERE workspace_id = $1`, e.ws).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	for _, body := range []string{
		`{"query":` + identify("a@example.com") + `}{"query":` + identify("b@example.com") + `}`,
		`{"query":` + identify("a@example.com") + `} junk`,
		`{"query":` + identify("a@example.com") + "}\n{}",
		`{"query":"{ __typename }","query":` + identify("a@example.com") + `}`,
		`{"query":` + identify("a@example.com") + `,"query":"{ __typename }"}`,
		`{"Query":` + identify("a@example.com") + `}`,
		`{"QUERY":` + identify("a@example.com") + `}`,
	} {
		req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/graphql", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+e.key)
		if r := do(t, e.srv, req); r.Status != http.StatusBadRequest || r.code() != c360.EINVALID || len(r.Errors) != 1 {
			t.Errorf("%s: answer %d %s, want 400 BAD_USER_INPUT", body, r.Status, r.Body)
		}
		if n := stored(); n != 0 {
			t.Fatalf("%s: refused, but %d identities are stored", body, n)
		}
	}
	// The same mutation, sent alone, is stored: the check above can fail.
	req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/graphql", strings.NewReader(`{"query":`+identify("a@example.com")+"}\n"))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+e.key)
	do(t, e.srv, req).ok(t, nil)
	if n := stored(); n != 1 {
		t.Errorf("the mutation alone stored %d identities, want 1", n)
	}
}

// An upgrade the server does not speak is ignored, as HTTP lets a server
// ignore one: curl --http2 over cleartext asks for h2c, and the request is
// answered over HTTP/1.1 (gqlgen's transports refused it, without a code).
// A websocket asked for without Connection: Upgrade (a proxy dropped it) is
// refused with a code that says what is missing.
func TestUnknownUpgradeIsIgnored(t *testing.T) {
	e := newEnv(t)
	post := func(upgrade string) *response {
		req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/graphql", strings.NewReader(`{"query":"{ __typename }"}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+e.key)
		req.Header.Set("Upgrade", upgrade)
		return do(t, e.srv, req)
	}
	if r := post("h2c"); r.Status != http.StatusOK || len(r.Errors) != 0 || !strings.Contains(r.Body, `"__typename":"Query"`) {
		t.Errorf("Upgrade: h2c: %d %s, want the data", r.Status, r.Body)
	}
	if r := post("websocket"); r.Status != http.StatusBadRequest || r.code() != c360.EINVALID || !strings.Contains(r.Body, "Connection: Upgrade") {
		t.Errorf("Upgrade: websocket without Connection: %d %s, want 400 BAD_USER_INPUT naming Connection: Upgrade", r.Status, r.Body)
	}
}

// persistedQuery returns the bodies of an automatic persisted query (APQ):
// the query with its hash, which persists it, and the hash alone.
func persistedQuery(t *testing.T, query string) (full, hashOnly []byte, ext map[string]any) {
	t.Helper()
	sum := sha256.Sum256([]byte(query))
	ext = map[string]any{"persistedQuery": map[string]any{"version": 1, "sha256Hash": hex.EncodeToString(sum[:])}}
	full, err := json.Marshal(map[string]any{"query": query, "extensions": ext})
	if err != nil {
		t.Fatal(err)
	}
	hashOnly, err = json.Marshal(map[string]any{"extensions": ext})
	if err != nil {
		t.Fatal(err)
	}
	return full, hashOnly, ext
}

// A persisted query is its workspace's: another workspace's key that sends
// only the hash of a text it guesses (a lookup with a literal address in
// it) learns nothing of whether some client sent it, and runs nothing.
func TestPersistedQueriesArePerWorkspace(t *testing.T) {
	e := newEnv(t)
	_, _, keyB := pgtest.Workspace(t, e.db)
	e.identify(t, map[string]any{"identities": ids("email", "ceo@acme.example")})
	full, hashOnly, _ := persistedQuery(t, `{ customerByIdentity(type: "email", value: "ceo@acme.example") { id } }`)
	var out struct{ CustomerByIdentity *customerJSON }
	post(t, e.srv, e.key, full).ok(t, &out)
	post(t, e.srv, e.key, hashOnly).ok(t, &out)
	if out.CustomerByIdentity == nil {
		t.Fatal("the hash alone, in the workspace that persisted it, found nobody")
	}

	r := post(t, e.srv, keyB, hashOnly)
	if len(r.Errors) == 0 || r.Errors[0].Message != "PersistedQueryNotFound" {
		t.Errorf("another workspace's hash alone: %d %s, want PersistedQueryNotFound", r.Status, r.Body)
	}
	// It persists the text for itself, and runs it in its own workspace.
	out.CustomerByIdentity = nil
	post(t, e.srv, keyB, full).ok(t, &out)
	post(t, e.srv, keyB, hashOnly).ok(t, &out)
	if out.CustomerByIdentity != nil {
		t.Errorf("workspace B's own persisted lookup found %s, a customer of workspace A", out.CustomerByIdentity.ID)
	}
	// Without a key, a hash is refused before any cache is asked.
	if r := post(t, e.srv, "", hashOnly); r.Status != http.StatusUnauthorized || r.code() != c360.EUNAUTHENTICATED {
		t.Errorf("the hash alone without a key: %d %s, want 401 UNAUTHENTICATED", r.Status, r.Body)
	}
}

// A persisted mutation named over GET by its hash alone is refused as one
// written out is: 405, Allow: POST and a code (gqlgen's GET transport
// answered 406 without one), and nothing runs. A persisted query runs by
// its hash over GET.
func TestPersistedMutationOverGETIsRefused(t *testing.T) {
	e := newEnv(t)
	getHash := func(ext map[string]any, opName string) *response {
		t.Helper()
		b, _ := json.Marshal(ext)
		req, _ := http.NewRequest(http.MethodGet, e.srv.URL+"/graphql?extensions="+url.QueryEscape(string(b))+"&operationName="+opName, nil)
		req.Header.Set("Authorization", "Bearer "+e.key)
		return do(t, e.srv, req)
	}
	mutation, _, ext := persistedQuery(t, `query Q { __typename } mutation M { identify(input: {identities: [{type: "email", value: "apq@example.com"}]}) { id } }`)
	var persisted struct{ Identify customerJSON }
	post(t, e.srv, e.key, []byte(strings.Replace(string(mutation), `{`, `{"operationName":"M",`, 1))).ok(t, &persisted)
	before := count(t, e.db, "events", e.ws)
	for _, opName := range []string{"M", ""} {
		r := getHash(ext, opName)
		if r.Status != http.StatusMethodNotAllowed || r.Header.Get("Allow") != "POST" || r.code() != c360.EINVALID {
			t.Errorf("persisted mutation by its hash over GET (operationName %q): %d, Allow %q, %s; want 405, Allow: POST, BAD_USER_INPUT",
				opName, r.Status, r.Header.Get("Allow"), r.Body)
		}
	}
	// The document's query runs by its name.
	var out struct {
		Typename string `json:"__typename"`
	}
	getHash(ext, "Q").ok(t, &out)
	if got := count(t, e.db, "events", e.ws); got != before {
		t.Errorf("events after a persisted mutation over GET = %d, want %d", got, before)
	}

	query, _, ext := persistedQuery(t, `{ customerByIdentity(type: "email", value: "apq@example.com") { id } }`)
	post(t, e.srv, e.key, query).ok(t, nil)
	var found struct{ CustomerByIdentity *customerJSON }
	getHash(ext, "").ok(t, &found)
	if found.CustomerByIdentity == nil || found.CustomerByIdentity.ID != persisted.Identify.ID {
		t.Errorf("persisted query by its hash over GET found %+v, want %s", found.CustomerByIdentity, persisted.Identify.ID)
	}
	// A hash no client of the workspace sent is gqlgen's to answer.
	_, _, unknown := persistedQuery(t, `{ __typename }`)
	if r := getHash(unknown, ""); len(r.Errors) == 0 || r.Errors[0].Message != "PersistedQueryNotFound" || r.code() == "" {
		t.Errorf("an unknown hash over GET: %d %s, want PersistedQueryNotFound with a code", r.Status, r.Body)
	}
}
