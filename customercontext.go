package c360

import (
	"context"
	"time"
)

// CustomerContext is what a chatbot or AI assistant needs to know about a
// customer before it answers, in one read: who they are, whether they may be
// messaged, what they said lately on every channel, what they did, what
// earlier assistants learned, and which profiles were merged into theirs.
// Every list is bounded (see ContextLimits), so a context stays small
// whatever the customer's history.
type CustomerContext struct {
	Customer   *Customer
	Identities []*IdentityRecord
	Consents   []*Consent
	// Conversations are the open conversations, most recently active first.
	Conversations []*ContextConversation
	// Events summarizes the recent events by type and name, most recent first.
	Events []*EventSummary
	// Observations are the unexpired ones, verified first, then newest first.
	Observations []*Observation
	// Merges are the ledger entries the customer took part in, newest first.
	Merges []*MergeRecord
}

// ContextConversation is an open conversation with its last messages.
type ContextConversation struct {
	*Conversation
	// Messages are the conversation's last messages, oldest first, so they
	// read as a transcript.
	Messages []*Message
}

// EventSummary counts a customer's recent events of one type and name.
type EventSummary struct {
	Type   string
	Name   string
	Count  int
	LastAt time.Time
}

// NameOrNil returns the name, or nil when the events have none.
func (s *EventSummary) NameOrNil() *string {
	if s.Name == "" {
		return nil
	}
	return &s.Name
}

// CustomerRef names a customer by id or by one of its identities.
type CustomerRef struct {
	ID       int64
	Identity *Identity
}

// ContextLimits bound each part of a context.
type ContextLimits struct {
	Conversations           int           // open conversations
	MessagesPerConversation int           // last messages of each
	EventWindow             time.Duration // how far back events are summarized
	EventsScanned           int           // at most this many of the most recent events are summarized
	EventNames              int           // distinct (type, name) groups
	Observations            int
	Merges                  int
}

// DefaultContextLimits are the limits customerContext uses.
var DefaultContextLimits = ContextLimits{
	Conversations:           5,
	MessagesPerConversation: 5,
	EventWindow:             30 * 24 * time.Hour,
	EventsScanned:           1000,
	EventNames:              20,
	Observations:            20,
	Merges:                  10,
}

// ContextService assembles customer contexts.
type ContextService interface {
	// CustomerContext returns the context of the customer ref names, as of
	// now (which decides recent events and expired observations). A
	// merged-away id resolves to its survivor; ENOTFOUND when there is none.
	CustomerContext(ctx context.Context, workspaceID int64, ref CustomerRef, now time.Time, limits ContextLimits) (*CustomerContext, error)
}
