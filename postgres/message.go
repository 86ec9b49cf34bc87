package postgres

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/c360dev/c360"
)

// statusRank orders Twilio's message statuses so that a callback arriving
// late never moves a message backwards (delivered, then a late "sent").
var statusRank = map[string]int{
	"accepted": 1, "scheduled": 1, "queued": 2, "sending": 3, "sent": 4,
	"receiving": 4, "received": 5, "delivered": 6, "read": 7,
	"undelivered": 8, "failed": 8, "canceled": 8,
}

// applyMessageStatus moves the message with the event's provider id to the
// event's status. It returns nil when no such message is stored or the
// status would move it backwards.
func applyMessageStatus(ctx context.Context, tx pgx.Tx, ws int64, ev *c360.Event) (*c360.Message, error) {
	m := &c360.Message{WorkspaceID: ws}
	var current string
	err := tx.QueryRow(ctx, `
		SELECT id, conversation_id, customer_id, channel, direction, status FROM messages
		WHERE workspace_id = $1 AND provider_id = $2 FOR UPDATE`, ws, ev.Message.ProviderID).Scan(
		&m.ID, &m.ConversationID, &m.CustomerID, &m.Channel, &m.Direction, &current)
	if err == pgx.ErrNoRows {
		return nil, nil
	} else if err != nil {
		return nil, interpretError(fmt.Errorf("find message: %w", err))
	}
	if statusRank[ev.Message.Status] < statusRank[current] {
		return nil, nil
	}
	if _, err := tx.Exec(ctx, `UPDATE messages SET status = $3 WHERE workspace_id = $1 AND id = $2`,
		ws, m.ID, ev.Message.Status); err != nil {
		return nil, interpretError(fmt.Errorf("update message status: %w", err))
	}
	m.Status = ev.Message.Status
	return m, nil
}
