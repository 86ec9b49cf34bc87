package whatsapp

import (
	"encoding/json"
	"fmt"
	"reflect"
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

// payload is a Cloud API webhook notification; only what c360 reads. The
// envelope is decoded whole, and a body it does not fit is refused; the
// items of each change (contacts, messages, statuses) are kept as raw JSON
// and decoded one by one, so that one item of a shape c360 does not know
// costs only itself, not the messages beside it (Meta would retry the
// notification for days, in vain, and then drop it all).
type payload struct {
	Object string `json:"object"`
	Entry  []struct {
		Changes []struct {
			Field string `json:"field"`
			Value value  `json:"value"`
		} `json:"changes"`
	} `json:"entry"`
}

type value struct {
	Metadata struct {
		DisplayPhoneNumber jsonID `json:"display_phone_number"`
	} `json:"metadata"`
	Contacts []json.RawMessage `json:"contacts"`
	Messages []json.RawMessage `json:"messages"`
	Statuses []json.RawMessage `json:"statuses"`
}

// jsonID is an id-like field (a wa_id, a BSUID, a wamid, a Unix time, an
// error code): a JSON string, or a number kept as its literal text, since
// Meta has been seen sending wa_id and new_wa_id as numbers
// (16505551297) where its reference shows strings; null reads as "". Any
// other JSON value is a decoding error, which costs only its item.
type jsonID string

var jsonIDType = reflect.TypeFor[jsonID]()

// idWants names what a jsonID wants in a decoding error.
var idWants = map[reflect.Type]string{jsonIDType: "a string or a number"}

// UnmarshalJSON implements json.Unmarshaler (webhook.StringOrNumber).
func (v *jsonID) UnmarshalJSON(b []byte) error {
	s, err := webhook.StringOrNumber(b, jsonIDType)
	*v = jsonID(s)
	return err
}

// String returns the id trimmed of surrounding white space.
func (v jsonID) String() string { return strings.TrimSpace(string(v)) }

// contact is one entry of a notification's contacts: the profile of a
// user its messages are from.
type contact struct {
	Profile struct {
		Name     string `json:"name"`
		Username string `json:"username"`
	} `json:"profile"`
	WaID   jsonID `json:"wa_id"`
	UserID jsonID `json:"user_id"`
}

type message struct {
	// From is the sender's wa_id (the number); Meta leaves it out for a
	// user who adopted a username, whose FromUserID (BSUID) is the only
	// id of the sender.
	From       jsonID `json:"from"`
	FromUserID jsonID `json:"from_user_id"`
	ID         jsonID `json:"id"`
	Timestamp  jsonID `json:"timestamp"`
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
		// NfmReply is a WhatsApp Flow's answer: the flow's name, a body
		// ("Sent") and the fields the customer filled in, as a JSON text.
		NfmReply *struct {
			Name         string `json:"name"`
			Body         string `json:"body"`
			ResponseJSON string `json:"response_json"`
		} `json:"nfm_reply"`
	} `json:"interactive"`
	Button *struct {
		Payload string `json:"payload"`
		Text    string `json:"text"`
	} `json:"button"`
	Reaction *struct {
		MessageID jsonID `json:"message_id"`
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
		NewWaID jsonID `json:"new_wa_id"`
		WaID    jsonID `json:"wa_id"`
		UserID  jsonID `json:"user_id"` // the new BSUID, which a number change changes too
	} `json:"system"`
	Context *struct {
		ID jsonID `json:"id"`
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
	ID        jsonID `json:"id"`
	Status    string `json:"status"`
	Timestamp jsonID `json:"timestamp"`
	// RecipientID is the recipient's wa_id, left out for a message sent to
	// a BSUID; RecipientUserID is the BSUID. Neither is needed: a status
	// finds its message by the wamid.
	RecipientID     jsonID `json:"recipient_id"`
	RecipientUserID jsonID `json:"recipient_user_id"`
	Errors          []struct {
		Code  jsonID `json:"code"`
		Title string `json:"title"`
	} `json:"errors"`
}

// Skipped is an item of a notification that yields no event and is
// logged instead: a message or status without an id, one that could not
// be read and whose id could not be read either (nothing could key its
// dead letter), and a contact that could not be read. Its reason names
// fields and JSON types, never a value.
type Skipped struct {
	Item   string // where it is, e.g. entry[0].changes[0].value.messages[1]
	Reason string
}

// ParsePayload turns a Cloud API notification into canonical events, in
// the order received: one message event per inbound message (deduplicated by
// its wamid), one message_status event per status (by wamid and status), and
// a track event carrying the old and new number for user_changed_number.
// Entries that are not about messages are ignored. A body that is not JSON,
// or whose envelope (object, entry, changes, field, value, metadata and the
// item arrays themselves) has a field of another JSON type, is EINVALID.
// Items are read one by one: one that cannot be read becomes an event that
// ingest refuses with the reason (c360.Event.Unreadable), kept as a dead
// letter under its id, or, when even its id cannot be read, a Skipped.
func ParsePayload(body []byte, now time.Time) ([]*c360.Event, []Skipped, error) {
	var p payload
	if err := json.Unmarshal(body, &p); err != nil {
		return nil, nil, c360.Errorf(c360.EINVALID, "the body is not a WhatsApp notification: %s", webhook.DescribeJSONError(err, "the body", idWants))
	}
	if p.Object != "" && p.Object != "whatsapp_business_account" {
		return nil, nil, nil
	}
	var out []*c360.Event
	var skipped []Skipped
	skip := func(item, reason string) { skipped = append(skipped, Skipped{Item: item, Reason: reason}) }
	for ei, e := range p.Entry {
		for ci, ch := range e.Changes {
			if ch.Field != "" && ch.Field != "messages" {
				continue
			}
			at := fmt.Sprintf("entry[%d].changes[%d].value.", ei, ci)
			contacts := make([]contact, 0, len(ch.Value.Contacts))
			for i, raw := range ch.Value.Contacts {
				var c contact
				if err := json.Unmarshal(raw, &c); err != nil {
					skip(fmt.Sprintf("%scontacts[%d]", at, i), unreadableReason("contact", err))
					continue
				}
				contacts = append(contacts, c)
			}
			business := ch.Value.Metadata.DisplayPhoneNumber.String()
			for i, raw := range ch.Value.Messages {
				var m message
				var ev *c360.Event
				reason := "the message has no id"
				if err := json.Unmarshal(raw, &m); err != nil {
					ev, reason = unreadableEvent(c360.EventMessage, raw, contacts, err, now)
				} else {
					ev = messageEvent(&m, raw, contacts, business, now)
				}
				if ev == nil {
					skip(fmt.Sprintf("%smessages[%d]", at, i), reason)
					continue
				}
				out = append(out, ev)
			}
			for i, raw := range ch.Value.Statuses {
				var st status
				var ev *c360.Event
				reason := "the status has no id"
				if err := json.Unmarshal(raw, &st); err != nil {
					ev, reason = unreadableEvent(c360.EventMessageStatus, raw, nil, err, now)
				} else {
					ev = statusEvent(&st, now)
				}
				if ev == nil {
					skip(fmt.Sprintf("%sstatuses[%d]", at, i), reason)
					continue
				}
				out = append(out, ev)
			}
		}
	}
	return out, skipped, nil
}

// unreadableReason says why an item (a "message", "status" or "contact")
// could not be read, naming the field and JSON types, never a value.
func unreadableReason(kind string, err error) string {
	return fmt.Sprintf("the %s could not be read: %s", kind, webhook.DescribeJSONError(err, "the "+kind, idWants))
}

// unreadableEvent returns the event of a message or status item (typ: the
// event type) that did not decode: what could be read of it, each field on
// its own (its id, the ids of its sender or recipient, its time), with the
// item itself in property item, and the reason in Unreadable, so that
// ingest refuses it and the handler keeps it as a dead letter under its
// id, for an admin to read. The identities let an erasure of the person
// find the dead letter: a message's sender is found as messageEvent finds
// it, the contact beside it included (findContact), so that a message
// naming no sender of its own, which the contact's user_id makes readable,
// is erased with her when it cannot be read. When the id cannot be read,
// nothing could key the dead letter: it returns nil and the reason, for
// the handler to log.
func unreadableEvent(typ string, raw json.RawMessage, contacts []contact, err error, now time.Time) (*c360.Event, string) {
	kind := "message"
	if typ == c360.EventMessageStatus {
		kind = "status"
	}
	reason := unreadableReason(kind, err)
	var fields map[string]json.RawMessage
	if json.Unmarshal(raw, &fields) != nil {
		return nil, reason // not an object: no id to read
	}
	read := func(name string) string {
		var v jsonID
		if f, ok := fields[name]; !ok || json.Unmarshal(f, &v) != nil {
			return ""
		}
		return v.String()
	}
	id := read("id")
	if id == "" {
		return nil, reason
	}
	props := map[string]any{}
	keepItem(props, raw)
	ev := &c360.Event{
		Type:       typ,
		Source:     Source,
		DedupeKey:  id,
		Properties: props,
		OccurredAt: timestamp(read("timestamp"), now),
		ReceivedAt: now,
		Unreadable: reason,
	}
	if typ == c360.EventMessage {
		from, userID, c := sender(read("from"), read("from_user_id"), contacts)
		if c != nil {
			props["contact"] = contactProperty(c)
		}
		ev.Identities = senderIdentities(from, userID)
		ev.Message = &c360.MessageInput{Channel: c360.ChannelWhatsApp, Direction: c360.DirectionInbound, ProviderID: id, Status: "received"}
		return ev, reason
	}
	st := strings.ToLower(read("status"))
	if st != "" && len(st) <= 32 {
		ev.DedupeKey = id + ":" + st // as the status would have been keyed
	}
	ev.Identities = senderIdentities(read("recipient_id"), read("recipient_user_id"))
	ev.Message = &c360.MessageInput{Channel: c360.ChannelWhatsApp, Direction: c360.DirectionOutbound, ProviderID: id, Status: st}
	return ev, reason
}

// keepItem keeps an item as Meta sent it in property item: numbers exact
// (a wa_id's digits), unless a number is one the store cannot hold
// (1e400), or the item is not JSON c360 can store: it is then left out,
// so that the event (or its dead letter) can still be kept.
func keepItem(props map[string]any, raw json.RawMessage) {
	var item any
	if c360.UnmarshalExact(raw, &item) != nil {
		return
	}
	if item, err := c360.StorableNumbers(item); err == nil {
		props["item"] = item
	}
}

// jsonText returns the JSON object or array a text holds (a Flow's
// response_json) as a value, so that its fields are stored, and masked
// key by key, as an event's properties are (in a text, masking finds
// email addresses and phone numbers, not names); the text itself when it
// holds no such JSON, or one the store cannot hold.
func jsonText(s string) any {
	var v any
	if c360.UnmarshalExact([]byte(s), &v) != nil {
		return s
	}
	switch v.(type) {
	case map[string]any, []any:
		if v, err := c360.StorableNumbers(v); err == nil {
			return v
		}
	}
	return s
}

// messageEvent returns the event for one inbound message, or nil when it
// lacks the wamid every event is keyed by. Its sender is the number in
// from and the BSUID in from_user_id (else the user_id of the contact the
// message is from), either or both; a message with neither gets an event
// without identities, which ingest refuses and the handler keeps as a
// dead letter under its wamid, rather than a 200 that loses it. A text or
// caption that is a consent keyword (c360.ConsentKeyword) sets the
// customer's WhatsApp consent; a button's or list item's title never does.
//
// A message of a type c360 does not read (order, contacts, unsupported, a
// system message other than a number change, an interactive one that is
// no button, list or Flow reply, any type Meta adds) keeps the item as
// Meta sent it in property item (keepItem, as an unreadable item's dead
// letter does), so that its content is not lost behind Meta's 200. A
// Flow's reply (nfm_reply) is read into property interactive: its flow
// name, body, and the fields of its response_json.
func messageEvent(m *message, raw json.RawMessage, contacts []contact, businessNumber string, now time.Time) *c360.Event {
	id := m.ID.String()
	if id == "" {
		return nil
	}
	from, userID, c := sender(m.From.String(), m.FromUserID.String(), contacts)
	at := timestamp(m.Timestamp.String(), now)
	if m.Type == "system" && m.System != nil && (m.System.Type == "user_changed_number" || m.System.Type == "user_changed_user_id") {
		return numberChangeEvent(m, id, from, userID, at, now)
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
	if m.Context != nil && m.Context.ID.String() != "" {
		props["replyTo"] = m.Context.ID.String()
	}
	msg := &c360.MessageInput{
		Channel:    c360.ChannelWhatsApp,
		Direction:  c360.DirectionInbound,
		ProviderID: id,
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
		switch nfm := m.Interactive.NfmReply; {
		case r != nil:
			msg.Body = r.Title
			props["interactive"] = map[string]any{"type": m.Interactive.Type, "id": r.ID, "title": r.Title}
		case nfm != nil:
			// The body is the Flow's ("Sent"), not words the customer
			// typed: it is no consent keyword. Everything the item holds
			// is read, so it is not kept: its response_json would be kept
			// as a text, whose names masking cannot tell (jsonText).
			msg.Body = nfm.Body
			props["interactive"] = map[string]any{"type": m.Interactive.Type, "flowName": nfm.Name, "body": nfm.Body,
				"responseJson": jsonText(nfm.ResponseJSON)}
		default:
			keepItem(props, raw)
		}
	case m.Button != nil:
		msg.Body = m.Button.Text
		props["button"] = map[string]any{"payload": m.Button.Payload, "text": m.Button.Text}
	case m.Reaction != nil:
		msg.Body = m.Reaction.Emoji
		props["reactionTo"] = m.Reaction.MessageID.String()
	case m.Location != nil:
		props["location"] = map[string]any{"latitude": m.Location.Latitude, "longitude": m.Location.Longitude,
			"name": m.Location.Name, "address": m.Location.Address}
	default:
		keepItem(props, raw)
	}
	ev := &c360.Event{
		Type:       c360.EventMessage,
		Source:     Source,
		DedupeKey:  id,
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
// the business sent, or nil when it has no wamid. A status that names no
// status, or one longer than 32 bytes, is an event ingest refuses
// (Unreadable), kept as a dead letter under its wamid.
func statusEvent(s *status, now time.Time) *c360.Event {
	id := s.ID.String()
	if id == "" {
		return nil
	}
	st := strings.ToLower(strings.TrimSpace(s.Status))
	recipient, userID := s.RecipientID.String(), s.RecipientUserID.String()
	props := map[string]any{"messageId": id, "status": st}
	if recipient != "" {
		props["waId"] = recipient
	}
	if userID != "" {
		props["userId"] = userID
	}
	msg := &c360.MessageInput{
		Channel:    c360.ChannelWhatsApp,
		Direction:  c360.DirectionOutbound,
		ProviderID: id,
		Status:     st,
	}
	if len(s.Errors) > 0 {
		msg.ErrorCode = s.Errors[0].Code.String()
		props["errorCode"] = msg.ErrorCode
		if s.Errors[0].Title != "" {
			props["errorTitle"] = s.Errors[0].Title
		}
	}
	ev := &c360.Event{
		Type:       c360.EventMessageStatus,
		Source:     Source,
		DedupeKey:  id + ":" + st,
		Identities: senderIdentities(recipient, userID),
		Properties: props,
		OccurredAt: timestamp(s.Timestamp.String(), now),
		ReceivedAt: now,
		Message:    msg,
	}
	switch {
	case st == "":
		ev.DedupeKey, ev.Unreadable = id, "the status has no status"
	case len(st) > 32:
		ev.DedupeKey, ev.Unreadable = id, "the status's status is longer than 32 bytes"
	}
	return ev
}

// numberChangeEvent returns the track event of a user who moved their
// WhatsApp account to a new number (system user_changed_number, or
// user_changed_user_id, which Meta sends when the BSUID changes with the
// number): the old and the new ids, numbers and BSUIDs, as identities, so
// that the new ones are attached to the same customer.
func numberChangeEvent(m *message, id, from, userID string, at, now time.Time) *c360.Event {
	newWaID := m.System.NewWaID.String()
	if newWaID == "" {
		newWaID = m.System.WaID.String()
	}
	newUserID := m.System.UserID.String()
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
		DedupeKey:  id,
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

// contactProperty is the contact a dead letter's item is from, as read.
func contactProperty(c *contact) map[string]any {
	out := map[string]any{}
	for k, v := range map[string]string{"wa_id": c.WaID.String(), "user_id": c.UserID.String(),
		"name": strings.TrimSpace(c.Profile.Name), "username": strings.TrimSpace(c.Profile.Username)} {
		if v != "" {
			out[k] = v
		}
	}
	return out
}

// sender is who an inbound item is from, as readable and unreadable items
// alike read it: its number (from) and BSUID (from_user_id), the BSUID
// taken from its contact when the item names none, and, when the item
// names neither, the number of the notification's one contact too. c is
// that contact (nil: none).
func sender(from, userID string, contacts []contact) (string, string, *contact) {
	c := findContact(contacts, from, userID)
	if c == nil {
		return from, userID, nil
	}
	if from == "" && userID == "" {
		from = c.WaID.String()
	}
	if userID == "" {
		userID = c.UserID.String()
	}
	return from, userID, c
}

// findContact returns the contact a message from the wa_id and BSUID
// given is from: the one with that BSUID, else that wa_id; for a message
// that names neither, the notification's only contact, since Meta sends
// each sender's profile beside their messages. Nil when none matches.
func findContact(contacts []contact, waID, userID string) *contact {
	for i := range contacts {
		c := &contacts[i]
		if userID != "" && c.UserID.String() == userID || userID == "" && waID != "" && c.WaID.String() == waID {
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
