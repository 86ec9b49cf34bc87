package identity

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

// checkNormalized asserts the properties every accepted identity must
// have, whatever its type: Normalize is idempotent and its output is within
// the shared limits.
func checkNormalized(t *testing.T, n Normalizer, in, got Identity) {
	t.Helper()
	if got.Type != in.Type {
		t.Fatalf("Normalize(%v) changed the type to %q", in, got.Type)
	}
	if !utf8.ValidString(got.Value) || len(got.Value) == 0 || len(got.Value) > MaxValueLen {
		t.Fatalf("Normalize(%v) = %q: want valid UTF-8 of 1..%d bytes", in, got.Value, MaxValueLen)
	}
	if strings.TrimSpace(got.Value) != got.Value {
		t.Fatalf("Normalize(%v) = %q: not trimmed", in, got.Value)
	}
	again, err := n.Normalize(got)
	if err != nil {
		t.Fatalf("Normalize(Normalize(%v)) = %v, want %q to be accepted again", in, err, got.Value)
	}
	if again != got {
		t.Fatalf("Normalize(Normalize(%v)) = %q, want %q (not idempotent)", in, again.Value, got.Value)
	}
}

// checkRefusal asserts that a refusal is one of the two documented kinds.
func checkRefusal(t *testing.T, in, got Identity, err error) {
	t.Helper()
	var inv *InvalidError
	if !errors.Is(err, ErrBlocked) && !errors.As(err, &inv) {
		t.Fatalf("Normalize(%v) error %v (%T): want ErrBlocked or *InvalidError", in, err, err)
	}
	if got != (Identity{}) {
		t.Fatalf("Normalize(%v) = %v with error %v, want zero Identity", in, got, err)
	}
}

func FuzzNormalizeEmail(f *testing.F) {
	for _, s := range []string{
		"bob@example.com", " Bob@Example.COM ", "mailto:a@b.co", "Bob <b@x.com>", "a@b", "a@@b.co",
		"josé@bücher.de", "a@भारत.भारत", ".a@b.co", "a@b..co", "a@10.0.0.1", "null", "0", "",
		"MAILTO:mailto:x@y.z", "jose\u0301@bu\u0308cher.de", "\uff52\uff4f\uff53\uff41\uff20x.co", "a@xn--bcher-kva.de", "\uff76\uff9e@x.jp", "a@b\u3002co", "\u0130@x.co", "\u023a@x.co", "a\u200b@b.co", strings.Repeat("\u023a", 40) + "@x.co",
		"taro@xn--wgvaaaaaaa050ababbbbbb8535mcacccccc.jp", "user@xn--abc.com", "jos\u00e9@ab--cd.example.com", "a@1\u05e9\u05dc\u05d5\u05dd.xn--bcher-kva.de", "a@" + strings.Repeat(strings.Repeat("\u023a", 20)+".", 5) + "co",
	} {
		f.Add(s)
	}
	n := Normalizer{DefaultRegion: "US"}
	f.Fuzz(func(t *testing.T, v string) {
		in := Identity{Type: TypeEmail, Value: v}
		got, err := n.Normalize(in)
		if err != nil {
			checkRefusal(t, in, got, err)
			return
		}
		checkNormalized(t, n, in, got)
		if strings.ToLower(got.Value) != got.Value {
			t.Fatalf("Normalize(%q) = %q: not lowercase", v, got.Value)
		}
		if strings.Count(got.Value, "@") != 1 {
			t.Fatalf("Normalize(%q) = %q: want exactly one '@'", v, got.Value)
		}
		if strings.ContainsFunc(got.Value, func(r rune) bool { return r == ' ' || r == '<' || r == '>' }) {
			t.Fatalf("Normalize(%q) = %q: contains a space or angle bracket", v, got.Value)
		}
	})
}

func FuzzNormalizePhone(f *testing.F) {
	for _, s := range []struct{ region, v string }{
		{"US", "(415) 555-0100"}, {"", "+1 415 555 0100"}, {"", "00 44 20 7946 0958"}, {"GB", "020 7946 0958"},
		{"US", "whatsapp:+14155550100"}, {"US", "sms:+14155550100"}, {"US", "tel:+1-415-555-0100"},
		{"US", "1-800-FLOWERS"}, {"US", "12"}, {"US", "555 0100"}, {"", "+44 (0) 20 7946 0958"},
		{"DE", "030 1234567"}, {"IT", "06 1234 5678"}, {"", "+39 06 1234 5678"}, {"BR", "(11) 91234-5678"},
		{"US", "４１５５５５０１００"}, {"US", "0"}, {"US", "(000) 000-0000"}, {"", "+800 1234 5678"},
		{"XX", "415 555 0100"}, {"us", "+1 (415) 555–0100"}, {"RU", "8 (495) 123-45-67"},
		{"", "whatsapp:+5215512345678"}, {"", "whatsapp:+552187654321"}, {"MX", "whatsapp:+52 1 55 1234 5678"},
	} {
		f.Add(s.region, s.v)
	}
	f.Fuzz(func(t *testing.T, region, v string) {
		n := Normalizer{DefaultRegion: region}
		in := Identity{Type: TypePhone, Value: v}
		got, err := n.Normalize(in)
		if err != nil {
			checkRefusal(t, in, got, err)
			return
		}
		checkNormalized(t, n, in, got)
		// An E.164 number is also stable when read with no default region
		// or a different one, since it carries its country code.
		for _, other := range []string{"", "GB"} {
			if again, err := (Normalizer{DefaultRegion: other}).Normalize(got); err != nil || again != got {
				t.Fatalf("Normalize(%q) with region %q = %v, %v, want %q", got.Value, other, again, err, got.Value)
			}
		}
		out := got.Value
		if len(out) < 1+minPhoneDigits || len(out) > 16 || out[0] != '+' || strings.Trim(out[1:], "0123456789") != "" {
			t.Fatalf("Normalize(%q, region %q) = %q: want '+' and 7 to 15 digits", v, region, out)
		}
	})
}

func FuzzNormalize(f *testing.F) {
	for _, s := range []struct{ typ, v string }{
		{"user_id", " U1 "}, {"anonymous_id", "a1"}, {"crm_id", "C-9"}, {"chatbot:webchat", "s"},
		{"Email", "a@b.co"}, {"1abc", "x"}, {"a b", "x"}, {"", ""}, {"email", "a@b.co"}, {"phone", "+14155550100"},
		{"user_id", "null"}, {"user_id", "0-0"}, {"crm_id", "a\x00b"}, {"crm_id", "\xff"},
	} {
		f.Add(s.typ, s.v)
	}
	n := Normalizer{DefaultRegion: "US"}
	f.Fuzz(func(t *testing.T, typ, v string) {
		in := Identity{Type: typ, Value: v}
		got, err := n.Normalize(in)
		var inv *InvalidError
		if !ValidType(typ) {
			if !errors.As(err, &inv) || inv.Field != "type" {
				t.Fatalf("Normalize(%v) error = %v, want an InvalidError on the type", in, err)
			}
			return
		}
		if err != nil {
			checkRefusal(t, in, got, err)
			if errors.As(err, &inv) && inv.Field != "value" {
				t.Fatalf("Normalize(%v) refused the valid type: %v", in, err)
			}
			return
		}
		checkNormalized(t, n, in, got)
		if typ != TypeEmail && typ != TypePhone && got.Value != strings.TrimSpace(v) {
			t.Fatalf("Normalize(%v) = %q, want only trimming", in, got.Value)
		}
		if strings.ContainsFunc(got.Value, func(r rune) bool { return r < ' ' || r == 0x7f }) {
			t.Fatalf("Normalize(%v) = %q: contains control characters", in, got.Value)
		}
		if isBuiltinBlocked(got.Value) {
			t.Fatalf("Normalize(%v) = %q: accepted a blocked value", in, got.Value)
		}
	})
}
