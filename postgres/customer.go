package postgres

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"

	"github.com/jackc/pgx/v5"

	"github.com/c360dev/c360"
)

var _ c360.CustomerService = (*DB)(nil)

const customerColumns = `c.id, c.workspace_id, c.traits, c.trait_meta, c.version, c.created_at, c.updated_at`

func scanCustomer(row pgx.Row, prefix ...any) (*c360.Customer, error) {
	var c c360.Customer
	var meta map[string]traitMeta
	dest := append(prefix, &c.ID, &c.WorkspaceID, &c.Traits, &meta, &c.Version, &c.CreatedAt, &c.UpdatedAt)
	if err := row.Scan(dest...); err != nil {
		return nil, err
	}
	c.TraitSources = make(map[string]c360.TraitSource, len(meta))
	for k, m := range meta {
		c.TraitSources[k] = c360.TraitSource{Name: k, Value: c.Traits[k], Source: m.Source, ObservedAt: m.At}
	}
	return &c, nil
}

// Statements that follow a merge to the survivor are written so that their
// generic plan (PostgreSQL switches a prepared statement to one after five
// runs when it looks no worse) is an index lookup too: a join of customers
// to customers can otherwise be planned as a scan of the whole workspace
// (TestMergeFollowingPlansStayIndexLookups).
const (
	findCustomerByIDSQL = customerColumns + ` FROM customers c
		WHERE c.workspace_id = $1
		  AND c.id = (SELECT coalesce(m.merged_into, m.id) FROM customers m WHERE m.workspace_id = $1 AND m.id = $2)`
	findCustomerByIdentitySQL = customerColumns + ` FROM identities i
		JOIN customers c ON c.workspace_id = i.workspace_id AND c.id = i.customer_id
		WHERE i.workspace_id = $1 AND i.type = $2 AND i.value = $3`
	customersByIDsSQL = `SELECT m.id, ` + customerColumns + ` FROM customers m
		JOIN customers c ON c.workspace_id = m.workspace_id AND c.id = coalesce(m.merged_into, m.id)
		WHERE m.workspace_id = $1 AND m.id = ANY($2)
		  AND c.id = ANY(ARRAY(SELECT coalesce(x.merged_into, x.id) FROM customers x WHERE x.workspace_id = $1 AND x.id = ANY($2)))`
)

// FindCustomerByID returns the customer with id, following a merge to its
// survivor (merges keep every merged id one hop from its survivor).
func (db *DB) FindCustomerByID(ctx context.Context, ws, id int64) (*c360.Customer, error) {
	return db.findCustomer(ctx, ws, c360.CustomerKey{ID: id})
}

// FindCustomerByIdentity returns the customer owning the identity, whose value
// is normalized as ingest normalizes it.
func (db *DB) FindCustomerByIdentity(ctx context.Context, ws int64, id c360.Identity) (*c360.Customer, error) {
	return db.findCustomer(ctx, ws, c360.CustomerKey{Identity: &id})
}

func (db *DB) findCustomer(ctx context.Context, ws int64, key c360.CustomerKey) (*c360.Customer, error) {
	sql, args, notFound, err := db.lookupCustomer(ws, key)
	if err != nil {
		return nil, err
	}
	c, err := scanCustomer(db.as(ws).QueryRow(ctx, `SELECT `+sql, args...))
	if err == pgx.ErrNoRows {
		return nil, notFound()
	} else if err != nil {
		return nil, interpretError(fmt.Errorf("find customer: %w", err))
	}
	return c, nil
}

// lookupCustomer returns the statement that finds the customer of key, from
// its columns on (customerColumns), with its arguments and what makes the
// error when it finds none (made only then: most lookups find their
// customer). An identity's value is normalized as ingest stores it.
func (db *DB) lookupCustomer(ws int64, key c360.CustomerKey) (sql string, args []any, notFound func() error, err error) {
	if key.Identity == nil {
		return findCustomerByIDSQL, []any{ws, key.ID}, func() error { return c360.Errorf(c360.ENOTFOUND, "customer %d not found", key.ID) }, nil
	}
	n, err := db.normalizeLookup(*key.Identity)
	if err != nil {
		return "", nil, nil, err
	}
	return findCustomerByIdentitySQL, []any{ws, n.Type, n.Value},
		func() error { return c360.Errorf(c360.ENOTFOUND, "no customer has %s %q", n.Type, n.Value) }, nil
}

func pageSize(first int) (int, error) {
	return first, c360.CheckFirst(first)
}

// searchCustomersSQL reads a page of the live customers whose search text
// is LIKE one of the patterns $3, after the cursor ($4, $5) if given:
// c360_search_customers (migration 00014) finds the ids of each pattern's
// page by the trigram index, which the app role's own LIKE, not leakproof
// under row-level security, cannot use; the customers are then read, under
// the policy, each by its id (a LATERAL subquery, which OFFSET 0 keeps from
// being pulled up: joined, the generic plan may hash the whole workspace's
// customers against the page's ids), and the page is the first of their
// union in the function's order. $1 workspace, $2 page size.
const searchCustomersSQL = `SELECT ` + customerColumns + `
	FROM (SELECT DISTINCT f.id FROM unnest($3::text[]) AS p(pattern)
		CROSS JOIN LATERAL c360_search_customers(p.pattern, $2, $4, $5) AS f(id)) s
	CROSS JOIN LATERAL (SELECT * FROM customers c WHERE c.workspace_id = $1 AND c.id = s.id OFFSET 0) c
	ORDER BY c.created_at DESC, c.id DESC
	LIMIT $2`

// FindCustomers returns live customers newest first, filtered by a fragment
// of name, email or phone, a phone written as people write it
// (searchPatterns).
func (db *DB) FindCustomers(ctx context.Context, ws int64, f c360.CustomerFilter) (*c360.Page[*c360.Customer], error) {
	n, err := pageSize(f.First)
	if err != nil {
		return nil, err
	}
	var after *c360.Cursor
	if f.After != "" {
		cur, err := c360.DecodeCursor(f.After, c360.ListCustomers)
		if err != nil {
			return nil, err
		}
		after = &cur
	}
	q := strings.ToLower(strings.TrimSpace(f.Query))
	if len(q) > 100 {
		return nil, c360.Errorf(c360.EINVALID, "query must be at most 100 bytes")
	}
	if q != "" && searchable(q) < minSearchRunes {
		return nil, c360.Errorf(c360.EINVALID, "query must hold at least %d letters or digits", minSearchRunes)
	}
	var sql string
	var args []any
	if q != "" {
		sql, args = searchCustomersSQL, []any{ws, n + 1, db.searchPatterns(q), nil, nil}
		if after != nil {
			args[3], args[4] = after.Time, after.ID
		}
	} else {
		args = []any{ws, n + 1}
		sql = `SELECT ` + customerColumns + ` FROM customers c WHERE c.workspace_id = $1 AND c.merged_into IS NULL`
		if after != nil {
			args = append(args, after.Time, after.ID)
			sql += ` AND (c.created_at, c.id) < ($3, $4)`
		}
		sql += ` ORDER BY c.created_at DESC, c.id DESC LIMIT $2`
	}
	qctx := ctx
	if q != "" {
		// A fragment whose trigrams are all common and that matches few
		// customers or none has its candidates rechecked one by one: the
		// whole workspace, at worst (650 ms at a million). The search is
		// bounded, so that a few such queries cannot hold the pool.
		var cancel context.CancelFunc
		qctx, cancel = context.WithTimeout(ctx, searchTimeout)
		defer cancel()
	}
	rows, err := db.as(ws).Query(qctx, sql, args...)
	if err != nil {
		return nil, searchError(ctx, qctx, err)
	}
	defer rows.Close()
	page := &c360.Page[*c360.Customer]{Items: []*c360.Customer{}, Cursors: []string{}}
	for rows.Next() {
		c, err := scanCustomer(rows)
		if err != nil {
			return nil, fmt.Errorf("scan customer: %w", err)
		}
		if !keep(page, c360.ListCustomers, n, c, c.CreatedAt, c.ID) {
			break
		}
	}
	if err := rows.Err(); err != nil {
		return nil, searchError(ctx, qctx, err)
	}
	return page, nil
}

// searchTimeout bounds a search by fragment (FindCustomers).
var searchTimeout = 2 * time.Second

// searchError is the error of a customer listing or search that failed
// with err: a search cut off by searchTimeout, not by its caller (qctx is
// the search's context, ctx the caller's), says so.
func searchError(ctx, qctx context.Context, err error) error {
	if ctx.Err() == nil && errors.Is(qctx.Err(), context.DeadlineExceeded) {
		// UNAVAILABLE, not the caller's mistake: a busy database (a lock,
		// a load) cuts a good search off too.
		return c360.Errorf(c360.EUNAVAILABLE, "the search took longer than %s: retry, or give a longer or rarer fragment, or an email address or phone number whole", searchTimeout)
	}
	return interpretError(fmt.Errorf("find customers: %w", err))
}

// minSearchRunes is the fewest letters and digits a search fragment holds.
// The trigram index finds a pattern by the trigrams of its words (runs of
// letters and digits): "%qz%" or "%---%" has none, and its search walks
// the page index until the page is full, which for a fragment that matches
// nobody is every customer of the workspace (a second at a million, the
// statement timeout at ten). Three letters or digits give a pattern at
// least one trigram, whether in one word or in several ("q.z.x" is
// served by the index like "qzx"). Every pattern of a search holds the
// letters and digits of its query (a phone number's forms hold its
// digits), so the query's count bounds them all
// (TestCustomersSearchRefusesShortFragments).
const minSearchRunes = 3

// searchable counts the letters and digits of a search fragment.
func searchable(q string) int {
	n := 0
	for _, r := range q {
		if unicode.IsLetter(r) || unicode.IsDigit(r) {
			n++
		}
	}
	return n
}

// searchPatterns are the LIKE patterns of a search for q (lowercased):
// the fragment as written and, when q is written as a phone number or a
// part of one, the forms search text may hold it in
// (Normalizer.PhoneFragment: "(415) 555-0100" is found by "4155550100",
// which "+14155550100" holds, "00 44 20 7946 0958" by "+442079460958").
func (db *DB) searchPatterns(q string) []string {
	patterns := []string{"%" + escapeLike(q) + "%"}
	if forms, ok := db.Normalizer.PhoneFragment(q); ok {
		for _, f := range forms {
			if f != q {
				patterns = append(patterns, "%"+escapeLike(f)+"%")
			}
		}
	}
	return patterns
}

func escapeLike(s string) string {
	return strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`).Replace(s)
}

// CustomersByIDs loads customers by id, following merges.
func (db *DB) CustomersByIDs(ctx context.Context, ws int64, ids []int64) (map[int64]*c360.Customer, error) {
	p := newPipeline(ws)
	out := queueCustomersByIDs(&p.batch, ws, ids)
	if err := p.send(ctx, db); err != nil {
		return nil, fmt.Errorf("load customers: %w", err)
	}
	return out, nil
}

// queueCustomersByIDs queues the read of CustomersByIDs, with nested loops
// off: its generic plan was otherwise a nested loop reading, for each of
// the n customers by id, all n survivors by "id = ANY" (n² rows read: 160
// to 185 ms for 500 ids at 20k customers, against 3 to 5 ms hashed).
func queueCustomersByIDs(b *pgx.Batch, ws int64, ids []int64) map[int64]*c360.Customer {
	out := make(map[int64]*c360.Customer, len(ids))
	noNestLoop.queue(b, customersByIDsSQL, ws, ids).Query(func(rows pgx.Rows) error {
		for rows.Next() {
			var key int64
			c, err := scanCustomer(rows, &key)
			if err != nil {
				return fmt.Errorf("scan customer: %w", err)
			}
			out[key] = c
		}
		return rows.Err()
	})
	return out
}

// IdentitiesByCustomers loads the identities of many customers in one statement.
func (db *DB) IdentitiesByCustomers(ctx context.Context, ws int64, ids []int64) (map[int64][]*c360.IdentityRecord, error) {
	p := newPipeline(ws)
	out := queueIdentities(p, ws, ids)
	if err := p.send(ctx, db); err != nil {
		return nil, err
	}
	return out, nil
}

func queueIdentities(p *pipeline, ws int64, ids []int64) map[int64][]*c360.IdentityRecord {
	out := make(map[int64][]*c360.IdentityRecord, len(ids))
	p.queue("identities", `
		SELECT i.customer_id, i.type, i.value, i.first_seen, i.last_seen, i.source
		FROM `+lookedUpCustomers+` AS p(id)
		JOIN identities i ON i.workspace_id = $1 AND i.customer_id = p.id
		ORDER BY i.customer_id, i.type, i.value`, []any{ws, p.customersArg(ids)}, func(rows pgx.Rows) error {
		r := &c360.IdentityRecord{}
		if err := rows.Scan(&r.CustomerID, &r.Type, &r.Value, &r.FirstSeen, &r.LastSeen, &r.Source); err != nil {
			return err
		}
		out[r.CustomerID] = append(out[r.CustomerID], r)
		return nil
	})
	return out
}

// ConsentsByCustomers loads the consents of many customers in one statement.
func (db *DB) ConsentsByCustomers(ctx context.Context, ws int64, ids []int64) (map[int64][]*c360.Consent, error) {
	p := newPipeline(ws)
	out := queueConsents(p, ws, ids)
	if err := p.send(ctx, db); err != nil {
		return nil, err
	}
	return out, nil
}

// queueConsents queues the consents of ids (nil: the looked-up customer).
// Each customer's rows are looked up on their own (LATERAL, fenced by
// OFFSET 0): consents is the smallest per-customer table, and in a
// database of many small tenants a generic plan, taking a workspace to
// hold the table's rows divided by its workspaces, otherwise read the
// whole workspace's consents and hashed them, for the largest tenant too
// (TestLookedUpProfilePlansUseIndexes, with small tenants beside it).
func queueConsents(p *pipeline, ws int64, ids []int64) map[int64][]*c360.Consent {
	out := make(map[int64][]*c360.Consent, len(ids))
	p.queue("consents", `
		SELECT c.customer_id, c.channel, c.status, coalesce(c.source, ''), c.updated_at
		FROM `+lookedUpCustomers+` AS p(id)
		CROSS JOIN LATERAL (SELECT customer_id, channel, status, source, updated_at FROM consents
			WHERE workspace_id = $1 AND customer_id = p.id OFFSET 0) c
		ORDER BY c.customer_id, c.channel`, []any{ws, p.customersArg(ids)}, func(rows pgx.Rows) error {
		c := &c360.Consent{}
		if err := rows.Scan(&c.CustomerID, &c.Channel, &c.Status, &c.Source, &c.UpdatedAt); err != nil {
			return err
		}
		out[c.CustomerID] = append(out[c.CustomerID], c)
		return nil
	})
	return out
}
