package whatsapp

import (
	"encoding/json"
	"strconv"
	"strings"
	"time"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/connectors/webhook"
	"github.com/c360dev/c360/identity"
)

// Source is the event source of everything this connector records.
const Source = "whatsapp"

// MediaPrefix marks a media reference in a message's media URLs: the Cloud
// API sends media ids, which an app exchanges for a short-lived URL with
// its access token.
const MediaPrefix = "whatsapp-media:"

// NumberChangedEvent names the track event recorded when a customer moves
// their WhatsApp account to a new number.
const NumberChangedEvent = "WhatsApp Number Changed"

// payload is a Cloud API webhook notification; only what c360 reads.
type payload struct {
	Object string `json:"object"`
	Entry  []struct {
		ID      string `json:"id"`
		Changes []struct {
			Field string `json:"field"`
			Value value  `json:"value"`
		} `json:"changes"`
	} `json:"entry"`
}

type value struct {
	Metadata struct {
		DisplayPhoneNumber string `json:"display_phone_number"`
		PhoneNumberID      string `json:"phone_number_id"`
	} `json:"metadata"`
	Contacts []struct {
		Profile struct {
			Name string `json:"name"`
		} `json:"profile"`
		WaID string `json:"wa_id"`
	} `json:"contacts"`
	Messages []message `json:"messages"`
	Statuses []status  `json:"statuses"`
}

type message struct {
	From      string `json:"from"`
	ID        string `json:"id"`
	Timestamp string `json:"timestamp"`
	Type      string `json:"type"`
	Text      *struct {
		Body string `json:"body"`
	} `json:"text"`
	Image       *media `json:"image"`
	Audio       *media `json:"audio"`
	Video       *media `json:"video"`
	Document    *media `json:"document"`
	Sticker     *media `json:"sticker"`
	Interactive *struct {
		Type        string `json:"type"`
		ButtonReply *reply `json:"button_reply"`
		ListReply   *reply `json:"list_reply"`
	} `json:"interactive"`
	Button *struct {
		Payload string `json:"payload"`
		Text    string `json:"text"`
	} `json:"button"`
	Reaction *struct {
		MessageID string `json:"message_id"`
		Emoji     string `json:"emoji"`
	} `json:"reaction"`
	Location *struct {
		Latitude  float64 `json:"latitude"`
		Longitude float64 `json:"longitude"`
		Name      string  `json:"name"`
		Address   string  `json:"address"`
	} `json:"location"`
	System *struct {
		Body    string `json:"body"`
		Type    string `json:"type"`
		NewWaID string `json:"new_wa_id"`
		WaID    string `json:"wa_id"`
	} `json:"system"`
	Context *struct {
		ID string `json:"id"`
	} `json:"context"`
}

type media struct {
	ID       string `json:"id"`
	MimeType string `json:"mime_type"`
	Caption  string `json:"caption"`
	Filename string `json:"filename"`
}

type reply struct {
	ID          string `json:"id"`
	Title       string `json:"title"`
	Description string `json:"description"`
}

type status struct {
	ID          string `json:"id"`
	Status      string `json:"status"`
	Timestamp   string `json:"timestamp"`
	RecipientID string `json:"recipient_id"`
	Errors      []struct {
		Code  int    `json:"code"`
		Title string `json:"title"`
	} `json:"errors"`
}

// ParsePayload turns a Cloud API notification into canonical events, in
// the order received: one message event per inbound message (deduplicated by
// its wamid), one message_status event per status (by wamid and status), and
// a track event carrying the old and new number for user_changed_number.
// Entries that are not about messages are ignored; malformed JSON is EINVALID.
func ParsePayload(body []byte, now time.Time) ([]*c360.Event, error) {
	var p payload
	if err := json.Unmarshal(body, &p); err != nil {
		return nil, c360.Errorf(c360.EINVALID, "the body is not a WhatsApp notification: %s", webhook.DescribeJSONError(err, "the body", nil))
	}
	if p.Object != "" && p.Object != "whatsapp_business_account" {
		return nil, nil
	}
	var out []*c360.Event
	for _, e := range p.Entry {
		for _, ch := range e.Changes {
			if ch.Field != "" && ch.Field != "messages" {
				continue
			}
			names := map[string]string{}
			for _, c := range ch.Value.Contacts {
				if n := strings.TrimSpace(c.Profile.Name); n != "" && c.WaID != "" {
					names[c.WaID] = n
				}
			}
			for i := range ch.Value.Messages {
				if ev := messageEvent(&ch.Value.Messages[i], names, ch.Value.Metadata.DisplayPhoneNumber, now); ev != nil {
					out = append(out, ev)
				}
			}
			for i := range ch.Value.Statuses {
				if ev := statusEvent(&ch.Value.Statuses[i], now); ev != nil {
					out = append(out, ev)
				}
			}
		}
	}
	return out, nil
}

// messageEvent returns the event for one inbound message, or nil when it
// lacks the id or sender every event needs. A text or caption that is a
// consent keyword (c360.ConsentKeyword) sets the customer's WhatsApp
// consent; a button's or list item's title never does.
func messageEvent(m *message, names map[string]string, businessNumber string, now time.Time) *c360.Event {
	if m.ID == "" || m.From == "" {
		return nil
	}
	at := timestamp(m.Timestamp, now)
	if m.Type == "system" && m.System != nil && m.System.Type == "user_changed_number" {
		newID := m.System.NewWaID
		if newID == "" {
			newID = m.System.WaID
		}
		if newID == "" {
			return nil
		}
		return &c360.Event{
			Type:       c360.EventTrack,
			Name:       NumberChangedEvent,
			Source:     Source,
			DedupeKey:  m.ID,
			Identities: []c360.Identity{{Type: "phone", Value: phone(m.From)}, {Type: "phone", Value: phone(newID)}},
			Properties: map[string]any{"previousPhone": phone(m.From), "phone": phone(newID), "previousWaId": m.From, "waId": newID},
			OccurredAt: at,
			ReceivedAt: now,
		}
	}
	props := map[string]any{"type": m.Type, "waId": m.From}
	if businessNumber != "" {
		props["to"] = phone(businessNumber)
	}
	if m.Context != nil && m.Context.ID != "" {
		props["replyTo"] = m.Context.ID
	}
	msg := &c360.MessageInput{
		Channel:    c360.ChannelWhatsApp,
		Direction:  c360.DirectionInbound,
		ProviderID: m.ID,
		Status:     "received",
	}
	// typed is set when the body is the customer's own words (a text, a
	// caption), which alone may be a consent keyword.
	typed := false
	switch {
	case m.Text != nil:
		msg.Body, typed = m.Text.Body, true
	case m.Image != nil, m.Audio != nil, m.Video != nil, m.Document != nil, m.Sticker != nil:
		md := firstMedia(m.Image, m.Audio, m.Video, m.Document, m.Sticker)
		msg.Body, typed = md.Caption, true
		if md.ID != "" {
			msg.MediaURLs = []string{MediaPrefix + md.ID}
		}
		if md.MimeType != "" {
			props["mimeType"] = md.MimeType
		}
		if md.Filename != "" {
			props["filename"] = md.Filename
		}
	case m.Interactive != nil:
		r := m.Interactive.ButtonReply
		if r == nil {
			r = m.Interactive.ListReply
		}
		if r != nil {
			msg.Body = r.Title
			props["interactive"] = map[string]any{"type": m.Interactive.Type, "id": r.ID, "title": r.Title}
		}
	case m.Button != nil:
		msg.Body = m.Button.Text
		props["button"] = map[string]any{"payload": m.Button.Payload, "text": m.Button.Text}
	case m.Reaction != nil:
		msg.Body = m.Reaction.Emoji
		props["reactionTo"] = m.Reaction.MessageID
	case m.Location != nil:
		props["location"] = map[string]any{"latitude": m.Location.Latitude, "longitude": m.Location.Longitude,
			"name": m.Location.Name, "address": m.Location.Address}
	}
	ev := &c360.Event{
		Type:       c360.EventMessage,
		Source:     Source,
		DedupeKey:  m.ID,
		Identities: []c360.Identity{{Type: "phone", Value: phone(m.From)}},
		Properties: props,
		OccurredAt: at,
		ReceivedAt: now,
		Message:    msg,
	}
	if name, ok := names[m.From]; ok {
		ev.TraitsIfAbsent = map[string]any{"name": name}
		props["profileName"] = name
	}
	// What the customer typed (a text, a caption) is read for a consent
	// keyword as Twilio's body is, so that a STOP opts out of WhatsApp
	// whichever way it reaches c360: stored as an ordinary message, it
	// would open the 24-hour window instead, and let an agent write to
	// someone who just wrote STOP. A reply button's, a list item's or a
	// template quick reply's title is not: the business wrote it, for its
	// own purpose, and a customer who taps "Cancel" under an appointment
	// reminder, or "Yes", decides nothing about being messaged.
	keyword, consent := "", ""
	if typed {
		keyword, consent = c360.ConsentKeyword(msg.Body)
	}
	if keyword != "" {
		props["keyword"] = keyword
	}
	if consent != "" {
		ev.Consent = &c360.ConsentInput{Channel: c360.ChannelWhatsApp, Status: consent}
	}
	return ev
}

// statusEvent returns the message_status event for one status of a message
// the business sent, or nil when it lacks what every status needs.
func statusEvent(s *status, now time.Time) *c360.Event {
	st := strings.ToLower(strings.TrimSpace(s.Status))
	if s.ID == "" || s.RecipientID == "" || st == "" || len(st) > 32 {
		return nil
	}
	props := map[string]any{"messageId": s.ID, "status": st, "waId": s.RecipientID}
	msg := &c360.MessageInput{
		Channel:    c360.ChannelWhatsApp,
		Direction:  c360.DirectionOutbound,
		ProviderID: s.ID,
		Status:     st,
	}
	if len(s.Errors) > 0 {
		msg.ErrorCode = strconv.Itoa(s.Errors[0].Code)
		props["errorCode"] = msg.ErrorCode
		if s.Errors[0].Title != "" {
			props["errorTitle"] = s.Errors[0].Title
		}
	}
	return &c360.Event{
		Type:       c360.EventMessageStatus,
		Source:     Source,
		DedupeKey:  s.ID + ":" + st,
		Identities: []c360.Identity{{Type: "phone", Value: phone(s.RecipientID)}},
		Properties: props,
		OccurredAt: timestamp(s.Timestamp, now),
		ReceivedAt: now,
		Message:    msg,
	}
}

func firstMedia(ms ...*media) *media {
	for _, m := range ms {
		if m != nil {
			return m
		}
	}
	return &media{}
}

// phone turns a WhatsApp id (the number's digits) into the phone number it
// stands for (identity.WhatsAppNumber: a Mexican mobile's wa_id has a 1
// the number has not, an old Brazilian one lacks the ninth digit), as a
// phone identity value; ingest normalizes it to E.164 or refuses it. The
// wa_id itself is kept in the event's properties (waId).
func phone(waID string) string {
	waID = strings.TrimSpace(waID)
	if !strings.HasPrefix(waID, "+") {
		waID = "+" + waID
	}
	return identity.WhatsAppNumber(waID)
}

// timestamp parses Unix seconds, falling back to now, also for a time
// more than webhook.MaxFuture ahead.
func timestamp(s string, now time.Time) time.Time {
	sec, err := strconv.ParseInt(s, 10, 64)
	if err != nil || sec <= 0 {
		return now
	}
	return webhook.OccurredAt(time.Unix(sec, 0).UTC(), now)
}
