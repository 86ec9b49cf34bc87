package resolver

import (
	"context"
	"strconv"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/hub"
)

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
// number of subscribers.
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
		msg, err := r.Realtime.MessageOfChange(ctx, c.WorkspaceID, id)
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
