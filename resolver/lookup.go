package resolver

import (
	"context"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/identity"
)

// A lookup by identity (customerByIdentity, customerContext(identity:))
// or a search (customers(query:)) answers whether a value belongs to a
// customer. For a key that reads personal data masked, that is an oracle:
// the answer to "+14155550123?" says whether a guess at a masked number is
// right, whatever fields the caller selects (`{ id }` alone is enough). So
// such a key's lookups are bounded per key (the limit the server puts in
// the operation's context, C360_RATE_LOOKUP_*), one token per lookup, an
// alias counting as one, and each is audited: a customer.read of the
// customer found naming the lookup, and for those that found nobody one
// entry per response with their count (docs/security.md).

type lookupLimitKey struct{}

// WithLookupLimit returns ctx with allow, the limit of lookups by identity
// and searches made by keys that read personal data masked: it takes a
// token for the principal's key, or answers ERATELIMITED. The server sets
// it on every operation of such a key; without it lookups are not limited.
func WithLookupLimit(ctx context.Context, allow func(*c360.Principal) error) context.Context {
	return context.WithValue(ctx, lookupLimitKey{}, allow)
}

// maskedLookup starts a lookup through the root field `field` by an
// identity of type typ. For a caller that reads personal data masked, it
// takes a token of the lookup limit (ERATELIMITED when there is none) and
// returns the function that notes the lookup's outcome for the audit log:
// the customer found, or 0 when it found nobody. Call that only for a
// lookup that ran: one refused as invalid found nothing to note. For any
// other caller it returns nil and costs nothing: such a key reads what it
// finds unmasked anyway, and that read is audited as pii.read.
func maskedLookup(ctx context.Context, p *c360.Principal, field, typ string) (func(customer int64), error) {
	if p == nil || p.SeesPII() {
		return nil, nil
	}
	if allow, _ := ctx.Value(lookupLimitKey{}).(func(*c360.Principal) error); allow != nil {
		if err := allow(p); err != nil {
			return nil, err
		}
	}
	// The type is the caller's: recorded only when it is one an identity
	// may have, so the log holds no text the caller made up.
	if !identity.ValidType(typ) {
		typ = "invalid"
	}
	name := "lookup." + field + "(" + typ + ")"
	return func(customer int64) {
		col := collectorFrom(ctx)
		if col == nil {
			return
		}
		if customer == 0 {
			col.miss(name)
			return
		}
		col.add(c360.AuditCustomerRead, customer, name)
	}, nil
}
