package mcp

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/google/jsonschema-go/jsonschema"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/c360dev/c360"
)

// Tool names: the MCP contract.
const (
	ToolLookupCustomer     = "lookup_customer"
	ToolGetCustomerContext = "get_customer_context"
	ToolSearchCustomers    = "search_customers"
	ToolListRecentMessages = "list_recent_messages"
	ToolRecordObservation  = "record_observation"
	ToolSendMessage        = "send_message"
)

// Tool arguments. Their JSON schemas are inferred from these types; the
// jsonschema tags are the property descriptions the model reads.
type (
	// LookupArgs are lookup_customer's arguments.
	LookupArgs struct {
		Type  string `json:"type" jsonschema:"identity type: phone, email, user_id, anonymous_id, or a custom type such as crm_id or chatbot:webchat"`
		Value string `json:"value" jsonschema:"the identity's value, normalized as c360 normalizes it: emails are lowercased, phone numbers become E.164 (whatsapp:+14155550100 works too)"`
	}
	// ContextArgs are get_customer_context's arguments.
	ContextArgs struct {
		CustomerID string `json:"customerId,omitempty" jsonschema:"the customer's id, e.g. \"42\"; or give type and value instead"`
		Type       string `json:"type,omitempty" jsonschema:"identity type (phone, email, user_id, ...), with value, instead of customerId"`
		Value      string `json:"value,omitempty" jsonschema:"identity value, with type"`
		Budget     int    `json:"budget,omitempty" jsonschema:"maximum length of the text block in characters (about 4 per token), 100 to 32000; leave it out for the default, 4000"`
	}
	// SearchArgs are search_customers's arguments.
	SearchArgs struct {
		Query string `json:"query" jsonschema:"a fragment of the customer's name, email or phone number"`
		First int    `json:"first,omitempty" jsonschema:"how many customers to return, 1 to 50; leave it out for the default, 10"`
	}
	// MessagesArgs are list_recent_messages's arguments.
	MessagesArgs struct {
		CustomerID string `json:"customerId" jsonschema:"the customer's id"`
		Limit      int    `json:"limit,omitempty" jsonschema:"how many messages to return, newest first, 1 to 100; leave it out for the default, 20"`
	}
	// ObservationArgs are record_observation's arguments.
	ObservationArgs struct {
		CustomerID string   `json:"customerId" jsonschema:"the customer's id"`
		Text       string   `json:"text" jsonschema:"the fact learned, one short sentence, at most 4096 bytes, e.g. \"prefers WhatsApp after 6pm\""`
		Source     string   `json:"source,omitempty" jsonschema:"where it was learned, e.g. the bot's name or the conversation"`
		Confidence *float64 `json:"confidence,omitempty" jsonschema:"how sure you are, from 0 to 1"`
		MessageID  string   `json:"messageId,omitempty" jsonschema:"an id of your choosing for this observation, at most 256 bytes: calling again with the same messageId (a retry after a lost answer) returns the observation stored the first time and records nothing"`
	}
	// SendArgs are send_message's arguments.
	SendArgs struct {
		CustomerID string `json:"customerId" jsonschema:"the customer's id"`
		Channel    string `json:"channel" jsonschema:"sms or whatsapp"`
		Body       string `json:"body" jsonschema:"the message text, at most 1600 characters"`
		MessageID  string `json:"messageId,omitempty" jsonschema:"an id of your choosing for this message, at most 256 bytes: calling again with the same messageId (a retry after a lost answer) sends nothing and returns the message sent the first time, or the refusal it got (an invalid number, an opt-out), or an error saying its outcome is not known yet; after RATE_LIMITED the same messageId sends"`
	}
)

// Result is the structured result of a tool that reshapes the GraphQL data
// (search_customers, list_recent_messages); the others return the data as
// GraphQL wrote it. Its numbers are json.Number, decoded by
// c360.UnmarshalExact, so that they keep their digits.
//
// The tools declare no output schema: the SDK validates a declared one by
// decoding the result into float64s and encoding it again, which rounds an
// integer past 2^53. Every result is a JSON object, as docs/assistants.md
// lists them.
type Result = map[string]any

// The GraphQL operations the tools run. They select what an assistant
// needs; masking and audit apply to them as to any client's.
const (
	customerFields = `id version traits identities { type value } consents { channel status updatedAt } createdAt updatedAt`

	lookupQuery = `query LookupCustomer($type: String!, $value: String!) {
  customer: customerByIdentity(type: $type, value: $value) { ` + customerFields + ` } }`

	contextQuery = `query CustomerContext($id: ID, $identity: IdentityInput, $budget: Int) {
  context: customerContext(id: $id, identity: $identity, budget: $budget) {
    customerId version text truncated budget traits
    identities { type value }
    consents { channel status updatedAt source }
    openConversations { id channel status lastMessageAt messages { id direction body status createdAt } }
    recentEvents { type name count lastAt }
    observations { id text source confidence verified recordedBy createdAt expiresAt }
    merges { kind survivorId mergedId identity { type value } actor createdAt }
  } }`

	searchQuery = `query SearchCustomers($query: String, $first: Int) {
  customers(query: $query, first: $first) { edges { node { id traits identities { type value } updatedAt } } pageInfo { hasNextPage } } }`

	messagesQuery = `query RecentMessages($id: ID!, $conversations: Int!, $after: String, $messages: Int!) {
  customer(id: $id) { id conversations(first: $conversations, after: $after) {
    edges { node { id channel status lastMessageAt
      messages(first: $messages) { edges { node { id channel direction body status createdAt } } } } }
    pageInfo { hasNextPage endCursor } } } }`

	observationMutation = `mutation RecordObservation($customerId: ID!, $text: String!, $source: String, $confidence: Float, $messageId: String) {
  observation: recordObservation(customerId: $customerId, text: $text, source: $source, confidence: $confidence, messageId: $messageId) {
    id customerId text source confidence recordedBy recordedByRole verified createdAt } }`

	sendMutation = `mutation SendMessage($input: SendMessageInput!) {
  message: sendMessage(input: $input) { id channel direction body status providerId errorCode createdAt } }`
)

func ptr[T any](v T) *T { return &v }

// addTools registers c360's tools on srv.
func (s *Server) addTools(srv *sdk.Server, creds credentials) {
	readOnly := &sdk.ToolAnnotations{ReadOnlyHint: true, IdempotentHint: true, OpenWorldHint: ptr(false)}

	sdk.AddTool(srv, &sdk.Tool{
		Name:  ToolLookupCustomer,
		Title: "Look up a customer",
		Description: "Finds the customer who owns an identity (a phone number, an email address, a user id...) " +
			"and returns their profile: id, traits, identities, consent per channel. Returns {\"customer\": null} " +
			"when nobody has it. Use get_customer_context instead before answering a customer.",
		Annotations: readOnly,
	}, func(ctx context.Context, req *sdk.CallToolRequest, in LookupArgs) (*sdk.CallToolResult, any, error) {
		return passOn(s.execute(ctx, creds(req), lookupQuery, map[string]any{"type": in.Type, "value": in.Value}))
	})

	sdk.AddTool(srv, &sdk.Tool{
		Name:        ToolGetCustomerContext,
		InputSchema: boundedSchema[ContextArgs](map[string][2]float64{"budget": {100, 32000}}),
		Title:       "Get a customer's context",
		Description: "Everything needed before answering a customer, in one call: identities, consent per channel " +
			"(never message on an opted-out channel), open conversations with their last messages on every channel, " +
			"recent events by name, observations earlier assistants recorded (verified first), merge notes and key traits. " +
			"\"text\" holds the same as a ready-to-prompt block within \"budget\" characters. Give customerId, or type and " +
			"value (e.g. type phone, value +14155550100). Returns {\"context\": null} when no customer matches.",
		Annotations: readOnly,
	}, func(ctx context.Context, req *sdk.CallToolRequest, in ContextArgs) (*sdk.CallToolResult, any, error) {
		vars := map[string]any{}
		switch {
		case in.CustomerID != "" && (in.Type != "" || in.Value != ""):
			return nil, nil, &ToolError{Code: c360.EINVALID, Message: "give customerId, or type and value, not both"}
		case in.CustomerID != "":
			vars["id"] = in.CustomerID
		case in.Type != "" && in.Value != "":
			vars["identity"] = map[string]any{"type": in.Type, "value": in.Value}
		default:
			return nil, nil, &ToolError{Code: c360.EINVALID, Message: "give customerId, or type and value"}
		}
		if in.Budget != 0 {
			vars["budget"] = in.Budget
		}
		return passOn(s.execute(ctx, creds(req), contextQuery, vars))
	})

	sdk.AddTool(srv, &sdk.Tool{
		Name:        ToolSearchCustomers,
		InputSchema: boundedSchema[SearchArgs](map[string][2]float64{"first": {1, 50}}),
		Title:       "Search customers",
		Description: "Finds customers whose name, email or phone number contains the query, newest first. " +
			"Returns their ids, traits and identities, and whether more match. A key that reads personal data " +
			"masked searches by a whole email address or phone number only (a name or fragment is refused with FORBIDDEN, " +
			"a blank query with BAD_USER_INPUT); for a key that reads it, a blank query lists every customer, and a fragment " +
			"holds at least 3 letters or digits (a shorter one is refused with BAD_USER_INPUT).",
		Annotations: readOnly,
	}, func(ctx context.Context, req *sdk.CallToolRequest, in SearchArgs) (*sdk.CallToolResult, any, error) {
		first := in.First
		if first == 0 {
			first = 10
		}
		if first < 1 || first > 50 {
			return nil, nil, &ToolError{Code: c360.EINVALID, Message: "first must be between 1 and 50"}
		}
		var data struct {
			Customers struct {
				Edges []struct {
					Node map[string]any `json:"node"`
				} `json:"edges"`
				PageInfo struct {
					HasNextPage bool `json:"hasNextPage"`
				} `json:"pageInfo"`
			} `json:"customers"`
		}
		raw, err := s.execute(ctx, creds(req), searchQuery, map[string]any{"query": in.Query, "first": first})
		if err == nil {
			err = decodeData(raw, &data)
		}
		if err != nil {
			return nil, nil, err
		}
		list := make([]any, len(data.Customers.Edges))
		for i, e := range data.Customers.Edges {
			list[i] = e.Node
		}
		return nil, Result{"customers": list, "hasMore": data.Customers.PageInfo.HasNextPage}, nil
	})

	sdk.AddTool(srv, &sdk.Tool{
		Name:        ToolListRecentMessages,
		InputSchema: boundedSchema[MessagesArgs](map[string][2]float64{"limit": {1, 100}}),
		Title:       "List a customer's recent messages",
		Description: "The customer's most recent messages on every channel (SMS, WhatsApp, chat), newest first, " +
			"each with its conversation, channel, direction (inbound from the customer, outbound to them) and status.",
		Annotations: readOnly,
	}, func(ctx context.Context, req *sdk.CallToolRequest, in MessagesArgs) (*sdk.CallToolResult, any, error) {
		limit := in.Limit
		if limit == 0 {
			limit = 20
		}
		if limit < 1 || limit > 100 {
			return nil, nil, &ToolError{Code: c360.EINVALID, Message: "limit must be between 1 and 100"}
		}
		res, err := s.recentMessages(ctx, creds(req), in.CustomerID, limit)
		if err != nil {
			return nil, nil, err
		}
		return nil, res, nil
	})

	sdk.AddTool(srv, &sdk.Tool{
		Name:        ToolRecordObservation,
		InputSchema: boundedSchema[ObservationArgs](map[string][2]float64{"confidence": {0, 1}}),
		Title:       "Record an observation",
		Description: "Records a durable fact learned about the customer (\"prefers WhatsApp after 6pm\", \"is moving to " +
			"Berlin in May\") so later assistants and agents see it in the customer's context. Record facts, not " +
			"transcripts; an agent may later verify it. Give a messageId so that a retry is recorded once.",
		Annotations: &sdk.ToolAnnotations{DestructiveHint: ptr(false), OpenWorldHint: ptr(false)},
	}, func(ctx context.Context, req *sdk.CallToolRequest, in ObservationArgs) (*sdk.CallToolResult, any, error) {
		vars := map[string]any{"customerId": in.CustomerID, "text": in.Text}
		if in.Source != "" {
			vars["source"] = in.Source
		}
		if in.Confidence != nil {
			vars["confidence"] = *in.Confidence
		}
		if in.MessageID != "" {
			vars["messageId"] = in.MessageID
		}
		return passOn(s.execute(ctx, creds(req), observationMutation, vars))
	})

	sendSchema, err := jsonschema.For[SendArgs](nil)
	if err != nil {
		panic(fmt.Sprintf("send_message schema: %v", err))
	}
	sendSchema.Properties["channel"].Enum = []any{c360.ChannelSMS, c360.ChannelWhatsApp}
	sdk.AddTool(srv, &sdk.Tool{
		Name:  ToolSendMessage,
		Title: "Send an SMS or WhatsApp message",
		Description: "Sends a message to the customer by SMS or WhatsApp and records it in their conversation. Only " +
			"agent and admin keys may send. Refused, with nothing sent, when the customer opted out of the channel, " +
			"has no phone number, or (WhatsApp) last wrote more than 24 hours ago. Check consent with " +
			"get_customer_context first. Give a messageId, so that a retry never texts the customer twice.",
		InputSchema: sendSchema,
		Annotations: &sdk.ToolAnnotations{DestructiveHint: ptr(false), OpenWorldHint: ptr(true)},
	}, func(ctx context.Context, req *sdk.CallToolRequest, in SendArgs) (*sdk.CallToolResult, any, error) {
		input := map[string]any{"customerId": in.CustomerID, "channel": in.Channel, "body": in.Body}
		if in.MessageID != "" {
			input["messageId"] = in.MessageID
		}
		return passOn(s.execute(ctx, creds(req), sendMutation, map[string]any{"input": input}))
	})
}

// conversationsPerRead is how many conversations list_recent_messages reads
// at a time, each with up to limit messages: at a limit of 100, a read costs
// about 8,000 of the 50,000 complexity the server allows one operation by
// default (server.Limits).
const conversationsPerRead = 10

// recentMessages is list_recent_messages's result: the customer's limit
// most recent messages across all their conversations, newest first.
//
// Conversations come most recently active first, and no message of a
// conversation is newer than its lastMessageAt. So no message of a
// conversation not read yet is newer than the lastMessageAt of the last one
// read: once the limit-th newest message read is newer than that, the list
// is complete, and most customers' is after the first read. A conversation's
// messages past its limit newest cannot make the list either.
func (s *Server) recentMessages(ctx context.Context, authorization, customerID string, limit int) (Result, error) {
	var (
		id    string
		msgs  []listedMessage
		after *string
	)
	for {
		var data struct {
			Customer *struct {
				ID            string `json:"id"`
				Conversations struct {
					Edges []struct {
						Node struct {
							ID            string     `json:"id"`
							Channel       string     `json:"channel"`
							Status        string     `json:"status"`
							LastMessageAt *time.Time `json:"lastMessageAt"`
							Messages      struct {
								Edges []struct {
									Node map[string]any `json:"node"`
								} `json:"edges"`
							} `json:"messages"`
						} `json:"node"`
					} `json:"edges"`
					PageInfo struct {
						HasNextPage bool   `json:"hasNextPage"`
						EndCursor   string `json:"endCursor"`
					} `json:"pageInfo"`
				} `json:"conversations"`
			} `json:"customer"`
		}
		vars := map[string]any{"id": customerID, "conversations": conversationsPerRead, "after": after, "messages": limit}
		raw, err := s.execute(ctx, authorization, messagesQuery, vars)
		if err == nil {
			err = decodeData(raw, &data)
		}
		if err != nil {
			return nil, err
		}
		if data.Customer == nil {
			return nil, &ToolError{Code: c360.ENOTFOUND, Message: fmt.Sprintf("no customer %s", customerID)}
		}
		id = data.Customer.ID
		convs := data.Customer.Conversations
		for _, c := range convs.Edges {
			for _, m := range c.Node.Messages.Edges {
				m.Node["conversationId"], m.Node["conversationStatus"] = c.Node.ID, c.Node.Status
				lm, err := listMessage(m.Node)
				if err != nil {
					return nil, err
				}
				msgs = append(msgs, lm)
			}
		}
		slices.SortFunc(msgs, newestFirst)
		if len(msgs) > limit {
			msgs = msgs[:limit]
		}
		if !convs.PageInfo.HasNextPage || len(convs.Edges) == 0 {
			break
		}
		// A conversation without messages is ordered by when it opened,
		// which the API does not tell: it bounds nothing, read on.
		last := convs.Edges[len(convs.Edges)-1].Node.LastMessageAt
		if len(msgs) == limit && last != nil && msgs[limit-1].at.After(*last) {
			break
		}
		after = &convs.PageInfo.EndCursor
	}
	list := make([]any, len(msgs))
	for i, m := range msgs {
		list[i] = m.node
	}
	return Result{"customerId": id, "messages": list}, nil
}

// listedMessage is a message of list_recent_messages: its GraphQL node, and
// the time and id it is ordered by.
type listedMessage struct {
	node map[string]any
	at   time.Time
	id   int64
}

func listMessage(node map[string]any) (listedMessage, error) {
	s, _ := node["createdAt"].(string)
	at, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return listedMessage{}, fmt.Errorf("message createdAt %q: %w", s, err)
	}
	s, _ = node["id"].(string)
	id, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return listedMessage{}, fmt.Errorf("message id %q: %w", s, err)
	}
	return listedMessage{node: node, at: at, id: id}, nil
}

// newestFirst orders messages as GraphQL pages them: newest first, then the
// higher id. Times are compared as times: the Time scalar drops a fraction's
// trailing zeros, so "…:58Z", the older, sorts after "…:58.3Z" as a string.
func newestFirst(a, b listedMessage) int {
	if c := b.at.Compare(a.at); c != 0 {
		return c
	}
	return cmp.Compare(b.id, a.id)
}

// passOn returns a tool's result as execute's data, as GraphQL wrote it.
func passOn(data json.RawMessage, err error) (*sdk.CallToolResult, any, error) {
	if err != nil {
		return nil, nil, err
	}
	return nil, data, nil
}

// decodeData decodes execute's data into out, keeping every number's
// digits.
func decodeData(data json.RawMessage, out any) error {
	if err := c360.UnmarshalExact(data, out); err != nil {
		return fmt.Errorf("decode graphql data: %w", err)
	}
	return nil
}

// boundedSchema is the input schema inferred from T, with each named
// number property held within its bounds. The SDK checks arguments against
// the schema before it decodes them: a number out of range is refused by
// the check, with the property and the bound named ("validating
// \"arguments\": ... /properties/budget: minimum: 0/1 is less than
// 100.000000"), and never reaches the decoder, whose error would name Go's
// types ("... into Go struct field mcp.ContextArgs.budget of type int").
// The bounds are the values the tool takes: a property left out takes its
// default, and 0 given is refused as any other number out of range.
func boundedSchema[T any](bounds map[string][2]float64) *jsonschema.Schema {
	s, err := jsonschema.For[T](nil)
	if err != nil {
		panic(fmt.Sprintf("input schema of %T: %v", *new(T), err))
	}
	for name, b := range bounds {
		p := s.Properties[name]
		if p == nil {
			panic(fmt.Sprintf("input schema of %T: no property %q", *new(T), name))
		}
		p.Minimum, p.Maximum = ptr(b[0]), ptr(b[1])
	}
	return s
}
