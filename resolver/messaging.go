package resolver

import (
	"context"
	"errors"
	"log/slog"
	"unicode/utf8"

	"github.com/c360dev/c360"
)

// sendSource is the source of the events that record sent messages: the
// provider's, whose status callbacks move them on.
const sendSource = "twilio"

// sendMessage sends body to the customer on channel and records it as an
// outbound message, in this order: who may send (admin and agent), what is
// sent, whether the customer may be messaged there (phone, consent, the
// WhatsApp session window) and whether the workspace can send on the
// channel; then the record, then the provider, then the outcome. A refusal
// at any step before the record records and sends nothing, and so does the
// record's own refusal of a customer who opted out since the checks
// (RecordOutbound reads the consent again under the customer's lock).
//
// The message is recorded, pending, before the provider is called, on the
// customer FindOutreach chose, so that a send whose outcome is unknown (no
// answer, a server error) still shows in the conversation, and the
// provider's status callbacks, which name it, move it on.
//
// key, the caller's idempotency key (messageId, "" for none), is claimed
// with the record. A repeat of a key sends nothing (repeatedSend); it is
// looked up before the checks too, so that a repeat of a completed send
// returns its message even after the customer opted out in reply.
func (r *Resolver) sendMessage(ctx context.Context, customerID int64, channel, body, key string) (*c360.Message, error) {
	p, err := agent(ctx)
	if c360.ErrorCode(err) == c360.EFORBIDDEN {
		return nil, c360.Errorf(c360.EFORBIDDEN, "only admin and agent keys may send messages")
	} else if err != nil {
		return nil, err
	}
	if err := c360.CheckOutboundMessage(channel, body); err != nil {
		return nil, err
	}
	if err := checkSendKey(key); err != nil {
		return nil, err
	}
	if r.MessagingService == nil || r.MessageSender == nil {
		return nil, c360.Errorf(c360.EUNAVAILABLE, "sending messages is not configured on this server")
	}
	if key != "" {
		m, err := r.MessagingService.FindOutbound(ctx, p.WorkspaceID, sendSource, key)
		switch {
		case err == nil && refusedForTheMoment(m):
			if err := r.freeSendKey(ctx, m); err != nil {
				return nil, err
			}
		case err == nil:
			return r.repeatedSend(ctx, m, customerID, channel, body, key)
		case c360.ErrorCode(err) != c360.ENOTFOUND:
			return nil, err
		}
	}
	o, err := r.MessagingService.FindOutreach(ctx, p.WorkspaceID, customerID, channel)
	if err != nil {
		return nil, err
	}
	if err := o.CheckSendable(r.Now()); err != nil {
		return nil, err
	}
	if err := r.MessageSender.CheckSender(o.Workspace, channel); err != nil {
		return nil, err
	}
	m, repeat, err := r.MessagingService.RecordOutbound(ctx, p.WorkspaceID, c360.OutboundRecord{
		CustomerID: o.CustomerID, Channel: channel, To: o.Phone, Body: body, SentBy: p.Actor(), Source: sendSource, Key: key})
	if err != nil {
		return nil, err
	}
	if repeat { // a concurrent call with the key recorded first
		return r.repeatedSend(ctx, m, customerID, channel, body, key)
	}

	sent, sendErr := r.MessageSender.SendMessage(ctx, o.Workspace, c360.OutboundMessage{Channel: channel, To: o.Phone, Body: body, MessageID: m.ID})
	// The message may be out: settle its record even if the caller has gone
	// away, so that the conversation shows what became of it.
	ctx = context.WithoutCancel(ctx)
	out := c360.OutboundOutcome{Status: c360.MessageUnconfirmed, Source: sendSource}
	var notSent *c360.NotSentError
	switch {
	case sendErr == nil:
		out.ProviderID, out.Status = sent.ProviderID, sent.Status
	case errors.As(sendErr, &notSent):
		out.Status, out.ErrorCode, out.OptedOut = c360.MessageFailed, notSent.ProviderCode, notSent.OptedOut
		// A refusal of the moment (a rate limit) must not spend the key:
		// retrying with it is what the key is for.
		out.ReleaseKey = key != "" && !notSent.Permanent
	}
	settled, err := r.MessagingService.SettleOutbound(ctx, p.WorkspaceID, m.ID, out)
	if err != nil {
		// Not the store's "retry": a retry would send the message twice.
		slog.Default().Error("record the outcome of a sent message", "message", m.ID, "messageSid", out.ProviderID, "error", err)
		if sendErr != nil {
			return nil, sendErr
		}
		return nil, c360.Errorf(c360.EINTERNAL, "the message was sent (Twilio SID %s) but its outcome could not be recorded: message %d stays %s until Twilio reports its status; do not send it again",
			sent.ProviderID, m.ID, c360.MessagePending)
	}
	switch {
	case sendErr == nil:
		return settled, nil
	case notSent != nil:
		return nil, sendErr
	}
	return nil, c360.Errorf(c360.ErrorCode(sendErr), "%s; it is recorded as message %d, status %s, until Twilio reports its status: check the conversation before sending it again",
		c360.ErrorMessage(sendErr), m.ID, settled.Status)
}

// checkSendKey validates sendMessage's messageId: at most
// c360.MaxSendKeyBytes of UTF-8 without NUL, which PostgreSQL's text
// refuses.
func checkSendKey(key string) error {
	if len(key) > c360.MaxSendKeyBytes {
		return c360.Errorf(c360.EINVALID, "messageId is %d bytes long, at most %d", len(key), c360.MaxSendKeyBytes)
	}
	return c360.CheckStorable("messageId", key)
}

// repeatedSend answers a sendMessage whose messageId was used before, with
// m, the message recorded then, and sends nothing: m itself when the
// provider took it (whatever became of it since); the provider's refusal
// again when it refused m itself (a refusal of the moment, such as a rate
// limit, freed the key, so its repeat never gets here); CONFLICT when the
// key was used for another message, or m's send is in flight or its outcome
// unknown, since answering with m would tell a retry that it was sent. A
// repeat records no audit entry.
func (r *Resolver) repeatedSend(ctx context.Context, m *c360.Message, customerID int64, channel, body, key string) (*c360.Message, error) {
	same := m.Channel == channel && m.Body == body
	if same && m.CustomerID != customerID {
		// customerID may have been merged into the message's customer.
		c, err := r.CustomerService.FindCustomerByID(ctx, m.WorkspaceID, customerID)
		if err != nil && c360.ErrorCode(err) != c360.ENOTFOUND {
			return nil, err
		}
		same = c != nil && c.ID == m.CustomerID
	}
	switch {
	case !same:
		return nil, c360.Errorf(c360.ECONFLICT, "messageId %q was used for another message (message %d: another customer, channel or body); give a new message a new messageId",
			truncateKey(key), m.ID)
	case m.Status == c360.MessageFailed && m.ProviderID == "":
		return nil, refusedAgain(m, key)
	case m.Status == c360.MessagePending && r.Now().Sub(m.CreatedAt) > c360.StalePending:
		// Its send ended long ago without recording an outcome (its server
		// stopped mid-send): no answer will come from it.
		return nil, c360.Errorf(c360.ECONFLICT, "the outcome of the message sent with messageId %q (message %d) is unknown: its send was interrupted before Twilio's answer was recorded, and it stays unconfirmed until Twilio's status callback reports on it; check the conversation before sending it again, with a new messageId",
			truncateKey(key), m.ID)
	case m.Status == c360.MessagePending:
		return nil, c360.Errorf(c360.ECONFLICT, "the message sent with messageId %q (message %d) is still being sent; check the conversation for its outcome instead of sending it again",
			truncateKey(key), m.ID)
	case m.Status == c360.MessageUnconfirmed:
		return nil, c360.Errorf(c360.ECONFLICT, "the outcome of the message sent with messageId %q (message %d) is unknown: Twilio did not confirm it, and it stays unconfirmed until Twilio's status callback reports on it; check the conversation before sending it again, with a new messageId",
			truncateKey(key), m.ID)
	}
	// Nothing was sent: the first send's message.send entry is the only one.
	changedNothing(ctx)
	return m, nil
}

// refusedForTheMoment reports whether m, found by its send's key, was
// refused by the provider for a moment only (c360.MomentaryRefusal), so
// its key should have been freed: m was refused before the provider's code
// was known to be a momentary one, when such refusals kept their key.
func refusedForTheMoment(m *c360.Message) bool {
	return m.Status == c360.MessageFailed && m.ProviderID == "" && c360.MomentaryRefusal(m.ErrorCode)
}

// freeSendKey frees the key of m, a message refusedForTheMoment, as its
// send would free it now (SettleOutbound with ReleaseKey, in its
// transaction; its status, failed, does not change), so that the send
// that found it records and sends anew. A concurrent repeat that frees it
// too changes nothing, and of the two sends that then record with the key,
// one claims it and the other answers as a repeat of it.
func (r *Resolver) freeSendKey(ctx context.Context, m *c360.Message) error {
	_, err := r.MessagingService.SettleOutbound(ctx, m.WorkspaceID, m.ID, c360.OutboundOutcome{
		Status: c360.MessageFailed, ErrorCode: m.ErrorCode, ReleaseKey: true, Source: sendSource})
	return err
}

// unsubscribedCode is Twilio's error code for a recipient who replied STOP
// to the sender, which the sender answers FORBIDDEN.
const unsubscribedCode = "21610"

// refusedAgain is the answer to a repeat of a send the provider refused
// (m: failed, never given a provider id), with the code the refusal was
// answered with: FORBIDDEN for an unsubscribed recipient, else
// BAD_USER_INPUT, as the sender's interpret maps Twilio's lasting
// refusals. A momentary refusal's key is freed (by its send, or by
// sendMessage when it finds the key still held: refusedForTheMoment), so
// its repeat sends rather than getting here.
func refusedAgain(m *c360.Message, key string) error {
	twilioCode := "no Twilio error code"
	if m.ErrorCode != "" {
		twilioCode = "Twilio error " + m.ErrorCode
	}
	if m.ErrorCode == unsubscribedCode {
		return c360.Errorf(c360.EFORBIDDEN, "messageId %q was used for message %d, which Twilio refused and did not send (%s): the customer unsubscribed from this sender (replied STOP), and their opt-out is recorded",
			truncateKey(key), m.ID, twilioCode)
	}
	return c360.Errorf(c360.EINVALID, "messageId %q was used for message %d, which Twilio refused and did not send (%s); sent again it would be refused again: correct it, and send it with a new messageId",
		truncateKey(key), m.ID, twilioCode)
}

// truncateKey shortens a messageId for an error message.
func truncateKey(key string) string {
	if len(key) <= 64 {
		return key
	}
	cut := 64
	for cut > 0 && !utf8.RuneStart(key[cut]) {
		cut--
	}
	return key[:cut] + "..."
}
