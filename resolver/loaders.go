package resolver

import (
	"context"
	"net/http"
	"sync"
	"time"

	"github.com/99designs/gqlgen/graphql"
	"github.com/vikstrous/dataloadgen"

	"github.com/c360dev/c360"
)

// loaderWait is how long a loader collects keys before one fetch. gqlgen
// resolves list elements concurrently, so siblings register well within it.
const loaderWait = 200 * time.Microsecond

// listKey identifies the first First items of one parent's plain list
// (Customer.observations).
type listKey struct {
	ID    int64
	First int
}

// pageKey identifies one connection page of one parent.
type pageKey struct {
	ID int64
	c360.PageArgs
}

// Loaders batch the per-customer reads of one request into one statement per
// field, so a page of customers costs a fixed number of statements.
type Loaders struct {
	identities    *dataloadgen.Loader[int64, []*c360.IdentityRecord]
	merges        *dataloadgen.Loader[int64, []*c360.MergeRecord]
	consents      *dataloadgen.Loader[int64, []*c360.Consent]
	events        *dataloadgen.Loader[pageKey, *c360.Page[*c360.Event]]
	conversations *dataloadgen.Loader[pageKey, *c360.Page[*c360.Conversation]]
	messages      *dataloadgen.Loader[pageKey, *c360.Page[*c360.Message]]
	// observations is nil when the resolver has no ObservationService.
	observations *dataloadgen.Loader[listKey, []*c360.Observation]

	mu         sync.Mutex
	prefetched map[int64]bool   // customers whose selected fields a parent loaded
	loaded     map[partKey]bool // the parts of customers a profile load primed

	// r and ws made these loaders; renew makes new ones from them.
	r  *Resolver
	ws int64
}

// renew makes empty loaders for the same workspace: a subscription renders
// each change with loaders of its own (SharedSubscriptions).
func (l *Loaders) renew() *Loaders { return l.r.NewLoaders(l.ws) }

// markPrefetched records that the selected child fields of these customers
// were loaded (or tried) and primed.
func (l *Loaders) markPrefetched(ids []int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.prefetched == nil {
		l.prefetched = make(map[int64]bool, len(ids))
	}
	for _, id := range ids {
		l.prefetched[id] = true
	}
}

// batches reports whether a customer's child field goes through the
// loaders: under a list element, where its siblings batch with it, or where
// a parent prefetched the customer's fields and primed them. Elsewhere the
// field is fetched at once instead of waiting out a batch window.
func (l *Loaders) batches(ctx context.Context, customer int64) bool {
	if inList(ctx) {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.prefetched[customer]
}

// markLoaded records the parts of these customers that a profile load
// (LoadProfiles, FindProfile) primed the loaders with.
func (l *Loaders) markLoaded(ids []int64, req c360.ProfileRequest) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.loaded == nil {
		l.loaded = make(map[partKey]bool)
	}
	var fields []string
	for field, ok := range map[string]bool{"identities": req.Identities, "consents": req.Consents,
		"events": len(req.Events) > 0, "conversations": len(req.Conversations) > 0} {
		if ok {
			fields = append(fields, field)
		}
	}
	for _, id := range ids {
		for _, field := range fields {
			l.loaded[partKey{id, field}] = true
		}
	}
}

// primed reports whether a customer's child field finds its value in the
// loaders' caches: a part a profile load primed for that customer. A part
// whose load failed or was refused is not primed; its resolver loads it
// and reports why.
func (l *Loaders) primed(customer int64, field string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.loaded[partKey{customer, field}]
}

// partKey names one part of one customer's profile.
type partKey struct {
	customer int64
	field    string
}

type loadersKey struct{}

// NewLoaders returns loaders for one request of workspace ws.
func (r *Resolver) NewLoaders(ws int64) *Loaders {
	opt := dataloadgen.WithWait(loaderWait)
	l := &Loaders{
		identities: dataloadgen.NewMappedLoader(func(ctx context.Context, ids []int64) (map[int64][]*c360.IdentityRecord, error) {
			m, err := r.CustomerService.IdentitiesByCustomers(ctx, ws, ids)
			return fill(m, ids, []*c360.IdentityRecord{}), err
		}, opt),
		merges: dataloadgen.NewMappedLoader(func(ctx context.Context, ids []int64) (map[int64][]*c360.MergeRecord, error) {
			m, err := r.IdentityService.MergesByCustomers(ctx, ws, ids)
			return fill(m, ids, []*c360.MergeRecord{}), err
		}, opt),
		consents: dataloadgen.NewMappedLoader(func(ctx context.Context, ids []int64) (map[int64][]*c360.Consent, error) {
			m, err := r.CustomerService.ConsentsByCustomers(ctx, ws, ids)
			return fill(m, ids, []*c360.Consent{}), err
		}, opt),
		events:        pageLoader(ws, r.EventService.EventsByCustomers),
		conversations: pageLoader(ws, r.ConversationService.ConversationsByCustomers),
		messages:      pageLoader(ws, r.ConversationService.MessagesByConversations),
	}
	l.r, l.ws = r, ws
	if r.ObservationService != nil {
		l.observations = listLoader(ws, func(ctx context.Context, ws int64, ids []int64, first int) (map[int64][]*c360.Observation, error) {
			return r.ObservationService.ObservationsByCustomers(ctx, ws, ids, r.now(), first)
		})
	}
	return l
}

// fill gives every requested key a value, empty where the store found none.
func fill[V any](m map[int64]V, ids []int64, empty V) map[int64]V {
	if m == nil {
		return nil
	}
	for _, id := range ids {
		if _, ok := m[id]; !ok {
			m[id] = empty
		}
	}
	return m
}

// listLoader batches plain-list requests; keys asking for the same first
// share one statement. Every key gets a list, empty where the store found
// none.
func listLoader[T any](ws int64, fetch func(context.Context, int64, []int64, int) (map[int64][]T, error)) *dataloadgen.Loader[listKey, []T] {
	return dataloadgen.NewMappedLoader(func(ctx context.Context, keys []listKey) (map[listKey][]T, error) {
		groups := map[int][]int64{}
		for _, k := range keys {
			groups[k.First] = append(groups[k.First], k.ID)
		}
		out := make(map[listKey][]T, len(keys))
		for first, ids := range groups {
			m, err := fetch(ctx, ws, ids, first)
			if err != nil {
				return nil, err
			}
			for id, items := range fill(m, ids, []T{}) {
				out[listKey{id, first}] = items
			}
		}
		return out, nil
	}, dataloadgen.WithWait(loaderWait))
}

// pageLoader batches page requests; keys asking for the same page arguments
// share one statement.
func pageLoader[T any](ws int64, fetch func(context.Context, int64, []int64, c360.PageArgs) (map[int64]*c360.Page[T], error)) *dataloadgen.Loader[pageKey, *c360.Page[T]] {
	return dataloadgen.NewMappedLoader(func(ctx context.Context, keys []pageKey) (map[pageKey]*c360.Page[T], error) {
		groups := map[c360.PageArgs][]int64{}
		for _, k := range keys {
			groups[k.PageArgs] = append(groups[k.PageArgs], k.ID)
		}
		out := make(map[pageKey]*c360.Page[T], len(keys))
		for args, ids := range groups {
			m, err := fetch(ctx, ws, ids, args)
			if err != nil {
				return nil, err
			}
			for id, p := range m {
				out[pageKey{id, args}] = p
			}
		}
		return out, nil
	}, dataloadgen.WithWait(loaderWait))
}

// WithLoaders returns ctx carrying l.
func WithLoaders(ctx context.Context, l *Loaders) context.Context {
	return context.WithValue(ctx, loadersKey{}, l)
}

// Middleware attaches fresh loaders to each request that carries a principal.
func (r *Resolver) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if p := c360.PrincipalFromContext(req.Context()); p != nil {
			req = req.WithContext(WithLoaders(req.Context(), r.NewLoaders(p.WorkspaceID)))
		}
		next.ServeHTTP(w, req)
	})
}

func loadersFrom(ctx context.Context) *Loaders {
	l, _ := ctx.Value(loadersKey{}).(*Loaders)
	return l
}

// inList reports whether the field being resolved sits under a list element.
// A field outside any list has no siblings to batch with, so it is fetched at
// once instead of waiting for the loader's batch window.
func inList(ctx context.Context) bool {
	for fc := graphql.GetFieldContext(ctx); fc != nil; fc = fc.Parent {
		if fc.Index != nil {
			return true
		}
	}
	return false
}
