package resolver

import (
	"context"
	"strconv"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/hub"
)

// afterCursor decodes a subscription's after argument: nil when there is
// none, else a change cursor (EINVALID when it is not one).
func afterCursor(after *string) (*hub.Cursor, error) {
	if after == nil || *after == "" {
		return nil, nil
	}
	c, err := hub.DecodeCursor(*after)
	if err != nil {
		return nil, err
	}
	return &c, nil
}

// subscriber returns the caller's workspace when the caller may subscribe:
// anyone who may read profiles, on a server with a hub.
func (r *Resolver) subscriber(ctx context.Context) (int64, error) {
	ws, err := reader(ctx)
	if err != nil {
		return 0, err
	}
	if r.Hub == nil {
		return 0, c360.Errorf(c360.EUNAVAILABLE, "subscriptions are not enabled on this server")
	}
	return ws, nil
}

// messageOf returns the message a change recorded, as it is now, when it
// is of conversation conv ("" for any). The change need not be of kind
// message: a message that also did something else (gave a name, opted
// out, created its customer) is of that other kind, and its diff holds the
// message all the same. The message is read once per change, whatever the
// number of subscribers, and read again while the database does not answer
// (hub.Hub.Retry), as the stream's own reads are: the change is neither
// delivered twice nor passed over (the next message's changeCursor would
// carry a resuming client past it). The message carries the change's
// cursor, the same for every subscriber. When the retries run out, the
// subscribers waiting on that read fail with it (hub.Change.Shared), each
// after one ReadRetry, not one ReadRetry more for each before it.
func (r *Resolver) messageOf(ctx context.Context, c *hub.Change, conv string) (*c360.Message, bool, error) {
	m, _ := c.Diff["message"].(map[string]any)
	if m == nil {
		return nil, false, nil
	}
	if conv != "" && m["conversationId"] != conv {
		return nil, false, nil
	}
	s, _ := m["id"].(string) // change rows write ids as strings (postgres/change.go)
	id, err := strconv.ParseInt(s, 10, 64)
	if err != nil || r.Realtime == nil {
		return nil, false, nil
	}
	type loaded struct {
		m   *c360.Message
		err error
	}
	v, err := c.Shared(ctx, "message", func() (any, bool) {
		var msg *c360.Message
		err := r.Hub.Retry(ctx, func() (err error) {
			msg, err = r.Realtime.MessageOfChange(ctx, c.WorkspaceID, id)
			return err
		})
		if msg != nil {
			msg.ChangeCursor = c.Cursor()
		}
		return loaded{msg, err}, err == nil || c360.ErrorCode(err) == c360.ENOTFOUND
	})
	if err != nil {
		return nil, false, err
	}
	l := v.(loaded)
	if c360.ErrorCode(l.err) == c360.ENOTFOUND {
		return nil, false, nil
	}
	return l.m, l.err == nil, l.err
}

// conversationOwner returns the customer conversation conv belongs to now,
// read again while the database does not answer (hub.Hub.Retry), as a
// stream's own reads are.
func (r *Resolver) conversationOwner(ctx context.Context, ws, conv int64) (owner int64, err error) {
	err = r.Hub.Retry(ctx, func() (err error) {
		owner, err = r.Realtime.ConversationOwner(ctx, ws, conv)
		return err
	})
	return owner, err
}
