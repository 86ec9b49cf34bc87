package c360

import (
	"context"
	"time"
)

// Channels on which customers converse.
const (
	ChannelSMS      = "sms"
	ChannelWhatsApp = "whatsapp"
	ChannelChat     = "chat"
)

// Message directions.
const (
	DirectionInbound  = "inbound"
	DirectionOutbound = "outbound"
)

// Conversation is a customer's thread on one channel.
type Conversation struct {
	ID            int64
	WorkspaceID   int64
	CustomerID    int64
	Channel       string
	Status        string // open, closed
	LastMessageAt *time.Time
	CreatedAt     time.Time
}

// Message is one message in a conversation.
type Message struct {
	ID             int64
	WorkspaceID    int64
	ConversationID int64
	CustomerID     int64
	Channel        string
	Direction      string
	Body           string
	MediaURLs      []string
	Status         string
	ProviderID     string
	// ErrorCode is the provider's error code of a failed or undelivered message.
	ErrorCode string
	CreatedAt time.Time
	// ChangeCursor is the position of the change that delivered the message
	// to a subscription (conversationMessages), "" elsewhere.
	ChangeCursor string
}

// ConversationService reads conversations and their messages.
type ConversationService interface {
	// ConversationsByCustomers returns a page of conversations, most recently active first, per customer.
	ConversationsByCustomers(ctx context.Context, workspaceID int64, customerIDs []int64, args PageArgs) (map[int64]*Page[*Conversation], error)
	// MessagesByConversations returns a page of messages, newest first, per conversation.
	MessagesByConversations(ctx context.Context, workspaceID int64, conversationIDs []int64, args PageArgs) (map[int64]*Page[*Message], error)
}
