package chatbot

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/c360dev/c360"
)

var received = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

func TestVerifySignature(t *testing.T) {
	const secret = "whsec_test"
	body := []byte(`{"sessionId":"s"}`)
	ts := received.Unix()
	// Computed independently of Sign, as a client would.
	m := hmac.New(sha256.New, []byte(secret))
	fmt.Fprintf(m, "%d.%s", ts, body)
	good := hex.EncodeToString(m.Sum(nil))
	for _, tc := range []struct {
		name, header string
		now          time.Time
		err          string
	}{
		{"valid", fmt.Sprintf("t=%d,v1=%s", ts, good), received, ""},
		{"spaces and uppercase hex", fmt.Sprintf("t=%d, v1=%s", ts, strings.ToUpper(good)), received, ""},
		{"rotation: second value matches", fmt.Sprintf("t=%d,v1=%s,v1=%s", ts, strings.Repeat("0", 64), good), received, ""},
		{"unknown scheme ignored", fmt.Sprintf("t=%d,v0=abc,v1=%s", ts, good), received, ""},
		{"edge of tolerance, late", fmt.Sprintf("t=%d,v1=%s", ts, good), received.Add(5 * time.Minute), ""},
		{"edge of tolerance, early", fmt.Sprintf("t=%d,v1=%s", ts, good), received.Add(-5 * time.Minute), ""},
		{"too old", fmt.Sprintf("t=%d,v1=%s", ts, good), received.Add(5*time.Minute + time.Second), "away from the server's clock"},
		{"too new", fmt.Sprintf("t=%d,v1=%s", ts, good), received.Add(-5*time.Minute - time.Second), "away from the server's clock"},
		{"missing", "", received, "missing"},
		{"no t", "v1=" + good, received, "malformed"},
		{"two t", fmt.Sprintf("t=%d,t=%d,v1=%s", ts, ts, good), received, "malformed"},
		{"t not a number", "t=now,v1=" + good, received, "malformed"},
		{"no v1", fmt.Sprintf("t=%d", ts), received, "malformed"},
		{"wrong mac", fmt.Sprintf("t=%d,v1=%s", ts, strings.Repeat("a", 64)), received, "does not match"},
		{"not hex", fmt.Sprintf("t=%d,v1=zz", ts), received, "does not match"},
		{"leading zero in t changes the MAC", fmt.Sprintf("t=0%d,v1=%s", ts, good), received, "does not match"},
		{"too many v1", fmt.Sprintf("t=%d", ts) + strings.Repeat(",v1=00", 9), received, "more than 8"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := VerifySignature(secret, tc.header, body, tc.now, DefaultTolerance)
			if tc.err == "" {
				if err != nil {
					t.Fatalf("err = %v, want nil", err)
				}
				return
			}
			if c360.ErrorCode(err) != c360.EUNAUTHENTICATED || !strings.Contains(c360.ErrorMessage(err), tc.err) {
				t.Fatalf("err = %v, want UNAUTHENTICATED containing %q", err, tc.err)
			}
		})
	}
	if err := VerifySignature("", Sign("", received, body), body, received, DefaultTolerance); err == nil {
		t.Error("an empty secret verified a signature")
	}
	if got, want := Sign(secret, received, body), fmt.Sprintf("t=%d,v1=%s", ts, good); got != want {
		t.Errorf("Sign = %q, want %q", got, want)
	}
}

// VerifyWorkspaceSignature accepts the current secret, and the previous one
// only while the time is before its expiry; an expired previous secret is
// refused as a wrong one is.
func TestVerifyWorkspaceSignature(t *testing.T) {
	body := []byte(`{"sessionId":"s"}`)
	expires := received.Add(time.Hour)
	ws := &c360.Workspace{WebhookSecret: "whsec_new", PreviousWebhookSecret: "whsec_old", PreviousWebhookSecretExpiresAt: &expires}
	noGrace := &c360.Workspace{WebhookSecret: "whsec_new", PreviousWebhookSecret: "whsec_old"}
	noCurrent := &c360.Workspace{PreviousWebhookSecret: "whsec_old", PreviousWebhookSecretExpiresAt: &expires}
	_, oldMAC, _ := strings.Cut(Sign("whsec_old", received, body), ",v1=")
	for _, tc := range []struct {
		name   string
		ws     *c360.Workspace
		header string
		now    time.Time
		err    string
	}{
		{"current", ws, Sign("whsec_new", received, body), received, ""},
		{"previous during the grace", ws, Sign("whsec_old", received, body), received, ""},
		{"previous a second before expiry", ws, Sign("whsec_old", expires.Add(-time.Second), body), expires.Add(-time.Second), ""},
		{"both", ws, Sign("whsec_new", received, body) + ",v1=" + oldMAC, received, ""},
		{"previous at expiry", ws, Sign("whsec_old", expires, body), expires, "the signature does not match the body"},
		{"previous after expiry", ws, Sign("whsec_old", expires.Add(time.Minute), body), expires.Add(time.Minute), "the signature does not match the body"},
		{"current after the previous expired", ws, Sign("whsec_new", expires.Add(time.Minute), body), expires.Add(time.Minute), ""},
		{"previous with no expiry", noGrace, Sign("whsec_old", received, body), received, "the signature does not match the body"},
		{"wrong", ws, Sign("whsec_guess", received, body), received, "the signature does not match the body"},
		{"no current secret", noCurrent, Sign("whsec_old", received, body), received, "the workspace has no webhook secret"},
		{"previous, too old", ws, Sign("whsec_old", received.Add(-6*time.Minute), body), received, "away from the server's clock"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := VerifyWorkspaceSignature(tc.ws, tc.header, body, tc.now, DefaultTolerance)
			if tc.err == "" {
				if err != nil {
					t.Fatalf("err = %v, want nil", err)
				}
				return
			}
			if c360.ErrorCode(err) != c360.EUNAUTHENTICATED || !strings.Contains(c360.ErrorMessage(err), tc.err) {
				t.Fatalf("err = %v, want UNAUTHENTICATED %q", err, tc.err)
			}
		})
	}
}

func TestParsePayload(t *testing.T) {
	const ids = `"identities":[{"type":"email","value":"a@b.c"}]`
	for _, tc := range []struct{ name, body, err string }{
		{"minimal", `{"sessionId":"s",` + ids + `,"turns":[{"id":"1","role":"user","text":"hi"}]}`, ""},
		{"traits only", `{"sessionId":"s",` + ids + `,"traits":{"a":1}}`, ""},
		{"traits with their time", `{"sessionId":"s",` + ids + `,"traits":{"a":1},"traitsAt":"2025-03-01T11:58:00.5+01:00"}`, ""},
		{"traitsAt without traits", `{"sessionId":"s",` + ids + `,"traitsAt":"2025-03-01T11:58:00Z","turns":[{"id":"1","role":"user","text":"hi"}]}`, "traitsAt is given without traits"},
		{"bad traitsAt", `{"sessionId":"s",` + ids + `,"traits":{"a":1},"traitsAt":"1740830280"}`, "traitsAt must be an RFC 3339 time"},
		{"no session", `{` + ids + `,"turns":[{"id":"1","role":"user","text":"hi"}]}`, "sessionId is missing"},
		{"long session", `{"sessionId":"` + strings.Repeat("s", 129) + `",` + ids + `,"traits":{"a":1}}`, "longer than 128"},
		{"no identities", `{"sessionId":"s","turns":[{"id":"1","role":"user","text":"hi"}]}`, "identities is empty"},
		{"nothing", `{"sessionId":"s",` + ids + `}`, "nothing to record"},
		{"turn id with a colon", `{"sessionId":"s",` + ids + `,"turns":[{"id":"a:b","role":"user","text":"hi"}]}`, "turns[0].id must be"},
		{"observation id with a slash", `{"sessionId":"s",` + ids + `,"observations":[{"id":"a/b","text":"t"}]}`, "observations[0].id must be"},
		{"turn without id", `{"sessionId":"s",` + ids + `,"turns":[{"role":"user","text":"hi"}]}`, "turns[0].id is missing"},
		{"duplicate turn", `{"sessionId":"s",` + ids + `,"turns":[{"id":"1","role":"user","text":"a"},{"id":"1","role":"bot","text":"b"}]}`, "appears twice"},
		{"duplicate observation id", `{"sessionId":"s",` + ids + `,"observations":[{"id":"lang","text":"a"},{"id":"lang","text":"b"}]}`, `observations[1].id "lang" appears twice`},
		{"observations without ids", `{"sessionId":"s",` + ids + `,"observations":[{"text":"a"},{"text":"b"}]}`, ""},
		{"bad role", `{"sessionId":"s",` + ids + `,"turns":[{"id":"1","role":"system","text":"hi"}]}`, "role must be"},
		{"text of white space", `{"sessionId":"s",` + ids + `,"turns":[{"id":"1","role":"user","text":"hi"},{"id":"2","role":"bot","text":" \n\t\u00a0"}]}`, "turns[1].text is only white space"},
		{"text with white space around it", `{"sessionId":"s",` + ids + `,"turns":[{"id":"1","role":"user","text":"  hi\n"}]}`, ""},
		{"sessionId of white space", `{"sessionId":"  ",` + ids + `,"traits":{"a":1}}`, "sessionId is missing"},
		{"sessionId with a leading space", `{"sessionId":" s",` + ids + `,"traits":{"a":1}}`, "sessionId begins or ends with white space"},
		{"sessionId with a trailing tab", `{"sessionId":"s\t",` + ids + `,"traits":{"a":1}}`, "sessionId begins or ends with white space"},
		{"sessionId with a space inside", `{"sessionId":"web chat 1",` + ids + `,"traits":{"a":1}}`, ""},
		{"no text", `{"sessionId":"s",` + ids + `,"turns":[{"id":"1","role":"user"}]}`, "text is missing"},
		{"bad time", `{"sessionId":"s",` + ids + `,"turns":[{"id":"1","role":"user","text":"a","time":"yesterday"}]}`, "RFC 3339"},
		{"confidence over 1", `{"sessionId":"s",` + ids + `,"turns":[{"id":"1","role":"user","text":"a","intent":"x","confidence":1.5}]}`, "between 0 and 1"},
		{"NUL in sessionId", `{"sessionId":"s\u0000",` + ids + `,"traits":{"a":1}}`, `sessionId holds a NUL character`},
		{"NUL in a turn's text", `{"sessionId":"s",` + ids + `,"turns":[{"id":"1","role":"user","text":"a\u0000"}]}`, `turns[0].text holds a NUL character`},
		{"NUL in an intent", `{"sessionId":"s",` + ids + `,"turns":[{"id":"1","role":"user","text":"a","intent":"\u0000"}]}`, `turns[0].intent holds a NUL character`},
		{"NUL in an observation", `{"sessionId":"s",` + ids + `,"observations":[{"text":"\u0000"}]}`, `observations[0].text holds a NUL character`},
		{"NUL in a trait", `{"sessionId":"s",` + ids + `,"traits":{"a":{"b":["\u0000"]}}}`, `traits.a holds a NUL character`},
		{"NUL in a trait's key", `{"sessionId":"s",` + ids + `,"traits":{"a\u0000":1}}`, `a key of traits holds a NUL character`},
		{"observation without text", `{"sessionId":"s",` + ids + `,"observations":[{"confidence":0.5}]}`, "observations[0].text"},
		{"wrong type", `{"sessionId":7}`, "sessionId: want a string, got number"},
		{"not an object", `[]`, "the body: want an object, got array"},
		{"not JSON", `{"sessionId"`, "invalid JSON at byte 12: unexpected end of JSON input"},
		// One object and nothing after it, not the first of two.
		{"two objects", `{"sessionId":"s",` + ids + `,"traits":{"a":1}}{"sessionId":"t",` + ids + `,"traits":{"a":2}}`, "invalid JSON"},
		{"data after the object", `{"sessionId":"s",` + ids + `,"traits":{"a":1}} junk`, "invalid JSON"},
		// Keys are case-sensitive and given once: encoding/json would store
		// the first under session "other", the last copy winning.
		{"sessionId in another case", `{"sessionId":"s","SESSIONID":"other",` + ids + `,"traits":{"a":1}}`, `the body's key "SESSIONID" is not "sessionId": keys are case-sensitive`},
		{"sessionId twice", `{"sessionId":"s",` + ids + `,"traits":{"a":1},"sessionId":"other"}`, `the body gives the key "sessionId" more than once`},
		{"turns in another case", `{"sessionId":"s",` + ids + `,"Turns":[{"id":"1","role":"user","text":"hi"}]}`, `the body's key "Turns" is not "turns"`},
		{"text twice", `{"sessionId":"s",` + ids + `,"turns":[{"id":"1","role":"user","text":"hi","text":"bye"}]}`, `turns[0] gives the key "text" more than once`},
		{"text in another case", `{"sessionId":"s",` + ids + `,"turns":[{"id":"1","role":"user","text":"hi"},{"id":"2","role":"user","text":"a","Text":"b"}]}`, `turns[1]'s key "Text" is not "text"`},
		{"identity type twice", `{"sessionId":"s","identities":[{"type":"email","value":"a@b.c","type":"phone"}],"traits":{"a":1}}`, `identities[0] gives the key "type" more than once`},
		{"unknown keys are ignored", `{"sessionId":"s",` + ids + `,"traits":{"a":1},"bot":"x","bot":"y","turns":[{"id":"1","role":"user","text":"hi","extra":1}]}`, ""},
		{"white space after the object", `{"sessionId":"s",` + ids + `,"traits":{"a":1}}` + " \r\n\t", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParsePayload([]byte(tc.body))
			if tc.err == "" {
				if err != nil {
					t.Fatalf("err = %v", err)
				}
				return
			}
			if c360.ErrorCode(err) != c360.EINVALID || !strings.Contains(c360.ErrorMessage(err), tc.err) {
				t.Fatalf("err = %v, want EINVALID containing %q", err, tc.err)
			}
		})
	}
}

func TestEvents(t *testing.T) {
	p, err := ParsePayload([]byte(`{"sessionId":"s-1","identities":[{"type":"user_id","value":"u"}],
		"traits":{"name":"N"},
		"turns":[{"id":"a","role":"user","text":"hi","intent":"greet","confidence":0.5,"time":"2025-03-01T11:00:00+01:00"},
		         {"id":"b","role":"assistant","text":"hello"}],
		"observations":[{"text":"likes tea"},{"id":"o2","text":"vip"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	evs, labels := p.Events(received)
	want := []struct{ typ, name, key, label string }{
		{"identify", "", "s-1:/traits/" + digest(map[string]any{"name": "N"}), "traits"},
		{"message", "", "s-1:a", `turn "a"`},
		{"track", EventIntentDetected, "s-1:a/intent", `intent of turn "a"`},
		{"message", "", "s-1:b", `turn "b"`},
		{"track", EventObservation, "s-1:/observation/" + digest("likes tea"), "observations[0]"},
		{"track", EventObservation, "s-1:/observation/o2", "observations[1]"},
	}
	if len(evs) != len(want) {
		t.Fatalf("%d events, want %d", len(evs), len(want))
	}
	for i, w := range want {
		ev := evs[i]
		if ev.Type != w.typ || ev.Name != w.name || ev.DedupeKey != w.key || labels[i] != w.label || ev.Source != "chatbot" {
			t.Errorf("event %d = %s %q key %q label %q, want %s %q key %q label %q", i, ev.Type, ev.Name, ev.DedupeKey, labels[i], w.typ, w.name, w.key, w.label)
		}
	}
	in, out := evs[1], evs[3]
	if in.Message.Direction != "inbound" || in.Message.Channel != "chat" || in.Properties["threadKey"] != "s-1" ||
		!in.OccurredAt.Equal(time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC)) {
		t.Errorf("user turn = %+v %+v", in, in.Message)
	}
	if out.Message.Direction != "outbound" || !out.OccurredAt.Equal(received) {
		t.Errorf("assistant turn = %+v %+v", out, out.Message)
	}
	// A turn dated far ahead of its receipt is not believed: it takes the
	// receipt time, as webhook.OccurredAt rules for every connector.
	p, err = ParsePayload([]byte(`{"sessionId":"s-2","identities":[{"type":"user_id","value":"u"}],
		"turns":[{"id":"a","role":"user","text":"hi","time":"2099-01-01T00:00:00Z"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if evs, _ := p.Events(received); !evs[0].OccurredAt.Equal(received) {
		t.Errorf("far-future turn dated %v, want the receipt time %v", evs[0].OccurredAt, received)
	}
}

// Traits keep their numbers' digits and scale, and traits that differ past
// a float64's precision are different traits, not a replay of the first.
func TestTraitsKeepTheirDigits(t *testing.T) {
	parse := func(loyalty string) *c360.Event {
		t.Helper()
		p, err := ParsePayload([]byte(`{"sessionId":"s","identities":[{"type":"user_id","value":"u"}],
			"traits":{"loyaltyId":` + loyalty + `,"balance":0.10,"tiers":[1.50],"big":1e3}}`))
		if err != nil {
			t.Fatal(err)
		}
		evs, _ := p.Events(received)
		return evs[0]
	}
	ev := parse("12345678901234567")
	got, _ := json.Marshal(ev.Traits)
	if want := `{"balance":0.10,"big":1000,"loyaltyId":12345678901234567,"tiers":[1.50]}`; string(got) != want {
		t.Errorf("traits = %s, want %s", got, want)
	}
	if next := parse("12345678901234568"); next.DedupeKey == ev.DedupeKey {
		t.Errorf("traits with loyaltyId ...567 and ...568 share the dedupe key %q", ev.DedupeKey)
	}
	// Past what a float64 holds, refused as before.
	if _, err := ParsePayload([]byte(`{"sessionId":"s","identities":[{"type":"user_id","value":"u"}],"traits":{"x":1e400}}`)); c360.ErrorCode(err) != c360.EINVALID || c360.ErrorMessage(err) != "traits.x: a number too large for a 64-bit float" {
		t.Errorf("traits with 1e400: %v, want BAD_USER_INPUT naming traits.x", err)
	}
	if _, err := ParsePayload([]byte(`{"sessionId":"s","identities":[{"type":"user_id","value":"u"}],"traits":{"tiers":[1,{"max":-2e999}]}}`)); c360.ErrorCode(err) != c360.EINVALID || c360.ErrorMessage(err) != "traits.tiers[1].max: a number too large for a 64-bit float" {
		t.Errorf("traits with -2e999 deep in: %v, want BAD_USER_INPUT naming traits.tiers[1].max", err)
	}
	for body, want := range map[string]string{
		`{"sessionId":"s","identities":[{"type":"user_id","value":"u"}],"traits":"x"}`: "traits: want an object, got string",
		`{"sessionId":"s","identities":[{"type":"user_id","value":"u"}],"traits":[1]}`: "traits: want an object, got array",
		`{"sessionId":"s","identities":[{"type":"user_id","value":"u"}],"turns":{}}`:   "turns: want an array, got object",
	} {
		if _, err := ParsePayload([]byte(body)); c360.ErrorCode(err) != c360.EINVALID || c360.ErrorMessage(err) != want {
			t.Errorf("ParsePayload(%s) = %v, want BAD_USER_INPUT %q", body, err, want)
		}
	}
	if p, err := ParsePayload([]byte(`{"sessionId":"s","identities":[{"type":"user_id","value":"u"}],"traits":null,"turns":[{"id":"1","role":"user","text":"hi"}]}`)); err != nil || p.Traits != nil {
		t.Errorf("traits null: %+v, %v; want no traits", p, err)
	}
}

// FuzzChatbotPayload: any body either parses into events with usable
// dedupe keys and no NUL character, or is refused with EINVALID; nothing
// panics.
func FuzzChatbotPayload(f *testing.F) {
	for _, s := range []string{
		`{"sessionId":"s","identities":[{"type":"email","value":"a@b.c"}],"traits":{"x":[1,2]},"turns":[{"id":"1","role":"user","text":"hi","intent":"i","confidence":0.3,"time":"2025-03-01T11:00:00Z"}],"observations":[{"text":"t"}]}`,
		`{"sessionId":"s","identities":[{"type":"phone","value":"+14155550100"}],"turns":[{"id":"1","role":"bot","text":"x"},{"id":"2","role":"assistant","text":"y"}]}`,
		`{"sessionId":"` + strings.Repeat("é", 64) + `","identities":[{"type":"x","value":"y"}],"observations":[{"id":"o","text":"t","confidence":1}]}`,
		`{"sessionId":null}`, `[]`, `{"turns":[{}]}`, `{"sessionId":"s","identities":[{}],"traits":{}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := ParsePayload(data)
		if err != nil {
			if c360.ErrorCode(err) != c360.EINVALID {
				t.Fatalf("refusal %v is not EINVALID", err)
			}
			return
		}
		evs, labels := p.Events(received)
		if len(evs) == 0 || len(evs) != len(labels) {
			t.Fatalf("%d events, %d labels", len(evs), len(labels))
		}
		keys := map[string]bool{}
		for _, ev := range evs {
			if ev.DedupeKey == "" || len(ev.DedupeKey) > 256 || keys[ev.DedupeKey] {
				t.Fatalf("dedupe key %q: empty, too long or repeated", ev.DedupeKey)
			}
			keys[ev.DedupeKey] = true
			if ev.OccurredAt.IsZero() {
				t.Fatalf("event %+v has no time", ev)
			}
			// Nothing PostgreSQL would refuse: a NUL is refused by validate.
			if b, _ := json.Marshal(ev); bytes.Contains(b, []byte(`\u0000`)) {
				t.Fatalf("event %s holds a NUL character", b)
			}
		}
	})
}

func BenchmarkChatbotSignature(b *testing.B) {
	body := bytes.Repeat([]byte(`{"id":"1","role":"user","text":"Where is my order?"},`), 80) // ~4 KB
	const secret = "whsec_0123456789abcdef0123456789abcdef"
	header := Sign(secret, received, body)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if err := VerifySignature(secret, header, body, received, DefaultTolerance); err != nil {
			b.Fatal(err)
		}
	}
}

// traitsAt joins the traits' dedupe key as a UTC time without ':', for
// every instant ParsePayload accepts, years 1 and 9999 included.
func TestTraitsAtKey(t *testing.T) {
	received := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	seen := map[string]string{}
	for at, suffix := range map[string]string{
		"2025-03-01T11:58:00.5+01:00":    "/20250301T105800.500000000Z",
		"2025-03-01T10:58:00.5Z":         "/20250301T105800.500000000Z", // the same instant
		"2025-03-01T10:58:00.500000001Z": "/20250301T105800.500000001Z",
		"0001-01-01T00:00:00Z":           "/00010101T000000.000000000Z",
		"9999-12-31T23:59:59.999999999Z": "/99991231T235959.999999999Z",
	} {
		p, err := ParsePayload([]byte(`{"sessionId":"s","identities":[{"type":"email","value":"a@b.c"}],"traits":{"plan":"pro"},"traitsAt":"` + at + `"}`))
		if err != nil {
			t.Fatalf("%s: %v", at, err)
		}
		events, _ := p.Events(received)
		key := events[0].DedupeKey
		if !strings.HasSuffix(key, suffix) || strings.Contains(strings.TrimPrefix(key, "s:"), ":") {
			t.Errorf("traitsAt %s: key %q, want it to end in %q with no ':' after the session's", at, key, suffix)
		}
		seen[suffix] = key
	}
	if len(seen) != 4 {
		t.Errorf("keys %v: want one per distinct instant", seen)
	}
}
