package resolver

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/hub"
)

// conversationStream is the feed conversationMessages(conversationId) reads:
// the stream of the conversation's owner, which a merge moves along by
// itself (the hub follows merged_into). A split moves a conversation to
// the customer it creates, whose feed the owner's never shows; on a split
// of its owner that moved the conversation (its change lists it under
// movedConversationIds) the stream goes on with the new customer's feed,
// from its start: the split created that customer. It goes there whatever
// became of it since: the messages it got are in its feed, and a merge of
// it leads the stream on to its survivor (the hub follows merged_into).
// The owner now, which a stream that lags may find several moves further
// on, would skip them. A split change written before movedConversationIds
// existed has no list: the stream looks the owner up then, as it does for
// a conversation above the last id of a list cut at its bound (100,
// movedConversationIdsTruncated).
type conversationStream struct {
	r        *Resolver
	ws, conv int64

	mu     sync.Mutex // guards st and closed against Close
	st     hub.Stream
	closed bool
}

func (c *conversationStream) current() hub.Stream {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.st
}

func (c *conversationStream) Next(ctx context.Context) (*hub.Change, error) {
	ch, err := c.current().Next(ctx)
	if err != nil || ch.Kind != c360.ChangeSplit {
		return ch, err
	}
	owner, moved, err := c.splitTo(ctx, ch)
	if err != nil {
		return nil, err
	}
	if !moved || owner == ch.CustomerID {
		return ch, nil
	}
	next, err := c.r.Hub.SubscribeCustomer(ctx, c.ws, owner, &hub.Cursor{CustomerID: owner, Version: 0})
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	old, closed := c.st, c.closed
	if !closed {
		c.st = next
	}
	c.mu.Unlock()
	old.Close()
	if closed {
		next.Close()
		return nil, hub.ErrClosed
	}
	return ch, nil // a split is no message: the caller passes over it
}

// splitTo returns the customer a split change moved the conversation to,
// and whether it moved it.
func (c *conversationStream) splitTo(ctx context.Context, ch *hub.Change) (int64, bool, error) {
	list, listed := ch.Diff["movedConversationIds"].([]any)
	if listed && slices.Contains(list, any(strconv.FormatInt(c.conv, 10))) {
		into, _ := ch.Diff["splitInto"].(string)
		id, err := strconv.ParseInt(into, 10, 64)
		if err != nil {
			return 0, false, fmt.Errorf("split change of customer %d: no customer split into", ch.CustomerID)
		}
		return id, true, nil
	}
	// Not listed. The list holds the lowest ids moved, in order, at most
	// 100: when it was cut (movedConversationIdsTruncated), a conversation
	// above its last id may have moved all the same. Then, and for a change
	// written before splits listed them, the owner is looked up.
	if cut, _ := ch.Diff["movedConversationIdsTruncated"].(bool); listed && !(cut && c.conv > lastListed(list)) {
		return 0, false, nil
	}
	owner, err := c.r.conversationOwner(ctx, c.ws, c.conv)
	return owner, err == nil, err
}

// lastListed is the last id of a movedConversationIds list, which lists
// them in order (0 if none).
func lastListed(list []any) int64 {
	if len(list) == 0 {
		return 0
	}
	s, _ := list[len(list)-1].(string)
	id, _ := strconv.ParseInt(s, 10, 64)
	return id
}

func (c *conversationStream) Close() {
	c.mu.Lock()
	c.closed = true
	st := c.st
	c.mu.Unlock()
	st.Close()
}

func (c *conversationStream) Wait(ctx context.Context) { c.current().Wait(ctx) }
