package segment

import (
	"bytes"
	"encoding/json"
	"reflect"
	"slices"

	"github.com/c360dev/c360"
)

// Object is a call's properties or context: a JSON object, or absent. An
// object that c360.PlainObject accepts, as nearly every one a client sends
// is, is kept as its bytes and stored as they are, integers with every
// digit; any other is decoded into a map as encoding/json decodes any
// JSON, so a \u0000, a lone surrogate or a 1e400 is met as it always was.
type Object struct {
	raw json.RawMessage
	m   map[string]any
}

var objectType = reflect.TypeFor[Object]()

// UnmarshalJSON implements json.Unmarshaler: an object or null.
func (o *Object) UnmarshalJSON(b []byte) error {
	*o = Object{}
	switch {
	case len(b) == 0 || b[0] == 'n':
		return nil
	case b[0] != '{':
		kind := "string"
		switch b[0] {
		case '[':
			kind = "array"
		case 't', 'f':
			kind = "bool"
		case '"':
		default:
			kind = "number"
		}
		// The decoder adds the field name to an *UnmarshalTypeError.
		return &json.UnmarshalTypeError{Value: kind, Type: objectType}
	case c360.PlainObject(b):
		// The decoder reuses its buffer: the bytes are copied.
		o.raw = slices.Clone(b)
		return nil
	}
	return json.Unmarshal(b, &o.m)
}

// Map returns the object as a map, decoding its bytes if it has them (with
// numbers as json.Number, so that they are stored with the digits they
// came with); nil when absent. The map is the object's: a change to it is
// what the event stores.
func (o *Object) Map() map[string]any {
	if o.raw != nil {
		dec := json.NewDecoder(bytes.NewReader(o.raw))
		dec.UseNumber()
		if err := dec.Decode(&o.m); err != nil {
			// UnmarshalJSON kept bytes the decoder had validated as an object.
			panic("segment: decode a kept object: " + err.Error())
		}
		o.raw = nil
	}
	return o.m
}

// set makes the object m.
func (o *Object) set(m map[string]any) { *o = Object{m: m} }
