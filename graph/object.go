package graph

import (
	"io"

	"github.com/99designs/gqlgen/graphql"
)

// gqlgen writes every object it marshals through graphql.FieldSet's
// MarshalGQL, which makes a map of the names written so far and a pointer
// to each field (about 7% of a customer-360 query's allocations, with the
// map's hashing on top). `make generate` makes each generated object
// marshaller return marshalObject's result instead of the field set itself.
// It writes the same JSON: the object's fields in order, under their
// response names, each name once.

// object is an object's fields and their values, ready to write.
type object struct {
	fields []graphql.CollectedField
	values []graphql.Marshaler
}

// marshalObject returns what writes out, whose fields are fields. The field
// set's values are final by now: the generated code calls it after
// Dispatch.
func marshalObject(fields []graphql.CollectedField, out *graphql.FieldSet) graphql.Marshaler {
	return &object{fields: fields, values: out.Values}
}

func (o *object) MarshalGQL(w io.Writer) {
	var seen map[string]struct{} // for a large selection only
	if len(o.fields) > maxScan {
		seen = make(map[string]struct{}, len(o.fields))
	}
	io.WriteString(w, "{")
	for i := range o.fields {
		name := o.fields[i].Alias
		if seen != nil {
			if _, ok := seen[name]; ok {
				continue
			}
			seen[name] = struct{}{}
		} else if o.written(name, i) {
			continue
		}
		if i > 0 {
			io.WriteString(w, ",")
		}
		// A response name is a GraphQL name ([_A-Za-z][_0-9A-Za-z]*): it
		// needs no escaping.
		io.WriteString(w, `"`)
		io.WriteString(w, name)
		io.WriteString(w, `":`)
		o.values[i].MarshalGQL(w)
	}
	io.WriteString(w, "}")
}

// maxScan is the most fields whose names are checked by a scan of the
// fields before: past it, a map keeps a selection of many aliases linear.
const maxScan = 32

// written reports whether a field before i has the response name name.
// Collected fields of one selection have distinct names, so this is a short
// scan that finds nothing.
func (o *object) written(name string, i int) bool {
	for j := range i {
		if o.fields[j].Alias == name {
			return true
		}
	}
	return false
}
