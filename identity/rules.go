package identity

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// Rules are a workspace's identity resolution rules. In the zero value
// every limit is 0, so Plan would attach and merge nothing; start from
// DefaultRules and check edits with Validate.
type Rules struct {
	// Limits caps how many distinct values of a type one customer may
	// hold. Types missing from the map use DefaultLimit.
	Limits map[string]int `json:"limits,omitempty"`
	// DefaultLimit is the cap for types not in Limits.
	DefaultLimit int `json:"defaultLimit"`
	// Priority optionally lists types from highest to lowest priority.
	// Listed types outrank every unlisted type; unlisted types keep their
	// built-in Priority order below them.
	Priority []string `json:"priority,omitempty"`
	// Blocked lists workspace-specific placeholder values (compared
	// case-insensitively after trimming) on top of the built-in ones,
	// e.g. a test address that QA uses on every device.
	Blocked []string `json:"blocked,omitempty"`
}

// DefaultRules returns the rules of Segment Unify's default configuration:
// one user_id per customer, since two user_ids are two people, and five
// of everything else, since people do have several addresses, phones and
// devices.
func DefaultRules() Rules {
	return Rules{
		Limits:       map[string]int{TypeUserID: 1},
		DefaultLimit: 5,
	}
}

// Limit returns the maximum number of distinct values of type t that one
// customer may hold.
func (r Rules) Limit(t string) int {
	if v, ok := r.Limits[t]; ok {
		return v
	}
	return r.DefaultLimit
}

// rankListed is added to explicitly listed types so they outrank every
// built-in Priority value.
const rankListed = 1000

// Rank returns the priority of type t under these rules; higher wins. With
// an explicit Priority list, earlier entries rank higher and all listed
// types outrank unlisted ones, which fall back to Priority(t).
func (r Rules) Rank(t string) int {
	if i := slices.Index(r.Priority, t); i >= 0 {
		return rankListed + len(r.Priority) - i
	}
	return Priority(t)
}

// IsBlocked reports whether value is on the workspace's extra block list,
// ignoring case and surrounding whitespace. The built-in list is applied
// by Normalizer.Normalize, which does not know the workspace's rules.
func (r Rules) IsBlocked(value string) bool {
	v := strings.TrimSpace(value)
	for _, b := range r.Blocked {
		if strings.EqualFold(v, strings.TrimSpace(b)) {
			return true
		}
	}
	return false
}

// WithNormalizedBlocked returns r with, next to each blocked entry that n
// reads as a phone number or an email address, its normalized form:
// identities carry normalized values, so a number blocked as written
// ("(415) 555-0100") would otherwise never match the "+14155550100" it
// arrives as, nor "mailto:qa@example.com" the "qa@example.com" that
// ingest, lookup and split strip it to. The entry itself stays, for values
// of other types written the same way: an entry may block any type.
//
// It is applied where the rules are loaded for use, not where an admin
// stores them, so that rules read back are as written and rules stored
// before a normalization changed are read with the current one.
func (r Rules) WithNormalizedBlocked(n Normalizer) Rules {
	out := slices.Clone(r.Blocked)
	for _, b := range r.Blocked {
		for _, t := range []string{TypePhone, TypeEmail} {
			id, err := n.Normalize(Identity{Type: t, Value: b})
			if err == nil && !strings.EqualFold(id.Value, strings.TrimSpace(b)) && !slices.Contains(out, id.Value) {
				out = append(out, id.Value)
			}
		}
	}
	r.Blocked = out
	return r
}

// Validate reports every problem with the rules at once, so that a
// workspace admin can fix a configuration in one round trip: limits below
// 1, malformed type names and duplicate priority entries.
func (r Rules) Validate() error {
	var errs []error
	if r.DefaultLimit < 1 {
		errs = append(errs, fmt.Errorf("identity rules: default limit is %d, must be at least 1", r.DefaultLimit))
	}
	for _, t := range slices.Sorted(maps.Keys(r.Limits)) {
		if !ValidType(t) {
			errs = append(errs, fmt.Errorf("identity rules: limit for %q: invalid identity type", t))
		}
		if l := r.Limits[t]; l < 1 {
			errs = append(errs, fmt.Errorf("identity rules: limit for %q is %d, must be at least 1", t, l))
		}
	}
	seen := make(map[string]bool, len(r.Priority))
	for i, t := range r.Priority {
		if !ValidType(t) {
			errs = append(errs, fmt.Errorf("identity rules: priority entry %d %q: invalid identity type", i, t))
		}
		if seen[t] {
			errs = append(errs, fmt.Errorf("identity rules: priority entry %d %q: listed more than once", i, t))
		}
		seen[t] = true
	}
	return errors.Join(errs...)
}

// Decision is the outcome of Rules.Plan: which customer the event resolves
// to, which customers are merged into it and what happens to each of the
// event's identities.
type Decision struct {
	// Survivor is the customer the event resolves to; 0 means a new
	// customer must be created.
	Survivor int64
	// Merge lists the customers to merge into Survivor, ascending. It never
	// contains Survivor.
	Merge []int64
	// Attach lists the event identities, sorted by (Type, Value), that have
	// no owner yet and must be attached to Survivor.
	Attach []Identity
	// Dropped lists the event identities that were ignored, sorted by
	// (Type, Value), with the reason.
	Dropped []Dropped
}

// Dropped is an event identity that Plan ignored, with a human-readable
// reason starting with "limit:" or "blocked:" so that callers can group
// them in metrics.
type Dropped struct {
	Identity Identity
	Reason   string
}

// Plan decides how an event's identities resolve, following Segment
// Unify's identity resolution made deterministic.
//
// ids are the event's normalized identities (order and duplicates do not
// matter); owners maps each already known identity to the customer that
// owns it (0 or absent means unknown); existing holds every identity of
// each customer in owners.
//
// Identities are considered from highest to lowest Rank (ties in (Type,
// Value) order). Each is accepted unless accepting it — together with all
// identities of its owner, when that owner is not yet part of the result —
// would give the resolved customer more distinct values of some type than
// the type's limit allows; otherwise it is dropped. Because the
// higher-priority identifier is placed first, it decides which profile the
// event belongs to, and two customers with different user_ids are never
// merged. A customer that already exceeds a limit (for example after the
// limit was lowered) is not refused for it, but may not grow further.
//
// The survivor is the oldest (smallest id) accepted owner, the other
// accepted owners are merged into it, and accepted identities without an
// owner are attached.
//
// If no identity survives (all were blocked), the decision is empty;
// callers should then not create a customer.
//
// When one customer owns every identity that is not blocked, it is the
// survivor and nothing is added to it, so no limit can be broken: existing
// need not hold that customer's identities (Rules.SettledBy tells such
// events apart before existing is read).
func (r Rules) Plan(ids []Identity, owners map[Identity]int64, existing map[int64][]Identity) Decision {
	return r.PlanApart(ids, owners, existing, nil)
}

// PlanApart is Plan for a workspace where some customers were split apart:
// apart(a, b) reports that customers a and b must not be merged
// automatically, so an identity that would merge them is dropped instead.
func (r Rules) PlanApart(ids []Identity, owners map[Identity]int64, existing map[int64][]Identity, apart func(a, b int64) bool) Decision {
	d, candidates := r.screen(ids)
	if owner := r.SettledBy(candidates, owners); owner != 0 {
		d.Survivor = owner
		return d
	}
	return r.resolve(d, candidates, owners, existing, apart)
}

// screen drops the blocked identities of ids and returns the others, sorted
// and without duplicates.
func (r Rules) screen(ids []Identity) (Decision, []Identity) {
	var d Decision
	candidates := make([]Identity, 0, len(ids))
	for _, id := range Sort(ids) {
		if r.IsBlocked(id.Value) {
			d.Dropped = append(d.Dropped, Dropped{Identity: id, Reason: "blocked: value is on the workspace's block list"})
			continue
		}
		candidates = append(candidates, id)
	}
	return d, candidates
}

// resolve is Plan's resolution of the candidates screen left, identity by
// identity.
func (r Rules) resolve(d Decision, candidates []Identity, owners map[Identity]int64, existing map[int64][]Identity, apart func(a, b int64) bool) Decision {
	// Stable, so equal ranks keep the (Type, Value) order from Sort.
	slices.SortStableFunc(candidates, func(a, b Identity) int {
		return cmp.Compare(r.Rank(b.Type), r.Rank(a.Type))
	})

	p := planner{rules: r, values: map[string]map[string]bool{}, held: map[string]int{}, chosen: map[int64]bool{}, apart: apart}
	var accepted []Identity
	for _, id := range candidates {
		owner := owners[id]
		if reason := p.try(id, owner, existing[owner]); reason != "" {
			d.Dropped = append(d.Dropped, Dropped{Identity: id, Reason: reason})
			continue
		}
		accepted = append(accepted, id)
	}

	chosen := slices.Sorted(maps.Keys(p.chosen))
	if len(chosen) > 0 {
		d.Survivor = chosen[0]
		if len(chosen) > 1 {
			d.Merge = chosen[1:]
		}
	}
	// Identities already held by a chosen customer reach the survivor
	// through the merge; attaching them again would duplicate them.
	held := map[Identity]bool{}
	for _, c := range chosen {
		for _, id := range existing[c] {
			held[id] = true
		}
	}
	for _, id := range accepted {
		if owners[id] == 0 && !held[id] {
			d.Attach = append(d.Attach, id)
		}
	}
	slices.SortFunc(d.Attach, compareIdentity)
	slices.SortFunc(d.Dropped, func(a, b Dropped) int { return compareIdentity(a.Identity, b.Identity) })
	return d
}

// SettledBy returns the customer that owns every identity of ids that is
// not blocked, or 0 when one of them has no owner, two have different
// owners, or every one is blocked. An event with such identities (settled)
// resolves to that customer, without its identities being read, whatever
// the limits: it creates no customer and attaches nothing.
func (r Rules) SettledBy(ids []Identity, owners map[Identity]int64) int64 {
	var owner int64
	for _, id := range ids {
		if r.IsBlocked(id.Value) {
			continue
		}
		c := owners[id]
		if c == 0 || (owner != 0 && c != owner) {
			return 0
		}
		owner = c
	}
	return owner
}

// planner accumulates the identities of the customer being resolved.
type planner struct {
	rules Rules
	// values holds, per type, the distinct values the resolved customer
	// would have so far.
	values map[string]map[string]bool
	// held is, per type, the largest count any single chosen customer
	// already has; such counts are tolerated even above the limit.
	held   map[string]int
	chosen map[int64]bool
	// apart reports customers split apart, which are never merged again
	// automatically; nil when there are none.
	apart func(a, b int64) bool
}

// try adds id, and all identities of its owner (theirs) when that owner is
// not chosen yet, to the plan if no limit is broken; otherwise it returns
// why not.
func (p *planner) try(id Identity, owner int64, theirs []Identity) string {
	merging := owner != 0 && !p.chosen[owner]
	if !merging {
		theirs = nil
	}
	if merging && p.apart != nil {
		for _, c := range slices.Sorted(maps.Keys(p.chosen)) {
			if p.apart(c, owner) {
				return fmt.Sprintf("split: customers %d and %d were split apart and are not merged automatically", c, owner)
			}
		}
	}
	added := map[string]map[string]bool{}
	add := func(x Identity) {
		if p.values[x.Type][x.Value] {
			return
		}
		if added[x.Type] == nil {
			added[x.Type] = map[string]bool{}
		}
		added[x.Type][x.Value] = true
	}
	ownerCount := map[string]int{}
	seen := map[Identity]bool{}
	for _, x := range theirs {
		if !seen[x] {
			seen[x] = true
			ownerCount[x.Type]++
		}
		add(x)
	}
	add(id)

	for _, t := range slices.Sorted(maps.Keys(added)) {
		limit := p.rules.Limit(t)
		allowed := max(limit, p.held[t], ownerCount[t])
		if len(p.values[t])+len(added[t]) <= allowed {
			continue
		}
		if !merging {
			if len(p.values[t]) == 0 {
				return fmt.Sprintf("limit: %s allows %d per customer", t, limit)
			}
			return fmt.Sprintf("limit: %s allows %d per customer and customer already has %s %s",
				t, limit, t, quoteValues(p.values[t]))
		}
		all := maps.Clone(p.values[t])
		if all == nil {
			all = map[string]bool{}
		}
		maps.Copy(all, added[t])
		return fmt.Sprintf("limit: %s allows %d per customer; merging customer %d would combine %s %s",
			t, limit, owner, t, quoteValues(all))
	}

	for t, vs := range added {
		if p.values[t] == nil {
			p.values[t] = map[string]bool{}
		}
		maps.Copy(p.values[t], vs)
	}
	for t, c := range ownerCount {
		p.held[t] = max(p.held[t], c)
	}
	if merging {
		p.chosen[owner] = true
	}
	return ""
}

// quoteValues formats a set of values as a sorted, quoted list, capped so
// that a customer with many identities cannot produce huge messages.
func quoteValues(set map[string]bool) string {
	const show = 5
	vs := slices.Sorted(maps.Keys(set))
	var b strings.Builder
	for i, v := range vs {
		if i == show {
			fmt.Fprintf(&b, " and %d more", len(vs)-show)
			break
		}
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%q", v)
	}
	return b.String()
}
