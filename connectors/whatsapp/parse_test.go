package whatsapp

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/c360dev/c360"
)

var now = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

func TestParsePayload(t *testing.T) {
	evs, _, err := ParsePayload([]byte(`{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[
		{"field":"messages","value":{"metadata":{"display_phone_number":"15550783881"},
		 "contacts":[{"profile":{"name":"Kerry"},"wa_id":"16315551234"}],
		 "messages":[{"from":"16315551234","id":"wamid.A","timestamp":"1700000000","type":"text","text":{"body":"hi"}}],
		 "statuses":[{"id":"wamid.B","status":"DELIVERED","timestamp":"1700000001","recipient_id":"16315551234"}]}},
		{"field":"account_update","value":{}}]}]}`), now)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 2 {
		t.Fatalf("events = %d, want 2", len(evs))
	}
	m, s := evs[0], evs[1]
	if m.Type != c360.EventMessage || m.Source != "whatsapp" || m.DedupeKey != "wamid.A" || m.Identities[0].Value != "+16315551234" ||
		m.Message.Body != "hi" || m.TraitsIfAbsent["name"] != "Kerry" || m.Properties["to"] != "+15550783881" ||
		m.Properties["waId"] != "16315551234" || !m.OccurredAt.Equal(time.Unix(1700000000, 0)) {
		t.Errorf("message event = %+v %+v", m, m.Message)
	}
	if s.Type != c360.EventMessageStatus || s.DedupeKey != "wamid.B:delivered" || s.Message.Status != "delivered" ||
		s.Message.ProviderID != "wamid.B" || s.Identities[0].Value != "+16315551234" || s.Properties["waId"] != "16315551234" {
		t.Errorf("status event = %+v %+v", s, s.Message)
	}
}

func TestParsePayloadIgnoresOtherObjects(t *testing.T) {
	evs, _, err := ParsePayload([]byte(`{"object":"page","entry":[{"changes":[{"field":"messages","value":{"messages":[{"from":"1","id":"x","type":"text"}]}}]}]}`), now)
	if err != nil || len(evs) != 0 {
		t.Errorf("ParsePayload(page) = %v, %v; want nothing", evs, err)
	}
	for body, want := range map[string]string{
		`{"entry": 5}`: "the body is not a WhatsApp notification: entry: want an array, got number",
		`{"entry": [`:  "the body is not a WhatsApp notification: invalid JSON at byte 11: unexpected end of JSON input",
	} {
		_, _, err := ParsePayload([]byte(body), now)
		if c360.ErrorCode(err) != c360.EINVALID || c360.ErrorMessage(err) != want {
			t.Errorf("ParsePayload(%s): err = %v, want %s %q", body, err, c360.EINVALID, want)
		}
	}
}

// FuzzWhatsAppPayload checks that any body parses to events or a refusal,
// never a panic, and that every event carries what ingest requires.
func FuzzWhatsAppPayload(f *testing.F) {
	f.Add(`{"object":"whatsapp_business_account","entry":[{"changes":[{"field":"messages","value":{"contacts":[{"profile":{"name":"K"},"wa_id":"1"}],"messages":[{"from":"1","id":"wamid.1","timestamp":"1","type":"text","text":{"body":"hi"}}]}}]}]}`)
	f.Add(`{"entry":[{"changes":[{"value":{"messages":[{"from":"1","id":"w","type":"image","image":{"id":"9","caption":"c"}},{"from":"1","id":"v","type":"interactive","interactive":{"type":"list_reply","list_reply":{"id":"a","title":"b"}}}]}}]}]}`)
	f.Add(`{"entry":[{"changes":[{"value":{"statuses":[{"id":"w","status":"failed","recipient_id":"1","errors":[{"code":131047}]}]}}]}]}`)
	f.Add(`{"entry":[{"changes":[{"value":{"messages":[{"from":"1","id":"s","type":"system","system":{"type":"user_changed_number","new_wa_id":"2"}}]}}]}]}`)
	f.Add(`{"entry":[{"changes":[{"value":{"messages":[{"from":"1","id":"s","type":"system","system":{"type":"user_changed_number"}},{"type":"interactive","interactive":{}}]}}]}]}`)
	f.Add(`{"entry":[{"changes":[{"value":{"contacts":[{"profile":{"name":"S","username":"@s"},"user_id":"US.1"}],"messages":[{"from_user_id":"US.1","id":"u","type":"text","text":{"body":"hi"}},{"id":"n","type":"text"}],"statuses":[{"id":"w","status":"read","recipient_user_id":"US.1"}]}}]}]}`)
	f.Add(`{"entry":null}`)
	f.Add(`[]`)
	f.Add(`{"entry":[{"changes":[{"value":{"contacts":[{"wa_id":1}],"messages":[{"from":1,"id":"a","type":"text","text":"x"},{"id":{}},7],"statuses":[{"id":"b","status":"sent","errors":{}}]}}]}]}`)
	f.Fuzz(func(t *testing.T, body string) {
		evs, skipped, err := ParsePayload([]byte(body), now)
		if err != nil {
			if c360.ErrorCode(err) != c360.EINVALID {
				t.Fatalf("error code %s", c360.ErrorCode(err))
			}
			return
		}
		for _, s := range skipped {
			if s.Item == "" || s.Reason == "" {
				t.Fatalf("skipped %+v", s)
			}
		}
		for _, ev := range evs {
			// An event may have no identity (a message naming no sender):
			// ingest refuses it, and the handler keeps it as a dead letter.
			if ev.DedupeKey == "" || ev.Source != Source {
				t.Fatalf("event %+v", ev)
			}
			for _, id := range ev.Identities {
				if id.Type == UserIDType && id.Value != "" {
					continue
				}
				if id.Type != "phone" || id.Value == "" || id.Value[0] != '+' {
					t.Fatalf("identity %+v", id)
				}
			}
			if (ev.Type == c360.EventMessage || ev.Type == c360.EventMessageStatus) && (ev.Message == nil || ev.Message.ProviderID == "") {
				t.Fatalf("message event without a message: %+v", ev)
			}
		}
	})
}

func BenchmarkWhatsAppParse(b *testing.B) {
	body := []byte(`{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"messages","value":{"metadata":{"display_phone_number":"15550783881","phone_number_id":"1"},"contacts":[{"profile":{"name":"Kerry"},"wa_id":"16315551234"}],"messages":[{"from":"16315551234","id":"wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA=","timestamp":"1700000000","type":"text","text":{"body":"Where is my order?"}}]}}]}]}`)
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := ParsePayload(body, now); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkValidSignature measures verifying X-Hub-Signature-256 over a
// typical inbound payload, as every webhook request does before parsing.
func BenchmarkValidSignature(b *testing.B) {
	body := []byte(`{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"messages","value":{"metadata":{"display_phone_number":"15550783881","phone_number_id":"1"},"contacts":[{"profile":{"name":"Kerry"},"wa_id":"16315551234"}],"messages":[{"from":"16315551234","id":"wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA=","timestamp":"1700000000","type":"text","text":{"body":"Where is my order?"}}]}}]}]}`)
	const secret = "0123456789abcdef0123456789abcdef"
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(body)
	header := "sha256=" + hex.EncodeToString(mac.Sum(nil))
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if !ValidSignature(secret, body, header) {
			b.Fatal("good signature refused")
		}
	}
}

// A message's Unix time is believed up to webhook.MaxFuture ahead; a
// missing, unparsable, non-positive or further time is the receipt's.
func TestTimestamp(t *testing.T) {
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	for s, want := range map[string]time.Time{
		"1740830280": time.Unix(1740830280, 0).UTC(),
		strconv.FormatInt(now.Add(23*time.Hour).Unix(), 10): now.Add(23 * time.Hour),
		strconv.FormatInt(now.Add(25*time.Hour).Unix(), 10): now,
		"99999999999": now,
		"0":           now,
		"-5":          now,
		"":            now,
		"soon":        now,
	} {
		if got := timestamp(s, now); !got.Equal(want) {
			t.Errorf("timestamp(%q) = %v, want %v", s, got, want)
		}
	}
}

// A user who adopted a username may arrive with no number: from and wa_id
// left out, the BSUID in from_user_id and the contact's user_id. The BSUID
// is the sender then, beside the number when both come, and a message
// naming neither still gets its event (which ingest refuses, and the
// handler keeps as a dead letter) instead of vanishing.
func TestParsePayloadBusinessScopedUserIDs(t *testing.T) {
	const bsuid = "US.13491208655302741918"
	for _, tc := range []struct {
		name, contacts, message string
		want                    []c360.Identity
		wantName                string
	}{
		{"from_user_id only",
			`[{"profile":{"name":"Sheena","username":"@sheena"},"user_id":"` + bsuid + `"}]`,
			`{"from_user_id":"` + bsuid + `","id":"wamid.X","timestamp":"1700000000","type":"text","text":{"body":"Where is my order?"}}`,
			[]c360.Identity{{Type: UserIDType, Value: bsuid}}, "Sheena"},
		{"the contact's user_id",
			`[{"profile":{"name":"Sheena"},"user_id":"` + bsuid + `"}]`,
			`{"id":"wamid.X","timestamp":"1700000000","type":"text","text":{"body":"hi"}}`,
			[]c360.Identity{{Type: UserIDType, Value: bsuid}}, "Sheena"},
		{"number and BSUID",
			`[{"profile":{"name":"Sheena"},"wa_id":"16505551234","user_id":"` + bsuid + `"}]`,
			`{"from":"16505551234","from_user_id":"` + bsuid + `","id":"wamid.X","type":"text","text":{"body":"hi"}}`,
			[]c360.Identity{{Type: "phone", Value: "+16505551234"}, {Type: UserIDType, Value: bsuid}}, "Sheena"},
		{"number, and the BSUID of its contact",
			`[{"profile":{"name":"Other"},"wa_id":"16505550000","user_id":"US.1"},{"profile":{"name":"Sheena"},"wa_id":"16505551234","user_id":"` + bsuid + `"}]`,
			`{"from":"16505551234","id":"wamid.X","type":"text","text":{"body":"hi"}}`,
			[]c360.Identity{{Type: "phone", Value: "+16505551234"}, {Type: UserIDType, Value: bsuid}}, "Sheena"},
		// Naming no sender, the only contact's number and BSUID, as an
		// unreadable copy of the item is kept with (unreadableEvent).
		{"the only contact's number and BSUID",
			`[{"profile":{"name":"Sheena"},"wa_id":"16505551234","user_id":"` + bsuid + `"}]`,
			`{"id":"wamid.X","timestamp":"1700000000","type":"text","text":{"body":"hi"}}`,
			[]c360.Identity{{Type: "phone", Value: "+16505551234"}, {Type: UserIDType, Value: bsuid}}, "Sheena"},
		{"no sender", `[]`, `{"id":"wamid.X","type":"text","text":{"body":"hi"}}`, nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			evs, _, err := ParsePayload([]byte(`{"object":"whatsapp_business_account","entry":[{"changes":[{"field":"messages","value":{
				"contacts":`+tc.contacts+`,"messages":[`+tc.message+`]}}]}]}`), now)
			if err != nil {
				t.Fatal(err)
			}
			if len(evs) != 1 {
				t.Fatalf("events = %d, want 1", len(evs))
			}
			ev := evs[0]
			if ev.DedupeKey != "wamid.X" || ev.Message == nil || ev.Message.ProviderID != "wamid.X" {
				t.Errorf("event = %+v", ev)
			}
			if fmt.Sprint(ev.Identities) != fmt.Sprint(tc.want) {
				t.Errorf("identities = %v, want %v", ev.Identities, tc.want)
			}
			if got, _ := ev.TraitsIfAbsent["name"].(string); got != tc.wantName {
				t.Errorf("name = %q, want %q", got, tc.wantName)
			}
		})
	}
	// A status finds its message by its wamid: one with the BSUID only, or
	// with no recipient at all, is an event all the same.
	evs, _, err := ParsePayload([]byte(`{"entry":[{"changes":[{"value":{"statuses":[
		{"id":"wamid.S1","status":"delivered","timestamp":"1700000000","recipient_user_id":"`+bsuid+`"},
		{"id":"wamid.S2","status":"read","timestamp":"1700000000"}]}}]}]}`), now)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 2 || fmt.Sprint(evs[0].Identities) != fmt.Sprint([]c360.Identity{{Type: UserIDType, Value: bsuid}}) ||
		evs[0].DedupeKey != "wamid.S1:delivered" || len(evs[1].Identities) != 0 || evs[1].Message.ProviderID != "wamid.S2" {
		t.Errorf("status events = %+v", evs)
	}
}

// Each item of a notification is read on its own: an id-like field sent as
// a number is read as its digits, and an item of a shape c360 does not
// know costs only itself. With a readable id it becomes an event ingest
// refuses with the reason (kept as a dead letter); without one, a Skipped
// whose reason names no value of it. The envelope itself is still refused.
func TestParsePayloadReadsEachItemOnItsOwn(t *testing.T) {
	evs, skipped, err := ParsePayload([]byte(`{"object":"whatsapp_business_account","entry":[{"id":102290129340398,"changes":[{"field":"messages","value":{
		"metadata":{"display_phone_number":15550783881,"phone_number_id":106540352242922},
		"contacts":[{"profile":{"name":"Sam"},"wa_id":16505551237},{"profile":"Kim"}],
		"messages":[
			{"from":"16505551237","id":"wamid.GOOD","timestamp":"1700000000","type":"text","text":{"body":"hello"}},
			{"from":16505551237,"id":"wamid.SYS","timestamp":1700000001,"type":"system","system":{"body":"changed","type":"user_changed_number","new_wa_id":16505551297}},
			{"from":"16505551237","id":"wamid.ODD","timestamp":"1700000002","type":"text","text":"private words"},
			{"from":"16505551237","id":{"x":1},"type":"text","text":{"body":["more private words"]}},
			{"type":"text","text":{"body":"no id"}},
			"not an object"],
		"statuses":[{"id":"wamid.OUT","status":"failed","recipient_id":"16505551237","errors":{"code":131047}},
			{"id":"wamid.OUT2","status":"delivered","recipient_id":16505551237,"errors":[{"code":"131047"}]}]}}]}]}`), now)
	if err != nil {
		t.Fatal(err)
	}
	byKey := map[string]*c360.Event{}
	for _, ev := range evs {
		byKey[ev.DedupeKey] = ev
	}
	if len(evs) != 5 || len(byKey) != 5 {
		t.Fatalf("events = %d %v, want 5", len(evs), byKey)
	}
	if ev := byKey["wamid.GOOD"]; ev.Unreadable != "" || ev.Message.Body != "hello" || ev.TraitsIfAbsent["name"] != "Sam" || ev.Properties["to"] != "+15550783881" {
		t.Errorf("good message = %+v", ev)
	}
	if ev := byKey["wamid.SYS"]; ev.Unreadable != "" || ev.Name != NumberChangedEvent || ev.Properties["phone"] != "+16505551297" ||
		fmt.Sprint(ev.Identities) != "[{phone +16505551237} {phone +16505551297}]" || !ev.OccurredAt.Equal(time.Unix(1700000001, 0)) {
		t.Errorf("number change with numbers for ids = %+v", ev)
	}
	odd := byKey["wamid.ODD"]
	if odd.Type != c360.EventMessage || odd.Unreadable != "the message could not be read: text: want an object, got string" ||
		fmt.Sprint(odd.Identities) != "[{phone +16505551237}]" || odd.Message.ProviderID != "wamid.ODD" || odd.Properties["item"] == nil {
		t.Errorf("unreadable message = %+v", odd)
	}
	if st := byKey["wamid.OUT:failed"]; st == nil || st.Type != c360.EventMessageStatus || st.Unreadable != "the status could not be read: errors: want an array, got object" {
		t.Errorf("unreadable status = %+v", st)
	}
	if st := byKey["wamid.OUT2:delivered"]; st == nil || st.Unreadable != "" || st.Message.ErrorCode != "131047" || st.Properties["waId"] != "16505551237" {
		t.Errorf("status with a number for recipient_id = %+v", st)
	}
	want := []Skipped{
		{"entry[0].changes[0].value.contacts[1]", "the contact could not be read: profile: want an object, got string"},
		{"entry[0].changes[0].value.messages[3]", "the message could not be read: id: want a string or a number, got object"},
		{"entry[0].changes[0].value.messages[4]", "the message has no id"},
		{"entry[0].changes[0].value.messages[5]", "the message could not be read: the message: want an object, got string"},
	}
	if fmt.Sprint(skipped) != fmt.Sprint(want) {
		t.Errorf("skipped = %q\nwant      %q", skipped, want)
	}
	for _, body := range []string{
		`{"entry":[{"changes":[{"value":{"messages":5}}]}]}`,
		`{"entry":[{"changes":[{"value":{"metadata":{"display_phone_number":{}}}}]}]}`,
	} {
		if _, _, err := ParsePayload([]byte(body), now); c360.ErrorCode(err) != c360.EINVALID {
			t.Errorf("ParsePayload(%s): err = %v, want %s", body, err, c360.EINVALID)
		}
	}
}

// A number no 64-bit float holds in a field read as a number (a location's
// latitude) makes the item unreadable, saying where, never the number.
func TestNumberTooLargeInAnItemIsNamed(t *testing.T) {
	evs, _, err := ParsePayload([]byte(`{"entry":[{"changes":[{"value":{"messages":[
		{"from":"16505551237","id":"wamid.LOC","timestamp":"1700000000","type":"location","location":{"latitude":1e400,"longitude":2}}]}}]}]}`), now)
	if err != nil {
		t.Fatal(err)
	}
	want := "the message could not be read: location.latitude: a number too large for a 64-bit float"
	if len(evs) != 1 || evs[0].Unreadable != want {
		t.Fatalf("events = %+v, want one unreadable: %q", evs, want)
	}
}

// A message of a type c360 does not read is kept as Meta sent it, in
// property item, rather than stored with an empty body and only its type:
// Meta got a 200 for it and will not send it again. A WhatsApp Flow's
// reply (interactive nfm_reply) is read: its flow name, body and the
// fields filled in.
func TestParsePayloadKeepsMessagesOfOtherTypes(t *testing.T) {
	msgs := map[string]string{
		"wamid.NFM": `{"from":"16315551234","id":"wamid.NFM","timestamp":"1700000000","type":"interactive","interactive":{"type":"nfm_reply","nfm_reply":{"name":"flow","body":"Sent","response_json":"{\"flow_token\":\"t-1\",\"size\":42,\"email\":\"ada@example.com\"}"}}}`,
		"wamid.ORD": `{"from":"16315551234","id":"wamid.ORD","timestamp":"1700000000","type":"order","order":{"catalog_id":"c1","text":"for Friday","product_items":[{"product_retailer_id":"sku-1","quantity":2,"item_price":12.5,"currency":"USD"}]}}`,
		"wamid.CON": `{"from":"16315551234","id":"wamid.CON","timestamp":"1700000000","type":"contacts","contacts":[{"name":{"formatted_name":"Grace Hopper","first_name":"Grace"},"phones":[{"phone":"+1 (415) 555-0111","wa_id":"14155550111","type":"HOME"}]}]}`,
		"wamid.UNS": `{"from":"16315551234","id":"wamid.UNS","timestamp":"1700000000","type":"unsupported","errors":[{"code":131051,"title":"Message type unknown"}]}`,
		"wamid.NEW": `{"from":"16315551234","id":"wamid.NEW","timestamp":"1700000000","type":"hologram","hologram":{"frames":12345678901234567890}}`,
		"wamid.INT": `{"from":"16315551234","id":"wamid.INT","timestamp":"1700000000","type":"interactive","interactive":{"type":"call_permission_reply","call_permission_reply":{"response":"accept"}}}`,
		"wamid.TXT": `{"from":"16315551234","id":"wamid.TXT","timestamp":"1700000000","type":"text","text":{"body":"hi"}}`,
	}
	var list []string
	for _, m := range msgs {
		list = append(list, m)
	}
	evs, skipped, err := ParsePayload([]byte(`{"object":"whatsapp_business_account","entry":[{"changes":[{"field":"messages","value":{
		"contacts":[{"profile":{"name":"Kerry"},"wa_id":"16315551234"}],"messages":[`+strings.Join(list, ",")+`]}}]}]}`), now)
	if err != nil || len(skipped) != 0 || len(evs) != len(msgs) {
		t.Fatalf("ParsePayload = %d events, %v, %v; want %d events", len(evs), skipped, err, len(msgs))
	}
	for _, ev := range evs {
		id := ev.DedupeKey
		if ev.Unreadable != "" || ev.Consent != nil || len(ev.Identities) != 1 {
			t.Errorf("%s: %+v, want a readable message from its sender, no consent", id, ev)
		}
		item, kept := ev.Properties["item"]
		if id == "wamid.TXT" {
			if kept {
				t.Errorf("%s: a text keeps its item: %v", id, item)
			}
			continue
		}
		if id == "wamid.NFM" {
			if kept {
				t.Errorf("%s: a Flow's reply, read whole, keeps its item: %v", id, item)
			}
			continue
		}
		var want any
		if err := c360.UnmarshalExact([]byte(msgs[id]), &want); err != nil {
			t.Fatal(err)
		}
		if !kept || !reflect.DeepEqual(item, want) {
			t.Errorf("%s: item = %#v, want the message as sent, %#v", id, item, want)
		}
	}
	nfm := evs[slices.IndexFunc(evs, func(ev *c360.Event) bool { return ev.DedupeKey == "wamid.NFM" })]
	wantNFM := map[string]any{"type": "nfm_reply", "flowName": "flow", "body": "Sent",
		"responseJson": map[string]any{"flow_token": "t-1", "size": json.Number("42"), "email": "ada@example.com"}}
	if got := nfm.Properties["interactive"]; !reflect.DeepEqual(got, wantNFM) || nfm.Message.Body != "Sent" {
		t.Errorf("nfm_reply: interactive = %#v, body %q; want %#v, Sent", got, nfm.Message.Body, wantNFM)
	}
	// A response_json that is no JSON object is kept as the text it is.
	if got := jsonText("not json"); got != "not json" {
		t.Errorf("jsonText(not json) = %#v", got)
	}
}
