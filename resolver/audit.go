package resolver

import (
	"cmp"
	"context"
	"log/slog"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/99designs/gqlgen/graphql"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/graph/model"
)

// collector gathers, for one response, which customers' data was read:
// per action and customer, the fields. Fields resolve concurrently, so it
// is locked. It is flushed as one batch when the response is complete.
type collector struct {
	mu    sync.Mutex
	p     *c360.Principal
	op    string
	reads map[readKey]map[string]struct{}
	// misses counts the lookups by identity and searches that found nobody
	// (maskedLookup): they are recorded as one customer.read of no
	// customer, whose detail holds the count, not one entry each.
	misses int
}

type readKey struct {
	action   string
	customer int64
}

type collectorKey struct{}

func collectorFrom(ctx context.Context) *collector {
	c, _ := ctx.Value(collectorKey{}).(*collector)
	return c
}

// add notes that fields of the customer were read under action.
func (c *collector) add(action string, customer int64, fields ...string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	k := readKey{action, customer}
	set := c.reads[k]
	if set == nil {
		if c.reads == nil {
			c.reads = map[readKey]map[string]struct{}{}
		}
		set = map[string]struct{}{}
		c.reads[k] = set
	}
	for _, f := range fields {
		set[f] = struct{}{}
	}
}

// noted is one action's fields of one customer, as a collector holds them.
type noted struct {
	action   string
	customer int64
	fields   []string
}

// snapshot returns what c noted, without draining it (nil for a nil c).
// Misses are not carried: a subscription's rendering looks nobody up.
func (c *collector) snapshot() []noted {
	if c == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]noted, 0, len(c.reads))
	for k, set := range c.reads {
		n := noted{action: k.action, customer: k.customer, fields: make([]string, 0, len(set))}
		for f := range set {
			n.fields = append(n.fields, f)
		}
		out = append(out, n)
	}
	return out
}

// miss notes a lookup through field that found nobody.
func (c *collector) miss(field string) {
	c.add(c360.AuditCustomerRead, 0, field)
	c.mu.Lock()
	c.misses++
	c.mu.Unlock()
}

// drain returns the audit entries gathered so far, one per action and
// customer, and starts over.
func (c *collector) drain(now time.Time) []*c360.AuditEntry {
	c.mu.Lock()
	reads, misses := c.reads, c.misses
	c.reads, c.misses = nil, 0
	c.mu.Unlock()
	if len(reads) == 0 {
		return nil
	}
	out := make([]*c360.AuditEntry, 0, len(reads))
	for k, set := range reads {
		e := c360.NewAuditEntry(c.p, c.p.WorkspaceID, k.action, now)
		e.CustomerID = k.customer
		e.Fields = make([]string, 0, len(set))
		for f := range set {
			e.Fields = append(e.Fields, f)
		}
		sort.Strings(e.Fields)
		if c.op != "" {
			e.Detail = map[string]any{"operation": c.op}
		}
		if k.action == c360.AuditCustomerRead && k.customer == 0 && misses > 0 {
			if e.Detail == nil {
				e.Detail = map[string]any{}
			}
			e.Detail["notFound"] = misses
		}
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b *c360.AuditEntry) int {
		if c := cmp.Compare(a.CustomerID, b.CustomerID); c != 0 {
			return c
		}
		return cmp.Compare(a.Action, b.Action)
	})
	return out
}

// AuditReads is a gqlgen operation middleware (install it with
// handler.Server.AroundOperations). It gives each operation a collector that
// @hasRole and @pii fill, and after each response (once for a query or
// mutation, once per event for a subscription) hands what was read to the
// audit log's background writer in one batch. Without r.Audit it does
// nothing.
func (r *Resolver) AuditReads(ctx context.Context, next graphql.OperationHandler) graphql.ResponseHandler {
	p := c360.PrincipalFromContext(ctx)
	if r.Audit == nil || p == nil {
		return next(ctx)
	}
	col := &collector{p: p}
	var kind ast.Operation // query, mutation or subscription
	if oc := graphql.GetOperationContext(ctx); oc != nil {
		// The name the request gave, else the one its document gives the
		// operation it runs (a client need not send operationName).
		col.op = oc.OperationName
		if oc.Operation != nil {
			kind = oc.Operation.Operation
			if col.op == "" {
				col.op = oc.Operation.Name
			}
		}
	}
	h := next(context.WithValue(ctx, collectorKey{}, col))
	if !r.ReadAudit.durable(p) {
		return func(ctx context.Context) *graphql.Response {
			resp := h(ctx)
			if entries := col.drain(r.now()); len(entries) > 0 {
				r.Audit.EnqueueAudit(entries)
			}
			return resp
		}
	}
	var failed bool
	return func(ctx context.Context) *graphql.Response {
		if failed {
			return nil // a subscription whose read could not be recorded ended
		}
		resp := h(ctx)
		entries := col.drain(r.now())
		if len(entries) == 0 {
			return resp
		}
		if resp == nil {
			// Nothing is served (a subscription ending): what rendering
			// read is recorded as before, in the background.
			r.Audit.EnqueueAudit(entries)
			return resp
		}
		// The answer waits for its reads to be durable. The caller going
		// away does not cut the write short: the entries are whole or
		// absent.
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), durableReadTimeout)
		err := r.Audit.RecordAudit(wctx, entries)
		cancel()
		if err == nil {
			return resp
		}
		if kind == ast.Mutation {
			// The change is made: its answer is not refused (a client
			// told UNAVAILABLE would make it again), as a change whose
			// own audit entry fails is answered. Its reads go to the
			// background writer, which retries them.
			slog.Default().Error("audit: record a mutation's reads before the answer; queued instead",
				"workspace", p.WorkspaceID, "key", p.KeyPrefix, "entries", len(entries), "error", err)
			r.Audit.EnqueueAudit(entries)
			return resp
		}
		slog.Default().Error("audit: record reads before the answer; the answer was refused",
			"workspace", p.WorkspaceID, "key", p.KeyPrefix, "entries", len(entries), "error", err)
		if kind == ast.Subscription {
			// The change was not delivered: the client resubscribes from
			// its last cursor and gets it again (or, without a resume
			// handler, sees this error and the end of the stream).
			failed = true
			if resume(ctx, ErrReadNotRecorded) {
				return nil
			}
			return refusal(ErrReadNotRecorded)
		}
		return refusal(errReadNotRecorded)
	}
}

// ReadAudit says whose reads are recorded in the audit log before their
// answer leaves (C360_AUDIT_READS); the others' are written in the
// background (AuditWriter). The zero value is ReadAuditAssistant.
type ReadAudit int

const (
	// ReadAuditAssistant records an assistant key's reads before its
	// answer, and refuses the answer (UNAVAILABLE) when they cannot be
	// recorded: what an AI assistant read is in the log, or it read
	// nothing. Other keys' reads are written in the background.
	ReadAuditAssistant ReadAudit = iota
	// ReadAuditAll does so for every key whose reads are audited: a
	// console's pii.read of each customer it opens too.
	ReadAuditAll
	// ReadAuditAsync writes every read in the background: best-effort,
	// as docs/security.md describes.
	ReadAuditAsync
)

// ParseReadAudit reads a C360_AUDIT_READS value: assistant, all or async.
func ParseReadAudit(s string) (ReadAudit, bool) {
	switch s {
	case "assistant":
		return ReadAuditAssistant, true
	case "all":
		return ReadAuditAll, true
	case "async":
		return ReadAuditAsync, true
	}
	return 0, false
}

func (m ReadAudit) durable(p *c360.Principal) bool {
	switch m {
	case ReadAuditAll:
		return true
	case ReadAuditAssistant:
		return p.Role == c360.RoleAssistant
	}
	return false
}

// durableReadTimeout bounds the write of a response's reads: past it the
// answer is refused rather than held.
const durableReadTimeout = 5 * time.Second

var (
	errReadNotRecorded = c360.Errorf(c360.EUNAVAILABLE,
		"the read could not be recorded in the audit log, so nothing was served; retry")
	// ErrReadNotRecorded ends an assistant's subscription whose read of a
	// change could not be recorded: the change was not delivered.
	ErrReadNotRecorded = c360.Errorf(c360.EUNAVAILABLE,
		"the read could not be recorded in the audit log, so the change was not delivered: subscribe again with after set to the last cursor received (customerChanges takes none: read the customers anew)")
)

// refusal is a response carrying only err, a domain error: none of the
// data the operation resolved leaves. (An operation middleware's response
// handler runs outside gqlgen's response context, so err is presented
// here, as the server's presenter presents a domain error.)
func refusal(err error) *graphql.Response {
	return &graphql.Response{Errors: gqlerror.List{{Message: c360.ErrorMessage(err),
		Extensions: map[string]any{"code": c360.ErrorCode(err)}}}}
}

func (r *Resolver) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

// audit records a successful mutation in the audit log, with its actor,
// before the answer leaves: a change is never acknowledged unaudited unless
// the audit write itself fails, which is logged. A mutation that changed
// nothing (revoking a revoked key) says so (changedNothing), and is not
// recorded.
func (r *Resolver) audit(ctx context.Context, _ any, next graphql.Resolver, action string) (any, error) {
	var unchanged bool
	res, err := next(context.WithValue(ctx, unchangedKey{}, &unchanged))
	if err != nil || r.Audit == nil || unchanged {
		return res, err
	}
	p := c360.PrincipalFromContext(ctx)
	if p == nil {
		return res, nil
	}
	e := c360.NewAuditEntry(p, p.WorkspaceID, action, r.now())
	var args map[string]any
	if fc := graphql.GetFieldContext(ctx); fc != nil {
		args = fc.Args
	}
	e.CustomerID, e.Fields, e.Detail = auditDetail(args, res)
	// The change is made: record it even if the caller has gone away.
	if err := r.Audit.RecordAudit(context.WithoutCancel(ctx), []*c360.AuditEntry{e}); err != nil {
		slog.Default().Error("audit: record action", "action", action, "workspace", p.WorkspaceID, "error", err)
	}
	return res, nil
}

type unchangedKey struct{}

// changedNothing tells the audit directive of the mutation being resolved
// that it changed nothing: there is nothing to record.
func changedNothing(ctx context.Context) {
	if p, ok := ctx.Value(unchangedKey{}).(*bool); ok {
		*p = true
	}
}

// auditDetail describes a change for the audit log from the mutation's
// arguments and result: the customer it concerns, the fields it changed,
// and details. Message bodies and secrets are never recorded.
func auditDetail(args map[string]any, res any) (int64, []string, map[string]any) {
	d := map[string]any{}
	var (
		customer int64
		fields   []string
	)
	switch v := res.(type) {
	case *c360.Customer: // mergeCustomers
		customer = v.ID
		d["survivorId"], d["mergedId"] = args["survivorId"], args["mergedId"]
		d["force"], d["reason"] = args["force"], args["reason"]
	case *c360.SplitResult:
		customer = v.Original.ID
		d["splitId"] = v.Split.ID
		d["identity"] = map[string]any{"type": args["type"], "value": args["value"]}
		d["reason"] = args["reason"]
		fields = []string{"identities"}
	case *c360.Message:
		customer = v.CustomerID
		d["channel"], d["messageId"], d["providerId"] = v.Channel, v.ID, v.ProviderID
		d["bodyLength"] = len(v.Body)
	case *model.CreatedAPIKey:
		d["prefix"], d["role"], d["scopes"] = v.Key.Prefix, v.Key.Role, v.Key.Scopes
	case *c360.APIKey: // revokeApiKey: the detail `c360 apikey revoke` records
		d["prefix"], d["role"], d["scopes"] = v.Prefix, v.Role, v.Scopes
	case *c360.DeadLetter:
		// The replayed event's customer is not on the dead letter; its
		// event id leads to it.
		d["deadLetterId"], d["replayedEventId"] = v.ID, v.ReplayedEventID
	case *c360.CustomerErasure:
		// Counts and ids only: what was erased is gone, and the reason
		// holds no email or phone (checkErasureReason).
		customer = v.CustomerID
		d["erasedId"], d["reason"] = args["id"], args["reason"]
		d["mergedCustomerIds"] = v.MergedCustomerIDs
		if len(v.FormerCustomerIDs) > 0 {
			d["formerCustomerIds"] = v.FormerCustomerIDs
		}
		d["counts"] = map[string]int{"identities": v.Identities, "eventsScrubbed": v.EventsScrubbed,
			"messages": v.Messages, "conversations": v.Conversations, "consents": v.Consents,
			"observations": v.Observations, "changes": v.Changes, "mergeRecords": v.MergeRecords,
			"separations": v.Separations, "deadLetters": v.DeadLetters, "auditEntriesScrubbed": v.AuditEntriesScrubbed}
		fields = []string{"customer"}
	case *c360.IdentityRules:
		d["rules"] = v.Detail()
	}
	for k, v := range d {
		if p, ok := v.(*string); ok {
			if p == nil {
				delete(d, k)
			} else {
				d[k] = *p
			}
		}
		if p, ok := v.(*bool); ok {
			if p == nil {
				delete(d, k)
			} else {
				d[k] = *p
			}
		}
	}
	return customer, fields, d
}
