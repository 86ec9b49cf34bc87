package webhook_test

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/connectors/webhook"
)

// free stands for a type that decodes its own JSON (a map of traits): its
// keys are its own business.
type free map[string]any

func (f *free) UnmarshalJSON(b []byte) error {
	var m map[string]any
	err := json.Unmarshal(b, &m)
	*f = m
	return err
}

type inner struct {
	Text string `json:"text"`
}

type Base struct {
	Kind string `json:"kind"`
}

type outer struct {
	Base
	ID     string   `json:"id"`
	Items  []inner  `json:"items"`
	One    *inner   `json:"one"`
	Free   free     `json:"free"`
	Tags   []string `json:"tags"`
	Hidden string   `json:"-"`
	Plain  string
	secret string
}

// A struct field's key given twice, or in another case, is refused at any
// depth, naming where, since encoding/json would keep the last copy or take
// the other case for the field; other keys, a type's own JSON, and data
// the decoder refuses pass.
func TestCheckKeys(t *testing.T) {
	_ = outer{}.secret
	for _, tc := range []struct{ name, body, err string }{
		{"plain", `{"id":"a","items":[{"text":"x"},{"text":"y"}],"one":{"text":"z"},"kind":"k","Plain":"p"}`, ""},
		{"id twice", `{"id":"a","id":"b"}`, `the body gives the key "id" more than once`},
		{"id twice, same value", `{"id":"a","id":"a"}`, `the body gives the key "id" more than once`},
		{"id in another case", `{"id":"a","ID":"b"}`, `the body's key "ID" is not "id": keys are case-sensitive`},
		{"only in another case", `{"Id":"b"}`, `the body's key "Id" is not "id": keys are case-sensitive`},
		// encoding/json folds the Kelvin sign to k, too.
		{"folded like encoding/json", `{"\u212Aind":"b"}`, "the body's key \"\u212Aind\" is not \"kind\""},
		{"a field's name in another case", `{"plain":"p"}`, `the body's key "plain" is not "Plain"`},
		{"embedded field twice", `{"kind":"a","kind":"b"}`, `the body gives the key "kind" more than once`},
		{"in an element", `{"items":[{"text":"x"},{"text":"x","Text":"y"}]}`, `items[1]'s key "Text" is not "text"`},
		{"twice in an element", `{"items":[{"text":"x","text":"y"}]}`, `items[0] gives the key "text" more than once`},
		{"through a pointer", `{"one":{"text":"x","text":"y"}}`, `one gives the key "text" more than once`},
		{"unknown keys, repeated", `{"x":1,"x":2,"X":{"id":1,"id":2},"id":"a"}`, ""},
		{"own JSON", `{"free":{"id":1,"id":2,"ID":3}}`, ""},
		{"hidden field", `{"Hidden":1,"-":2,"-":3}`, ""},
		{"unexported field", `{"secret":1,"secret":2}`, ""},
		{"null parts", `{"items":null,"one":null,"items":null}`, `the body gives the key "items" more than once`},
		// Left to the decoder, which refuses them in its own words.
		{"not JSON", `{"id":"a","items":[{"text"`, ""},
		{"wrong kinds", `{"items":{"text":1},"id":"a","id":"b"}`, ""},
		{"not an object", `[{"id":1,"id":2}]`, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := webhook.CheckKeys([]byte(tc.body), reflect.TypeFor[outer](), "the body")
			if tc.err == "" {
				if err != nil {
					t.Fatalf("err = %v, want none", err)
				}
				return
			}
			if c360.ErrorCode(err) != c360.EINVALID || !strings.Contains(c360.ErrorMessage(err), tc.err) {
				t.Fatalf("err = %v, want EINVALID containing %q", err, tc.err)
			}
		})
	}
}
