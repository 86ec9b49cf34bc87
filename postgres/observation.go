package postgres

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/c360dev/c360"
)

var _ c360.ObservationService = (*DB)(nil)

const observationColumns = `o.id, o.workspace_id, o.customer_id, o.text, o.source, o.confidence, o.recorded_by,
	o.recorded_by_role, o.verified, coalesce(o.verified_by, ''), o.verified_at, o.created_at, o.expires_at`

func scanObservation(row pgx.Row, prefix ...any) (*c360.Observation, error) {
	var o c360.Observation
	dest := append(prefix, &o.ID, &o.WorkspaceID, &o.CustomerID, &o.Text, &o.Source, &o.Confidence, &o.RecordedBy,
		&o.RecordedByRole, &o.Verified, &o.VerifiedBy, &o.VerifiedAt, &o.CreatedAt, &o.ExpiresAt)
	if err := row.Scan(dest...); err != nil {
		return nil, err
	}
	return &o, nil
}

// RecordObservation stores an observation on the customer and appends an
// "observation" change to its feed, in one transaction that locks the
// customer row, so the version stays consecutive like every other change.
//
// An input with a MessageID its recorder used before is a retry: the
// stored observation is returned, without a change row, whatever the rest
// of the input says. It is looked up first, before the input is validated
// or its customer locked, so a retry after the observation's expiresAt
// passed, or naming a customer that no longer exists (or another one), is
// answered as the first call was. A retry that finds nothing, because the
// first call has not committed yet, goes on to the insert, which does
// nothing once the first commits: it waits for it (on the customer's row
// lock, or on the unique index when it names another customer), then finds
// the stored row.
func (db *DB) RecordObservation(ctx context.Context, ws int64, in c360.ObservationInput) (*c360.Observation, error) {
	now := db.Now()
	if in.MessageID != "" {
		if err := in.CheckMessageID(); err != nil {
			return nil, err
		}
		o, err := scanObservation(db.as(ws).QueryRow(ctx, `
			SELECT `+observationColumns+` FROM observations o
			WHERE o.workspace_id = $1 AND o.recorded_by = $2 AND o.message_id = $3`, ws, in.RecordedBy, in.MessageID))
		if err == nil {
			return o, nil
		} else if err != pgx.ErrNoRows {
			return nil, interpretError(fmt.Errorf("find recorded observation: %w", err))
		}
	}
	if err := in.Validate(now); err != nil {
		return nil, err
	}
	var o *c360.Observation
	var repeat bool
	err := db.inTx(ctx, ws, func(tx pgx.Tx) error {
		cust, err := lockSurvivor(ctx, tx, ws, in.CustomerID)
		if err != nil {
			return err
		}
		o, err = scanObservation(tx.QueryRow(ctx, `
			INSERT INTO observations AS o (workspace_id, customer_id, text, source, confidence, recorded_by, recorded_by_role, created_at, expires_at, message_id)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, nullif($10, ''))
			ON CONFLICT (workspace_id, recorded_by, message_id) DO NOTHING
			RETURNING `+observationColumns,
			ws, cust.id, in.Text, in.Source, in.Confidence, in.RecordedBy, in.RecordedByRole, now, in.ExpiresAt, in.MessageID))
		if err == pgx.ErrNoRows {
			repeat = true
			o, err = scanObservation(tx.QueryRow(ctx, `
				SELECT `+observationColumns+` FROM observations o
				WHERE o.workspace_id = $1 AND o.recorded_by = $2 AND o.message_id = $3`, ws, in.RecordedBy, in.MessageID))
			if err != nil {
				return interpretError(fmt.Errorf("find recorded observation: %w", err))
			}
			return nil
		}
		if err != nil {
			return interpretError(fmt.Errorf("insert observation: %w", err))
		}
		return commitCustomer(ctx, tx, ws, cust, c360.ChangeObservation, observationDiff(o, "recorded"), now, 0, nil)
	})
	if err != nil {
		return nil, err
	}
	if !repeat {
		db.committed(ws, []int64{o.CustomerID})
	}
	return o, nil
}

// VerifyObservation sets or clears an observation's verified flag and
// appends an "observation" change to its customer's feed. An observation
// already in that state is returned as it is: no change, no new version,
// no wake-up, and verifiedBy and verifiedAt keep the first verification's.
func (db *DB) VerifyObservation(ctx context.Context, ws, id int64, verified bool, by string) (*c360.Observation, error) {
	now := db.Now()
	var o *c360.Observation
	unchanged := false
	err := db.inTx(ctx, ws, func(tx pgx.Tx) error {
		var verifiedBy *string
		var verifiedAt *time.Time
		if verified {
			verifiedBy, verifiedAt = &by, &now
		}
		// The customer row is locked before the observation changes. A merge
		// that moved the observation between the two reads shows as no row
		// updated: read its owner again.
		for attempt := 0; attempt < 5; attempt++ {
			var owner int64
			err := tx.QueryRow(ctx, `SELECT customer_id FROM observations WHERE workspace_id = $1 AND id = $2`, ws, id).Scan(&owner)
			if err == pgx.ErrNoRows {
				return c360.Errorf(c360.ENOTFOUND, "observation %d not found", id)
			} else if err != nil {
				return interpretError(fmt.Errorf("find observation: %w", err))
			}
			cust, err := lockSurvivor(ctx, tx, ws, owner)
			if err != nil {
				return err
			}
			// Every change of the flag is made under this lock: the state
			// read here stands until the commit.
			o, err = scanObservation(tx.QueryRow(ctx, `
				SELECT `+observationColumns+` FROM observations o
				WHERE o.workspace_id = $1 AND o.id = $2 AND o.customer_id = $3`, ws, id, cust.id))
			if err == pgx.ErrNoRows {
				continue
			} else if err != nil {
				return interpretError(fmt.Errorf("find observation: %w", err))
			}
			if o.Verified == verified {
				unchanged = true
				return nil
			}
			o, err = scanObservation(tx.QueryRow(ctx, `
				UPDATE observations AS o SET verified = $4, verified_by = $5, verified_at = $6
				WHERE o.workspace_id = $1 AND o.id = $2 AND o.customer_id = $3
				RETURNING `+observationColumns, ws, id, cust.id, verified, verifiedBy, verifiedAt))
			if err != nil {
				return interpretError(fmt.Errorf("verify observation: %w", err))
			}
			action := "verified"
			if !verified {
				action = "unverified"
			}
			return commitCustomer(ctx, tx, ws, cust, c360.ChangeObservation, observationDiff(o, action), now, 0, nil)
		}
		return c360.Errorf(c360.ECONFLICT, "observation %d kept moving; retry", id)
	})
	if err != nil {
		return nil, err
	}
	if !unchanged {
		db.committed(ws, []int64{o.CustomerID})
	}
	return o, nil
}

// observationDiff is the change-feed diff of an observation: what happened
// and its provenance, never its text, which subscribers read through the
// API with the masking their key calls for.
func observationDiff(o *c360.Observation, action string) map[string]any {
	d := map[string]any{"id": strconv.FormatInt(o.ID, 10), "action": action, "source": o.Source,
		"verified": o.Verified, "recordedBy": o.RecordedBy}
	if o.Confidence != nil {
		d["confidence"] = *o.Confidence
	}
	return map[string]any{"observation": d}
}

// lockSurvivor locks the row of the customer id resolves to (its survivor
// if it was merged away) for a change of that customer.
func lockSurvivor(ctx context.Context, tx pgx.Tx, ws, id int64) (*customerRow, error) {
	for attempt := 0; attempt < 5; attempt++ {
		ids, err := survivorsOf(ctx, tx, ws, id)
		if err != nil {
			return nil, err
		}
		locked, stale, err := lockCustomers(ctx, tx, ws, ids)
		if err != nil {
			return nil, err
		}
		if !stale {
			return locked[ids[0]], nil
		}
		// Merged away between the two statements: follow it again.
	}
	return nil, c360.Errorf(c360.ECONFLICT, "customer %d kept changing; retry", id)
}

// ObservationsByCustomers lists, per customer, the first `first`
// observations that have not expired at now, verified first, then newest
// first: each customer's read stops at its limit, on
// observations_customer_idx, whatever the number it holds.
func (db *DB) ObservationsByCustomers(ctx context.Context, ws int64, ids []int64, now time.Time, first int) (map[int64][]*c360.Observation, error) {
	if err := c360.CheckFirst(first); err != nil {
		return nil, err
	}
	rows, err := db.as(ws).Query(ctx, `
		SELECT `+observationColumns+` FROM unnest($2::bigint[]) AS c(id)
		CROSS JOIN LATERAL (
			SELECT * FROM observations o
			WHERE o.workspace_id = $1 AND o.customer_id = c.id AND (o.expires_at IS NULL OR o.expires_at > $3)
			ORDER BY o.verified DESC, o.created_at DESC, o.id DESC
			LIMIT $4) o
		ORDER BY o.customer_id, o.verified DESC, o.created_at DESC, o.id DESC`, ws, ids, now, first)
	if err != nil {
		return nil, interpretError(fmt.Errorf("load observations: %w", err))
	}
	defer rows.Close()
	out := make(map[int64][]*c360.Observation, len(ids))
	for rows.Next() {
		o, err := scanObservation(rows)
		if err != nil {
			return nil, fmt.Errorf("scan observation: %w", err)
		}
		out[o.CustomerID] = append(out[o.CustomerID], o)
	}
	return out, interpretError(rows.Err())
}
