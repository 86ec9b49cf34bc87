package server_test

import (
	"context"
	"encoding/base64"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/c360dev/c360"
)

// A WhatsApp Cloud API message id (wamid.) is base64 of a record that
// starts with the customer's WhatsApp number. Message.providerId carries
// it, so an assistant without the pii scope reads it masked, through a
// customer's conversations, customerContext and the conversationMessages
// subscription alike; a Twilio SID, which holds nothing of the customer,
// is shown. A key that reads it whole has its read audited as pii.read.
func TestProviderIDMaskedForAssistants(t *testing.T) {
	e := newRTEnv(t, rtOptions{audit: true})
	ctx := context.Background()
	slug := workspaceSlug(t, e)
	masked, _, err := e.db.CreateAPIKey(ctx, slug, c360.RoleAssistant, nil)
	if err != nil {
		t.Fatal(err)
	}
	clear, _, err := e.db.CreateAPIKey(ctx, slug, c360.RoleAssistant, []string{c360.ScopePII})
	if err != nil {
		t.Fatal(err)
	}
	const number = "14155550100"
	wamid := func(tail string) string {
		return "wamid." + base64.StdEncoding.EncodeToString([]byte("\x1c\x18\x0b"+number+"\x15\x02\x00\x12\x18\x14"+tail+"\x00"))
	}
	wamid1, wamid2 := wamid("3A4A6599AEE03810144F"), wamid("3A4A6599AEE03810155A")
	const sid = "SM0123456789abcdef0123456789abcdef"
	phone := []c360.Identity{{Type: "phone", Value: "+" + number}}
	cust := ingest(t, e.db, e.ws, phone, nil)
	message := func(channel, providerID string) {
		t.Helper()
		now := time.Now().UTC()
		if _, err := e.db.Ingest(ctx, e.ws, []*c360.Event{{Type: c360.EventMessage, Identities: phone,
			Message: &c360.MessageInput{Channel: channel, Direction: c360.DirectionInbound, Body: "hi", ProviderID: providerID, Status: "received"},
			Source:  channel, DedupeKey: providerID, OccurredAt: now, ReceivedAt: now}}); err != nil {
			t.Fatal(err)
		}
	}
	message(c360.ChannelWhatsApp, wamid1)
	message(c360.ChannelSMS, sid)

	// leaks reports the provider ids in s that give the number away.
	leaks := func(s string) []string {
		var out []string
		for _, f := range strings.Split(s, `"`) {
			id, ok := strings.CutPrefix(f, "wamid.")
			if !ok {
				continue
			}
			b, _ := base64.StdEncoding.DecodeString(id)
			if strings.Contains(string(b), number) || strings.Contains(id, number) {
				out = append(out, f)
			}
		}
		return out
	}

	subs := map[string]*wsClient{}
	for name, key := range map[string]string{"masked": masked, "clear": clear} {
		c := dialWS(t, wsURL(e.srv), "graphql-transport-ws", nil)
		c.init(key)
		c.subscribe("m", `subscription($id: ID) { conversationMessages(customerId: $id) { providerId } }`,
			map[string]any{"id": fmt.Sprint(cust)})
		subs[name] = c
	}
	waitFor(t, "the subscriptions to start", func() bool { return e.hub.Stats().Streams >= 2 })
	message(c360.ChannelWhatsApp, wamid2)
	for name, c := range subs {
		var got struct{ ProviderID string }
		c.next("m", "conversationMessages", &got)
		switch {
		case name == "masked" && (got.ProviderID != "wamid.***" || len(leaks(`"`+got.ProviderID+`"`)) > 0):
			t.Errorf("masked assistant's conversationMessages: providerId %q, want wamid.***", got.ProviderID)
		case name == "clear" && got.ProviderID != wamid2:
			t.Errorf("assistant with pii's conversationMessages: providerId %q, want %q", got.ProviderID, wamid2)
		}
	}

	const q = `query($id: ID!) {
		customer(id: $id) { conversations { edges { node { messages { edges { node { providerId } } } } } } }
		customerContext(id: $id) { openConversations { messages { providerId } } } }`
	vars := map[string]any{"id": fmt.Sprint(cust)}
	m := gql(t, e.srv, masked, q, vars)
	m.ok(t, nil)
	if l := leaks(string(m.Data)); len(l) > 0 {
		t.Errorf("assistant without pii scope read the number in %v: %s", l, m.Data)
	}
	if n := strings.Count(string(m.Data), `"wamid.***"`); n != 4 || !strings.Contains(string(m.Data), sid) {
		t.Errorf("masked answer: %d wamid.*** (want 4) and the SID shown? %s", n, m.Data)
	}
	c := gql(t, e.srv, clear, q, vars)
	c.ok(t, nil)
	for _, id := range []string{wamid1, wamid2, sid} {
		if strings.Count(string(c.Data), id) != 2 {
			t.Errorf("assistant with pii scope did not read %s twice: %s", id, c.Data)
		}
	}
	if err := e.audit.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	entries, _, _, err := e.db.FindAuditEntries(ctx, e.ws, c360.AuditFilter{First: 100, Action: c360.AuditPIIRead})
	if err != nil {
		t.Fatal(err)
	}
	reads := 0
	for _, a := range entries {
		if a.CustomerID == cust && strings.Contains(strings.Join(a.Fields, ","), "providerId") {
			reads++
		}
	}
	if reads == 0 {
		t.Errorf("no pii.read of providerId for customer %d: %+v", cust, entries)
	}
}
