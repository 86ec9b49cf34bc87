package resolver

import (
	"context"
	"sync"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/hub"
)

// conversationStream is the feed conversationMessages(conversationId) reads:
// the stream of the conversation's owner, which a merge moves along by
// itself (the hub follows merged_into). A split moves a conversation to
// the customer it creates, whose feed the owner's never shows; on a split
// of its owner the stream looks the owner up again and goes on with the
// new one's feed, from its start: the split created that customer.
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
	owner, err := c.r.conversationOwner(ctx, c.ws, c.conv)
	if err != nil {
		return nil, err
	}
	if owner == ch.CustomerID {
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

func (c *conversationStream) Close() {
	c.mu.Lock()
	c.closed = true
	st := c.st
	c.mu.Unlock()
	st.Close()
}

func (c *conversationStream) Wait(ctx context.Context) { c.current().Wait(ctx) }
