package webhook_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/c360dev/c360/connectors/webhook"
)

// flexible stands for a type whose UnmarshalJSON accepts more than its Go
// kind says.
type flexible string

func TestDescribeJSONError(t *testing.T) {
	type doc struct {
		Name  string            `json:"name"`
		Count int               `json:"count"`
		Score float64           `json:"score"`
		Tags  []string          `json:"tags"`
		Meta  map[string]string `json:"meta"`
		On    bool              `json:"on"`
		Flex  flexible          `json:"flex"`
		Any   map[string]any    `json:"any"`
	}
	unmarshal := func(body string) error { return json.Unmarshal([]byte(body), &doc{}) }
	decode := func(body string) error { return json.NewDecoder(strings.NewReader(body)).Decode(&doc{}) }
	wants := map[reflect.Type]string{reflect.TypeFor[flexible](): "a string or a number"}
	for _, tc := range []struct {
		name  string
		err   error
		wants map[reflect.Type]string
		want  string
	}{
		{"type error in a field", unmarshal(`{"name": 7}`), nil, "name: want a string, got number"},
		{"type error in an object field", unmarshal(`{"meta": []}`), nil, "meta: want an object, got array"},
		{"type error in an array field", unmarshal(`{"tags": {}}`), nil, "tags: want an array, got object"},
		{"type error in a bool field", unmarshal(`{"on": "yes"}`), nil, "on: want true or false, got string"},
		{"type error in a float field", unmarshal(`{"score": "high"}`), nil, "score: want a number, got string"},
		{"type error without a field", unmarshal(`["name"]`), nil, "the body: want an object, got array"},
		{"number literal not echoed", unmarshal(`{"count": 123456789012345678901234567890}`), nil, "count: want an integer, got number"},
		{"fraction for an integer", unmarshal(`{"count": 1.5}`), nil, "count: want an integer, got number"},
		{"too large for an integer", unmarshal(`{"count": 1e400}`), nil, "count: want an integer, got number"},
		{"too large for a float", unmarshal(`{"score": 1e400}`), nil, "score: a number too large for a 64-bit float"},
		{"too large negative", unmarshal(`{"score": -1e400}`), nil, "score: a number too large for a 64-bit float"},
		{"too large in an object", unmarshal(`{"any": {"n": [1, 2e999]}}`), nil, "any: a number too large for a 64-bit float"},
		{"too large, with its path", &json.UnmarshalTypeError{Value: "number 1e400", Type: reflect.TypeFor[float64](), Field: "properties.a[1].n"},
			nil, "properties.a[1].n: a number too large for a 64-bit float"},
		{"too large, the document itself", &json.UnmarshalTypeError{Value: "number 1e400", Type: reflect.TypeFor[float64]()},
			nil, "the body: a number too large for a 64-bit float"},
		{"type named by wants", unmarshal(`{"flex": true}`), wants, "flex: want a string or a number, got bool"},
		{"type not in wants", unmarshal(`{"name": true}`), wants, "name: want a string, got bool"},
		{"wrapped type error", fmt.Errorf("parse: %w", unmarshal(`{"name": 7}`)), nil, "name: want a string, got number"},
		{"syntax error", unmarshal(`{"name" "x"}`), nil, "invalid JSON at byte 9: invalid character '\"' after object key"},
		{"truncated, whole body read", unmarshal(`{"name": "x"`), nil, "invalid JSON at byte 12: unexpected end of JSON input"},
		{"truncated, streamed", decode(`{"name": "x"`), nil, "invalid JSON: unexpected end of input"},
		{"empty, streamed", decode(``), nil, "invalid JSON: unexpected end of input"},
		{"other error", errors.New("connection reset"), nil, "invalid JSON"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := webhook.DescribeJSONError(tc.err, "the body", tc.wants); got != tc.want {
				t.Errorf("DescribeJSONError(%v) = %q, want %q", tc.err, got, tc.want)
			}
		})
	}
}

// TestStringOrNumber: an id-like field reads a string's text (escapes
// decoded), a number's literal and null as "", and refuses any other
// value with a type error of the field's type, which DescribeJSONError
// then words.
func TestStringOrNumber(t *testing.T) {
	type id string
	typ := reflect.TypeFor[id]()
	for _, c := range []struct {
		in, want, refused string
	}{
		{`"u-42"`, "u-42", ""},
		{`"a\u00e9\"b"`, `aé"b`, ""},
		{`""`, "", ""},
		{`42`, "42", ""},
		{`-16505551297`, "-16505551297", ""},
		{`1.5e3`, "1.5e3", ""},
		{`null`, "", ""},
		{`true`, "", "bool"},
		{`[1]`, "", "array"},
		{`{"a":1}`, "", "object"},
	} {
		got, err := webhook.StringOrNumber([]byte(c.in), typ)
		var te *json.UnmarshalTypeError
		switch {
		case c.refused == "" && (err != nil || got != c.want):
			t.Errorf("StringOrNumber(%s) = %q, %v; want %q", c.in, got, err, c.want)
		case c.refused != "" && (!errors.As(err, &te) || te.Value != c.refused || te.Type != typ):
			t.Errorf("StringOrNumber(%s) = %q, %v; want a type error of %s, got %s", c.in, got, err, typ, c.refused)
		}
	}
}
