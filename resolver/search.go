package resolver

import (
	"context"
	"strings"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/identity"
)

// findCustomers is customers(query:); given says whether a query was given
// (a blank one included). A caller who reads personal data masked (an
// assistant without the pii scope) searches by a whole email address or
// phone number only: matched by fragment, which customers it finds would
// tell it a masked value a character at a time ("4155550100" finds Jane
// and "4155550101" does not), and it may confirm an address it has, never
// learn one (docs/security.md). A blank query, which would find every
// customer, is refused it; without a query it lists customers, as every
// reader does.
func (r *Resolver) findCustomers(ctx context.Context, ws int64, f c360.CustomerFilter, given bool) (*c360.Page[*c360.Customer], error) {
	q := strings.TrimSpace(f.Query)
	p, _ := principal(ctx)
	if q == "" && !given || p == nil || p.SeesPII() {
		return r.CustomerService.FindCustomers(ctx, ws, f)
	}
	if q == "" {
		return nil, c360.Errorf(c360.EINVALID, "without the pii scope, customers(query:) takes a whole email address or phone number, and the query is blank")
	}
	// The same refusals as a search by fragment.
	if err := c360.CheckFirst(f.First); err != nil {
		return nil, err
	}
	id := c360.Identity{Type: identity.TypePhone, Value: q}
	if strings.Contains(q, "@") {
		id.Type = identity.TypeEmail
	}
	page := &c360.Page[*c360.Customer]{Items: []*c360.Customer{}, Cursors: []string{}}
	if f.After != "" {
		if _, err := c360.DecodeCursor(f.After, c360.ListCustomers); err != nil {
			return nil, err
		}
		return page, nil // the one match was on the first page
	}
	done, err := maskedLookup(ctx, p, "customers", id.Type)
	if err != nil {
		return nil, err
	}
	c, err := r.CustomerService.FindCustomerByIdentity(ctx, ws, id)
	switch code := c360.ErrorCode(err); {
	case err == nil:
		page.Items = append(page.Items, c)
		page.Cursors = append(page.Cursors, c360.Cursor{List: c360.ListCustomers, Time: c.CreatedAt, ID: c.ID}.Encode())
		done(c.ID)
	case code == c360.ENOTFOUND:
		done(0)
	case code == c360.EINVALID:
		return nil, c360.Errorf(c360.EFORBIDDEN, "without the pii scope, customers(query:) takes a whole email address or phone number, not a name or a fragment")
	default:
		return nil, err
	}
	return page, nil
}
