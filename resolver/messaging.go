package resolver

import (
	"context"
	"errors"
	"log/slog"

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
// at any step before the record records and sends nothing.
//
// The message is recorded, pending, before the provider is called, on the
// customer FindOutreach chose, so that a send whose outcome is unknown (no
// answer, a server error) still shows in the conversation, and the
// provider's status callbacks, which name it, move it on.
func (r *Resolver) sendMessage(ctx context.Context, customerID int64, channel, body string) (*c360.Message, error) {
	p, err := agent(ctx)
	if c360.ErrorCode(err) == c360.EFORBIDDEN {
		return nil, c360.Errorf(c360.EFORBIDDEN, "only admin and agent keys may send messages")
	} else if err != nil {
		return nil, err
	}
	if err := c360.CheckOutboundMessage(channel, body); err != nil {
		return nil, err
	}
	if r.MessagingService == nil || r.MessageSender == nil {
		return nil, c360.Errorf(c360.EUNAVAILABLE, "sending messages is not configured on this server")
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
	m, _, err := r.MessagingService.RecordOutbound(ctx, p.WorkspaceID, c360.OutboundRecord{
		CustomerID: o.CustomerID, Channel: channel, To: o.Phone, Body: body, SentBy: actorOf(p), Source: sendSource})
	if err != nil {
		return nil, err
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
