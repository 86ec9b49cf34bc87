package c360_test

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"
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
		{`{"u":"\u0041"}`, false},
		{`{"nul":"a\u0000b"}`, false},
		{`{"lone":"\ud800"}`, false},
		{`{"\u0041":1}`, false},
		{`{"odd":"\\\u0041"}`, false},
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

// unicodeEscape finds a \u escape in JSON text: a backslash that an odd
// run of them leaves unescaped, then u. Outside strings valid JSON has no
// backslash.
var unicodeEscape = regexp.MustCompile(`(^|[^\\])(\\\\)*\\u`)

// FuzzPlainObject holds PlainObject to its definition, found another way:
// an object of valid UTF-8, without a \u escape (by pattern) and without a
// number with an exponent (by the decoder's own numbers).
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
		want := object && utf8.Valid(b) && !unicodeEscape.Match(b) && !hasExponent(v)
		if got := c360.PlainObject(b); got != want {
			t.Fatalf("PlainObject(%q) = %v, want %v", b, got, want)
		}
	})
}

func hasExponent(v any) bool {
	switch v := v.(type) {
	case json.Number:
		return strings.ContainsAny(string(v), "eE")
	case map[string]any:
		for _, x := range v {
			if hasExponent(x) {
				return true
			}
		}
	case []any:
		for _, x := range v {
			if hasExponent(x) {
				return true
			}
		}
	}
	return false
}
