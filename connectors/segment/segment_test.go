package segment_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/connectors/segment"
	"github.com/c360dev/c360/internal/pgtest"
	"github.com/c360dev/c360/postgres"
	"github.com/c360dev/c360/resolver"
	"github.com/c360dev/c360/server"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// env is the real server with the tracking API mounted as cmd/c360 mounts
// it, on a real store, with one workspace.
type env struct {
	db       *postgres.DB
	srv      *httptest.Server
	ws       int64
	writeKey string
	adminKey string

	mu  sync.Mutex
	now time.Time

	// ingests counts the API's Ingest calls: each is one transaction per
	// ingest worker its events route to.
	ingests atomic.Int64
}

// countingStore is the store, counting the API's Ingest calls in n.
type countingStore struct {
	*postgres.DB
	n *atomic.Int64
}

func (s countingStore) Ingest(ctx context.Context, ws int64, events []*c360.Event) ([]c360.IngestResult, error) {
	s.n.Add(1)
	return s.DB.Ingest(ctx, ws, events)
}

func newEnv(t *testing.T) *env {
	t.Helper()
	return newEnvLogging(t, slog.DiscardHandler)
}

// newEnvLogging is newEnv with the server's and the API's logs, and the
// HTTP server's, going to logs.
func newEnvLogging(t *testing.T, logs slog.Handler) *env {
	t.Helper()
	return newEnvOn(t, pgtest.Open(t), logs)
}

// newEnvOn is newEnvLogging on the store db.
func newEnvOn(t *testing.T, db *postgres.DB, logs slog.Handler) *env {
	t.Helper()
	creds, err := db.CreateWorkspace(context.Background(), fmt.Sprintf("seg%d", time.Now().UnixNano()%1e12), "test")
	if err != nil {
		t.Fatalf("create workspace: %v", err)
	}
	e := &env{db: db, ws: creds.ID, writeKey: creds.WriteKey, adminKey: creds.APIKey,
		now: time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)}
	log := slog.New(logs)
	srv := server.New(server.Config{Logger: log}, db, &resolver.Resolver{Now: db.Now}, db)
	segment.New(segment.Config{Store: countingStore{db, &e.ingests}, Now: e.clock, StatusOf: server.StatusOf, Logger: log}).Register(srv)
	e.srv = httptest.NewUnstartedServer(srv)
	e.srv.Config.ErrorLog = slog.NewLogLogger(logs, slog.LevelWarn)
	e.srv.Start()
	t.Cleanup(e.srv.Close)
	return e
}

func (e *env) clock() time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.now
}

// response is a decoded answer of the tracking API.
type response struct {
	Status     int
	RetryAfter string
	Success    bool   `json:"success"`
	Code       string `json:"code"`
	Message    string `json:"message"`
	Rejected   []struct {
		Index     int    `json:"index"`
		MessageID string `json:"messageId"`
		Error     string `json:"error"`
	} `json:"rejected"`
	Warnings []struct {
		Index     *int   `json:"index"`
		MessageID string `json:"messageId"`
		Warning   string `json:"warning"`
	} `json:"warnings"`
	WarningsOmitted int `json:"warningsOmitted"`
}

func basic(key string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(key+":"))
}

// post sends body (bytes, or a value to encode) to path with the given
// Authorization header ("" for none).
func (e *env) post(t *testing.T, path, auth string, body any, header ...string) response {
	t.Helper()
	raw, ok := body.([]byte)
	if !ok {
		var err error
		if raw, err = json.Marshal(body); err != nil {
			t.Fatal(err)
		}
	}
	req, _ := http.NewRequest(http.MethodPost, e.srv.URL+path, bytes.NewReader(raw))
	req.Header.Set("Content-Type", "application/json")
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	var out response
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("POST %s: %d, body not JSON: %q", path, res.StatusCode, b)
	}
	if ct := res.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("POST %s: Content-Type %q, want application/json", path, ct)
	}
	out.Status, out.RetryAfter = res.StatusCode, res.Header.Get("Retry-After")
	return out
}

func (e *env) mustPost(t *testing.T, path string, body any) {
	t.Helper()
	if r := e.post(t, path, basic(e.writeKey), body); r.Status != http.StatusOK || !r.Success || len(r.Rejected) > 0 {
		t.Fatalf("POST %s: %+v, want 200 success", path, r)
	}
}

func (e *env) customer(t *testing.T, typ, value string) *c360.Customer {
	t.Helper()
	c, err := e.db.FindCustomerByIdentity(context.Background(), e.ws, c360.Identity{Type: typ, Value: value})
	if err != nil {
		t.Fatalf("find customer by %s %q: %v", typ, value, err)
	}
	return c
}

func (e *env) events(t *testing.T, customer int64) []*c360.Event {
	t.Helper()
	pages, err := e.db.EventsByCustomers(context.Background(), e.ws, []int64{customer}, c360.PageArgs{First: 100})
	if err != nil {
		t.Fatal(err)
	}
	// Reads leave properties as stored; these tests look into them.
	for _, ev := range pages[customer].Items {
		if err := json.Unmarshal(ev.RawProperties, &ev.Properties); err != nil {
			t.Fatal(err)
		}
	}
	return pages[customer].Items
}

// event returns the customer's only event of type typ.
func (e *env) event(t *testing.T, customer int64, typ string) *c360.Event {
	t.Helper()
	var found []*c360.Event
	for _, ev := range e.events(t, customer) {
		if ev.Type == typ {
			found = append(found, ev)
		}
	}
	if len(found) != 1 {
		t.Fatalf("customer %d has %d %s events, want 1", customer, len(found), typ)
	}
	return found[0]
}

func (e *env) countEvents(t *testing.T) int {
	t.Helper()
	var n int
	if err := e.db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM events WHERE workspace_id = $1`, e.ws).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestCallsLand(t *testing.T) {
	e := newEnv(t)
	e.mustPost(t, "/v1/identify", map[string]any{"userId": "u-1", "messageId": "m-identify",
		"traits":  map[string]any{"name": "Rosa Diaz", "email": "Rosa@Example.com", "plan": "pro"},
		"context": map[string]any{"ip": "203.0.113.9"}})
	c := e.customer(t, "user_id", "u-1")
	if c.Traits["name"] != "Rosa Diaz" || c.Traits["plan"] != "pro" {
		t.Errorf("traits = %v, want name and plan from identify", c.Traits)
	}
	if got := e.customer(t, "email", "rosa@example.com").ID; got != c.ID {
		t.Errorf("email trait resolves to customer %d, want %d", got, c.ID)
	}

	e.mustPost(t, "/v1/track", map[string]any{"userId": "u-1", "event": "Order Completed", "messageId": "m-track",
		"properties": map[string]any{"revenue": 14.99}})
	e.mustPost(t, "/v1/page", map[string]any{"userId": "u-1", "name": "Pricing", "category": "Docs", "messageId": "m-page"})
	e.mustPost(t, "/v1/screen", map[string]any{"userId": "u-1", "name": "Home", "messageId": "m-screen"})
	e.mustPost(t, "/v1/group", map[string]any{"userId": "u-1", "groupId": 8812, "messageId": "m-group",
		"traits": map[string]any{"name": "Initech", "employees": 420}})

	track := e.event(t, c.ID, "track")
	if track.Name != "Order Completed" || track.Properties["revenue"] != 14.99 || track.Source != "segment" {
		t.Errorf("track = %+v, want Order Completed with revenue from segment", track)
	}
	page := e.event(t, c.ID, "page")
	if page.Name != "Pricing" || page.Properties["category"] != "Docs" {
		t.Errorf("page = %+v, want Pricing with category Docs", page)
	}
	if screen := e.event(t, c.ID, "screen"); screen.Name != "Home" {
		t.Errorf("screen name = %q, want Home", screen.Name)
	}
	group := e.event(t, c.ID, "group")
	traits, _ := group.Properties["traits"].(map[string]any)
	if group.Properties["groupId"] != "8812" || traits["name"] != "Initech" {
		t.Errorf("group properties = %v, want groupId 8812 (a number, stringified) and the group's traits", group.Properties)
	}
	if c := e.customer(t, "user_id", "u-1"); c.Traits["name"] != "Rosa Diaz" {
		t.Errorf("group traits leaked onto the person: name = %v", c.Traits["name"])
	}

	// Numeric ids are the same user as their text.
	e.mustPost(t, "/v1/track", map[string]any{"userId": 42, "event": "Signed Up"})
	e.mustPost(t, "/v1/identify", map[string]any{"userId": "42", "traits": map[string]any{"name": "Answer"}})
	if c := e.customer(t, "user_id", "42"); c.Traits["name"] != "Answer" || len(e.events(t, c.ID)) != 2 {
		t.Errorf("userId 42 and \"42\" are not one customer with both events")
	}
}

func TestAuthentication(t *testing.T) {
	e := newEnv(t)
	call := map[string]any{"userId": "u-auth", "event": "Clicked"}
	agentKey, _, err := e.db.CreateAPIKey(context.Background(), slugOf(t, e), c360.RoleAgent, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		auth   string
		body   any
		status int
		code   string
	}{
		{"no credentials", "", call, 401, c360.EUNAUTHENTICATED},
		{"unknown key", basic("c360_abcdefabcdef_nope"), call, 401, c360.EUNAUTHENTICATED},
		{"wrong secret of a real key", basic(e.writeKey[:len(e.writeKey)-2] + "xx"), call, 401, c360.EUNAUTHENTICATED},
		{"not base64", "Basic !!!", call, 401, c360.EUNAUTHENTICATED},
		{"bearer token without writeKey", "Bearer " + e.writeKey, call, 401, c360.EUNAUTHENTICATED},
		{"agent key", basic(agentKey), call, 403, c360.EFORBIDDEN},
		{"write key", basic(e.writeKey), call, 200, ""},
		{"write key without the colon", "Basic " + base64.StdEncoding.EncodeToString([]byte(e.writeKey)), call, 200, ""},
		{"admin key", basic(e.adminKey), call, 200, ""},
		{"writeKey in the body", "", map[string]any{"userId": "u-auth", "event": "Clicked", "writeKey": e.writeKey}, 200, ""},
		{"header wins over the body", basic("c360_abcdefabcdef_nope"), map[string]any{"userId": "u-auth", "event": "Clicked", "writeKey": e.writeKey}, 401, c360.EUNAUTHENTICATED},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := e.post(t, "/v1/track", tc.auth, tc.body)
			if r.Status != tc.status || r.Code != tc.code {
				t.Fatalf("got %d %q (%s), want %d %q", r.Status, r.Code, r.Message, tc.status, tc.code)
			}
			if r.Status != 200 && (r.Success || r.Message == "") {
				t.Errorf("refusal body %+v: want success false and a message", r)
			}
		})
	}
	// Batch: the writeKey field of the body, as analytics-node sends it too.
	r := e.post(t, "/v1/batch", "", map[string]any{"writeKey": e.writeKey,
		"batch": []any{map[string]any{"type": "track", "userId": "u-auth", "event": "Batched"}}})
	if r.Status != 200 {
		t.Errorf("batch with writeKey in body: %+v, want 200", r)
	}
	r = e.post(t, "/v1/batch", "", map[string]any{"batch": []any{map[string]any{"type": "track", "userId": "u-auth", "event": "Batched"}}})
	if r.Status != 401 {
		t.Errorf("batch without credentials: %+v, want 401", r)
	}
	if n := len(e.events(t, e.customer(t, "user_id", "u-auth").ID)); n != 5 {
		t.Errorf("stored %d events, want 5 (only the authenticated calls)", n)
	}
}

func slugOf(t *testing.T, e *env) string {
	t.Helper()
	var slug string
	if err := e.db.Pool.QueryRow(context.Background(), `SELECT slug FROM workspaces WHERE id = $1`, e.ws).Scan(&slug); err != nil {
		t.Fatal(err)
	}
	return slug
}

func TestRefusals(t *testing.T) {
	e := newEnv(t)
	auth := basic(e.writeKey)
	big := strings.Repeat("x", segment.MaxCallBytes)
	hugeBatch := make([]any, 0, 20)
	for i := range 20 {
		hugeBatch = append(hugeBatch, map[string]any{"type": "track", "userId": fmt.Sprint("u", i), "event": "E",
			"properties": map[string]any{"pad": strings.Repeat("y", 30<<10)}})
	}
	for _, tc := range []struct {
		name, path string
		body       any
		want       string // in the message
	}{
		{"bad JSON", "/v1/track", []byte(`{"userId": "u1", "event": `), "invalid JSON"},
		{"not an object", "/v1/track", []byte(`["track"]`), "want an object"},
		{"no ids", "/v1/track", map[string]any{"event": "Clicked"}, "no userId or anonymousId"},
		{"blank ids", "/v1/identify", map[string]any{"userId": "", "anonymousId": nil}, "no userId or anonymousId"},
		{"placeholder id", "/v1/identify", map[string]any{"userId": "undefined"}, "no usable identity"},
		{"bool id", "/v1/track", map[string]any{"userId": true, "event": "E"}, "userId: want a string or a number, got bool"},
		{"track without event", "/v1/track", map[string]any{"userId": "u1"}, "no event name"},
		{"group without groupId", "/v1/group", map[string]any{"userId": "u1"}, "no groupId"},
		{"alias without previousId", "/v1/alias", map[string]any{"userId": "u1"}, "no previousId"},
		{"traits not an object", "/v1/identify", map[string]any{"userId": "u1", "traits": []int{1}}, "traits: want an object, got array"},
		{"call over 32 KB", "/v1/track", map[string]any{"userId": "u1", "event": "E", "properties": map[string]any{"pad": big}}, "larger than 32 KB"},
		{"batch over 500 KB", "/v1/batch", map[string]any{"batch": hugeBatch}, "larger than 500 KB"},
		{"batch not an array", "/v1/batch", map[string]any{"batch": map[string]any{}}, "batch: want an array"},
		{"no batch", "/v1/batch", map[string]any{"context": map[string]any{}}, `no "batch" array`},
		{"null batch", "/v1/batch", []byte(`{"batch":null}`), "batch: want an array, got null"},
		{"null batch on the import path", "/v1/import", []byte(`{"batch":null,"writeKey":"` + e.writeKey + `"}`), "batch: want an array, got null"},
		{"unknown encoding", "/v1/track", map[string]any{"userId": "u1", "event": "E"}, "Content-Encoding"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var hdr []string
			if tc.name == "unknown encoding" {
				hdr = []string{"Content-Encoding", "br"}
			}
			r := e.post(t, tc.path, auth, tc.body, hdr...)
			if r.Status != http.StatusBadRequest || r.Code != c360.EINVALID || r.Success {
				t.Fatalf("got %+v, want 400 %s", r, c360.EINVALID)
			}
			if !strings.Contains(r.Message, tc.want) {
				t.Errorf("message %q does not contain %q", r.Message, tc.want)
			}
		})
	}
	if n := e.countEvents(t); n != 0 {
		t.Errorf("refused calls stored %d events, want 0", n)
	}
}

func TestBatchRefusesOnlyTheBadCalls(t *testing.T) {
	e := newEnv(t)
	batch := map[string]any{
		"batch": []any{
			map[string]any{"type": "identify", "userId": "b-1", "messageId": "b-ok-0", "traits": map[string]any{"name": "Ana"}},
			map[string]any{"type": "track", "event": "No Ids", "messageId": "b-bad-1"},
			map[string]any{"type": "track", "userId": "b-1", "event": "Big", "messageId": "b-bad-2",
				"properties": map[string]any{"pad": strings.Repeat("z", segment.MaxCallBytes)}},
			map[string]any{"type": "track", "userId": "b-1", "event": "Kept", "messageId": "b-ok-3"},
			map[string]any{"type": "track", "userId": "b\u0007ell", "event": "Control", "messageId": "b-bad-4"},
			map[string]any{"type": "launch", "userId": "b-1", "messageId": "b-bad-5"},
			map[string]any{"type": "track", "userId": map[string]any{"id": 1}, "event": "E", "messageId": "b-bad-6"},
			map[string]any{"type": "page", "anonymousId": "b-anon", "name": "Home", "messageId": "b-ok-7"},
		},
	}
	r := e.post(t, "/v1/batch", basic(e.writeKey), batch)
	if r.Status != http.StatusOK || !r.Success {
		t.Fatalf("got %+v, want 200 success with rejections", r)
	}
	want := map[int]string{1: "no userId or anonymousId", 2: "larger than 32 KB", 4: "control characters",
		5: `unknown call type "launch"`, 6: "userId: want a string or a number, got object"}
	if len(r.Rejected) != len(want) {
		t.Fatalf("rejected = %+v, want indexes 1, 2, 4, 5, 6", r.Rejected)
	}
	for _, rej := range r.Rejected {
		if !strings.Contains(rej.Error, want[rej.Index]) {
			t.Errorf("rejected[%d] error %q, want it to contain %q", rej.Index, rej.Error, want[rej.Index])
		}
		if rej.MessageID != fmt.Sprintf("b-bad-%d", rej.Index) && rej.Index != 6 {
			t.Errorf("rejected[%d] messageId %q, want b-bad-%d", rej.Index, rej.MessageID, rej.Index)
		}
	}
	c := e.customer(t, "user_id", "b-1")
	if c.Traits["name"] != "Ana" || e.event(t, c.ID, "track").Name != "Kept" {
		t.Errorf("the good calls of the batch were not stored")
	}
	e.customer(t, "anonymous_id", "b-anon")
	if n := e.countEvents(t); n != 3 {
		t.Errorf("stored %d events, want 3", n)
	}

	// A batch in which every call is refused stores nothing and says so.
	r = e.post(t, "/v1/batch", basic(e.writeKey), map[string]any{"batch": []any{
		map[string]any{"type": "track", "event": "No Ids"}, map[string]any{"type": "track", "userId": "x"}}})
	if r.Status != http.StatusBadRequest || len(r.Rejected) != 2 {
		t.Errorf("all-bad batch: %+v, want 400 with 2 rejections", r)
	}
}

// Two calls of one batch with the same messageId used to go to ingest
// together: whichever ingest worker committed first was stored, and the
// other was answered as stored. The first call of the batch now wins, and
// the later one is refused by name, even when its id was sent as a number.
func TestBatchRefusesARepeatedMessageID(t *testing.T) {
	e := newEnv(t)
	for round := range 2 { // the second is the SDK's retry: nothing changes
		body := []byte(`{"batch":[
			{"type":"track","userId":"rep-1","event":"First","messageId":"rep-m1"},
			{"type":"track","userId":"rep-2","event":"Other","messageId":"rep-m2"},
			{"type":"track","userId":"rep-3","event":"Second","messageId":"rep-m1"},
			{"type":"track","userId":"rep-1","event":"Number","messageId":7},
			{"type":"track","userId":"rep-3","event":"Number Again","messageId":"7"},
			{"type":"track","event":"No Ids","messageId":"rep-m3"},
			{"type":"track","userId":"rep-3","event":"After A Refused One","messageId":"rep-m3"}]}`)
		r := e.post(t, "/v1/batch", basic(e.writeKey), body)
		if r.Status != http.StatusOK || len(r.Rejected) != 4 {
			t.Fatalf("round %d: %+v, want 200 with calls 2, 4, 5 and 6 refused", round, r)
		}
		for i, want := range []struct {
			index     int
			messageID string
			err       string
		}{{2, "rep-m1", "messageId repeats call 0"}, {4, "7", "messageId repeats call 3"},
			{5, "rep-m3", "no userId or anonymousId: every call needs at least one"}, {6, "rep-m3", "messageId repeats call 5"}} {
			if got := r.Rejected[i]; got.Index != want.index || got.MessageID != want.messageID || got.Error != want.err {
				t.Errorf("round %d: rejected[%d] = %+v, want %+v", round, i, got, want)
			}
		}
		if n := e.countEvents(t); n != 3 {
			t.Errorf("round %d: %d events stored, want 3", round, n)
		}
		var names []string
		for _, ev := range e.events(t, e.customer(t, "user_id", "rep-1").ID) {
			names = append(names, ev.Name)
		}
		if slices.Sort(names); !slices.Equal(names, []string{"First", "Number"}) {
			t.Errorf("round %d: rep-1's events %v, want the first calls of rep-m1 and 7", round, names)
		}
		e.noCustomer(t, "user_id", "rep-3", "the repeated calls' user")
	}
}

// A batch within Segment's 500 KB limit is stored whole, however small its
// calls: Segment limits batches by bytes only, and SDKs take a 200 as
// delivered without reading "rejected". MaxBatchCalls cannot drift below
// what 500 KB holds: one call more than it of the smallest valid call is
// over the byte limit. Such a batch, with a merge among its calls (which
// makes ingest apply events one by one), is stored in its groups' time.
func TestLargestBatchIsStoredWhole(t *testing.T) {
	e := newEnv(t)
	batchOf := func(first string, calls int) []byte {
		body := []byte(`{"batch":[` + first)
		body = append(body, bytes.Repeat([]byte(segment.SmallestCall), calls)...)
		return append(body[:len(body)-1], "]}"...) // the last comma
	}
	if b := batchOf("", segment.MaxBatchCalls+1); len(b) <= segment.MaxBatchBytes {
		t.Fatalf("a batch of %d smallest calls is %d bytes, within the %d-byte limit: MaxBatchCalls %d refuses valid batches",
			segment.MaxBatchCalls+1, len(b), segment.MaxBatchBytes, segment.MaxBatchCalls)
	}

	// Customers of user id 1 and anonymous id z; the batch's alias merges them.
	e.mustPost(t, "/v1/identify", map[string]any{"userId": 1})
	e.mustPost(t, "/v1/page", map[string]any{"anonymousId": "z"})
	alias := `{"type":"alias","userId":1,"previousId":"z"},`
	calls := (segment.MaxBatchBytes - len(batchOf(alias, 0))) / len(segment.SmallestCall)
	body := batchOf(alias, calls)
	r := e.post(t, "/v1/batch", basic(e.writeKey), body)
	if r.Status != http.StatusOK || len(r.Rejected) != 0 {
		t.Fatalf("%d-byte batch of %d calls: %d %q with %d rejected, want 200 and none", len(body), calls+1, r.Status, r.Message, len(r.Rejected))
	}
	if got, want := e.countEvents(t), calls+1+2; got != want {
		t.Errorf("%d events stored, want %d", got, want)
	}
	if e.customer(t, "anonymous_id", "z").ID != e.customer(t, "user_id", "1").ID {
		t.Error("the batch's alias did not merge anonymous id z into user 1")
	}

	// Calls with a messageId, sent twice: stored once.
	items := make([]any, 10000) // 47 bytes each
	for i := range items {
		items[i] = map[string]any{"type": "page", "userId": "m", "messageId": fmt.Sprint(i)}
	}
	before := e.countEvents(t)
	for range 2 {
		e.mustPost(t, "/v1/batch", map[string]any{"batch": items})
	}
	if got := e.countEvents(t) - before; got != len(items) {
		t.Errorf("a batch of %d calls sent twice stored %d events, want %d", len(items), got, len(items))
	}
}

// A batch of more items than any batch of valid calls holds within 500 KB
// is refused whole, before anything is stored.
func TestBatchCallLimit(t *testing.T) {
	e := newEnv(t)
	items := []any{map[string]any{"type": "track", "userId": "u", "event": "E"}}
	for len(items) <= segment.MaxBatchCalls {
		items = append(items, map[string]any{})
	}
	r := e.post(t, "/v1/batch", basic(e.writeKey), map[string]any{"batch": items})
	want := fmt.Sprintf("more than %d items", segment.MaxBatchCalls)
	if r.Status != http.StatusBadRequest || !strings.Contains(r.Message, want) {
		t.Errorf("batch of %d items: %d %q, want 400 %q", len(items), r.Status, r.Message, want)
	}
	if n := e.countEvents(t); n != 0 {
		t.Errorf("%d events stored, want none", n)
	}
}

func TestBatchRetryIsStoredOnce(t *testing.T) {
	e := newEnv(t)
	var items []any
	for i := range 10 {
		items = append(items, map[string]any{"type": "track", "userId": "r-1", "event": "Viewed",
			"messageId": fmt.Sprintf("retry-%d", i), "properties": map[string]any{"i": i}})
	}
	body := map[string]any{"batch": items, "sentAt": "2025-03-01T12:00:00Z"}
	for range 3 {
		e.mustPost(t, "/v1/batch", body)
	}
	e.mustPost(t, "/v1/import", body) // Segment's alias of batch
	if n := len(e.events(t, e.customer(t, "user_id", "r-1").ID)); n != 10 {
		t.Errorf("stored %d events after 4 deliveries of 10 calls, want 10", n)
	}
	// Without messageId, c360 makes one up: a retry is then a new call.
	call := map[string]any{"userId": "r-2", "event": "No Id"}
	e.mustPost(t, "/v1/track", call)
	e.mustPost(t, "/v1/track", call)
	if n := len(e.events(t, e.customer(t, "user_id", "r-2").ID)); n != 2 {
		t.Errorf("calls without messageId stored %d times, want 2", n)
	}
}

func TestTimestamps(t *testing.T) {
	e := newEnv(t)
	now := e.clock()
	// The client's clock is an hour behind: it stamped the call 10 s before
	// sending it, so it happened 10 s before c360 received it.
	clientNow := now.Add(-time.Hour)
	ts := clientNow.Add(-10 * time.Second).Format(time.RFC3339Nano)
	sent := clientNow.Format(time.RFC3339Nano)

	e.mustPost(t, "/v1/track", map[string]any{"userId": "t-1", "event": "Call SentAt", "timestamp": ts, "sentAt": sent})
	e.mustPost(t, "/v1/batch", map[string]any{"sentAt": sent, "batch": []any{
		map[string]any{"type": "track", "userId": "t-2", "event": "Batch SentAt", "timestamp": ts}}})
	e.mustPost(t, "/v1/track", map[string]any{"userId": "t-3", "event": "Historical", "timestamp": "2019-05-01T08:00:00Z"})
	e.mustPost(t, "/v1/track", map[string]any{"userId": "t-4", "event": "Now"})
	e.mustPost(t, "/v1/track", map[string]any{"userId": "t-5", "event": "Garbled", "timestamp": "yesterday"})

	for _, tc := range []struct {
		user string
		want time.Time
	}{
		{"t-1", now.Add(-10 * time.Second)},
		{"t-2", now.Add(-10 * time.Second)},
		{"t-3", time.Date(2019, 5, 1, 8, 0, 0, 0, time.UTC)},
		{"t-4", now},
		{"t-5", now},
	} {
		ev := e.event(t, e.customer(t, "user_id", tc.user).ID, "track")
		if !ev.OccurredAt.Equal(tc.want) {
			t.Errorf("%s (%s): occurredAt %s, want %s", tc.user, ev.Name, ev.OccurredAt, tc.want)
		}
		if !ev.ReceivedAt.Equal(now) {
			t.Errorf("%s: receivedAt %s, want %s", tc.user, ev.ReceivedAt, now)
		}
	}
}

// Timestamps in the spellings clients print are read; one that is not a
// time is ignored (the call is dated when received), named in the answer's
// warnings and counted on /metrics, without its value.
func TestUnreadTimesAreReported(t *testing.T) {
	e := newEnv(t)
	now := e.clock()
	r := e.post(t, "/v1/track", basic(e.writeKey), map[string]any{"userId": "w-1", "event": "E", "timestamp": "last tuesday"})
	if r.Status != http.StatusOK || len(r.Warnings) != 1 || r.Warnings[0].Index != nil ||
		!strings.HasPrefix(r.Warnings[0].Warning, "timestamp is not a time") || strings.Contains(r.Warnings[0].Warning, "tuesday") {
		t.Errorf("call with an unread timestamp: %+v, want 200 with one warning naming timestamp", r)
	}
	r = e.post(t, "/v1/batch", basic(e.writeKey), map[string]any{"sentAt": "soon", "batch": []any{
		map[string]any{"type": "track", "userId": "w-2", "event": "Python", "timestamp": "2025-03-01 11:00:00.5+00:00"},
		map[string]any{"type": "track", "userId": "w-3", "event": "Epoch", "messageId": "m-epoch", "originalTimestamp": 1740826800},
		map[string]any{"type": "track", "event": "No Ids", "timestamp": "never"}, // refused: no warning
	}})
	type warned struct {
		index     int
		messageID string
		prefix    string
	}
	var got []warned
	for _, w := range r.Warnings {
		i := -1
		if w.Index != nil {
			i = *w.Index
		}
		got = append(got, warned{i, w.MessageID, strings.SplitN(w.Warning, " is not", 2)[0]})
	}
	want := []warned{{-1, "", "the batch's sentAt"}, {1, "m-epoch", "originalTimestamp"}}
	if r.Status != http.StatusOK || len(r.Rejected) != 1 || fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("batch: %d, %d rejected, warnings %v; want 200, 1 rejected, warnings %v", r.Status, len(r.Rejected), got, want)
	}
	for user, want := range map[string]time.Time{
		"w-1": now,
		"w-2": time.Date(2025, 3, 1, 11, 0, 0, 5e8, time.UTC),
		"w-3": now,
	} {
		if ev := e.event(t, e.customer(t, "user_id", user).ID, "track"); !ev.OccurredAt.Equal(want) {
			t.Errorf("%s: occurredAt %s, want %s", user, ev.OccurredAt, want)
		}
	}

	res, err := http.Get(e.srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	metrics, _ := io.ReadAll(res.Body)
	for _, line := range []string{
		`c360_segment_unread_times_total{field="timestamp"} 1`,
		`c360_segment_unread_times_total{field="originalTimestamp"} 1`,
		`c360_segment_unread_times_total{field="sentAt"} 1`,
	} {
		if !bytes.Contains(metrics, []byte(line+"\n")) {
			t.Errorf("/metrics lacks %s", line)
		}
	}
}

func TestAlias(t *testing.T) {
	e := newEnv(t)
	// An anonymous visitor browses, then signs up as u-9 on another device.
	e.mustPost(t, "/v1/page", map[string]any{"anonymousId": "anon-1", "name": "Landing"})
	e.mustPost(t, "/v1/identify", map[string]any{"userId": "u-9", "traits": map[string]any{"name": "Nia"}})
	if e.customer(t, "anonymous_id", "anon-1").ID == e.customer(t, "user_id", "u-9").ID {
		t.Fatal("one customer before alias")
	}
	// analytics-node's alias({userId, previousId}) carries no anonymousId:
	// previousId is unknown as a user id, so it is the anonymous id.
	e.mustPost(t, "/v1/alias", map[string]any{"userId": "u-9", "previousId": "anon-1"})
	c := e.customer(t, "user_id", "u-9")
	if got := e.customer(t, "anonymous_id", "anon-1").ID; got != c.ID {
		t.Errorf("after alias, anon-1 resolves to %d, want u-9's customer %d", got, c.ID)
	}
	if _, err := e.db.FindCustomerByIdentity(context.Background(), e.ws, c360.Identity{Type: "user_id", Value: "anon-1"}); c360.ErrorCode(err) != c360.ENOTFOUND {
		t.Errorf("alias created user_id anon-1 (err %v), want none", err)
	}
	e.event(t, c.ID, "alias")

	// Browser libraries send the current anonymousId as previousId.
	e.mustPost(t, "/v1/page", map[string]any{"anonymousId": "anon-2", "name": "Landing"})
	e.mustPost(t, "/v1/batch", map[string]any{"batch": []any{
		map[string]any{"type": "alias", "userId": "u-10", "anonymousId": "anon-2", "previousId": "anon-2"}}})
	if e.customer(t, "anonymous_id", "anon-2").ID != e.customer(t, "user_id", "u-10").ID {
		t.Error("alias with previousId = anonymousId did not link them")
	}

	// A previousId known as a user id stays a user id: under the default
	// rules (one user_id per customer) two user ids never merge.
	e.mustPost(t, "/v1/identify", map[string]any{"userId": "old-id"})
	e.mustPost(t, "/v1/alias", map[string]any{"userId": "new-id", "previousId": "old-id"})
	if _, err := e.db.FindCustomerByIdentity(context.Background(), e.ws, c360.Identity{Type: "anonymous_id", Value: "old-id"}); c360.ErrorCode(err) != c360.ENOTFOUND {
		t.Errorf("a known user id was recorded as anonymous_id (err %v)", err)
	}
}

// An alias whose previousId is its own userId names that user and adds
// nothing: it used to add an anonymous_id equal to the user id, the
// user id being unknown as such before the alias was stored. It is stored
// as an alias event, as Segment accepts it; spaces around either id do
// not count, as ingest trims user ids.
func TestAliasToItselfAddsNothing(t *testing.T) {
	e := newEnv(t)
	e.mustPost(t, "/v1/alias", map[string]any{"userId": "self-1", "previousId": "self-1", "messageId": "self-a1"})
	c := e.customer(t, "user_id", "self-1")
	if got, want := e.identitiesOf(t, c.ID), []string{"user_id self-1"}; !slices.Equal(got, want) {
		t.Errorf("identities after alias(self-1, self-1) = %v, want %v", got, want)
	}
	e.event(t, c.ID, "alias")
	e.mustPost(t, "/v1/batch", map[string]any{"batch": []any{
		map[string]any{"type": "alias", "userId": "self-2", "previousId": " self-2 ", "anonymousId": "self-anon", "messageId": "self-a2"}}})
	c = e.customer(t, "user_id", "self-2")
	if got, want := e.identitiesOf(t, c.ID), []string{"anonymous_id self-anon", "user_id self-2"}; !slices.Equal(got, want) {
		t.Errorf("identities after alias(self-2, \" self-2 \") = %v, want %v", got, want)
	}
}

func TestGzipAndBrowserPaths(t *testing.T) {
	e := newEnv(t)
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	json.NewEncoder(zw).Encode(map[string]any{"batch": []any{map[string]any{"type": "track", "userId": "g-1", "event": "Zipped"}}})
	zw.Close()
	if r := e.post(t, "/v1/batch", basic(e.writeKey), buf.Bytes(), "Content-Encoding", "gzip"); r.Status != 200 {
		t.Fatalf("gzip batch: %+v, want 200", r)
	}
	if r := e.post(t, "/v1/batch", basic(e.writeKey), []byte("not gzip"), "Content-Encoding", "gzip"); r.Status != 400 {
		t.Errorf("corrupt gzip: %+v, want 400", r)
	}
	// A gzip bomb: tiny compressed, over the limit inflated.
	buf.Reset()
	zw = gzip.NewWriter(&buf)
	zw.Write([]byte(`{"userId":"g-1","event":"E","properties":{"pad":"`))
	zw.Write(bytes.Repeat([]byte("a"), 10<<20))
	zw.Write([]byte(`"}}`))
	zw.Close()
	if r := e.post(t, "/v1/track", basic(e.writeKey), buf.Bytes(), "Content-Encoding", "gzip"); r.Status != 400 || !strings.Contains(r.Message, "larger than 32 KB") {
		t.Errorf("gzip bomb: %+v, want 400 larger than 32 KB", r)
	}
	// analytics.js: one-letter path, text/plain, writeKey in the body.
	req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/v1/t",
		strings.NewReader(`{"userId":"g-1","event":"Browser","writeKey":"`+e.writeKey+`"}`))
	req.Header.Set("Content-Type", "text/plain")
	req.Header.Set("Origin", "https://shop.example")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 200 || res.Header.Get("Access-Control-Allow-Origin") != "*" {
		t.Errorf("browser call: %d, ACAO %q; want 200 and *", res.StatusCode, res.Header.Get("Access-Control-Allow-Origin"))
	}
	req, _ = http.NewRequest(http.MethodOptions, e.srv.URL+"/v1/batch", nil)
	req.Header.Set("Origin", "https://shop.example")
	req.Header.Set("Access-Control-Request-Method", "POST")
	res, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusNoContent || !strings.Contains(res.Header.Get("Access-Control-Allow-Headers"), "Authorization") {
		t.Errorf("preflight: %d %v, want 204 allowing Authorization", res.StatusCode, res.Header)
	}
	if n := len(e.events(t, e.customer(t, "user_id", "g-1").ID)); n != 2 {
		t.Errorf("stored %d events, want 2", n)
	}
}

// RudderStack's JavaScript SDK (analytics-js, its default XHR transport)
// sends Authorization, Content-Type application/json, Accept and an
// AnonymousId header: a browser sends the call only if the preflight
// allows every one of them.
func TestPreflightAllowsRudderStackHeaders(t *testing.T) {
	e := newEnv(t)
	for _, path := range []string{"/v1/track", "/v1/page", "/v1/batch", "/beacon/v1/batch"} {
		req, _ := http.NewRequest(http.MethodOptions, e.srv.URL+path, nil)
		req.Header.Set("Origin", "https://shop.example")
		req.Header.Set("Access-Control-Request-Method", "POST")
		// As a browser sends it: lowercase, sorted, comma-separated.
		req.Header.Set("Access-Control-Request-Headers", "accept,anonymousid,authorization,content-type")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		allowed := map[string]bool{}
		for _, h := range strings.Split(res.Header.Get("Access-Control-Allow-Headers"), ",") {
			allowed[strings.ToLower(strings.TrimSpace(h))] = true
		}
		for _, h := range []string{"accept", "anonymousid", "authorization", "content-type", "content-encoding"} {
			if !allowed[h] {
				t.Errorf("OPTIONS %s: Access-Control-Allow-Headers %q does not allow %s", path, res.Header.Get("Access-Control-Allow-Headers"), h)
			}
		}
		if res.StatusCode != http.StatusNoContent || res.Header.Get("Access-Control-Allow-Origin") != "*" ||
			!strings.Contains(res.Header.Get("Access-Control-Allow-Methods"), "POST") {
			t.Errorf("OPTIONS %s: %d %v, want 204 allowing POST from any origin", path, res.StatusCode, res.Header)
		}
	}
	// The call itself, with those headers: AnonymousId is ignored.
	r := e.post(t, "/v1/track", basic(e.clientKey(t)), map[string]any{"anonymousId": "rs-anon", "event": "Viewed", "messageId": "rs-1"},
		"Origin", "https://shop.example", "Accept", "application/json", "Content-Type", "application/json;charset=UTF-8",
		"AnonymousId", base64.StdEncoding.EncodeToString([]byte("rs-anon")))
	if r.Status != 200 || !r.Success {
		t.Fatalf("RudderStack call: %+v, want 200 success", r)
	}
	e.event(t, e.customer(t, "anonymous_id", "rs-anon").ID, "track")
}

// analytics-java posts its batches to <endpoint>/v1/import/ (its
// DEFAULT_PATH, with a trailing slash): every tracking path is served with
// one too, preflights included, and nothing deeper is.
func TestTrailingSlashPaths(t *testing.T) {
	e := newEnv(t)
	// As analytics-java 3.x sends it: Basic auth, its own batch fields.
	body := `{"batch":[{"type":"track","userId":"java-1","event":"Order Completed","messageId":"java-m-1",` +
		`"timestamp":"2025-03-01T11:59:00.000Z","context":{"library":{"name":"analytics-java","version":"3.5.1"}}}],` +
		`"sentAt":"2025-03-01T12:00:00.000Z","sequence":1}`
	if r := e.post(t, "/v1/import/", basic(e.writeKey), []byte(body), "User-Agent", "analytics-java/3.5.1",
		"Content-Type", "application/json; charset=utf-8"); r.Status != 200 || !r.Success {
		t.Fatalf("POST /v1/import/: %+v, want 200 success", r)
	}
	e.event(t, e.customer(t, "user_id", "java-1").ID, "track")
	for _, path := range []string{"/v1/batch/", "/v1/b/", "/v1/track/", "/v1/t/"} {
		var r response
		if strings.Contains(path, "b") {
			r = e.post(t, path, basic(e.writeKey), map[string]any{"batch": []any{
				map[string]any{"type": "track", "userId": "java-2", "event": path}}})
		} else {
			r = e.post(t, path, basic(e.writeKey), map[string]any{"userId": "java-2", "event": path})
		}
		if r.Status != 200 || !r.Success {
			t.Errorf("POST %s: %+v, want 200 success", path, r)
		}
	}
	if n := len(e.events(t, e.customer(t, "user_id", "java-2").ID)); n != 4 {
		t.Errorf("stored %d events of the slash paths, want 4", n)
	}
	for _, path := range []string{"/v1/import/", "/v1/t/", "/beacon/v1/batch/"} {
		req, _ := http.NewRequest(http.MethodOptions, e.srv.URL+path, nil)
		req.Header.Set("Origin", "https://shop.example")
		req.Header.Set("Access-Control-Request-Method", "POST")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusNoContent || res.Header.Get("Access-Control-Allow-Origin") != "*" {
			t.Errorf("OPTIONS %s: %d, want 204 with CORS", path, res.StatusCode)
		}
	}
	for _, path := range []string{"/v1/import/x", "/v1/track/x", "/v1/t/x/"} {
		res, err := http.Post(e.srv.URL+path, "application/json", strings.NewReader(`{"batch":[]}`))
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusNotFound {
			t.Errorf("POST %s: %d, want 404", path, res.StatusCode)
		}
	}
}

// RudderStack's JavaScript SDK with useBeacon posts batches as text/plain
// to /beacon/v1/batch, the write key in the query string (a beacon cannot
// set headers). They are batches like any other; the key, now in the URL,
// appears in none of c360's logs nor on /metrics.
func TestBeaconBatch(t *testing.T) {
	var logs bytes.Buffer
	var mu sync.Mutex
	e := newEnvLogging(t, slog.NewTextHandler(&lockedWriter{w: &logs, mu: &mu}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	beacon := func(query, body string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/beacon/v1/batch"+query, strings.NewReader(body))
		req.Header.Set("Content-Type", "text/plain;charset=UTF-8") // a Blob of type text/plain
		req.Header.Set("Origin", "https://shop.example")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b)
	}
	body := `{"batch":[{"type":"page","anonymousId":"b-anon","name":"Pricing","messageId":"beacon-1"},
		{"type":"track","anonymousId":"b-anon","event":"Left","messageId":"beacon-2"}],"sentAt":"2025-03-01T12:00:00.000Z"}`
	for range 2 { // the second is a retry: stored once
		if code, answer := beacon("?writeKey="+e.writeKey, body); code != http.StatusOK {
			t.Fatalf("beacon: %d %s, want 200", code, answer)
		}
	}
	if n := len(e.events(t, e.customer(t, "anonymous_id", "b-anon").ID)); n != 2 {
		t.Errorf("stored %d events, want 2", n)
	}
	unknown := "wk_" + strings.Repeat("7", 40)
	for _, query := range []string{"?writeKey=" + unknown, "", "?writeKey="} {
		if code, answer := beacon(query, body); code != http.StatusUnauthorized {
			t.Errorf("beacon with query %q: %d %s, want 401", query, code, answer)
		}
	}
	if code, answer := beacon("?writeKey="+e.writeKey, `{"batch":[{"type":"track","event":"No Ids"}]}`); code != http.StatusBadRequest {
		t.Errorf("beacon of a bad call: %d %s, want 400", code, answer)
	}

	res, err := http.Get(e.srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(res.Body)
	res.Body.Close()
	mu.Lock()
	defer mu.Unlock()
	for _, key := range []string{e.writeKey, unknown} {
		if strings.Contains(logs.String(), key) || bytes.Contains(metrics, []byte(key)) {
			t.Errorf("a write key sent in the query string is in the logs or on /metrics:\n%s", logs.String())
		}
	}
	if !bytes.Contains(metrics, []byte(`route="POST /beacon/v1/batch"`)) {
		t.Error("/metrics does not count the beacon route by its pattern")
	}
}

// lockedWriter serializes the writes of the server's goroutines.
type lockedWriter struct {
	w  io.Writer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func TestBatchIsolatesCallsTheDatabaseRefuses(t *testing.T) {
	e := newEnv(t)
	// Valid JSON that PostgreSQL refuses: a NUL in a text column, \u0000 in jsonb.
	body := []byte(`{"batch": [
		{"type": "track", "userId": "p-1", "event": "Before", "messageId": "p-0"},
		{"type": "track", "userId": "p-1", "event": "Nul\u0000Name", "messageId": "p-1"},
		{"type": "track", "userId": "p-1", "event": "Nul Property", "properties": {"x": "a\u0000b"}, "messageId": "p-2"},
		{"type": "track", "userId": "p-1", "event": "After", "messageId": "p-3"}
	]}`)
	r := e.post(t, "/v1/batch", basic(e.writeKey), body)
	if r.Status != http.StatusOK || len(r.Rejected) != 2 || r.Rejected[0].Index != 1 || r.Rejected[1].Index != 2 {
		t.Fatalf("got %+v, want 200 with calls 1 and 2 rejected", r)
	}
	if n := len(e.events(t, e.customer(t, "user_id", "p-1").ID)); n != 2 {
		t.Errorf("stored %d events, want the 2 good ones", n)
	}
	// A messageId no text column takes (a NUL; bytes that are not UTF-8)
	// is refused alone: it could be kept neither as an event nor as a dead
	// letter, and the whole batch answered 503 on every retry.
	for i, id := range []string{`m\u0000x`, "m\xffx"} {
		body := []byte(`{"batch": [
			{"type": "track", "userId": "q-1", "event": "Poison", "messageId": "` + id + `"},
			{"type": "track", "userId": "q-1", "event": "After", "messageId": "q-after-` + fmt.Sprint(i) + `"}
		]}`)
		r := e.post(t, "/v1/batch", basic(e.writeKey), body)
		if r.Status != http.StatusOK || len(r.Rejected) != 1 || r.Rejected[0].Index != 0 || !strings.Contains(r.Rejected[0].Error, "messageId") {
			t.Errorf("messageId %q: got %+v, want 200 with call 0 rejected for its messageId", id, r)
		}
	}
	if n := len(e.events(t, e.customer(t, "user_id", "q-1").ID)); n != 2 {
		t.Errorf("stored %d events after the poisoned ids, want the 2 good ones", n)
	}
}

// A call's properties and context are stored as they came: integers keep
// every digit, decimals their scale. Objects that PostgreSQL would refuse
// or alter (a NUL or surrogate escape, an exponent, a number too long) are
// decoded first, as encoding/json would: a lone surrogate becomes U+FFFD,
// an exponent's number a float64 and one no float64 holds is refused;
// their other numbers still keep their digits.
func TestObjectsAreStoredAsSent(t *testing.T) {
	e := newEnv(t)
	long := "0." + strings.Repeat("1", 16384) // more decimals than PostgreSQL's numeric holds
	body := []byte(`{"batch": [
		{"type": "track", "userId": "o-1", "event": "Exact", "messageId": "o-0",
		 "properties": {"order_id": 12345678901234567, "price": 18.990, "tags": ["a", {"b": null}], "ok": true, "q": "caf\u00e9 \u0026 co"},
		 "context": {"library": {"name": "analytics-node", "version": "3.1.0"}, "seq": 98765432109876543}},
		{"type": "track", "userId": "o-1", "event": "Escaped", "messageId": "o-1",
		 "properties": {"name": "caf\u00e9", "lone": "\ud800", "n": 12345678901234567, "e": 1.5e3}},
		{"type": "track", "userId": "o-1", "event": "Huge", "messageId": "o-2", "properties": {"big": 1e400}},
		{"type": "track", "userId": "o-1", "event": "Listed", "properties": [1], "messageId": "o-3"},
		{"type": "track", "userId": "o-1", "event": "Long", "messageId": "o-4", "properties": {"x": ` + long + `}}
	]}`)
	r := e.post(t, "/v1/batch", basic(e.writeKey), body)
	want := map[int]string{2: "properties.big: a number too large for a 64-bit float", 3: "properties: want an object, got array"}
	if r.Status != http.StatusOK || len(r.Rejected) != len(want) {
		t.Fatalf("got %+v, want 200 with calls 2 and 3 rejected", r)
	}
	for _, rej := range r.Rejected {
		if !strings.Contains(rej.Error, want[rej.Index]) {
			t.Errorf("rejected[%d] error %q, want it to contain %q", rej.Index, rej.Error, want[rej.Index])
		}
		// The refusal names the call even when its messageId comes after the object.
		if rej.MessageID != fmt.Sprintf("o-%d", rej.Index) {
			t.Errorf("rejected[%d] messageId %q, want o-%d", rej.Index, rej.MessageID, rej.Index)
		}
	}
	stored := func(key, column string) map[string]any {
		t.Helper()
		var raw []byte
		if err := e.db.Pool.QueryRow(context.Background(), `SELECT `+column+`::text FROM events WHERE workspace_id = $1 AND dedupe_key = $2`,
			e.ws, key).Scan(&raw); err != nil {
			t.Fatalf("%s of %s: %v", column, key, err)
		}
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.UseNumber()
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			t.Fatal(err)
		}
		return m
	}
	props := stored("o-0", "properties")
	if props["order_id"] != json.Number("12345678901234567") || props["price"] != json.Number("18.990") || props["ok"] != true ||
		props["q"] != "café & co" {
		t.Errorf("properties = %v, want order_id 12345678901234567 and price 18.990 as sent, q unescaped", props)
	}
	if tags, _ := props["tags"].([]any); len(tags) != 2 || tags[0] != "a" {
		t.Errorf("tags = %v, want [a {b: null}]", props["tags"])
	}
	if cx := stored("o-0", "context"); cx["seq"] != json.Number("98765432109876543") || cx["library"] == nil {
		t.Errorf("context = %v, want seq 98765432109876543 and the library as sent", cx)
	}
	escaped := stored("o-1", "properties")
	if escaped["name"] != "café" || escaped["lone"] != "\ufffd" || escaped["n"] != json.Number("12345678901234567") || escaped["e"] != json.Number("1500") {
		t.Errorf("escaped properties = %v, want café, U+FFFD, n as sent and e as 1500", escaped)
	}
	if x, _ := stored("o-4", "properties")["x"].(json.Number); !strings.HasPrefix(string(x), "0.1111") || len(x) > 40 {
		t.Errorf("long decimal stored as %.60q, want it read as a float64", x)
	}
}

// Traits keep every digit too, on the profile and on its reads, and an
// identify that repeats them changes nothing: what is stored and what
// comes in compare as the same numbers.
func TestTraitsKeepTheirDigits(t *testing.T) {
	e := newEnv(t)
	// tiny goes through a float64 (an exponent) and is stored as PostgreSQL
	// spells it, 0.0000002: the repeat still compares equal.
	body := []byte(`{"userId": "t-1", "traits": {"account": 12345678901234567, "score": 18.990, "seats": 3, "e": 2e3, "tiny": 2e-7}}`)
	e.mustPost(t, "/v1/identify", body)
	c := e.customer(t, "user_id", "t-1")
	if c.Traits["account"] != json.Number("12345678901234567") || c.Traits["score"] != json.Number("18.990") ||
		c.Traits["seats"] != json.Number("3") || c.Traits["e"] != json.Number("2000") {
		t.Errorf("traits = %#v, want account 12345678901234567, score 18.990, seats 3 and e 2000 as numbers", c.Traits)
	}
	lastDiff := func() map[string]any {
		t.Helper()
		var diff map[string]any
		if err := e.db.Pool.QueryRow(context.Background(), `SELECT diff FROM customer_changes
			WHERE workspace_id = $1 AND customer_id = $2 ORDER BY version DESC LIMIT 1`, e.ws, c.ID).Scan(&diff); err != nil {
			t.Fatal(err)
		}
		return diff
	}
	if _, ok := lastDiff()["traits"]; !ok {
		t.Fatalf("the first identify's change = %v, want its traits", lastDiff())
	}
	e.mustPost(t, "/v1/identify", body)
	if diff := lastDiff(); diff["traits"] != nil {
		t.Errorf("an identify repeating the traits changed %v, want none", diff["traits"])
	}
	if c2 := e.customer(t, "user_id", "t-1"); c2.Version != c.Version+1 || c2.Traits["account"] != json.Number("12345678901234567") {
		t.Errorf("after the repeat: version %d (want %d), account %v", c2.Version, c.Version+1, c2.Traits["account"])
	}
}

// An alias's previousId that an earlier call of the same batch carries as
// its userId is a user id, as it is when the calls come one by one: the
// batch's calls take effect in its order (analytics-node flushes an
// identify and the alias that follows it together).
func TestAliasInBatchResolvesAsInSeparateCalls(t *testing.T) {
	e := newEnv(t)
	e.mustPost(t, "/v1/identify", map[string]any{"userId": "old-a", "messageId": "s1"})
	e.mustPost(t, "/v1/alias", map[string]any{"userId": "new-a", "previousId": "old-a", "messageId": "s2"})
	e.mustPost(t, "/v1/batch", map[string]any{"batch": []any{
		map[string]any{"type": "identify", "userId": "old-b", "messageId": "b1"},
		map[string]any{"type": "alias", "userId": "new-b", "previousId": "old-b", "messageId": "b2"},
		// An anonymous visitor's id is still an anonymous id in a batch,
		// and a userId that comes after the alias does not count.
		map[string]any{"type": "page", "anonymousId": "anon-c", "messageId": "b3"},
		map[string]any{"type": "alias", "userId": "new-c", "previousId": "anon-c", "messageId": "b4"},
		map[string]any{"type": "alias", "userId": "new-d", "previousId": "later-d", "messageId": "b5"},
		map[string]any{"type": "identify", "userId": "later-d", "messageId": "b6"},
	}})
	for _, v := range []string{"old-a", "old-b"} {
		if _, err := e.db.FindCustomerByIdentity(context.Background(), e.ws, c360.Identity{Type: "anonymous_id", Value: v}); c360.ErrorCode(err) != c360.ENOTFOUND {
			t.Errorf("user id %s was recorded as anonymous_id (err %v), want none", v, err)
		}
	}
	if e.customer(t, "anonymous_id", "anon-c").ID != e.customer(t, "user_id", "new-c").ID {
		t.Error("alias in a batch did not link anonymous id anon-c to new-c")
	}
	if e.customer(t, "anonymous_id", "later-d").ID != e.customer(t, "user_id", "new-d").ID {
		t.Error("previousId later-d, a userId only after the alias, is not new-d's anonymous id")
	}
}

// A batch's context is stored with every call, the call's own keys
// winning; it counts towards each call's 32 KB, and one over 32 KB
// refuses the batch, since it would make every call too large.
func TestBatchContextIsPartOfEveryCall(t *testing.T) {
	e := newEnv(t)
	pad := strings.Repeat("x", 20<<10)
	r := e.post(t, "/v1/batch", basic(e.writeKey), []byte(`{"context": {"ip": "1.2.3.4", "seq": 12345678901234567, "pad": "`+pad+`"}, "batch": [
		{"type": "page", "userId": "bc-1", "messageId": "bc-0"},
		{"type": "page", "userId": "bc-1", "messageId": "bc-1", "context": {"ip": "5.6.7.8", "page": {"path": "/"}}},
		{"type": "page", "userId": "bc-1", "messageId": "bc-2", "context": {"ip": "9.9.9.9", "e": 1e3}},
		{"type": "page", "userId": "bc-1", "messageId": "bc-3", "properties": {"p": "`+pad[:12<<10]+`"}}]}`))
	if r.Status != http.StatusOK || len(r.Rejected) != 1 || r.Rejected[0].Index != 3 ||
		!strings.Contains(r.Rejected[0].Error, "larger than 32 KB with the batch's context") {
		t.Fatalf("got %+v, want 200 with call 3 refused for its size with the batch's context", r)
	}
	for key, want := range map[string]string{
		"bc-0": `{"ip": "1.2.3.4", "pad": "x…", "seq": 12345678901234567}`,
		"bc-1": `{"ip": "5.6.7.8", "pad": "x…", "seq": 12345678901234567, "page": {"path": "/"}}`,
		"bc-2": `{"e": 1000, "ip": "9.9.9.9", "pad": "x…", "seq": 12345678901234567}`,
	} {
		var got string
		if err := e.db.Pool.QueryRow(context.Background(), `SELECT (context || jsonb_build_object('pad', left(context->>'pad', 1) || '…'))::text
			FROM events WHERE workspace_id = $1 AND dedupe_key = $2`, e.ws, key).Scan(&got); err != nil {
			t.Fatalf("context of %s: %v", key, err)
		}
		if got != want {
			t.Errorf("%s is stored with context %s, want %s", key, got, want)
		}
	}

	before := e.countEvents(t)
	r = e.post(t, "/v1/batch", basic(e.writeKey), []byte(`{"batch": [{"type": "page", "userId": "bc-2"}], "context": {"pad": "`+pad+pad+`"}}`))
	if r.Status != http.StatusBadRequest || !strings.Contains(r.Message, "the batch's context is larger than 32 KB") {
		t.Errorf("a batch with a 40 KB context: %d %q, want 400 naming the context", r.Status, r.Message)
	}
	if n := e.countEvents(t) - before; n != 0 {
		t.Errorf("%d events stored, want none", n)
	}
}

// An alias's previousId is a user id only when a call stored before it
// has it as its userId: a call of the same batch that ingest refuses (a
// messageId over 256 bytes) counts no more than it does one by one.
func TestAliasAfterARefusedCallResolvesAsInSeparateCalls(t *testing.T) {
	e := newEnv(t)
	long := strings.Repeat("x", 300)
	e.post(t, "/v1/identify", basic(e.writeKey), map[string]any{"userId": "old-s", "messageId": long})
	e.mustPost(t, "/v1/alias", map[string]any{"userId": "new-s", "previousId": "old-s", "messageId": "s2"})
	r := e.post(t, "/v1/batch", basic(e.writeKey), map[string]any{"batch": []any{
		map[string]any{"type": "identify", "userId": "old-r", "messageId": long},
		map[string]any{"type": "alias", "userId": "new-r", "previousId": "old-r", "messageId": "b2"},
	}})
	if r.Status != http.StatusOK || len(r.Rejected) != 1 || r.Rejected[0].Index != 0 {
		t.Errorf("batch: %+v, want 200 with the identify refused", r)
	}
	for _, v := range []string{"old-s", "old-r"} {
		c, err := e.db.FindCustomerByIdentity(context.Background(), e.ws, c360.Identity{Type: "anonymous_id", Value: v})
		if err != nil {
			t.Errorf("previousId %s of a refused identify is not an anonymous id (%v)", v, err)
			continue
		}
		if want := e.customer(t, "user_id", "new"+v[3:]); c.ID != want.ID {
			t.Errorf("anonymous id %s is customer %d's, want new%s's %d", v, c.ID, v[3:], want.ID)
		}
	}
}

// unreadTimes returns /metrics' count of unread time fields by field.
func (e *env) unreadTimes(t *testing.T) map[string]int {
	t.Helper()
	res, err := http.Get(e.srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	metrics, _ := io.ReadAll(res.Body)
	out := map[string]int{}
	for _, line := range strings.Split(string(metrics), "\n") {
		var field string
		var n int
		if rest, ok := strings.CutPrefix(line, `c360_segment_unread_times_total{field="`); ok {
			if _, err := fmt.Sscanf(strings.Replace(rest, `"} `, " ", 1), "%s %d", &field, &n); err != nil {
				t.Fatalf("metric line %q: %v", line, err)
			}
			out[field] = n
		}
	}
	return out
}

// An answer lists at most 100 warnings and counts the others; /metrics
// counts the unread times of the calls stored, once: not again when a
// batch is retried, nor for a batch refused whole.
func TestUnreadTimeWarningsAreBoundedAndCountedOnce(t *testing.T) {
	e := newEnv(t)
	var items []any
	for i := range 150 {
		items = append(items, map[string]any{"type": "track", "userId": "b-1", "event": "E", "messageId": fmt.Sprint("bw-", i), "timestamp": "never"})
	}
	batch := map[string]any{"sentAt": "soon", "batch": items}
	for try := range 2 {
		r := e.post(t, "/v1/batch", basic(e.writeKey), batch)
		if r.Status != http.StatusOK || len(r.Warnings) != 100 || r.WarningsOmitted != 51 || r.Warnings[0].Index != nil || *r.Warnings[99].Index != 98 {
			t.Errorf("delivery %d of a batch with 151 unread times: %d, %d warnings and %d omitted, want 200, 100 (the batch's sentAt, then calls 0 to 98) and 51",
				try+1, r.Status, len(r.Warnings), r.WarningsOmitted)
		}
	}
	r := e.post(t, "/v1/batch", basic(e.writeKey), map[string]any{"sentAt": "soon", "batch": []any{
		map[string]any{"type": "track", "event": "No Ids", "timestamp": "never"}}})
	if r.Status != http.StatusBadRequest {
		t.Errorf("a batch of a call without ids: %d, want 400", r.Status)
	}
	if got, want := fmt.Sprint(e.unreadTimes(t)), fmt.Sprint(map[string]int{"sentAt": 1, "timestamp": 150}); got != want {
		t.Errorf("/metrics counts unread times %s, want %s", got, want)
	}
}
