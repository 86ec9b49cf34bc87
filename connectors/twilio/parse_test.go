package twilio

import (
	"net/url"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/c360dev/c360"
)

var now = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

func form(kv ...string) url.Values {
	f := url.Values{}
	for i := 0; i+1 < len(kv); i += 2 {
		f.Add(kv[i], kv[i+1])
	}
	return f
}

func TestParseInbound(t *testing.T) {
	ev, err := ParseInbound(form(
		"MessageSid", "SM0123456789abcdef0123456789abcdef", "AccountSid", "AC1",
		"From", "whatsapp:+14155550100", "To", "whatsapp:+14155550199",
		"Body", "photo attached", "NumMedia", "2",
		"MediaUrl0", "https://api.twilio.com/media/ME1", "MediaContentType0", "image/jpeg",
		"MediaUrl1", "https://api.twilio.com/media/ME2", "MediaContentType1", "image/png",
		"ProfileName", "Ada Lovelace",
	), now)
	if err != nil {
		t.Fatal(err)
	}
	want := &c360.Event{
		Type: c360.EventMessage, Source: "twilio", DedupeKey: "SM0123456789abcdef0123456789abcdef",
		Identities:     []c360.Identity{{Type: "phone", Value: "+14155550100"}},
		TraitsIfAbsent: map[string]any{"name": "Ada Lovelace"},
		Properties: map[string]any{"to": "+14155550199", "profileName": "Ada Lovelace",
			"mediaContentTypes": []any{"image/jpeg", "image/png"}},
		OccurredAt: now, ReceivedAt: now,
		Message: &c360.MessageInput{Channel: "whatsapp", Direction: "inbound", Body: "photo attached",
			MediaURLs:  []string{"https://api.twilio.com/media/ME1", "https://api.twilio.com/media/ME2"},
			ProviderID: "SM0123456789abcdef0123456789abcdef", Status: "received"},
	}
	if !reflect.DeepEqual(ev, want) {
		t.Errorf("ParseInbound =\n%+v\n%+v\nwant\n%+v\n%+v", ev, ev.Message, want, want.Message)
	}
}

func TestParseInboundRefuses(t *testing.T) {
	for name, f := range map[string]url.Values{
		"no sid":              form("From", "+14155550100", "Body", "hi"),
		"sid with spaces":     form("MessageSid", "SM 1", "From", "+14155550100"),
		"no from":             form("MessageSid", "SM1", "Body", "hi"),
		"unsupported channel": form("MessageSid", "SM1", "From", "messenger:123", "Body", "hi"),
		"empty whatsapp":      form("MessageSid", "SM1", "From", "whatsapp:", "Body", "hi"),
	} {
		if _, err := ParseInbound(f, now); c360.ErrorCode(err) != c360.EINVALID {
			t.Errorf("%s: err = %v, want %s", name, err, c360.EINVALID)
		}
	}
}

func TestConsentKeyword(t *testing.T) {
	for _, tt := range []struct {
		body, optOutType string
		keyword, consent string
	}{
		{"STOP", "", "STOP", c360.ConsentOptedOut},
		{"  stop \n", "", "STOP", c360.ConsentOptedOut},
		{"StopAll", "", "STOPALL", c360.ConsentOptedOut},
		{"unsubscribe", "", "UNSUBSCRIBE", c360.ConsentOptedOut},
		{"Cancel", "", "CANCEL", c360.ConsentOptedOut},
		{"end", "", "END", c360.ConsentOptedOut},
		{"QUIT", "", "QUIT", c360.ConsentOptedOut},
		{"revoke", "", "REVOKE", c360.ConsentOptedOut},
		{"OptOut!", "", "OPTOUT", c360.ConsentOptedOut},
		{"opt out", "", "", ""},
		{"Stop.", "", "STOP", c360.ConsentOptedOut},
		{"start", "", "START", c360.ConsentOptedIn},
		{"Yes", "", "YES", c360.ConsentOptedIn},
		{"UNSTOP", "", "UNSTOP", c360.ConsentOptedIn},
		{"help", "", "HELP", ""},
		{"Info", "", "INFO", ""},
		{"please stop", "", "", ""},
		{"stop it", "", "", ""},
		{"stopping", "", "", ""},
		{"", "", "", ""},
		// Twilio's Advanced Opt-Out names the class of a custom keyword.
		{"ARRET", "STOP", "ARRET", c360.ConsentOptedOut},
		{"go on", "START", "START", c360.ConsentOptedIn},
		{"aide", "HELP", "AIDE", ""},
	} {
		kw, consent := consentKeyword(tt.body, tt.optOutType)
		if kw != tt.keyword || consent != tt.consent {
			t.Errorf("consentKeyword(%q, %q) = %q, %q; want %q, %q", tt.body, tt.optOutType, kw, consent, tt.keyword, tt.consent)
		}
	}
}

func TestParseStatus(t *testing.T) {
	ev, err := ParseStatus(form("MessageSid", "SMabc", "MessageStatus", "Undelivered", "ErrorCode", "30003",
		"To", "+14155550100", "From", "+14155550199"), now)
	if err != nil {
		t.Fatal(err)
	}
	if ev.Type != c360.EventMessageStatus || ev.DedupeKey != "SMabc:undelivered" || ev.Message.Status != "undelivered" ||
		ev.Message.ErrorCode != "30003" || ev.Message.ProviderID != "SMabc" || ev.Identities[0].Value != "+14155550100" ||
		ev.Message.Channel != "sms" || ev.Properties["status"] != "undelivered" || ev.Properties["errorCode"] != "30003" {
		t.Errorf("ParseStatus = %+v %+v", ev, ev.Message)
	}
	wa, err := ParseStatus(form("MessageSid", "SMabc", "MessageStatus", "read", "To", "whatsapp:+14155550100"), now)
	if err != nil || wa.Message.Channel != "whatsapp" || wa.Identities[0].Value != "+14155550100" {
		t.Errorf("ParseStatus(whatsapp) = %+v, %v", wa, err)
	}
	// A To c360 cannot read is left out: the status stands on its MessageSid.
	for name, to := range map[string]string{"no to": "", "another channel": "rcs:+14155550100",
		"too long": "+1" + strings.Repeat("4", 70)} {
		ev, err := ParseStatus(form("MessageSid", "SMabc", "MessageStatus", "delivered", "To", to), now)
		if err != nil || len(ev.Identities) != 0 || ev.Message.Channel != "" || ev.Message.Status != "delivered" {
			t.Errorf("ParseStatus(%s) = %+v, %v; want the status without identity or channel", name, ev, err)
		}
	}
	for name, f := range map[string]url.Values{
		"no status":  form("MessageSid", "SM1", "To", "+14155550100"),
		"bad status": form("MessageSid", "SM1", "MessageStatus", "sent; drop", "To", "+14155550100"),
		"no sid":     form("MessageStatus", "sent", "To", "+14155550100"),
	} {
		if _, err := ParseStatus(f, now); c360.ErrorCode(err) != c360.EINVALID {
			t.Errorf("%s: err = %v, want %s", name, err, c360.EINVALID)
		}
	}
}

func TestMediaURLsBounded(t *testing.T) {
	f := form("NumMedia", "1000")
	for i := range 20 {
		f.Set("MediaUrl"+strconv.Itoa(i), "https://example.com/m")
	}
	if got, _ := media(f); len(got) != maxMedia {
		t.Errorf("len(media URLs) = %d, want %d", len(got), maxMedia)
	}
	if got, _ := media(form("NumMedia", "-3", "MediaUrl0", "x")); len(got) != 0 {
		t.Errorf("negative NumMedia: %v", got)
	}
}

// FuzzTwilioForm checks that any form parses to an event or a refusal, and
// that an event always carries what ingest requires.
func FuzzTwilioForm(f *testing.F) {
	f.Add("MessageSid=SM1&From=%2B14155550100&Body=hi")
	f.Add("MessageSid=SM1&From=whatsapp%3A%2B14155550100&Body=STOP&NumMedia=2&MediaUrl0=u&MediaUrl1=v&ProfileName=A")
	f.Add("MessageSid=SM1&MessageStatus=delivered&To=%2B1&ErrorCode=30003")
	f.Add("NumMedia=99999999999999999999&From=:&MessageSid=%00")
	f.Add("OptOutType=stop&Body=%20&From=whatsapp:&SmsSid=a")
	f.Fuzz(func(t *testing.T, raw string) {
		form, err := url.ParseQuery(raw)
		if err != nil {
			return
		}
		if ev, err := ParseInbound(form, now); err == nil {
			if ev.DedupeKey == "" || len(ev.DedupeKey) > 64 || len(ev.Identities) != 1 || ev.Identities[0].Value == "" || ev.Message == nil {
				t.Fatalf("ParseInbound(%q) = %+v", raw, ev)
			}
			if len(ev.Message.MediaURLs) > maxMedia {
				t.Fatalf("%d media URLs", len(ev.Message.MediaURLs))
			}
		} else if c360.ErrorCode(err) != c360.EINVALID {
			t.Fatalf("ParseInbound(%q) error code %s", raw, c360.ErrorCode(err))
		}
		if ev, err := ParseStatus(form, now); err == nil {
			if ev.DedupeKey == "" || len(ev.Identities) > 1 || ev.Message == nil || ev.Message.Status == "" || ev.Message.ProviderID == "" {
				t.Fatalf("ParseStatus(%q) = %+v", raw, ev)
			}
		} else if c360.ErrorCode(err) != c360.EINVALID {
			t.Fatalf("ParseStatus(%q) error code %s", raw, c360.ErrorCode(err))
		}
	})
}

func benchForm() url.Values {
	return form("ToCountry", "US", "ToState", "CA", "SmsMessageSid", "SM0123456789abcdef0123456789abcdef",
		"NumMedia", "1", "ToCity", "SAN FRANCISCO", "FromZip", "94105", "SmsSid", "SM0123456789abcdef0123456789abcdef",
		"FromState", "CA", "SmsStatus", "received", "FromCity", "SAN FRANCISCO", "Body", "Hi, is my order on its way?",
		"FromCountry", "US", "To", "+14155550199", "MessagingServiceSid", "MG0123456789abcdef0123456789abcdef",
		"ToZip", "94105", "NumSegments", "1", "MessageSid", "SM0123456789abcdef0123456789abcdef",
		"AccountSid", "AC0123456789abcdef0123456789abcdef", "From", "+14155550100",
		"MediaUrl0", "https://api.twilio.com/2010-04-01/Accounts/AC0/Messages/SM0/Media/ME0", "MediaContentType0", "image/jpeg",
		"ApiVersion", "2010-04-01")
}

// BenchmarkTwilioSignature measures verifying X-Twilio-Signature over a
// typical inbound form, as every webhook request does.
func BenchmarkTwilioSignature(b *testing.B) {
	f := benchForm()
	const u = "https://c360.example.com/webhooks/twilio/acme"
	sig := "not-the-signature"
	b.ReportAllocs()
	for b.Loop() {
		if ValidSignature("0123456789abcdef0123456789abcdef", u, f, sig) {
			b.Fatal("forged signature accepted")
		}
	}
}

// BenchmarkTwilioParse measures turning a typical inbound form into an event.
func BenchmarkTwilioParse(b *testing.B) {
	f := benchForm()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseInbound(f, now); err != nil {
			b.Fatal(err)
		}
	}
}

// TestMediaTypesStayWithTheirURLs: a repeated MediaUrl0 (each value is
// signed, and read) under one MediaContentType0 gives that type to each of
// its URLs, so MediaUrl1's type stays MediaUrl1's. Read apart, the types
// of later indexes moved onto the wrong URLs.
func TestMediaTypesStayWithTheirURLs(t *testing.T) {
	f := form("NumMedia", "2", "MediaUrl0", "https://a.example/0b", "MediaUrl0", "https://a.example/0a",
		"MediaContentType0", "image/jpeg", "MediaUrl1", "https://a.example/1", "MediaContentType1", "application/pdf")
	urls, types := media(f)
	wantURLs := []string{"https://a.example/0a", "https://a.example/0b", "https://a.example/1"}
	wantTypes := []any{"image/jpeg", "image/jpeg", "application/pdf"}
	if !slices.Equal(urls, wantURLs) || !slices.Equal(types, wantTypes) {
		t.Errorf("media = %q, %q; want %q, %q", urls, types, wantURLs, wantTypes)
	}
	// No type at all: no list of types.
	if _, types := media(form("NumMedia", "1", "MediaUrl0", "https://a.example/x")); types != nil {
		t.Errorf("types without any MediaContentType = %q, want none", types)
	}
}
