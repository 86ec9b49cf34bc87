// Package scalar holds the GraphQL scalar marshalers that gqlgen binds to
// domain types. Database ids are int64 in Go and opaque strings on the wire.
// Every coercion error is a c360 BAD_USER_INPUT error, so clients get a
// specific refusal instead of an internal one.
package scalar

import (
	"bytes"
	"encoding/json"
	"io"
	"strconv"
	"time"

	"github.com/99designs/gqlgen/graphql"

	"github.com/c360dev/c360"
)

// MarshalID writes an int64 id as a GraphQL ID string.
func MarshalID(id int64) graphql.Marshaler {
	return graphql.WriterFunc(func(w io.Writer) {
		var buf [24]byte
		b := append(buf[:0], '"')
		b = strconv.AppendInt(b, id, 10)
		w.Write(append(b, '"'))
	})
}

// UnmarshalID reads a GraphQL ID (a string, or an integer literal) as an int64.
func UnmarshalID(v any) (int64, error) {
	var s string
	switch v := v.(type) {
	case string:
		s = v
	case json.Number:
		s = v.String()
	case int64:
		s = strconv.FormatInt(v, 10)
	case int:
		s = strconv.Itoa(v)
	default:
		return 0, c360.Errorf(c360.EINVALID, "invalid id: want a string")
	}
	id, err := strconv.ParseInt(s, 10, 64)
	if err != nil || id <= 0 {
		return 0, c360.Errorf(c360.EINVALID, "invalid id %q", truncate(s))
	}
	return id, nil
}

// MarshalJSON writes any JSON value.
func MarshalJSON(v map[string]any) graphql.Marshaler {
	return graphql.WriterFunc(func(w io.Writer) {
		if v == nil {
			io.WriteString(w, "{}")
			return
		}
		b, err := json.Marshal(v)
		if err != nil {
			io.WriteString(w, "null")
			return
		}
		w.Write(b)
	})
}

// MarshalJSONObject writes a JSON object that is already encoded (an
// event's properties as stored) as it is. gqlgen refuses nil for the
// non-null fields it serves before it gets here, and c360.Event's
// PropertiesJSON never gives nil.
func MarshalJSONObject(v json.RawMessage) graphql.Marshaler {
	return graphql.WriterFunc(func(w io.Writer) { w.Write(v) })
}

// UnmarshalJSONObject reads a JSON object into its encoding. gqlgen needs
// it to bind the JSON scalar to json.RawMessage; no input takes one today.
func UnmarshalJSONObject(v any) (json.RawMessage, error) {
	m, err := UnmarshalJSON(v)
	if err != nil || m == nil {
		return nil, err
	}
	return json.Marshal(m)
}

// UnmarshalJSON reads a JSON object; traits and properties are objects.
// Its numbers are stored as Segment's are (c360.StorableNumbers): one with
// an exponent or over 300 characters as a float64 reads it, and one no
// float64 holds is refused.
func UnmarshalJSON(v any) (map[string]any, error) {
	switch v := v.(type) {
	case nil:
		return nil, nil
	case map[string]any:
		if _, err := c360.StorableNumbers(v); err != nil {
			return nil, c360.Errorf(c360.EINVALID, "invalid JSON: a number no 64-bit float holds")
		}
		return v, nil
	}
	return nil, c360.Errorf(c360.EINVALID, "invalid JSON: want an object")
}

// MarshalTime writes an RFC 3339 timestamp in UTC.
func MarshalTime(t time.Time) graphql.Marshaler { return timeValue(t) }

// timeValue writes a time as an RFC 3339 string. A response is written
// into a bytes.Buffer, where the time is formatted in place: a profile
// holds dozens of times, and formatting each into a string of its own, then
// quoting it into another, made two garbage strings a time. RFC 3339 needs
// no escaping.
type timeValue time.Time

func (t timeValue) MarshalGQL(w io.Writer) {
	u := time.Time(t).UTC()
	if b, ok := w.(*bytes.Buffer); ok {
		p := append(b.AvailableBuffer(), '"')
		p = u.AppendFormat(p, time.RFC3339Nano)
		b.Write(append(p, '"'))
		return
	}
	io.WriteString(w, `"`+u.Format(time.RFC3339Nano)+`"`)
}

// UnmarshalTime reads an RFC 3339 timestamp.
func UnmarshalTime(v any) (time.Time, error) {
	s, ok := v.(string)
	if !ok {
		return time.Time{}, c360.Errorf(c360.EINVALID, "invalid time: want an RFC 3339 string")
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, c360.Errorf(c360.EINVALID, "invalid time %q: want RFC 3339, e.g. 2026-01-02T15:04:05Z", truncate(s))
	}
	return t.UTC(), nil
}

func truncate(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}

// MarshalJSONValue writes any JSON value (a trait's value, say).
func MarshalJSONValue(v any) graphql.Marshaler {
	return graphql.WriterFunc(func(w io.Writer) {
		b, err := json.Marshal(v)
		if err != nil {
			io.WriteString(w, "null")
			return
		}
		w.Write(b)
	})
}

// UnmarshalJSONValue reads any JSON value.
func UnmarshalJSONValue(v any) (any, error) { return v, nil }
