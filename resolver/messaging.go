package resolver

import (
	"context"
	"log/slog"

	"github.com/c360dev/c360"
)

// sendMessage sends body to the customer on channel and records it as an
// outbound message, in this order: who may send (admin and agent), what is
// sent, whether the customer may be messaged there (phone, consent, the
// WhatsApp session window), then the provider, then the record. A refusal at
// any step before the provider sends nothing.
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
	sent, err := r.MessageSender.SendMessage(ctx, o.Workspace, c360.OutboundMessage{Channel: channel, To: o.Phone, Body: body})
	if err != nil {
		return nil, err
	}

	// The message is out: record it even if the caller has gone away, so a
	// sent message is never missing from the conversation.
	ctx = context.WithoutCancel(ctx)
	now := r.Now()
	ev := &c360.Event{
		Type:       c360.EventMessage,
		Source:     "twilio",
		DedupeKey:  sent.ProviderID,
		Identities: []c360.Identity{{Type: "phone", Value: o.Phone}},
		Properties: map[string]any{"sentBy": actorOf(p)},
		OccurredAt: now,
		ReceivedAt: now,
		Message: &c360.MessageInput{
			Channel:    channel,
			Direction:  c360.DirectionOutbound,
			Body:       body,
			ProviderID: sent.ProviderID,
			Status:     sent.Status,
		},
	}
	if _, err := r.Ingester.Ingest(ctx, p.WorkspaceID, []*c360.Event{ev}); err != nil {
		// Not the store's "retry": a retry would send the message twice.
		slog.Default().Error("record sent message", "messageSid", sent.ProviderID, "error", err)
		return nil, c360.Errorf(c360.EINTERNAL, "the message was sent (Twilio SID %s) but could not be recorded; do not send it again", sent.ProviderID)
	}
	return r.MessagingService.FindMessageByProviderID(ctx, p.WorkspaceID, sent.ProviderID)
}
