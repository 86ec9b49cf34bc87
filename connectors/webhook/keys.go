package webhook

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strconv"
	"strings"

	"github.com/c360dev/c360"
)

// CheckKeys reads data, a JSON document about to be decoded by
// encoding/json into a value of type t, and refuses what encoding/json
// would take silently in an object it decodes into a struct, at any depth
// (in a struct's fields, and in the elements of its slices): a field's key
// given twice, which encoding/json takes the last copy of, and a field's
// key in another case ("SESSIONID" or "Text" for "sessionId" or "text"),
// which encoding/json takes for the field. A signed body would otherwise
// be stored as something other than what a reader of its first or exact
// keys sees. The refusal is an EINVALID error naming where the key is
// (whole for the document itself, such as "the body"; turns[1] within
// it), never a value. Other keys are ignored, repeated or not, as
// encoding/json ignores them, and so is what a type with its own
// UnmarshalJSON reads (a map of traits). data that is not valid JSON, or
// whose values are not of t's kinds, passes: the decoder refuses it in its
// own words.
func CheckKeys(data []byte, t reflect.Type, whole string) error {
	c := keyChecker{dec: json.NewDecoder(bytes.NewReader(data)), whole: whole, fields: map[reflect.Type]map[string]reflect.Type{}}
	err := c.value(t, "")
	if errors.Is(err, errNotChecked) {
		return nil
	}
	return err
}

// errNotChecked stops a check at data the decoder will refuse.
var errNotChecked = errors.New("not valid JSON for the type")

type keyChecker struct {
	dec    *json.Decoder
	whole  string
	fields map[reflect.Type]map[string]reflect.Type // a struct's JSON keys
}

var unmarshalerType = reflect.TypeFor[json.Unmarshaler]()

// value checks the next value of the document, to be decoded into a t at
// path.
func (c *keyChecker) value(t reflect.Type, path string) error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	compound := t.Kind() == reflect.Struct || t.Kind() == reflect.Slice || t.Kind() == reflect.Array
	if !compound || reflect.PointerTo(t).Implements(unmarshalerType) {
		var skip json.RawMessage
		if c.dec.Decode(&skip) != nil {
			return errNotChecked
		}
		return nil
	}
	tok, err := c.dec.Token()
	if err != nil {
		return errNotChecked
	}
	d, ok := tok.(json.Delim)
	switch {
	case !ok:
		return nil // null, or a scalar the decoder refuses
	case d == '{' && t.Kind() == reflect.Struct:
		return c.object(t, path)
	case d == '[' && t.Kind() != reflect.Struct:
		for i := 0; c.dec.More(); i++ {
			if err := c.value(t.Elem(), path+"["+strconv.Itoa(i)+"]"); err != nil {
				return err
			}
		}
		if _, err := c.dec.Token(); err != nil {
			return errNotChecked
		}
		return nil
	}
	return errNotChecked // an object for a slice, an array for a struct
}

// object checks the keys of an object, its opening brace read, to be
// decoded into a struct of type t at path.
func (c *keyChecker) object(t reflect.Type, path string) error {
	fields := c.fieldsOf(t)
	seen := make(map[string]bool, len(fields))
	for c.dec.More() {
		tok, err := c.dec.Token()
		if err != nil {
			return errNotChecked
		}
		key, _ := tok.(string) // a key is always a string
		ft, ok := fields[key]
		if !ok {
			for name := range fields {
				if strings.EqualFold(key, name) {
					return c360.Errorf(c360.EINVALID, "%s's key %q is not %q: keys are case-sensitive", c.name(path), key, name)
				}
			}
			var skip json.RawMessage
			if c.dec.Decode(&skip) != nil {
				return errNotChecked
			}
			continue
		}
		if seen[key] {
			return c360.Errorf(c360.EINVALID, "%s gives the key %q more than once", c.name(path), key)
		}
		seen[key] = true
		inner := key
		if path != "" {
			inner = path + "." + key
		}
		if err := c.value(ft, inner); err != nil {
			return err
		}
	}
	if _, err := c.dec.Token(); err != nil {
		return errNotChecked
	}
	return nil
}

// name is how a refusal names the object at path.
func (c *keyChecker) name(path string) string {
	if path == "" {
		return c.whole
	}
	return path
}

// fieldsOf returns the JSON keys of struct type t's exported fields, and
// their types, as encoding/json names them (the json tag's name, or the
// field's; "-" is none), an untagged embedded struct's fields as t's own
// (where two of one name conflict, encoding/json's rules are not
// followed: the payloads checked have none).
func (c *keyChecker) fieldsOf(t reflect.Type) map[string]reflect.Type {
	if f, ok := c.fields[t]; ok {
		return f
	}
	f := make(map[string]reflect.Type, t.NumField())
	addFields(f, t, 0)
	c.fields[t] = f
	return f
}

func addFields(f map[string]reflect.Type, t reflect.Type, depth int) {
	for i := 0; i < t.NumField(); i++ {
		sf := t.Field(i)
		name, _, _ := strings.Cut(sf.Tag.Get("json"), ",")
		if name == "-" {
			continue
		}
		if ft := sf.Type; sf.Anonymous && name == "" && depth < 8 {
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				addFields(f, ft, depth+1)
				continue
			}
		}
		if !sf.IsExported() {
			continue
		}
		if name == "" {
			name = sf.Name
		}
		if _, ok := f[name]; !ok {
			f[name] = sf.Type
		}
	}
}
