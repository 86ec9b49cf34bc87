package resolver

import (
	"fmt"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/graph/model"
)

// cursorLists names the list of each connection type's cursors
// (c360.Cursor.List).
var cursorLists = map[string]string{
	"CustomerConnection":     c360.ListCustomers,
	"EventConnection":        c360.ListEvents,
	"ConversationConnection": c360.ListConversations,
	"MessageConnection":      c360.ListMessages,
	"AuditConnection":        c360.ListAudit,
	"DeadLetterConnection":   c360.ListDeadLetters,
}

// plainLists names the item types of the plain lists that take first (and
// no after): Customer.observations.
var plainLists = map[string]bool{"Observation": true}

// CheckPage refuses the arguments of a field of type connection (coerced,
// as CollectedField.ArgumentMap gives them, the schema's defaults filled
// in) that its store would refuse: a first outside 1..MaxPage, an after
// that is not a cursor of that connection's list. A plain list that takes
// first (its item type named in plainLists) has its first checked. The
// server runs it on a mutation's whole selection before the mutation
// runs, so that a mutation is never refused after its change is made
// (server/operation.go).
func CheckPage(connection string, args map[string]any) error {
	list, ok := cursorLists[connection]
	if !ok && !plainLists[connection] {
		return fmt.Errorf("check page: no cursor list for %s", connection)
	}
	a, ok := pageArgsOf(args)
	if !ok { // validation lets no such value through
		return c360.Errorf(c360.EINVALID, "first must be an integer and after a cursor")
	}
	if err := c360.CheckFirst(a.First); err != nil {
		return err
	}
	if a.After != "" && list != "" {
		if _, err := c360.DecodeCursor(a.After, list); err != nil {
			return err
		}
	}
	return nil
}

func pageArgs(first *int, after *string) c360.PageArgs {
	var a c360.PageArgs
	if first != nil {
		a.First = *first
	}
	if after != nil {
		a.After = *after
	}
	return a
}

func pageInfo(cursors []string, more bool) *model.PageInfo {
	pi := &model.PageInfo{HasNextPage: more}
	if len(cursors) > 0 {
		pi.StartCursor, pi.EndCursor = &cursors[0], &cursors[len(cursors)-1]
	}
	return pi
}

// edges makes a connection's edges from a page: one per item, with its cursor.
func edges[T, E any](p *c360.Page[T], edge func(cursor string, node T) E) []E {
	out := make([]E, len(p.Items))
	for i, item := range p.Items {
		out[i] = edge(p.Cursors[i], item)
	}
	return out
}

func eventConnection(p *c360.Page[*c360.Event]) *model.EventConnection {
	return &model.EventConnection{PageInfo: pageInfo(p.Cursors, p.HasNext),
		Edges: edges(p, func(c string, n *c360.Event) *model.EventEdge { return &model.EventEdge{Cursor: c, Node: n} })}
}

func conversationConnection(p *c360.Page[*c360.Conversation]) *model.ConversationConnection {
	return &model.ConversationConnection{PageInfo: pageInfo(p.Cursors, p.HasNext),
		Edges: edges(p, func(c string, n *c360.Conversation) *model.ConversationEdge {
			return &model.ConversationEdge{Cursor: c, Node: n}
		})}
}

func messageConnection(p *c360.Page[*c360.Message]) *model.MessageConnection {
	return &model.MessageConnection{PageInfo: pageInfo(p.Cursors, p.HasNext),
		Edges: edges(p, func(c string, n *c360.Message) *model.MessageEdge { return &model.MessageEdge{Cursor: c, Node: n} })}
}
