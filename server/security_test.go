package server_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/connectors/segment"
	"github.com/c360dev/c360/graph"
	"github.com/c360dev/c360/internal/pgtest"
	"github.com/c360dev/c360/postgres"
	"github.com/c360dev/c360/server"
)

// secEnv is a server wired as `c360 serve` wires the security layer: key
// management, the audit writer, and the key usage recorder; one workspace
// with a key of every role and one seeded customer.
type secEnv struct {
	db    *postgres.DB
	srv   *httptest.Server
	audit *postgres.AuditWriter
	usage *postgres.KeyUsage
	ws    int64
	slug  string
	keys  map[string]string // role name (admin, agent, assistant, assistant+pii, write, client) -> secret
	cust  string            // the seeded customer's id
}

// Personal data of the seeded customer, and how an assistant sees it.
const (
	janeEmail       = "jane@example.com"
	janeEmailMasked = "j***@example.com"
	janePhone       = "+14155550100"
	janePhoneMasked = "+1******0100"
	janeName        = "Jane Doe"
	janeNameMasked  = "J***"
)

func newSecEnv(t *testing.T, cfg server.Config) *secEnv {
	t.Helper()
	db := pgtest.Open(t)
	ctx := context.Background()
	creds, err := db.CreateWorkspace(ctx, fmt.Sprintf("sec-%d", time.Now().UnixNano()%1e12), "security")
	if err != nil {
		t.Fatal(err)
	}
	e := &secEnv{db: db, ws: creds.ID, slug: creds.Slug,
		keys: map[string]string{"admin": creds.APIKey, "write": creds.WriteKey}}
	for name, k := range map[string]struct {
		role   c360.Role
		scopes []string
	}{"agent": {c360.RoleAgent, nil}, "assistant": {c360.RoleAssistant, nil}, "assistant+pii": {c360.RoleAssistant, []string{c360.ScopePII}},
		"client": {c360.RoleClient, nil}} {
		secret, _, err := db.CreateAPIKey(ctx, creds.Slug, k.role, k.scopes)
		if err != nil {
			t.Fatal(err)
		}
		e.keys[name] = secret
	}
	e.audit = postgres.NewAuditWriter(db, postgres.AuditWriterConfig{Logger: slog.New(slog.DiscardHandler)})
	e.usage = postgres.NewKeyUsage(db, time.Minute, slog.New(slog.DiscardHandler))
	r := newResolver(db)
	r.Keys, r.Audit, r.DeadLetterService = db, e.audit, db
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	e.srv = httptest.NewServer(server.New(cfg, db, r, db))
	t.Cleanup(func() {
		e.srv.Close()
		e.audit.Close()
		e.usage.Close()
	})
	e.cust = e.seed(t)
	return e
}

// seed stores Jane: an email and traits, then an SMS from her phone (a
// second customer), then an identify naming both, which merges them; and
// a track event whose properties carry her email.
func (e *secEnv) seed(t *testing.T) string {
	t.Helper()
	at := time.Now().UTC().Add(-time.Hour)
	email := c360.Identity{Type: "email", Value: janeEmail}
	phone := c360.Identity{Type: "phone", Value: janePhone}
	events := []*c360.Event{
		{Type: c360.EventIdentify, Source: "graphql", DedupeKey: "seed-1", OccurredAt: at, Identities: []c360.Identity{email},
			Traits: map[string]any{"name": janeName, "email": janeEmail, "plan": "pro",
				"address": map[string]any{"street": "1 Main St", "city": "San Francisco"}}},
		{Type: c360.EventMessage, Source: "twilio", DedupeKey: "SMseed", OccurredAt: at.Add(time.Minute), Identities: []c360.Identity{phone},
			Message: &c360.MessageInput{Channel: c360.ChannelSMS, Direction: c360.DirectionInbound, Body: "hi, it's Jane", Status: "received"}},
		{Type: c360.EventIdentify, Source: "graphql", DedupeKey: "seed-2", OccurredAt: at.Add(2 * time.Minute), Identities: []c360.Identity{email, phone}},
		{Type: c360.EventTrack, Source: "graphql", DedupeKey: "seed-3", OccurredAt: at.Add(3 * time.Minute), Identities: []c360.Identity{email},
			Name: "Order Completed", Properties: map[string]any{"email": janeEmail, "total": 42}},
	}
	var id int64
	for _, ev := range events {
		res, err := e.db.Ingest(context.Background(), e.ws, []*c360.Event{ev})
		if err != nil {
			t.Fatalf("seed: %v", err)
		}
		id = res[0].CustomerID
	}
	return fmt.Sprint(id)
}

// allowed reports whether a response is not a refusal of the caller.
func allowed(r *response) bool {
	c := r.code()
	return c != c360.EFORBIDDEN && c != c360.EUNAUTHENTICATED && r.Status != http.StatusUnauthorized
}

// pii lists what a response may show of Jane, unmasked and masked.
var janePII = []struct{ raw, masked string }{
	{janeEmail, janeEmailMasked}, {janePhone, janePhoneMasked}, {janeName, janeNameMasked},
}

// TestRoleMatrix sends every protected operation with a key of every role
// and checks each answer: refused (FORBIDDEN) or allowed, and for reads of
// personal data, masked or not.
func TestRoleMatrix(t *testing.T) {
	e := newSecEnv(t, server.Config{})
	const (
		no     = "forbidden"
		yes    = "allowed"
		raw    = "unmasked" // allowed, personal data as stored
		masked = "masked"   // allowed, personal data masked
	)
	// Per role: admin, agent, assistant, assistant+pii, write, client. The
	// client key, which may be public, reaches no field: through identify
	// it could name any email or phone (it sends Segment calls only).
	roles := []string{"admin", "agent", "assistant", "assistant+pii", "write", "client"}
	reader := []string{raw, raw, masked, raw, no, no}
	readerPlain := []string{yes, yes, yes, yes, no, no}
	vars := map[string]any{"id": e.cust}
	for _, tc := range []struct {
		name  string
		query string
		want  []string
		// show: the personal data the field returns, as pii pairs' indexes.
		show []int
	}{
		{"customer", `query($id: ID!) { customer(id: $id) { id } }`, readerPlain, nil},
		{"customerByIdentity", `{ customerByIdentity(type: "email", value: "JANE@example.com") { id } }`, readerPlain, nil},
		{"customers", `{ customers(first: 5) { edges { node { id } } } }`, readerPlain, nil},
		{"traits", `query($id: ID!) { customer(id: $id) { traits } }`, reader, []int{0, 2}},
		{"identities", `query($id: ID!) { customer(id: $id) { identities { type value } } }`, reader, []int{0, 1}},
		{"list identities", `{ customers(first: 5) { edges { node { identities { value } } } } }`, reader, []int{0, 1}},
		{"lookup identities", `{ customerByIdentity(type: "phone", value: "(415) 555-0100") { identities { value } } }`, reader, []int{0, 1}},
		{"event properties", `query($id: ID!) { customer(id: $id) { events(first: 10) { edges { node { name properties } } } } }`, reader, []int{0}},
		{"traitSources", `query($id: ID!) { customer(id: $id) { traitSources { name value } } }`, reader, []int{0, 2}},
		{"merge ledger", `query($id: ID!) { customer(id: $id) { merges { kind identity { type value } } } }`, reader, nil},
		{"conversations", `query($id: ID!) { customer(id: $id) { conversations { edges { node { channel messages { edges { node { body } } } } } } } }`, readerPlain, nil},
		{"consents", `query($id: ID!) { customer(id: $id) { consents { channel } } }`, readerPlain, nil},
		{"identityRules", `{ identityRules { defaultLimit } }`, []string{yes, yes, no, no, no, no}, nil},
		{"identify", `mutation { identify(input: {identities: [{type: "user_id", value: "matrix"}]}) { id } }`, []string{yes, yes, no, no, yes, no}, nil},
		{"identify selecting traits", `mutation { identify(input: {identities: [{type: "email", value: "jane@example.com"}]}) { traits } }`, []string{raw, raw, no, no, no, no}, []int{0, 2}},
		{"track", `mutation { track(input: {identities: [{type: "user_id", value: "matrix"}], event: "E"}) { id } }`, []string{yes, yes, no, no, yes, no}, nil},
		{"track selecting properties", `mutation { track(input: {identities: [{type: "user_id", value: "matrix"}], event: "E", properties: {plan: "x"}}) { properties } }`, []string{yes, yes, no, no, no, no}, nil},
		{"updateIdentityRules", `mutation { updateIdentityRules(input: {limits: [{type: "user_id", limit: 1}], defaultLimit: 5}) { defaultLimit } }`, []string{yes, no, no, no, no, no}, nil},
		// Allowed roles get past the role check and fail on the arguments.
		{"mergeCustomers", `mutation($id: ID!) { mergeCustomers(survivorId: $id, mergedId: $id) { id } }`, []string{yes, yes, no, no, no, no}, nil},
		{"splitIdentity", `mutation($id: ID!) { splitIdentity(customerId: $id, type: "email", value: "nobody@example.com") { movedEvents } }`, []string{yes, yes, no, no, no, no}, nil},
		{"sendMessage", `mutation($id: ID!) { sendMessage(input: {customerId: $id, channel: "sms", body: "hi"}) { id } }`, []string{yes, yes, no, no, no, no}, nil},
		{"apiKeys", `{ apiKeys { prefix role } }`, []string{yes, no, no, no, no, no}, nil},
		{"auditLog", `{ auditLog(first: 1) { edges { cursor } } }`, []string{yes, no, no, no, no, no}, nil},
		{"createApiKey", `mutation { createApiKey(role: AGENT) { key { prefix } } }`, []string{yes, no, no, no, no, no}, nil},
		{"revokeApiKey", `mutation { revokeApiKey(prefix: "000000000000") { prefix } }`, []string{yes, no, no, no, no, no}, nil},
		// An empty reason: an admin gets past the role check, and Jane stays.
		{"eraseCustomer", `mutation($id: ID!) { eraseCustomer(id: $id, reason: "") { customerId } }`, []string{yes, no, no, no, no, no}, nil},
	} {
		for i, role := range roles {
			t.Run(tc.name+"/"+role, func(t *testing.T) {
				v := map[string]any{}
				if strings.Contains(tc.query, "$id") {
					v = vars
				}
				r := gql(t, e.srv, e.keys[role], tc.query, v)
				assertNoLeak(t, r.Body)
				want := tc.want[i]
				if want == no {
					r.wantCode(t, c360.EFORBIDDEN)
					for _, p := range janePII {
						if strings.Contains(r.Body, p.raw) || strings.Contains(r.Body, p.masked) {
							t.Errorf("a refused %s key read personal data: %s", role, r.Body)
						}
					}
					return
				}
				if !allowed(r) {
					t.Fatalf("%s key refused: %s", role, r.Body)
				}
				for _, k := range tc.show {
					p := janePII[k]
					switch want {
					case raw:
						if !strings.Contains(r.Body, p.raw) {
							t.Errorf("%s key: %q missing (want it unmasked): %s", role, p.raw, r.Body)
						}
					case masked:
						if !strings.Contains(r.Body, p.masked) {
							t.Errorf("%s key: %q missing (want it masked as %q): %s", role, p.raw, p.masked, r.Body)
						}
					}
				}
				if want == masked {
					for _, p := range janePII {
						if strings.Contains(r.Body, p.raw) {
							t.Errorf("%s key read %q unmasked: %s", role, p.raw, r.Body)
						}
					}
				}
			})
		}
	}
}

// Every root field declares its roles: a field added without @hasRole
// would be open to every key, so this test refuses it.
func TestEveryRootFieldDeclaresRoles(t *testing.T) {
	schema := graph.NewExecutableSchema(graph.Config{}).Schema()
	for _, root := range []string{"Query", "Mutation", "Subscription"} {
		def := schema.Types[root]
		if def == nil {
			continue
		}
		for _, f := range def.Fields {
			if strings.HasPrefix(f.Name, "__") {
				continue
			}
			d := f.Directives.ForName("hasRole")
			if d == nil {
				t.Errorf("%s.%s has no @hasRole: declare which roles may use it", root, f.Name)
				continue
			}
			roles := d.Arguments.ForName("roles").Value.String()
			if f.Name != "identify" && f.Name != "track" && strings.Contains(roles, "WRITE") {
				t.Errorf("%s.%s admits the write key, which may only ingest", root, f.Name)
			}
			if strings.Contains(roles, "CLIENT") {
				t.Errorf("%s.%s admits the client key, which may be public and sends Segment calls only", root, f.Name)
			}
		}
	}
}

// An assistant finds a customer by the real identifier (the lookup takes
// unmasked input) and still reads it masked; the response holds no value
// the assistant did not send.
func TestAssistantLooksUpByUnmaskedIdentity(t *testing.T) {
	e := newSecEnv(t, server.Config{})
	var out struct {
		CustomerByIdentity *struct {
			ID         string
			Identities []identityJSON
			Traits     map[string]any
		}
	}
	gql(t, e.srv, e.keys["assistant"], `{ customerByIdentity(type: "phone", value: "+1 415 555 0100") { id identities { type value } traits } }`, nil).ok(t, &out)
	c := out.CustomerByIdentity
	if c == nil || c.ID != e.cust {
		t.Fatalf("customerByIdentity = %+v, want customer %s", c, e.cust)
	}
	got := map[string]string{}
	for _, id := range c.Identities {
		got[id.Type] = id.Value
	}
	if got["email"] != janeEmailMasked || got["phone"] != janePhoneMasked {
		t.Errorf("identities = %v, want email %s and phone %s", got, janeEmailMasked, janePhoneMasked)
	}
	if c.Traits["name"] != janeNameMasked || c.Traits["email"] != janeEmailMasked || c.Traits["address"] != "***" || c.Traits["plan"] != "pro" {
		t.Errorf("traits = %v, want name, email and address masked and plan as is", c.Traits)
	}
}

// An assistant that reads masked data may search by a whole address, which
// it already has, and by nothing less: a search by fragment would answer
// whether each guessed digit or letter is right, and give the masked value
// away a character at a time. A key with the pii scope, which reads the
// values anyway, searches by fragment.
func TestMaskedSearchTakesWholeAddresses(t *testing.T) {
	e := newSecEnv(t, server.Config{})
	const q = `query($q: String, $after: String) { customers(query: $q, after: $after) { edges { cursor node { id identities { type value } } } pageInfo { hasNextPage } } }`
	type page struct {
		Customers struct {
			Edges []struct {
				Cursor string
				Node   struct{ ID string }
			}
			PageInfo struct{ HasNextPage bool }
		}
	}
	search := func(key, query string) *response {
		return gql(t, e.srv, e.keys[key], q, map[string]any{"q": query})
	}
	for _, query := range []string{janeEmail, "JANE@example.com ", janePhone, "(415) 555-0100"} {
		var out page
		r := search("assistant", query)
		r.ok(t, &out)
		if len(out.Customers.Edges) != 1 || out.Customers.Edges[0].Node.ID != e.cust || out.Customers.PageInfo.HasNextPage ||
			strings.Contains(r.Body, janeEmail) || strings.Contains(r.Body, janePhone) {
			t.Errorf("assistant's search for %q = %s, want Jane alone, masked", query, r.Body)
		}
		if query == janeEmail {
			// Past the one match, the next page is empty.
			var next page
			gql(t, e.srv, e.keys["assistant"], q, map[string]any{"q": query, "after": out.Customers.Edges[0].Cursor}).ok(t, &next)
			if len(next.Customers.Edges) != 0 {
				t.Errorf("the page after the one match holds %d customers", len(next.Customers.Edges))
			}
		}
	}
	// A cursor is checked as on the search by fragment.
	gql(t, e.srv, e.keys["assistant"], q, map[string]any{"q": janeEmail, "after": "not a cursor!"}).wantCode(t, c360.EINVALID)
	// So is the page size.
	for _, first := range []int{0, -5, 101} {
		const qFirst = `query($q: String, $first: Int) { customers(query: $q, first: $first) { edges { node { id } } } }`
		gql(t, e.srv, e.keys["assistant"], qFirst, map[string]any{"q": janeEmail, "first": first}).wantCode(t, c360.EINVALID)
	}
	var none page
	search("assistant", "+14155550101").ok(t, &none)
	if len(none.Customers.Edges) != 0 {
		t.Errorf("a whole number nobody has found %d customers", len(none.Customers.Edges))
	}
	for _, fragment := range []string{"4155550", "415555010", "ane@exa", "jane", "Jane Doe", "example.com"} {
		search("assistant", fragment).wantCode(t, c360.EFORBIDDEN)
	}
	for _, key := range []string{"assistant+pii", "agent"} {
		var out page
		search(key, "ane@exa").ok(t, &out)
		if len(out.Customers.Edges) != 1 {
			t.Errorf("%s's search by fragment found %d customers, want Jane", key, len(out.Customers.Edges))
		}
	}
}

// auditRow is one audit entry as the auditLog query returns it.
type auditRow struct {
	ID         string
	Action     string
	Actor      string
	Role       *string
	CustomerID *string
	Fields     []string
	Detail     map[string]any
}

const auditQuery = `query($first: Int, $after: String, $c: ID, $a: String) {
	auditLog(first: $first, after: $after, customerId: $c, action: $a) {
		edges { cursor node { id action actor role customerId fields detail at } } pageInfo { hasNextPage endCursor } } }`

func (e *secEnv) auditLog(t *testing.T, vars map[string]any) []auditRow {
	t.Helper()
	if err := e.audit.Flush(context.Background()); err != nil {
		t.Fatalf("flush audit: %v", err)
	}
	var out struct {
		AuditLog struct {
			Edges []struct{ Node auditRow }
		}
	}
	if vars["first"] == nil {
		vars["first"] = 100
	}
	gql(t, e.srv, e.keys["admin"], auditQuery, vars).ok(t, &out)
	rows := make([]auditRow, len(out.AuditLog.Edges))
	for i, edge := range out.AuditLog.Edges {
		rows[i] = edge.Node
	}
	return rows
}

// prefixOf returns the public prefix of a key secret.
func prefixOf(secret string) string { return secret[len("c360_") : len("c360_")+12] }

func TestAuditLog(t *testing.T) {
	e := newSecEnv(t, server.Config{})

	// An assistant reads Jane: recorded with the fields it read, masked.
	gql(t, e.srv, e.keys["assistant"], `query($id: ID!) { customer(id: $id) { id traits identities { value } events(first: 5) { edges { cursor } } } }`,
		map[string]any{"id": e.cust}).ok(t, nil)
	rows := e.auditLog(t, map[string]any{"a": c360.AuditCustomerRead})
	if len(rows) != 1 {
		t.Fatalf("customer.read rows = %+v, want 1", rows)
	}
	r := rows[0]
	if r.Actor != "key "+prefixOf(e.keys["assistant"]) || r.Role == nil || *r.Role != "ASSISTANT" ||
		r.CustomerID == nil || *r.CustomerID != e.cust || fmt.Sprint(r.Fields) != "[events identities traits]" {
		t.Errorf("customer.read row = %+v, want the assistant's key, role ASSISTANT, customer %s, fields [events identities traits]", r, e.cust)
	}
	if got := e.auditLog(t, map[string]any{"a": c360.AuditPIIRead}); len(got) != 0 {
		t.Errorf("masked reads recorded as pii.read: %+v", got)
	}

	// Unmasked personal data, by any key: one row per customer and request,
	// naming what was read.
	gql(t, e.srv, e.keys["agent"], `{ customers(first: 10) { edges { node { identities { type value } traits } } } }`, nil).ok(t, nil)
	gql(t, e.srv, e.keys["assistant+pii"], `query($id: ID!) { customer(id: $id) { identities { value } } }`, map[string]any{"id": e.cust}).ok(t, nil)
	rows = e.auditLog(t, map[string]any{"a": c360.AuditPIIRead, "c": e.cust})
	if len(rows) != 2 {
		t.Fatalf("pii.read rows = %+v, want 2 (agent, assistant with pii)", rows)
	}
	if rows[0].Actor != "key "+prefixOf(e.keys["assistant+pii"]) || fmt.Sprint(rows[0].Fields) != "[identity.email identity.phone]" {
		t.Errorf("newest pii.read = %+v, want the pii assistant reading identity.email and identity.phone", rows[0])
	}
	if rows[1].Actor != "key "+prefixOf(e.keys["agent"]) ||
		fmt.Sprint(rows[1].Fields) != "[identity.email identity.phone traits.address traits.email traits.name]" {
		t.Errorf("agent's pii.read = %+v, want identities and the personal traits", rows[1])
	}
	// A read without personal data records nothing.
	n := len(e.auditLog(t, map[string]any{}))
	gql(t, e.srv, e.keys["agent"], `query($id: ID!) { customer(id: $id) { id version consents { channel } } }`, map[string]any{"id": e.cust}).ok(t, nil)
	if got := len(e.auditLog(t, map[string]any{})); got != n+0 {
		t.Errorf("audit rows after a read without personal data = %d, want %d", got, n)
	}

	// Changes, with their actor.
	var other struct{ Identify struct{ ID string } }
	gql(t, e.srv, e.keys["agent"], `mutation { identify(input: {identities: [{type: "user_id", value: "dup"}]}) { id } }`, nil).ok(t, &other)
	gql(t, e.srv, e.keys["agent"], `mutation($s: ID!, $m: ID!) { mergeCustomers(survivorId: $s, mergedId: $m, reason: "same person") { id } }`,
		map[string]any{"s": e.cust, "m": other.Identify.ID}).ok(t, nil)
	gql(t, e.srv, e.keys["admin"], `mutation($id: ID!) { splitIdentity(customerId: $id, type: "user_id", value: "dup", reason: "not her") { split { id } } }`,
		map[string]any{"id": e.cust}).ok(t, nil)
	var created struct {
		CreateAPIKey struct {
			APIKey string
			Key    struct{ Prefix string }
		}
	}
	gql(t, e.srv, e.keys["admin"], `mutation { createApiKey(role: ASSISTANT, scopes: ["pii"]) { apiKey key { prefix } } }`, nil).ok(t, &created)
	gql(t, e.srv, e.keys["admin"], `mutation($p: String!) { revokeApiKey(prefix: $p) { revokedAt } }`,
		map[string]any{"p": created.CreateAPIKey.Key.Prefix}).ok(t, nil)

	// A key's creation and revocation record the same detail, as
	// `c360 apikey create` and `c360 apikey revoke` do.
	keyDetail := `{"prefix":"` + created.CreateAPIKey.Key.Prefix + `","role":"assistant","scopes":["pii"]}`
	want := map[string]struct{ actor, detail string }{
		c360.AuditCustomerMerge: {"key " + prefixOf(e.keys["agent"]), `"reason":"same person"`},
		c360.AuditCustomerSplit: {"key " + prefixOf(e.keys["admin"]), `"reason":"not her"`},
		c360.AuditAPIKeyCreate:  {"key " + prefixOf(e.keys["admin"]), keyDetail},
		c360.AuditAPIKeyRevoke:  {"key " + prefixOf(e.keys["admin"]), keyDetail},
	}
	for action, w := range want {
		rows := e.auditLog(t, map[string]any{"a": action})
		if len(rows) != 1 {
			t.Errorf("%s rows = %+v, want 1", action, rows)
			continue
		}
		detail, _ := json.Marshal(rows[0].Detail)
		if rows[0].Actor != w.actor || !strings.Contains(string(detail), w.detail) {
			t.Errorf("%s row = %+v (detail %s), want actor %q and detail with %s", action, rows[0], detail, w.actor, w.detail)
		}
		if strings.Contains(string(detail), created.CreateAPIKey.APIKey) {
			t.Errorf("%s row holds the key's secret: %s", action, detail)
		}
	}

	// Newest first, paged with cursors; filtered by customer.
	all := e.auditLog(t, map[string]any{})
	var paged []string
	vars := map[string]any{"first": 2}
	for i := 0; i < 50; i++ {
		if err := e.audit.Flush(context.Background()); err != nil {
			t.Fatal(err)
		}
		var out struct {
			AuditLog struct {
				Edges    []struct{ Node auditRow }
				PageInfo struct {
					HasNextPage bool
					EndCursor   *string
				}
			}
		}
		gql(t, e.srv, e.keys["admin"], auditQuery, vars).ok(t, &out)
		for _, edge := range out.AuditLog.Edges {
			paged = append(paged, edge.Node.ID)
		}
		if !out.AuditLog.PageInfo.HasNextPage {
			break
		}
		vars["after"] = *out.AuditLog.PageInfo.EndCursor
	}
	var ids []string
	for _, r := range all {
		ids = append(ids, r.ID)
	}
	// Reading the log is not itself audited (it holds no customer data), so
	// the pages see exactly the rows of the first read.
	if fmt.Sprint(paged) != fmt.Sprint(ids) {
		t.Errorf("paged ids = %v, want %v", paged, ids)
	}
	for _, r := range e.auditLog(t, map[string]any{"c": e.cust}) {
		if r.CustomerID == nil || *r.CustomerID != e.cust {
			t.Errorf("auditLog(customerId: %s) returned %+v", e.cust, r)
		}
	}
	// Another workspace's admin sees none of it.
	_, _, otherAdmin := pgtest.Workspace(t, e.db)
	var foreign struct {
		AuditLog struct{ Edges []struct{ Cursor string } }
	}
	gql(t, e.srv, otherAdmin, auditQuery, map[string]any{"first": 100}).ok(t, &foreign)
	if len(foreign.AuditLog.Edges) != 0 {
		t.Errorf("another workspace's auditLog has %d entries, want 0", len(foreign.AuditLog.Edges))
	}
}

// A replayed dead letter is audited with its id and the event the replay
// stored, which leads to the customer.
func TestAuditDeadLetterReplay(t *testing.T) {
	e := newSecEnv(t, server.Config{})
	ctx := context.Background()
	// A constraint standing for a bug sends one event to the dead letters;
	// once it is dropped (the fix), the replay succeeds.
	name := fmt.Sprintf("Poison %d", time.Now().UnixNano())
	constraint := fmt.Sprintf("audit_dl_%d", time.Now().UnixNano())
	if _, err := e.db.Pool.Exec(ctx, fmt.Sprintf(`ALTER TABLE events ADD CONSTRAINT %s CHECK (name IS DISTINCT FROM '%s') NOT VALID`, constraint, name)); err != nil {
		t.Fatal(err)
	}
	dropped := false
	drop := func() {
		if !dropped {
			dropped = true
			if _, err := e.db.Pool.Exec(ctx, `ALTER TABLE events DROP CONSTRAINT `+constraint); err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Cleanup(drop)
	ev := &c360.Event{Type: c360.EventTrack, Source: "graphql", DedupeKey: "audit-dl-1", OccurredAt: time.Now().UTC(),
		Identities: []c360.Identity{{Type: "email", Value: janeEmail}}, Name: name}
	_, err := e.db.Ingest(ctx, e.ws, []*c360.Event{ev})
	var kept *c360.DeadLetteredError
	if !errors.As(err, &kept) {
		t.Fatalf("ingest: %v, want a dead letter", err)
	}
	drop()

	var out struct {
		ReplayDeadLetter struct {
			ID              string
			ReplayedEventID *string
		}
	}
	gql(t, e.srv, e.keys["admin"], `mutation($id: ID!) { replayDeadLetter(id: $id) { id replayedEventId } }`,
		map[string]any{"id": kept.IDs[0]}).ok(t, &out)
	if out.ReplayDeadLetter.ReplayedEventID == nil {
		t.Fatalf("replayDeadLetter = %+v, want a replayed event id", out.ReplayDeadLetter)
	}
	// Replayed again: the letter as it is, and no second entry.
	gql(t, e.srv, e.keys["admin"], `mutation($id: ID!) { replayDeadLetter(id: $id) { id replayedEventId } }`,
		map[string]any{"id": kept.IDs[0]}).ok(t, &out)
	rows := e.auditLog(t, map[string]any{"a": c360.AuditDeadLetterReplay})
	if len(rows) != 1 {
		t.Fatalf("%s rows = %+v, want 1", c360.AuditDeadLetterReplay, rows)
	}
	detail, _ := json.Marshal(rows[0].Detail)
	want := fmt.Sprintf(`{"deadLetterId":%d,"replayedEventId":%s}`, kept.IDs[0], *out.ReplayDeadLetter.ReplayedEventID)
	if rows[0].Actor != "key "+prefixOf(e.keys["admin"]) || string(detail) != want {
		t.Errorf("%s row = %+v (detail %s), want the admin key and detail %s", c360.AuditDeadLetterReplay, rows[0], detail, want)
	}
}

// The pii scope means something to an assistant key only (an admin or
// agent reads personal data in clear anyway, a write or client key reads
// nothing): createApiKey refuses it on any other role, and a scope given
// twice, and issues nothing, so the listing never shows a key as if its
// scope granted something. The command line refuses the same
// (TestAPIKeyScopesOfTheCommandLine).
func TestAPIKeyScopesApplyToTheirRole(t *testing.T) {
	e := newSecEnv(t, server.Config{})
	before := count(t, e.db, "api_keys", e.ws)
	for _, tc := range []struct{ role, scopes, want string }{
		{"ADMIN", `["pii"]`, "the pii scope applies to assistant keys only"},
		{"AGENT", `["pii"]`, "the pii scope applies to assistant keys only"},
		{"WRITE", `["pii"]`, "the pii scope applies to assistant keys only"},
		{"CLIENT", `["pii"]`, "the pii scope applies to assistant keys only"},
		{"ASSISTANT", `["pii","pii"]`, `the scope "pii" is given twice`},
	} {
		r := gql(t, e.srv, e.keys["admin"], `mutation { createApiKey(role: `+tc.role+`, scopes: `+tc.scopes+`) { apiKey } }`, nil)
		if r.code() != c360.EINVALID || len(r.Errors) != 1 || r.Errors[0].Message != tc.want {
			t.Errorf("createApiKey(role: %s, scopes: %s) = %s, want BAD_USER_INPUT %q", tc.role, tc.scopes, r.Body, tc.want)
		}
	}
	if n := count(t, e.db, "api_keys", e.ws); n != before {
		t.Errorf("the workspace has %d keys after the refusals, want %d: one was issued", n, before)
	}
	// Without the scope every role is issued, and an assistant with it once.
	for _, tc := range []string{`ADMIN, scopes: []`, `AGENT`, `WRITE, scopes: null`, `CLIENT`, `ASSISTANT, scopes: ["pii"]`} {
		gql(t, e.srv, e.keys["admin"], `mutation { createApiKey(role: `+tc+`) { apiKey } }`, nil).ok(t, nil)
	}
}

func TestAPIKeyManagementAndRevocation(t *testing.T) {
	e := newSecEnv(t, server.Config{})
	var created struct {
		CreateAPIKey struct {
			APIKey string
			Key    struct {
				Prefix, Role string
				Scopes       []string
				LastUsedAt   *string
				RevokedAt    *string
			}
		}
	}
	gql(t, e.srv, e.keys["admin"], `mutation { createApiKey(role: ASSISTANT, scopes: ["pii"]) { apiKey key { prefix role scopes lastUsedAt revokedAt } } }`, nil).ok(t, &created)
	c := created.CreateAPIKey
	if !strings.HasPrefix(c.APIKey, "c360_"+c.Key.Prefix+"_") || c.Key.Role != "ASSISTANT" || fmt.Sprint(c.Key.Scopes) != "[pii]" ||
		c.Key.LastUsedAt != nil || c.Key.RevokedAt != nil {
		t.Fatalf("createApiKey = %+v", c)
	}
	gql(t, e.srv, e.keys["admin"], `mutation { createApiKey(role: AGENT, scopes: ["PII"]) { apiKey } }`, nil).wantCode(t, c360.EINVALID)

	// The new key works; its use is recorded off the request path.
	gql(t, e.srv, c.APIKey, `{ customers(first: 1) { edges { cursor } } }`, nil).ok(t, nil)
	if err := e.usage.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	list := func() map[string]map[string]any {
		t.Helper()
		r := gql(t, e.srv, e.keys["admin"], `{ apiKeys { prefix role scopes createdAt lastUsedAt revokedAt } }`, nil)
		var out struct{ APIKeys []map[string]any }
		r.ok(t, &out)
		if strings.Contains(r.Body, c.APIKey[len("c360_")+13:]) {
			t.Errorf("apiKeys shows a secret: %s", r.Body)
		}
		m := map[string]map[string]any{}
		for _, k := range out.APIKeys {
			m[k["prefix"].(string)] = k
		}
		return m
	}
	keys := list()
	if len(keys) != 7 { // admin, write, agent, assistant, assistant+pii, client, the new one
		t.Errorf("apiKeys lists %d keys, want 7: %v", len(keys), keys)
	}
	k := keys[c.Key.Prefix]
	if k == nil || k["lastUsedAt"] == nil || k["revokedAt"] != nil {
		t.Fatalf("new key listed as %v, want lastUsedAt set, not revoked", k)
	}
	firstUse := k["lastUsedAt"]
	// Throttled: another use within the minute writes nothing.
	gql(t, e.srv, c.APIKey, `{ customers(first: 1) { edges { cursor } } }`, nil).ok(t, nil)
	if err := e.usage.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := list()[c.Key.Prefix]["lastUsedAt"]; got != firstUse {
		t.Errorf("lastUsedAt after a second use within a minute = %v, want unchanged %v", got, firstUse)
	}

	// A second replica: its own store and cache, which now holds the key.
	db2 := pgtest.Open(t)
	replica := serve(t, db2, newResolver(db2), db2)
	gql(t, replica, c.APIKey, `{ customers(first: 1) { edges { cursor } } }`, nil).ok(t, nil)

	var revoked struct {
		RevokeAPIKey struct{ Prefix, RevokedAt string }
	}
	gql(t, e.srv, e.keys["admin"], `mutation($p: String!) { revokeApiKey(prefix: $p) { prefix revokedAt } }`,
		map[string]any{"p": c.Key.Prefix}).ok(t, &revoked)
	if revoked.RevokeAPIKey.RevokedAt == "" {
		t.Fatalf("revokeApiKey = %+v, want revokedAt", revoked)
	}
	revokedAt := time.Now()
	// The replica that revoked refuses the key at once.
	r := gql(t, e.srv, c.APIKey, `{ customers(first: 1) { edges { cursor } } }`, nil)
	r.wantCode(t, c360.EUNAUTHENTICATED)
	// The other replica stops accepting it within the cache's 5 s.
	for {
		r := gql(t, replica, c.APIKey, `{ customers(first: 1) { edges { cursor } } }`, nil)
		if r.code() == c360.EUNAUTHENTICATED {
			break
		}
		if time.Since(revokedAt) > 6*time.Second {
			t.Fatalf("the other replica still accepts the revoked key after %v: %s", time.Since(revokedAt), r.Body)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Revoking again changes nothing; an unknown prefix, or another
	// workspace's key, is NOT_FOUND.
	var again struct{ RevokeAPIKey struct{ RevokedAt string } }
	gql(t, e.srv, e.keys["admin"], `mutation($p: String!) { revokeApiKey(prefix: $p) { revokedAt } }`,
		map[string]any{"p": c.Key.Prefix}).ok(t, &again)
	if again.RevokeAPIKey.RevokedAt != revoked.RevokeAPIKey.RevokedAt {
		t.Errorf("revokedAt after a second revoke = %s, want %s", again.RevokeAPIKey.RevokedAt, revoked.RevokeAPIKey.RevokedAt)
	}
	// and records nothing: the audit log holds the one revocation.
	var revocations int
	for _, r := range e.auditLog(t, map[string]any{"a": c360.AuditAPIKeyRevoke}) {
		if r.Detail["prefix"] == c.Key.Prefix {
			revocations++
		}
	}
	if revocations != 1 {
		t.Errorf("%d apikey.revoke entries for %s after revoking it twice, want 1", revocations, c.Key.Prefix)
	}
	_, _, otherAdmin := pgtest.Workspace(t, e.db)
	gql(t, e.srv, otherAdmin, `mutation($p: String!) { revokeApiKey(prefix: $p) { revokedAt } }`,
		map[string]any{"p": prefixOf(e.keys["agent"])}).wantCode(t, c360.ENOTFOUND)
	gql(t, e.srv, e.keys["agent"], `{ customers(first: 1) { edges { cursor } } }`, nil).ok(t, nil)
}

// An admin issues a client key, the write key for a browser or a mobile
// app, through createApiKey(role: CLIENT): listed with its role, it
// authenticates as RoleClient, and GraphQL's identify, which could name any
// email or phone, refuses it (it sends Segment calls only).
func TestCreateClientKey(t *testing.T) {
	e := newSecEnv(t, server.Config{})
	var created struct {
		CreateAPIKey struct {
			APIKey string
			Key    struct{ Prefix, Role string }
		}
	}
	gql(t, e.srv, e.keys["admin"], `mutation { createApiKey(role: CLIENT) { apiKey key { prefix role } } }`, nil).ok(t, &created)
	c := created.CreateAPIKey
	if !strings.HasPrefix(c.APIKey, "c360_"+c.Key.Prefix+"_") || c.Key.Role != "CLIENT" {
		t.Fatalf("createApiKey(role: CLIENT) = %+v", c)
	}
	var listed struct {
		APIKeys []struct{ Prefix, Role string }
	}
	gql(t, e.srv, e.keys["admin"], `{ apiKeys { prefix role } }`, nil).ok(t, &listed)
	found := false
	for _, k := range listed.APIKeys {
		found = found || k.Prefix == c.Key.Prefix && k.Role == "CLIENT"
	}
	if !found {
		t.Errorf("apiKeys = %+v, want %s listed as CLIENT", listed.APIKeys, c.Key.Prefix)
	}
	p, err := e.db.Authenticate(context.Background(), c.APIKey)
	if err != nil || p.Role != c360.RoleClient {
		t.Fatalf("authenticate the client key = %+v, %v; want role %s", p, err, c360.RoleClient)
	}
	r := gql(t, e.srv, c.APIKey, `mutation { identify(input: {identities: [{type: "anonymous_id", value: "a-1"}, {type: "phone", value: "+14155550199"}]}) { id } }`, nil)
	r.wantCode(t, c360.EFORBIDDEN)
	if _, err := e.db.FindCustomerByIdentity(context.Background(), e.ws, c360.Identity{Type: "phone", Value: "+14155550199"}); c360.ErrorCode(err) != c360.ENOTFOUND {
		t.Errorf("after a refused identify, the phone's customer: %v, want NOT_FOUND", err)
	}
}

// limitsEnv is a server with tight limits, so each test request is small.
func limitsEnv(t *testing.T, dev bool, l server.Limits) (*httptest.Server, string) {
	t.Helper()
	db := pgtest.Open(t)
	_, _, key := pgtest.Workspace(t, db)
	return serveWith(t, server.Config{Dev: dev, Logger: slog.New(slog.DiscardHandler), Limits: l}, db, newResolver(db), db), key
}

// wantRefused checks a request refused before execution: a 4xx status,
// BAD_USER_INPUT, and the limit's reason.
func wantRefused(t *testing.T, r *response, reason string) {
	t.Helper()
	r.wantCode(t, c360.EINVALID)
	if r.Status < 400 || r.Status >= 500 {
		t.Errorf("status = %d, want 4xx", r.Status)
	}
	if reason != "" && r.Errors[0].Extensions["reason"] != reason {
		t.Errorf("reason = %v, want %s; body %.300s", r.Errors[0].Extensions["reason"], reason, r.Body)
	}
	if len(r.Data) > 0 && string(r.Data) != "null" {
		t.Errorf("data = %s, want none: nothing ran", r.Data)
	}
}

func TestGraphQLLimits(t *testing.T) {
	srv, key := limitsEnv(t, false, server.Limits{})

	t.Run("body size", func(t *testing.T) {
		body := []byte(`{"query":"{ __typename }","variables":{"pad":"` + strings.Repeat("x", 1<<20) + `"}}`)
		r := post(t, srv, key, body)
		if r.Status != http.StatusRequestEntityTooLarge {
			t.Errorf("status = %d, want 413", r.Status)
		}
		r.wantCode(t, c360.EINVALID)
	})
	t.Run("parser tokens", func(t *testing.T) {
		// 12,000 tokens in 84 KB: far under the body limit, over the
		// parser's 10,000.
		q := "{" + strings.Repeat(" __typename", 12_000) + " }"
		r := gql(t, srv, key, q, nil)
		wantRefused(t, r, "GRAPHQL_PARSE_FAILED")
		if !strings.Contains(r.Errors[0].Message, "token limit") {
			t.Errorf("message = %q, want it to name the token limit", r.Errors[0].Message)
		}
		gql(t, srv, key, "{"+strings.Repeat(" __typename", 400)+" }", nil).ok(t, nil)
	})
	t.Run("field count", func(t *testing.T) {
		// Validation compares fields pairwise: 9,000 fields would cost
		// seconds of CPU. Over 500 are refused before that comparison.
		start := time.Now()
		r := gql(t, srv, key, "{"+strings.Repeat(" __typename", 9_000)+" }", nil)
		wantRefused(t, r, "GRAPHQL_VALIDATION_FAILED")
		if !strings.Contains(r.Errors[0].Message, "field selections") {
			t.Errorf("message = %q, want it to name the field limit", r.Errors[0].Message)
		}
		if d := time.Since(start); d > time.Second {
			t.Errorf("refusing 9,000 fields took %v", d)
		}
	})
	t.Run("depth", func(t *testing.T) {
		// The schema's deepest query nests about 10 levels, under the
		// default of 12: the default guards future cycles. A server with a
		// limit of 6 shows the mechanism.
		srv, key := limitsEnv(t, false, server.Limits{MaxDepth: 6})
		// Depth 7 (customers edges node conversations edges node id) over 6.
		deep := `{ customers { edges { node { conversations { edges { node { id } } } } } } }`
		wantRefused(t, gql(t, srv, key, deep, nil), "DEPTH_LIMIT_EXCEEDED")
		// Fragments count where they are spread.
		viaFragment := `{ customers { edges { node { ...C } } } } fragment C on Customer { conversations { edges { node { id } } } }`
		wantRefused(t, gql(t, srv, key, viaFragment, nil), "DEPTH_LIMIT_EXCEEDED")
		gql(t, srv, key, `{ customers { edges { node { conversations { edges { cursor } } } } } }`, nil).ok(t, nil)
	})
	t.Run("complexity", func(t *testing.T) {
		// 100 customers x 100 conversations x 100 messages.
		costly := `{ customers(first: 100) { edges { node { conversations(first: 100) { edges { node {
			messages(first: 100) { edges { node { body } } } } } } } } } }`
		r := gql(t, srv, key, costly, nil)
		wantRefused(t, r, "COMPLEXITY_LIMIT_EXCEEDED")
		// The same shape with small pages is fine: first is the multiplier.
		gql(t, srv, key, strings.ReplaceAll(costly, "100", "5"), nil).ok(t, nil)
	})
	t.Run("aliases", func(t *testing.T) {
		aliases := func(n int) string {
			var b strings.Builder
			b.WriteString("{")
			for i := 0; i < n; i++ {
				fmt.Fprintf(&b, " a%d: __typename", i)
			}
			return b.String() + " }"
		}
		wantRefused(t, gql(t, srv, key, aliases(31), nil), "ALIAS_LIMIT_EXCEEDED")
		gql(t, srv, key, aliases(30), nil).ok(t, nil)
		// A fragment's aliases count each time it is spread: 16 x 2 = 32.
		spreads := "{" + strings.Repeat(" ...F", 16) + " } fragment F on Query { x: __typename y: __typename }"
		wantRefused(t, gql(t, srv, key, spreads, nil), "ALIAS_LIMIT_EXCEEDED")
	})
	t.Run("fragment bomb", func(t *testing.T) {
		// Each fragment spreads the next twice: 2^40 fields once expanded.
		var b strings.Builder
		b.WriteString("{ ...F0 }")
		for i := 0; i < 40; i++ {
			fmt.Fprintf(&b, " fragment F%d on Query { ...F%d ...F%d }", i, i+1, i+1)
		}
		b.WriteString(" fragment F40 on Query { a: __typename }")
		start := time.Now()
		r := gql(t, srv, key, b.String(), nil)
		wantRefused(t, r, "ALIAS_LIMIT_EXCEEDED")
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("refusing a fragment bomb took %v", d)
		}
	})
	t.Run("batching", func(t *testing.T) {
		r := post(t, srv, key, []byte(`[{"query":"{ __typename }"},{"query":"{ __typename }"}]`))
		r.wantCode(t, c360.EINVALID)
		if r.Status != http.StatusBadRequest || !strings.Contains(r.Errors[0].Message, "batch") {
			t.Errorf("batch: status %d, message %q, want 400 saying batching is not supported", r.Status, r.Errors[0].Message)
		}
	})
	t.Run("suggestions and introspection off in production", func(t *testing.T) {
		r := gql(t, srv, key, `{ customers { edges { node { trait } } } }`, nil)
		r.wantCode(t, c360.EINVALID)
		if strings.Contains(r.Body, "Did you mean") || strings.Contains(r.Body, "traits") {
			t.Errorf("production answer suggests field names: %s", r.Body)
		}
		var out map[string]any
		gql(t, srv, key, `{ __type(name: "Customer") { name fields { name } } }`, nil).ok(t, &out)
		if out["__type"] != nil {
			t.Errorf("__type in production = %v, want null", out["__type"])
		}
	})
	t.Run("suggestions and introspection on in dev", func(t *testing.T) {
		dev, devKey := limitsEnv(t, true, server.Limits{})
		r := gql(t, dev, devKey, `{ customers { edges { node { trait } } } }`, nil)
		if !strings.Contains(r.Body, `Did you mean \"traits\"`) {
			t.Errorf("dev answer has no suggestion: %s", r.Body)
		}
		var out struct {
			Type *struct{ Name string } `json:"__type"`
		}
		gql(t, dev, devKey, `{ __type(name: "Customer") { name } }`, nil).ok(t, &out)
		if out.Type == nil || out.Type.Name != "Customer" {
			t.Errorf("__type in dev = %+v, want Customer", out.Type)
		}
	})
}

// The schema's own page sizes fit the default complexity limit: a console's
// list of customers with their identities, consents, events and
// conversations with messages, every page at its default (20), costs 35,821.
// A page of 100 profiles with identities, 10 events and the 3 latest
// conversations with their last message costs 9,101, as docs/security.md
// says: it runs under a limit of 10,000.
func TestDefaultPagesFitTheComplexityLimit(t *testing.T) {
	srv, key := limitsEnv(t, false, server.Limits{})
	gql(t, srv, key, `{ customers { edges { node { id identities { type value } consents { channel status }
		events { edges { node { id name } } }
		conversations { edges { node { id channel messages { edges { node { id body } } } } } } } } } }`, nil).ok(t, nil)

	srv, key = limitsEnv(t, false, server.Limits{MaxComplexity: 10_000})
	gql(t, srv, key, `{ customers(first: 100) { edges { node { id identities { type value }
		events(first: 10) { edges { node { id name occurredAt } } }
		conversations(first: 3) { edges { node { id channel lastMessageAt messages(first: 1) { edges { node { id body createdAt } } } } } } } } } }`, nil).ok(t, nil)
}

// A JSON object costs as much as the kilobytes it may hold (server's
// jsonCost): 10,000 events' properties in one answer, some 320 MB at the
// event limit, are refused under the default limit, while a console's
// list of customers with their events' properties at the default pages
// fits. Priced as one field, the first query was admitted.
func TestJSONFieldsArePricedBySize(t *testing.T) {
	srv, key := limitsEnv(t, false, server.Limits{})
	r := gql(t, srv, key, `{ customers(first: 100) { edges { node { events(first: 100) { edges { node { properties } } } } } } }`, nil)
	wantRefused(t, r, "COMPLEXITY_LIMIT_EXCEEDED")
	gql(t, srv, key, `{ customers { edges { node { id traits events { edges { node { id name properties } } } } } } }`, nil).ok(t, nil)
}

func TestRateLimits(t *testing.T) {
	db := pgtest.Open(t)
	_, _, key := pgtest.Workspace(t, db)
	_, _, other := pgtest.Workspace(t, db)
	s := server.New(server.Config{Logger: slog.New(slog.DiscardHandler),
		Limits: server.Limits{KeyRate: server.Rate{RPS: 0.5, Burst: 2}, WebhookRate: server.Rate{RPS: 0.5, Burst: 2}}},
		db, newResolver(db), db)
	segment.New(segment.Config{Store: db, Now: db.Now, StatusOf: server.StatusOf, Logger: slog.New(slog.DiscardHandler),
		Limit: s.AllowWriteKey}).Register(s)
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)

	wantLimited := func(t *testing.T, r *response) {
		t.Helper()
		r.wantCode(t, c360.ERATELIMITED)
		if r.Status != http.StatusTooManyRequests {
			t.Errorf("status = %d, want 429", r.Status)
		}
		if ra := r.Header.Get("Retry-After"); ra != "1" && ra != "2" {
			t.Errorf("Retry-After = %q, want 1 or 2 (seconds until a token at 0.5/s)", ra)
		}
	}
	t.Run("per API key", func(t *testing.T) {
		const q = `{ __typename }`
		gql(t, srv, key, q, nil).ok(t, nil)
		gql(t, srv, key, q, nil).ok(t, nil)
		wantLimited(t, gql(t, srv, key, q, nil))
		gql(t, srv, other, q, nil).ok(t, nil) // another key has its own bucket
	})
	// Operations started over a websocket take the key's tokens too.
	t.Run("per API key, over a websocket", func(t *testing.T) {
		_, _, third := pgtest.Workspace(t, db)
		c := dialWS(t, wsURL(srv), "graphql-transport-ws", nil)
		c.init(third)
		var got []string
		for _, id := range []string{"q1", "q2", "q3"} {
			c.subscribe(id, `{ __typename }`, nil)
			m := c.read()
			if m.ID != id {
				t.Fatalf("answer for %s: %s %q", id, m.Type, m.ID)
			}
			got = append(got, m.Type)
			if m.Type == "error" && !strings.Contains(string(m.Payload), c360.ERATELIMITED) {
				t.Errorf("%s refused with %s, want %s", id, m.Payload, c360.ERATELIMITED)
			}
			if m.Type == "next" {
				if done := c.read(); done.Type != "complete" || done.ID != id {
					t.Fatalf("after next for %s: %s %q, want complete", id, done.Type, done.ID)
				}
			}
		}
		if strings.Join(got, ",") != "next,next,error" {
			t.Errorf("three queries over one websocket at burst 2: %v, want next, next, error", got)
		}
	})
	// Webhooks are limited per workspace once verified:
	// TestWebhookRateLimitCountsOnlyVerifiedRequests.
	// The Segment API is limited per write key once the key is checked,
	// whether it comes in the Authorization header or in the body.
	t.Run("per write key", func(t *testing.T) {
		ctx := context.Background()
		one, err := db.CreateWorkspace(ctx, fmt.Sprintf("rl-one-%d", time.Now().UnixNano()%1e9), "one")
		if err != nil {
			t.Fatal(err)
		}
		two, err := db.CreateWorkspace(ctx, fmt.Sprintf("rl-two-%d", time.Now().UnixNano()%1e9), "two")
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		track := func(header, body string) *http.Request { return segmentTrack(srv.URL, "rl-", &n, header, body) }
		for _, tc := range []struct{ name, header, body string }{
			{"key in the header", one.WriteKey, ""},
			{"key in the body", "", two.WriteKey},
		} {
			for i := 0; i < 2; i++ {
				if r := do(t, srv, track(tc.header, tc.body)); r.Status != http.StatusOK {
					t.Fatalf("%s: call %d = %d, want 200", tc.name, i, r.Status)
				}
			}
			// Segment's own answer shape, with the same status and header.
			r := do(t, srv, track(tc.header, tc.body))
			if r.Status != http.StatusTooManyRequests || !strings.Contains(r.Body, `"code":"RATE_LIMITED"`) {
				t.Errorf("%s: third call = %d %s, want 429 RATE_LIMITED", tc.name, r.Status, r.Body)
			}
			if ra := r.Header.Get("Retry-After"); ra != "1" && ra != "2" {
				t.Errorf("%s: Retry-After = %q, want 1 or 2 (seconds until a token at 0.5/s)", tc.name, ra)
			}
		}
		// An unknown key is refused as such, and gets no bucket.
		for i := 0; i < 3; i++ {
			if r := do(t, srv, track("wk_unknown", "")); r.Status != http.StatusUnauthorized {
				t.Fatalf("unknown key, call %d = %d, want 401", i, r.Status)
			}
		}
	})
}

func TestSecurityHeaders(t *testing.T) {
	e := newSecEnv(t, server.Config{})
	for _, tc := range []struct {
		name, method, path, key, body string
	}{
		{"GraphQL JSON", http.MethodPost, "/graphql", e.keys["admin"], `{"query":"{ __typename }"}`},
		{"GraphQL refusal", http.MethodPost, "/graphql", "", `{"query":"{ __typename }"}`},
		{"GraphiQL HTML", http.MethodGet, "/", "", ""},
		{"health", http.MethodGet, "/healthz", "", ""},
		{"not found", http.MethodGet, "/nope", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, e.srv.URL+tc.path, strings.NewReader(tc.body))
			req.Header.Set("Content-Type", "application/json")
			if tc.key != "" {
				req.Header.Set("Authorization", "Bearer "+tc.key)
			}
			resp, err := e.srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			for h, want := range map[string]string{
				"X-Content-Type-Options":  "nosniff",
				"Referrer-Policy":         "no-referrer",
				"X-Frame-Options":         "DENY",
				"Content-Security-Policy": "frame-ancestors 'none'",
				"Cache-Control":           "no-store",
			} {
				if got := resp.Header.Get(h); got != want {
					t.Errorf("%s %s: %s = %q, want %q", tc.method, tc.path, h, got, want)
				}
			}
		})
	}
}

// TestDirectivesServeWebsockets: subscriptions go through the same
// directives as queries: a write key cannot subscribe, an assistant gets
// changes masked.
func TestDirectivesServeWebsockets(t *testing.T) {
	e := newRTEnv(t, rtOptions{cfg: server.Config{Logger: slog.New(slog.DiscardHandler)}})
	slug := mustSlug(t, e.db, e.ws)
	ctx := context.Background()
	assistant, _, err := e.db.CreateAPIKey(ctx, slug, c360.RoleAssistant, nil)
	if err != nil {
		t.Fatal(err)
	}
	write, _, err := e.db.CreateAPIKey(ctx, slug, c360.RoleWrite, nil)
	if err != nil {
		t.Fatal(err)
	}
	id := ingest(t, e.db, e.ws, email(janeEmail), map[string]any{"name": janeName})

	w := dialWS(t, wsURL(e.srv), "graphql-transport-ws", nil)
	w.init(write)
	w.subscribe("w", `subscription($id: ID!) { customerChanged(id: $id) { version } }`, map[string]any{"id": fmt.Sprint(id)})
	wantError(t, w, "w", c360.EFORBIDDEN)

	a := dialWS(t, wsURL(e.srv), "graphql-transport-ws", nil)
	a.init(assistant)
	a.subscribe("a", `subscription($id: ID!) { customerChanged(id: $id) { diff customer { traits identities { value } } } }`,
		map[string]any{"id": fmt.Sprint(id)})
	waitFor(t, "subscription", func() bool { return e.hub.Stats().Subscribers == 1 })
	ingest(t, e.db, e.ws, []c360.Identity{{Type: "email", Value: janeEmail}, {Type: "phone", Value: janePhone}},
		map[string]any{"phone": janePhone})
	m := a.read()
	if m.Type != "next" {
		t.Fatalf("got %s %s, want next", m.Type, m.Payload)
	}
	body := string(m.Payload)
	for _, p := range janePII {
		if strings.Contains(body, p.raw) {
			t.Errorf("assistant's change shows %q unmasked: %s", p.raw, body)
		}
	}
	if !strings.Contains(body, janePhoneMasked) || !strings.Contains(body, janeEmailMasked) {
		t.Errorf("assistant's change = %s, want the phone and email masked", body)
	}
}

// A split's ledger entry belongs to both customers: its survivorId is the
// original, its mergedId the new one. A read of its personal data (the
// reason, the identity split out) is recorded against the customer it was
// read through, so auditLog(customerId:) of the new customer shows the
// reads made through it, and the original's does not.
func TestLedgerReadsAuditedAgainstTheCustomerReadThrough(t *testing.T) {
	e := newSecEnv(t, server.Config{})
	var split struct {
		SplitIdentity struct{ Split struct{ ID string } }
	}
	gql(t, e.srv, e.keys["admin"], `mutation($id: ID!, $v: String!) {
		splitIdentity(customerId: $id, type: "phone", value: $v, reason: "her husband's, call +14155550177") { split { id } } }`,
		map[string]any{"id": e.cust, "v": janePhone}).ok(t, &split)
	x := split.SplitIdentity.Split.ID
	before := len(e.auditLog(t, map[string]any{"a": c360.AuditPIIRead, "c": e.cust}))
	for _, q := range []string{
		`query($id: ID!) { customer(id: $id) { merges { kind reason identity { type value } } } }`,
		`query($id: ID!) { customerContext(id: $id) { merges { kind identity { type value } } } }`,
	} {
		body := gql(t, e.srv, e.keys["assistant+pii"], q, map[string]any{"id": x})
		body.ok(t, nil)
		if !strings.Contains(string(body.Data), "+14155550177") && strings.Contains(q, "reason") {
			t.Fatalf("the split's reason is not in %s", body.Data)
		}
	}
	var fields []string
	for _, r := range e.auditLog(t, map[string]any{"a": c360.AuditPIIRead, "c": x}) {
		fields = append(fields, r.Fields...)
	}
	for _, f := range []string{"reason(phone)", "identity.phone"} {
		if !slices.Contains(fields, f) {
			t.Errorf("pii.read entries of the new customer %s hold %v, want %s", x, fields, f)
		}
	}
	if after := len(e.auditLog(t, map[string]any{"a": c360.AuditPIIRead, "c": e.cust})); after != before {
		t.Errorf("the original customer got %d pii.read entries for reads through the new one", after-before)
	}
}

// A blank query would find every customer, newest first: a key that reads
// personal data masked, which searches by a whole email address or phone
// number only, is refused it (BAD_USER_INPUT), without a lookup taken or
// audited. Keys that read personal data list every customer with it, as
// without a query.
func TestMaskedSearchRefusesABlankQuery(t *testing.T) {
	e := newSecEnv(t, server.Config{})
	gql(t, e.srv, e.keys["agent"], `mutation { identify(input: {identities: [{type: "email", value: "bob@example.com"}]}) { id } }`, nil).ok(t, nil)
	const q = `query($q: String) { customers(query: $q) { edges { node { id } } } }`
	for _, blank := range []string{"", "   ", "\t\n"} {
		r := gql(t, e.srv, e.keys["assistant"], q, map[string]any{"q": blank})
		r.wantCode(t, c360.EINVALID)
		if !strings.Contains(r.Body, "the query is blank") || strings.Contains(r.Body, `"node"`) {
			t.Errorf("assistant's customers(query: %q) = %s, want the blank query refused and nobody listed", blank, r.Body)
		}
		for _, key := range []string{"assistant+pii", "agent", "admin"} {
			var out struct {
				Customers struct {
					Edges []struct{ Node struct{ ID string } }
				}
			}
			gql(t, e.srv, e.keys[key], q, map[string]any{"q": blank}).ok(t, &out)
			if len(out.Customers.Edges) != 2 {
				t.Errorf("%s's customers(query: %q) listed %d customers, want both", key, blank, len(out.Customers.Edges))
			}
		}
	}
	for _, r := range e.auditLog(t, map[string]any{"a": c360.AuditCustomerRead}) {
		if strings.Contains(strings.Join(r.Fields, " "), "lookup.customers") {
			t.Errorf("a refused blank search was audited as a lookup: %+v", r)
		}
	}
}

// An event names the identifiers it dropped, and why (Event.dropped), as
// docs/identity.md's "Explaining a profile" says: the drop is recorded so
// that it can be explained. Its value is masked as an identity's and its
// reason as free text for a key that reads personal data masked, and a
// read of them unmasked is audited against the event's customer. A page
// of events that does not select it reads no drop records.
func TestEventsExplainTheirDrops(t *testing.T) {
	e := newSecEnv(t, server.Config{})
	// Jane signs up as u-1; a second account, u-2, gives her email, which
	// the user_id limit keeps off its customer.
	gql(t, e.srv, e.keys["admin"], `mutation { identify(input: {identities: [{type: "user_id", value: "u-1"}, {type: "email", value: "jane@example.com"}]}) { id } }`, nil).ok(t, nil)
	var second struct {
		Track struct {
			ID      string
			Dropped []struct{ Type, Value, Reason string }
		}
	}
	gql(t, e.srv, e.keys["admin"], `mutation { track(input: {identities: [{type: "user_id", value: "u-2"}, {type: "email", value: "jane@example.com"}], event: "Signed up"}) {
		id dropped { type value reason } } }`, nil).ok(t, &second)
	d := second.Track.Dropped
	if len(d) != 1 || d[0].Type != "email" || d[0].Value != janeEmail || !strings.HasPrefix(d[0].Reason, "limit: user_id allows 1 per customer") {
		t.Fatalf("track's dropped = %+v, want the email, dropped for the user_id limit", d)
	}
	var c struct{ CustomerByIdentity struct{ ID string } }
	gql(t, e.srv, e.keys["admin"], `{ customerByIdentity(type: "user_id", value: "u-2") { id } }`, nil).ok(t, &c)
	second2 := c.CustomerByIdentity.ID
	const q = `query($id: ID!) { customer(id: $id) { events(first: 10) { edges { node { id dropped { type value reason } } } } } }`
	for role, want := range map[string]string{"admin": janeEmail, "assistant+pii": janeEmail, "assistant": janeEmailMasked} {
		var out struct {
			Customer struct {
				Events struct {
					Edges []struct {
						Node struct {
							ID      string
							Dropped []struct{ Type, Value, Reason string }
						}
					}
				}
			}
		}
		r := gql(t, e.srv, e.keys[role], q, map[string]any{"id": second2})
		r.ok(t, &out)
		edges := out.Customer.Events.Edges
		if len(edges) != 1 || len(edges[0].Node.Dropped) != 1 || edges[0].Node.Dropped[0].Value != want {
			t.Errorf("%s: events = %+v, want the event dropping %s", role, edges, want)
		}
		if role == "assistant" && strings.Contains(r.Body, janeEmail) {
			t.Errorf("assistant read the dropped email unmasked: %s", r.Body)
		}
	}
	// Through fragments too, as the page's own statement reads them.
	frag := gql(t, e.srv, e.keys["admin"], `query($id: ID!) { customer(id: $id) { ...C } }
		fragment C on Customer { events { edges { ... on EventEdge { node { ...E } } } } }
		fragment E on Event { dropped { type value } }`, map[string]any{"id": second2})
	frag.ok(t, nil)
	if !strings.Contains(string(frag.Data), `"dropped":[{"type":"email","value":"`+janeEmail+`"}]`) {
		t.Errorf("dropped through fragments = %s", frag.Data)
	}
	// Events that dropped nothing say so; so do Jane's.
	var jane struct {
		Customer struct {
			Events struct {
				Edges []struct{ Node struct{ Dropped []any } }
			}
		}
	}
	gql(t, e.srv, e.keys["admin"], q, map[string]any{"id": e.cust}).ok(t, &jane)
	if len(jane.Customer.Events.Edges) < 2 {
		t.Fatalf("Jane's events = %+v", jane.Customer.Events.Edges)
	}
	for _, edge := range jane.Customer.Events.Edges {
		if edge.Node.Dropped == nil || len(edge.Node.Dropped) != 0 {
			t.Errorf("Jane's event dropped = %#v, want []", edge.Node.Dropped)
		}
	}
	var fields []string
	for _, r := range e.auditLog(t, map[string]any{"a": c360.AuditPIIRead, "c": second2}) {
		fields = append(fields, r.Fields...)
	}
	if !slices.Contains(fields, "dropped.email") {
		t.Errorf("pii.read entries of customer %s hold %v, want dropped.email", second2, fields)
	}
	// The write key that tracks may not read what the event dropped, as it
	// may not read its properties.
	gql(t, e.srv, e.keys["write"], `mutation { track(input: {identities: [{type: "user_id", value: "u-2"}], event: "E"}) { dropped { value } } }`, nil).
		wantCode(t, c360.EFORBIDDEN)
}
