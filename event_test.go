package c360_test

import (
	"encoding/json"
	"errors"
	"regexp"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/c360dev/c360"
)

func TestPlainObject(t *testing.T) {
	for _, c := range []struct {
		in   string
		want bool
	}{
		{`{}`, true},
		{" \t\r\n{\"a\":1}", true},
		{`{"n":12345678901234567890123,"f":-0.5,"z":0,"neg":-12}`, true},
		{`{"t":true,"f":false,"n":null,"e":"1e5","E":"2E3"}`, true},
		{`{"nested":{"list":[1,"x",{"deep":[true]}]}}`, true},
		{`{"esc":"a\"b\\c\/d\b\f\n\r\t"}`, true},
		{`{"backslash then u":"\\u0041"}`, true},
		{`{"café":"naïve 日本 😀"}`, true},
		{`{"u":"\u0041 \u00e9 \u003c \u0026 \u0001 \uFFFD \ue000"}`, true},
		{`{"\u0041":1}`, true},
		{`{"odd":"\\\u0041"}`, true},
		{`{"nul":"a\u0000b"}`, false},
		{`{"lone":"\ud800"}`, false},
		{`{"pair":"\ud83d\ude00"}`, false},
		{`{"low":"\uDC00"}`, false},
		{`{"odd":"\\\u0000"}`, false},
		{`{"long":` + strings.Repeat("9", 300) + `}`, true},
		{`{"long":-` + strings.Repeat("9", 300) + `}`, false},
		{`{"fraction":0.` + strings.Repeat("1", 298) + `}`, true},
		{`{"fraction":0.` + strings.Repeat("1", 16384) + `}`, false},
		{`{"two":[` + strings.Repeat("9", 299) + `,` + strings.Repeat("9", 299) + `]}`, true},
		{`{"x":1e5}`, false},
		{`{"x":1E5}`, false},
		{`{"x":1.5e-3}`, false},
		{`{"x":[0e0]}`, false},
		{`{"x":1e400}`, false},
		{"{\"bad\":\"\xff\"}", false},
		{`[]`, false},
		{`"{}"`, false},
		{`1`, false},
		{`null`, false},
		{``, false},
		{`   `, false},
	} {
		if got := c360.PlainObject([]byte(c.in)); got != c.want {
			t.Errorf("PlainObject(%q) = %v, want %v", c.in, got, c.want)
		}
	}
}

// refusedEscape finds a \u0000 or surrogate escape in JSON text: a
// backslash that an odd run of them leaves unescaped, then u and the
// code. Outside strings valid JSON has no backslash.
var refusedEscape = regexp.MustCompile(`(^|[^\\])(\\\\)*\\u(0000|[dD][89a-fA-F])`)

// FuzzPlainObject holds PlainObject to its definition, found another way:
// an object of valid UTF-8, without a NUL or surrogate escape (by pattern)
// and without a number with an exponent or over 300 bytes (by the
// decoder's own numbers); and DecodeObject to keeping the numbers of such
// an object as they are.
func FuzzPlainObject(f *testing.F) {
	for _, s := range []string{`{}`, `{"a":[1,2.5,-3,{"b":"c"}],"t":true}`, `{"s":"\u00e9"}`, `{"x":1e5}`,
		`{"k":"\\u"}`, `{"e":"e"}`, `[1]`, "{\"b\":\"\xc3\"}", `{"a":1E-2,"b":"x"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if !json.Valid(b) {
			return
		}
		var v any
		dec := json.NewDecoder(strings.NewReader(string(b)))
		dec.UseNumber()
		if err := dec.Decode(&v); err != nil {
			t.Fatalf("valid JSON %q does not decode: %v", b, err)
		}
		_, object := v.(map[string]any)
		want := object && utf8.Valid(b) && !refusedEscape.Match(b) && !hasNumber(v, unplain)
		got := c360.PlainObject(b)
		if got != want {
			t.Fatalf("PlainObject(%q) = %v, want %v", b, got, want)
		}
		if !object {
			return
		}
		m, err := c360.DecodeObject(b)
		if err != nil {
			if got {
				t.Fatalf("DecodeObject(%q) of a plain object: %v", b, err)
			}
			return
		}
		if hasNumber(m, unplain) {
			t.Fatalf("DecodeObject(%q) = %v kept a number PostgreSQL may refuse", b, m)
		}
		if got && hasNumber(m, func(v any) bool { _, ok := v.(float64); return ok }) {
			t.Fatalf("DecodeObject(%q) = %v read a number of a plain object as float64", b, m)
		}
	})
}

// unplain: a number PlainObject keeps out.
func unplain(v any) bool {
	n, ok := v.(json.Number)
	return ok && (len(n) > 300 || strings.ContainsAny(string(n), "eE"))
}

// hasNumber reports whether v holds a number f is true of.
func hasNumber(v any, f func(any) bool) bool {
	switch v := v.(type) {
	case map[string]any:
		for _, x := range v {
			if hasNumber(x, f) {
				return true
			}
		}
	case []any:
		for _, x := range v {
			if hasNumber(x, f) {
				return true
			}
		}
	default:
		return f(v)
	}
	return false
}

func TestDecodeObject(t *testing.T) {
	m, err := c360.DecodeObject([]byte(`{"id":12345678901234567,"f":18.990,"e":1.5e3,"a":[1e2,{"x":2}],"s":"\u00e9"}`))
	if err != nil {
		t.Fatal(err)
	}
	a, _ := m["a"].([]any)
	x, _ := a[1].(map[string]any)
	if m["id"] != json.Number("12345678901234567") || m["f"] != json.Number("18.990") || m["e"] != 1500.0 ||
		len(a) != 2 || a[0] != 100.0 || x["x"] != json.Number("2") || m["s"] != "é" {
		t.Errorf("DecodeObject = %#v, want plain numbers as written and the others as float64", m)
	}
	// A number no float64 holds is a type error naming where it is.
	long := strings.Repeat("k", 100)
	for body, field := range map[string]string{
		`{"big":{"n":1e400}}`:                   "big.n",
		`{"n":-1e400}`:                          "n",
		`{"a":[1,{"b":[2,2e999]}]}`:             "a[1].b[1]",
		`{"":{"x":1e400}}`:                      `"".x`,
		`{"` + long + `":1e400}`:                strings.Repeat("k", 64) + "…",
		`{"caf\u00e9":{"` + long + `é":1e400}}`: "café." + strings.Repeat("k", 64) + "…",
	} {
		_, err = c360.DecodeObject([]byte(body))
		var te *json.UnmarshalTypeError
		if !errors.As(err, &te) || !strings.HasPrefix(te.Value, "number ") || te.Field != field {
			t.Errorf("DecodeObject(%.40s) = %v (field %q), want an *json.UnmarshalTypeError for the number at %q", body, err, te.Field, field)
		}
	}
}

// An event's drop records read back as ingest words them: resolution's
// and the block list's `type "value": why`, a status callback's
// identifier that did not normalize as `invalid type "value": why`; any
// other record is all reason.
func TestParseDropped(t *testing.T) {
	for _, c := range []struct {
		in   string
		want c360.DroppedIdentity
	}{
		{`email "rosa@example.com": limit: user_id allows 1 per customer; merging customer 1 would combine user_id "u-100", "u-200"`,
			c360.DroppedIdentity{Type: "email", Value: "rosa@example.com", Reason: `limit: user_id allows 1 per customer; merging customer 1 would combine user_id "u-100", "u-200"`}},
		{`crm_id "a \"quoted\" id": blocked by the workspace's rules`,
			c360.DroppedIdentity{Type: "crm_id", Value: `a "quoted" id`, Reason: "blocked by the workspace's rules"}},
		{`phone "+14155550188": split: customers 3 and 4 were split apart`,
			c360.DroppedIdentity{Type: "phone", Value: "+14155550188", Reason: "split: customers 3 and 4 were split apart"}},
		{`invalid phone "12": not a valid phone number`,
			c360.DroppedIdentity{Type: "phone", Value: "12", Reason: "invalid: not a valid phone number"}},
		{`invalid identity type "Email": must start with a lowercase letter`,
			c360.DroppedIdentity{Reason: `invalid identity type "Email": must start with a lowercase letter`}},
		{`something else`, c360.DroppedIdentity{Reason: "something else"}},
		{`email "unterminated: x`, c360.DroppedIdentity{Reason: `email "unterminated: x`}},
	} {
		if got := c360.ParseDropped(c.in); got != c.want {
			t.Errorf("ParseDropped(%q) = %+v, want %+v", c.in, got, c.want)
		}
	}
}

// DroppedList answers the drop records an event was read with, empty when
// it dropped nothing, and refuses an event read without them rather than
// answer that it dropped nothing.
func TestDroppedList(t *testing.T) {
	if _, err := (&c360.Event{ID: 7}).DroppedList(); err == nil {
		t.Error("an event read without its drop records: no error, want one")
	}
	if got, err := (&c360.Event{Dropped: []*c360.DroppedIdentity{}}).DroppedList(); err != nil || got == nil || len(got) != 0 {
		t.Errorf("read, none dropped: %v, %v; want an empty list", got, err)
	}
	d := &c360.DroppedIdentity{Type: "email", Value: "a@x.io", Reason: "limit"}
	if got, err := (&c360.Event{Dropped: []*c360.DroppedIdentity{d}}).DroppedList(); err != nil || len(got) != 1 || got[0] != d {
		t.Errorf("read, one dropped: %v, %v", got, err)
	}
}

// UnmarshalExact reads one JSON value and nothing after it but white
// space, as json.Unmarshal does: a decoder alone stops after the first
// value, and a caller would have read {"a":1} of {"a":1}{"a":2} or of
// {"a":1} junk. DecodeObject, which the Segment and chatbot connectors use,
// refuses the same.
func TestUnmarshalExactRefusesTrailingData(t *testing.T) {
	for _, bad := range []string{`{"a":1}{"a":2}`, `{"a":1} junk`, `{"a":1}]`, `{"a":1} {`, "{\"a\":1}\n\"x\""} {
		var m map[string]any
		if err := c360.UnmarshalExact([]byte(bad), &m); !errors.Is(err, c360.ErrTrailingData) {
			t.Errorf("UnmarshalExact(%q) = %v, %v; want ErrTrailingData", bad, m, err)
		}
		if m, err := c360.DecodeObject([]byte(bad)); err == nil {
			t.Errorf("DecodeObject(%q) = %v, want refused", bad, m)
		}
	}
	var m map[string]any
	if err := c360.UnmarshalExact([]byte(" {\"a\":12345678901234567} \r\n\t"), &m); err != nil || m["a"] != json.Number("12345678901234567") {
		t.Errorf("UnmarshalExact of an object between white space = %v, %v; want its number's digits", m, err)
	}
}

// An event's time is believed from c360.MinOccurredAt (1900) to
// c360.MaxFuture past its receipt; outside, the receipt time is stored.
func TestOccurredAtBounds(t *testing.T) {
	received := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, c := range []struct {
		claimed  time.Time
		believed bool
	}{
		{received, true},
		{received.Add(c360.MaxFuture), true},
		{received.Add(c360.MaxFuture + time.Second), false},
		{time.Date(1900, 1, 1, 0, 0, 0, 0, time.UTC), true},
		{time.Date(1899, 12, 31, 23, 59, 59, 999999999, time.UTC), false},
		{time.Date(1970, 1, 1, 0, 0, 0, 0, time.UTC), true},
		{time.Date(0, 6, 1, 0, 0, 0, 0, time.UTC), false},
		{time.Time{}.Add(time.Hour), false},
		{time.Date(-5000, 1, 1, 0, 0, 0, 0, time.UTC), false},
	} {
		want := received
		if c.believed {
			want = c.claimed
		}
		if got := c360.OccurredAt(c.claimed, received); !got.Equal(want) {
			t.Errorf("OccurredAt(%v) = %v, want %v", c.claimed, got, want)
		}
	}
}
