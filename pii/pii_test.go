package pii

import (
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
)

func TestMaskers(t *testing.T) {
	for _, tc := range []struct {
		name, got, want string
	}{
		{"email", Email("jane@example.com"), "j***@example.com"},
		{"email one letter", Email("j@example.com"), "j***@example.com"},
		{"email unicode", Email("émile@example.fr"), "é***@example.fr"},
		{"not an email", Email("jane"), Redacted},
		{"email without local part", Email("@example.com"), Redacted},
		{"US phone", Phone("+14155550100"), "+1******0100"},
		{"UK phone", Phone("+447700900123"), "+44******0123"},
		{"French phone", Phone("+33612345678"), "+33*****5678"},
		{"Irish phone (3-digit code)", Phone("+353861234567"), "+353*****4567"},
		{"national phone", Phone("(415) 555-0100"), "******0100"},
		{"too short to hide", Phone("+1234"), Redacted},
		{"name", Name("Jane Doe"), "J***"},
		{"name trimmed", Name("  jane"), "j***"},
		{"empty name", Name(""), ""},
	} {
		if tc.got != tc.want {
			t.Errorf("%s: got %q, want %q", tc.name, tc.got, tc.want)
		}
	}
}

func TestIdentity(t *testing.T) {
	for _, tc := range []struct {
		typ, value, want string
		kind             Kind
	}{
		{"email", "jane@example.com", "j***@example.com", KindEmail},
		{"phone", "+14155550100", "+1******0100", KindPhone},
		{"work_email", "jane@corp.example", "j***@corp.example", KindEmail},
		{"whatsapp", "+14155550100", "+1******0100", KindPhone},
		{"user_id", "u-42", "u-42", ""},
		{"anonymous_id", "0f9c2a", "0f9c2a", ""},
		{"chatbot:webchat", "session-1", "session-1", ""},
		// A custom type says nothing; the value's shape does.
		{"user_id", "jane@example.com", "j***@example.com", KindEmail},
		{"crm_id", "+14155550100", "+1******0100", KindPhone},
		// When neither does, the addresses inside the value are masked,
		// and the phone numbers written as one: with a + (E.164, its
		// groups spaced or not), with an area code in parentheses, or
		// after a channel's prefix (tel:, wa:, whatsapp:, sms:).
		{"chatbot:webchat", "whatsapp:+14155550199", "whatsapp:+1******0199", KindPhone},
		{"crm_id", "+1 415 555 0188", "+1******0188", KindPhone},
		{"crm_id", "(415) 555-0188", "(******0188", KindPhone},
		{"user_id", "Ann Lee <ann.lee@corp.example>", "Ann Lee <a***@corp.example>", KindEmail},
		{"crm_id", "tel:+14155550100", "tel:+1******0100", KindPhone},
		{"crm_id", "tel:4155550100", "tel:******0100", KindPhone},
		{"crm_id", "wa:14155550199", "wa:*******0199", KindPhone},
		{"crm_id", "SMS:4155550100", "SMS:******0100", KindPhone},
		{"chatbot:webchat", "https://wa.me/14155550199", "https://wa.me/*******0199", KindPhone},
		// A channel's prefix joined by an underscore is one too, as by a
		// colon: wa_ and tel_ name the number's channel.
		{"crm_id", "wa_14155550199", "wa_*******0199", KindPhone},
		{"crm_id", "WA_14155550199", "WA_*******0199", KindPhone},
		{"crm_id", "tel_4155550100", "tel_******0100", KindPhone},
		{"chatbot:webchat", "bot_wa_14155550199", "bot_wa_*******0199", KindPhone},
		{"user_id", "jane@example.com ", "j***@example.com ", KindEmail},
		// A number as people write one after a channel's name, in a link
		// or after any word and a colon, is masked: reading a phone number
		// where there is none costs an id's legibility, the reverse a
		// person's number.
		{"crm_id", "tel: 4155550100", "tel: ******0100", KindPhone},
		{"crm_id", "WhatsApp: 14155550199", "WhatsApp: *******0199", KindPhone},
		{"crm_id", "wa 14155550199", "wa *******0199", KindPhone},
		{"crm_id", "tel://4155550100", "tel://******0100", KindPhone},
		{"chatbot:webchat", "https://api.whatsapp.com/send?phone=14155550199", "https://api.whatsapp.com/send?phone=*******0199", KindPhone},
		{"crm_id", "wa_id:14155550199", "wa_id:*******0199", KindPhone},
		{"crm_id", "whatsapp-business:14155550199", "whatsapp-business:*******0199", KindPhone},
		{"crm_id", "user:14155550100", "user:*******0100", KindPhone},
		{"crm_id", "hotel:4155550100", "hotel:******0100", KindPhone},
		{"order_id", "order 2024 000123 45", "order ********2345", KindPhone},
		// A number written with a +, or after a channel's prefix, is one
		// however many digits an extension or a second number adds.
		{"crm_id", "+49 211 1234567-1234", "+49**********1234", KindPhone},
		{"crm_id", "+44 (0)20 7946 0958 1234", "+44***********1234", KindPhone},
		{"crm_id", "+1 415 555 0199 12345", "+1***********2345", KindPhone},
		{"crm_id", "tel:4155550199/4155550100", "tel:****************0100", KindPhone},
		{"crm_id", "wa:1415555019914155550100", "wa:******************0100", KindPhone},
		{"crm_id", "viber_14155550199", "viber_*******0199", KindPhone},
		// Digits alone are an id, and so are more digits than a phone
		// number has (15), whatever joins them: an analytics or a shop's
		// id, a card-like number (a card number is not a phone; cards are
		// not recognized at all).
		{"user_id", "14155550100", "14155550100", ""},
		{"anonymous_id", "550e8400-e29b-41d4-a716-446655440000", "550e8400-e29b-41d4-a716-446655440000", ""},
		{"anonymous_id", "GA1.2.1234567890.1700000000", "GA1.2.1234567890.1700000000", ""},
		{"anonymous_id", "fb.1.1700000000000.1234567890", "fb.1.1700000000000.1234567890", ""},
		{"crm_id", "shop:12345678/987654321", "shop:12345678/987654321", ""},
		{"order_id", "ORD-2024-000123-45", "ORD-2024-000123-45", ""},
		{"payment_ref", "4111 1111 1111 1111", "4111 1111 1111 1111", ""},
		// Digits glued to a word by _ or - are the word's: an id, unless
		// the word names a channel (above) and the digits are a number
		// with its area code (sess_ is a session's id, twa_ no channel,
		// fax-1234567 and device:phone-12345678 records' ids).
		{"crm_id", "sess_4155550100", "sess_4155550100", ""},
		{"crm_id", "twa_14155550199", "twa_14155550199", ""},
		{"crm_id", "fax-1234567", "fax-1234567", ""},
		{"crm_id", "device:phone-12345678", "device:phone-12345678", ""},
	} {
		got, kind := Identity(tc.typ, tc.value)
		if got != tc.want || kind != tc.kind {
			t.Errorf("Identity(%q, %q) = %q, %q; want %q, %q", tc.typ, tc.value, got, kind, tc.want, tc.kind)
		}
	}
}

func TestKeyKind(t *testing.T) {
	for key, want := range map[string]Kind{
		"email": KindEmail, "Email": KindEmail, "work_email": KindEmail, "emailAddress": KindEmail,
		"phone": KindPhone, "phone_number": KindPhone, "homePhone": KindPhone, "mobile": KindPhone,
		"name": KindName, "firstName": KindName, "first_name": KindName, "Last Name": KindName, "username": KindName,
		"address": KindAddress, "address_line1": KindAddress, "postalCode": KindAddress, "zip": KindAddress,
		"birthday": KindBirth, "date_of_birth": KindBirth,
		"plan": "", "city": "", "company": "", "seats": "", "emails_sent": "",
		// Names people give these fields, beyond the plain ones.
		"mobile_number": KindPhone, "contact_number": KindPhone, "phone1": KindPhone, "phone_2": KindPhone,
		"whatsappNumber": KindPhone, "cell_no": KindPhone, "email2": KindEmail, "billing_email": KindEmail,
		"customer_name": KindName, "billing_name": KindName, "contactName": KindName,
		"shipping_address": KindAddress, "billingAddress": KindAddress, "shipping_zip": KindAddress,
		"birth_year":   KindBirth,
		"company_name": "", "productName": "", "event_name": "", "phone_verified": "", "order_number": "",
		"number": "", "emailsOpened": "", "city_name": "", "country_name": "", "stateName": "",
		"wa_id": KindPhone, "msisdn": KindPhone, "telefono": KindPhone, "celular": KindPhone, "handy": KindPhone,
		"fax": KindPhone, "sms_to": KindPhone,
	} {
		if got := KeyKind(key); got != want {
			t.Errorf("KeyKind(%q) = %q, want %q", key, got, want)
		}
	}
}

func TestJSON(t *testing.T) {
	in := map[string]any{
		"name":     "Jane Doe",
		"email":    "jane@example.com",
		"phone":    "+14155550100",
		"plan":     "pro",
		"seats":    float64(3),
		"zip":      float64(94107),
		"address":  map[string]any{"street": "1 Main St", "city": "San Francisco"},
		"contact":  map[string]any{"work_email": "jane@corp.example", "note": "call after 6"},
		"aliases":  []any{"jane@example.com", "jd"},
		"homepage": "https://example.com",
		"mobile":   float64(14155550100),
	}
	before, _ := json.Marshal(in)
	got, found := JSON(in)
	want := map[string]any{
		"name":     "J***",
		"email":    "j***@example.com",
		"phone":    "+1******0100",
		"plan":     "pro",
		"seats":    float64(3),
		"zip":      Redacted,
		"address":  Redacted,
		"contact":  map[string]any{"work_email": "j***@corp.example", "note": "call after 6"},
		"aliases":  []any{"j***@example.com", "jd"},
		"homepage": "https://example.com",
		"mobile":   "*******0100",
	}
	if g, w := jsonString(got), jsonString(want); g != w {
		t.Errorf("masked:\n got %s\nwant %s", g, w)
	}
	wantFound := "[address aliases contact.work_email email mobile name phone zip]"
	if fmt.Sprint(found) != wantFound {
		t.Errorf("found = %v, want %s", found, wantFound)
	}
	if after, _ := json.Marshal(in); string(after) != string(before) {
		t.Errorf("JSON changed its input:\n%s\nwas\n%s", after, before)
	}
	if f := Find(in); fmt.Sprint(f) != wantFound {
		t.Errorf("Find = %v, want %s", f, wantFound)
	}

	// Nothing personal: the same map comes back, not a copy.
	plain := map[string]any{"plan": "pro", "seats": float64(3)}
	if got, found := JSON(plain); fmt.Sprintf("%p", got) != fmt.Sprintf("%p", plain) || len(found) != 0 {
		t.Errorf("JSON(no PII) = %v (found %v), want the input itself and nothing found", got, found)
	}
}

// A key is data too: an object of invitees by address, of replies by
// number. The keys that hold an address or a number are masked as a value
// under a key that says nothing is (a number alone is an id or a time, not
// a phone number, unless written as one), at any depth; two that mask
// alike keep both values, the later in sorted order suffixed; and the
// paths found name the masked key, as renamed (suffix included), never the
// address, for they go into the audit log.
func TestJSONMasksPersonalDataInKeys(t *testing.T) {
	in := map[string]any{
		"invitees": map[string]any{"bob.smith@example.com": "accepted", "+14155550100": "declined",
			"bill@example.com": map[string]any{"email": "bill@example.com"}, "b***@example.com": "already there"},
		"replies": map[string]any{"(415) 555-0111": map[string]any{"email": "x@example.com", "at": "2024-03-01"}},
		"plan":    "pro",
		"1234":    "short ids pass",
		// A Unix time, an EAN-13, a timestamp: numbers alone, not phones.
		"1700000000":     "seen",
		"4006381333931":  map[string]any{"qty": 2},
		"20240115103000": "batch",
	}
	before := jsonString(in)
	got, found := JSON(in)
	want := map[string]any{
		"invitees": map[string]any{"b***@example.com": "already there", "b***@example.com (2)": map[string]any{"email": "b***@example.com"},
			"b***@example.com (3)": "accepted", "+1******0100": "declined"},
		"replies":        map[string]any{"(******0111": map[string]any{"email": "x***@example.com", "at": "2024-03-01"}},
		"plan":           "pro",
		"1234":           "short ids pass",
		"1700000000":     "seen",
		"4006381333931":  map[string]any{"qty": 2},
		"20240115103000": "batch",
	}
	if g, w := jsonString(got), jsonString(want); g != w {
		t.Errorf("JSON masked\n got %s\nwant %s", g, w)
	}
	for _, s := range []string{"bob.smith@example.com", "+14155550100", "bill@example.com", "555-0111"} {
		if strings.Contains(jsonString(got), s) || strings.Contains(strings.Join(found, " "), s) {
			t.Errorf("%q is shown: %s, found %v", s, jsonString(got), found)
		}
	}
	wantFound := "[invitees.+1******0100 invitees.b***@example.com invitees.b***@example.com (2) invitees.b***@example.com (2).email invitees.b***@example.com (3) replies.(******0111 replies.(******0111.email]"
	if fmt.Sprint(found) != wantFound {
		t.Errorf("found = %v, want %s", found, wantFound)
	}
	if f := Find(in); fmt.Sprint(f) != wantFound {
		t.Errorf("Find = %v, want %s", f, wantFound)
	}
	if jsonString(in) != before {
		t.Errorf("JSON changed its input: %s", jsonString(in))
	}
	// The same object is renamed alike every time.
	for range 20 {
		if again, _ := JSON(in); jsonString(again) != jsonString(got) {
			t.Fatalf("JSON masked the same keys otherwise:\n%s\n%s", jsonString(again), jsonString(got))
		}
	}
	// In a diff and in a value, too.
	if d, _ := Diff(map[string]any{"traits": map[string]any{"jane@example.com": true}}, true); strings.Contains(jsonString(d), "jane@") {
		t.Errorf("Diff kept a key's address: %s", jsonString(d))
	}
	if v, f := Value("invitees", map[string]any{"jane@example.com": "yes"}); strings.Contains(jsonString(v), "jane@") || fmt.Sprint(f) != "[j***@example.com]" {
		t.Errorf("Value kept a key's address: %s, found %v", jsonString(v), f)
	}
}

func TestValue(t *testing.T) {
	for _, tc := range []struct {
		key   string
		in    any
		want  any
		found int
	}{
		{"email", "jane@example.com", "j***@example.com", 1},
		{"name", "Jane", "J***", 1},
		{"plan", "pro", "pro", 0},
		{"note", "reach me at jane@example.com", "reach me at j***@example.com", 1}, // free text
		{"note", "call (415) 555-0100", "call (******0100", 1},
		{"note", "order 12345, 2024-03-01", "order 12345, 2024-03-01", 0},
		{"backup", "jane@example.com", "j***@example.com", 1},
		{"address", map[string]any{"city": "SF"}, Redacted, 1},
	} {
		got, found := Value(tc.key, tc.in)
		if jsonString(got) != jsonString(tc.want) || len(found) != tc.found {
			t.Errorf("Value(%q, %v) = %v (found %v), want %v (%d found)", tc.key, tc.in, got, found, tc.want, tc.found)
		}
	}
}

func jsonString(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

func BenchmarkJSON(b *testing.B) {
	traits := map[string]any{"name": "Jane Doe", "email": "jane@example.com", "plan": "pro", "seats": float64(3),
		"company": "Acme", "title": "CTO", "last_order": "2024-03-01"}
	b.ReportAllocs()
	for b.Loop() {
		JSON(traits)
	}
}

func BenchmarkFind(b *testing.B) {
	traits := map[string]any{"name": "Jane Doe", "email": "jane@example.com", "plan": "pro", "seats": float64(3),
		"company": "Acme", "title": "CTO", "last_order": "2024-03-01"}
	b.ReportAllocs()
	for b.Loop() {
		Find(traits)
	}
}

func TestDiff(t *testing.T) {
	diff := map[string]any{
		"identity":        map[string]any{"type": "work_phone", "value": "(415) 555-0177"},
		"cause":           map[string]any{"type": "email", "value": "jane@example.com"},
		"identitiesAdded": []any{map[string]any{"type": "user_id", "value": "u1"}, map[string]any{"type": "crm_id", "value": "+14155550100"}},
		"reason":          "caller confirmed 415-555-0100",
		"dropped":         []any{`phone "+14155550122": limit: merging customer 1 would combine email "a@example.com", "b@example.com"`, `user_id "u2": taken`},
		"traits":          map[string]any{"name": "Jane", "plan": "pro"},
		"event":           map[string]any{"id": "7", "type": "track", "name": "Callback requested by +14155550199"},
		"observation":     map[string]any{"id": "3", "action": "recorded", "source": "4155550188", "verified": false, "recordedBy": "key 4e66"},
		"actor":           "key 4e66",
	}
	want := map[string]any{
		"identity":        map[string]any{"type": "work_phone", "value": "******0177"},
		"cause":           map[string]any{"type": "email", "value": "j***@example.com"},
		"identitiesAdded": []any{map[string]any{"type": "user_id", "value": "u1"}, map[string]any{"type": "crm_id", "value": "+1******0100"}},
		"reason":          "caller confirmed ******0100",
		"dropped":         []any{`phone "+1******0122": limit: merging customer 1 would combine email "a***@example.com", "b***@example.com"`, `user_id "u2": taken`},
		"traits":          map[string]any{"name": "J***", "plan": "pro"},
		"event":           map[string]any{"id": "7", "type": "track", "name": "Callback requested by +1******0199"},
		"observation":     map[string]any{"id": "3", "action": "recorded", "source": "******0188", "verified": false, "recordedBy": "key 4e66"},
		"actor":           "key 4e66",
	}
	before := jsonString(diff)
	got, found := Diff(diff, true)
	if jsonString(got) != jsonString(want) {
		t.Errorf("Diff masked\n%s\nwant\n%s", jsonString(got), jsonString(want))
	}
	if jsonString(diff) != before {
		t.Errorf("Diff changed its input: %s", jsonString(diff))
	}
	wantFound := "cause.value dropped event.name identitiesAdded.value identity.value observation.source reason traits.name"
	if strings.Join(found, " ") != wantFound {
		t.Errorf("Diff found %v, want %s", found, wantFound)
	}
	if same, found2 := Diff(diff, false); jsonString(same) != before || strings.Join(found2, " ") != wantFound {
		t.Errorf("Diff not masking = %s, found %v; want it unchanged, found %s", jsonString(same), found2, wantFound)
	}
	// Consent decisions and the channels they are on are no one's: an
	// event's own (consent) and those a merge or a split changed (consents);
	// so are an event's name and an observation's source that hold no
	// address or number.
	plain := map[string]any{"merged": []any{"4"}, "forced": true, "survivorId": "9",
		"event":       map[string]any{"id": "7", "type": "track", "name": "Order Completed"},
		"observation": map[string]any{"id": "3", "action": "verified", "source": "call 2024-03-01", "verified": true},
		"consent":     map[string]any{"channel": "sms", "status": "opted_out"},
		"consents":    []any{map[string]any{"channel": "whatsapp", "status": "opted_in"}, map[string]any{"channel": "sms", "status": nil}}}
	if got, found := Diff(plain, true); fmt.Sprintf("%p", got) != fmt.Sprintf("%p", plain) || len(found) != 0 {
		t.Errorf("Diff(nothing personal) = %v (found %v), want the input itself", got, found)
	}
}

// An identity whose type says nothing is masked in a diff as
// Customer.identities masks it: the addresses and numbers inside its value.
func TestDiffMasksPersonalDataInsideNeutralIdentities(t *testing.T) {
	diff := map[string]any{
		"identity":        map[string]any{"type": "chatbot:webchat", "value": "whatsapp:+14155550199"},
		"cause":           map[string]any{"type": "user_id", "value": "Ann Lee <ann.lee@corp.example>"},
		"identitiesAdded": []any{map[string]any{"type": "crm_id", "value": "+1 415 555 0188"}, map[string]any{"type": "user_id", "value": "u1"}},
		"dropped":         []any{`crm_id "tel:+14155550100": limit`},
	}
	want := map[string]any{
		"identity":        map[string]any{"type": "chatbot:webchat", "value": "whatsapp:+1******0199"},
		"cause":           map[string]any{"type": "user_id", "value": "Ann Lee <a***@corp.example>"},
		"identitiesAdded": []any{map[string]any{"type": "crm_id", "value": "+1******0188"}, map[string]any{"type": "user_id", "value": "u1"}},
		"dropped":         []any{`crm_id "tel:+1******0100": limit`},
	}
	got, found := Diff(diff, true)
	if jsonString(got) != jsonString(want) {
		t.Errorf("Diff masked\n%s\nwant\n%s", jsonString(got), jsonString(want))
	}
	if want := "cause.value dropped identitiesAdded.value identity.value"; strings.Join(found, " ") != want {
		t.Errorf("Diff found %v, want %s", found, want)
	}
}

// Values that are ids, times, amounts or links pass under keys that say
// nothing: masking them would only break them for an assistant. Personal
// data inside such values still does not pass.
func TestJSONLeavesIdsAlone(t *testing.T) {
	plain := map[string]any{
		"order_id": "50314b8e9bcf000000000000", "id": "123e4567-e89b-12d3-a456-426614174000",
		"ts": "05/13/2025 10:30", "unix": "1714732800", "order": "5012345678901",
		"url": "https://shop.example.com/orders/1234567890", "img": "https://cdn.example.com/i/2024/123/4567/89.jpg",
		"sent_at": "2025-05-03T10:00:00.000Z", "city_name": "Lyon", "price": "1234567890.00",
	}
	if got, found := JSON(plain); len(found) != 0 || jsonString(got) != jsonString(plain) {
		t.Errorf("JSON(ids and times) = %s, found %v; want it unchanged", jsonString(got), found)
	}
	personal := map[string]any{
		"note": "call (415) 555-0100 after 6", "ref": "order 42 for jane@example.com", "to": "+1 415 555 0100",
		// A page event's URL, with the form's fields in its query.
		"url": "https://shop.example.com/thanks?email=jane.doe%40example.com&phone=%2B1+415+555+0100",
	}
	want := map[string]any{
		"note": "call (******0100 after 6", "ref": "order 42 for j***@example.com", "to": "+1******0100",
		"url": "https://shop.example.com/thanks?email=j***%40example.com&phone=%2B1******0100",
	}
	if got, found := JSON(personal); jsonString(got) != jsonString(want) || len(found) != 4 {
		t.Errorf("JSON(personal) = %s, found %v; want %s", jsonString(got), found, jsonString(want))
	}
}

// A message's provider id: a Twilio SID is an opaque id and passes; a
// WhatsApp id (wamid.) is base64 of a record starting with the customer's
// number, and any other id may be as much: both are masked.
func TestProviderID(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		personal bool
	}{
		{"", "", false},
		{"SM0123456789abcdef0123456789abcdef", "SM0123456789abcdef0123456789abcdef", false},
		{"MM0123456789ABCDEF0123456789ABCDEF", "MM0123456789ABCDEF0123456789ABCDEF", false},
		{"wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA=", "wamid.***", true},
		{"SM0123", Redacted, true},                             // not a SID's length
		{"SMzz23456789abcdef0123456789abcdef", Redacted, true}, // not hex
		{"+14155550100-1700000000", Redacted, true},            // an id of another form
	} {
		got, k := ProviderID(tc.in)
		if got != tc.want || (k != "") != tc.personal {
			t.Errorf("ProviderID(%q) = %q, %q; want %q, personal %v", tc.in, got, k, tc.want, tc.personal)
		}
	}
}

// A WhatsApp message id (wamid.) is base64 of a record that starts with
// the customer's number. Stored in a property (a reply's replyTo, a
// reaction's reactionTo), a trait or a key, whatever the key's name, it is
// masked as ProviderID masks it, and found as personal data, in JSON,
// Find, Diff, Value and Key alike; one masked already is not found again.
func TestJSONMasksWhatsAppIDs(t *testing.T) {
	const id = "wamid.HBgLMTQxNTU1NTAxMDAVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA="
	in := map[string]any{
		"type": "text", "replyTo": id, "reactionTo": id, "phone": id, "name": id,
		"thread":   map[string]any{"ids": []any{id, "m-2"}},
		"statuses": map[string]any{id: "read"},
		"seen":     "wamid.***",
	}
	want := map[string]any{
		"type": "text", "replyTo": "wamid.***", "reactionTo": "wamid.***", "phone": "wamid.***", "name": "wamid.***",
		"thread":   map[string]any{"ids": []any{"wamid.***", "m-2"}},
		"statuses": map[string]any{"wamid.***": "read"},
		"seen":     "wamid.***",
	}
	wantFound := "[name phone reactionTo replyTo statuses.wamid.*** thread.ids]"
	got, found := JSON(in)
	if jsonString(got) != jsonString(want) || fmt.Sprint(found) != wantFound {
		t.Errorf("JSON = %s, found %v;\nwant %s, found %s", jsonString(got), found, jsonString(want), wantFound)
	}
	if f := Find(in); fmt.Sprint(f) != wantFound {
		t.Errorf("Find = %v, want %s", f, wantFound)
	}
	if !MayHold(mustMarshal(t, in)) || !MayHold([]byte(jsonbText(map[string]any{"replyTo": id}))) {
		t.Errorf("MayHold passes a wamid on unread")
	}
	d, df := Diff(map[string]any{"traits": map[string]any{"last_reply": id}}, true)
	if strings.Contains(jsonString(d), "HBgL") || fmt.Sprint(df) != "[traits.last_reply]" {
		t.Errorf("Diff = %s, found %v; want traits.last_reply masked", jsonString(d), df)
	}
	if v, f := Value("last_reply", id); v != "wamid.***" || len(f) != 1 {
		t.Errorf("Value(last_reply, wamid) = %v, %v; want wamid.***", v, f)
	}
	if k, personal := Key(id); k != "wamid.***" || !personal {
		t.Errorf("Key(wamid) = %q, %v; want wamid.***", k, personal)
	}
}

// Keys name a phone or an email in more words than the names KeyKind
// knows: read word by word (split at separators and changes of case), a
// key ending in a word for a phone, optionally before a word for number,
// is a phone, and one ending in email or mail, optionally before address,
// an email. A bare number under such a key is a phone number, and shown to
// no masked key; a flag or a count under it is neither.
// A key whose last word ends in "phone" names a thing, not a number, when
// that word is a device: its values (has_iphone "yes", smartphone "Pixel
// 8") were masked whole as phone numbers. Phones run into one word stay
// phones.
func TestKeyKindOfDevices(t *testing.T) {
	for key, want := range map[string]Kind{
		"iphone": "", "has_iphone": "", "hasIphone": "", "uses_iphone": "", "smartphone": "", "smartphone_os": "",
		"microphone": "", "headphone": "", "earphone": "", "xylophone": "", "speakerphone": "",
		"phone": KindPhone, "homephone": KindPhone, "cellphone": KindPhone, "telephone": KindPhone,
		"taxi_phone": KindPhone, "work_phone": KindPhone, "mobilephone": KindPhone,
		// Run together with other words, a device's word is not the key's.
		"deptheadphone": KindPhone, "yearphone": KindPhone, "omegaphone": KindPhone, "lastyearphone": KindPhone,
	} {
		if got := KeyKind(key); got != want {
			t.Errorf("KeyKind(%q) = %q, want %q", key, got, want)
		}
	}
}

func TestKeyKindByWords(t *testing.T) {
	phones := []string{"home_phone_number", "work_phone_number", "billing_phone_number", "mobile_phone_number",
		"mobilePhoneNumber", "primaryPhoneNumber", "display_phone_number", "contact_mobile", "home_mobile",
		"phones", "phoneNumbers", "wa_number", "WANumber", "customerWhatsApp", "emergency_contact_no", "sms-number",
		"work.tel", "home:cell", "cell_phone_2", "alt_msisdn", "Home Phone Number", "phone_numbers_1",
		"WhatsAppNumber", "whats_app", "HOME_PHONE_NUMBER", "phone2Number"}
	emails := []string{"emails", "contact_emails", "emailAddresses", "work_mail", "contact-e-mail", "email_addresses", "personalEmail2", "E_Mail_Address"}
	none := []string{"email_verified", "emailVerified", "phone_verified", "telemetry", "hotel", "automobile", "ottawa",
		"order_number", "number", "no", "emails_sent", "emailsOpened", "mobile_app", "phone_model", "mail_count_total",
		"cell_count", "wa_status", "plan", "seats", "productName", "company_name", "phone_number_id_verified",
		"app", "my_app", "whatsapp_user_id", "mobile_app_id", "", "_", "123"}
	for _, k := range phones {
		if got := KeyKind(k); got != KindPhone {
			t.Errorf("KeyKind(%q) = %q, want phone", k, got)
		}
	}
	for _, k := range emails {
		if got := KeyKind(k); got != KindEmail {
			t.Errorf("KeyKind(%q) = %q, want email", k, got)
		}
	}
	for _, k := range none {
		if got := KeyKind(k); got != "" {
			t.Errorf("KeyKind(%q) = %q, want nothing", k, got)
		}
	}

	// telemetry is no phone's name, and a bare number is an id there.
	in := map[string]any{"plan": "pro", "email_verified": true, "is_mobile": true, "mobiles": float64(2),
		"address_verified": false, "telemetry": "4155550100"}
	for _, k := range phones {
		in[k] = "4155550100"
	}
	in["mobile_numbers"] = []any{"4155550100", float64(4155550101)}
	got, _ := JSON(in)
	for k, v := range got {
		switch k {
		case "plan", "email_verified", "is_mobile", "mobiles", "address_verified", "telemetry":
			if jsonString(v) != jsonString(in[k]) {
				t.Errorf("JSON masked %s: %v -> %v", k, in[k], v)
			}
		default:
			if s := jsonString(v); strings.Contains(s, "4155550100") || strings.Contains(s, "4155550101") {
				t.Errorf("JSON left %s = %s unmasked", k, s)
			}
		}
	}
	if _, found := JSON(map[string]any{"email_verified": true, "is_mobile": true, "phones": float64(2), "email": float64(7)}); len(found) != 0 {
		t.Errorf("JSON found personal data in flags and a count: %v", found)
	}
	if v, found := Value("home_phone_number", "4155550100"); v != "******0100" || len(found) != 1 {
		t.Errorf(`Value("home_phone_number", "4155550100") = %v, %v; want ******0100`, v, found)
	}
}

// A key whose word for a phone or an email may mean something else
// (mobile, cell, wa, whatsapp, fax, mail) names one only before a word for
// number (mobile_number, wa_number, cell_no) or when the value has the
// shape of one: a phone number's digits, an email's @. Flags, consents,
// platforms, dates and grid cells under such keys are shown and found as
// nothing; numbers and addresses under them, and anything under the keys
// whose word is unambiguous (phone, tel, msisdn, email), are masked.
func TestAmbiguousKeysMaskOnlyWhatLooksPersonal(t *testing.T) {
	visible := map[string]any{
		"is_mobile": "yes", "platform_mobile": "ios", "consent_whatsapp": "granted", "direct_mail": "subscribed",
		"marketing_mail": "opted_out", "has_fax": "no", "grid_cell": "B7", "table_cell": "r3c4",
		"serving_cell": float64(310260), "state_wa": "true", "snail_mail": "opted_in", "last_mail": "2024-03-01",
		"uses_whatsapp": "false", "web_or_mobile": "mobile", "mobile_app_version": "3.2.1",
		"telephony_provider": "twilio", "cell_id": float64(134217729), "tel_aviv_office": "Rothschild Blvd 22",
		"email_count": float64(3), "email_verified": true, "mobile": "android", "whatsapp": "opted_in",
		"fax": "no", "mail": "weekly", "cell": "A1", "last_fax": "2024-03-01", "mobiles": float64(2),
		"preferred_mobile_os": "android", "whatsapp_consent": "granted", "mobile_share": "0.42",
		"cell_location": "37.7749295", "mails": float64(12), "mobile_install": true, "sms_opt_in": "yes",
		"contact_whatsapp": map[string]any{"status": "opted_in", "since": "2024-03-01"},
	}
	got, found := JSON(visible)
	if len(found) != 0 {
		t.Errorf("JSON found personal data in %v", found)
	}
	for k, v := range visible {
		if jsonString(got[k]) != jsonString(v) {
			t.Errorf("JSON masked %s: %s -> %s", k, jsonString(v), jsonString(got[k]))
		}
	}
	for _, tc := range []struct {
		key    string
		in     any
		hidden string
	}{
		{"home_phone_number", "4155550100", "4155550100"},
		{"contact_mobile", "4155550100", "4155550100"},
		{"wa_number", "4155550100", "4155550100"},
		{"mobile", "4155550100", "4155550100"},
		{"msisdn", "14155550100", "14155550100"},
		{"mobile", "555-0100", "555"},
		{"cell_no", "612345678", "612345678"},
		{"whatsapp", "+14155550100", "4155550100"},
		{"fax", "(415) 555-0100", "555"},
		{"consent_whatsapp", "4155550100", "4155550100"},
		{"mobile", float64(14155550100), "4155550100"},
		{"mobile_number", "yes", "yes"},
		{"phone", "yes", "yes"},
		{"work_mail", "jane@example.com", "jane"},
		{"direct_mail", "jane@example.com", "jane"},
		{"mail", "jane@example", "jane"},
		{"email", "opted_in", "opted_in"},
		{"is_mobile", "call me at 4155550100", "4155550100"},
		{"mobile", []any{"4155550100", "ios"}, "4155550100"},
	} {
		got, found := JSON(map[string]any{tc.key: tc.in})
		if s := jsonString(got[tc.key]); strings.Contains(s, tc.hidden) || fmt.Sprint(found) != "["+tc.key+"]" {
			t.Errorf("JSON(%s: %s) = %s, found %v; want it masked and found", tc.key, jsonString(tc.in), s, found)
		}
	}
	if v, _ := JSON(map[string]any{"mobile": []any{"4155550100", "ios"}}); jsonString(v) != `{"mobile":["******0100","ios"]}` {
		t.Errorf("JSON(mobile: [number, ios]) = %s, want the number masked, ios shown", jsonString(v))
	}
}

// A key may name a phone or an email first and say which one after it:
// phone_home, phoneE164, "Phone (home)", email_work. Words that only
// qualify it (home, work, primary, e164, normalized, raw, mobile, ...)
// leave it a phone or an email, and a bare national number under it is
// masked; mobile_e164 is mobile, masked only with a number's shape. Words
// that say something else of it (verified, hash, count, opt_in, consent,
// status, type, provider) make it none, and their values are shown.
func TestKeyKindReadsQualifiersAfterTheWord(t *testing.T) {
	for key, want := range map[string]Kind{
		"phone_e164": KindPhone, "phoneE164": KindPhone, "mobile_e164": KindPhone, "phone_home": KindPhone,
		"phone_work": KindPhone, "phone_primary": KindPhone, "phone_normalized": KindPhone, "phoneRaw": KindPhone,
		"Phone (home)": KindPhone, "phone#": KindPhone, "email_work": KindEmail, "email_primary": KindEmail,
		"phone_mobile": KindPhone, "PhoneNumber_Home": KindPhone, "home_phone_primary": KindPhone,
		"phone1_secondary": KindPhone, "phone_number_e164": KindPhone, "email_address_work": KindEmail,
		"Email (work)": KindEmail, "tel_alt": KindPhone, "msisdn_raw": KindPhone, "email_personal": KindEmail,
		"email_verified": "", "email_hash": "", "email_hashed": "", "phone_type": "", "phone_provider": "",
		"email_count": "", "email_opt_in": "", "phone_consent": "", "email_status": "", "phone_verified_home": "",
		"home": "", "work_primary": "", "tel_aviv_office": "", "mobile_app_home": "",
	} {
		if got := KeyKind(key); got != want {
			t.Errorf("KeyKind(%q) = %q, want %q", key, got, want)
		}
	}
	masked := map[string]any{
		"phone_e164": "4155550100", "phoneE164": "4155550100", "mobile_e164": "4155550100", "phone_home": "4155550100",
		"phone_work": "4155550100", "phone_primary": "4155550100", "phone_normalized": "4155550100",
		"phoneRaw": "4155550100", "Phone (home)": "4155550100", "phone#": "4155550100",
		"email_work": "jane@example.com", "email_primary": "jane@example.com",
	}
	got, found := JSON(masked)
	for k := range masked {
		if s := jsonString(got[k]); strings.Contains(s, "4155550100") || strings.Contains(s, "jane@") {
			t.Errorf("JSON left %s = %s unmasked", k, s)
		}
	}
	if len(found) != len(masked) {
		t.Errorf("JSON found %v, want all %d keys", found, len(masked))
	}
	shown := map[string]any{
		"email_verified": true, "phone_type": "mobile", "phone_provider": "att", "email_hash": "5d41402abc4b2a76b9719d911017c592",
		"email_count": float64(3), "email_opt_in": "yes", "phone_consent": "granted", "email_status": "bounced",
		"mobile_e164": "no", "phone_verified_home": "yes",
	}
	if got, found := JSON(shown); len(found) != 0 || jsonString(got) != jsonString(shown) {
		t.Errorf("JSON(%s) = %s, found %v; want it shown", jsonString(shown), jsonString(got), found)
	}
}

// KeyKind is on every trait and property of a customer-360 read: it
// allocates nothing, for a key of any kind.
func TestKeyKindAllocatesNothing(t *testing.T) {
	keys := []string{"plan", "email", "home_phone_number", "is_mobile", "contact_mobile", "direct_mail",
		"consent_whatsapp", "E_Mail_Address", "wa_number", "customerWhatsApp", "grid_cell", "mobile",
		"phone_e164", "Phone (home)", "email_verified", "home_phone_primary", "tel_aviv_office"}
	if n := testing.AllocsPerRun(100, func() {
		for _, k := range keys {
			KeyKind(k)
		}
	}); n != 0 {
		t.Errorf("KeyKind allocates %v times per run", n)
	}
}

// A custom identity type is read as a trait's name is, when it names no
// email, phone, sms or whatsapp: msisdn, mobile, wa_id and tel are phones.
func TestIdentityKindOfCustomTypes(t *testing.T) {
	for _, typ := range []string{"msisdn", "mobile", "wa_id", "tel", "home_phone_number", "contact_mobile"} {
		if got, k := Identity(typ, "14155550100"); k != KindPhone || strings.Contains(got, "4155550100") {
			t.Errorf("Identity(%q, 14155550100) = %q, %q; want a masked phone", typ, got, k)
		}
	}
	for _, typ := range []string{"user_id", "anonymous_id", "crm_id", "chatbot:webchat", "order_number"} {
		if got, k := Identity(typ, "14155550100"); k != "" || got != "14155550100" {
			t.Errorf("Identity(%q, 14155550100) = %q, %q; want it shown", typ, got, k)
		}
	}
}

func BenchmarkKeyKind(b *testing.B) {
	keys := []string{"plan", "seats", "company", "title", "last_order", "productName", "sku", "price", "currency",
		"utm_source", "email", "home_phone_number", "email_verified", "telemetry", "order_id", "createdAt"}
	b.ReportAllocs()
	for b.Loop() {
		for _, k := range keys {
			KeyKind(k)
		}
	}
}

// A WhatsApp message kept as Meta sent it (event property item, and the
// same in a dead letter's event) names its sender's number under from,
// as digits: masked there when it has a phone number's shape, while a
// from there that is a word or a date is shown.
func TestFromMasksOnlyAPhoneNumber(t *testing.T) {
	for v, want := range map[string]any{
		"14155550100":  "*******0100",
		"+14155550100": "+1******0100",
		"checkout":     "checkout",
		"2024-03-01":   "2024-03-01",
	} {
		m, _ := JSON(map[string]any{"item": map[string]any{"from": v}})
		if got := m["item"].(map[string]any)["from"]; got != want {
			t.Errorf("JSON(item.from %q) = %v, want %v", v, got, want)
		}
	}
	for _, path := range []string{"item", "properties.item"} {
		in := map[string]any{"from": "14155550100", "type": "order",
			"context": map[string]any{"from": "14155550111", "id": "x"}}
		var m map[string]any = in
		for _, p := range slices.Backward(strings.Split(path, ".")) {
			m = map[string]any{p: m}
		}
		out, found := JSON(m)
		for _, p := range strings.Split(path, ".") {
			out = out[p].(map[string]any)
		}
		if out["from"] != "*******0100" || out["context"].(map[string]any)["from"] != "*******0111" || out["type"] != "order" ||
			!slices.Equal(found, []string{path + ".context.from", path + ".from"}) {
			t.Errorf("JSON(%s) = %v, %v; want its from and its context's from masked", path, out, found)
		}
	}
}

// Outside a kept WhatsApp item, from says nothing: a date or a time under
// it is shown, as to beside it is.
func TestFromElsewhereIsNotAPhone(t *testing.T) {
	for _, m := range []map[string]any{
		{"period": map[string]any{"from": "20240301", "to": "20240331"}},
		{"from": "1709251200"},
		{"from": float64(1709251200)},
		{"from": "20240301"},
		{"range": []any{map[string]any{"from": "1709251200"}}},
		{"items": map[string]any{"from": "20240301"}},
		{"event": map[string]any{"item": map[string]any{"from": "20240301"}}},
	} {
		if out, found := JSON(m); !reflect.DeepEqual(out, m) || len(found) != 0 {
			t.Errorf("JSON(%v) = %v, %v; want it shown", m, out, found)
		}
	}
	for _, v := range []any{"20240301", "1709251200", float64(1709251200)} {
		if got, found := Value("from", v); got != v || len(found) != 0 {
			t.Errorf("Value(from, %v) = %v, %v; want it shown", v, got, found)
		}
	}
	if k := KeyKind("from"); k != "" {
		t.Errorf("KeyKind(from) = %q, want none", k)
	}
}
