package resolver

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/99designs/gqlgen/graphql"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/hub"
)

// RealtimeStore is what subscriptions read besides the hub's change feed.
type RealtimeStore interface {
	// MessageOfChange returns the message a message change names, as it is now.
	MessageOfChange(ctx context.Context, workspaceID, messageID int64) (*c360.Message, error)
	// ConversationOwner returns the customer a conversation belongs to now.
	ConversationOwner(ctx context.Context, workspaceID, conversationID int64) (int64, error)
}

// SharedSubscriptions is a gqlgen handler extension that renders each change
// of a subscription once per distinct operation and shares the bytes.
//
// gqlgen executes a subscription's selection set separately for every
// subscriber. With it, a subscription resolver does not feed gqlgen's channel
// itself: it registers a source in the operation's context, and for each
// response this extension takes the next *hub.Change from the source, then
// looks up the payload rendered for that change under the operation's
// fingerprint (workspace, role, scopes, operation name, query text and
// variables; and the key, for assistants, whose reads are audited per key). Only the first subscriber to get there puts the value on the
// channel and lets gqlgen execute and marshal; the others, the same change
// in hand, wait for it and reuse its bytes. The rendering is detached from
// the first subscriber's cancellation, so its leaving never fails the others.
type SharedSubscriptions struct {
	// KeyActive, when set, is asked before each change is delivered whether
	// the subscriber's key still stands (c360.APIKeyService.KeyActive): a
	// key revoked mid-stream ends its subscriptions, over SSE too.
	KeyActive func(context.Context, *c360.Principal) error

	renders atomic.Int64
}

var (
	_ graphql.HandlerExtension     = (*SharedSubscriptions)(nil)
	_ graphql.OperationInterceptor = (*SharedSubscriptions)(nil)
	_ graphql.ResponseInterceptor  = (*SharedSubscriptions)(nil)
)

// renderTimeout bounds one rendering of a change (its field resolvers' reads).
const renderTimeout = 10 * time.Second

// ExtensionName implements graphql.HandlerExtension.
func (*SharedSubscriptions) ExtensionName() string { return "SharedSubscriptions" }

// Validate implements graphql.HandlerExtension.
func (*SharedSubscriptions) Validate(graphql.ExecutableSchema) error { return nil }

// Renders is how many times a subscription payload was executed and
// marshaled: once per change and distinct operation, not per subscriber.
func (x *SharedSubscriptions) Renders() int64 { return x.renders.Load() }

// InterceptOperation gives each subscription operation a holder for its
// source and its fingerprint.
func (x *SharedSubscriptions) InterceptOperation(ctx context.Context, next graphql.OperationHandler) graphql.ResponseHandler {
	oc := graphql.GetOperationContext(ctx)
	if oc == nil || oc.Operation == nil || oc.Operation.Operation != ast.Subscription {
		return next(ctx)
	}
	// A subscription's operation lives as long as it does: what the
	// extensions recorded of its validation (the complexity limit's
	// figures) is of no use to anyone once it runs.
	oc.Stats = graphql.Stats{OperationStart: oc.Stats.OperationStart, Read: oc.Stats.Read,
		Parsing: oc.Stats.Parsing, Validation: oc.Stats.Validation}
	h := &holder{key: fingerprint(ctx, oc), principal: c360.PrincipalFromContext(ctx)}
	if h.principal != nil && h.principal.Role == c360.RoleAssistant {
		h.audited = subscriptionField(oc.Operation)
	}
	return next(context.WithValue(ctx, holderKey{}, h))
}

// subscriptionField names a subscription operation's field
// (customerChanged, conversationMessages...), for the audit log.
func subscriptionField(op *ast.OperationDefinition) string {
	for _, sel := range op.SelectionSet {
		if f, ok := sel.(*ast.Field); ok {
			return f.Name
		}
	}
	return "subscription"
}

// InterceptResponse serves each response of a subscription from its source,
// rendering each change once per fingerprint.
func (x *SharedSubscriptions) InterceptResponse(ctx context.Context, next graphql.ResponseHandler) *graphql.Response {
	h, _ := ctx.Value(holderKey{}).(*holder)
	if h == nil || h.src == nil {
		return next(ctx)
	}
	if h.ended {
		return nil
	}
	// A subscription's goroutine spends its idle life here, and its stack
	// is much of what an idle subscriber costs. Executing the operation
	// grew it to 8 KiB or more; the runtime halves a stack at GC when less
	// than a quarter of it is in use, counting 800 bytes of guard. Waiting
	// in the stream's Wait, a few small frames below gqlgen's, keeps that
	// true down to 4 KiB, where waiting inside next (closures, Next, its
	// queue) would not. Waiting shallow also keeps down the average stack
	// in use, from which the runtime sizes new goroutines' stacks (see
	// server's wsConn.NextReader): the rest is in respond, whose frame is
	// not on the stack while this one waits, and Wait blocks on one
	// channel, not in a select.
	h.src.st.Wait(ctx)
	return x.respond(ctx, h, next)
}

// respond serves the next response of a subscription from its source, once
// Wait returned.
func (x *SharedSubscriptions) respond(ctx context.Context, h *holder, next graphql.ResponseHandler) *graphql.Response {
	c, put, err := h.src.next(ctx)
	if err == nil && x.KeyActive != nil && h.principal != nil {
		if e := x.KeyActive(ctx, h.principal); c360.ErrorCode(e) == c360.EUNAUTHENTICATED {
			err = e
		}
	}
	if err != nil {
		h.ended = true
		h.src.end()
		return endResponse(ctx, err)
	}
	if h.audited != "" {
		// An assistant reads through a subscription what it reads through
		// a query, but a change or a message is not a Customer, whose
		// fields @hasRole notes: each change delivered is a read of its
		// customer, noted here for every subscriber, whoever renders it.
		if col := collectorFrom(ctx); col != nil {
			col.add(c360.AuditCustomerRead, c.CustomerID, h.audited)
		}
	}
	v, err := c.Shared(ctx, h.key, func() (any, bool) {
		put()
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), renderTimeout)
		defer cancel()
		// A loader caches what it loaded for as long as it lives, and the
		// request's loaders live as long as the subscription (over SSE,
		// one HTTP request carries every change): each change is rendered
		// with loaders of its own, so it shows the customer as it is now.
		if l := loadersFrom(rctx); l != nil && l.r != nil {
			rctx = WithLoaders(rctx, l.renew())
		}
		// What the rendering reads (@pii, @hasRole) is noted apart, and
		// below in the collector of every subscriber the payload goes to,
		// under its own key: a payload shared by several keys is a read by
		// each of them, not only by the one that rendered it.
		var reads *collector
		if col := collectorFrom(rctx); col != nil {
			reads = &collector{p: col.p, op: col.op}
			rctx = context.WithValue(rctx, collectorKey{}, reads)
		}
		resp := next(rctx)
		if resp == nil {
			return nil, false
		}
		x.renders.Add(1)
		return &rendered{data: bytes.Clone(resp.Data), errs: resp.Errors, reads: reads.snapshot()}, true
	})
	if err != nil {
		return nil // ctx ended while another subscriber rendered
	}
	r, ok := v.(*rendered)
	if !ok {
		// The rendering gave no response: nor does it for the subscribers
		// that waited on it (hub.Change.Shared renders again only when
		// the subscriber rendering left).
		return nil
	}
	if col := collectorFrom(ctx); col != nil {
		for _, rd := range r.reads {
			col.add(rd.action, rd.customer, rd.fields...)
		}
	}
	return &graphql.Response{Data: r.data, Errors: r.errs}
}

// rendered is one change rendered for one fingerprint.
type rendered struct {
	data json.RawMessage
	errs gqlerror.List
	// reads are what rendering it read, for each subscriber's audit.
	reads []noted
}

type holderKey struct{}

// holder joins a subscription operation's resolver (which sets src) and its
// responses (which read it). Both run on the operation's goroutine.
type holder struct {
	key       string
	principal *c360.Principal // the operation's, read once
	// audited names the subscription's field when the caller is an
	// assistant, whose reads are audited; "" for other callers.
	audited string
	src     *source
	ended   bool
}

// source is a subscription's changes, filtered and converted: next returns
// the next change and put, which puts its value on gqlgen's channel; end
// closes that channel.
type source struct {
	st   hub.Stream
	next func(ctx context.Context) (c *hub.Change, put func(), err error)
	end  func()
}

// fingerprint identifies what a payload depends on besides the change.
func fingerprint(ctx context.Context, oc *graphql.OperationContext) string {
	hash := sha256.New()
	if p := c360.PrincipalFromContext(ctx); p != nil {
		hash.Write([]byte(strconv.FormatInt(p.WorkspaceID, 10) + "\x00" + string(p.Role) + "\x00" + strings.Join(p.Scopes, ",") + "\x00"))
		if p.Role == c360.RoleAssistant {
			// An assistant's reads of a customer are audited per key
			// (directives.go): its renders are not shared across keys.
			hash.Write([]byte(strconv.FormatInt(p.KeyID, 10) + "\x00"))
		}
	}
	hash.Write([]byte(oc.OperationName + "\x00" + oc.RawQuery + "\x00"))
	vars, _ := json.Marshal(oc.Variables) // map keys are sorted
	hash.Write(vars)
	return string(hash.Sum(nil))
}

type resumeKey struct{}

// WithResumeHandler returns ctx carrying f, which a subscription calls
// instead of ending with err when its client is to subscribe again with
// after set to the last cursor it received: the hub dropped it for falling
// behind (err is RATE_LIMITED), or the database did not answer its reads,
// retried for a while (UNAVAILABLE), when it started or later. The
// websocket transport closes the connection with its documented code, 1013
// (try again later), which graphql-ws clients retry; an error message
// followed by complete would end the subscription for good. Without f
// (SSE), the subscription ends with err.
func WithResumeHandler(ctx context.Context, f func(err error)) context.Context {
	return context.WithValue(ctx, resumeKey{}, f)
}

// resume hands err to the context's resume handler, if any, and reports
// whether there was one.
func resume(ctx context.Context, err error) bool {
	f, ok := ctx.Value(resumeKey{}).(func(error))
	if ok {
		f(err)
	}
	return ok
}

// openFailed returns err, the failure of a subscription resolver to open
// its stream, after handing an UNAVAILABLE one to the resume handler: its
// client is to try again, as when a stream fails later (endResponse). When
// ctx ended (the client completed the subscription while its reads were
// retried, or the connection went), the client wants nothing more: the
// resume handler would close a websocket whose other subscriptions are
// well.
func openFailed(ctx context.Context, err error) error {
	if ctx.Err() == nil && c360.ErrorCode(err) == c360.EUNAVAILABLE {
		resume(ctx, err)
	}
	return err
}

// endResponse is the last response of a stream that ended with err: nothing
// for a normal end, an error the client can act on otherwise.
func endResponse(ctx context.Context, err error) *graphql.Response {
	switch {
	case ctx.Err() != nil:
		// The client ended it (complete, or the connection went): it
		// wants nothing more. Checked first: the stream closing with ctx
		// reports ErrClosed, which must not read as a shutdown.
		return nil
	case errors.Is(err, hub.ErrSlow):
		err = c360.Errorf(c360.ERATELIMITED, "subscriber too slow: subscribe again with after set to the last cursor received")
		if resume(ctx, err) {
			return nil
		}
	case errors.Is(err, hub.ErrClosed):
		err = c360.Errorf(c360.EUNAVAILABLE, "the server is shutting down: subscribe again with after set to the last cursor received")
	case c360.ErrorCode(err) == c360.EUNAVAILABLE:
		// The database did not answer the stream's reads, retried for a
		// while (hub.Options.ReadRetry): a normal end would leave the
		// client without changes it never hears of.
		err = c360.Errorf(c360.EUNAVAILABLE, "the database did not answer: subscribe again with after set to the last cursor received")
		if resume(ctx, err) {
			return nil
		}
	}
	graphql.AddError(ctx, err)
	return &graphql.Response{Errors: graphql.GetErrors(ctx)}
}

// serve connects a hub stream to gqlgen: it registers the source with the
// operation, and SharedSubscriptions drives it on gqlgen's goroutine. The
// stream closes when ctx ends.
//
// convert turns a change into the subscription's value; it reports false
// for a change the subscription does not deliver.
func serve[T any](ctx context.Context, st hub.Stream, convert func(context.Context, *hub.Change) (T, bool, error)) (<-chan T, error) {
	h, _ := ctx.Value(holderKey{}).(*holder)
	if h == nil || h.src != nil {
		// Every subscription is delivered by SharedSubscriptions (the
		// server installs it); without it nothing would read the stream.
		st.Close()
		return nil, c360.Errorf(c360.EINTERNAL, "subscriptions are served without resolver.SharedSubscriptions")
	}
	ch := make(chan T, 1)
	// Closing the stream also ends a Wait, which does not watch ctx.
	context.AfterFunc(ctx, st.Close)
	// The field's arguments were read: gqlgen keeps its context as long as
	// the subscription lives, and nothing reads them again.
	if fc := graphql.GetFieldContext(ctx); fc != nil {
		fc.Args = nil
	}
	h.src = &source{
		st: st,
		next: func(ctx context.Context) (*hub.Change, func(), error) {
			for {
				c, err := st.Next(ctx)
				if err != nil {
					return nil, nil, err
				}
				v, ok, err := convert(ctx, c)
				if err != nil || ok {
					return c, func() { ch <- v }, err
				}
			}
		},
		end: func() { close(ch) },
	}
	return ch, nil
}
