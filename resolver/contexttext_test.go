package resolver

import (
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/c360dev/c360"
)

// richContext is a context with every section filled; each line carries a
// marker (M0.., O0.., E0.., T0.., G0..) the tests look for.
func richContext() *c360.CustomerContext {
	t0 := time.Date(2025, 3, 1, 9, 0, 0, 0, time.UTC)
	conf := 0.9
	cc := &c360.CustomerContext{
		Customer: &c360.Customer{ID: 42, Version: 7, CreatedAt: t0,
			Traits: map[string]any{"name": "Jane Doe", "plan": "pro", "T0": "a", "T1": "b", "T2": 3}},
		Identities: []*c360.IdentityRecord{
			{Identity: c360.Identity{Type: "email", Value: "jane@example.com"}},
			{Identity: c360.Identity{Type: "phone", Value: "+14155550100"}},
			{Identity: c360.Identity{Type: "user_id", Value: "u-100"}},
		},
		Consents: []*c360.Consent{{Channel: "sms", Status: c360.ConsentOptedOut, UpdatedAt: t0},
			{Channel: "whatsapp", Status: c360.ConsentOptedIn, UpdatedAt: t0}},
	}
	last := t0.Add(time.Hour)
	wa := &c360.ContextConversation{Conversation: &c360.Conversation{ID: 1, Channel: "whatsapp", Status: "open", LastMessageAt: &last}}
	sms := &c360.ContextConversation{Conversation: &c360.Conversation{ID: 2, Channel: "sms", Status: "open", LastMessageAt: &last}}
	// M0 is the oldest message, M5 the newest, alternating channels.
	for i := 0; i < 6; i++ {
		c := wa
		if i%2 == 1 {
			c = sms
		}
		c.Messages = append(c.Messages, &c360.Message{Channel: c.Channel, Direction: c360.DirectionInbound,
			Body: fmt.Sprintf("M%d mail me at jane@example.com or +1 415 555 0100", i), CreatedAt: t0.Add(time.Duration(i) * time.Minute)})
	}
	cc.Conversations = []*c360.ContextConversation{wa, sms}
	for i := 0; i < 4; i++ {
		cc.Observations = append(cc.Observations, &c360.Observation{Text: fmt.Sprintf("O%d likes tea", i), Verified: i == 0,
			Confidence: &conf, RecordedByRole: c360.RoleAssistant, CreatedAt: t0})
		cc.Events = append(cc.Events, &c360.EventSummary{Type: "track", Name: fmt.Sprintf("E%d Order", i), Count: i + 1, LastAt: t0})
		cc.Merges = append(cc.Merges, &c360.MergeRecord{Kind: c360.MergeKindMerge, SurvivorID: 42, MergedID: int64(100 + i),
			Identity: &c360.Identity{Type: "email", Value: "jane@example.com"}, Reason: fmt.Sprintf("G%d linked", i), Actor: "ingest", At: t0})
	}
	return cc
}

// sectionMarkers lists, per section in priority order, its line markers
// from most to least important.
var sectionMarkers = [][]string{
	{"Customer 42", "Consent:", "Identities:"},
	{"M5", "M4", "M3", "M2", "M1", "M0"},
	{"O0", "O1", "O2", "O3"},
	{"E0", "E1", "E2", "E3"},
	{"- name:", "- plan:", "- T0:", "- T1:", "- T2:"},
	{"G0", "G1", "G2", "G3"},
}

func TestRenderContextBudget(t *testing.T) {
	full := renderContext(richContext(), MaxContextBudget, true)
	if full.truncated || strings.Contains(full.text, "left out") {
		t.Fatalf("with room for everything: truncated %v\n%s", full.truncated, full.text)
	}
	for _, sec := range sectionMarkers {
		for _, m := range sec {
			if !strings.Contains(full.text, m) {
				t.Errorf("full text lacks %q:\n%s", m, full.text)
			}
		}
	}
	// Messages read as a transcript, oldest first, across channels.
	if i0, i5 := strings.Index(full.text, "M0"), strings.Index(full.text, "M5"); i0 > i5 {
		t.Errorf("messages are not oldest first:\n%s", full.text)
	}
	size := utf8.RuneCountInString(full.text)

	for budget := size; budget >= MinContextBudget; budget-- {
		got := renderContext(richContext(), budget, true)
		if n := utf8.RuneCountInString(got.text); n > budget {
			t.Fatalf("budget %d: text has %d characters:\n%s", budget, n, got.text)
		}
		if budget < size && !got.truncated {
			t.Fatalf("budget %d < %d: truncated = false", budget, size)
		}
		// A line is kept only if every line of every higher-priority
		// section, and every more important line of its own, is kept.
		if strings.HasSuffix(got.text, "…") {
			continue // cut at the budget: even the first section did not fit
		}
		kept := func(m string) bool { return strings.Contains(got.text, m) }
		for si, sec := range sectionMarkers {
			for li, m := range sec {
				if !kept(m) {
					continue
				}
				for _, higher := range sectionMarkers[:si] {
					for _, h := range higher {
						if !kept(h) {
							t.Fatalf("budget %d: %q kept but higher-priority %q dropped:\n%s", budget, m, h, got.text)
						}
					}
				}
				for _, more := range sec[:li] {
					if !kept(more) {
						t.Fatalf("budget %d: %q kept but the more important %q dropped:\n%s", budget, m, more, got.text)
					}
				}
			}
		}
		if got.truncated && !strings.HasSuffix(got.text, ")") {
			t.Fatalf("budget %d: truncated without saying what was left out:\n%s", budget, got.text)
		}
	}

	// Merges go first, then traits: at a budget just below the full size,
	// only merge notes are missing.
	got := renderContext(richContext(), size-1, true)
	if strings.Contains(got.text, "G3") || !strings.Contains(got.text, "- T2:") || !strings.Contains(got.text, "1 merge notes") {
		t.Errorf("one character short: want only the oldest merge note left out:\n%s", got.text)
	}
	// The smallest budget keeps who the customer is and the consent.
	small := renderContext(richContext(), 160, true)
	if !strings.HasPrefix(small.text, "Customer 42") || !strings.Contains(small.text, "Consent: sms opted_out") {
		t.Errorf("budget 160 lost the customer line or consent:\n%s", small.text)
	}
}

func TestRenderContextMasking(t *testing.T) {
	masked := renderContext(richContext(), MaxContextBudget, false)
	for _, want := range []string{"email j***@example.com", "phone +1******0100", "user_id u-100", "- name: J***",
		"via email j***@example.com", "mail me at j***@example.com or +1******0100"} {
		if !strings.Contains(masked.text, want) {
			t.Errorf("masked text lacks %q:\n%s", want, masked.text)
		}
	}
	for _, leak := range []string{"jane@", "5550100", "555 0100", "Jane Doe"} {
		if strings.Contains(masked.text, leak) {
			t.Errorf("masked text leaks %q:\n%s", leak, masked.text)
		}
	}
	clear := renderContext(richContext(), MaxContextBudget, true)
	for _, want := range []string{"email jane@example.com", "phone +14155550100", "- name: Jane Doe", "mail me at jane@example.com or +1 415 555 0100"} {
		if !strings.Contains(clear.text, want) {
			t.Errorf("clear text lacks %q:\n%s", want, clear.text)
		}
	}
	// Both report the personal data the text carries, for the audit log.
	for _, r := range []contextText{masked, clear} {
		got := strings.Join(r.pii, " ")
		for _, want := range []string{"identity.email", "identity.phone", "traits.name", "messages.email", "messages.phone"} {
			if !strings.Contains(got, want) {
				t.Errorf("pii = %s, want %s in it", got, want)
			}
		}
		if strings.Contains(got, "user_id") {
			t.Errorf("pii = %s: a user_id is not personal data", got)
		}
	}
}

// An outbound message that did not go out never reads as sent: a refused
// or undelivered one says so with the provider's error code, one whose send
// has no known outcome says it is not confirmed, and one the provider took
// reads plainly. Masking and the budget apply to the notes as to the rest.
func TestRenderContextOutboundStatus(t *testing.T) {
	t0 := time.Date(2025, 3, 1, 9, 0, 0, 0, time.UTC)
	last := t0.Add(time.Hour)
	cv := &c360.ContextConversation{Conversation: &c360.Conversation{ID: 1, Channel: "sms", Status: "open", LastMessageAt: &last}}
	add := func(i int, dir, body, status, code string) {
		cv.Messages = append(cv.Messages, &c360.Message{Channel: "sms", Direction: dir, Body: body, Status: status,
			ErrorCode: code, CreatedAt: t0.Add(time.Duration(i) * time.Minute)})
	}
	add(0, c360.DirectionInbound, "where is my refund?", "received", "")
	add(1, c360.DirectionOutbound, "Your refund was issued today", c360.MessageFailed, "21211")
	add(2, c360.DirectionOutbound, "B undelivered", c360.MessageUndelivered, "30003")
	add(3, c360.DirectionOutbound, "C canceled", "canceled", "")
	add(4, c360.DirectionOutbound, "D pending", c360.MessagePending, "")
	add(5, c360.DirectionOutbound, "E unconfirmed", c360.MessageUnconfirmed, "")
	add(6, c360.DirectionOutbound, "F queued", "queued", "")
	add(7, c360.DirectionOutbound, "G delivered", "delivered", "")
	add(8, c360.DirectionOutbound, "H code", c360.MessageFailed, "call jane@example.com")
	cc := &c360.CustomerContext{Customer: &c360.Customer{ID: 42, Version: 1, CreatedAt: t0},
		Conversations: []*c360.ContextConversation{cv}}
	got := renderContext(cc, MaxContextBudget, false)
	for _, want := range []string{
		"customer: where is my refund?",
		"us (NOT delivered: failed, error 21211): Your refund was issued today",
		"us (NOT delivered: undelivered, error 30003): B undelivered",
		"us (NOT delivered: canceled): C canceled",
		"us (NOT confirmed sent: pending): D pending",
		"us (NOT confirmed sent: unconfirmed): E unconfirmed",
		"us: F queued",
		"us: G delivered",
		"us (NOT delivered: failed, error call j***@example.com): H code",
	} {
		if !strings.Contains(got.text, want) {
			t.Errorf("text lacks %q:\n%s", want, got.text)
		}
	}
	if strings.Contains(got.text, "us: Your refund") {
		t.Errorf("a failed send reads as sent:\n%s", got.text)
	}
	if strings.Contains(got.text, "jane@") {
		t.Errorf("the masked text leaks an error code's email:\n%s", got.text)
	}
	size := utf8.RuneCountInString(got.text)
	for budget := size; budget >= MinContextBudget; budget -= 7 {
		if n := utf8.RuneCountInString(renderContext(cc, budget, false).text); n > budget {
			t.Fatalf("budget %d: text has %d characters", budget, n)
		}
	}
}

// A customer's ledger holds the entries of the customers merged into it
// (docs/identity.md, "Explaining a profile"): after 1 merged into 2 and 2
// into 3, customer 3's names both merges and a split made on 2. The text
// tells an entry relative to "this one" only when this customer is one of
// its sides: customer 3 was never merged into, nor split out of, 2.
func TestRenderContextOfAChainedLedger(t *testing.T) {
	t0 := time.Date(2025, 3, 1, 9, 0, 0, 0, time.UTC)
	cc := &c360.CustomerContext{
		Customer: &c360.Customer{ID: 3, CreatedAt: t0},
		Merges: []*c360.MergeRecord{
			{Kind: c360.MergeKindMerge, SurvivorID: 3, MergedID: 2, Reason: "second", Actor: "ingest", At: t0.Add(48 * time.Hour)},
			{Kind: c360.MergeKindSplit, SurvivorID: 2, MergedID: 9, Reason: "family phone", Actor: "agent", At: t0.Add(24 * time.Hour)},
			{Kind: c360.MergeKindMerge, SurvivorID: 2, MergedID: 1, Reason: "first", Actor: "ingest", At: t0},
			{Kind: c360.MergeKindSplit, SurvivorID: 3, MergedID: 8, Reason: "shared", Actor: "admin", At: t0},
			{Kind: c360.MergeKindSplit, SurvivorID: 7, MergedID: 3, Reason: "wrong", Actor: "admin", At: t0},
		},
	}
	got := renderContext(cc, MaxContextBudget, true).text
	want := "Merges:\n" +
		"- 2025-03-03 customer 2 merged into this one: second (ingest)\n" +
		"- 2025-03-02 customer 9 split out of customer 2: family phone (agent)\n" +
		"- 2025-03-01 customer 1 merged into customer 2 (since merged into this one): first (ingest)\n" +
		"- 2025-03-01 split customer 8 out of this one: shared (admin)\n" +
		"- 2025-03-01 split out of customer 7: wrong (admin)"
	if !strings.HasSuffix(got, want) {
		t.Errorf("text ends\n%s\nwant it to end\n%s", got, want)
	}
}

func TestKindFilter(t *testing.T) {
	all := kindFilter(nil)
	some := kindFilter([]string{c360.ChangeMessage, c360.ChangeConsent})
	traits := &c360.Change{Kind: c360.ChangeTraits, Diff: map[string]any{"traits": map[string]any{"plan": "gold"}}}
	message := &c360.Change{Kind: c360.ChangeMessage, Diff: map[string]any{"message": map[string]any{"id": "1"}}}
	// An inbound message that gives its sender's name is of kind traits.
	named := &c360.Change{Kind: c360.ChangeTraits, Diff: map[string]any{"message": map[string]any{"id": "2"},
		"traits": map[string]any{"name": "Kerry"}}}
	if !all(traits) || !some(message) || !some(named) || some(traits) {
		t.Error("kindFilter: want every change without a list, only those that include a listed kind with one")
	}
}
