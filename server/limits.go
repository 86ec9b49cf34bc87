package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/99designs/gqlgen/graphql"
	"github.com/99designs/gqlgen/graphql/errcode"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"
	"github.com/vektah/gqlparser/v2/validator/core"
	"github.com/vektah/gqlparser/v2/validator/rules"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/graph"
)

// Limits bound what one request may cost. Zero values take the defaults
// (DefaultLimits); docs/security.md lists them with their variables.
type Limits struct {
	// MaxTokens bounds the lexer tokens of a query document
	// (C360_GRAPHQL_MAX_TOKENS): parsing stops there (CVE-2023-49559).
	MaxTokens int
	// MaxFields bounds the field selections written in a document
	// (C360_GRAPHQL_MAX_FIELDS): validation compares fields pairwise, so a
	// document of thousands of fields costs seconds of CPU to validate.
	MaxFields int
	// MaxDepth bounds field nesting (C360_GRAPHQL_MAX_DEPTH). Introspection
	// fields count as one level: their nesting is bounded by the schema.
	MaxDepth int
	// MaxAliases bounds aliased fields, fragments counted each time they
	// are spread (C360_GRAPHQL_MAX_ALIASES).
	MaxAliases int
	// MaxComplexity bounds the operation's cost (C360_GRAPHQL_MAX_COMPLEXITY):
	// one per field, a connection's selection multiplied by its first.
	MaxComplexity int
	// KeyRate limits requests per API key (C360_RATE_KEY_RPS, C360_RATE_KEY_BURST).
	KeyRate Rate
	// WebhookRate limits webhook requests per workspace once they are
	// verified (LimitWebhook), and Segment API requests per write key once
	// it is checked (C360_RATE_WEBHOOK_RPS, C360_RATE_WEBHOOK_BURST).
	WebhookRate Rate
	// WebhookUnverifiedRate limits, per client address, the webhook
	// requests that are not verified (an unknown workspace, a missing or
	// wrong signature), the Segment API requests without a valid write
	// key, and the API keys that fail to authenticate, so that forgeries
	// cost bounded work without spending any workspace's or key's tokens
	// (C360_RATE_WEBHOOK_UNVERIFIED_RPS, C360_RATE_WEBHOOK_UNVERIFIED_BURST).
	WebhookUnverifiedRate Rate
	// TrustedProxies are the proxies (load balancers) whose
	// X-Forwarded-For names the client of the address limit
	// (C360_TRUSTED_PROXIES; clientaddr.go). None by default: the client
	// is the connection's peer.
	TrustedProxies []netip.Prefix
	// LookupRate limits, per API key, the lookups by identity and searches
	// (customerByIdentity, customers(query:), customerContext(identity:))
	// made by keys that read personal data masked, one token per lookup,
	// an alias counting as one: each answers whether a guessed address
	// belongs to a customer, so unbounded they would give a masked phone
	// number away (C360_RATE_LOOKUP_RPS, C360_RATE_LOOKUP_BURST).
	LookupRate Rate
}

// DefaultLimits are generous on purpose: a console's list of customers
// with their events and conversations with messages, every page at the
// schema's default of 20, costs 35,821 (the most a query under 50,000 can
// read is about 16,000 rows: docs/security.md), and the rates sit above
// what one 2-core server serves, so the limits stop abuse, never a
// benchmark.
var DefaultLimits = Limits{
	MaxTokens:     10_000,
	MaxFields:     500,
	MaxDepth:      12,
	MaxAliases:    30,
	MaxComplexity: 50_000,
	KeyRate:       Rate{RPS: 10_000, Burst: 20_000},
	WebhookRate:   Rate{RPS: 10_000, Burst: 20_000},
	// As high as the others: behind a proxy that hides clients' addresses,
	// every client shares one address, genuine providers included.
	WebhookUnverifiedRate: Rate{RPS: 10_000, Burst: 20_000},
	// Low on purpose, unlike the others: an assistant looks a customer up
	// once per conversation, while guessing the 6 hidden digits of a
	// masked number takes up to a million lookups (docs/security.md).
	LookupRate: Rate{RPS: 5, Burst: 60},
}

// withDefaults fills zero fields from DefaultLimits.
func (l Limits) withDefaults() Limits {
	d := DefaultLimits
	if l.MaxTokens == 0 {
		l.MaxTokens = d.MaxTokens
	}
	if l.MaxFields == 0 {
		l.MaxFields = d.MaxFields
	}
	if l.MaxDepth == 0 {
		l.MaxDepth = d.MaxDepth
	}
	if l.MaxAliases == 0 {
		l.MaxAliases = d.MaxAliases
	}
	if l.MaxComplexity == 0 {
		l.MaxComplexity = d.MaxComplexity
	}
	if l.KeyRate == (Rate{}) {
		l.KeyRate = d.KeyRate
	}
	if l.WebhookRate == (Rate{}) {
		l.WebhookRate = d.WebhookRate
	}
	if l.WebhookUnverifiedRate == (Rate{}) {
		l.WebhookUnverifiedRate = d.WebhookUnverifiedRate
	}
	if l.LookupRate == (Rate{}) {
		l.LookupRate = d.LookupRate
	}
	return l
}

// LimitsFromEnv reads the limits from the environment; unset variables
// keep the defaults. A rate of -1 turns that limit off.
func LimitsFromEnv(getenv func(string) string) (Limits, error) {
	l := DefaultLimits
	ints := []struct {
		name string
		p    *int
	}{
		{"C360_GRAPHQL_MAX_TOKENS", &l.MaxTokens},
		{"C360_GRAPHQL_MAX_FIELDS", &l.MaxFields},
		{"C360_GRAPHQL_MAX_DEPTH", &l.MaxDepth},
		{"C360_GRAPHQL_MAX_ALIASES", &l.MaxAliases},
		{"C360_GRAPHQL_MAX_COMPLEXITY", &l.MaxComplexity},
		{"C360_RATE_KEY_BURST", &l.KeyRate.Burst},
		{"C360_RATE_WEBHOOK_BURST", &l.WebhookRate.Burst},
		{"C360_RATE_WEBHOOK_UNVERIFIED_BURST", &l.WebhookUnverifiedRate.Burst},
		{"C360_RATE_LOOKUP_BURST", &l.LookupRate.Burst},
	}
	for _, v := range ints {
		s := getenv(v.name)
		if s == "" {
			continue
		}
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			return l, fmt.Errorf("%s: want a positive integer, got %q", v.name, s)
		}
		*v.p = n
	}
	for _, v := range []struct {
		name string
		p    *float64
	}{
		{"C360_RATE_KEY_RPS", &l.KeyRate.RPS},
		{"C360_RATE_WEBHOOK_RPS", &l.WebhookRate.RPS},
		{"C360_RATE_WEBHOOK_UNVERIFIED_RPS", &l.WebhookUnverifiedRate.RPS},
		{"C360_RATE_LOOKUP_RPS", &l.LookupRate.RPS},
	} {
		s := getenv(v.name)
		if s == "" {
			continue
		}
		f, err := strconv.ParseFloat(s, 64)
		if err != nil || math.IsNaN(f) || math.IsInf(f, 0) || (f <= 0 && f != -1) {
			return l, fmt.Errorf("%s: want a positive number (or -1 for no limit), got %q", v.name, s)
		}
		*v.p = f
	}
	if s := getenv("C360_TRUSTED_PROXIES"); s != "" {
		p, err := ParseTrustedProxies(s)
		if err != nil {
			return l, fmt.Errorf("C360_TRUSTED_PROXIES: %w", err)
		}
		l.TrustedProxies = p
	}
	return l, nil
}

// Codes of refusals by the limits; the error presenter reports them as
// BAD_USER_INPUT with the code as extensions.reason.
const (
	reasonDepth      = "DEPTH_LIMIT_EXCEEDED"
	reasonAliases    = "ALIAS_LIMIT_EXCEEDED"
	reasonComplexity = "COMPLEXITY_LIMIT_EXCEEDED" // gqlgen's extension.ComplexityLimit
	// A subscription of more than one root field. gqlparser's rule counts
	// fields by name, so two aliases of one field pass it; gqlgen then
	// refuses them with a plain error, which would be reported as INTERNAL.
	reasonSingleField = "SUBSCRIPTION_NOT_SINGLE_FIELD"
)

func init() {
	// Refused before execution, like a validation error: 422 under
	// application/json, 400 under application/graphql-response+json.
	for _, c := range []string{reasonDepth, reasonAliases, reasonComplexity, reasonSingleField} {
		errcode.RegisterErrorType(c, errcode.KindProtocol)
	}
}

// jsonCost is the price of a JSON object field (traits, properties, a
// dead letter's event, a diff, an audit detail): up to 32 KB each (an
// event's limit), where another field is a few bytes. Priced as one, a
// query under the limit could read 10,000 event properties, some 320 MB
// buffered in one answer; at 32 (about one per KB) it reads at most 1,500,
// while a console's list of 20 customers with 20 events each, properties
// included, still fits.
const jsonCost = 32

// complexity prices connections by their page size: a connection's
// selection costs once per item it may return, and so does a plain list's
// that takes first (Customer.observations); and JSON objects by their
// size (jsonCost).
func complexity() graph.ComplexityRoot {
	var c graph.ComplexityRoot
	object := func(int) int { return jsonCost }
	c.Customer.Traits, c.CustomerContext.Traits, c.Event.PropertiesJSON = object, object, object
	// A customer's trait sources are its traits again, one by one.
	c.Customer.TraitSourceList = func(child int) int { return jsonCost + child }
	c.DeadLetter.Event, c.CustomerChange.Diff, c.AuditEntry.Detail = object, object, object
	c.Query.Customers = func(child int, _ *string, first *int, _ *string) int { return page(child, first) }
	c.Query.AuditLog = func(child int, first *int, _ *string, _ *int64, _ *string) int { return page(child, first) }
	c.Query.DeadLetters = func(child int, first *int, _ *string, _ *bool) int { return page(child, first) }
	c.Customer.Events = func(child int, first *int, _ *string) int { return page(child, first) }
	c.Customer.Conversations = func(child int, first *int, _ *string) int { return page(child, first) }
	c.Conversation.Messages = func(child int, first *int, _ *string) int { return page(child, first) }
	// A plain list bounded by first: each item is priced as a connection's
	// (its edge and node, then its fields), so that a row costs at least 3
	// here too and the rows a query may read stay bounded as
	// docs/security.md says.
	c.Customer.Observations = func(child int, first *int) int { return page(satAdd(child, 2), first) }
	return c
}

// page is the cost of a connection returning up to first items (20 when
// not given, at most the store's cap of 100) of cost child each.
func page(child int, first *int) int {
	n := 20
	if first != nil {
		n = min(max(*first, 1), 100)
	}
	return satAdd(1, satMul(n, child))
}

const saturated = math.MaxInt32

func satMul(a, b int) int {
	if a != 0 && b > saturated/a {
		return saturated
	}
	return a * b
}

func satAdd(a, b int) int { return min(a+b, saturated) }

// queryLimits refuses operations nested deeper or with more aliases than
// allowed. It runs after validation, so fragments are known not to cycle;
// each fragment is measured once and reused, so a document that spreads
// fragments exponentially costs linear time to measure.
type queryLimits struct {
	maxDepth, maxAliases int
}

var _ interface {
	graphql.HandlerExtension
	graphql.OperationContextMutator
} = queryLimits{}

// ExtensionName implements graphql.HandlerExtension.
func (queryLimits) ExtensionName() string { return "QueryLimits" }

// Validate implements graphql.HandlerExtension.
func (queryLimits) Validate(graphql.ExecutableSchema) error { return nil }

// MutateOperationContext implements graphql.OperationContextMutator.
func (q queryLimits) MutateOperationContext(_ context.Context, oc *graphql.OperationContext) *gqlerror.Error {
	if oc.Operation == nil {
		return nil
	}
	if oc.Operation.Operation == ast.Subscription {
		if n := len(graphql.CollectFields(oc, oc.Operation.SelectionSet, []string{"Subscription"})); n != 1 {
			err := gqlerror.Errorf("a subscription selects exactly one field; this one selects %d", n)
			errcode.Set(err, reasonSingleField)
			return err
		}
	}
	m := measurer{doc: oc.Doc, memo: map[string]shape{}}
	s := m.selections(oc.Operation.SelectionSet)
	if s.depth > q.maxDepth {
		err := gqlerror.Errorf("operation is nested %d levels deep, over the limit of %d", s.depth, q.maxDepth)
		errcode.Set(err, reasonDepth)
		return err
	}
	if s.aliases > q.maxAliases {
		err := gqlerror.Errorf("operation has %d aliased fields, over the limit of %d", s.aliases, q.maxAliases)
		errcode.Set(err, reasonAliases)
		return err
	}
	return nil
}

// shape is what the limits measure of a selection set.
type shape struct{ depth, aliases int }

type measurer struct {
	doc  *ast.QueryDocument
	memo map[string]shape
}

func (m *measurer) selections(set ast.SelectionSet) shape {
	var s shape
	for _, sel := range set {
		var child shape
		switch sel := sel.(type) {
		case *ast.Field:
			if sel.Alias != "" && sel.Alias != sel.Name {
				s.aliases = satAdd(s.aliases, 1)
			}
			if sel.Name == "__schema" || sel.Name == "__type" {
				child = shape{depth: 1}
			} else {
				child = m.selections(sel.SelectionSet)
				child.depth++
			}
		case *ast.InlineFragment:
			child = m.selections(sel.SelectionSet)
		case *ast.FragmentSpread:
			child = m.fragment(sel.Name)
		}
		s.depth = max(s.depth, child.depth)
		s.aliases = satAdd(s.aliases, child.aliases)
	}
	return s
}

func (m *measurer) fragment(name string) shape {
	if s, ok := m.memo[name]; ok {
		return s
	}
	m.memo[name] = shape{} // a cycle (refused by validation) ends here
	var s shape
	if f := m.doc.Fragments.ForName(name); f != nil {
		s = m.selections(f.SelectionSet)
	}
	m.memo[name] = s
	return s
}

// securityHeaders are set on every response: JSON, HTML (GraphiQL) and
// text alike.
func securityHeaders(h http.Header) {
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Content-Security-Policy", "frame-ancestors 'none'")
	// Responses carry customer data and keys: never stored by a browser or
	// a shared cache.
	h.Set("Cache-Control", "no-store")
}

// securityMetrics counts refusals by the rate limits.
type securityMetrics struct {
	rateLimited *prometheus.CounterVec
}

func newSecurityMetrics(reg *prometheus.Registry) *securityMetrics {
	m := &securityMetrics{rateLimited: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "c360_rate_limited_total", Help: "Requests refused with 429 (lookups: RATE_LIMITED), by limit (key, webhook, webhook_unverified, lookup).",
	}, []string{"limit"})}
	reg.MustRegister(m.rateLimited)
	return m
}

// hideTypes answers __type with null when introspection is off: every type
// is unknown to a production client, as no field suggestion names one
// either. (__schema is refused with FORBIDDEN by the error presenter.)
func hideTypes(ctx context.Context, next graphql.RootResolver) graphql.Marshaler {
	if fc := graphql.GetRootFieldContext(ctx); fc != nil && fc.Field.Name == "__type" {
		return graphql.Null
	}
	return next(ctx)
}

// checkBatch refuses a JSON array body: c360 runs one operation per
// request (batching is bounded to one), so a client cannot multiply its
// rate and complexity limits by sending many operations at once.
func checkBatch(r *http.Request) error {
	body, ok := postBody(r)
	if !ok {
		return nil
	}
	if t := bytes.TrimLeft(body, " \t\r\n"); len(t) > 0 && t[0] == '[' {
		return c360.Errorf(c360.EINVALID, "batched operations are not supported: send one operation per request")
	}
	return nil
}

// paramKeys are the keys of a GraphQL request's body (graphql.RawParams).
var paramKeys = [...]string{"query", "operationName", "variables", "extensions"}

// decodeParams decodes a POST body into the GraphQL request it holds, or
// refuses it with a message of its own: gqlgen's transport names its Go
// types and repeats the whole body, which may carry a secret (a mutation's
// Twilio token, say) into the answer and whatever logs it. The body is read
// by strictObject's rules.
func decodeParams(body []byte) (*graphql.RawParams, error) {
	return decodeParamsOf(body, "body")
}

// decodeParamsOf decodes data, a request's body or a websocket subscribe's
// payload (noun names it in refusals), into a GraphQL request.
func decodeParamsOf(data []byte, noun string) (*graphql.RawParams, error) {
	p := new(graphql.RawParams)
	err := strictObject(data, objectRules{noun: noun, keys: paramKeys[:],
		shape: `{"query": ..., "variables": {...}, "operationName": ...}`}, func(i int) (any, string) {
		switch i {
		case 0:
			return &p.Query, "a string"
		case 1:
			return &p.OperationName, "a string"
		case 2:
			return &p.Variables, "an object"
		}
		return &p.Extensions, "an object"
	})
	if err != nil {
		return nil, err
	}
	return p, nil
}

// objectRules names what strictObject reads: noun in its refusals ("body",
// "payload", "message"), the keys it decodes, and shape, the object it
// wants, for a refusal of something else.
type objectRules struct {
	noun  string
	keys  []string
	shape string
}

// strictObject reads data as one JSON object and nothing after it but white
// space: a second value ({"query":"mutation A"}{"query":"mutation B"}) or
// trailing bytes are refused, not ignored. Each of the rules' keys is
// decoded into dst(i), which also says what its value must be ("a
// string"); one given twice, whatever its values, and a key that is one of
// them in another case ("Query"), are refused: encoding/json would take the
// last copy, or the other case as the key, where a proxy or firewall that
// reads the first copy, or the exact key, sees another request. Other keys
// are ignored, repeated or not: nothing reads them, and keeping them to
// compare would cost an object of many keys time in their square (a
// megabyte of 95,000 keys took 14 s). The object is read in one pass, each
// value decoded once where it goes.
func strictObject(data []byte, rules objectRules, dst func(i int) (any, string)) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil {
		return rules.jsonError(err, true, false)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return rules.notAnObject()
	}
	seen := make([]bool, len(rules.keys))
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return rules.jsonError(err, true, true)
		}
		key, _ := tok.(string) // a key is always a string
		i := slices.Index(rules.keys, key)
		if i < 0 {
			for _, k := range rules.keys {
				if strings.EqualFold(key, k) {
					return c360.Errorf(c360.EINVALID, "the %s's key %q is not %q: keys are case-sensitive", rules.noun, key, k)
				}
			}
			var skip json.RawMessage
			if err := dec.Decode(&skip); err != nil {
				return rules.jsonError(err, false, true)
			}
			continue
		}
		if seen[i] {
			return c360.Errorf(c360.EINVALID, "the %s gives the key %q more than once", rules.noun, key)
		}
		seen[i] = true
		v, want := dst(i)
		if err := dec.Decode(v); err != nil {
			var te *json.UnmarshalTypeError
			if errors.As(err, &te) {
				return c360.Errorf(c360.EINVALID, "%s must be %s", key, want)
			}
			return rules.jsonError(err, false, true)
		}
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return rules.jsonError(err, true, true)
	}
	end := dec.InputOffset()
	if rest := bytes.TrimLeft(data[end:], " \t\r\n"); len(rest) > 0 {
		at := int64(len(data)-len(rest)) + 1
		if rest[0] == '{' || rest[0] == '[' {
			return c360.Errorf(c360.EINVALID, "the %s holds more than one JSON value (another starts at byte %d): send one operation per request", rules.noun, at)
		}
		return c360.Errorf(c360.EINVALID, "the %s has data after its JSON object (at byte %d)", rules.noun, at)
	}
	return nil
}

// jsonError is strictObject's refusal of data that is not JSON. A decoder's
// Token reports a syntax error at the offending byte's offset, its Decode
// just after it: the refusal names the byte counting from 1, either way.
// started reports whether the object had begun, when an end of input means
// data cut short rather than none.
func (rules objectRules) jsonError(err error, token, started bool) error {
	var se *json.SyntaxError
	switch {
	case errors.As(err, &se):
		at := se.Offset
		if token {
			at++
		}
		return c360.Errorf(c360.EINVALID, "the %s is not valid JSON: %s (at byte %d)", rules.noun, se.Error(), at)
	case errors.Is(err, io.EOF) && !started:
		return c360.Errorf(c360.EINVALID, "the %s is empty: send a JSON object %s", rules.noun, rules.shape)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return c360.Errorf(c360.EINVALID, "the %s is not valid JSON: it ends inside a value", rules.noun)
	}
	return rules.notAnObject()
}

func (rules objectRules) notAnObject() error {
	return c360.Errorf(c360.EINVALID, "the %s must be a JSON object: %s", rules.noun, rules.shape)
}

// postBody returns a POST's body, read whole by readBody, for the checks
// that look at it before the transport decodes it.
func postBody(r *http.Request) ([]byte, bool) {
	if r.Method != http.MethodPost || r.Body == nil {
		return nil, false
	}
	b, ok := r.Body.(interface{ Peek() []byte })
	if !ok {
		return nil, false
	}
	return b.Peek(), true
}

// bufferedBody is a request body read whole (readBody), which checks can
// look at before the transport decodes it.
type bufferedBody struct {
	*bytes.Reader
	b []byte
}

// Peek returns the whole body without consuming it.
func (b *bufferedBody) Peek() []byte { return b.b }

// Close implements io.Closer.
func (*bufferedBody) Close() error { return nil }

// overlapRule is the name of gqlparser's OverlappingFieldsCanBeMerged rule.
const overlapRule = "OverlappingFieldsCanBeMerged"

// validationRules returns gqlparser's rules with the one rule whose cost
// grows with the square of a document's fields guarded by a field count:
// a document with more than maxFields field selections is refused before
// that rule runs. Its verdict is cached with the parsed document.
func validationRules(maxFields int) func() *rules.Rules {
	return func() *rules.Rules {
		r := rules.NewDefaultRules()
		r.ReplaceRule(overlapRule, func(observers *core.Events, addError core.AddErrFunc) {
			done := false
			observers.OnOperation(func(w *core.Walker, op *ast.OperationDefinition) {
				if done {
					return
				}
				done = true
				if n := countFields(w.Document); n > maxFields {
					addError(core.Message("the document has %d field selections, over the limit of %d", n, maxFields), core.At(op.Position))
					return
				}
				own := &core.Events{}
				rules.OverlappingFieldsCanBeMergedRule.RuleFunc(own, addError)
				core.Walk(w.Schema, w.Document, own)
			})
		})
		return r
	}
}

// countFields counts the fields written in a document, fragments once.
func countFields(doc *ast.QueryDocument) int {
	n := 0
	var count func(ast.SelectionSet)
	count = func(set ast.SelectionSet) {
		for _, sel := range set {
			switch sel := sel.(type) {
			case *ast.Field:
				n++
				count(sel.SelectionSet)
			case *ast.InlineFragment:
				count(sel.SelectionSet)
			}
		}
	}
	for _, op := range doc.Operations {
		count(op.SelectionSet)
	}
	for _, f := range doc.Fragments {
		count(f.SelectionSet)
	}
	return n
}
