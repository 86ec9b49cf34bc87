package segment

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"slices"

	"github.com/c360dev/c360"
)

// Object is a call's traits, properties or context: a JSON object, or
// absent. An object that c360.PlainObject accepts, as nearly every one a
// client sends is, is kept as its bytes (properties and context are stored
// as they are, numbers with every digit; traits are decoded by Map); any
// other is decoded by c360.DecodeObject, so a \u0000, a lone surrogate or
// a 1e400 is met as encoding/json would meet it.
//
// A value that is not an object, or holds a number no float64 holds, is
// kept as the object's error rather than returned: encoding/json stops
// decoding a call at an Unmarshaler's error, and the refusal would then
// lose the call's messageId when it comes after the object.
type Object struct {
	raw json.RawMessage
	m   map[string]any
	err error
}

var objectType = reflect.TypeFor[Object]()

// UnmarshalJSON implements json.Unmarshaler: an object or null.
func (o *Object) UnmarshalJSON(b []byte) error {
	*o = Object{}
	switch {
	case len(b) == 0 || b[0] == 'n':
	case b[0] != '{':
		kind := "number"
		switch b[0] {
		case '[':
			kind = "array"
		case 't', 'f':
			kind = "bool"
		case '"':
			kind = "string"
		}
		o.err = &json.UnmarshalTypeError{Value: kind, Type: objectType}
	case c360.PlainObject(b):
		// The decoder reuses its buffer: the bytes are copied.
		o.raw = slices.Clone(b)
	default:
		o.m, o.err = c360.DecodeObject(b)
	}
	return nil
}

// check returns why the object, the call's field named field, is refused;
// nil when it is not. A type error names field, followed by the path to
// the member refused when c360.DecodeObject named one (properties.a[1].n).
func (o *Object) check(field string) error {
	var te *json.UnmarshalTypeError
	if o.err == nil || !errors.As(o.err, &te) {
		return o.err
	}
	named := *te
	named.Field = c360.FieldPath(field, te.Field)
	return &named
}

// Map returns the object as a map, decoding its bytes if it has them
// (c360.DecodeObject: numbers as json.Number, with the digits they came
// with); nil when absent. The map is the object's: a change to it is what
// the event stores.
func (o *Object) Map() map[string]any {
	if o.raw != nil {
		m, err := c360.DecodeObject(o.raw)
		if err != nil {
			// UnmarshalJSON kept bytes the decoder had validated, and
			// PlainObject let no number through that DecodeObject refuses.
			panic("segment: decode a kept object: " + err.Error())
		}
		o.raw, o.m = nil, m
	}
	return o.m
}

// absent reports an object that was not sent, or sent as null.
func (o *Object) absent() bool { return o.raw == nil && o.m == nil }

// empty reports an object that is absent or has no members.
func (o *Object) empty() bool {
	if o.raw != nil {
		return len(bytes.TrimSpace(objectMembers(o.raw))) == 0
	}
	return len(o.m) == 0
}

// set makes the object m.
func (o *Object) set(m map[string]any) { *o = Object{m: m} }
