package postgres

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/c360dev/c360"
)

// queuePage queues one statement loading a page of children for each
// parent, of list (a c360.List constant, which also names the statement).
// query selects (parent id, sort time, id, columns...) for $1 workspace,
// $2 parent ids, $3 limit, and, when after is set, $4 time and $5 id. Nil
// parents, in a batch with a lookup, are the customer it finds
// (lookedUpCustomers); its page is made when its first row is read.
func queuePage[T any](p *pipeline, list string, ws int64, parents []int64, args c360.PageArgs,
	query func(after bool) string, scan func(pgx.Rows) (int64, T, time.Time, int64, error),
) (map[int64]*c360.Page[T], error) {
	n, err := pageSize(args.First)
	if err != nil {
		return nil, err
	}
	params := []any{ws, p.customersArg(parents), n + 1}
	if args.After != "" {
		cur, err := c360.DecodeCursor(args.After, list)
		if err != nil {
			return nil, err
		}
		params = append(params, cur.Time, cur.ID)
	}
	out := make(map[int64]*c360.Page[T], len(parents))
	for _, p := range parents {
		pageOf(out, p)
	}
	p.queue(list, query(args.After != ""), params, func(rows pgx.Rows) error {
		parent, item, t, id, err := scan(rows)
		if err != nil {
			return err
		}
		keep(pageOf(out, parent), list, n, item, t, id)
		return nil
	})
	return out, nil
}

// pageOf returns parent's page in pages, made empty if it has none.
func pageOf[T any](pages map[int64]*c360.Page[T], parent int64) *c360.Page[T] {
	pg := pages[parent]
	if pg == nil {
		pg = &c360.Page[T]{Items: []T{}, Cursors: []string{}}
		pages[parent] = pg
	}
	return pg
}

// keep adds item, sorted at (t, id), to pg, a page of list of at most n
// items; an item past the n-th tells that there is a next page instead. It
// reports whether the item was kept.
func keep[T any](pg *c360.Page[T], list string, n int, item T, t time.Time, id int64) bool {
	if len(pg.Items) == n {
		pg.HasNext = true
		return false
	}
	pg.Items = append(pg.Items, item)
	pg.Cursors = append(pg.Cursors, c360.Cursor{List: list, Time: t, ID: id}.Encode())
	return true
}

// sendOne sends a pipeline of one queued load.
func sendOne[M any](ctx context.Context, db *DB, p *pipeline, m M, err error) (M, error) {
	if err != nil {
		var zero M
		return zero, err
	}
	if err := p.send(ctx, db); err != nil {
		var zero M
		return zero, err
	}
	return m, nil
}

// eventColumns are an event's columns as scanEvent reads them, for a table
// aliased e. The nullable customer_id reads as 0 when null.
const eventColumns = `e.id, coalesce(e.customer_id, 0), e.type, coalesce(e.name, ''), e.properties, e.source,
	e.occurred_at, e.received_at`

// scanEvent scans eventColumns, after any leading columns in prefix.
func scanEvent(row pgx.Row, ws int64, prefix ...any) (*c360.Event, error) {
	e := &c360.Event{WorkspaceID: ws}
	if err := row.Scan(eventDest(e, prefix)...); err != nil {
		return nil, err
	}
	return e, nil
}

// eventDest is where a row of eventColumns is scanned into e, after
// prefix. Properties are scanned as bytes: into a *json.RawMessage pgx
// would run json.Unmarshal, a validity pass over text jsonb already
// vouches for.
func eventDest(e *c360.Event, prefix []any) []any {
	return append(prefix, &e.ID, &e.CustomerID, &e.Type, &e.Name, (*[]byte)(&e.RawProperties), &e.Source, &e.OccurredAt, &e.ReceivedAt)
}

// droppedColumn follows eventColumns where the events' drop records are
// read too (scanEventDropped): only for a query that selects them
// (PageArgs.Dropped), as most events have none and a customer-360 page
// of events reads none.
const droppedColumn = `, CASE WHEN jsonb_typeof(e.dropped) = 'array' THEN e.dropped END`

// scanEventDropped scans eventColumns and droppedColumn, after any
// leading columns in prefix.
func scanEventDropped(row pgx.Row, ws int64, prefix ...any) (*c360.Event, error) {
	e := &c360.Event{WorkspaceID: ws}
	var records []string
	if err := row.Scan(append(eventDest(e, prefix), &records)...); err != nil {
		return nil, err
	}
	// Read, so never nil (c360.Event.DroppedList): empty when none.
	e.Dropped = make([]*c360.DroppedIdentity, len(records))
	for i, r := range records {
		d := c360.ParseDropped(r)
		e.Dropped[i] = &d
	}
	return e, nil
}

// conversationColumns are a conversation's columns as scanConversation
// reads them, for a table aliased c.
const conversationColumns = `c.id, c.customer_id, c.channel, c.status, c.last_message_at, c.created_at`

// scanConversation scans conversationColumns, after any leading columns in prefix.
func scanConversation(row pgx.Row, ws int64, prefix ...any) (*c360.Conversation, error) {
	c := &c360.Conversation{WorkspaceID: ws}
	dest := append(prefix, &c.ID, &c.CustomerID, &c.Channel, &c.Status, &c.LastMessageAt, &c.CreatedAt)
	if err := row.Scan(dest...); err != nil {
		return nil, err
	}
	return c, nil
}

// EventsByCustomers returns a page of events, newest first, for each customer.
func (db *DB) EventsByCustomers(ctx context.Context, ws int64, customers []int64, args c360.PageArgs) (map[int64]*c360.Page[*c360.Event], error) {
	p := newPipeline(ws)
	m, err := queueEvents(p, ws, customers, args)
	return sendOne(ctx, db, p, m, err)
}

func queueEvents(p *pipeline, ws int64, customers []int64, args c360.PageArgs) (map[int64]*c360.Page[*c360.Event], error) {
	scan := scanEvent
	if args.Dropped {
		scan = scanEventDropped
	}
	return queuePage(p, c360.ListEvents, ws, customers, args, func(after bool) string {
		cond := ""
		if after {
			cond = `AND (e.occurred_at, e.id) < ($4, $5)`
		}
		columns := eventColumns
		if args.Dropped {
			columns += droppedColumn
		}
		return `SELECT p.id, ` + columns + `
			FROM ` + lookedUpCustomers + ` AS p(id)
			CROSS JOIN LATERAL (
				SELECT * FROM events e WHERE e.workspace_id = $1 AND e.customer_id = p.id ` + cond + `
				ORDER BY e.occurred_at DESC, e.id DESC LIMIT $3) e`
	}, func(rows pgx.Rows) (int64, *c360.Event, time.Time, int64, error) {
		var parent int64
		e, err := scan(rows, ws, &parent)
		if err != nil {
			return 0, nil, time.Time{}, 0, err
		}
		return parent, e, e.OccurredAt, e.ID, nil
	})
}

// ConversationsByCustomers returns a page of conversations, most recently
// active first, for each customer.
func (db *DB) ConversationsByCustomers(ctx context.Context, ws int64, customers []int64, args c360.PageArgs) (map[int64]*c360.Page[*c360.Conversation], error) {
	p := newPipeline(ws)
	m, err := queueConversations(p, ws, customers, args)
	return sendOne(ctx, db, p, m, err)
}

func queueConversations(p *pipeline, ws int64, customers []int64, args c360.PageArgs) (map[int64]*c360.Page[*c360.Conversation], error) {
	return queuePage(p, c360.ListConversations, ws, customers, args, func(after bool) string {
		cond := ""
		if after {
			cond = `AND (coalesce(c.last_message_at, c.created_at), c.id) < ($4, $5)`
		}
		return `SELECT p.id, ` + conversationColumns + `
			FROM ` + lookedUpCustomers + ` AS p(id)
			CROSS JOIN LATERAL (
				SELECT * FROM conversations c WHERE c.workspace_id = $1 AND c.customer_id = p.id ` + cond + `
				ORDER BY coalesce(c.last_message_at, c.created_at) DESC, c.id DESC LIMIT $3) c`
	}, func(rows pgx.Rows) (int64, *c360.Conversation, time.Time, int64, error) {
		var parent int64
		c, err := scanConversation(rows, ws, &parent)
		if err != nil {
			return 0, nil, time.Time{}, 0, err
		}
		t := c.CreatedAt
		if c.LastMessageAt != nil {
			t = *c.LastMessageAt
		}
		return parent, c, t, c.ID, nil
	})
}

// MessagesByConversations returns a page of messages, newest first, for each
// conversation.
func (db *DB) MessagesByConversations(ctx context.Context, ws int64, conversations []int64, args c360.PageArgs) (map[int64]*c360.Page[*c360.Message], error) {
	p := newPipeline(ws)
	m, err := queuePage(p, c360.ListMessages, ws, conversations, args, func(after bool) string {
		cond := ""
		if after {
			cond = `AND (m.created_at, m.id) < ($4, $5)`
		}
		return `SELECT p.id, ` + messageColumns + `
			FROM unnest($2::bigint[]) AS p(id)
			CROSS JOIN LATERAL (
				SELECT * FROM messages m WHERE m.workspace_id = $1 AND m.conversation_id = p.id ` + cond + `
				ORDER BY m.created_at DESC, m.id DESC LIMIT $3) m`
	}, func(rows pgx.Rows) (int64, *c360.Message, time.Time, int64, error) {
		var parent int64
		m, err := scanMessage(rows, ws, &parent)
		if err != nil {
			return 0, nil, time.Time{}, 0, err
		}
		return parent, m, m.CreatedAt, m.ID, nil
	})
	return sendOne(ctx, db, p, m, err)
}

// FindEventByID returns one event, with its drop records (one event's
// are read whether or not they are asked for).
func (db *DB) FindEventByID(ctx context.Context, ws, id int64) (*c360.Event, error) {
	e, err := scanEventDropped(db.as(ws).QueryRow(ctx, `
		SELECT `+eventColumns+droppedColumn+` FROM events e WHERE e.workspace_id = $1 AND e.id = $2`, ws, id), ws)
	if err == pgx.ErrNoRows {
		return nil, c360.Errorf(c360.ENOTFOUND, "event %d not found", id)
	} else if err != nil {
		return nil, interpretError(fmt.Errorf("find event: %w", err))
	}
	return e, nil
}

// queueConversationsWithMessages queues a customer's page of conversations
// and, for each, a page of its messages: the messages statement finds the
// same conversations with the same bounds, so both travel in one batch. A
// console's customer view needs both; separately they are two round trips
// in a row. customers holds one id, or is nil for the customer a lookup
// earlier in the batch finds. LoadProfiles and FindProfile serve it
// (ProfileRequest.Messages).
//
// Each statement reads its own snapshot (READ COMMITTED), so a message
// landing between them can change which conversations the second finds: one
// that became active is read and dropped; one of the page that the second
// no longer finds would be left with no messages. The messages statement
// therefore returns a marker row (NULL message) for each conversation it
// finds without messages, and the page's conversations it neither read a
// message of nor marked are read again once the batch is sent
// (pipeline.recheckMessages): a round trip more only when the race happened.
func queueConversationsWithMessages(p *pipeline, ws int64, customers []int64, convArgs, msgArgs c360.PageArgs) (map[int64]*c360.Page[*c360.Conversation], map[int64]*c360.Page[*c360.Message], error) {
	cn, err := pageSize(convArgs.First)
	if err != nil {
		return nil, nil, err
	}
	mn, err := pageSize(msgArgs.First)
	if err != nil {
		return nil, nil, err
	}
	convParams := []any{ws, p.customersArg(customers), cn + 1}
	// Messages only for the conversations returned: the extra one the
	// conversation statement reads tells only that there is a next page.
	msgParams := []any{ws, p.customersArg(customers), cn, mn + 1}
	convCond, msgConvCond, msgCond := "", "", ""
	if convArgs.After != "" {
		cur, err := c360.DecodeCursor(convArgs.After, c360.ListConversations)
		if err != nil {
			return nil, nil, err
		}
		convParams = append(convParams, cur.Time, cur.ID)
		convCond = `AND (coalesce(c.last_message_at, c.created_at), c.id) < ($4, $5)`
		msgParams = append(msgParams, cur.Time, cur.ID)
		msgConvCond = `AND (coalesce(c.last_message_at, c.created_at), c.id) < ($5, $6)`
	}
	if msgArgs.After != "" {
		cur, err := c360.DecodeCursor(msgArgs.After, c360.ListMessages)
		if err != nil {
			return nil, nil, err
		}
		msgParams = append(msgParams, cur.Time, cur.ID)
		msgCond = fmt.Sprintf(`AND (m.created_at, m.id) < ($%d, $%d)`, len(msgParams)-1, len(msgParams))
	}
	const convOrder = `ORDER BY coalesce(c.last_message_at, c.created_at) DESC, c.id DESC`
	convs := map[int64]*c360.Page[*c360.Conversation]{}
	msgs := map[int64]*c360.Page[*c360.Message]{}
	cm := &p.messages
	*cm = conversationMessages{ws: ws, pages: msgs, args: msgArgs}
	p.queue("conversations", `SELECT `+conversationColumns+` FROM `+lookedUpCustomers+` AS p(id)
		CROSS JOIN LATERAL (
			SELECT * FROM conversations c WHERE c.workspace_id = $1 AND c.customer_id = p.id `+convCond+`
			`+convOrder+` LIMIT $3) c`, convParams, func(rows pgx.Rows) error {
		c, err := scanConversation(rows, ws)
		if err != nil {
			return err
		}
		t := c.CreatedAt
		if c.LastMessageAt != nil {
			t = *c.LastMessageAt
		}
		if keep(pageOf(convs, c.CustomerID), c360.ListConversations, cn, c, t, c.ID) {
			pageOf(msgs, c.ID)
		}
		return nil
	})
	p.queue("messages", `SELECT p.id, `+messageColumns+`
		FROM `+lookedUpCustomers+` AS q(id)
		CROSS JOIN LATERAL (
			SELECT c.id FROM conversations c WHERE c.workspace_id = $1 AND c.customer_id = q.id `+msgConvCond+`
			`+convOrder+` LIMIT $3) AS p(id)
		LEFT JOIN LATERAL (
			SELECT * FROM messages m WHERE m.workspace_id = $1 AND m.conversation_id = p.id `+msgCond+`
			ORDER BY m.created_at DESC, m.id DESC LIMIT $4) m ON true`, msgParams, func(rows pgx.Rows) error {
		var parent int64
		if rows.RawValues()[1] == nil {
			// A conversation found with no messages (in the page's
			// bounds): its empty page is an answer, not a miss.
			dest := make([]any, len(rows.FieldDescriptions()))
			dest[0] = &parent
			if err := rows.Scan(dest...); err != nil {
				return err
			}
			if msgs[parent] != nil {
				cm.empty = append(cm.empty, parent)
			}
			return nil
		}
		m, err := scanMessage(rows, ws, &parent)
		if err != nil {
			return err
		}
		// No page: a conversation that became active between the two
		// statements.
		if pg := msgs[m.ConversationID]; pg != nil {
			keep(pg, c360.ListMessages, mn, m, m.CreatedAt, m.ID)
		}
		return nil
	})
	return convs, msgs, nil
}

// conversationMessages is the messages part of a batch's conversations
// with their messages (queueConversationsWithMessages), kept to check it
// once the batch is sent.
type conversationMessages struct {
	ws int64
	// pages has a page for each conversation of the page of
	// conversations; nil when the batch has no such part.
	pages map[int64]*c360.Page[*c360.Message]
	args  c360.PageArgs
	// empty are the conversations of pages the messages statement found
	// and found no messages in.
	empty []int64
}

// recheckMessages reads again the messages of the page's conversations
// that the messages statement of the batch did not find, having picked its
// conversations in a later snapshot than the page's
// (queueConversationsWithMessages). Nothing is read when it found them
// all, as it does unless a message landed between the two statements.
func (p *pipeline) recheckMessages(ctx context.Context, db *DB) error {
	cm := &p.messages
	var missed []int64
	for id, pg := range cm.pages {
		if len(pg.Items) == 0 && !slices.Contains(cm.empty, id) {
			missed = append(missed, id)
		}
	}
	if len(missed) == 0 {
		return nil
	}
	m, err := db.MessagesByConversations(ctx, cm.ws, missed, cm.args)
	if err != nil {
		return err
	}
	for _, id := range missed {
		*cm.pages[id] = *pageOf(m, id)
	}
	return nil
}
