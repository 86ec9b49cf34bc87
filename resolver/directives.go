package resolver

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strings"

	"github.com/99designs/gqlgen/graphql"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/graph"
	"github.com/c360dev/c360/graph/model"
	"github.com/c360dev/c360/pii"
)

// Directives returns the implementations of the schema's directives
// (schema/security.graphqls): @hasRole, @pii and @audit. They are the one
// place roles, masking and action audit are enforced, so every transport
// that executes GraphQL (POST, GET, WebSocket, SSE) gets the same checks.
func (r *Resolver) Directives() graph.DirectiveRoot {
	return graph.DirectiveRoot{HasRole: r.hasRole, Pii: r.pii, Audit: r.audit}
}

// hasRole refuses the field unless the caller's role is one of roles. On a
// customer's data field it also notes the read for the audit log when the
// caller is an assistant.
func (r *Resolver) hasRole(ctx context.Context, obj any, next graphql.Resolver, roles []c360.Role) (any, error) {
	p := c360.PrincipalFromContext(ctx)
	// The field is named only for a refusal: a customer-360 query passes
	// this check some thirty times, and the name costs an allocation.
	if p == nil || !slices.Contains(roles, p.Role) {
		return nil, CheckRole(p, fieldName(ctx), roles)
	}
	if c, ok := obj.(*c360.Customer); ok && p.Role == c360.RoleAssistant {
		if col := collectorFrom(ctx); col != nil {
			col.add(c360.AuditCustomerRead, c.ID, graphql.GetFieldContext(ctx).Field.Name)
		}
	}
	return next(ctx)
}

// CheckRole refuses p unless its role is one of roles, the roles field
// (named Type.field) admits: @hasRole's check, which the server also runs
// on a mutation's whole selection before the mutation runs.
func CheckRole(p *c360.Principal, field string, roles []c360.Role) error {
	if p == nil {
		return c360.Errorf(c360.EUNAUTHENTICATED, "an API key is required")
	}
	if !slices.Contains(roles, p.Role) {
		return c360.Errorf(c360.EFORBIDDEN, "%s needs %s; this key's role is %s", field, roleList(roles), p.Role)
	}
	return nil
}

// fieldName names the field being resolved as Type.field.
func fieldName(ctx context.Context) string {
	fc := graphql.GetFieldContext(ctx)
	if fc == nil {
		return "this field"
	}
	return fc.Object + "." + fc.Field.Name
}

// roleList writes roles as "an admin or agent key".
func roleList(roles []c360.Role) string {
	names := make([]string, len(roles))
	for i, r := range roles {
		names[i] = string(r)
	}
	article := "a"
	if len(names) > 0 && strings.ContainsRune("aeiou", rune(names[0][0])) {
		article = "an"
	}
	if len(names) <= 1 {
		return article + " " + strings.Join(names, "") + " key"
	}
	return article + " " + strings.Join(names[:len(names)-1], ", ") + " or " + names[len(names)-1] + " key"
}

// pii masks personal data for callers that may not see it, and notes
// unmasked personal data for the audit log.
func (r *Resolver) pii(ctx context.Context, obj any, next graphql.Resolver, kind model.PiiKind) (any, error) {
	res, err := next(ctx)
	if err != nil || res == nil {
		return res, err
	}
	p := c360.PrincipalFromContext(ctx)
	if p == nil {
		return nil, c360.Errorf(c360.EUNAUTHENTICATED, "an API key is required")
	}
	sees := p.SeesPII()
	var (
		masked any
		found  []string
	)
	switch kind {
	case model.PiiKindIdentityValue:
		s, _ := res.(string)
		typ, part := "", "identity."
		switch rec := obj.(type) {
		case *c360.IdentityRecord:
			typ = rec.Type
		case *c360.DroppedIdentity:
			// An identifier an event dropped (Event.dropped), masked as
			// the change feed's diff masks it (pii.Diff's dropped).
			typ, part = rec.Type, "dropped."
		}
		m, k := pii.Identity(typ, s)
		if k == "" {
			return res, nil
		}
		masked, found = m, []string{part + identityField(typ, k)}
	case model.PiiKindJSON:
		field := graphql.GetFieldContext(ctx).Field.Name
		m, _ := res.(map[string]any)
		raw, encoded := res.(json.RawMessage)
		if encoded {
			// An object as stored is decoded only when it may hold
			// personal data; most hold none and pass on untouched.
			if !pii.MayHold(raw) {
				return res, nil
			}
			// Numbers stay as written: a float64 would round a large
			// integer, and refuse one past its range, that the caller
			// reads whole when nothing is masked.
			if err := c360.UnmarshalExact(raw, &m); err != nil {
				return nil, fmt.Errorf("pii directive: decode %s: %w", field, err)
			}
		}
		var paths []string
		if sees {
			paths = pii.Find(m)
		} else {
			masked, paths = pii.JSON(m)
			if encoded && len(paths) > 0 {
				b, err := json.Marshal(masked)
				if err != nil {
					return nil, fmt.Errorf("pii directive: encode %s: %w", field, err)
				}
				masked = json.RawMessage(b)
			}
		}
		for _, f := range paths {
			found = append(found, field+"."+f)
		}
	case model.PiiKindDiff:
		m, _ := res.(map[string]any)
		var paths []string
		masked, paths = pii.Diff(m, !sees)
		for _, f := range paths {
			found = append(found, "diff."+f)
		}
	case model.PiiKindTraitValue:
		name := ""
		if ts, ok := obj.(*c360.TraitSource); ok {
			name = ts.Name
		}
		var paths []string
		masked, paths = pii.Value(name, res)
		// The audit log names the trait by its masked name: a name may
		// hold an address (TraitSource.name is masked as free text).
		name, _ = pii.Key(name)
		for _, f := range paths {
			found = append(found, strings.TrimSuffix("traitSources."+name+"."+f, "."))
		}
	case model.PiiKindText:
		var text string
		ptr := false
		switch v := res.(type) {
		case string:
			text = v
		case *string:
			// A nullable field's value (Event.name, Observation.source);
			// a null holds nothing.
			if v == nil {
				return res, nil
			}
			text, ptr = *v, true
		}
		read := pii.Text
		if _, ok := obj.(*c360.TraitSource); ok {
			// A trait's name is read as the key it is in Customer.traits
			// (a number alone is an id or a time there, not a phone).
			read = pii.KeyText
		}
		m, kinds := read(text, !sees)
		if len(kinds) == 0 {
			// Most texts hold nothing: passed on as they came, without
			// boxing a copy (an event's name is read 20 times per
			// customer-360 query).
			return res, nil
		}
		if masked = m; ptr {
			// A copy of its own: taking m's address would move m to the
			// heap for every text, those passed on above included.
			mp := m
			masked = &mp
		}
		for _, k := range kinds {
			found = append(found, graphql.GetFieldContext(ctx).Field.Name+"("+k+")")
		}
	case model.PiiKindProviderID:
		// A WhatsApp id (wamid.) encodes the customer's number; a Twilio
		// SID holds nothing of them and passes on unaudited. The field is
		// nullable (Message.providerId, a *string: null holds nothing) or
		// not (DeadLetter.dedupeKey, a string).
		var v string
		switch x := res.(type) {
		case *string:
			if x == nil {
				return res, nil
			}
			v = *x
		case string:
			v = x
		}
		m, k := pii.ProviderID(v)
		if k == "" {
			return res, nil
		}
		if masked = m; res != nil {
			if _, ptr := res.(*string); ptr {
				masked = &m
			}
		}
		found = []string{graphql.GetFieldContext(ctx).Field.Name}
	default:
		return nil, fmt.Errorf("pii directive: unknown kind %q", kind)
	}
	if len(found) == 0 {
		return res, nil
	}
	if !sees {
		return masked, nil
	}
	if col := collectorFrom(ctx); col != nil {
		col.add(c360.AuditPIIRead, customerOf(ctx, obj), found...)
	}
	return res, nil
}

// identityField names an identity's personal data in the audit log: its
// type, or the kind its value held (by its shape, or inside it) for a type
// that says nothing.
func identityField(typ string, k pii.Kind) string {
	switch {
	case typ == "":
		return string(k)
	case pii.IdentityKind(typ) != "":
		return typ
	}
	return typ + "(" + string(k) + ")"
}

// customerOf returns the id of the customer whose data obj is part of: obj
// itself when it names a customer, else the nearest customer above it in the
// response. 0 when there is none.
//
// A merge ledger entry names two customers (a split's survivorId is the
// original, its mergedId the new customer) and is listed under both: what
// is read of it is the data of the customer it was read through, the
// nearest above it (customer(id:), customerContext), so that a customer's
// audit log shows the reads made through it. An entry read through none
// is its survivor's.
func customerOf(ctx context.Context, obj any) int64 {
	if id := customerIDOf(obj); id != 0 {
		return id
	}
	for fc := graphql.GetFieldContext(ctx); fc != nil; fc = fc.Parent {
		if id := customerIDOf(fc.Result); id != 0 {
			return id
		}
	}
	if m, ok := obj.(*c360.MergeRecord); ok && m != nil {
		return m.SurvivorID
	}
	return 0
}

// customerIDOf returns the customer id a domain value belongs to, or 0.
func customerIDOf(v any) int64 {
	switch v := v.(type) {
	case nil:
		return 0
	case *c360.Customer:
		if v != nil {
			return v.ID
		}
	case **c360.Customer:
		if v != nil && *v != nil {
			return (*v).ID
		}
	case *c360.IdentityRecord:
		if v != nil {
			return v.CustomerID
		}
	case *c360.Event:
		if v != nil {
			return v.CustomerID
		}
	case *c360.Message:
		if v != nil {
			return v.CustomerID
		}
	case *c360.MergeRecord:
		// Two customers' (customerOf): the one read through decides.
		return 0
	default:
		// Other carriers of a customer (a subscription's change) name it
		// in a CustomerID field.
		rv := reflect.ValueOf(v)
		if rv.Kind() == reflect.Pointer && !rv.IsNil() && rv.Elem().Kind() == reflect.Struct {
			if f := rv.Elem().FieldByName("CustomerID"); f.IsValid() && f.Kind() == reflect.Int64 {
				return f.Int()
			}
		}
	}
	return 0
}
