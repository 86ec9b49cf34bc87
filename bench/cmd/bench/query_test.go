package main

import (
	"fmt"
	"strings"
	"testing"

	"github.com/c360dev/c360/bench/seed"
)

// shapeOf is a seed whose rich customers have events events and a
// conversation of messages messages.
func shapeOf(events, messages int) seed.Options {
	return seed.Options{Customers: 10, EventsPerCustomer: events, MessagesPerConv: messages}
}

// answer writes a customer-360 answer for phone with events events and one
// conversation of messages messages, as the server writes it.
func answer(phone string, events, messages int) []byte {
	var ev, msg []string
	for i := range events {
		ev = append(ev, fmt.Sprintf(`{"node":{"id":"%d","type":"track","name":"Product Viewed","properties":{"sku":"SKU-%d"},"occurredAt":"2026-11-24T10:00:00Z"}}`, i+1, i))
	}
	for i := range messages {
		msg = append(msg, fmt.Sprintf(`{"node":{"id":"%d","direction":"inbound","body":"message %d","status":"delivered","createdAt":"2026-11-24T10:00:00Z"}}`, i+1, i))
	}
	return []byte(`{"data":{"customerByIdentity":{"id":"7","traits":{"phone":"` + phone + `"},"version":37,` +
		`"identities":[{"type":"email","value":"c7@bench.example"},{"type":"phone","value":"` + phone + `"}],` +
		`"events":{"edges":[` + strings.Join(ev, ",") + `]},` +
		`"conversations":{"edges":[{"node":{"id":"3","channel":"sms","status":"open","lastMessageAt":"2026-11-24T10:00:00Z",` +
		`"messages":{"edges":[` + strings.Join(msg, ",") + `]}}}]}}}}`)
}

// TestWant360CatchesShortAnswers checks that both checks of the query
// benchmark take a full answer and refuse one a page short: the cheap
// count on every answer and the whole read before each level.
func TestWant360CatchesShortAnswers(t *testing.T) {
	const phone = "+14152000007"
	w := (&bench{shape: shapeOf(25, 12)}).want360()
	if w.events != 20 || w.messages != 10 {
		t.Fatalf("want360 = %+v, want 20 events and 10 messages", w)
	}
	full := answer(phone, 20, 10)
	if err := w.counts(full); err != nil {
		t.Errorf("counts of a full answer: %v", err)
	}
	if err := w.full(full, phone); err != nil {
		t.Errorf("full check of a full answer: %v", err)
	}
	for _, tc := range []struct {
		name string
		raw  []byte
		want string
	}{
		{"10 events", answer(phone, 10, 10), "10 events"},
		{"2 messages", answer(phone, 20, 2), "2 messages"},
		{"no messages", answer(phone, 20, 0), "0 messages"},
		{"no customer", []byte(`{"data":{"customerByIdentity":null}}`), "0 events"},
	} {
		if err := w.counts(tc.raw); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: counts = %v, want an error with %q", tc.name, err, tc.want)
		}
		if err := w.full(tc.raw, phone); err == nil {
			t.Errorf("%s: the full check took it", tc.name)
		}
	}
	if err := w.full(answer("+14152000008", 20, 10), phone); err == nil || !strings.Contains(err.Error(), "no phone") {
		t.Errorf("another customer's answer: full = %v, want no phone", err)
	}
	// A customer with fewer than a page has all of them in its answer.
	small := (&bench{shape: shapeOf(5, 3)}).want360()
	if err := small.full(answer(phone, 5, 3), phone); err != nil {
		t.Errorf("5 events and 3 messages of 5 and 3: %v", err)
	}
}
