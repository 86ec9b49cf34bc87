package resolver

import (
	"github.com/c360dev/c360"
	"github.com/c360dev/c360/graph/model"
)

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
		pi.EndCursor = &cursors[len(cursors)-1]
	}
	return pi
}

func eventConnection(p *c360.Page[*c360.Event]) *model.EventConnection {
	c := &model.EventConnection{Edges: make([]*model.EventEdge, len(p.Items))}
	for i, e := range p.Items {
		c.Edges[i] = &model.EventEdge{Cursor: p.Cursors[i], Node: e}
	}
	c.PageInfo = pageInfo(p.Cursors, p.HasNext)
	return c
}

func conversationConnection(p *c360.Page[*c360.Conversation]) *model.ConversationConnection {
	c := &model.ConversationConnection{Edges: make([]*model.ConversationEdge, len(p.Items))}
	for i, e := range p.Items {
		c.Edges[i] = &model.ConversationEdge{Cursor: p.Cursors[i], Node: e}
	}
	c.PageInfo = pageInfo(p.Cursors, p.HasNext)
	return c
}

func messageConnection(p *c360.Page[*c360.Message]) *model.MessageConnection {
	c := &model.MessageConnection{Edges: make([]*model.MessageEdge, len(p.Items))}
	for i, e := range p.Items {
		c.Edges[i] = &model.MessageEdge{Cursor: p.Cursors[i], Node: e}
	}
	c.PageInfo = pageInfo(p.Cursors, p.HasNext)
	return c
}
