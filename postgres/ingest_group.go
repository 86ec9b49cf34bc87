package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/identity"
)

// The group path applies many events in a fixed number of set-based
// statements, in three round trips: one SELECT finds events stored before,
// one statement takes every identity lock and one reads every owner (the
// first round trip); one locks every customer and loads what the group
// touches (the second); and one pipelined batch writes events (each once,
// with its customer), customers, identities, conversations, messages,
// consents and change rows (the third). Its cost per event falls as the
// group grows, which is what lets concurrent webhooks share a transaction.
//
// It handles the common case: each event resolves to at most one existing
// customer. A group with a merge, a message status callback or an outbound
// message is applied by the per-event path instead (errSlowPath), which
// has the full rules; both paths produce the same rows.

// errSlowPath reports that a group needs the per-event path.
var errSlowPath = errors.New("group needs the per-event path")

// errClaimRace reports that a concurrent transaction stored one of the
// group's events between the duplicate check and the insert: the group is
// retried, and the check then finds it.
var errClaimRace = errors.New("an event of the group was stored concurrently")

// lastSeenGranularity bounds how stale an identity's last_seen may be
// before an event refreshes it; refreshing on every event would rewrite
// the row each time a chatty customer writes.
const lastSeenGranularity = time.Minute

// groupEvent is one event of a group and what became of it.
type groupEvent struct {
	p       *preparedEvent
	res     c360.IngestResult
	dupOf   int // index of the group event this one repeats, or -1
	claimed bool
}

// fastEligible reports whether the group path can apply the event.
func fastEligible(p *preparedEvent) bool {
	ev := p.ev
	if ev.Type == c360.EventMessageStatus {
		return false
	}
	if ev.Message != nil && (ev.Type != c360.EventMessage || ev.Message.Direction != c360.DirectionInbound) {
		return false
	}
	return true
}

// ingestGroup applies events with the group path, or returns errSlowPath
// before writing anything (the caller then rolls back and uses the per-event
// path), or errClaimRace (the caller retries).
func (db *DB) ingestGroup(ctx context.Context, tx pgx.Tx, ws int64, rules identity.Rules, prepared []*preparedEvent) ([]c360.IngestResult, []int64, error) {
	for _, p := range prepared {
		if !fastEligible(p) {
			return nil, nil, errSlowPath
		}
	}
	now := db.Now()
	evs := make([]*groupEvent, len(prepared))
	for i, p := range prepared {
		evs[i] = &groupEvent{p: p, dupOf: -1, res: c360.IngestResult{Dropped: slices.Clone(p.dropped)}}
	}
	st, err := findDuplicatesAndOwners(ctx, tx, ws, evs)
	if err != nil {
		return nil, nil, err
	}
	var live []*groupEvent
	for _, e := range evs {
		if e.claimed {
			live = append(live, e)
		}
	}
	var changed []int64
	if len(live) > 0 {
		if changed, err = db.applyGroup(ctx, tx, ws, rules, live, st, now); err != nil {
			return nil, nil, err
		}
	}
	results := make([]c360.IngestResult, len(evs))
	for i, e := range evs {
		if e.dupOf >= 0 {
			orig := evs[e.dupOf]
			e.res = c360.IngestResult{EventID: orig.res.EventID, CustomerID: orig.res.CustomerID, Duplicate: true}
		}
		results[i] = e.res
	}
	return results, changed, nil
}

// findDuplicatesAndOwners makes the group's first round trip. It marks
// the events stored before (they get the stored id and customer) and those
// repeated within the group (they point at their first copy); the others
// are new, and the flush inserts them, each once, with its customer. A
// plain INSERT, not ON CONFLICT: a concurrent transaction that stores the
// same event first makes it fail (errClaimRace) instead of applying it
// twice. In the same round trip it takes the advisory lock of every
// identity the group names, in key order, and then reads their owners:
// the group's state. Identities of events that turn out to be stored
// before are locked and read too, which costs a retried event little and
// saves every group a round trip.
func findDuplicatesAndOwners(ctx context.Context, tx pgx.Tx, ws int64, evs []*groupEvent) (*groupState, error) {
	b, first := findBatch(ws, evs)
	for _, e := range evs {
		if e.dupOf >= 0 {
			if err := checkRepeat(e.p, evs[e.dupOf].p.identities); err != nil {
				return nil, err
			}
		}
	}
	br := tx.SendBatch(ctx, b)
	defer br.Close()

	var k dedupeKey
	var id, cust int64
	var stored []identity.Identity
	rows, _ := br.Query() // its error is the rows'
	if _, err := pgx.ForEachRow(rows, []any{&k.source, &k.dedupe, &id, &cust, &stored}, func() error {
		e := evs[first[k]]
		if err := checkRepeat(e.p, stored); err != nil {
			return err
		}
		e.claimed = false
		e.res = c360.IngestResult{EventID: id, CustomerID: cust, Duplicate: true}
		return nil
	}); err != nil {
		var reused *c360.KeyReusedError
		if errors.As(err, &reused) {
			return nil, err
		}
		return nil, interpretError(fmt.Errorf("find duplicate events: %w", err))
	}
	if _, err := br.Exec(); err != nil {
		return nil, interpretError(fmt.Errorf("lock identities: %w", err))
	}
	st := &groupState{owners: map[identity.Identity]int64{}, lastSeen: map[identity.Identity]time.Time{},
		existing: map[int64][]identity.Identity{}, cust: map[int64]*customerRow{}, convs: map[convKey]int64{}}
	var owned identity.Identity
	var owner int64
	var seen time.Time
	rows, _ = br.Query()
	if _, err := pgx.ForEachRow(rows, []any{&owned.Type, &owned.Value, &owner, &seen}, func() error {
		st.owners[owned], st.lastSeen[owned] = owner, seen
		return nil
	}); err != nil {
		return nil, interpretError(fmt.Errorf("find owners: %w", err))
	}
	return st, nil
}

// dedupeKey is an event's key in the events table (with the workspace).
type dedupeKey struct{ source, dedupe string }

// findBatch returns the first round trip's batch, and the index in evs of
// the first event with each key. It marks the repeats within the group
// (dupOf) and the events to claim.
func findBatch(ws int64, evs []*groupEvent) (*pgx.Batch, map[dedupeKey]int) {
	first := map[dedupeKey]int{}
	var sources, dedupe []string
	var shares []bool
	var all []identity.Identity
	for i, e := range evs {
		k := dedupeKey{e.p.ev.Source, e.p.ev.DedupeKey}
		if j, ok := first[k]; ok {
			e.dupOf = j
			continue
		}
		first[k] = i
		e.claimed = true
		sources, dedupe = append(sources, k.source), append(dedupe, k.dedupe)
		shares = append(shares, e.p.ev.RepeatSharesIdentity)
		all = append(all, e.p.identities...)
	}
	all = identity.Sort(all)
	keys := make([]int64, len(all))
	types, values := make([]string, len(all)), make([]string, len(all))
	for i, id := range all {
		keys[i] = identity.Key(ws, id)
		types[i], values[i] = id.Type, id.Value
	}
	slices.Sort(keys)
	keys = slices.Compact(keys)

	// Each read below looks its rows up one key at a time: a LATERAL
	// subquery with OFFSET 0 cannot be flattened into a join, so its
	// only plan is a nested loop over the keys with an index search by
	// the whole key inside. A join or "= ANY" leaves the planner free to
	// read the whole workspace and filter it, which it does for a
	// workspace its statistics take to be small (one created since the
	// last ANALYZE): every statement then reads every row of the
	// workspace (TestUnknownWorkspacePlansStayKeyLookups). A stored
	// event's identities are read only for an event that asks its repeats
	// to share one (checkRepeat).
	b := &pgx.Batch{}
	b.Queue(`
		SELECT x.s, x.k, e.id, coalesce(c.merged_into, c.id, 0), CASE WHEN x.i THEN e.identities END
		FROM unnest($2::text[], $3::text[], $4::bool[]) AS x(s, k, i)
		CROSS JOIN LATERAL (SELECT id, customer_id, identities FROM events
			WHERE workspace_id = $1 AND source = x.s AND dedupe_key = x.k OFFSET 0) e
		LEFT JOIN LATERAL (SELECT id, merged_into FROM customers
			WHERE workspace_id = $1 AND id = e.customer_id OFFSET 0) c ON true`, ws, sources, dedupe, shares)
	b.Queue(`SELECT pg_advisory_xact_lock(k) FROM unnest($1::bigint[]) AS k`, keys)
	b.Queue(ownersSQL, ws, types, values)
	return b, first
}

// groupState is the group's view of the identity graph and the customers
// it touches, updated as each event is applied in memory.
type groupState struct {
	owners    map[identity.Identity]int64
	lastSeen  map[identity.Identity]time.Time
	existing  map[int64][]identity.Identity
	cust      map[int64]*customerRow
	convs     map[convKey]int64
	convsRead map[int64]bool // customers whose open conversations convs holds
	idsRead   map[int64]bool // customers whose identities existing holds
	// apart reports the separations among the customers of groupReads.apart
	// (nil when it names none, or they have none), as the per-event path's
	// separations does.
	apart     func(a, b int64) bool
	newCust   []int64
	freeCust  []int64
	freeConv  []int64
	freeMsg   []int64
	freeEvent []int64
}

type convKey struct {
	customer        int64
	channel, thread string
}

// applyGroup resolves and applies the claimed events, on the state the
// first round trip read (their identities locked, their owners known).
func (db *DB) applyGroup(ctx context.Context, tx pgx.Tx, ws int64, rules identity.Rules, live []*groupEvent, st *groupState, now time.Time) ([]int64, error) {
	if err := st.lockAndLoad(ctx, tx, ws, st.readsFor(rules, live)); err != nil {
		return nil, err
	}

	w := newGroupWrites(ws, now)
	for _, e := range live {
		if err := st.apply(rules, e, w, now); err != nil {
			return nil, err
		}
	}
	if err := w.flush(ctx, tx, st); err != nil {
		return nil, err
	}
	changed := make([]int64, 0, len(w.touched))
	for id := range w.touched {
		changed = append(changed, id)
	}
	return changed, nil
}

// groupReads says what a group locks and reads before it applies its
// events, and how many ids it reserves.
type groupReads struct {
	// lock holds the owners of the events' identities, in id order: the
	// customers the events can resolve to.
	lock []int64
	// identities, traits and conversations hold those of them whose
	// identities, traits (with their metadata) and open conversations the
	// events need, as below.
	identities, traits, conversations []int64
	// apart holds the owners of every component with two or more owners
	// whose identities are read: an event there may link two customers
	// split apart, which identity.Rules.PlanApart must know, to drop the
	// identifier with the split: reason the per-event path gives, whether
	// or not the merge would break a limit too. A component of one owner,
	// as in steady traffic, can merge nobody and reads no separations.
	apart []int64
	// events, customers and messages bound the events, customers, and
	// conversations and messages, the group can create.
	events, customers, messages int
}

// readsFor works out the group's reads from its events and the owners of
// their identities.
//
// An event resolves to an owner of one of its identities, or to a new
// customer, or to a customer that an earlier event of the group attached
// one of its unowned identities to. That customer is, in turn, an owner of
// one of the earlier event's identities, or new. So an event reaches only
// owners of the identities of its component: the events linked to it by
// shared identities, transitively. What one event needs is read for every
// owner of its component (a new customer needs no read):
//   - identities, for an event not settled (one customer owning every
//     identity not blocked): the others resolve without them
//     (identity.Rules.SettledBy). An event settled here stays so while the
//     group applies, which only attaches identities no one owned. Only an
//     event not settled can create a customer;
//   - traits, for an event that sets traits;
//   - open conversations, for a message.
//
// In steady traffic a component is one person's events, and its owners
// one customer.
func (st *groupState) readsFor(rules identity.Rules, live []*groupEvent) groupReads {
	r := groupReads{events: len(live)}
	// Union-find over the identities, each event's joined together.
	index := map[identity.Identity]int{}
	var parent []int
	find := func(i int) int {
		for parent[i] != i {
			parent[i] = parent[parent[i]]
			i = parent[i]
		}
		return i
	}
	for _, e := range live {
		first := -1
		for _, id := range e.p.identities {
			i, ok := index[id]
			if !ok {
				i = len(parent)
				index[id] = i
				parent = append(parent, i)
			}
			if first < 0 {
				first = find(i)
			} else if j := find(i); j != first {
				parent[j] = first
			}
		}
	}
	const needIdentities, needTraits, needConversations = 1, 2, 4
	needs := map[int]int{}
	for _, e := range live {
		ev := e.p.ev
		n := 0
		if rules.SettledBy(e.p.identities, st.owners) == 0 {
			r.customers++
			n |= needIdentities
		}
		if len(ev.Traits) > 0 || len(ev.TraitsIfAbsent) > 0 {
			n |= needTraits
		}
		if ev.Message != nil {
			r.messages++
			n |= needConversations
		}
		if n != 0 && len(e.p.identities) > 0 {
			needs[find(index[e.p.identities[0]])] |= n
		}
	}
	owners := map[int][]int64{} // per component whose identities are read
	for id, i := range index {
		c, ok := st.owners[id]
		if !ok {
			continue
		}
		r.lock = append(r.lock, c)
		n := needs[find(i)]
		if n&needIdentities != 0 {
			r.identities = append(r.identities, c)
			owners[find(i)] = append(owners[find(i)], c)
		}
		if n&needTraits != 0 {
			r.traits = append(r.traits, c)
		}
		if n&needConversations != 0 {
			r.conversations = append(r.conversations, c)
		}
	}
	for _, cs := range owners {
		slices.Sort(cs)
		if cs = slices.Compact(cs); len(cs) > 1 {
			r.apart = append(r.apart, cs...)
		}
	}
	for _, s := range []*[]int64{&r.lock, &r.identities, &r.traits, &r.conversations, &r.apart} {
		slices.Sort(*s)
		*s = slices.Compact(*s)
	}
	return r
}

// lockAndLoad locks the group's customers in id order and, in the same
// round trip, makes the reads r names and reserves ids for the customers,
// conversations, messages and events the group may create. A customer
// whose traits are not read has nil traits.
func (st *groupState) lockAndLoad(ctx context.Context, tx pgx.Tx, ws int64, r groupReads) error {
	br := tx.SendBatch(ctx, r.batch(ws))
	defer br.Close()

	var (
		c      customerRow
		merged bool
		stale  bool
	)
	rows, _ := br.Query()
	if _, err := pgx.ForEachRow(rows, []any{&c.id, &c.version, &merged, &c.traits, &c.meta}, func() error {
		row := c
		st.cust[c.id], stale = &row, stale || merged
		// The next row's JSON is decoded into maps of its own.
		c.traits, c.meta = nil, nil
		return nil
	}); err != nil {
		return interpretError(fmt.Errorf("lock customers: %w", err))
	}
	// A customer merged away after its owner was read: the per-event path
	// reads owners again under the locks.
	if stale || len(st.cust) != len(r.lock) {
		return errSlowPath
	}
	if len(r.identities) > 0 {
		if err := st.loadIdentities(br); err != nil {
			return err
		}
	}
	if len(r.apart) > 0 {
		rows, _ := br.Query()
		var err error
		if st.apart, err = scanSeparations(rows); err != nil {
			return err
		}
	}
	if len(r.conversations) > 0 {
		if err := st.loadConversations(br); err != nil {
			return err
		}
	}
	st.convsRead = make(map[int64]bool, len(r.conversations))
	for _, c := range r.conversations {
		st.convsRead[c] = true
	}
	st.idsRead = make(map[int64]bool, len(r.identities))
	for _, c := range r.identities {
		st.idsRead[c] = true
	}
	if err := br.QueryRow().Scan(&st.freeCust, &st.freeConv, &st.freeMsg, &st.freeEvent); err != nil {
		return interpretError(fmt.Errorf("reserve ids: %w", err))
	}
	return nil
}

// batch returns lockAndLoad's batch.
func (r groupReads) batch(ws int64) *pgx.Batch {
	// Each read looks its rows up customer by customer, as findBatch's do.
	// The customers are locked in the order of r.lock, which is sorted:
	// the nested loop over it is the only plan.
	b := &pgx.Batch{}
	b.Queue(`
		SELECT c.id, c.version, c.merged, c.traits, c.trait_meta
		FROM unnest($2::bigint[]) AS k(id)
		CROSS JOIN LATERAL (SELECT id, version, merged_into IS NOT NULL AS merged,
				CASE WHEN id = ANY($3) THEN traits END AS traits, CASE WHEN id = ANY($3) THEN trait_meta END AS trait_meta
			FROM customers WHERE workspace_id = $1 AND id = k.id FOR UPDATE OFFSET 0) c`, ws, r.lock, r.traits)
	if len(r.identities) > 0 {
		b.Queue(identitiesOfSQL, ws, r.identities)
	}
	if len(r.apart) > 0 {
		b.Queue(separationsSQL, ws, r.apart)
	}
	if len(r.conversations) > 0 {
		b.Queue(`
			SELECT k.id, c.channel, c.thread_key, c.last FROM unnest($2::bigint[]) AS k(id)
			CROSS JOIN LATERAL (SELECT channel, thread_key, max(id) AS last FROM conversations
				WHERE workspace_id = $1 AND customer_id = k.id AND status = 'open'
				GROUP BY channel, thread_key OFFSET 0) c`, ws, r.conversations)
	}
	// Ids come from the tables' own sequences; ids reserved and not used
	// leave gaps, which identity columns allow.
	b.Queue(`SELECT
		ARRAY(SELECT nextval('customers_id_seq') FROM generate_series(1, $1)),
		ARRAY(SELECT nextval('conversations_id_seq') FROM generate_series(1, $2)),
		ARRAY(SELECT nextval('messages_id_seq') FROM generate_series(1, $2)),
		ARRAY(SELECT nextval('events_id_seq') FROM generate_series(1, $3))`, r.customers, r.messages, r.events)
	return b
}

// loadIdentities reads the identities of the planned customers.
func (st *groupState) loadIdentities(br pgx.BatchResults) error {
	var c int64
	var id identity.Identity
	rows, _ := br.Query()
	if _, err := pgx.ForEachRow(rows, []any{&c, &id.Type, &id.Value}, func() error {
		st.existing[c] = append(st.existing[c], id)
		return nil
	}); err != nil {
		return interpretError(fmt.Errorf("load identities: %w", err))
	}
	return nil
}

// loadConversations reads the open conversations of the customers with a
// message in the group.
func (st *groupState) loadConversations(br pgx.BatchResults) error {
	var k convKey
	var id int64
	rows, _ := br.Query()
	if _, err := pgx.ForEachRow(rows, []any{&k.customer, &k.channel, &k.thread, &id}, func() error {
		st.convs[k] = id
		return nil
	}); err != nil {
		return interpretError(fmt.Errorf("load conversations: %w", err))
	}
	return nil
}

// judgeable reports whether the group holds what Plan needs to resolve an
// event with identities ids: nothing for a settled event, and the
// identities of every owner for any other, which the limits are counted
// on. readsFor reads them for every owner an unsettled event's component
// reaches; should it have missed one, the per-event path reads it, as for
// traits and conversations.
func (st *groupState) judgeable(rules identity.Rules, ids []identity.Identity) bool {
	if rules.SettledBy(ids, st.owners) != 0 {
		return true
	}
	for _, id := range ids { // prepare left out the blocked ones
		c, owned := st.owners[id]
		if !owned || st.idsRead[c] {
			continue
		}
		if row := st.cust[c]; row == nil || !row.created {
			return false
		}
	}
	return true
}

// take hands out the next of the ids reserved; running out means
// readsFor reserved too few, which the group reports instead of writing.
func (st *groupState) take(free *[]int64) (int64, error) {
	if len(*free) == 0 {
		return 0, errors.New("ingest group: no id left of those reserved")
	}
	id := (*free)[0]
	*free = (*free)[1:]
	return id, nil
}

// apply resolves one event against the group's state and records its writes.
func (st *groupState) apply(rules identity.Rules, e *groupEvent, w *groupWrites, now time.Time) error {
	ev := e.p.ev
	if !st.judgeable(rules, e.p.identities) {
		return errSlowPath
	}
	// With the separations the per-event path reads, so that an identifier
	// linking two customers split apart is dropped for that on both paths.
	d := rules.PlanApart(e.p.identities, st.owners, st.existing, st.apart)
	if len(d.Merge) > 0 {
		return errSlowPath
	}
	var err error
	if e.res.EventID, err = st.take(&st.freeEvent); err != nil {
		return err
	}
	for _, x := range d.Dropped {
		e.res.Dropped = append(e.res.Dropped, fmt.Sprintf("%s %q: %s", x.Identity.Type, x.Identity.Value, x.Reason))
	}
	c := st.cust[d.Survivor]
	if d.Survivor == 0 {
		id, err := st.take(&st.freeCust)
		if err != nil {
			return err
		}
		c = &customerRow{id: id, traits: map[string]any{}, meta: map[string]traitMeta{}, created: true}
		st.cust[c.id] = c
		st.newCust = append(st.newCust, c.id)
	}
	e.res.CustomerID = c.id
	dropped := map[identity.Identity]bool{}
	for _, x := range d.Dropped {
		dropped[x.Identity] = true
	}
	for _, id := range e.p.identities {
		if dropped[id] {
			continue
		}
		if _, owned := st.owners[id]; !owned {
			st.owners[id] = c.id
			st.existing[c.id] = append(st.existing[c.id], id)
			w.identity(id, c.id, ev.Source, ev.OccurredAt)
			st.lastSeen[id] = ev.OccurredAt
		} else if ev.OccurredAt.Sub(st.lastSeen[id]) > lastSeenGranularity {
			w.identity(id, c.id, ev.Source, ev.OccurredAt)
			st.lastSeen[id] = ev.OccurredAt
		}
	}

	ch := newChange(e.res.EventID, ev)
	if ev.Consent != nil {
		w.consent(c.id, ev.Consent.Channel, ev.Consent.Status, ev.Source, ev.OccurredAt)
		ch.consent(ev.Consent)
	}
	if ev.Message != nil {
		if !c.created && !st.convsRead[c.id] {
			return errSlowPath // as for traits, below
		}
		thread, _ := ev.Properties["threadKey"].(string)
		k := convKey{c.id, ev.Message.Channel, thread}
		conv, ok := st.convs[k]
		if !ok {
			if conv, err = st.take(&st.freeConv); err != nil {
				return err
			}
			st.convs[k] = conv
			w.conversation(conv, c.id, ev.Message.Channel, thread, ev.OccurredAt)
		}
		msg, err := st.take(&st.freeMsg)
		if err != nil {
			return err
		}
		w.message(msg, conv, c.id, e.res.EventID, ev)
		ch.message(msg, conv, ev.Message.Channel, ev.Message.Direction, "")
	}
	// readsFor reads what any event of the group can reach; should it have
	// missed a customer, the per-event path reads it.
	if (len(ev.Traits) > 0 || len(ev.TraitsIfAbsent) > 0) && c.traits == nil {
		return errSlowPath
	}
	changed, observed := applyTraits(c, ev.Traits, ev.TraitsIfAbsent, ev.Source, ev.TraitsAt())
	ch.traits(changed)
	// Traits observed move trait_meta even when no value changes; the
	// search text moves only with a name or a new email or phone.
	c.traitsDirty = c.traitsDirty || observed > 0
	c.searchDirty = c.searchDirty || c.created || searchMoved(changed, d.Attach)
	ch.identitiesAdded(d.Attach)
	ch.dropped(e.res.Dropped)
	if c.created && c.version == 0 {
		ch.created()
	}
	c.version++
	w.change(c, ch.kind, ch.diff)
	w.event(e, c.id)
	return nil
}

// searchTraits are the traits customers.search_text holds, with the
// customer's email addresses and phone numbers.
var searchTraits = []string{"name", "first_name", "last_name", "firstName", "lastName"}

// searchTextSQL is the expression of a customer's search text, from its
// traits (a jsonb expression) and its id ($1 being the workspace); both
// ingest paths write it.
func searchTextSQL(traits, id string) string {
	parts := make([]string, 0, len(searchTraits)+1)
	for _, k := range searchTraits {
		parts = append(parts, traits+"->>'"+k+"'")
	}
	parts = append(parts, `(SELECT string_agg(i.value, ' ') FROM identities i
		WHERE i.workspace_id = $1 AND i.customer_id = `+id+` AND i.type IN ('email', 'phone'))`)
	return "lower(concat_ws(' ', " + strings.Join(parts, ", ") + "))"
}

// searchMoved reports whether a change of traits or new identities moves
// the customer's search text.
func searchMoved(changed map[string]any, attached []identity.Identity) bool {
	for _, k := range searchTraits {
		if _, ok := changed[k]; ok {
			return true
		}
	}
	for _, id := range attached {
		if id.Type == identity.TypeEmail || id.Type == identity.TypePhone {
			return true
		}
	}
	return false
}

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("encode %T: %v", v, err)) // values come from decoded JSON
	}
	return string(b)
}

// jsonText is the text of an object given as its bytes or as a map; nil
// when it has neither.
func jsonText(raw json.RawMessage, m map[string]any) *string {
	var s string
	switch {
	case raw != nil:
		s = string(raw)
	case m != nil:
		s = mustJSON(m)
	default:
		return nil
	}
	return &s
}
