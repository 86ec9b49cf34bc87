package postgres

import (
	"context"
	"fmt"
	"strconv"

	"github.com/jackc/pgx/v5"

	"github.com/c360dev/c360"
)

// pipeline queues the read statements of one workspace and sends them as
// one batch: one round trip, one connection, however many statements. Each
// statement comes with the function that reads its rows, called in order
// once the batch is sent.
type pipeline struct {
	batch pgx.Batch
	reads []pipelineRead
}

type pipelineRead struct {
	what string
	row  func(pgx.Rows) error
}

func newPipeline(ws int64) *pipeline {
	p := &pipeline{}
	p.batch.Queue(setWorkspaceSQL, strconv.FormatInt(ws, 10))
	return p
}

// queue adds a statement; row reads each of its rows. what names the
// statement in errors ("identities").
func (p *pipeline) queue(what, sql string, args []any, row func(pgx.Rows) error) {
	p.batch.Queue(sql, args...)
	p.reads = append(p.reads, pipelineRead{what, row})
}

// send runs the queued statements on the app pool and reads their rows.
func (p *pipeline) send(ctx context.Context, db *DB) error {
	br := db.app.SendBatch(ctx, &p.batch)
	defer br.Close()
	if _, err := br.Exec(); err != nil {
		return interpretError(fmt.Errorf("set workspace: %w", err))
	}
	for _, r := range p.reads {
		rows, err := br.Query()
		if err != nil {
			return interpretError(fmt.Errorf("load %s: %w", r.what, err))
		}
		for rows.Next() {
			if err := r.row(rows); err != nil {
				rows.Close()
				return fmt.Errorf("scan %s: %w", r.what, err)
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return interpretError(fmt.Errorf("load %s: %w", r.what, err))
		}
	}
	return nil
}

// LoadProfiles loads the parts req names for the customers in one round
// trip. A console opening a customer needs its identities, events and
// conversations with their messages; loaded one by one, each costs a round
// trip and a connection of its own.
func (db *DB) LoadProfiles(ctx context.Context, ws int64, customers []int64, req c360.ProfileRequest) (*c360.Profiles, error) {
	out := &c360.Profiles{}
	p := newPipeline(ws)
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
	if req.Messages != nil && (len(customers) != 1 || len(req.Conversations) != 1) {
		return nil, c360.Errorf(c360.EINVALID, "messages load with one customer and one page of conversations")
	}
	for _, args := range req.Conversations {
		var m map[int64]*c360.Page[*c360.Conversation]
		if req.Messages != nil {
			convs, msgs, err := queueConversationsWithMessages(p, ws, customers[0], args, *req.Messages)
			if err != nil {
				return nil, err
			}
			m, out.Messages = map[int64]*c360.Page[*c360.Conversation]{customers[0]: convs}, msgs
		} else {
			var err error
			if m, err = queueConversations(p, ws, customers, args); err != nil {
				return nil, err
			}
		}
		if out.Conversations == nil {
			out.Conversations = map[c360.PageArgs]map[int64]*c360.Page[*c360.Conversation]{}
		}
		out.Conversations[args] = m
	}
	if len(p.reads) == 0 {
		return out, nil
	}
	if err := p.send(ctx, db); err != nil {
		return nil, err
	}
	return out, nil
}
