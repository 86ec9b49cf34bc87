package webhook

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strconv"
	"strings"
)

// DescribeJSONError turns err, from decoding a JSON request body, into a
// sentence safe and useful for the client, without echoing the body: for a
// value of the wrong type, the field (whole, e.g. "the body", when it is the
// document itself), what it wants and what it got, or, for a number no
// float64 holds (1e400) where a float64 or any value goes, that it is too
// large; for a syntax error, its byte offset. The field is the path the
// decoder knows: a struct field's (properties), and the member's within it
// when a decoder such as c360.DecodeObject names it (properties.a[1].n). wants names what values of some types want, for types whose
// UnmarshalJSON accepts other JSON than their Go kind suggests; it may be nil.
func DescribeJSONError(err error, whole string, wants map[reflect.Type]string) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		field := te.Field
		if field == "" {
			field = whole
		}
		if tooLarge(te) {
			return field + ": a number too large for a 64-bit float"
		}
		want, ok := wants[te.Type]
		if !ok {
			want = jsonKind(te.Type)
		}
		// Value is "number 1.5" for a number the Go type cannot hold: the literal is the body's.
		got, _, _ := strings.Cut(te.Value, " ")
		return fmt.Sprintf("%s: want %s, got %s", field, want, got)
	}
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Sprintf("invalid JSON at byte %d: %s", se.Offset, se.Error())
	}
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return "invalid JSON: unexpected end of input"
	}
	return "invalid JSON"
}

// tooLarge reports a type error for a number that is valid JSON but out of
// a float64's range (1e400, -2e999), met where a float64 goes: a float64
// field, or any value (encoding/json and c360.DecodeObject report Type
// float64 for those). Out of an integer's range it is the integer's error.
func tooLarge(te *json.UnmarshalTypeError) bool {
	lit, ok := strings.CutPrefix(te.Value, "number ")
	if !ok || te.Type == nil || te.Type.Kind() != reflect.Float64 {
		return false
	}
	_, err := strconv.ParseFloat(lit, 64)
	return errors.Is(err, strconv.ErrRange)
}

// jsonKind names the JSON value a Go type expects.
func jsonKind(t reflect.Type) string {
	if t == nil {
		return "a value"
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Map, reflect.Struct:
		return "an object"
	case reflect.Slice, reflect.Array:
		return "an array"
	}
	return "a value"
}

// StringOrNumber reads b, the JSON value of an id-like field of type t
// (a user id, a WhatsApp id, an error code), as providers send them: a
// string's text, a number's literal text (so 42 and "42" are the same id),
// and "" for null. Any other value is a *json.UnmarshalTypeError of type
// t, which the decoder completes with the field's name.
func StringOrNumber(b []byte, t reflect.Type) (string, error) {
	switch {
	case len(b) == 0 || b[0] == 'n':
		return "", nil
	case b[0] == '"':
		// The decoder has validated the literal: without escapes it is the
		// bytes between the quotes.
		if bytes.IndexByte(b, '\\') < 0 {
			return string(b[1 : len(b)-1]), nil
		}
		var s string
		err := json.Unmarshal(b, &s)
		return s, err
	case b[0] == '-' || '0' <= b[0] && b[0] <= '9':
		return string(b), nil
	}
	kind := "object"
	switch b[0] {
	case 't', 'f':
		kind = "bool"
	case '[':
		kind = "array"
	}
	return "", &json.UnmarshalTypeError{Value: kind, Type: t}
}
