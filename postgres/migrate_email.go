package postgres

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"slices"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"

	"github.com/c360dev/c360/identity"
)

// Migration 00021 is written in Go: it brings the email identities stored
// before emails were brought to one Unicode form (identity.Normalizer:
// width folding, NFC, IDNA's mapping of the domain) to that form with the
// normalizer itself, which SQL cannot reproduce (punycode, halfwidth
// katakana, UTS #46's mapping of ﬁ or ſ). See docs/identity.md#email-addresses.

// emailFormVersion is its goose version; emailFormSource the name goose
// reports it by (no such file exists: the code is here).
const (
	emailFormVersion = 21
	emailFormSource  = "00021_email_unicode_form.go"
)

// emailFormPage is how many identities a statement reads, and how many
// are rewritten in one transaction (tests shorten it).
var emailFormPage = 500

// emailFormLeftIDs caps the customer ids one log line names.
const emailFormLeftIDs = 100

// emailForm is migration 00021: normalizer returns the service's
// normalizer, log the logger of the run (both read when it runs).
type emailForm struct {
	normalizer func() identity.Normalizer
	log        func() *slog.Logger
}

// goMigrations are the migrations written in Go, for goose's provider.
func goMigrations(f emailForm) goose.ProviderOption {
	// No transaction of goose's: the migration commits a page at a time,
	// so that no lock is held on a workspace's rows for the whole run.
	// Interrupted, it is run again from the start, and rewrites what is
	// left: it only writes rows that change. Down has nothing to undo.
	m := goose.NewGoMigration(emailFormVersion, &goose.GoFunc{RunDB: f.up}, nil)
	m.Source = emailFormSource
	return goose.WithGoMigrations(m)
}

// emailFormCounts counts what the migration did with the rows it read.
type emailFormCounts struct {
	rewritten int // rows brought to the normalizer's form
	folded    int // rows deleted: another row of their customer holds their form
	collided  int // rows left: their form is another customer's, or also a left row's of another customer
	refused   int // rows left: the normalizer refuses the stored value
	events    int // events whose identities were rewritten
}

func (c *emailFormCounts) add(o emailFormCounts) {
	c.rewritten += o.rewritten
	c.folded += o.folded
	c.collided += o.collided
	c.refused += o.refused
	c.events += o.events
}

// up runs the migration on a connection of its own, a workspace at a time.
func (f emailForm) up(ctx context.Context, sqlDB *sql.DB) error {
	conn, err := sqlDB.Conn(ctx)
	if err != nil {
		return fmt.Errorf("00021: %w", err)
	}
	defer conn.Close()
	log := f.log()
	var total emailFormCounts
	err = conn.Raw(func(dc any) error {
		c := dc.(*stdlib.Conn).Conn()
		n := f.normalizer()
		var ws int64
		for {
			err := c.QueryRow(ctx, `SELECT id FROM workspaces WHERE id > $1 ORDER BY id LIMIT 1`, ws).Scan(&ws)
			if errors.Is(err, pgx.ErrNoRows) {
				return nil
			}
			if err != nil {
				return err
			}
			got, left, err := renormalizeEmails(ctx, c, n, ws)
			if err != nil {
				return fmt.Errorf("workspace %d: %w", ws, err)
			}
			total.add(got)
			if got != (emailFormCounts{}) {
				log.Info("email identities re-normalized", "workspace", ws, "rewritten", got.rewritten, "folded", got.folded,
					"events", got.events, "left_collision", got.collided, "left_refused", got.refused)
			}
			if len(left) > 0 {
				// Customer ids, never the values: the operator merges
				// these (docs/identity.md#email-addresses).
				more := len(left) - emailFormLeftIDs
				log.Warn("email identities left in their old form: one address held by several customers",
					"workspace", ws, "customers", left[:min(len(left), emailFormLeftIDs)], "more", max(more, 0))
			}
		}
	})
	if err != nil {
		return fmt.Errorf("00021 email forms: %w", err)
	}
	log.Info("email identities re-normalized, all workspaces", "rewritten", total.rewritten, "folded", total.folded, "events", total.events,
		"left_collision", total.collided, "left_refused", total.refused)
	return nil
}

// emailRename is a stored email identity and the value the normalizer
// gives it.
type emailRename struct {
	old, new string
	customer int64
	folded   bool // deleted into another row of its customer holding new
}

// renormalizeEmails brings workspace ws's email identities to n's form
// and returns what it did and the customers of the rows it left for a
// collision (with the customers holding their form). It reads the values
// that may change (non-ASCII, or holding an xn-- label: a pure-ASCII
// value without one is its own form) a page at a time through the
// identities' primary key, decides every collision on the whole
// workspace's set (values of several customers with one form are left;
// values of one customer are folded into one row), then rewrites a page
// of rows at a time, each page one transaction: the identities, the
// events of their customer that carry them (identities and drop records,
// as ingest wrote them, so that a split still moves what came through
// the address), and the customers' search text.
func renormalizeEmails(ctx context.Context, c *pgx.Conn, n identity.Normalizer, ws int64) (emailFormCounts, []int64, error) {
	var (
		cnt     emailFormCounts
		renames []emailRename
		byNew   = map[string]int{}
		after   string
	)
	for {
		var page []emailRename
		err := inWorkspaceTx(ctx, c, ws, func(tx pgx.Tx) error {
			rows, err := tx.Query(ctx, `
				SELECT value, customer_id FROM identities
				WHERE workspace_id = $1 AND type = 'email' AND value > $2
				  AND (octet_length(value) <> char_length(value) OR strpos(value, 'xn--') > 0)
				ORDER BY value LIMIT $3`, ws, after, emailFormPage)
			if err != nil {
				return err
			}
			page, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (emailRename, error) {
				var e emailRename
				return e, r.Scan(&e.old, &e.customer)
			})
			return err
		})
		if err != nil {
			return cnt, nil, fmt.Errorf("read identities: %w", err)
		}
		for _, e := range page {
			id, err := n.Normalize(identity.Identity{Type: identity.TypeEmail, Value: e.old})
			if err != nil {
				cnt.refused++
				continue
			}
			if id.Value == e.old {
				continue
			}
			e.new = id.Value
			renames = append(renames, e)
			byNew[e.new]++
		}
		if len(page) < emailFormPage {
			break
		}
		after = page[len(page)-1].old
	}
	// Stored values with one form are one address: when they all belong
	// to one customer, they are folded into one row of that form
	// (renameEmails); when they belong to several, all are left, as those
	// customers are one person only an operator's merge joins.
	owner := map[string]int64{}
	mixed := map[string]bool{}
	for _, e := range renames {
		if c, ok := owner[e.new]; !ok {
			owner[e.new] = e.customer
		} else if c != e.customer {
			mixed[e.new] = true
		}
	}
	var left []int64
	todo := renames[:0:0]
	for _, e := range renames {
		if mixed[e.new] {
			cnt.collided++
			left = append(left, e.customer)
			continue
		}
		todo = append(todo, e)
	}
	// A form's values in one batch, so that its rows are folded at once.
	slices.SortFunc(todo, func(a, b emailRename) int { return cmp.Or(cmp.Compare(a.new, b.new), cmp.Compare(a.old, b.old)) })
	for len(todo) > 0 {
		n := min(len(todo), emailFormPage)
		for n < len(todo) && todo[n].new == todo[n-1].new {
			n++
		}
		batch := todo[:n]
		todo = todo[n:]
		err := inWorkspaceTx(ctx, c, ws, func(tx pgx.Tx) error {
			done, held, custs, err := renameEmails(ctx, tx, ws, batch)
			if err != nil {
				return err
			}
			cnt.collided += held
			left = append(left, custs...)
			if len(done) == 0 {
				return nil
			}
			olds, news, custs, oldPrefixes, newPrefixes := make([]string, len(done)), make([]string, len(done)),
				make([]int64, len(done)), make([]string, len(done)), make([]string, len(done))
			for i, e := range done {
				if e.folded {
					cnt.folded++
				} else {
					cnt.rewritten++
				}
				olds[i], news[i], custs[i] = e.old, e.new, e.customer
				oldPrefixes[i] = droppedPrefix(identity.Identity{Type: identity.TypeEmail, Value: e.old})
				newPrefixes[i] = droppedPrefix(identity.Identity{Type: identity.TypeEmail, Value: e.new})
			}
			tag, err := tx.Exec(ctx, emailFormEventsSQL, ws, olds, news, custs, oldPrefixes, newPrefixes)
			if err != nil {
				return fmt.Errorf("rewrite events: %w", err)
			}
			cnt.events += int(tag.RowsAffected())
			slices.Sort(custs)
			if _, err := tx.Exec(ctx, emailFormSearchSQL, ws, slices.Compact(custs)); err != nil {
				return fmt.Errorf("rebuild search text: %w", err)
			}
			return nil
		})
		if err != nil {
			return cnt, nil, err
		}
	}
	slices.Sort(left)
	return cnt, slices.Compact(left), nil
}

// renameEmails brings the identities of batch (every value of a form in
// the batch is one customer's) to their form, and returns those it
// brought (with their customer now), how many it left, and the customers
// of the rows it left with the customers holding their form.
// A form held by a row of another customer is left. Otherwise the
// form's rows are folded into one (foldEmails): the row holding the form,
// or the oldest by first seen rewritten to it, the others deleted.
// A row inserted or moved meanwhile (another process ingesting, merging)
// fails the batch's statement: the batch is then brought a form at a
// time, a form that fails so being left too.
func renameEmails(ctx context.Context, tx pgx.Tx, ws int64, batch []emailRename) (done []emailRename, held int, left []int64, err error) {
	news := make([]string, len(batch))
	for i, e := range batch {
		news[i] = e.new
	}
	rows, err := tx.Query(ctx, `SELECT value, customer_id FROM identities
		WHERE workspace_id = $1 AND type = 'email' AND value = ANY($2::text[])`, ws, news)
	if err != nil {
		return nil, 0, nil, fmt.Errorf("read forms: %w", err)
	}
	holders := map[string]int64{}
	var (
		v    string
		cust int64
	)
	if _, err := pgx.ForEachRow(rows, []any{&v, &cust}, func() error { holders[v] = cust; return nil }); err != nil {
		return nil, 0, nil, fmt.Errorf("read forms: %w", err)
	}
	var todo []emailRename
	for _, e := range batch {
		if h, ok := holders[e.new]; ok && h != e.customer {
			held++
			left = append(left, e.customer, h)
			continue
		}
		todo = append(todo, e)
	}
	if len(todo) == 0 {
		return nil, held, left, nil
	}
	done, ok, err := foldEmails(ctx, tx, ws, todo)
	if err != nil || ok {
		return done, held, left, err
	}
	done = nil
	for len(todo) > 0 {
		n := 1
		for n < len(todo) && todo[n].new == todo[0].new {
			n++
		}
		form := todo[:n]
		todo = todo[n:]
		d, ok, err := foldEmails(ctx, tx, ws, form)
		if err != nil {
			return nil, 0, nil, err
		}
		if !ok {
			held += len(form)
			for _, e := range form {
				left = append(left, e.customer)
			}
			continue
		}
		done = append(done, d...)
	}
	return done, held, left, nil
}

// foldEmails brings the identities olds of batch (sorted by form) to their
// form under a savepoint: it deletes them and writes each form's row,
// inserted with the source and first seen of the oldest row by first seen
// and the latest last seen, or, when the customer holds the form already,
// given the earliest first seen (and its source) and the latest last seen.
// It returns the rows it brought, folded set on those deleted into a row
// of their customer. When a form's rows are no longer one customer's, or
// another customer holds the form (both meanwhile), it rolls back and
// returns false.
func foldEmails(ctx context.Context, tx pgx.Tx, ws int64, batch []emailRename) ([]emailRename, bool, error) {
	olds, news := make([]string, len(batch)), make([]string, len(batch))
	for i, e := range batch {
		olds[i], news[i] = e.old, e.new
	}
	var done []emailRename
	ok := true
	err := pgx.BeginFunc(ctx, tx, func(sp pgx.Tx) error {
		rows, err := sp.Query(ctx, emailFormFoldSQL, ws, olds, news)
		if err != nil {
			return err
		}
		var fine bool
		done, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (emailRename, error) {
			var e emailRename
			err := r.Scan(&e.old, &e.new, &e.customer, &e.folded, &fine)
			ok = ok && fine
			return e, err
		})
		if err == nil && !ok {
			err = errFoldRefused
		}
		return err
	})
	if errors.Is(err, errFoldRefused) || isUniqueViolation(err) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("rewrite identities: %w", err)
	}
	return done, true, nil
}

// errFoldRefused rolls foldEmails' savepoint back.
var errFoldRefused = errors.New("a form's rows are not one customer's")

// emailFormFoldSQL deletes the identities $2 and writes their forms $3
// (see foldEmails), returning per deleted row its value, form, customer,
// whether it was folded into another row (not the one kept) and whether
// its form was written: false when the form's rows have several
// customers, or the form is another customer's.
const emailFormFoldSQL = `
	WITH m AS (SELECT * FROM unnest($2::text[], $3::text[]) AS m(old, new)),
	d AS (
		DELETE FROM identities i USING m
		WHERE i.workspace_id = $1 AND i.type = 'email' AND i.value = m.old
		RETURNING m.old, m.new, i.customer_id, i.source, i.first_seen, i.last_seen),
	f AS (
		SELECT d.*,
			row_number() OVER (PARTITION BY new ORDER BY first_seen, old) AS n,
			min(customer_id) OVER (PARTITION BY new) = max(customer_id) OVER (PARTITION BY new) AS one,
			max(last_seen) OVER (PARTITION BY new) AS latest
		FROM d),
	w AS (
		INSERT INTO identities AS i (workspace_id, type, value, customer_id, source, first_seen, last_seen)
		SELECT $1, 'email', new, customer_id, source, first_seen, latest FROM f WHERE n = 1 AND one
		ON CONFLICT (workspace_id, type, value) DO UPDATE SET
			source = CASE WHEN excluded.first_seen < i.first_seen THEN excluded.source ELSE i.source END,
			first_seen = least(i.first_seen, excluded.first_seen),
			last_seen = greatest(i.last_seen, excluded.last_seen)
		WHERE i.customer_id = excluded.customer_id
		RETURNING i.value, i.xmax = 0 AS inserted)
	SELECT f.old, f.new, f.customer_id, NOT coalesce(w.inserted AND f.n = 1, false), w.value IS NOT NULL
	FROM f LEFT JOIN w ON w.value = f.new`

func isUniqueViolation(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "23505"
}

// inWorkspaceTx runs fn in a transaction of c scoped to workspace ws, as
// the service scopes its own: identities, events and customers are bound
// by row level security, their owner too (00006).
func inWorkspaceTx(ctx context.Context, c *pgx.Conn, ws int64, fn func(pgx.Tx) error) error {
	return pgx.BeginFunc(ctx, c, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, setWorkspaceSQL, fmt.Sprint(ws)); err != nil {
			return err
		}
		return fn(tx)
	})
}

// emailFormEventsSQL rewrites, in the events of each rewritten identity's
// customer that carry its old value, that value in identities (an event
// that carried two old values of one form, or an old value and the form,
// keeps the form once, where it came first) and the drop records that
// name it ($5, $6: droppedPrefix of the old and new
// value, as ingest and split write and read them). Events of other
// customers (one that dropped the address) keep the old form as history.
const emailFormEventsSQL = `
	WITH m AS (
		SELECT * FROM unnest($2::text[], $3::text[], $4::bigint[], $5::text[], $6::text[])
			AS m(old, new, customer_id, old_prefix, new_prefix)
	)
	UPDATE events e SET
		identities = (
			SELECT jsonb_agg(y ORDER BY n) FROM (
				SELECT DISTINCT ON (y) y, n FROM (
					SELECT coalesce(
						(SELECT jsonb_set(x, '{value}', to_jsonb(m.new)) FROM m
						 WHERE m.customer_id = e.customer_id AND x->>'type' = 'email' AND x->>'value' = m.old LIMIT 1), x) AS y, n
					FROM jsonb_array_elements(e.identities) WITH ORDINALITY AS t(x, n)) r
				ORDER BY y, n) u),
		dropped = CASE WHEN jsonb_typeof(e.dropped) = 'array' AND jsonb_array_length(e.dropped) > 0 THEN (
			SELECT jsonb_agg(coalesce(
				(SELECT m.new_prefix || substr(d, length(m.old_prefix) + 1) FROM m
				 WHERE m.customer_id = e.customer_id AND starts_with(d, m.old_prefix) LIMIT 1), d) ORDER BY n)
			FROM jsonb_array_elements_text(e.dropped) WITH ORDINALITY AS t(d, n))
			ELSE e.dropped END
	WHERE e.workspace_id = $1 AND e.customer_id = ANY($4::bigint[])
	  AND EXISTS (SELECT 1 FROM m WHERE m.customer_id = e.customer_id
	              AND e.identities @> jsonb_build_array(jsonb_build_object('type', 'email', 'value', m.old)))`

// emailFormSearchSQL rebuilds the search text of the customers $2, which
// holds their email identities, as ingest builds it.
var emailFormSearchSQL = `UPDATE customers c SET search_text = ` + searchTextSQL("c.traits", "c.id") + `
	WHERE c.workspace_id = $1 AND c.id = ANY($2::bigint[])`
