package postgres

import (
	"context"
	"fmt"
	"slices"
	"strconv"

	"github.com/jackc/pgx/v5"

	"github.com/c360dev/c360"
)

// pipeline queues the read statements of one workspace and sends them as
// one batch: one round trip, one connection, however many statements. Each
// statement comes with the function that reads its rows, which pgx calls
// in order as the batch's results come (pgx.QueuedQuery.Query).
type pipeline struct {
	batch pgx.Batch
	// reads counts the statements queued with a read; done those whose
	// rows were all read.
	reads, done int
	// lookedUp is set when a lookup at the batch's start names its
	// customer (FindProfile): parts queued for no customers then read that
	// one (customersArg).
	lookedUp bool
	// messages is the batch's conversations-with-messages part, checked
	// once the batch is sent (recheckMessages).
	messages conversationMessages
}

// startPipelineSQL scopes the batch to its workspace, and clears the
// customer a lookup in it may name (lookedUpCustomers).
const startPipelineSQL = `SELECT set_config('c360.workspace_id', $1, true), set_config('c360.customer_id', '', true)`

// lookedUpCustomers is the row source of the customers a statement loads
// parts of: the ids in $2, or, when $2 is NULL, the one customer a lookup
// earlier in the batch found (FindProfile), whose id it set in
// c360.customer_id. The settings are local to the batch's implicit
// transaction. It is a row source joined to the table, not a condition on
// it: under row-level security PostgreSQL uses an index only for a
// condition it can prove leakproof, and a COALESCE is not, so a WHERE on it
// would scan the whole table.
const lookedUpCustomers = `unnest(coalesce($2::bigint[], ARRAY[(SELECT nullif(current_setting('c360.customer_id', true), '')::bigint)]))`

// customersArg is $2 of a statement over lookedUpCustomers: NULL, for the
// customer the batch's lookup found, when the batch has one and ids is
// nil; else ids, each joined once however often it is given (none for
// none).
func (p *pipeline) customersArg(ids []int64) any {
	if ids == nil && p.lookedUp {
		return nil
	}
	if ids == nil {
		return []int64{}
	}
	return uniqueIDs(ids)
}

// uniqueIDs returns ids without repeats (in no set order: every read keys
// its results by id).
func uniqueIDs(ids []int64) []int64 {
	out := slices.Clone(ids)
	slices.Sort(out)
	return slices.Compact(out)
}

func newPipeline(ws int64) *pipeline {
	p := &pipeline{}
	p.batch.Queue(startPipelineSQL, strconv.FormatInt(ws, 10))
	return p
}

// queue adds a statement; row reads each of its rows. what names the
// statement in errors ("identities").
func (p *pipeline) queue(what, sql string, args []any, row func(pgx.Rows) error) {
	p.reads++
	p.batch.Queue(sql, args...).Query(func(rows pgx.Rows) error {
		for rows.Next() {
			if err := row(rows); err != nil {
				return fmt.Errorf("scan %s: %w", what, err)
			}
		}
		if err := rows.Err(); err != nil {
			return interpretError(fmt.Errorf("load %s: %w", what, err))
		}
		p.done++
		return nil
	})
}

// send runs the queued statements on the app pool and reads their rows.
func (p *pipeline) send(ctx context.Context, db *DB) error {
	if err := db.app.SendBatch(ctx, &p.batch).Close(); err != nil {
		return interpretError(err)
	}
	return nil
}

// LoadProfiles loads the parts req names for the customers in one round
// trip. A console opening a customer needs its identities, events and
// conversations with their messages; loaded one by one, each costs a round
// trip and a connection of its own.
func (db *DB) LoadProfiles(ctx context.Context, ws int64, customers []int64, req c360.ProfileRequest) (*c360.Profiles, error) {
	if len(customers) == 0 {
		return &c360.Profiles{}, nil
	}
	p := newPipeline(ws)
	out, err := queueProfiles(p, ws, customers, req)
	if err != nil {
		return nil, err
	}
	if p.reads == 0 {
		return out, nil
	}
	if err := p.send(ctx, db); err != nil {
		return nil, err
	}
	if err := p.recheckMessages(ctx, db); err != nil {
		return nil, err
	}
	fillPages(out, customers)
	return out, nil
}

// FindProfile finds one customer and loads the parts req names in the same
// batch: the lookup names the customer it found in c360.customer_id, and
// the parts' statements read it from there (lookedUpCustomers). A console
// opening the customer of an incoming call pays one round trip, not two.
func (db *DB) FindProfile(ctx context.Context, ws int64, key c360.CustomerKey, req c360.ProfileRequest) (*c360.Customer, *c360.Profiles, error) {
	return db.findProfile(ctx, ws, key, func(p *pipeline) (*c360.Profiles, error) { return queueProfiles(p, ws, nil, req) })
}

// findProfile is FindProfile with the parts queued by queue.
func (db *DB) findProfile(ctx context.Context, ws int64, key c360.CustomerKey, queue func(*pipeline) (*c360.Profiles, error)) (*c360.Customer, *c360.Profiles, error) {
	sql, args, notFound, err := db.lookupCustomer(ws, key)
	if err != nil {
		return nil, nil, err
	}
	var c *c360.Customer
	lookup := func() *pipeline {
		p := newPipeline(ws)
		p.lookedUp = true
		p.queue("customer", `SELECT set_config('c360.customer_id', c.id::text, true), `+sql, args, func(rows pgx.Rows) (err error) {
			c, err = scanCustomer(rows, new(string))
			return err
		})
		return p
	}
	p := lookup()
	out, err := queue(p)
	if err != nil {
		p, out = lookup(), nil
	}
	if err := p.send(ctx, db); err != nil {
		if p.done == 0 {
			return nil, nil, err
		}
		if c == nil {
			return nil, nil, notFound()
		}
		// The customer was found and a part failed after it (a timeout,
		// say): the customer stands, and each part's own read says why.
		return c, nil, nil
	}
	if c == nil {
		return nil, nil, notFound()
	}
	if out != nil {
		if err := p.recheckMessages(ctx, db); err != nil {
			// As a part failing in the batch: the customer stands.
			return c, nil, nil
		}
		fillPages(out, []int64{c.ID})
	}
	return c, out, nil
}

// queueProfiles queues the statements of req for customers; nil customers,
// in a batch with a lookup, means the one it finds.
func queueProfiles(p *pipeline, ws int64, customers []int64, req c360.ProfileRequest) (*c360.Profiles, error) {
	out := &c360.Profiles{}
	if req.Identities {
		out.Identities = queueIdentities(p, ws, customers)
	}
	if req.Consents {
		out.Consents = queueConsents(p, ws, customers)
	}
	for _, args := range req.Events {
		m, err := queueEvents(p, ws, customers, args)
		if err != nil {
			return nil, err
		}
		if out.Events == nil {
			out.Events = map[c360.PageArgs]map[int64]*c360.Page[*c360.Event]{}
		}
		out.Events[args] = m
	}
	one := len(customers) == 1 || customers == nil && p.lookedUp
	if req.Messages != nil && (!one || len(req.Conversations) != 1) {
		return nil, c360.Errorf(c360.EINVALID, "messages load with one customer and one page of conversations")
	}
	for _, args := range req.Conversations {
		var m map[int64]*c360.Page[*c360.Conversation]
		var err error
		if req.Messages != nil {
			m, out.Messages, err = queueConversationsWithMessages(p, ws, customers, args, *req.Messages)
		} else {
			m, err = queueConversations(p, ws, customers, args)
		}
		if err != nil {
			return nil, err
		}
		if out.Conversations == nil {
			out.Conversations = map[c360.PageArgs]map[int64]*c360.Page[*c360.Conversation]{}
		}
		out.Conversations[args] = m
	}
	return out, nil
}

// fillPages gives every customer an empty page where it has no rows, as
// the separate reads do.
func fillPages(out *c360.Profiles, customers []int64) {
	for _, m := range out.Events {
		fillPage(m, customers)
	}
	for _, m := range out.Conversations {
		fillPage(m, customers)
	}
}

func fillPage[T any](m map[int64]*c360.Page[T], ids []int64) {
	for _, id := range ids {
		pageOf(m, id)
	}
}
