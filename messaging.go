package c360

import (
	"context"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
)

// Message statuses that end a message's life: no later callback moves it.
const (
	MessageFailed      = "failed"
	MessageUndelivered = "undelivered"
)

// Statuses c360 gives an outbound message before the provider reports one.
const (
	// MessagePending: recorded, and being handed to the provider. A message
	// still pending StalePending after it was recorded (its server stopped
	// mid-send, or the outcome could not be recorded) has an unknown
	// outcome, and is swept to unconfirmed.
	MessagePending = "pending"
	// MessageUnconfirmed: the provider did not answer, or answered with a
	// server error, so it may or may not have taken the message. Its status
	// callback, if any comes, moves it on.
	MessageUnconfirmed = "unconfirmed"
)

// StalePending is how long after it was recorded a pending message's send
// has certainly ended: well past a provider call's timeout (Twilio's is
// 10 s) and the recording of its outcome, with the store's retries. A
// message still pending then will not be settled by its send: its outcome
// is unknown, as an unconfirmed message's is.
const StalePending = 2 * time.Minute

// SessionWindow is how long after a customer's last inbound WhatsApp message
// a business may send them free-form text. Outside it WhatsApp accepts only
// pre-approved templates, which c360 does not send.
const SessionWindow = 24 * time.Hour

// MaxMessageBody bounds an outbound body: Twilio refuses more than 1600 characters.
const MaxMessageBody = 1600

// OutboundMessage is a message to send to a customer through a provider.
type OutboundMessage struct {
	Channel string // sms or whatsapp
	To      string // E.164 phone number, without any channel prefix
	Body    string
	// MessageID is c360's id of the message, recorded before it is sent:
	// the provider's status callbacks name it, so they reach the message
	// even when the provider's answer to the send was lost.
	MessageID int64
}

// NotSentError reports that a provider did not take a message, so it was
// certainly not sent: the provider refused it (ProviderCode, e.g. Twilio's
// 21211), or it was never handed over. Err is the domain error to answer
// with; errors.As on *Error and ErrorCode see through it. An error that is
// not a NotSentError leaves the outcome unknown.
type NotSentError struct {
	ProviderCode string
	// OptedOut is set when the provider refuses because the recipient
	// unsubscribed (replied STOP to the sender): the customer's consent on
	// the channel is recorded as opted out.
	OptedOut bool
	// Permanent is set when the provider refused the message itself (an
	// invalid number, an unsubscribed recipient): sent again, it would be
	// refused again, so a repeat of its idempotency key answers the same
	// refusal. Otherwise (a rate limit, the workspace's credentials,
	// account or sender, a message never handed over: see
	// MomentaryRefusal) the refusal is the moment's, and the key is freed:
	// a repeat sends.
	Permanent bool
	Err       error
}

// setupRefusals are the provider's (Twilio's) error codes of refusals of
// the workspace's provider setup rather than of the message: its
// credentials, its account, its sender or Messaging Service. The message
// itself is not at fault: once an admin corrects the setup, the same
// message is taken. A code Twilio also answers when the sender cannot
// reach this recipient (21606 and 21659: a short code to another country,
// a number not capable of messaging there; 21703: no sender of the
// Messaging Service for this destination) is not one: the same message
// would be refused again, so it is the message's refusal.
var setupRefusals = map[string]bool{
	"20003": true, // the account's credentials (401)
	"20404": true, // the account (or the resource the request names) is not found (404)
	"21222": true, // an Account SID with characters no SID holds (twilio-go refuses it before any request)
	"21224": true, // an auth token with characters no token holds (twilio-go refuses it before any request)
	"21212": true, // the From number is not a valid phone number, short code or sender ID
	"21603": true, // no From number or Messaging Service
	"21701": true, // the Messaging Service does not exist
	"21704": true, // the Messaging Service holds no sender
	"63007": true, // no WhatsApp channel for the From address
}

// SetupRefusal reports whether providerCode, the error code of a
// provider's refusal (as Message.ErrorCode holds it), names a refusal of
// the workspace's provider setup (credentials, account, sender), which its
// admin fixes, rather than of the message.
func SetupRefusal(providerCode string) bool { return setupRefusals[providerCode] }

// MomentaryRefusal reports whether providerCode, the error code of a
// provider's refusal (as Message.ErrorCode holds it), names a refusal that
// lasts only a moment: a rate limit (Twilio's 20429, and 21611, the
// sender's queue is full: slow down, the same message is then taken, though
// Twilio answers most of them with 400, as it answers a refusal of the
// message itself), or the workspace's provider setup (SetupRefusal), which
// its admin may fix. Such a refusal does not use up the send's idempotency
// key, since the same message is taken once the moment has passed. Any
// other refusal with a code is of the message itself.
func MomentaryRefusal(providerCode string) bool {
	return providerCode == "20429" || providerCode == "21611" || SetupRefusal(providerCode)
}

// Error implements the error interface.
func (e *NotSentError) Error() string { return e.Err.Error() }

// Unwrap returns the domain error.
func (e *NotSentError) Unwrap() error { return e.Err }

// SentMessage is a provider's answer to a message it accepted.
type SentMessage struct {
	ProviderID string // Twilio's message SID
	Status     string // queued, accepted, ...
}

// MessageSender sends messages through a provider with the workspace's
// credentials. It refuses with EINVALID, before any request, when the
// workspace lacks credentials or a sender for the channel. A provider's
// refusal of the message is EINVALID (or EFORBIDDEN, ERATELIMITED); its
// refusal of the workspace's setup (SetupRefusal: credentials, account,
// sender) is EUNAVAILABLE, saying so; a provider that cannot be reached is
// EUNAVAILABLE.
type MessageSender interface {
	// CheckSender returns the EINVALID refusal SendMessage would answer
	// before any request (no credentials, no sender for the channel), or nil.
	CheckSender(ws *Workspace, channel string) error
	// SendMessage sends m. A *NotSentError means the message was certainly
	// not sent; any other error leaves it unknown.
	SendMessage(ctx context.Context, ws *Workspace, m OutboundMessage) (*SentMessage, error)
}

// MaxSendKeyBytes bounds sendMessage's idempotency key (messageId), as
// identify's and recordObservation's are bounded.
const MaxSendKeyBytes = 256

// OutboundRecord is a message about to be sent, as it is recorded before
// the provider is called.
type OutboundRecord struct {
	CustomerID int64 // the customer chosen to receive it (Outreach.CustomerID)
	Channel    string
	To         string // the number it is sent to (Outreach.Phone)
	Body       string
	SentBy     string // the sender's actor, e.g. "key 3f9a0c1b2d4e"
	Source     string // the provider's source name (twilio), the event's source
	// Key is the caller's idempotency key (sendMessage's messageId), "" for none.
	Key string
}

// OutboundOutcome is what became of the send of a recorded message.
type OutboundOutcome struct {
	ProviderID string // the provider's id, when it took the message
	Status     string // the provider's status, MessageFailed or MessageUnconfirmed
	ErrorCode  string // the provider's error code of a refusal
	// OptedOut records the customer's consent on the channel as opted out,
	// from Source (the provider refused because the recipient unsubscribed).
	OptedOut bool
	// ReleaseKey frees the message's idempotency key (a refusal that is not
	// Permanent): the failed message stays in the conversation, and a
	// repeat of the key records and sends anew.
	ReleaseKey bool
	Source     string
}

// Outreach is what deciding whether a customer may be messaged on a channel
// needs: the workspace's provider settings and the customer's phone, consent
// and last inbound message on that channel.
type Outreach struct {
	Workspace  *Workspace
	CustomerID int64 // the surviving customer, if the id asked for was merged away
	Channel    string
	// Phone is the number to send to: the one the customer last wrote from
	// on the channel, else the customer's most recently seen phone; never
	// one the workspace's identity rules block. "" if there is none.
	Phone string
	// Consent is the customer's consent on the channel, nil if never given or withdrawn.
	Consent *Consent
	// LastInboundAt is when the customer last wrote on the channel from
	// Phone, nil if never: on WhatsApp, the session window is that number's.
	// On WhatsApp only a message to the business number sendMessage sends
	// from counts, since the window is that number's too: one the customer
	// sent to another (a WhatsApp Cloud API number, another Twilio sender)
	// neither opens it nor chooses Phone.
	LastInboundAt *time.Time
}

// CheckSendable returns why the customer must not be messaged on the channel
// now, or nil. Refusals are domain errors a client can act on: EFORBIDDEN for
// an opt-out or a closed WhatsApp session window, EINVALID for a customer
// without a phone number.
func (o *Outreach) CheckSendable(now time.Time) error {
	if o.Phone == "" {
		// BAD_USER_INPUT, not NOT_FOUND: the customer exists, but this input
		// (this customer on a phone channel) cannot be served.
		return Errorf(EINVALID, "customer %d has no phone number to send %s to", o.CustomerID, channelName(o.Channel))
	}
	if o.Consent != nil && o.Consent.Status == ConsentOptedOut {
		return OptedOutError(o.Channel)
	}
	if o.Channel == ChannelWhatsApp {
		if o.LastInboundAt == nil {
			return Errorf(EFORBIDDEN, "the WhatsApp 24-hour session window is closed: the customer has never written to the WhatsApp number c360 sends from; only approved templates may be sent, which c360 does not send")
		}
		if now.Sub(*o.LastInboundAt) > SessionWindow {
			return Errorf(EFORBIDDEN, "the WhatsApp 24-hour session window is closed: the customer last wrote to the WhatsApp number c360 sends from at %s; only approved templates may be sent, which c360 does not send",
				o.LastInboundAt.UTC().Format(time.RFC3339))
		}
	}
	return nil
}

// OptedOutError is the refusal of a send on channel to a customer who
// opted out of it.
func OptedOutError(channel string) error {
	return Errorf(EFORBIDDEN, "customer opted out of %s", channel)
}

// CheckOutboundMessage validates a sendMessage input. It runs before
// anything is sent, so it also refuses a body the message's record could not
// hold: PostgreSQL's text takes neither a NUL character nor invalid UTF-8,
// and a message sent that way could never be recorded (or replayed).
func CheckOutboundMessage(channel, body string) error {
	if channel != ChannelSMS && channel != ChannelWhatsApp {
		return Errorf(EINVALID, "channel must be sms or whatsapp, got %q", truncateForMessage(channel))
	}
	if !utf8.ValidString(body) {
		return Errorf(EINVALID, "body is not valid UTF-8")
	}
	if i := strings.IndexByte(body, 0); i >= 0 {
		return Errorf(EINVALID, "body holds a NUL character (U+0000) at character %d; remove it", utf8.RuneCountInString(body[:i])+1)
	}
	if strings.TrimSpace(body) == "" {
		return Errorf(EINVALID, "body must not be empty")
	}
	if n := len([]rune(body)); n > MaxMessageBody {
		return Errorf(EINVALID, "body is %d characters long, at most %d", n, MaxMessageBody)
	}
	return nil
}

// MessagingService reads what sending a message needs.
type MessagingService interface {
	// FindOutreach returns the workspace settings and the customer's phone,
	// consent and session state on channel; ENOTFOUND for an unknown customer.
	FindOutreach(ctx context.Context, workspaceID, customerID int64, channel string) (*Outreach, error)
	// FindMessageByProviderID returns the message with the provider's id, or ENOTFOUND.
	FindMessageByProviderID(ctx context.Context, workspaceID int64, providerID string) (*Message, error)
	// FindOutbound returns the outbound message recorded under the
	// idempotency key with the provider's source name, or ENOTFOUND.
	FindOutbound(ctx context.Context, workspaceID int64, source, key string) (*Message, error)
	// RecordOutbound records a message about to be sent as an outbound
	// message of the customer (or its survivor), status MessagePending, and
	// returns it. When in.Key was used before, it records nothing and
	// returns the message recorded under it, with repeat true. Otherwise,
	// when the customer has opted out of the channel (a STOP that
	// committed after FindOutreach read the consent), it records nothing
	// and refuses with OptedOutError, as CheckSendable does.
	RecordOutbound(ctx context.Context, workspaceID int64, in OutboundRecord) (m *Message, repeat bool, err error)
	// SettleOutbound applies the outcome of a recorded message's send: it
	// attaches the provider's id and moves the status forward only, so a
	// status callback that came first is never undone; it records an
	// opt-out (out.OptedOut) and frees the key (out.ReleaseKey). It
	// returns the message as stored.
	SettleOutbound(ctx context.Context, workspaceID, messageID int64, out OutboundOutcome) (*Message, error)
}

// MessageStatusRank orders message statuses so that callbacks arriving out of
// order never move a message backwards: pending < unconfirmed < accepted,
// scheduled < queued < sending < sent < delivered < read, and failed,
// undelivered and canceled end it. c360's own statuses rank below every
// provider's, so any status the provider reports moves a message on.
// Unknown statuses rank 0 and never replace a known one.
func MessageStatusRank(status string) int {
	switch status {
	case MessagePending:
		return 1
	case MessageUnconfirmed:
		return 2
	case "accepted", "scheduled":
		return 3
	case "queued":
		return 4
	case "sending":
		return 5
	case "sent", "receiving":
		return 6
	case "received":
		return 7
	case "delivered":
		return 8
	case "read":
		return 9
	case MessageFailed, MessageUndelivered, "canceled":
		return 10
	}
	return 0
}

// MessageStatusFinal reports whether a message in status s never changes
// status again: failed, undelivered and canceled are final.
func MessageStatusFinal(s string) bool {
	return s == MessageFailed || s == MessageUndelivered || s == "canceled"
}

// MessageStatusAdvances reports whether a message in status current moves to
// next: only forward, never out of a final status.
func MessageStatusAdvances(current, next string) bool {
	if MessageStatusFinal(current) || next == current {
		return false
	}
	return MessageStatusRank(next) > MessageStatusRank(current)
}

// ErrorCodeOrNil returns the provider's error code, or nil when there is none.
func (m *Message) ErrorCodeOrNil() *string {
	if m.ErrorCode == "" {
		return nil
	}
	return &m.ErrorCode
}

// ProviderIDOrNil returns the provider's id of the message, or nil when
// the provider has none for it: an outbound message it refused (Twilio's
// 21211, an invalid number) or whose outcome is unknown, or one not sent
// yet. The store keeps no id as NULL; a row an earlier build stored with
// an empty id reads as none too.
func (m *Message) ProviderIDOrNil() *string {
	if m.ProviderID == "" {
		return nil
	}
	return &m.ProviderID
}

// ChangeCursorOrNil returns the position of the change that delivered the
// message to a subscription, or nil outside one.
func (m *Message) ChangeCursorOrNil() *string {
	if m.ChangeCursor == "" {
		return nil
	}
	return &m.ChangeCursor
}

func channelName(ch string) string {
	if ch == ChannelWhatsApp {
		return "WhatsApp messages"
	}
	return "SMS"
}

func truncateForMessage(s string) string {
	if len(s) > 40 {
		return fmt.Sprintf("%.40s...", s)
	}
	return s
}
