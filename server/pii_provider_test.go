package server_test

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/connectors/whatsapp"
	"github.com/c360dev/c360/server"
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

// whatsAppNumber is the customer number the wamids of whatsAppAssistants
// encode.
const whatsAppNumber = "14155550100"

// whatsAppAssistants mounts the WhatsApp webhook on e's server with an app
// secret, and returns the secret, an assistant key without the pii scope
// (masked), one with it (clear), and wamid, which makes a WhatsApp message
// id that encodes whatsAppNumber, as Meta's do.
func whatsAppAssistants(t *testing.T, e *rtEnv) (secret, masked, clear string, wamid func(tail string) string) {
	t.Helper()
	ctx := context.Background()
	slug := workspaceSlug(t, e)
	secret = "whatsapp-app-secret"
	if _, err := e.db.UpdateWorkspace(ctx, slug, c360.WorkspaceUpdate{WhatsAppAppSecret: &secret}); err != nil {
		t.Fatal(err)
	}
	(&whatsapp.Handler{Workspaces: e.db, Ingester: e.db, StatusOf: server.StatusOf,
		Logger: slog.New(slog.DiscardHandler), Now: e.db.Now}).Register(e.s)
	var err error
	if masked, _, err = e.db.CreateAPIKey(ctx, slug, c360.RoleAssistant, nil); err != nil {
		t.Fatal(err)
	}
	if clear, _, err = e.db.CreateAPIKey(ctx, slug, c360.RoleAssistant, []string{c360.ScopePII}); err != nil {
		t.Fatal(err)
	}
	wamid = func(tail string) string {
		return "wamid." + base64.StdEncoding.EncodeToString([]byte("\x1c\x18\x0b"+whatsAppNumber+"\x15\x02\x00\x12\x18\x14"+tail+"\x00"))
	}
	return secret, masked, clear, wamid
}

// A WhatsApp reply and reaction name the message they answer by its wamid
// (properties replyTo and reactionTo), which holds the customer's number
// as Message.providerId does; an app may keep one in a trait too. An
// assistant without the pii scope reads each as wamid.***, in
// Event.properties, Customer.traits, TraitSource.value, change diffs and
// customerContext's text, and a key with the pii scope reads them whole,
// its read audited as pii.read.
func TestWhatsAppIDsInPropertiesMaskedForAssistants(t *testing.T) {
	e := newRTEnv(t, rtOptions{audit: true})
	ctx := context.Background()
	secret, masked, clear, wamid := whatsAppAssistants(t, e)
	const number = whatsAppNumber
	answered := wamid("3A4A6599AEE03810144F")
	post := func(message string) {
		t.Helper()
		payload := `{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"messages","value":` +
			`{"messaging_product":"whatsapp","metadata":{"display_phone_number":"15550783881","phone_number_id":"1"},` +
			`"contacts":[{"profile":{"name":"Kerry"},"wa_id":"` + number + `"}],"messages":[` + message + `]}}]}]}`
		mac := hmac.New(sha256.New, []byte(secret))
		mac.Write([]byte(payload))
		req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/webhooks/whatsapp/"+workspaceSlug(t, e), strings.NewReader(payload))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Hub-Signature-256", "sha256="+hex.EncodeToString(mac.Sum(nil)))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("whatsapp webhook: status %d", resp.StatusCode)
		}
	}
	now := time.Now().Unix()
	post(fmt.Sprintf(`{"from":%q,"id":%q,"timestamp":"%d","type":"text","text":{"body":"yes please"},"context":{"from":"15550783881","id":%q}}`,
		number, wamid("3A4A6599AEE03810155A"), now, answered))
	post(fmt.Sprintf(`{"from":%q,"id":%q,"timestamp":"%d","type":"reaction","reaction":{"message_id":%q,"emoji":"\u2764"}}`,
		number, wamid("3A4A6599AEE03810166B"), now, answered))
	phone := []c360.Identity{{Type: "phone", Value: "+" + number}}
	cust := ingest(t, e.db, e.ws, phone, nil)
	subs := map[string]*wsClient{}
	for name, key := range map[string]string{"masked": masked, "clear": clear} {
		c := dialWS(t, wsURL(e.srv), "graphql-transport-ws", nil)
		c.init(key)
		c.subscribe("c", `subscription($id: ID!) { customerChanged(id: $id) { diff } }`, map[string]any{"id": fmt.Sprint(cust)})
		subs[name] = c
	}
	waitFor(t, "the subscriptions to start", func() bool { return e.hub.Stats().Streams >= 2 })
	ingest(t, e.db, e.ws, phone, map[string]any{"last_reply_to": answered})

	// leaks reports the wamids in s that give the number away.
	leaks := func(s string) []string {
		var out []string
		for _, f := range strings.Split(s, `"`) {
			id, ok := strings.CutPrefix(f, "wamid.")
			if !ok {
				continue
			}
			if i := strings.IndexAny(id, `\ `); i >= 0 {
				id = id[:i]
			}
			b, _ := base64.StdEncoding.DecodeString(id)
			if strings.Contains(string(b), number) {
				out = append(out, f)
			}
		}
		return out
	}
	for name, c := range subs {
		var got struct{ Diff json.RawMessage }
		c.next("c", "customerChanged", &got)
		diff := string(got.Diff)
		switch {
		case name == "masked" && (len(leaks(diff)) > 0 || !strings.Contains(diff, `"last_reply_to":"wamid.***"`)):
			t.Errorf("masked assistant's customerChanged diff: %s, want last_reply_to wamid.***", diff)
		case name == "clear" && !strings.Contains(diff, answered):
			t.Errorf("assistant with pii's customerChanged diff: %s, want %s", diff, answered)
		}
	}

	const q = `query($id: ID!) {
		customer(id: $id) { traits traitSources { name value } events(first: 10) { edges { node { properties } } } }
		customerContext(id: $id) { text traits } }`
	vars := map[string]any{"id": fmt.Sprint(cust)}
	// data is an answer's data without the spaces of stored properties.
	data := func(key string) string {
		t.Helper()
		r := gql(t, e.srv, key, q, vars)
		r.ok(t, nil)
		var b bytes.Buffer
		if err := json.Compact(&b, r.Data); err != nil {
			t.Fatal(err)
		}
		return b.String()
	}
	m := data(masked)
	if l := leaks(m); len(l) > 0 {
		t.Errorf("assistant without pii scope read the number in %v: %s", l, m)
	}
	for _, want := range []string{`"replyTo":"wamid.***"`, `"reactionTo":"wamid.***"`, `"last_reply_to":"wamid.***"`,
		`"value":"wamid.***"`, `last_reply_to: wamid.***`} {
		if !strings.Contains(m, want) {
			t.Errorf("masked answer lacks %s: %s", want, m)
		}
	}
	c := data(clear)
	for _, want := range []string{`"replyTo":"` + answered, `"reactionTo":"` + answered, `"last_reply_to":"` + answered,
		`"value":"` + answered, `last_reply_to: ` + answered} {
		if !strings.Contains(c, want) {
			t.Errorf("assistant with pii scope did not read %s: %s", want, c)
		}
	}
	if err := e.audit.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	entries, _, _, err := e.db.FindAuditEntries(ctx, e.ws, c360.AuditFilter{First: 100, Action: c360.AuditPIIRead})
	if err != nil {
		t.Fatal(err)
	}
	var fields []string
	for _, a := range entries {
		if a.CustomerID == cust {
			fields = append(fields, a.Fields...)
		}
	}
	read := strings.Join(fields, ",")
	for _, want := range []string{"properties.replyTo", "properties.reactionTo", "traits.last_reply_to"} {
		if !strings.Contains(read, want) {
			t.Errorf("no pii.read of %s for customer %d: %v", want, cust, fields)
		}
	}
}
