package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/internal/pgtest"
	"github.com/c360dev/c360/postgres"
	"github.com/c360dev/c360/resolver"
	"github.com/c360dev/c360/server"
)

func TestMain(m *testing.M) {
	code := m.Run()
	pgtest.Drop()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// newResolver wires the resolvers to the store as cmd/c360 does.
func newResolver(db *postgres.DB) *resolver.Resolver {
	return &resolver.Resolver{
		CustomerService:     db,
		EventService:        db,
		ConversationService: db,
		IdentityService:     db,
		ErasureService:      db,
		Ingester:            db,
		Now:                 db.Now,
		ContextService:      db,
		ObservationService:  db,
	}
}

// env is a server on a real store, with one workspace and its admin key.
type env struct {
	db   *postgres.DB
	srv  *httptest.Server
	ws   int64
	slug string
	key  string
}

func newEnv(t *testing.T, opts ...postgres.Option) *env {
	t.Helper()
	db := pgtest.Open(t, opts...)
	ws, slug, key := pgtest.Workspace(t, db)
	return &env{db: db, srv: serve(t, db, newResolver(db), db), ws: ws, slug: slug, key: key}
}

// serve starts the real server over auth and r, closed at the test's end.
func serve(t *testing.T, auth c360.APIKeyService, r *resolver.Resolver, ready server.Readiness) *httptest.Server {
	t.Helper()
	return serveWith(t, server.Config{Logger: slog.New(slog.DiscardHandler)}, auth, r, ready)
}

func serveWith(t *testing.T, cfg server.Config, auth c360.APIKeyService, r *resolver.Resolver, ready server.Readiness) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(server.New(cfg, auth, r, ready))
	t.Cleanup(srv.Close)
	return srv
}

type gqlError struct {
	Message    string         `json:"message"`
	Path       []any          `json:"path"`
	Extensions map[string]any `json:"extensions"`
}

// response is one answer of /graphql: the HTTP status, the raw body and the
// decoded GraphQL response.
type response struct {
	Status int
	Header http.Header
	Body   string
	Data   json.RawMessage `json:"data"`
	Errors []gqlError      `json:"errors"`
}

// code returns errors[0].extensions.code, or "" when there is no error.
func (r *response) code() string {
	if len(r.Errors) == 0 {
		return ""
	}
	c, _ := r.Errors[0].Extensions["code"].(string)
	return c
}

// gql posts a GraphQL request with the key as Bearer token ("" sends none).
func gql(t *testing.T, srv *httptest.Server, key, query string, vars map[string]any) *response {
	t.Helper()
	body, err := json.Marshal(map[string]any{"query": query, "variables": vars})
	if err != nil {
		t.Fatal(err)
	}
	return post(t, srv, key, body)
}

func post(t *testing.T, srv *httptest.Server, key string, body []byte) *response {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, srv.URL+"/graphql", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	return do(t, srv, req)
}

// do sends req and decodes the GraphQL response.
func do(t *testing.T, srv *httptest.Server, req *http.Request) *response {
	t.Helper()
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	r := &response{Status: resp.StatusCode, Header: resp.Header, Body: string(raw)}
	if err := json.Unmarshal(raw, r); err != nil {
		t.Fatalf("response is not JSON (status %d): %v\n%s", resp.StatusCode, err, raw)
	}
	return r
}

// ok fails the test unless the response has data and no error; it decodes
// data into v.
func (r *response) ok(t *testing.T, v any) {
	t.Helper()
	if len(r.Errors) > 0 {
		t.Fatalf("unexpected errors (status %d): %s", r.Status, r.Body)
	}
	if r.Status != http.StatusOK {
		t.Fatalf("status = %d, want 200: %s", r.Status, r.Body)
	}
	if v != nil {
		if err := json.Unmarshal(r.Data, v); err != nil {
			t.Fatalf("decode data: %v\n%s", err, r.Data)
		}
	}
}

// wantCode fails the test unless errors[0].extensions.code is code.
func (r *response) wantCode(t *testing.T, code string) {
	t.Helper()
	if got := r.code(); got != code {
		t.Fatalf("errors[0].extensions.code = %q, want %q; body: %s", got, code, r.Body)
	}
}

// count returns the rows of table that belong to workspace ws.
func count(t *testing.T, db *postgres.DB, table string, ws int64) int {
	t.Helper()
	var n int
	if err := db.Pool.QueryRow(context.Background(),
		`SELECT count(*) FROM `+table+` WHERE workspace_id = $1`, ws).Scan(&n); err != nil {
		t.Fatalf("count %s: %v", table, err)
	}
	return n
}

type identityJSON struct {
	Type  string `json:"type"`
	Value string `json:"value"`
}

type customerJSON struct {
	ID         string         `json:"id"`
	Traits     map[string]any `json:"traits"`
	Identities []identityJSON `json:"identities"`
	Version    int            `json:"version"`
	CreatedAt  string         `json:"createdAt"`
	UpdatedAt  string         `json:"updatedAt"`
}

const customerFields = `id traits identities { type value } version createdAt updatedAt`

const identifyMutation = `mutation($input: IdentifyInput!) { identify(input: $input) { ` + customerFields + ` } }`

const trackMutation = `mutation($input: TrackInput!) {
	track(input: $input) { id type name properties source occurredAt receivedAt } }`

type eventJSON struct {
	ID         string         `json:"id"`
	Type       string         `json:"type"`
	Name       *string        `json:"name"`
	Properties map[string]any `json:"properties"`
	Source     string         `json:"source"`
	OccurredAt string         `json:"occurredAt"`
	ReceivedAt string         `json:"receivedAt"`
}

func ids(pairs ...string) []map[string]any {
	var out []map[string]any
	for i := 0; i+1 < len(pairs); i += 2 {
		out = append(out, map[string]any{"type": pairs[i], "value": pairs[i+1]})
	}
	return out
}

// identify runs the identify mutation and returns the customer.
func (e *env) identify(t *testing.T, input map[string]any) customerJSON {
	t.Helper()
	var out struct{ Identify customerJSON }
	gql(t, e.srv, e.key, identifyMutation, map[string]any{"input": input}).ok(t, &out)
	return out.Identify
}

func (e *env) track(t *testing.T, input map[string]any) eventJSON {
	t.Helper()
	var out struct{ Track eventJSON }
	gql(t, e.srv, e.key, trackMutation, map[string]any{"input": input}).ok(t, &out)
	return out.Track
}

func parseTime(t *testing.T, s string) time.Time {
	t.Helper()
	tm, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		t.Fatalf("time %q: %v", s, err)
	}
	return tm
}

func TestIdentifyThenReadBack(t *testing.T) {
	e := newEnv(t)
	before := time.Now().Add(-time.Minute)
	created := e.identify(t, map[string]any{
		"identities": ids("email", "jane@example.com", "phone", "(415) 555-0100"),
		"traits":     map[string]any{"name": "Jane Doe", "plan": "pro", "seats": 3},
		"messageId":  "identify-jane-1",
	})
	if created.ID == "" {
		t.Fatal("identify returned no id")
	}

	var byIdentity struct{ CustomerByIdentity *customerJSON }
	gql(t, e.srv, e.key, `query($t: String!, $v: String!) { customerByIdentity(type: $t, value: $v) { `+customerFields+` } }`,
		map[string]any{"t": "email", "v": " JANE@Example.COM "}).ok(t, &byIdentity)
	got := byIdentity.CustomerByIdentity
	if got == nil {
		t.Fatal("customerByIdentity(email, \" JANE@Example.COM \") = null, want the customer")
	}
	if got.ID != created.ID {
		t.Errorf("customerByIdentity id = %q, want %q", got.ID, created.ID)
	}
	if got.Traits["name"] != "Jane Doe" || got.Traits["plan"] != "pro" || got.Traits["seats"] != float64(3) {
		t.Errorf("traits = %v, want name Jane Doe, plan pro, seats 3", got.Traits)
	}
	wantIDs := []identityJSON{{"email", "jane@example.com"}, {"phone", "+14155550100"}}
	if fmt.Sprint(got.Identities) != fmt.Sprint(wantIDs) {
		t.Errorf("identities = %v, want %v", got.Identities, wantIDs)
	}
	if got.Version < 1 {
		t.Errorf("version = %d, want >= 1", got.Version)
	}
	for name, s := range map[string]string{"createdAt": got.CreatedAt, "updatedAt": got.UpdatedAt} {
		tm := parseTime(t, s)
		if tm.Before(before) || tm.After(time.Now().Add(time.Minute)) {
			t.Errorf("%s = %v, want about now", name, tm)
		}
	}

	// Looked up by phone, in another national format.
	var byPhone struct{ CustomerByIdentity *customerJSON }
	gql(t, e.srv, e.key, `{ customerByIdentity(type: "phone", value: "415.555.0100") { id } }`, nil).ok(t, &byPhone)
	if byPhone.CustomerByIdentity == nil || byPhone.CustomerByIdentity.ID != created.ID {
		t.Errorf("customerByIdentity(phone) = %+v, want id %s", byPhone.CustomerByIdentity, created.ID)
	}

	var byID struct{ Customer *customerJSON }
	gql(t, e.srv, e.key, `query($id: ID!) { customer(id: $id) { `+customerFields+` } }`,
		map[string]any{"id": created.ID}).ok(t, &byID)
	if byID.Customer == nil {
		t.Fatal("customer(id) = null")
	}
	if g, w := fmt.Sprint(*byID.Customer), fmt.Sprint(*got); g != w {
		t.Errorf("customer(id) = %s, want %s", g, w)
	}
	if g, w := fmt.Sprint(created), fmt.Sprint(*got); g != w {
		t.Errorf("identify returned %s, want what is read back: %s", g, w)
	}
}

func TestTrackAndEventsPagination(t *testing.T) {
	e := newEnv(t)
	base := time.Date(2024, 3, 1, 10, 0, 0, 0, time.UTC)
	// Recorded out of order: the connection orders by occurredAt.
	offsets := []int{2, 3, 1}
	var tracked []eventJSON
	for _, h := range offsets {
		ts := base.Add(time.Duration(h) * time.Hour)
		ev := e.track(t, map[string]any{
			"identities": ids("user_id", "u-42"),
			"event":      fmt.Sprintf("Order Completed %d", h),
			"properties": map[string]any{"total": h * 10, "currency": "EUR"},
			"messageId":  fmt.Sprintf("track-%d", h),
			"timestamp":  ts.Format(time.RFC3339),
		})
		if ev.ID == "" || ev.Type != "track" || ev.Source != "graphql" {
			t.Errorf("track returned id %q type %q source %q, want an id, track, graphql", ev.ID, ev.Type, ev.Source)
		}
		if ev.Name == nil || *ev.Name != fmt.Sprintf("Order Completed %d", h) {
			t.Errorf("name = %v, want Order Completed %d", ev.Name, h)
		}
		if ev.Properties["total"] != float64(h*10) || ev.Properties["currency"] != "EUR" {
			t.Errorf("properties = %v, want total %d, currency EUR", ev.Properties, h*10)
		}
		if got := parseTime(t, ev.OccurredAt); !got.Equal(ts) {
			t.Errorf("occurredAt = %v, want %v", got, ts)
		}
		if ev.ReceivedAt == "" {
			t.Error("receivedAt is empty")
		}
		tracked = append(tracked, ev)
	}
	// Newest first: offsets 3, 2, 1.
	want := []string{tracked[1].ID, tracked[0].ID, tracked[2].ID}

	var c struct{ CustomerByIdentity *customerJSON }
	gql(t, e.srv, e.key, `{ customerByIdentity(type: "user_id", value: "u-42") { id } }`, nil).ok(t, &c)
	if c.CustomerByIdentity == nil {
		t.Fatal("no customer for user_id u-42")
	}
	id := c.CustomerByIdentity.ID

	const q = `query($id: ID!, $first: Int, $after: String) { customer(id: $id) {
		events(first: $first, after: $after) { edges { cursor node { id name occurredAt } } pageInfo { hasNextPage endCursor hasPreviousPage startCursor } } } }`
	type page struct {
		Customer struct {
			Events struct {
				Edges []struct {
					Cursor string
					Node   eventJSON
				}
				PageInfo struct {
					HasNextPage     bool
					EndCursor       *string
					HasPreviousPage bool
					StartCursor     *string
				}
			}
		}
	}

	var all page
	gql(t, e.srv, e.key, q, map[string]any{"id": id, "first": 10}).ok(t, &all)
	var gotAll []string
	for _, edge := range all.Customer.Events.Edges {
		gotAll = append(gotAll, edge.Node.ID)
	}
	if fmt.Sprint(gotAll) != fmt.Sprint(want) {
		t.Errorf("events(first: 10) = %v, want newest first %v", gotAll, want)
	}
	if pi := all.Customer.Events.PageInfo; pi.HasNextPage || pi.HasPreviousPage {
		t.Errorf("events(first: 10): hasNextPage %v, hasPreviousPage %v; want both false", pi.HasNextPage, pi.HasPreviousPage)
	}
	if edges := all.Customer.Events.Edges; len(edges) > 1 {
		if pi := all.Customer.Events.PageInfo; pi.StartCursor == nil || *pi.StartCursor != edges[0].Cursor ||
			pi.EndCursor == nil || *pi.EndCursor != edges[len(edges)-1].Cursor {
			t.Errorf("events(first: 10): startCursor %v, endCursor %v; want the first edge's and the last's", pi.StartCursor, pi.EndCursor)
		}
	}

	var walked []string
	vars := map[string]any{"id": id, "first": 1}
	for i := 0; ; i++ {
		if i > len(want) {
			t.Fatalf("pagination did not end after %d pages: %v", i, walked)
		}
		var p page
		gql(t, e.srv, e.key, q, vars).ok(t, &p)
		ev := p.Customer.Events
		if len(ev.Edges) != 1 {
			t.Fatalf("page %d has %d edges, want 1", i, len(ev.Edges))
		}
		walked = append(walked, ev.Edges[0].Node.ID)
		if ev.PageInfo.EndCursor == nil || *ev.PageInfo.EndCursor != ev.Edges[0].Cursor {
			t.Errorf("page %d endCursor = %v, want the last edge's cursor %q", i, ev.PageInfo.EndCursor, ev.Edges[0].Cursor)
		}
		wantMore := i < len(want)-1
		if ev.PageInfo.HasNextPage != wantMore {
			t.Errorf("page %d hasNextPage = %v, want %v", i, ev.PageInfo.HasNextPage, wantMore)
		}
		if !ev.PageInfo.HasNextPage {
			break
		}
		vars["after"] = *ev.PageInfo.EndCursor
	}
	if fmt.Sprint(walked) != fmt.Sprint(want) {
		t.Errorf("pages of 1 = %v, want %v (no duplicates, no gaps)", walked, want)
	}
}

func TestExactlyOnceThroughGraphQL(t *testing.T) {
	e := newEnv(t)
	versionOf := func(id string) int {
		t.Helper()
		var out struct{ Customer *customerJSON }
		gql(t, e.srv, e.key, `query($id: ID!) { customer(id: $id) { `+customerFields+` } }`, map[string]any{"id": id}).ok(t, &out)
		if out.Customer == nil {
			t.Fatalf("customer %s not found", id)
		}
		return out.Customer.Version
	}

	input := map[string]any{
		"identities": ids("email", "once@example.com"),
		"event":      "Signed Up",
		"messageId":  "msg-once-1",
		"properties": map[string]any{"plan": "free"},
	}
	first := e.track(t, input)
	var c struct{ CustomerByIdentity *customerJSON }
	gql(t, e.srv, e.key, `{ customerByIdentity(type: "email", value: "once@example.com") { id } }`, nil).ok(t, &c)
	if c.CustomerByIdentity == nil {
		t.Fatal("customer not found after track")
	}
	cid := c.CustomerByIdentity.ID
	v1 := versionOf(cid)
	events := count(t, e.db, "events", e.ws)

	input["properties"] = map[string]any{"plan": "paid"}
	second := e.track(t, input)
	if second.ID != first.ID {
		t.Errorf("repeated track returned event %s, want the stored %s", second.ID, first.ID)
	}
	if second.Properties["plan"] != "free" {
		t.Errorf("repeated track properties = %v, want the stored ones (plan free)", second.Properties)
	}
	if v2 := versionOf(cid); v2 != v1 {
		t.Errorf("version after repeated track = %d, want unchanged %d", v2, v1)
	}
	if got := count(t, e.db, "events", e.ws); got != events {
		t.Errorf("events after repeated track = %d, want %d", got, events)
	}

	idIn := map[string]any{
		"identities": ids("user_id", "once-user"),
		"traits":     map[string]any{"name": "First"},
		"messageId":  "msg-once-2",
	}
	a := e.identify(t, idIn)
	idIn["traits"] = map[string]any{"name": "Second"}
	b := e.identify(t, idIn)
	if b.ID != a.ID {
		t.Errorf("repeated identify returned customer %s, want %s", b.ID, a.ID)
	}
	if b.Traits["name"] != "First" {
		t.Errorf("traits after repeated identify = %v, want the first (name First)", b.Traits)
	}
	if b.Version != a.Version {
		t.Errorf("version after repeated identify = %d, want %d", b.Version, a.Version)
	}
	if v := versionOf(a.ID); v != a.Version {
		t.Errorf("stored version = %d, want %d", v, a.Version)
	}
}

// An identify dated far ahead does not win every later trait update: a
// timestamp more than a day past receipt is not believed (the receipt
// time dates the event), as for every source.
func TestFutureTimestampDoesNotWinLaterTraits(t *testing.T) {
	e := newEnv(t)
	ahead := time.Now().AddDate(50, 0, 0).UTC().Format(time.RFC3339)
	e.identify(t, map[string]any{"identities": ids("email", "future@example.com"),
		"traits": map[string]any{"plan": "trial"}, "timestamp": ahead})
	c := e.identify(t, map[string]any{"identities": ids("email", "future@example.com"),
		"traits": map[string]any{"plan": "pro"}, "timestamp": time.Now().UTC().Format(time.RFC3339Nano)})
	if c.Traits["plan"] != "pro" {
		t.Errorf("plan = %v, want pro: the identify dated 50 years ahead still wins", c.Traits["plan"])
	}
	var out struct {
		Customer struct {
			Events struct {
				Edges []struct {
					Node struct{ OccurredAt time.Time }
				}
			}
		}
	}
	gql(t, e.srv, e.key, `query($id: ID!) { customer(id: $id) { events(first: 5) { edges { node { occurredAt } } } } }`,
		map[string]any{"id": c.ID}).ok(t, &out)
	for _, edge := range out.Customer.Events.Edges {
		if at := edge.Node.OccurredAt; at.After(time.Now().Add(c360.MaxFuture)) {
			t.Errorf("an event occurred at %s, want no time past receipt + MaxFuture", at)
		}
	}
}

type customerPage struct {
	Customers struct {
		Edges []struct {
			Cursor string
			Node   customerJSON
		}
		PageInfo struct {
			HasNextPage bool
			EndCursor   *string
		}
	}
}

const customersQuery = `query($q: String, $first: Int, $after: String) {
	customers(query: $q, first: $first, after: $after) {
		edges { cursor node { id traits } } pageInfo { hasNextPage endCursor } } }`

func (p customerPage) names() []string {
	var out []string
	for _, e := range p.Customers.Edges {
		out = append(out, fmt.Sprint(e.Node.Traits["name"]))
	}
	return out
}

func TestCustomersSearch(t *testing.T) {
	e := newEnv(t)
	people := []struct{ name, email, phone string }{
		{"Alice Liddell", "alice@rabbit-hole.example", "+1 212 555 0101"},
		{"Bob Builder", "bob@construct.example", "+1 312 555 0102"},
		{"Carol Danvers", "carol@marvel.example", "(646) 555-0103"},
		// A name that holds a written number, and the number's owner.
		{"Dan 555-0104", "dan@example.com", "+1 415 555 0199"},
		{"Erin Example", "erin@example.com", "+1 415 555 0104"},
		// A Mexico City number, whose last ten digits read as a US one.
		{"Fer Mexico", "fer@example.com", "+52 55 1234 5678"},
	}
	for _, p := range people {
		e.identify(t, map[string]any{
			"identities": ids("email", p.email, "phone", p.phone),
			"traits":     map[string]any{"name": p.name},
		})
	}
	for _, tc := range []struct {
		query string
		want  []string
	}{
		{"liddell", []string{"Alice Liddell"}},
		{"BUILDER", []string{"Bob Builder"}},
		{"construct.exam", []string{"Bob Builder"}},
		{"marvel", []string{"Carol Danvers"}},
		{"6465550103", []string{"Carol Danvers"}},
		{"5550101", []string{"Alice Liddell"}},
		// Numbers as people write them, as customerByIdentity takes them:
		// search text holds them in E.164.
		{"(212) 555-0101", []string{"Alice Liddell"}},
		{"312-555-0102", []string{"Bob Builder"}},
		{"+1 646 555 0103", []string{"Carol Danvers"}},
		{"+1 (646) 555", []string{"Carol Danvers"}},
		{"555-0103", []string{"Carol Danvers"}},
		// The part of a foreign number, written as people write it: its
		// digits, not the US number they would be whole.
		{"55 1234 5678", []string{"Fer Mexico"}},
		{"55-1234-5678", []string{"Fer Mexico"}},
		{"5512345678", []string{"Fer Mexico"}},
		// As written (a name) and as digits (a phone).
		{"555-0104", []string{"Erin Example", "Dan 555-0104"}},
		{"no such person", nil},
		{"a%b%c", nil},
		{"a_b_c", nil},
		{"  ", []string{"Fer Mexico", "Erin Example", "Dan 555-0104", "Carol Danvers", "Bob Builder", "Alice Liddell"}},
		{"", []string{"Fer Mexico", "Erin Example", "Dan 555-0104", "Carol Danvers", "Bob Builder", "Alice Liddell"}},
	} {
		var p customerPage
		gql(t, e.srv, e.key, customersQuery, map[string]any{"q": tc.query, "first": 10}).ok(t, &p)
		if got := p.names(); fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("customers(query: %q) = %v, want %v", tc.query, got, tc.want)
		}
	}

	// A page of a search by two patterns ends where the next begins.
	var got []string
	vars := map[string]any{"q": "555-0104", "first": 1}
	for i := 0; i < 3; i++ {
		var p customerPage
		gql(t, e.srv, e.key, customersQuery, vars).ok(t, &p)
		got = append(got, p.names()...)
		if !p.Customers.PageInfo.HasNextPage {
			break
		}
		vars["after"] = *p.Customers.PageInfo.EndCursor
	}
	if fmt.Sprint(got) != "[Erin Example Dan 555-0104]" {
		t.Errorf("customers(query: \"555-0104\") in pages of 1 = %v, want [Erin Example Dan 555-0104]", got)
	}
}

// A fragment of fewer than 3 letters or digits is refused with
// BAD_USER_INPUT, before any search: the trigram index cannot find it, and
// one that matches nobody read every customer of the workspace (a second
// at a million). A fragment of 3 still finds its customers, words apart
// or together.
func TestCustomersSearchRefusesShortFragments(t *testing.T) {
	e := newEnv(t)
	for _, p := range []struct{ name, email string }{
		{"Quinn Zed", "quinn@example.com"},
		{"Bob Builder", "bob@construct.example"},
	} {
		e.identify(t, map[string]any{"identities": ids("email", p.email), "traits": map[string]any{"name": p.name}})
	}
	for _, q := range []string{"qz", "a", " Q ", "%", "_", "%%%", "---", "a@b", "+1", "(1)", "12", "q.z"} {
		r := gql(t, e.srv, e.key, customersQuery, map[string]any{"q": q, "first": 10})
		if r.code() != c360.EINVALID || len(r.Errors) != 1 || !strings.Contains(r.Errors[0].Message, "at least 3 letters or digits") {
			t.Errorf("customers(query: %q) = %s, want BAD_USER_INPUT naming the 3 letters or digits", q, r.Body)
		}
	}
	for _, tc := range []struct {
		query string
		want  []string
	}{
		{"bob", []string{"Bob Builder"}},
		{"QUI", []string{"Quinn Zed"}},
		{"n ze", []string{"Quinn Zed"}},
		{"e.co", []string{"Quinn Zed"}},
		{"b@co", []string{"Bob Builder"}},
		{"qzx", nil},
	} {
		var p customerPage
		gql(t, e.srv, e.key, customersQuery, map[string]any{"q": tc.query, "first": 10}).ok(t, &p)
		if got := p.names(); fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("customers(query: %q) = %v, want %v", tc.query, got, tc.want)
		}
	}
}

func TestCustomersPagination(t *testing.T) {
	e := newEnv(t)
	var want []string // newest first
	for i := 0; i < 5; i++ {
		c := e.identify(t, map[string]any{
			"identities": ids("user_id", fmt.Sprintf("page-%d", i)),
			"traits":     map[string]any{"name": fmt.Sprintf("P%d", i)},
		})
		want = append([]string{c.ID}, want...)
	}
	var got []string
	var more []bool
	vars := map[string]any{"first": 2}
	for i := 0; i < 10; i++ {
		var p customerPage
		gql(t, e.srv, e.key, customersQuery, vars).ok(t, &p)
		for _, edge := range p.Customers.Edges {
			got = append(got, edge.Node.ID)
		}
		more = append(more, p.Customers.PageInfo.HasNextPage)
		if !p.Customers.PageInfo.HasNextPage {
			break
		}
		if p.Customers.PageInfo.EndCursor == nil {
			t.Fatal("hasNextPage without endCursor")
		}
		vars["after"] = *p.Customers.PageInfo.EndCursor
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("customers in pages of 2 = %v, want %v", got, want)
	}
	if fmt.Sprint(more) != "[true true false]" {
		t.Errorf("hasNextPage per page = %v, want [true true false]", more)
	}
}

// A cursor is of one list: passed to another, it is refused with
// BAD_USER_INPUT instead of positioning that list's page at random. In a
// mutation's answer it is refused before the mutation runs.
func TestCursorOfAnotherListIsRefused(t *testing.T) {
	e := newEnv(t)
	audit := postgres.NewAuditWriter(e.db, postgres.AuditWriterConfig{Logger: slog.New(slog.DiscardHandler)})
	t.Cleanup(audit.Close)
	r := newResolver(e.db)
	r.Audit, r.DeadLetterService = audit, e.db
	e.srv = serve(t, e.db, r, e.db)
	for i := range 2 {
		e.track(t, map[string]any{"identities": ids("email", "lists@example.com"), "event": fmt.Sprintf("E%d", i)})
	}
	e.identify(t, map[string]any{"identities": ids("email", "other@example.com")})
	var p customerPage
	gql(t, e.srv, e.key, customersQuery, map[string]any{"first": 1}).ok(t, &p)
	if p.Customers.PageInfo.EndCursor == nil {
		t.Fatal("customers(first: 1): no endCursor")
	}
	customers := *p.Customers.PageInfo.EndCursor
	var c struct {
		CustomerByIdentity struct {
			ID     string
			Events struct{ PageInfo struct{ EndCursor string } }
		}
	}
	gql(t, e.srv, e.key, `{ customerByIdentity(type: "email", value: "lists@example.com") { id events(first: 1) { pageInfo { endCursor } } } }`,
		nil).ok(t, &c)
	id, events := c.CustomerByIdentity.ID, c.CustomerByIdentity.Events.PageInfo.EndCursor

	// Each list takes its own cursor.
	var next struct {
		Customer struct {
			Events struct{ Edges []struct{ Cursor string } }
		}
	}
	gql(t, e.srv, e.key, `query($id: ID!, $a: String) { customer(id: $id) { events(first: 5, after: $a) { edges { cursor } } } }`,
		map[string]any{"id": id, "a": events}).ok(t, &next)
	if len(next.Customer.Events.Edges) != 1 {
		t.Errorf("events after the first = %d, want 1", len(next.Customer.Events.Edges))
	}
	gql(t, e.srv, e.key, customersQuery, map[string]any{"first": 1, "after": customers}).ok(t, &p)

	for _, tc := range []struct{ name, query, cursor string }{
		{"customers in events", `query($id: ID!, $a: String) { customer(id: $id) { events(after: $a) { edges { cursor } } } }`, customers},
		{"customers in conversations", `query($id: ID!, $a: String) { customer(id: $id) { conversations(after: $a) { edges { cursor } } } }`, customers},
		{"customers in auditLog", `query($a: String) { auditLog(after: $a) { edges { cursor } } }`, customers},
		{"customers in deadLetters", `query($a: String) { deadLetters(after: $a) { edges { cursor } } }`, customers},
		{"events in customers", `query($a: String) { customers(after: $a) { edges { cursor } } }`, events},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := gql(t, e.srv, e.key, tc.query, map[string]any{"id": id, "a": tc.cursor})
			r.wantCode(t, c360.EINVALID)
			if r.Errors[0].Message != "cursor of another list" {
				t.Errorf("message = %q, want %q", r.Errors[0].Message, "cursor of another list")
			}
		})
	}

	before := count(t, e.db, "events", e.ws)
	resp := gql(t, e.srv, e.key, `mutation($a: String) { track(input: {identities: [{type: "email", value: "lists@example.com"}], event: "E"}) {
		id } identify(input: {identities: [{type: "email", value: "lists@example.com"}]}) { events(after: $a) { edges { cursor } } } }`,
		map[string]any{"a": customers})
	resp.wantCode(t, c360.EINVALID)
	if n := count(t, e.db, "events", e.ws); n != before {
		t.Errorf("a mutation refused for a cursor of another list stored %d events", n-before)
	}
}

func TestTenantScoping(t *testing.T) {
	a := newEnv(t)
	_, _, keyB := pgtest.Workspace(t, a.db)
	c := a.identify(t, map[string]any{
		"identities": ids("email", "tenant@example.com"),
		"traits":     map[string]any{"name": "Tenant Person"},
	})

	var byID struct{ Customer *customerJSON }
	gql(t, a.srv, keyB, `query($id: ID!) { customer(id: $id) { id } }`, map[string]any{"id": c.ID}).ok(t, &byID)
	if byID.Customer != nil {
		t.Errorf("customer(id) through workspace B = %+v, want null", byID.Customer)
	}
	var byIdentity struct{ CustomerByIdentity *customerJSON }
	gql(t, a.srv, keyB, `{ customerByIdentity(type: "email", value: "tenant@example.com") { id } }`, nil).ok(t, &byIdentity)
	if byIdentity.CustomerByIdentity != nil {
		t.Errorf("customerByIdentity through workspace B = %+v, want null", byIdentity.CustomerByIdentity)
	}
	for _, q := range []string{"tenant", ""} {
		var p customerPage
		gql(t, a.srv, keyB, customersQuery, map[string]any{"q": q, "first": 100}).ok(t, &p)
		if len(p.Customers.Edges) != 0 {
			t.Errorf("customers(query: %q) through workspace B = %v, want none", q, p.names())
		}
	}
	// Workspace A still sees it: the nulls above come from scoping.
	var own struct{ Customer *customerJSON }
	gql(t, a.srv, a.key, `query($id: ID!) { customer(id: $id) { id } }`, map[string]any{"id": c.ID}).ok(t, &own)
	if own.Customer == nil || own.Customer.ID != c.ID {
		t.Errorf("customer(id) through workspace A = %+v, want id %s", own.Customer, c.ID)
	}
}

func TestHealthReadyGraphiQLMetrics(t *testing.T) {
	e := newEnv(t)
	get := func(path string) (int, string, string) {
		t.Helper()
		resp, err := e.srv.Client().Get(e.srv.URL + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header.Get("Content-Type"), string(b)
	}
	if status, _, body := get("/healthz"); status != http.StatusOK || strings.TrimSpace(body) != "ok" {
		t.Errorf("GET /healthz = %d %q, want 200 \"ok\"", status, body)
	}
	if status, _, body := get("/readyz"); status != http.StatusOK {
		t.Errorf("GET /readyz = %d %q, want 200", status, body)
	}
	status, ctype, body := get("/")
	if status != http.StatusOK || !strings.HasPrefix(ctype, "text/html") || !strings.Contains(strings.ToLower(body), "graphiql") {
		t.Errorf("GET / = %d %q (GraphiQL: %v), want 200 text/html with GraphiQL", status, ctype, strings.Contains(strings.ToLower(body), "graphiql"))
	}
	if status, _, _ := get("/no-such-page"); status != http.StatusNotFound {
		t.Errorf("GET /no-such-page = %d, want 404", status)
	}

	gql(t, e.srv, e.key, `{ customers(first: 1) { edges { cursor } } }`, nil).ok(t, nil)
	status, _, body = get("/metrics")
	if status != http.StatusOK {
		t.Fatalf("GET /metrics = %d, want 200", status)
	}
	if !strings.Contains(body, `c360_http_requests_total{route="/graphql",status="200"}`) {
		t.Errorf("/metrics has no c360_http_requests_total for /graphql 200:\n%s", grepLines(body, "c360_"))
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func TestBodyTooLarge(t *testing.T) {
	e := newEnv(t)
	big := strings.Repeat("x", 1<<20+1024)
	body, _ := json.Marshal(map[string]any{
		"query": identifyMutation,
		"variables": map[string]any{"input": map[string]any{
			"identities": ids("email", "big@example.com"),
			"traits":     map[string]any{"blob": big},
		}},
	})
	r := post(t, e.srv, e.key, body)
	if r.Status != http.StatusRequestEntityTooLarge {
		t.Errorf("status = %d, want 413 (server.Config.MaxBodyBytes); body: %.300s", r.Status, r.Body)
	}
	if got := count(t, e.db, "customers", e.ws); got != 0 {
		t.Errorf("customers after an oversized request = %d, want 0", got)
	}
	if got := count(t, e.db, "events", e.ws); got != 0 {
		t.Errorf("events after an oversized request = %d, want 0", got)
	}
	// A request just under the limit still works.
	small, _ := json.Marshal(map[string]any{
		"query": identifyMutation,
		"variables": map[string]any{"input": map[string]any{
			"identities": ids("email", "big@example.com"),
			"traits":     map[string]any{"blob": strings.Repeat("x", 1<<19)},
		}},
	})
	post(t, e.srv, e.key, small).ok(t, nil)
}

// A trait's number reads back with the digits it was given: PostgreSQL's
// numeric keeps them, and nothing on the way rounds them through a float64.
func TestTraitNumbersReadBackExactly(t *testing.T) {
	e := newEnv(t)
	e.identify(t, map[string]any{
		"identities": ids("email", "digits@example.com"),
		"traits":     map[string]any{"account": json.Number("12345678901234567"), "score": json.Number("18.990")},
	})
	r := gql(t, e.srv, e.key, `query($v: String!) { customerByIdentity(type: "email", value: $v) { traits } }`,
		map[string]any{"v": "digits@example.com"})
	if len(r.Errors) > 0 || !strings.Contains(r.Body, `"account":12345678901234567`) || !strings.Contains(r.Body, `"score":18.990`) {
		t.Errorf("traits read back as %s, want account 12345678901234567 and score 18.990", r.Body)
	}
	// A number no float64 holds is refused: stored, 1e100000 would read
	// back as 100,001 digits.
	r = gql(t, e.srv, e.key, identifyMutation, map[string]any{"input": map[string]any{
		"identities": ids("email", "digits@example.com"), "traits": map[string]any{"huge": json.Number("1e100000")}}})
	if r.code() != "BAD_USER_INPUT" {
		t.Errorf("identify with 1e100000: %s, want BAD_USER_INPUT", r.Body)
	}
}
