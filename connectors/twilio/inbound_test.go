package twilio_test

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/connectors/twilio"
	"github.com/c360dev/c360/internal/pgtest"
	"github.com/c360dev/c360/postgres"
	"github.com/c360dev/c360/server"
)

// The signing helper agrees with Twilio's published example (twilio-go's
// own test vector), so the tests sign exactly as Twilio does.
func TestSignMatchesTwilioVector(t *testing.T) {
	params := url.Values{
		"Digits": {"1234"}, "CallSid": {"CA1234567890ABCDE"}, "To": {"+18005551212"}, "Caller": {"+14158675309"},
		"From": {"+14158675309"}, "ReasonConferenceEnded": {"test"}, "Reason": {"Participant"},
	}
	const u = "https://mycompany.com/myapp.php?foo=1&bar=2"
	if got, want := sign("12345", u, params), "vOEb5UThFn24KEfnOFLQY2AE5FY="; got != want {
		t.Errorf("sign = %s, want %s", got, want)
	}
	if !twilio.ValidSignature("12345", u, params, "vOEb5UThFn24KEfnOFLQY2AE5FY=") {
		t.Errorf("ValidSignature refuses Twilio's example")
	}
}

// A parameter sent more than once is signed with every value, as Twilio
// signs it (sign, twilio-node and twilio-python: the values sorted; the
// SDKs drop a repeated value): the request is stored, not refused 403, and
// a wrong signature, or one covering only the first value, still is.
func TestInboundRepeatedParameterSignature(t *testing.T) {
	e := newEnv(t)
	path := e.inboundPath()
	post := func(f url.Values, sig string) int {
		status, _, _ := e.postForm(t, path, f.Encode(), sig)
		return status
	}
	f := inbound("SM00000000000000000000000000000050", "+14155550150", "two photos", "NumMedia", "1")
	// The values out of order, as sent: the signature sorts them.
	f["MediaUrl0"] = []string{"https://api.twilio.com/m/ME2", "https://api.twilio.com/m/ME1"}
	firstOnly := url.Values{}
	for k, vs := range f {
		firstOnly[k] = vs[:1]
	}
	if got := post(f, sign(authToken, publicURL+path, firstOnly)); got != http.StatusForbidden {
		t.Errorf("signed over the first value only: status = %d, want 403", got)
	}
	if got := post(f, sign("wrong-token-0000000000000000000", publicURL+path, f)); got != http.StatusForbidden {
		t.Errorf("wrong signature: status = %d, want 403", got)
	}
	if got := post(f, sign(authToken, publicURL+path, f)); got != http.StatusOK {
		t.Errorf("signed over every value: status = %d, want 200", got)
	}
	// Both values were signed, so both are read.
	if m := e.messages(t, e.customerByPhone(t, "+14155550150").ID, "sms"); len(m) != 1 || len(m[0].MediaURLs) != 2 {
		t.Errorf("messages = %+v, want one, with two media URLs", m)
	}

	// One value twice: the SDKs sign it once; every value, as sign does, is
	// taken too.
	f = inbound("SM00000000000000000000000000000051", "+14155550151", "same", "NumMedia", "1")
	f["MediaUrl0"] = []string{"https://api.twilio.com/m/ME3", "https://api.twilio.com/m/ME3"}
	once := url.Values{}
	for k, vs := range f {
		once[k] = vs[:1]
	}
	if got := post(f, sign(authToken, publicURL+path, once)); got != http.StatusOK {
		t.Errorf("a repeated value signed once: status = %d, want 200", got)
	}
	f.Set("MessageSid", "SM00000000000000000000000000000052")
	f["MediaUrl0"] = []string{"https://api.twilio.com/m/ME3", "https://api.twilio.com/m/ME3"}
	if got := post(f, sign(authToken, publicURL+path, f)); got != http.StatusOK {
		t.Errorf("a repeated value signed twice: status = %d, want 200", got)
	}
}

// Twilio's signature concatenates names and values, so a signed message
// whose Body ends in "From+14155550100" signs the same string as a forged
// one with the Body cut short and From sent twice, the victim's number
// first. A parameter read as one value may not repeat: the forgery, and a
// status callback repeating MessageStatus, are refused 400, naming the
// parameter, and nothing is stored.
func TestRepeatedSingleValueParameterIsRefused(t *testing.T) {
	e := newEnv(t)
	path := e.inboundPath()
	genuine := inbound("SM00000000000000000000000000000090", "+14155550177", "hiFrom+14155550100")
	sig := sign(authToken, publicURL+path, genuine)
	forged := inbound("SM00000000000000000000000000000090", "+14155550177", "hi")
	forged["From"] = []string{"+14155550100", "+14155550177"}
	status, _, body := e.postForm(t, path, forged.Encode(), sig)
	if status != http.StatusBadRequest || !strings.Contains(body, "From") {
		t.Errorf("forged request with From twice: %d (%s), want 400 naming From", status, body)
	}

	// A status callback's status, signed over both values, is not guessed.
	f := statusForm("SM00000000000000000000000000000091", "delivered", "+14155550178")
	f["MessageStatus"] = []string{"delivered", "failed"}
	status, _, body = e.postForm(t, e.statusPath(), f.Encode(), sign(authToken, publicURL+e.statusPath(), f))
	if status != http.StatusBadRequest || !strings.Contains(body, "MessageStatus") {
		t.Errorf("status callback with MessageStatus twice: %d (%s), want 400 naming MessageStatus", status, body)
	}
	for _, table := range []string{"events", "customers", "messages"} {
		if n := count(t, e.db, `SELECT count(*) FROM `+table+` WHERE workspace_id = $1`, e.ws); n != 0 {
			t.Errorf("%d %s stored, want none", n, table)
		}
	}
}

// joined is the part of the string Twilio signs that the parameters named
// from "from" (included) to "to" (excluded) make: each name followed by its
// value, names sorted, as sign joins them.
func joined(f url.Values, from, to string) string {
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(f)) {
		if k >= from && k < to {
			for _, v := range slices.Sorted(slices.Values(f[k])) {
				b.WriteString(k + v)
			}
		}
	}
	return b.String()
}

// A signed request can be cut anew into other parameters: Twilio signs the
// URL and each name and value with nothing between them. Whatever the cut
// that moves the sender (or the recipient), the genuine "From" and its
// address (or "To" and its) end up inside another parameter, the URL's
// query or across parameters; such a request is refused 400, naming
// where, and nothing is stored: the victim is not opted out.
func TestRecutRequestIsRefused(t *testing.T) {
	e := newEnv(t)
	path := e.inboundPath()
	const victim, attacker = "+14155550100", "+14155550177"
	const waVictim, waAttacker = "whatsapp:+14155550101", "whatsapp:+14155550178"
	sid := func(n int) string { return fmt.Sprintf("SM%032d", 900+n) }
	smsCity := []string{"FromCity", "SAN FRANCISCO", "FromState", "CA", "FromZip", "94105", "FromCountry", "US"}
	for i, tt := range []struct {
		name    string
		genuine url.Values
		query   string                                  // the genuine URL's query
		forged  func(g url.Values) (url.Values, string) // and the forged query
		naming  string
	}{
		{"sms, rest in FromCity's value", inbound(sid(1), attacker, "STOPFrom"+victim+"FromCity", smsCity...), "",
			func(g url.Values) (url.Values, string) {
				f := maps.Clone(g)
				f.Set("Body", "STOP")
				f.Set("From", victim)
				f.Set("FromCity", "From"+attacker+"FromCitySAN FRANCISCO")
				return f, ""
			}, `"FromCity"`},
		{"sms, rest in Label's value", inbound(sid(2), attacker, "STOPFrom"+victim+"Label", smsCity...), "",
			func(g url.Values) (url.Values, string) {
				f := maps.Clone(g)
				f.Set("Body", "STOP")
				f.Set("From", victim)
				f.Set("Label", "From"+attacker+joined(g, "FromCity", "Label"))
				for _, k := range []string{"FromCity", "FromCountry", "FromState", "FromZip"} {
					f.Del(k)
				}
				return f, ""
			}, `"Label"`},
		{"whatsapp, rest in FromCity's value", inbound(sid(3), waAttacker, "STOPFrom"+waVictim+"FromCity"), "",
			func(g url.Values) (url.Values, string) {
				f := maps.Clone(g)
				f.Set("Body", "STOP")
				f.Set("From", waVictim)
				f.Set("FromCity", "From"+waAttacker)
				return f, ""
			}, `"FromCity"`},
		{"whatsapp, rest in Label's value", inbound(sid(4), waAttacker, "STOPFrom"+waVictim+"Label"), "",
			func(g url.Values) (url.Values, string) {
				f := maps.Clone(g)
				f.Set("Body", "STOP")
				f.Set("From", waVictim)
				f.Set("Label", "From"+waAttacker)
				return f, ""
			}, `"Label"`},
		{"whatsapp, rest in a new name", inbound(sid(5), waAttacker, "STOPFrom"+waVictim), "",
			func(g url.Values) (url.Values, string) {
				f := maps.Clone(g)
				f.Set("Body", "STOP")
				f.Set("From", waVictim)
				f.Set("Fromwhatsapp", strings.TrimPrefix(waAttacker, "whatsapp"))
				return f, ""
			}, `"Fromwhatsapp"`},
		{"sms, rest as a name", inbound(sid(6), attacker, "STOPFrom"+victim), "",
			func(g url.Values) (url.Values, string) {
				f := maps.Clone(g)
				f.Set("Body", "STOP")
				f.Set("From", victim)
				f.Set("From"+attacker, "")
				return f, ""
			}, `"From+14155550177"`},
		// "Fro" ends one parameter's value and "m" names the next: no
		// single parameter holds "From+1…", the signed string does.
		{"sms, From cut across two parameters", inbound(sid(7), attacker, "STOPFrom"+victim+"MessageSid"+sid(70)+"Z"), "",
			func(g url.Values) (url.Values, string) {
				rest := joined(g, "From", "~")
				cut := strings.Index(rest, "To+")
				f := url.Values{"AccountSid": g["AccountSid"], "ApiVersion": g["ApiVersion"],
					"Body": {"STOP"}, "From": {victim}, "MessageSid": {sid(70)}, "Z": {"Fro"},
					"m": {rest[len("From") : cut+1]}, "o": {rest[cut+2:]}}
				return f, ""
			}, `"Z"`},
		// The new From comes from a parameter sorting after From (a
		// WhatsApp profile name); the genuine From goes into the Body.
		{"whatsapp, genuine From in the Body", inbound(sid(8), waAttacker, "hi", "ProfileName", "From"+victim), "",
			func(g url.Values) (url.Values, string) {
				f := maps.Clone(g)
				f.Set("Body", "hi"+joined(g, "From", "ProfileName")+"ProfileName")
				f.Set("From", victim)
				for _, k := range []string{"MessageSid", "NumMedia", "NumSegments", "ProfileName"} {
					f.Del(k)
				}
				return f, ""
			}, `"Body"`},
		// With a query in the webhook's URL, the forged URL's query takes
		// everything up to the profile name "BodySTOPFrom+1…".
		{"whatsapp, genuine From in the URL's query", inbound(sid(9), waAttacker, "hi", "ProfileName", "BodySTOPFrom"+victim), "src=tw",
			func(g url.Values) (url.Values, string) {
				f := url.Values{"Body": {"STOP"}, "From": {victim}}
				for _, k := range []string{"SmsMessageSid", "SmsSid", "SmsStatus", "To"} {
					f[k] = g[k]
				}
				return f, "src=tw" + joined(g, "", "ProfileName") + "ProfileName"
			}, "the URL's query"},
		// The recipient moved: the genuine To goes into a new parameter.
		{"sms, To moved", inbound(sid(10), attacker, "hi", "Label", "HomeMessageSid"+sid(71)+"To+14155550111Z"), "",
			func(g url.Values) (url.Values, string) {
				f := url.Values{}
				for _, k := range []string{"AccountSid", "ApiVersion", "Body", "From"} {
					f[k] = g[k]
				}
				f.Set("Label", "Home")
				f.Set("MessageSid", sid(71))
				f.Set("To", "+14155550111")
				f.Set("Z", joined(g, "MessageSid", "~"))
				return f, ""
			}, `"Z"`},
	} {
		genuineURL := publicURL + path
		if tt.query != "" {
			genuineURL += "?" + tt.query
		}
		sig := sign(authToken, genuineURL, tt.genuine)
		forged, query := tt.forged(tt.genuine)
		forgedPath := path
		if query != "" {
			forgedPath += "?" + query
		}
		if sign(authToken, publicURL+forgedPath, forged) != sig {
			t.Fatalf("%s: the forged request does not sign as the genuine one:\n%s\n%s", tt.name,
				genuineURL+joined(tt.genuine, "", "~"), publicURL+forgedPath+joined(forged, "", "~"))
		}
		status, _, body := e.postForm(t, forgedPath, forged.Encode(), sig)
		if status != http.StatusBadRequest || !strings.Contains(body, tt.naming) {
			t.Errorf("%d %s: forged request: %d (%s), want 400 naming %s", i, tt.name, status, body, tt.naming)
		}
	}
	// A status callback is read the same way: its To cut anew is refused.
	f := statusForm("SM00000000000000000000000000000094", "failed", "+14155550102", "ErrorCode", "30003")
	f.Set("X", "To+14155550103")
	status, _, body := e.postForm(t, e.statusPath(), f.Encode(), sign(authToken, publicURL+e.statusPath(), f))
	if status != http.StatusBadRequest || !strings.Contains(body, `"X"`) {
		t.Errorf("status callback with a parameter holding To+1…: %d (%s), want 400 naming it", status, body)
	}
	for _, table := range []string{"events", "customers", "messages", "consents"} {
		if n := count(t, e.db, `SELECT count(*) FROM `+table+` WHERE workspace_id = $1`, e.ws); n != 0 {
			t.Errorf("%d %s stored, want none", n, table)
		}
	}
	// The refusal is logged with the number in a name masked.
	if logs := e.logs.String(); !strings.Contains(logs, "cut anew") || strings.Contains(logs, "4155550177") {
		t.Errorf("log: %s; want the refusals, without the number", logs)
	}
}

// The requests let through: every parameter Twilio documents for inbound
// messages (SMS, MMS, WhatsApp) and status callbacks, together, with
// realistic values; a parameter Twilio may add later, whatever its name;
// text that mentions From or To without an address straight after. Names
// that are not letters and digits are refused.
func TestParameterNames(t *testing.T) {
	e := newEnv(t)
	path := e.inboundPath()
	every := []string{"MessagingServiceSid", "MG00000000000000000000000000000001", "NumMedia", "2",
		"MediaUrl0", "https://api.twilio.com/m/ME1", "MediaContentType0", "image/jpeg",
		"MediaUrl1", "https://api.twilio.com/m/ME2", "MediaContentType1", "image/png",
		"FromCity", "SAN FRANCISCO", "FromState", "CA", "FromZip", "94105", "FromCountry", "US",
		"ToCity", "OAKLAND", "ToState", "CA", "ToZip", "94612", "ToCountry", "US",
		"ProfileName", "Ada Lovelace", "WaId", "14155550103", "Forwarded", "false", "FrequentlyForwarded", "false",
		"ButtonText", "", "ButtonPayload", "", "Latitude", "37.7749", "Longitude", "-122.4194",
		"Address", "1 Main St, San Francisco, CA 94105", "Label", "Home: Tomorrow at 5",
		"ReferralBody", "Spring sale", "ReferralHeadline", "Sale", "ReferralSourceId", "1234567890", "ReferralSourceType", "ad",
		"ReferralSourceUrl", "https://fb.me/x", "ReferralMediaId", "2", "ReferralMediaContentType", "image/jpeg",
		"ReferralMediaUrl", "https://example.com/r.jpg", "ReferralNumMedia", "0", "ReferralCtwaClid", "ARAkLkA8rmlFeiCktEJQ-QTwRiyYHAFDLMNDBH0CD3qpjd0HR4irJ6LEkR7JwFF4XvnO2E4Nx0-eM-ZABi3B",
		"OriginalRepliedMessageSender", "whatsapp:+14155550198", "OriginalRepliedMessageSid", "SM00000000000000000000000000000001",
		"MessageType", "text", "ChannelMetadata", `{"type":"whatsapp","data":{"context":{"ProfileName":"Ada","WaId":"14155550103"}}}`,
		"ExternalUserId", "whatsapp:US.13491208655302741918", "OptOutType", "",
		"MessageStatus", "received", "ErrorCode", "", "ErrorMessage", "", "RawDlrDoneDate", "2503011200",
		"ChannelToAddress", "+1415555XXXX", "ChannelPrefix", "whatsapp", "ChannelInstallSid", "XE00000000000000000000000000000001",
		"EventType", "READ", "FromFoo", "bar"}
	for i, from := range []string{"whatsapp:+14155550103", "+14155550103"} {
		f := inbound(fmt.Sprintf("SM%032d", 950+i), from, "See you Today: 3pm, To: +1 415 555 0100, from +14155550100 (Tomorrow:4)", every...)
		if status, _, body := e.webhook(t, path, f, authToken); status != http.StatusOK {
			t.Fatalf("%s: a request with every documented parameter: %d (%s), want 200", from, status, body)
		}
	}
	for name, want := range map[string]int{
		"MediaUrl12": http.StatusOK, "MediaContentType3": http.StatusOK, "SomethingNew": http.StatusOK,
		"FromFoo": http.StatusOK, "FromCityX": http.StatusOK, "ToTo": http.StatusOK, "Bodyx": http.StatusOK,
		"MessageSid2": http.StatusOK, "WaIdX": http.StatusOK, "MediaUrl0x": http.StatusOK,
		"Body_": http.StatusBadRequest, "Bé": http.StatusBadRequest, "a b": http.StatusBadRequest,
	} {
		f := inbound(fmt.Sprintf("SM%032x", len(name)*1000+int(name[len(name)-1])), "+14155550104", "hi")
		f.Set(name, "Tomorrow")
		status, _, body := e.webhook(t, path, f, authToken)
		if status != want || want == http.StatusBadRequest && !strings.Contains(body, strconvQuote(name)) {
			t.Errorf("parameter %q: %d (%s), want %d", name, status, body, want)
		}
	}
}

func strconvQuote(s string) string { return fmt.Sprintf("%q", s) }

func TestInboundSMS(t *testing.T) {
	e := newEnv(t)
	f := inbound("SM00000000000000000000000000000001", "+1 (415) 555-0100", "Where is my order?",
		"NumMedia", "2", "MediaUrl0", "https://api.twilio.com/m/ME1", "MediaContentType0", "image/jpeg",
		"MediaUrl1", "https://api.twilio.com/m/ME2", "MediaContentType1", "image/png")
	status, h, body := e.webhook(t, e.inboundPath(), f, authToken)
	if status != http.StatusOK {
		t.Fatalf("status = %d (%s), want 200", status, body)
	}
	if ct := h.Get("Content-Type"); !strings.HasPrefix(ct, "text/xml") {
		t.Errorf("Content-Type = %q, want text/xml", ct)
	}
	if want := `<?xml version="1.0" encoding="UTF-8"?><Response/>`; body != want {
		t.Errorf("body = %q, want %q", body, want)
	}
	// Answered after commit: the message is there as soon as 200 is.
	c := e.customerByPhone(t, "+14155550100")
	ms := e.messages(t, c.ID, "sms")
	if len(ms) != 1 {
		t.Fatalf("sms messages = %d, want 1", len(ms))
	}
	m := ms[0]
	if m.Direction != "inbound" || m.Body != "Where is my order?" || m.ProviderID != "SM00000000000000000000000000000001" ||
		m.Status != "received" || len(m.MediaURLs) != 2 || m.MediaURLs[0] != "https://api.twilio.com/m/ME1" || m.MediaURLs[1] != "https://api.twilio.com/m/ME2" {
		t.Errorf("message = %+v", m)
	}
}

func TestInboundRefusedBeforeAnyWrite(t *testing.T) {
	e := newEnv(t)
	f := inbound("SM00000000000000000000000000000002", "+14155550101", "hi")
	cases := []struct {
		name   string
		do     func() (int, http.Header, string)
		status int
	}{
		{"no signature", func() (int, http.Header, string) { return e.webhook(t, e.inboundPath(), f, "") }, http.StatusForbidden},
		{"forged signature", func() (int, http.Header, string) {
			return e.webhook(t, e.inboundPath(), f, "not-the-auth-token-000000000000")
		}, http.StatusForbidden},
		{"signature of other parameters", func() (int, http.Header, string) {
			forged := inbound("SM00000000000000000000000000000002", "+14155550101", "hi")
			sig := sign(authToken, publicURL+e.inboundPath(), f)
			forged.Set("Body", "STOP")
			return e.postForm(t, e.inboundPath(), forged.Encode(), sig)
		}, http.StatusForbidden},
		{"signature over the internal URL, not C360_PUBLIC_URL", func() (int, http.Header, string) {
			return e.postForm(t, e.inboundPath(), f.Encode(), sign(authToken, e.srv.URL+e.inboundPath(), f))
		}, http.StatusForbidden},
		{"signature for another workspace's path", func() (int, http.Header, string) {
			return e.postForm(t, e.inboundPath(), f.Encode(), sign(authToken, publicURL+"/webhooks/twilio/other", f))
		}, http.StatusForbidden},
		{"unknown workspace", func() (int, http.Header, string) { return e.webhook(t, "/webhooks/twilio/no-such-ws", f, authToken) }, http.StatusNotFound},
		{"oversized body", func() (int, http.Header, string) {
			big := inbound("SM00000000000000000000000000000002", "+14155550101", strings.Repeat("x", 65<<10))
			return e.webhook(t, e.inboundPath(), big, authToken)
		}, http.StatusRequestEntityTooLarge},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status, _, body := tc.do()
			if status != tc.status {
				t.Errorf("status = %d (%s), want %d", status, body, tc.status)
			}
		})
	}
	if n := count(t, e.db, `SELECT count(*) FROM events WHERE workspace_id = $1`, e.ws); n != 0 {
		t.Errorf("events = %d after refusals, want 0", n)
	}
	if n := count(t, e.db, `SELECT count(*) FROM customers WHERE workspace_id = $1`, e.ws); n != 0 {
		t.Errorf("customers = %d after refusals, want 0", n)
	}
}

// A refusal names the number it refused, to Twilio, which sent it; the log
// line of the refusal carries the reason with the number masked.
func TestRefusedNumberIsMaskedInTheLog(t *testing.T) {
	e := newEnv(t)
	status, _, body := e.webhook(t, e.inboundPath(), inbound("SM00000000000000000000000000000009", "+4420794609", "hi"), authToken)
	if status != http.StatusBadRequest || !strings.Contains(body, "missing its area code") {
		t.Fatalf("status %d (%s), want 400 saying the number misses its area code", status, body)
	}
	logs := e.logs.String()
	if !strings.Contains(logs, "twilio webhook refused") || !strings.Contains(logs, "missing its area code") {
		t.Errorf("the refusal's log line lacks its reason: %s", logs)
	}
	if strings.Contains(logs, "4420794609") {
		t.Errorf("the log carries the refused number: %s", logs)
	}
}

// A workspace without an auth token can verify no signature, so every
// webhook is refused, whatever it is signed with, and the answer says that
// the token is missing rather than that the signature is wrong.
func TestInboundWorkspaceWithoutAuthToken(t *testing.T) {
	e := newEnv(t)
	if _, err := e.db.UpdateWorkspace(context.Background(), e.slug, c360.WorkspaceUpdate{TwilioAuthToken: ptr("")}); err != nil {
		t.Fatal(err)
	}
	const sid, phone = "SM00000000000000000000000000000050", "+14155550150"
	for _, p := range []struct {
		name, path string
		form       url.Values
	}{
		{"inbound", e.inboundPath(), inbound(sid, phone, "hi")},
		{"status", e.statusPath(), statusForm(sid, "delivered", phone)},
	} {
		for _, tc := range []struct{ name, sig string }{
			{"signed with the former token", sign(authToken, publicURL+p.path, p.form)},
			// What anyone can compute: it must not pass for a signature
			// under the empty token.
			{"signed with the empty token", sign("", publicURL+p.path, p.form)},
		} {
			t.Run(p.name+"/"+tc.name, func(t *testing.T) {
				status, _, got := e.postForm(t, p.path, p.form.Encode(), tc.sig)
				if status != http.StatusForbidden {
					t.Errorf("status = %d (%s), want 403", status, got)
				}
				if !strings.Contains(got, "no Twilio auth token configured") {
					t.Errorf("body = %q, want it to say the workspace has no auth token", got)
				}
				for _, secret := range []string{authToken, tc.sig} {
					if strings.Contains(got, secret) {
						t.Errorf("body %q contains %q", got, secret)
					}
				}
			})
		}
	}
	// Unsigned, it is refused for the missing header, checked first.
	if status, _, got := e.postForm(t, e.inboundPath(), inbound(sid, phone, "hi").Encode(), ""); status != http.StatusForbidden {
		t.Errorf("unsigned: status = %d (%s), want 403", status, got)
	}
	for _, table := range []string{"events", "customers", "messages", "dead_letters"} {
		if n := count(t, e.db, `SELECT count(*) FROM `+table+` WHERE workspace_id = $1`, e.ws); n != 0 {
			t.Errorf("%s = %d after refusals, want 0", table, n)
		}
	}
}

func TestInboundReplayStoredOnce(t *testing.T) {
	e := newEnv(t)
	f := inbound("SM00000000000000000000000000000003", "+14155550102", "hello")
	for i := range 3 {
		if status, _, body := e.webhook(t, e.inboundPath(), f, authToken); status != http.StatusOK {
			t.Fatalf("delivery %d: status = %d (%s)", i, status, body)
		}
	}
	c := e.customerByPhone(t, "+14155550102")
	if ms := e.messages(t, c.ID, "sms"); len(ms) != 1 {
		t.Errorf("messages = %d, want 1", len(ms))
	}
	if n := count(t, e.db, `SELECT count(*) FROM events WHERE workspace_id = $1`, e.ws); n != 1 {
		t.Errorf("events = %d, want 1", n)
	}
}

func TestInboundConcurrentDuplicates(t *testing.T) {
	e := newEnv(t)
	f := inbound("SM00000000000000000000000000000004", "+14155550103", "are you there?")
	sig := sign(authToken, publicURL+e.inboundPath(), f)
	const n = 16
	statuses := make([]int, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest(http.MethodPost, e.srv.URL+e.inboundPath(), strings.NewReader(f.Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			req.Header.Set("X-Twilio-Signature", sig)
			<-start
			resp, err := e.srv.Client().Do(req)
			if err != nil {
				errs[i] = err
				return
			}
			resp.Body.Close()
			statuses[i] = resp.StatusCode
		}()
	}
	close(start)
	wg.Wait()
	for i, s := range statuses {
		if errs[i] != nil || s != http.StatusOK {
			t.Errorf("delivery %d: status = %d, err = %v; want 200", i, s, errs[i])
		}
	}
	if got := count(t, e.db, `SELECT count(*) FROM messages WHERE workspace_id = $1`, e.ws); got != 1 {
		t.Errorf("messages = %d, want 1", got)
	}
	if got := count(t, e.db, `SELECT count(*) FROM events WHERE workspace_id = $1`, e.ws); got != 1 {
		t.Errorf("events = %d, want 1", got)
	}
	if got := count(t, e.db, `SELECT count(*) FROM customers WHERE workspace_id = $1`, e.ws); got != 1 {
		t.Errorf("customers = %d, want 1", got)
	}
}

func TestInboundConsentKeywords(t *testing.T) {
	e := newEnv(t)
	const phone = "+14155550104"
	send := func(sid, body string) {
		t.Helper()
		if status, _, b := e.webhook(t, e.inboundPath(), inbound(sid, phone, body), authToken); status != http.StatusOK {
			t.Fatalf("%s: status = %d (%s)", body, status, b)
		}
	}
	send("SM10", "hi")
	c := e.customerByPhone(t, phone)
	if got := e.consent(t, c.ID, "sms"); got != nil {
		t.Errorf("consent after hi = %+v, want none", got)
	}
	send("SM11", "  Stop \n")
	if got := e.consent(t, c.ID, "sms"); got == nil || got.Status != c360.ConsentOptedOut || got.Source != "twilio" {
		t.Errorf("consent after STOP = %+v, want opted_out from twilio", got)
	}
	if got := e.consent(t, c.ID, "whatsapp"); got != nil {
		t.Errorf("whatsapp consent after an SMS STOP = %+v, want none: opt-out is per channel", got)
	}
	send("SM12", "help")
	if got := e.consent(t, c.ID, "sms"); got == nil || got.Status != c360.ConsentOptedOut {
		t.Errorf("consent after HELP = %+v, want still opted_out", got)
	}
	var kw string
	if err := e.db.Pool.QueryRow(context.Background(),
		`SELECT properties->>'keyword' FROM events WHERE workspace_id = $1 AND dedupe_key = 'SM12'`, e.ws).Scan(&kw); err != nil || kw != "HELP" {
		t.Errorf("HELP event keyword = %q, %v; want HELP", kw, err)
	}
	send("SM13", "please stop texting me")
	if got := e.consent(t, c.ID, "sms"); got.Status != c360.ConsentOptedOut {
		t.Errorf("consent after a sentence = %s, want opted_out unchanged", got.Status)
	}
	send("SM14", "UNSTOP")
	if got := e.consent(t, c.ID, "sms"); got == nil || got.Status != c360.ConsentOptedIn {
		t.Errorf("consent after UNSTOP = %+v, want opted_in", got)
	}
	// Twilio's default opt-out words since May 2025 include REVOKE and
	// OPTOUT: Twilio stops delivering to whoever sends one.
	for i, word := range []string{"Revoke", "OPTOUT"} {
		send(fmt.Sprintf("SM14%d", 2*i), word)
		if got := e.consent(t, c.ID, "sms"); got == nil || got.Status != c360.ConsentOptedOut {
			t.Errorf("consent after %s = %+v, want opted_out", word, got)
		}
		send(fmt.Sprintf("SM14%d", 2*i+1), "START")
	}
	// WhatsApp keywords set the WhatsApp consent.
	if status, _, _ := e.webhook(t, e.inboundPath(), inbound("SM15", "whatsapp:"+phone, "QUIT"), authToken); status != http.StatusOK {
		t.Fatal(status)
	}
	if got := e.consent(t, c.ID, "whatsapp"); got == nil || got.Status != c360.ConsentOptedOut {
		t.Errorf("whatsapp consent after QUIT = %+v, want opted_out", got)
	}
	if got := e.consent(t, c.ID, "sms"); got.Status != c360.ConsentOptedIn {
		t.Errorf("sms consent after a WhatsApp QUIT = %s, want opted_in", got.Status)
	}
	// A tapped quick reply's title is the business's word, not the
	// customer's: "Yes" under a question does not undo the opt-out, and
	// "Cancel" under a reminder opts no one out.
	for i, tap := range [][]string{{"Yes", "confirm-42"}, {"START", ""}} {
		form := inbound(fmt.Sprintf("SM16%d", i), "whatsapp:"+phone, tap[0], "ButtonText", tap[0], "ButtonPayload", tap[1])
		if status, _, _ := e.webhook(t, e.inboundPath(), form, authToken); status != http.StatusOK {
			t.Fatal(status)
		}
		if got := e.consent(t, c.ID, "whatsapp"); got == nil || got.Status != c360.ConsentOptedOut {
			t.Errorf("whatsapp consent after a tapped %q = %+v, want still opted_out", tap[0], got)
		}
	}
	other := "+14155550114"
	if status, _, _ := e.webhook(t, e.inboundPath(), inbound("SM17", "whatsapp:"+other, "Cancel", "ButtonText", "Cancel", "ButtonPayload", "appt-42-cancel"), authToken); status != http.StatusOK {
		t.Fatal(status)
	}
	if got := e.consent(t, e.customerByPhone(t, other).ID, "whatsapp"); got != nil {
		t.Errorf("whatsapp consent after a tapped Cancel = %+v, want none", got)
	}
}

func TestInboundProfileNameOnlyWhenAbsent(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	// A customer without a name gets the WhatsApp profile name.
	if status, _, _ := e.webhook(t, e.inboundPath(), inbound("SM20", "whatsapp:+14155550105", "hi", "ProfileName", "Ada"), authToken); status != http.StatusOK {
		t.Fatal(status)
	}
	c := e.customerByPhone(t, "+14155550105")
	if c.Traits["name"] != "Ada" {
		t.Errorf("name = %v, want Ada", c.Traits["name"])
	}
	// A later, different profile name does not overwrite it.
	if status, _, _ := e.webhook(t, e.inboundPath(), inbound("SM21", "whatsapp:+14155550105", "hi", "ProfileName", "Ada L."), authToken); status != http.StatusOK {
		t.Fatal(status)
	}
	if c = e.customerByPhone(t, "+14155550105"); c.Traits["name"] != "Ada" {
		t.Errorf("name after another ProfileName = %v, want Ada", c.Traits["name"])
	}
	// A customer whose name is known (identify) keeps it.
	if _, err := e.db.Ingest(ctx, e.ws, []*c360.Event{{Type: c360.EventIdentify, Source: "test", DedupeKey: "id-1",
		Identities: []c360.Identity{{Type: "phone", Value: "+14155550106"}}, Traits: map[string]any{"name": "Grace Hopper"}}}); err != nil {
		t.Fatal(err)
	}
	if status, _, _ := e.webhook(t, e.inboundPath(), inbound("SM22", "whatsapp:+14155550106", "hi", "ProfileName", "gh"), authToken); status != http.StatusOK {
		t.Fatal(status)
	}
	if c = e.customerByPhone(t, "+14155550106"); c.Traits["name"] != "Grace Hopper" {
		t.Errorf("name = %v, want Grace Hopper", c.Traits["name"])
	}
}

func TestInboundSMSAndWhatsAppSameCustomer(t *testing.T) {
	e := newEnv(t)
	if status, _, _ := e.webhook(t, e.inboundPath(), inbound("SM30", "+14155550107", "by sms"), authToken); status != http.StatusOK {
		t.Fatal(status)
	}
	if status, _, _ := e.webhook(t, e.inboundPath(), inbound("SM31", "whatsapp:+14155550107", "by whatsapp"), authToken); status != http.StatusOK {
		t.Fatal(status)
	}
	if n := count(t, e.db, `SELECT count(*) FROM customers WHERE workspace_id = $1`, e.ws); n != 1 {
		t.Errorf("customers = %d, want 1", n)
	}
	c := e.customerByPhone(t, "+14155550107")
	sms, wa := e.messages(t, c.ID, "sms"), e.messages(t, c.ID, "whatsapp")
	if len(sms) != 1 || sms[0].Body != "by sms" || len(wa) != 1 || wa[0].Body != "by whatsapp" {
		t.Errorf("sms = %+v, whatsapp = %+v; want one each, on their channel", sms, wa)
	}
}

// A store that cannot commit in time (here a real one whose lock_timeout
// runs out behind a lock on events) gets Twilio a 503 with Retry-After,
// never a 2xx, and stores nothing; Twilio's retry is then stored once.
func TestInboundStoreUnavailable(t *testing.T) {
	e := newEnv(t)
	busy := pgtest.OpenStore(t, url.Values{"lock_timeout": {"200ms"}}, postgres.IngestConfig{})
	mux := http.NewServeMux()
	(&twilio.Handler{Workspaces: busy, Ingester: busy, PublicURL: publicURL, StatusOf: server.StatusOf,
		Logger: slog.New(slog.DiscardHandler)}).Register(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	f := inbound("SM40", "+14155550108", "hi")
	send := func() *http.Response {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+e.inboundPath(), strings.NewReader(f.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("X-Twilio-Signature", sign(authToken, publicURL+e.inboundPath(), f))
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	stored := func() int {
		return count(t, e.db, `SELECT count(*) FROM events WHERE workspace_id = $1 AND dedupe_key = 'SM40'`, e.ws) +
			count(t, e.db, `SELECT count(*) FROM dead_letters WHERE workspace_id = $1`, e.ws)
	}

	release := pgtest.LockEvents(t, e.db)
	resp := send()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") != "1" {
		t.Errorf("status = %d, Retry-After = %q; want 503 with Retry-After: 1", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	release()
	if n := stored(); n != 0 {
		t.Errorf("events and dead letters after the 503 = %d, want 0", n)
	}
	if resp := send(); resp.StatusCode != http.StatusOK {
		t.Fatalf("retry: status = %d, want 200", resp.StatusCode)
	}
	if resp := send(); resp.StatusCode != http.StatusOK {
		t.Fatalf("second retry: status = %d, want 200", resp.StatusCode)
	}
	if n := count(t, e.db, `SELECT count(*) FROM events WHERE workspace_id = $1 AND dedupe_key = 'SM40'`, e.ws); n != 1 {
		t.Errorf("events after the retries = %d, want 1", n)
	}
}

// A database that refuses connections ("53300 sorry, too many clients
// already", as PostgreSQL answers a startup past max_connections) is an
// outage: a correctly signed message gets Twilio a 503 with Retry-After, so
// Twilio retries it, never a 500 it does not retry nor a 200 that would
// leave it a dead letter. Whether the workspace lookup or ingest meets the
// refusal first.
func TestInboundDatabaseOutOfConnections(t *testing.T) {
	e := newEnv(t)
	refusing, err := postgres.Open(context.Background(), pgtest.FatalServer(t, "53300", "sorry, too many clients already"))
	if err != nil {
		t.Fatal(err)
	}
	refusing.StartIngest(postgres.IngestConfig{})
	t.Cleanup(refusing.Close)
	for _, tc := range []struct {
		name       string
		workspaces twilio.WorkspaceFinder
	}{
		{"workspace lookup", refusing},
		{"ingest", e.db},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mux := http.NewServeMux()
			(&twilio.Handler{Workspaces: tc.workspaces, Ingester: refusing, PublicURL: publicURL, StatusOf: server.StatusOf,
				Logger: slog.New(slog.DiscardHandler)}).Register(mux)
			srv := httptest.NewServer(mux)
			defer srv.Close()
			f := inbound("SM42", "+14155550109", "hi")
			req, _ := http.NewRequest(http.MethodPost, srv.URL+e.inboundPath(), strings.NewReader(f.Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			req.Header.Set("X-Twilio-Signature", sign(authToken, publicURL+e.inboundPath(), f))
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
				t.Errorf("status = %d, Retry-After = %q; want 503 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
			}
		})
	}
	if n := count(t, e.db, `SELECT count(*) FROM dead_letters WHERE workspace_id = $1`, e.ws); n != 0 {
		t.Errorf("dead letters = %d, want 0", n)
	}
}

// An address ingest cannot use is refused with 400, not acknowledged.
func TestInboundInvalidSender(t *testing.T) {
	e := newEnv(t)
	status, _, _ := e.webhook(t, e.inboundPath(), inbound("SM41", "not-a-number", "hi"), authToken)
	if status != http.StatusBadRequest {
		t.Errorf("status = %d, want 400", status)
	}
}

// A new auth token set by another process (the command line) is accepted
// at once, though this server cached the row before: Twilio does not
// retry a 403, so for up to the cache's 5 seconds every message was lost.
// A refused signature reads the row again, at most once a second per
// workspace; a wrong token is still refused.
func TestNewAuthTokenAcceptedRightAfterAnUpdateByAnotherProcess(t *testing.T) {
	e := newEnv(t)
	cli := pgtest.Open(t) // the command line's own store
	// The first webhook caches the row.
	if status, _, b := e.webhook(t, e.inboundPath(), inbound("SM00000000000000000000000000000a01", "+14155557001", "hi"), authToken); status != http.StatusOK {
		t.Fatalf("warm-up: %d %s", status, b)
	}
	// A forged signature just before the update forces a read of the row:
	// the next read waits for its second rather than refusing the new token.
	if status, _, _ := e.webhook(t, e.inboundPath(), inbound("SM00000000000000000000000000000a00", "+14155557001", "forged"), "f00dbabef00dbabef00dbabef00dbad0"); status != http.StatusForbidden {
		t.Fatalf("forged signature: %d, want 403", status)
	}
	const newToken = "f00dbabef00dbabef00dbabef00dbab1"
	if _, err := cli.UpdateWorkspace(context.Background(), e.slug, c360.WorkspaceUpdate{TwilioAuthToken: ptr(newToken)}); err != nil {
		t.Fatal(err)
	}
	if status, _, b := e.webhook(t, e.inboundPath(), inbound("SM00000000000000000000000000000a02", "+14155557001", "again"), newToken); status != http.StatusOK {
		t.Errorf("signed with the new auth token right after the update: %d %s, want 200", status, b)
	}
	if status, _, _ := e.webhook(t, e.inboundPath(), inbound("SM00000000000000000000000000000a03", "+14155557001", "old"), authToken); status != http.StatusForbidden {
		t.Errorf("signed with the old auth token after the update: %d, want 403", status)
	}
}
