package resolver

import (
	"context"
	"encoding/json"
	"slices"
	"strconv"

	"github.com/99designs/gqlgen/graphql"
	"github.com/vektah/gqlparser/v2/ast"

	"github.com/c360dev/c360"
)

// Prefetching makes batching deterministic. A resolver that returns a list
// of parents looks ahead at the fields the query selects on them, loads each
// child field for all parents in one statement, and primes the request's
// loaders. The child resolvers then find their values in the loaders' caches:
// the statement count depends on the query's shape, never on the page size or
// on goroutine timing, and no resolver waits for a batch window.

// selected returns the fields selected under the current field, following
// path (e.g. "edges", "node"); typ names the object type at each step.
func selected(ctx context.Context, path []string, types []string) []graphql.CollectedField {
	fc := graphql.GetFieldContext(ctx)
	if fc == nil {
		return nil
	}
	return collectPath(ctx, fc.Field.Selections, path, types)
}

// collectPath follows path from the selection set sel: types[i] is the
// object type at step i, and the last names the type whose fields are
// returned.
func collectPath(ctx context.Context, sel ast.SelectionSet, path []string, types []string) []graphql.CollectedField {
	opCtx := graphql.GetOperationContext(ctx)
	if opCtx == nil {
		return nil
	}
	for i, name := range path {
		var next ast.SelectionSet
		for _, f := range graphql.CollectFields(opCtx, sel, []string{types[i]}) {
			if f.Name == name {
				next = append(next, f.Selections...)
			}
		}
		if next == nil {
			return nil
		}
		sel = next
	}
	return graphql.CollectFields(opCtx, sel, []string{types[len(types)-1]})
}

// argsOf reads a connection field's first/after arguments as the resolver
// will see them; ok is false when they cannot be read, and then the field's
// own resolver reports the problem.
func argsOf(ctx context.Context, f graphql.CollectedField) (c360.PageArgs, bool) {
	return pageArgsOf(f.ArgumentMap(graphql.GetOperationContext(ctx).Variables))
}

// pageArgsOf reads first and after from a field's arguments, coerced (as
// CollectedField.ArgumentMap gives them); ok is false when they cannot be
// read.
func pageArgsOf(m map[string]any) (c360.PageArgs, bool) {
	var a c360.PageArgs
	switch v := m["first"].(type) {
	case int:
		a.First = v
	case int64:
		a.First = int(v)
	case json.Number:
		n, err := strconv.Atoi(v.String())
		if err != nil {
			return a, false
		}
		a.First = n
	case float64:
		a.First = int(v)
	case nil:
	default:
		return a, false
	}
	if s, ok := m["after"].(string); ok {
		a.After = s
	} else if m["after"] != nil {
		return a, false
	}
	return a, true
}

// droppedPath leads from a page of events to its events' drop records.
var droppedPath = []string{"edges", "node", "dropped"}

// selectsDropped reports whether the selection of a page of events (an
// events field's) selects its events' dropped, through any fragments:
// the page is then read with the events' drop records
// (c360.PageArgs.Dropped). The prefetch and the events resolver both ask
// it of the same field, so that they key the page alike. It walks the
// query as written, without collecting fields (it runs for every events
// field of every query): a dropped that @skip leaves out is read all the
// same, and not shown.
func selectsDropped(ctx context.Context, sel ast.SelectionSet) bool {
	return selectsPath(ctx, sel, droppedPath)
}

// eventPageArgs reads the arguments of the events field being resolved,
// with Dropped as the prefetch sets it for the same field.
func eventPageArgs(ctx context.Context, first *int, after *string) c360.PageArgs {
	a := pageArgs(first, after)
	if fc := graphql.GetFieldContext(ctx); fc != nil {
		a.Dropped = selectsDropped(ctx, fc.Field.Selections)
	}
	return a
}

func selectsPath(ctx context.Context, sel ast.SelectionSet, path []string) bool {
	for _, s := range sel {
		switch s := s.(type) {
		case *ast.Field:
			if s.Name == path[0] && (len(path) == 1 || selectsPath(ctx, s.SelectionSet, path[1:])) {
				return true
			}
		case *ast.InlineFragment:
			if selectsPath(ctx, s.SelectionSet, path) {
				return true
			}
		case *ast.FragmentSpread:
			def := s.Definition
			if def == nil {
				if oc := graphql.GetOperationContext(ctx); oc != nil && oc.Doc != nil {
					def = oc.Doc.Fragments.ForName(s.Name)
				}
			}
			if def != nil && selectsPath(ctx, def.SelectionSet, path) {
				return true
			}
		}
	}
	return false
}

// prefetchCustomers loads the selected child fields of a list of customers
// and primes the loaders: what prefetchProfiles loads, then merges and
// observations. Errors are not reported here: a child resolver whose value
// was not primed loads it itself and reports its own error.
func (r *Resolver) prefetchCustomers(ctx context.Context, ws int64, fields []graphql.CollectedField, ids []int64) {
	l := loadersFrom(ctx)
	if l == nil || len(ids) == 0 {
		return
	}
	r.prefetchProfiles(ctx, ws, fields, ids)
	var firsts []int // the observations' page sizes loaded
	for _, f := range fields {
		switch f.Name {
		case "merges":
			if m, err := r.IdentityService.MergesByCustomers(ctx, ws, ids); err == nil {
				primeAll(l.merges, fill(m, ids, []*c360.MergeRecord{}))
			}
		case "observations":
			if l.observations == nil {
				continue
			}
			// A first the store refuses is left to the resolver to report.
			a, ok := argsOf(ctx, f)
			if !ok || c360.CheckFirst(a.First) != nil || slices.Contains(firsts, a.First) {
				continue
			}
			firsts = append(firsts, a.First)
			if m, err := r.ObservationService.ObservationsByCustomers(ctx, ws, ids, r.now(), a.First); err == nil {
				for id, obs := range fill(m, ids, []*c360.Observation{}) {
					l.observations.Prime(listKey{id, a.First}, obs)
				}
			}
		}
	}
}

// prefetchProfiles loads the selected identities, consents, events and
// conversations of customers in one round trip (for a single customer,
// with the conversations' messages too) and primes the loaders, which the
// customers' child resolvers then use (Loaders.batches).
func (r *Resolver) prefetchProfiles(ctx context.Context, ws int64, fields []graphql.CollectedField, ids []int64) {
	l := loadersFrom(ctx)
	if l == nil || len(ids) == 0 {
		return
	}
	req, convSubs := profileRequest(ctx, fields, len(ids))
	if req.Identities || req.Consents || len(req.Events) > 0 || len(req.Conversations) > 0 {
		if p, err := r.CustomerService.LoadProfiles(ctx, ws, ids, req); err == nil {
			r.primeProfiles(ctx, ws, l, p, ids, req, convSubs)
		}
	}
}

// profileRequest names the parts of n customers that fields select, and
// returns the fields selected on their conversations.
func profileRequest(ctx context.Context, fields []graphql.CollectedField, n int) (c360.ProfileRequest, []graphql.CollectedField) {
	var (
		req      c360.ProfileRequest
		convSubs []graphql.CollectedField
		convs    int
	)
	for _, f := range fields {
		switch f.Name {
		case "identities":
			req.Identities = true
		case "consents":
			req.Consents = true
		case "events":
			if args, ok := argsOf(ctx, f); ok {
				args.Dropped = selectsDropped(ctx, f.Selections)
				if !slices.Contains(req.Events, args) {
					req.Events = append(req.Events, args)
				}
			}
		case "conversations":
			if args, ok := argsOf(ctx, f); ok {
				convs++
				if !slices.Contains(req.Conversations, args) {
					req.Conversations = append(req.Conversations, args)
				}
				convSubs = append(convSubs, subfields(ctx, f, "ConversationConnection", "ConversationEdge", "Conversation")...)
			}
		}
	}
	// One customer's conversations come with their messages when one
	// messages selection asks for them all.
	var msgs []graphql.CollectedField
	for _, f := range convSubs {
		if f.Name == "messages" {
			msgs = append(msgs, f)
		}
	}
	if n == 1 && convs == 1 && len(msgs) == 1 {
		if args, ok := argsOf(ctx, msgs[0]); ok {
			req.Messages = &args
		}
	}
	return req, convSubs
}

// primeProfiles primes the loaders with what LoadProfiles or FindProfile
// found for ids, and loads the conversations' messages when it did not.
func (r *Resolver) primeProfiles(ctx context.Context, ws int64, l *Loaders, p *c360.Profiles, ids []int64, req c360.ProfileRequest, convSubs []graphql.CollectedField) {
	l.markLoaded(ids, req)
	primeAll(l.identities, fill(p.Identities, ids, []*c360.IdentityRecord{}))
	primeAll(l.consents, fill(p.Consents, ids, []*c360.Consent{}))
	for args, m := range p.Events {
		primePages(l.events, m, args)
	}
	var convIDs []int64
	for args, m := range p.Conversations {
		primePages(l.conversations, m, args)
		for _, pg := range m {
			for _, c := range pg.Items {
				convIDs = append(convIDs, c.ID)
			}
		}
	}
	if req.Messages != nil {
		primePages(l.messages, p.Messages, *req.Messages)
	} else {
		r.prefetchConversations(ctx, ws, convSubs, convIDs)
	}
}

// oneCustomer resolves a root field that returns one customer: it finds
// the customer and its selected parts in one round trip (FindProfile).
// Not found is null. Its merges and observations, which that round trip
// does not cover, are fetched by their resolvers side by side.
func (r *Resolver) oneCustomer(ctx context.Context, ws int64, key c360.CustomerKey) (*c360.Customer, error) {
	l := loadersFrom(ctx)
	if l == nil {
		// Nothing to prime: the lookup alone.
		c, _, err := r.CustomerService.FindProfile(ctx, ws, key, c360.ProfileRequest{})
		return nullIfNotFound(c, err)
	}
	req, convSubs := profileRequest(ctx, selected(ctx, nil, []string{"Customer"}), 1)
	c, p, err := r.CustomerService.FindProfile(ctx, ws, key, req)
	if c, err = nullIfNotFound(c, err); c == nil || err != nil {
		return c, err
	}
	l.markPrefetched([]int64{c.ID})
	if p != nil {
		r.primeProfiles(ctx, ws, l, p, []int64{c.ID}, req, convSubs)
	}
	return c, nil
}

// ResolveInline implements graph.InlineResolver: a customer's profile part
// that a profile load primed the request's loaders with (prefetchCustomers,
// FindProfile) is resolved in the calling goroutine, since a goroutine of
// its own would wait for nothing. Anything else, a part whose load failed
// included, keeps its goroutine.
func (r *Resolver) ResolveInline(ctx context.Context, obj any, field string) bool {
	c, ok := obj.(*c360.Customer)
	if !ok || c == nil {
		return false
	}
	l := loadersFrom(ctx)
	return l != nil && l.primed(c.ID, field)
}

// prefetchField loads the field being resolved on one customer outside a
// list the way a single-customer root loads it (prefetchProfiles): its
// conversations, say, with their messages when one selection asks for them
// all, in one round trip.
func (r *Resolver) prefetchField(ctx context.Context, c *c360.Customer) {
	if fc := graphql.GetFieldContext(ctx); fc != nil {
		r.prefetchProfiles(ctx, c.WorkspaceID, []graphql.CollectedField{fc.Field}, []int64{c.ID})
	}
}

// prefetchConversations loads the selected messages of a list of conversations.
func (r *Resolver) prefetchConversations(ctx context.Context, ws int64, fields []graphql.CollectedField, ids []int64) {
	l := loadersFrom(ctx)
	if l == nil || len(ids) == 0 {
		return
	}
	for _, f := range fields {
		if f.Name != "messages" {
			continue
		}
		if args, ok := argsOf(ctx, f); ok {
			if m, err := r.ConversationService.MessagesByConversations(ctx, ws, ids, args); err == nil {
				primePages(l.messages, m, args)
			}
		}
	}
}

// subfields returns the node fields selected under a connection field f.
func subfields(ctx context.Context, f graphql.CollectedField, conn, edge, node string) []graphql.CollectedField {
	return collectPath(ctx, f.Selections, []string{"edges", "node"}, []string{conn, edge, node})
}

type primer[K comparable, V any] interface {
	Prime(K, V) bool
}

func primeAll[V any](l primer[int64, V], m map[int64]V) {
	for k, v := range m {
		l.Prime(k, v)
	}
}

func primePages[T any](l primer[pageKey, *c360.Page[T]], m map[int64]*c360.Page[T], args c360.PageArgs) {
	for id, p := range m {
		l.Prime(pageKey{id, args}, p)
	}
}

// ResolveLeavesDirectly implements graph.DirectLeaves: the server installs
// no field interceptor (server.TestNoFieldInterceptors), so plain scalar
// fields may skip gqlgen's per-field middleware.
func (r *Resolver) ResolveLeavesDirectly() bool { return true }
