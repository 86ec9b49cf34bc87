package postgres

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"slices"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"

	"github.com/c360dev/c360"
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
		if _, err := c.Exec(ctx, emailFormTableSQL); err != nil {
			return fmt.Errorf("create email_forms: %w", err)
		}
		// The connection goes back to database/sql's pool: the table
		// is dropped with the run (and by the next run, when this drop
		// fails).
		defer c.Exec(context.WithoutCancel(ctx), `DROP TABLE IF EXISTS pg_temp.email_forms`)
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
			got, left, custs, err := renormalizeEmails(ctx, c, n, ws)
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
				log.Warn("email identities left in their old form: one address held by several customers",
					"workspace", ws, "customers", left, "more", custs-len(left))
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
	folded   bool  // deleted into another row of its customer holding new
	holder   int64 // left: the other customer holding new
}

// renormalizeEmails brings workspace ws's email identities to n's form
// and returns what it did, the first emailFormLeftIDs customers of the
// rows it left for a collision (with the customers holding their form)
// and how many such customers there are. It reads the values that may
// change (non-ASCII, or holding an xn-- label: a pure-ASCII value without
// one is its own form) a page at a time through the identities' primary
// key and writes each with its form to the session's table email_forms
// (emailFormTableSQL), so that the workspace's list of changes is held by
// the database, not in memory; it decides every collision on the whole
// workspace's set there (values of several customers with one form are
// left; values of one customer are folded into one row), then rewrites a
// page of rows at a time, in order of form, each page one transaction:
// the identities, the events of their customer that carry them
// (identities and drop records, as ingest wrote them, so that a split
// still moves what came through the address), and the customers' search
// text.
func renormalizeEmails(ctx context.Context, c *pgx.Conn, n identity.Normalizer, ws int64) (emailFormCounts, []int64, int, error) {
	var cnt emailFormCounts
	if _, err := c.Exec(ctx, `TRUNCATE pg_temp.email_forms`); err != nil {
		return cnt, nil, 0, fmt.Errorf("clear email_forms: %w", err)
	}
	var after string
	for {
		var read int
		err := inWorkspaceTx(ctx, c, ws, func(tx pgx.Tx) error {
			rows, err := tx.Query(ctx, `
				SELECT value, customer_id FROM identities
				WHERE workspace_id = $1 AND type = 'email' AND value > $2
				  AND (octet_length(value) <> char_length(value) OR strpos(value, 'xn--') > 0)
				ORDER BY value LIMIT $3`, ws, after, emailFormPage)
			if err != nil {
				return err
			}
			var (
				olds, news []string
				custs      []int64
				v          string
				cust       int64
			)
			if _, err := pgx.ForEachRow(rows, []any{&v, &cust}, func() error {
				read++
				after = v
				id, err := n.Normalize(identity.Identity{Type: identity.TypeEmail, Value: v})
				if err != nil {
					cnt.refused++
					return nil
				}
				if id.Value != v {
					olds, news, custs = append(olds, v), append(news, id.Value), append(custs, cust)
				}
				return nil
			}); err != nil {
				return err
			}
			_, err = tx.Exec(ctx, `INSERT INTO pg_temp.email_forms (old, new, customer_id)
				SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[])`, olds, news, custs)
			return err
		})
		if err != nil {
			return cnt, nil, 0, fmt.Errorf("read identities: %w", err)
		}
		if read < emailFormPage {
			break
		}
	}
	// Stored values with one form are one address: when they all belong
	// to one customer, they are folded into one row of that form
	// (renameEmails); when they belong to several, all are left, as those
	// customers are one person only an operator's merge joins.
	if _, err := c.Exec(ctx, `UPDATE pg_temp.email_forms SET left_over = true WHERE new IN (
		SELECT new FROM pg_temp.email_forms GROUP BY new HAVING min(customer_id) <> max(customer_id))`); err != nil {
		return cnt, nil, 0, fmt.Errorf("decide collisions: %w", err)
	}
	var afterNew, afterOld string
	for {
		// A page in order of form, completed with the rest of its last
		// form's values, so that a form's rows are folded at once.
		rows, err := c.Query(ctx, `SELECT old, new, customer_id FROM pg_temp.email_forms
			WHERE NOT left_over AND (new, old) > ($1, $2) ORDER BY new, old LIMIT $3`, afterNew, afterOld, emailFormPage)
		if err != nil {
			return cnt, nil, 0, fmt.Errorf("read email_forms: %w", err)
		}
		batch, err := pgx.CollectRows(rows, scanEmailRename)
		if err != nil {
			return cnt, nil, 0, fmt.Errorf("read email_forms: %w", err)
		}
		if len(batch) == 0 {
			break
		}
		last := batch[len(batch)-1]
		if len(batch) == emailFormPage {
			rows, err := c.Query(ctx, `SELECT old, new, customer_id FROM pg_temp.email_forms
				WHERE NOT left_over AND new = $1 AND old > $2 ORDER BY old`, last.new, last.old)
			if err != nil {
				return cnt, nil, 0, fmt.Errorf("read email_forms: %w", err)
			}
			rest, err := pgx.CollectRows(rows, scanEmailRename)
			if err != nil {
				return cnt, nil, 0, fmt.Errorf("read email_forms: %w", err)
			}
			batch = append(batch, rest...)
		}
		afterNew, afterOld = batch[len(batch)-1].new, batch[len(batch)-1].old
		err = inWorkspaceTx(ctx, c, ws, func(tx pgx.Tx) error {
			done, left, err := renameEmails(ctx, tx, ws, batch)
			if err != nil {
				return err
			}
			if len(left) > 0 {
				olds, holders := make([]string, len(left)), make([]int64, len(left))
				for i, e := range left {
					olds[i], holders[i] = e.old, e.holder
				}
				if _, err := tx.Exec(ctx, `UPDATE pg_temp.email_forms f SET left_over = true, holder = nullif(m.holder, 0)
					FROM unnest($1::text[], $2::bigint[]) AS m(old, holder) WHERE f.old = m.old`, olds, holders); err != nil {
					return fmt.Errorf("record collisions: %w", err)
				}
			}
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
			return cnt, nil, 0, err
		}
	}
	var (
		left  []int64
		custs int
	)
	if err := c.QueryRow(ctx, emailFormLeftSQL, emailFormLeftIDs).Scan(&cnt.collided, &left, &custs); err != nil {
		return cnt, nil, 0, fmt.Errorf("read collisions: %w", err)
	}
	return cnt, left, custs, nil
}

func scanEmailRename(r pgx.CollectableRow) (emailRename, error) {
	var e emailRename
	return e, r.Scan(&e.old, &e.new, &e.customer)
}

// emailFormTableSQL creates the session's table of one workspace's
// changes: each stored value that changes (old), its form (new) and
// customer; left_over set on a value left for a collision, holder the
// customer holding its form when it was left for that. A temporary table
// is the session's alone and bound by no row level security.
const emailFormTableSQL = `
	DROP TABLE IF EXISTS pg_temp.email_forms;
	CREATE TEMPORARY TABLE email_forms (
		old         text PRIMARY KEY,
		new         text NOT NULL,
		customer_id bigint NOT NULL,
		left_over   boolean NOT NULL DEFAULT false,
		holder      bigint
	);
	CREATE INDEX ON pg_temp.email_forms (new, old)`

// emailFormLeftSQL counts the rows left for a collision, and lists the
// first $1 customers of those rows and of the rows holding their forms,
// with how many such customers there are.
const emailFormLeftSQL = `
	SELECT (SELECT count(*) FROM pg_temp.email_forms WHERE left_over),
		coalesce(array_agg(c ORDER BY c) FILTER (WHERE n <= $1), '{}'), count(*)
	FROM (SELECT c, row_number() OVER (ORDER BY c) AS n FROM (
		SELECT customer_id FROM pg_temp.email_forms WHERE left_over
		UNION SELECT holder FROM pg_temp.email_forms WHERE holder IS NOT NULL) AS x(c)) AS y`

// renameEmails brings the identities of batch (every value of a form in
// the batch is one customer's) to their form, and returns those it
// brought (with their customer now) and those it left (holder set to the
// customer holding their form, when known).
// A form held by a row of another customer is left. Otherwise the
// form's rows are folded into one (foldEmails): the row holding the form,
// or the oldest by first seen rewritten to it, the others deleted.
// A row inserted or moved meanwhile (another process ingesting, merging)
// fails the batch's statement: the batch is then brought a form at a
// time, a form that fails so being left too.
func renameEmails(ctx context.Context, tx pgx.Tx, ws int64, batch []emailRename) (done, left []emailRename, err error) {
	news := make([]string, len(batch))
	for i, e := range batch {
		news[i] = e.new
	}
	rows, err := tx.Query(ctx, `SELECT value, customer_id FROM identities
		WHERE workspace_id = $1 AND type = 'email' AND value = ANY($2::text[])`, ws, news)
	if err != nil {
		return nil, nil, fmt.Errorf("read forms: %w", err)
	}
	holders := map[string]int64{}
	var (
		v    string
		cust int64
	)
	if _, err := pgx.ForEachRow(rows, []any{&v, &cust}, func() error { holders[v] = cust; return nil }); err != nil {
		return nil, nil, fmt.Errorf("read forms: %w", err)
	}
	var todo []emailRename
	for _, e := range batch {
		if h, ok := holders[e.new]; ok && h != e.customer {
			e.holder = h
			left = append(left, e)
			continue
		}
		todo = append(todo, e)
	}
	if len(todo) == 0 {
		return nil, left, nil
	}
	done, ok, err := foldEmails(ctx, tx, ws, todo)
	if err != nil || ok {
		return done, left, err
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
			return nil, nil, err
		}
		if !ok {
			left = append(left, form...)
			continue
		}
		done = append(done, d...)
	}
	return done, left, nil
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
	if errors.Is(err, errFoldRefused) || c360.ErrorCode(interpretError(err)) == c360.ECONFLICT {
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
