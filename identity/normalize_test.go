package identity

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"golang.org/x/net/idna"
)

// outcome classifies what Normalize did, so tables can state it compactly.
type outcome int

const (
	ok outcome = iota
	blocked
	badType
	badValue
)

func (o outcome) String() string {
	return [...]string{"ok", "blocked", "invalid type", "invalid value"}[o]
}

func classify(t *testing.T, id Identity, err error) outcome {
	t.Helper()
	if err == nil {
		return ok
	}
	if errors.Is(err, ErrBlocked) {
		if id != (Identity{}) {
			t.Errorf("blocked result = %v, want zero Identity", id)
		}
		return blocked
	}
	var inv *InvalidError
	if !errors.As(err, &inv) {
		t.Fatalf("error %v (%T) is neither ErrBlocked nor *InvalidError", err, err)
	}
	if id != (Identity{}) {
		t.Errorf("invalid result = %v, want zero Identity", id)
	}
	switch inv.Field {
	case "type":
		return badType
	case "value":
		return badValue
	}
	t.Fatalf("InvalidError.Field = %q, want \"type\" or \"value\"", inv.Field)
	return 0
}

type normCase struct {
	name   string
	region string
	in     Identity
	want   string // normalized value when outcome is ok
	out    outcome
	reason string // substring of InvalidError.Reason, when set
}

func runNormalize(t *testing.T, cases []normCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Normalizer{DefaultRegion: tc.region}.Normalize(tc.in)
			if o := classify(t, got, err); o != tc.out {
				t.Fatalf("Normalize(%v) outcome = %v (err %v), want %v", tc.in, o, err, tc.out)
			}
			if tc.reason != "" && (err == nil || !strings.Contains(err.Error(), tc.reason)) {
				t.Errorf("Normalize(%v) error = %v, want reason containing %q", tc.in, err, tc.reason)
			}
			if tc.out != ok {
				return
			}
			if want := (Identity{Type: tc.in.Type, Value: tc.want}); got != want {
				t.Errorf("Normalize(%v) = %v, want %v", tc.in, got, want)
			}
		})
	}
}

func email(v string) Identity { return Identity{Type: TypeEmail, Value: v} }
func phone(v string) Identity { return Identity{Type: TypePhone, Value: v} }

func TestNormalizeEmail(t *testing.T) {
	runNormalize(t, []normCase{
		{name: "plain", in: email("bob@example.com"), want: "bob@example.com"},
		{name: "uppercase", in: email("Bob.Smith@Example.COM"), want: "bob.smith@example.com"},
		{name: "surrounding spaces", in: email("  bob@example.com\t\n"), want: "bob@example.com"},
		{name: "unicode whitespace", in: email("\u00a0bob@example.com\u3000"), want: "bob@example.com"},
		{name: "mailto", in: email("mailto:bob@example.com"), want: "bob@example.com"},
		{name: "MAILTO uppercase", in: email("MAILTO:Bob@Example.com"), want: "bob@example.com"},
		{name: "plus tag kept", in: email("bob+news@example.co.uk"), want: "bob+news@example.co.uk"},
		{name: "atext specials", in: email("o'neil_x-y!#$%&*=?^`{|}~/@example.com"), want: "o'neil_x-y!#$%&*=?^`{|}~/@example.com"},
		{name: "hyphenated domain", in: email("a@my-shop.example"), want: "a@my-shop.example"},
		{name: "unicode local and domain", in: email("José@Bücher.DE"), want: "josé@bücher.de"},
		{name: "devanagari domain with marks", in: email("a@भारत.भारत"), want: "a@भारत.भारत"},
		{name: "local part 64 bytes", in: email(strings.Repeat("a", 64) + "@x.io"), want: strings.Repeat("a", 64) + "@x.io"},

		{name: "display name", in: email("Bob <b@x.com>"), out: badValue, reason: "local part contains whitespace"},
		{name: "angle brackets only", in: email("<b@x.com>"), out: badValue},
		{name: "no at", in: email("bob.example.com"), out: badValue},
		{name: "two ats", in: email("bob@x@example.com"), out: badValue, reason: "exactly one '@'"},
		{name: "empty local", in: email("@example.com"), out: badValue},
		{name: "local too long", in: email(strings.Repeat("a", 65) + "@x.io"), out: badValue},
		{name: "no dot in domain", in: email("bob@localhost"), out: badValue, reason: "no dot"},
		{name: "empty domain", in: email("bob@"), out: badValue},
		{name: "space inside", in: email("bob smith@example.com"), out: badValue},
		{name: "space in domain", in: email("bob@exa mple.com"), out: badValue},
		{name: "empty label", in: email("bob@example..com"), out: badValue},
		{name: "leading dot domain", in: email("bob@.example.com"), out: badValue},
		{name: "trailing dot domain", in: email("bob@example.com."), out: badValue},
		{name: "leading dot local", in: email(".bob@example.com"), out: badValue},
		{name: "trailing dot local", in: email("bob.@example.com"), out: badValue},
		{name: "double dot local", in: email("bob..smith@example.com"), out: badValue},
		{name: "underscore in domain", in: email("bob@exa_mple.com"), out: badValue},
		{name: "label leading hyphen", in: email("bob@-example.com"), out: badValue},
		{name: "ip address domain", in: email("bob@10.0.0.1"), out: badValue},
		{name: "quoted local", in: email(`"bob"@example.com`), out: badValue},
		{name: "comma list", in: email("a@x.com,b@x.com"), out: badValue},
		{name: "zero width space", in: email("bob\u200b@example.com"), out: badValue},
		{name: "control char", in: email("bob\x00@example.com"), out: badValue},
		{name: "invalid utf8", in: email("bob\xff@example.com"), out: badValue},
		{name: "too long", in: email(strings.Repeat("a", 60) + "@" + strings.Repeat("b.", 100) + "com"), out: badValue},
		{name: "mailto with nested mailto", in: email("mailto:mailto:bob@example.com"), out: badValue},
		// Lowercasing Ⱥ (2 bytes) gives ⱥ (3 bytes): 250 bytes in, 358
		// out, in labels IDNA refuses ("--" in third and fourth place),
		// which have no shorter form.
		{name: "lowercasing grows past limit", in: email("a@" + strings.Repeat("ab--"+strings.Repeat("Ⱥ", 18)+".", 6) + "co"), out: badValue, reason: "longer than 256 bytes"},
		// The same growth in labels IDNA accepts: their punycode form fits.
		{name: "lowercasing grows past limit, punycode fits", in: email("a@" + strings.Repeat(strings.Repeat("Ⱥ", 20)+".", 6) + "co"),
			want: "a@" + strings.Repeat("xn--cgjaaaaaaaaaaaaaaaaaaa.", 6) + "co"},

		{name: "blocked empty", in: email("   "), out: blocked},
		{name: "blocked null", in: email("NULL"), out: blocked},
		{name: "blocked mailto empty", in: email("mailto:"), out: blocked},
		{name: "blocked mailto null", in: email("mailto:null"), out: blocked},
	})
}

// One address typed in two Unicode forms is one identity: composed and
// decomposed accents (NFC and NFD), fullwidth and ASCII letters, a domain
// in Unicode and in punycode (IDNA). Each pair normalizes to one value,
// the Unicode form of the domain (docs/identity.md#email-addresses).
func TestNormalizeEmailUnicodeForms(t *testing.T) {
	n := Normalizer{DefaultRegion: "US"}
	for _, tc := range []struct{ name, a, b, want string }{
		{"composed and decomposed accent", "jos\u00e9@example.com", "jose\u0301@example.com", "jos\u00e9@example.com"},
		{"decomposed, uppercase", "JOS\u00c9@example.com", "JOSE\u0301@EXAMPLE.COM", "jos\u00e9@example.com"},
		{"fullwidth local part", "\uff52\uff4f\uff53\uff41@example.com", "rosa@example.com", "rosa@example.com"},
		{"fullwidth uppercase, at sign and dot", "\uff32\uff2f\uff33\uff21\uff20\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45\uff0e\uff43\uff4f\uff4d", "rosa@example.com", "rosa@example.com"},
		{"fullwidth mailto", "\uff4d\uff41\uff49\uff4c\uff54\uff4f:rosa@example.com", "rosa@example.com", "rosa@example.com"},
		{"halfwidth katakana", "\uff76\uff9e@example.jp", "\u30ac@example.jp", "\u30ac@example.jp"},
		{"unicode and punycode domain", "rosa@b\u00fccher.de", "rosa@xn--bcher-kva.de", "rosa@b\u00fccher.de"},
		{"punycode domain, uppercase", "Rosa@XN--BCHER-KVA.DE", "rosa@B\u00dcCHER.de", "rosa@b\u00fccher.de"},
		{"decomposed domain", "rosa@bu\u0308cher.de", "rosa@xn--bcher-kva.de", "rosa@b\u00fccher.de"},
		{"fullwidth domain", "rosa@\uff42\u00fc\uff43\uff48\uff45\uff52.de", "rosa@b\u00fccher.de", "rosa@b\u00fccher.de"},
		{"ideographic full stop in the domain", "rosa@b\u00fccher\u3002de", "rosa@b\u00fccher.de", "rosa@b\u00fccher.de"},
		{"Cherokee domain, which IDNA maps to capitals", "a@\u13be\u13a0.example", "a@\uab8e\uab70.example", "a@\uab8e\uab70.example"},
		{"both at once", "JOSE\u0301@XN--BCHER-KVA.DE", "jos\u00e9@bu\u0308cher.de", "jos\u00e9@b\u00fccher.de"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, v := range []string{tc.a, tc.b} {
				got, err := n.Normalize(email(v))
				if err != nil {
					t.Fatalf("Normalize(%+q): %v", v, err)
				}
				if got.Value != tc.want {
					t.Errorf("Normalize(%+q) = %+q, want %+q", v, got.Value, tc.want)
				}
			}
		})
	}
	// In the local part, compatibility forms other than width are
	// different characters: a ligature is not the two letters it joins
	// (no NFKC). In the domain, UTS #46 maps them, as DNS lookups do
	// (docs/identity.md#email-addresses).
	for in, want := range map[string]string{
		"\ufb01@example.com": "\ufb01@example.com", "\u017f@example.com": "\u017f@example.com",
		"a@\ufb01le.com": "a@file.com", "a@\u210cello.de": "a@hello.de", "a@\u017ftadt.de": "a@stadt.de",
	} {
		if got, err := n.Normalize(email(in)); err != nil || got.Value != want {
			t.Errorf("Normalize(%+q) = %+q, %v; want %+q", in, got.Value, err, want)
		}
	}
}

// An address the plausibility check accepts is not refused for IDNA's
// stricter rules, nor for the length of its Unicode form: a label IDNA
// refuses is kept as it was typed (lowercased, in NFC), the others still
// take their Unicode form, labels are measured in their ASCII form, and a
// domain whose Unicode form would not fit is written in punycode. Each
// result normalizes to itself.
func TestNormalizeEmailIDNAFallback(t *testing.T) {
	n := Normalizer{DefaultRegion: "US"}
	jp := strings.Repeat("日本語", 8)  // 72 bytes, xn--wgvaaaaaaa050ababbbbbb8535mcacccccc in punycode (39)
	long := strings.Repeat("Ⱥ", 20) // ⱥ (3 bytes) when lowercased
	for _, tc := range []struct {
		name string
		in   []string
		want string
	}{
		{"punycode label longer than 63 bytes in Unicode",
			[]string{"taro@xn--wgvaaaaaaa050ababbbbbb8535mcacccccc.jp", "taro@" + jp + ".jp", "TARO@XN--WGVAAAAAAA050ABABBBBBB8535MCACCCCCC.JP"}, "taro@" + jp + ".jp"},
		{"invalid punycode", []string{"user@xn--abc.com", "USER@XN--ABC.COM"}, "user@xn--abc.com"},
		{"invalid punycode beside a valid one", []string{"user@xn--abc.xn--bcher-kva.de", "user@xn--abc.b\u00fccher.de"}, "user@xn--abc.b\u00fccher.de"},
		{"hyphens in third and fourth place beside a non-ASCII local part", []string{"jos\u00e9@ab--cd.example.com", "JOSE\u0301@AB--CD.example.com"}, "jos\u00e9@ab--cd.example.com"},
		{"hyphens in third and fourth place beside a punycode label", []string{"rosa@xn--bcher-kva.ab--cd.de", "rosa@b\u00fccher.ab--cd.de"}, "rosa@b\u00fccher.ab--cd.de"},
		{"right-to-left label starting with a digit", []string{"a@1\u05e9\u05dc\u05d5\u05dd.co.il"}, "a@1\u05e9\u05dc\u05d5\u05dd.co.il"},
		{"right-to-left label starting with a digit beside a punycode label", []string{"a@1\u05e9\u05dc\u05d5\u05dd.xn--bcher-kva.de"}, "a@1\u05e9\u05dc\u05d5\u05dd.b\u00fccher.de"},
		// IDNA takes these, but their Unicode forms are not labels
		// checkEmail takes: kept as typed, as before IDNA.
		{"emoji domain in punycode", []string{"a@xn--ls8h.la", "A@XN--LS8H.LA"}, "a@xn--ls8h.la"},
		{"symbol in a punycode label", []string{"a@xn--i-7iq.ws"}, "a@xn--i-7iq.ws"},
		{"top-level domain of mathematical digits", []string{"a@b.𝟏𝟐"}, "a@b.𝟏𝟐"},
		{"Unicode form longer than the limit", []string{"a@" + strings.Repeat("xn--cgjaaaaaaaaaaaaaaaaaaa.", 5) + "co", "a@" + strings.Repeat(long+".", 5) + "co"},
			"a@" + strings.Repeat("xn--cgjaaaaaaaaaaaaaaaaaaa.", 5) + "co"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, v := range tc.in {
				got, err := n.Normalize(email(v))
				if err != nil {
					t.Fatalf("Normalize(%+q): %v, want accepted", v, err)
				}
				if got.Value != tc.want {
					t.Errorf("Normalize(%+q) = %+q, want %+q", v, got.Value, tc.want)
				}
				if again, err := n.Normalize(got); err != nil || again != got {
					t.Errorf("Normalize(%+q) = %+q, %v; want it unchanged", got.Value, again.Value, err)
				}
			}
		})
	}
	// A label kept as typed is judged the same in a domain long enough to
	// be written in punycode: an emoji label is refused either way.
	// The tail is typed in punycode: its Unicode form is too long to
	// store, so the domain is written in punycode, label by label.
	uuu, err := idna.Lookup.ToASCII(strings.Repeat("\u00fc", 30))
	if err != nil {
		t.Fatal(err)
	}
	longTail := strings.Repeat("."+uuu, 4) + ".aaa.de"
	for _, v := range []string{"a@\U0001f4a9.la", "a@\U0001f4a9" + longTail, "a@i\u2764" + longTail} {
		if got, err := n.Normalize(email(v)); err == nil {
			t.Errorf("Normalize(%+q) = %+q, want refused (a symbol in the domain)", v, got.Value)
		}
	}
	// Labels still have a length: longer than 63 bytes in both forms, or
	// ASCII and longer than 63, they are refused.
	for _, v := range []string{"a@" + strings.Repeat("b", 64) + ".com", "a@xn--" + strings.Repeat("b", 60) + ".com",
		"a@一二三四五六七八九十百千万亿兆京垓秭穰沟涧正载极.com", // 72 bytes, 69 in punycode
		"a@xn--4gqgmg53b5i2b9kogu2xslawa102d2a709kpyc0x7hgvosqf4zfun0dy1pdyco27q.com"} {
		_, err := n.Normalize(email(v))
		var inv *InvalidError
		if !errors.As(err, &inv) || !strings.Contains(inv.Reason, "longer than 63 bytes") {
			t.Errorf("Normalize(%+q) = %v, want refused: domain label longer than 63 bytes", v, err)
		}
	}
}

func TestNormalizePhone(t *testing.T) {
	runNormalize(t, []normCase{
		{name: "e164", region: "US", in: phone("+14155550100"), want: "+14155550100"},
		{name: "international spaces", in: phone("+1 415 555 0100"), want: "+14155550100"},
		{name: "national US", region: "US", in: phone("(415) 555-0100"), want: "+14155550100"},
		{name: "national US dots", region: "US", in: phone("415.555.0100"), want: "+14155550100"},
		{name: "region lowercase", region: "us", in: phone("415-555-0100"), want: "+14155550100"},
		{name: "national GB", region: "GB", in: phone("020 7946 0958"), want: "+442079460958"},
		{name: "00 prefix without region", in: phone("00 44 20 7946 0958"), want: "+442079460958"},
		{name: "00 prefix with US region", region: "US", in: phone("00 44 20 7946 0958"), want: "+442079460958"},
		{name: "US international prefix", region: "US", in: phone("011 44 20 7946 0958"), want: "+442079460958"},
		{name: "trunk zero in parens", in: phone("+44 (0) 20 7946 0958"), want: "+442079460958"},
		{name: "whatsapp prefix", in: phone("whatsapp:+14155550100"), want: "+14155550100"},
		{name: "WhatsApp prefix case", in: phone("WhatsApp:+14155550100"), want: "+14155550100"},
		{name: "whatsapp Mexican mobile", in: phone("whatsapp:+5215512345678"), want: "+525512345678"},
		{name: "whatsapp Brazilian mobile without its 9", in: phone("whatsapp:+552187654321"), want: "+5521987654321"},
		// Only WhatsApp writes numbers so: an SMS from the same digits is
		// refused or taken as it is.
		{name: "Mexican mobile with 1 outside WhatsApp", in: phone("+5215512345678"), out: badValue, reason: "too long"},
		{name: "Brazilian number without 9 outside WhatsApp", in: phone("sms:+552187654321"), want: "+552187654321"},
		{name: "sms prefix", in: phone("sms:+14155550100"), want: "+14155550100"},
		{name: "tel prefix dashes", in: phone("tel:+1-415-555-0100"), want: "+14155550100"},
		{name: "fictional 555-01xx", in: phone("+1 555 555 0123"), want: "+15555550123"},
		{name: "en dashes", in: phone("+1 415–555–0100"), want: "+14155550100"},
		{name: "fullwidth digits", region: "US", in: phone("４１５５５５０１００"), want: "+14155550100"},
		{name: "surrounding spaces", in: phone("  +14155550100 \n"), want: "+14155550100"},

		{name: "national without region", in: phone("(415) 555-0100"), out: badValue, reason: "no default region"},
		{name: "GB national with US region", region: "US", in: phone("020 7946 0958"), out: badValue},
		{name: "too short", region: "US", in: phone("12"), out: badValue},
		{name: "too short international", in: phone("+49 1234"), out: badValue, reason: "fewer than 7 digits"},
		{name: "local only", region: "US", in: phone("555 0100"), out: badValue, reason: "area code"},
		{name: "too long", in: phone("+1 415 555 0100 1234 5678"), out: badValue},
		{name: "letters vanity", region: "US", in: phone("1-800-FLOWERS"), out: badValue, reason: "letters"},
		{name: "extension x", in: phone("+1 415 555 0100 x12"), out: badValue},
		{name: "extension ext", in: phone("+1 415 555 0100 ext. 12"), out: badValue},
		{name: "rfc3966 extension", in: phone("tel:+1-415-555-0100;ext=12"), out: badValue},
		{name: "hash", in: phone("+1 415 555 0100#"), out: badValue},
		{name: "two numbers", in: phone("+14155550100, +14155550101"), out: badValue},
		{name: "unknown country code", in: phone("+999 1234 5678"), out: badValue},
		{name: "no digits", in: phone("+()"), out: badValue},
		{name: "email in phone", in: phone("bob@example.com"), out: badValue},
		// Found by FuzzNormalizePhone: the national prefix was stripped once
		// per pass, so the result was not stable.
		{name: "ambiguous national prefix", in: phone("+44 (0) 00 0000 0001"), out: badValue, reason: "ambiguous"},
		// Found by FuzzNormalizePhone: German metadata allows more than the
		// 15 digits E.164 permits.
		{name: "more than 15 digits", region: "DE", in: phone("0100000000000000"), out: badValue, reason: "more than 15 digits"},

		{name: "blocked empty", in: phone(""), out: blocked},
		{name: "blocked zero", in: phone("0"), out: blocked},
		{name: "blocked zeros", in: phone("0000000000"), out: blocked},
		{name: "blocked masked", in: phone("(000) 000-0000"), out: blocked},
		{name: "blocked zero national", in: phone("+1 000 000 0000"), out: blocked},
		{name: "blocked prefix only", in: phone("tel:"), out: blocked},
		{name: "blocked after prefix", in: phone("whatsapp:undefined"), out: blocked},
		{name: "blocked minus one", in: phone("-1"), out: blocked},
	})
}

// A search by a phone number written as people write it looks for the
// form search text holds: E.164 for a whole number, digits for a part.
func TestPhoneFragment(t *testing.T) {
	n := Normalizer{DefaultRegion: "US"}
	for _, tc := range []struct {
		in   string
		want []string
	}{
		// A whole number: its digits, which its E.164 form holds.
		{"(415) 555-0100", []string{"4155550100"}},
		{"415-555-0100", []string{"4155550100"}},
		{"+1 415 555 0100", []string{"+14155550100"}},
		{"+14155550100", []string{"+14155550100"}},
		{" 415.555.0100 ", []string{"4155550100"}},
		{"+44 20 7946 0958", []string{"+442079460958"}},
		{"４１５５５５０１００", []string{"4155550100"}},
		// An E.164 form that does not hold the digits as written.
		{"00 44 20 7946 0958", []string{"00442079460958", "+442079460958"}},
		// The part of a foreign number that reads as a US one: its
		// digits find the foreign number (+52 55 1234 5678).
		{"55 1234 5678", []string{"5512345678"}},
		{"55-1234-5678", []string{"5512345678"}},
		// Parts of a number keep their digits, and a "+" that starts them.
		{"555-0100", []string{"5550100"}},
		{"(415) 555", []string{"415555"}},
		{"+1 415", []string{"+1415"}},
		{"0100", []string{"0100"}},
		{"(000) 000-0000", []string{"0000000000"}},
		// Not a written number: search it as it is.
		{"rosa", nil},
		{"rosa 415", nil},
		{"a@b.example", nil},
		{"415_555", nil},
		{"+()", nil},
		{"", nil},
	} {
		got, ok := n.PhoneFragment(tc.in)
		if !slices.Equal(got, tc.want) || ok != (tc.want != nil) {
			t.Errorf("PhoneFragment(%q) = %q, %t, want %q", tc.in, got, ok, tc.want)
		}
	}
}

func TestNormalizeTypes(t *testing.T) {
	runNormalize(t, []normCase{
		{name: "user_id keeps case", in: Identity{TypeUserID, "  User-42 "}, want: "User-42"},
		{name: "anonymous_id", in: Identity{TypeAnonymousID, "5f3c-A1"}, want: "5f3c-A1"},
		{name: "custom crm_id", in: Identity{"crm_id", "CRM 0042"}, want: "CRM 0042"},
		{name: "custom chatbot:webchat", in: Identity{"chatbot:webchat", "sess.9"}, want: "sess.9"},
		{name: "custom dotted dashed", in: Identity{"a.b-c_d:e9", "x"}, want: "x"},
		{name: "custom unicode value", in: Identity{"crm_id", "Zoë 😀"}, want: "Zoë 😀"},
		{name: "type 64 bytes", in: Identity{"a" + strings.Repeat("b", 63), "x"}, want: "x"},
		{name: "value 256 bytes", in: Identity{TypeUserID, strings.Repeat("u", 256)}, want: strings.Repeat("u", 256)},

		{name: "type Email", in: Identity{"Email", "bob@example.com"}, out: badType},
		{name: "type leading digit", in: Identity{"1abc", "x"}, out: badType},
		{name: "type space", in: Identity{"a b", "x"}, out: badType},
		{name: "type empty", in: Identity{"", "x"}, out: badType},
		{name: "type leading underscore", in: Identity{"_a", "x"}, out: badType},
		{name: "type 65 bytes", in: Identity{"a" + strings.Repeat("b", 64), "x"}, out: badType},
		{name: "type unicode", in: Identity{"crm_ïd", "x"}, out: badType},
		{name: "bad type beats blocked value", in: Identity{"Email", "null"}, out: badType},

		{name: "value 257 bytes", in: Identity{TypeUserID, strings.Repeat("u", 257)}, out: badValue},
		{name: "value newline inside", in: Identity{TypeUserID, "u\n1"}, out: badValue},
		{name: "value NUL", in: Identity{"crm_id", "u\x001"}, out: badValue},
		{name: "value invalid utf8", in: Identity{TypeAnonymousID, "\xc3\x28"}, out: badValue},
	})
}

// TestNormalizeBlocked checks every built-in placeholder for every type, so
// that adding a type-specific path cannot bypass the block list.
func TestNormalizeBlocked(t *testing.T) {
	values := []string{"", " ", "\t\n", "null", "NULL", "Null", "nil", "NIL", "undefined", "Undefined",
		"anonymous", "ANONYMOUS", "none", "None", "n/a", "N/A", "0", "-1", " -1 ", "00", "000", "---", "-", "0-0", "-0-"}
	types := []string{TypeUserID, TypeEmail, TypePhone, TypeAnonymousID, "crm_id", "chatbot:webchat"}
	for _, typ := range types {
		for _, v := range values {
			got, err := Normalizer{DefaultRegion: "US"}.Normalize(Identity{Type: typ, Value: v})
			if !errors.Is(err, ErrBlocked) {
				t.Errorf("Normalize(%s %q) = %v, %v, want ErrBlocked", typ, v, got, err)
			}
		}
	}
	// Near misses must not be blocked: they are real identifiers.
	for _, v := range []string{"0x", "nulll", "10", "-2", "none1", "n/a/b", "0.0"} {
		got, err := Normalizer{}.Normalize(Identity{Type: TypeUserID, Value: v})
		if err != nil || got.Value != v {
			t.Errorf("Normalize(user_id %q) = %v, %v, want %q, nil", v, got, err, v)
		}
	}
}

func TestInvalidErrorMessage(t *testing.T) {
	_, err := Normalizer{DefaultRegion: "US"}.Normalize(phone("12"))
	var inv *InvalidError
	if !errors.As(err, &inv) {
		t.Fatalf("Normalize(phone 12) error = %v, want *InvalidError", err)
	}
	if got, want := inv.Error(), `invalid phone "12": not a valid phone number`; !strings.HasPrefix(got, want) {
		t.Errorf("Error() = %q, want prefix %q", got, want)
	}
	if inv.Type != TypePhone || inv.Value != "12" || inv.Field != "value" {
		t.Errorf("InvalidError = %+v, want Field value, Type phone, Value 12", inv)
	}

	_, err = Normalizer{}.Normalize(Identity{Type: "Email", Value: "a@b.co"})
	if got, want := err.Error(), `invalid identity type "Email": `; !strings.HasPrefix(got, want) {
		t.Errorf("Error() = %q, want prefix %q", got, want)
	}

	long := &InvalidError{Field: "value", Type: "crm_id", Value: strings.Repeat("é", 200), Reason: "r"}
	if got := long.Error(); len(got) > 200 || !strings.HasSuffix(got, `…": r`) {
		t.Errorf("Error() of a long value = %q (%d bytes), want it shortened", got, len(got))
	}
}

func TestValidType(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want bool
	}{
		{"user_id", true}, {"email", true}, {"crm_id", true}, {"chatbot:webchat", true},
		{"a", true}, {"a0._:-", true}, {"z" + strings.Repeat("9", 63), true},
		{"", false}, {"Email", false}, {"1abc", false}, {"a b", false}, {"-a", false},
		{"a/b", false}, {"aB", false}, {"a\x00", false}, {"z" + strings.Repeat("9", 64), false},
	} {
		if got := ValidType(tc.in); got != tc.want {
			t.Errorf("ValidType(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func BenchmarkNormalizeEmail(b *testing.B) {
	n := Normalizer{DefaultRegion: "US"}
	id := email("  Bob.Smith+News@Example.COM ")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := n.Normalize(id); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkNormalizeEmailUnicode measures an address that needs the
// Unicode work the ASCII fast path skips: a decomposed local part and an
// internationalized domain.
func BenchmarkNormalizeEmailUnicode(b *testing.B) {
	n := Normalizer{DefaultRegion: "US"}
	id := email(" JOSE\u0301@B\u00fccher.DE ")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := n.Normalize(id); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkNormalizePhone measures a sender seen before: the cache answers.
func BenchmarkNormalizePhone(b *testing.B) {
	n := Normalizer{DefaultRegion: "US"}
	id := phone("(415) 555-0100")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := n.Normalize(id); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkNormalizePhoneFirstSeen measures a number's first parse, which
// the cache does not help.
func BenchmarkNormalizePhoneFirstSeen(b *testing.B) {
	n := Normalizer{DefaultRegion: "US"}
	id := phone("(415) 555-0100")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := n.normalizePhone(id); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkNormalizePhoneFirstSeenE164 measures the first parse of a number
// already in E.164, as consoles and providers send it.
func BenchmarkNormalizePhoneFirstSeenE164(b *testing.B) {
	n := Normalizer{DefaultRegion: "US"}
	id := phone("+14155550100")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := n.normalizePhone(id); err != nil {
			b.Fatal(err)
		}
	}
}

func TestPhoneCacheAgreesWithParse(t *testing.T) {
	n := Normalizer{DefaultRegion: "US"}
	for _, raw := range []string{"(415) 555-0100", "whatsapp:+14155550100", "12", "+44 20 7946 0958"} {
		first, err1 := n.Normalize(phone(raw))
		again, err2 := n.Normalize(phone(raw)) // from the cache
		direct, err3 := n.normalizePhone(phone(raw))
		if first != again || first != direct || (err1 == nil) != (err2 == nil) || (err1 == nil) != (err3 == nil) {
			t.Errorf("%q: first %v/%v, cached %v/%v, parsed %v/%v", raw, first, err1, again, err2, direct, err3)
		}
	}
}

func TestWhatsAppNumber(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"Mexican mobile wa_id", "+5215512345678", "+525512345678"},
		{"Mexican mobile written with spaces", "+52 1 55 1234 5678", "+525512345678"},
		{"Mexican number as dialled now", "+525512345678", "+525512345678"},
		{"Brazilian old mobile, Rio", "+552187654321", "+5521987654321"},
		{"Brazilian old mobile, Manaus", "+559281723241", "+5592981723241"},
		{"Brazilian mobile with its 9", "+5521987654321", "+5521987654321"},
		// A landline's subscriber number starts with 2 to 5: no 9 is added.
		{"Brazilian landline", "+552132654321", "+552132654321"},
		{"US number", "+14155550100", "+14155550100"},
		// 13 digits starting 521 whose rest is no valid Mexican number.
		{"not a Mexican mobile", "+5210012345678", "+5210012345678"},
		{"no plus", "5215512345678", "5215512345678"},
		{"letters are left to Normalize", "+521551234567x8", "+521551234567x8"},
		{"empty", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := WhatsAppNumber(tc.in); got != tc.want {
				t.Errorf("WhatsAppNumber(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}
