package postgres

import (
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
	collided  int // rows left: their form is held by another row, or is another left row's
	refused   int // rows left: the normalizer refuses the stored value
	events    int // events whose identities were rewritten
}

func (c *emailFormCounts) add(o emailFormCounts) {
	c.rewritten += o.rewritten
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
				log.Info("email identities re-normalized", "workspace", ws, "rewritten", got.rewritten,
					"events", got.events, "left_collision", got.collided, "left_refused", got.refused)
			}
			if len(left) > 0 {
				// Customer ids, never the values: the operator merges
				// these (docs/identity.md#email-addresses).
				more := len(left) - emailFormLeftIDs
				log.Warn("email identities left in their old form: one address held by two customers",
					"workspace", ws, "customers", left[:min(len(left), emailFormLeftIDs)], "more", max(more, 0))
			}
		}
	})
	if err != nil {
		return fmt.Errorf("00021 email forms: %w", err)
	}
	log.Info("email identities re-normalized, all workspaces", "rewritten", total.rewritten, "events", total.events,
		"left_collision", total.collided, "left_refused", total.refused)
	return nil
}

// emailRename is a stored email identity and the value the normalizer
// gives it.
type emailRename struct {
	old, new string
	customer int64
}

// renormalizeEmails brings workspace ws's email identities to n's form
// and returns what it did and the customers of the rows it left for a
// collision (with the customers holding their form). It reads the values
// that may change (non-ASCII, or holding an xn-- label: a pure-ASCII
// value without one is its own form) a page at a time through the
// identities' primary key, decides every collision on the whole
// workspace's set, then rewrites a page of rows at a time, each page one
// transaction: the identities, the events of their customer that carry
// them (identities and drop records, as ingest wrote them, so that a
// split still moves what came through the address), and the customers'
// search text.
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
	// Two stored values with one form: both are left, as they are two
	// customers (or two rows of one) that only an operator's merge joins.
	var left []int64
	todo := renames[:0:0]
	for _, e := range renames {
		if byNew[e.new] > 1 {
			cnt.collided++
			left = append(left, e.customer)
			continue
		}
		todo = append(todo, e)
	}
	for len(todo) > 0 {
		batch := todo[:min(len(todo), emailFormPage)]
		todo = todo[len(batch):]
		err := inWorkspaceTx(ctx, c, ws, func(tx pgx.Tx) error {
			done, held, custs, err := renameEmails(ctx, tx, ws, batch)
			if err != nil {
				return err
			}
			cnt.collided += held
			left = append(left, custs...)
			cnt.rewritten += len(done)
			if len(done) == 0 {
				return nil
			}
			olds, news, custs, oldPrefixes, newPrefixes := make([]string, len(done)), make([]string, len(done)),
				make([]int64, len(done)), make([]string, len(done)), make([]string, len(done))
			for i, e := range done {
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

// renameEmails rewrites the identities of batch whose form no row holds,
// and returns those it rewrote (with their customer now), how many it
// left, and the customers of the rows it left with the customers holding
// their form.
// A row inserted meanwhile with a form of the batch (another process
// ingesting) fails the batch's statement on the primary key: the batch is
// then rewritten a row at a time, a row that fails so being left too.
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
	var olds []string
	news = news[:0]
	for _, e := range batch {
		if h, ok := holders[e.new]; ok {
			held++
			left = append(left, e.customer, h)
			continue
		}
		olds, news = append(olds, e.old), append(news, e.new)
	}
	if len(olds) == 0 {
		return nil, held, left, nil
	}
	done, err = renameTx(ctx, tx, ws, olds, news)
	if !isUniqueViolation(err) {
		return done, held, left, err
	}
	done = nil
	for i := range olds {
		d, err := renameTx(ctx, tx, ws, olds[i:i+1], news[i:i+1])
		if isUniqueViolation(err) {
			held++
			left = append(left, batch[slices.IndexFunc(batch, func(e emailRename) bool { return e.old == olds[i] })].customer)
			continue
		}
		if err != nil {
			return nil, 0, nil, err
		}
		done = append(done, d...)
	}
	return done, held, left, nil
}

// renameTx rewrites the identities olds to news under a savepoint, rolled
// back when the statement fails.
func renameTx(ctx context.Context, tx pgx.Tx, ws int64, olds, news []string) ([]emailRename, error) {
	var done []emailRename
	err := pgx.BeginFunc(ctx, tx, func(sp pgx.Tx) error {
		rows, err := sp.Query(ctx, `
			UPDATE identities i SET value = m.new
			FROM unnest($2::text[], $3::text[]) AS m(old, new)
			WHERE i.workspace_id = $1 AND i.type = 'email' AND i.value = m.old
			RETURNING m.old, m.new, i.customer_id`, ws, olds, news)
		if err != nil {
			return err
		}
		done, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (emailRename, error) {
			var e emailRename
			return e, r.Scan(&e.old, &e.new, &e.customer)
		})
		return err
	})
	if err != nil && !isUniqueViolation(err) {
		err = fmt.Errorf("rewrite identities: %w", err)
	}
	return done, err
}

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
// customer that carry its old value, that value in identities and the
// drop records that name it ($5, $6: droppedPrefix of the old and new
// value, as ingest and split write and read them). Events of other
// customers (one that dropped the address) keep the old form as history.
const emailFormEventsSQL = `
	WITH m AS (
		SELECT * FROM unnest($2::text[], $3::text[], $4::bigint[], $5::text[], $6::text[])
			AS m(old, new, customer_id, old_prefix, new_prefix)
	)
	UPDATE events e SET
		identities = (
			SELECT jsonb_agg(coalesce(
				(SELECT jsonb_set(x, '{value}', to_jsonb(m.new)) FROM m
				 WHERE m.customer_id = e.customer_id AND x->>'type' = 'email' AND x->>'value' = m.old LIMIT 1), x) ORDER BY n)
			FROM jsonb_array_elements(e.identities) WITH ORDINALITY AS t(x, n)),
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
