package whatsapp

import (
	"encoding/json"
	"slices"
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

// UserIDType is the identity type of a WhatsApp user's business-scoped
// user id (BSUID, "US.13491208655302741918"): Meta's id of the user for
// this business, sent beside the phone number, and instead of it for a
// user who adopted a username (messages' from_user_id, contacts' user_id,
// statuses' recipient_user_id). It is a custom identity type: ingest
// trims it and keeps its case. A message that carries both the number and
// the BSUID links the two on one customer.
const UserIDType = "whatsapp_user_id"

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
	Contacts []contact `json:"contacts"`
	Messages []message `json:"messages"`
	Statuses []status  `json:"statuses"`
}

// contact is one entry of a notification's contacts: the profile of a
// user its messages are from.
type contact struct {
	Profile struct {
		Name     string `json:"name"`
		Username string `json:"username"`
	} `json:"profile"`
	WaID   string `json:"wa_id"`
	UserID string `json:"user_id"`
}

type message struct {
	// From is the sender's wa_id (the number); Meta leaves it out for a
	// user who adopted a username, whose FromUserID (BSUID) is the only
	// id of the sender.
	From       string `json:"from"`
	FromUserID string `json:"from_user_id"`
	ID         string `json:"id"`
	Timestamp  string `json:"timestamp"`
	Type       string `json:"type"`
	Text       *struct {
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
		UserID  string `json:"user_id"` // the new BSUID, which a number change changes too
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
	ID        string `json:"id"`
	Status    string `json:"status"`
	Timestamp string `json:"timestamp"`
	// RecipientID is the recipient's wa_id, left out for a message sent to
	// a BSUID; RecipientUserID is the BSUID. Neither is needed: a status
	// finds its message by the wamid.
	RecipientID     string `json:"recipient_id"`
	RecipientUserID string `json:"recipient_user_id"`
	Errors          []struct {
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
			for i := range ch.Value.Messages {
				if ev := messageEvent(&ch.Value.Messages[i], ch.Value.Contacts, ch.Value.Metadata.DisplayPhoneNumber, now); ev != nil {
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
// lacks the wamid every event is keyed by. Its sender is the number in
// from and the BSUID in from_user_id (else the user_id of the contact the
// message is from), either or both; a message with neither gets an event
// without identities, which ingest refuses and the handler keeps as a
// dead letter under its wamid, rather than a 200 that loses it. A text or
// caption that is a consent keyword (c360.ConsentKeyword) sets the
// customer's WhatsApp consent; a button's or list item's title never does.
func messageEvent(m *message, contacts []contact, businessNumber string, now time.Time) *c360.Event {
	if m.ID == "" {
		return nil
	}
	from, userID := strings.TrimSpace(m.From), strings.TrimSpace(m.FromUserID)
	c := findContact(contacts, from, userID)
	if userID == "" && c != nil {
		userID = strings.TrimSpace(c.UserID)
	}
	at := timestamp(m.Timestamp, now)
	if m.Type == "system" && m.System != nil && (m.System.Type == "user_changed_number" || m.System.Type == "user_changed_user_id") {
		return numberChangeEvent(m, from, userID, at, now)
	}
	props := map[string]any{"type": m.Type}
	if from != "" {
		props["waId"] = from
	}
	if userID != "" {
		props["userId"] = userID
	}
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
		Identities: senderIdentities(from, userID),
		Properties: props,
		OccurredAt: at,
		ReceivedAt: now,
		Message:    msg,
	}
	if c != nil {
		if name := strings.TrimSpace(c.Profile.Name); name != "" {
			ev.TraitsIfAbsent = map[string]any{"name": name}
			props["profileName"] = name
		}
		if u := strings.TrimSpace(c.Profile.Username); u != "" {
			props["username"] = u
		}
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
	if s.ID == "" || st == "" || len(st) > 32 {
		return nil
	}
	recipient, userID := strings.TrimSpace(s.RecipientID), strings.TrimSpace(s.RecipientUserID)
	props := map[string]any{"messageId": s.ID, "status": st}
	if recipient != "" {
		props["waId"] = recipient
	}
	if userID != "" {
		props["userId"] = userID
	}
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
		Identities: senderIdentities(recipient, userID),
		Properties: props,
		OccurredAt: timestamp(s.Timestamp, now),
		ReceivedAt: now,
		Message:    msg,
	}
}

// numberChangeEvent returns the track event of a user who moved their
// WhatsApp account to a new number (system user_changed_number, or
// user_changed_user_id, which Meta sends when the BSUID changes with the
// number): the old and the new ids, numbers and BSUIDs, as identities, so
// that the new ones are attached to the same customer.
func numberChangeEvent(m *message, from, userID string, at, now time.Time) *c360.Event {
	newWaID := strings.TrimSpace(m.System.NewWaID)
	if newWaID == "" {
		newWaID = strings.TrimSpace(m.System.WaID)
	}
	newUserID := strings.TrimSpace(m.System.UserID)
	props := map[string]any{}
	if from != "" {
		props["previousPhone"], props["previousWaId"] = phone(from), from
	}
	if newWaID != "" {
		props["phone"], props["waId"] = phone(newWaID), newWaID
	}
	if userID != "" {
		props["previousUserId"] = userID
	}
	if newUserID != "" {
		props["userId"] = newUserID
	}
	ids := senderIdentities(from, userID)
	for _, id := range senderIdentities(newWaID, newUserID) {
		if !slices.Contains(ids, id) {
			ids = append(ids, id)
		}
	}
	return &c360.Event{
		Type:       c360.EventTrack,
		Name:       NumberChangedEvent,
		Source:     Source,
		DedupeKey:  m.ID,
		Identities: ids,
		Properties: props,
		OccurredAt: at,
		ReceivedAt: now,
	}
}

// senderIdentities returns a WhatsApp user's identities: the phone number
// of the wa_id and the BSUID, those of the two that are given.
func senderIdentities(waID, userID string) []c360.Identity {
	var ids []c360.Identity
	if waID != "" {
		ids = append(ids, c360.Identity{Type: "phone", Value: phone(waID)})
	}
	if userID != "" {
		ids = append(ids, c360.Identity{Type: UserIDType, Value: userID})
	}
	return ids
}

// findContact returns the contact a message from the wa_id and BSUID
// given is from: the one with that BSUID, else that wa_id; for a message
// that names neither, the notification's only contact, since Meta sends
// each sender's profile beside their messages. Nil when none matches.
func findContact(contacts []contact, waID, userID string) *contact {
	for i := range contacts {
		c := &contacts[i]
		if userID != "" && strings.TrimSpace(c.UserID) == userID || userID == "" && waID != "" && strings.TrimSpace(c.WaID) == waID {
			return c
		}
	}
	if waID == "" && userID == "" && len(contacts) == 1 {
		return &contacts[0]
	}
	return nil
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
