package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/postgres"
)

// deadletter runs `deadletter list` and `deadletter replay`: an operator
// with shell access reads and replays a workspace's dead letters without
// minting an admin key for the GraphQL API (docs/operations.md).
func (m *Main) deadletter(ctx context.Context, args []string) error {
	if len(args) == 0 || (args[0] != "list" && args[0] != "replay") {
		return usageError("usage: c360 deadletter list|replay --workspace SLUG ...")
	}
	cmd := args[0]
	fs := newFlagSet("deadletter "+cmd, m.Stderr)
	slug := fs.String("workspace", "", "workspace slug (required)")
	asJSON := fs.Bool("json", false, "print JSON")
	var (
		id      *string
		pending *bool
		limit   *int
		after   *string
	)
	if cmd == "replay" {
		id = fs.String("id", "", "the dead letter's id, as deadletter list prints it (required)")
	} else {
		pending = fs.Bool("pending", false, "only dead letters not yet replayed")
		limit = fs.Int("limit", 20, fmt.Sprintf("how many, newest first (1 to %d)", c360.MaxPage))
		after = fs.String("after", "", "the next page: the cursor a previous list printed")
	}
	if err := m.parse(fs, args[1:]); err != nil {
		return err
	}
	if *slug == "" {
		return usageError("--workspace is required")
	}
	var letter int64
	if cmd == "replay" {
		n, err := strconv.ParseInt(*id, 10, 64)
		if err != nil || n < 1 {
			return usageError(fmt.Sprintf("--id: want a dead letter's id (a positive integer), got %q", truncate(*id)))
		}
		letter = n
	} else if c360.CheckFirst(*limit) != nil {
		return usageError(fmt.Sprintf("--limit must be between 1 and %d, got %d: page further with --after", c360.MaxPage, *limit))
	} else if *after != "" {
		// Checked before the database is opened, naming the flag.
		if _, err := c360.DecodeCursor(*after, c360.ListDeadLetters); err != nil {
			return usageError(fmt.Sprintf("--after: %s: give the cursor a previous deadletter list printed", c360.ErrorMessage(err)))
		}
	}
	db, w, err := m.openWorkspace(ctx, *slug)
	if err != nil {
		return err
	}
	defer db.Close()
	if cmd == "replay" {
		// The replayed event's changes reach the subscribers of every
		// `c360 serve` replica by a notification sent before the command
		// exits, as a server's own commits do (a server's hub would find
		// them only at its next periodic resync, or never with it off).
		notifier := &postgres.Notifier{DB: db, Origin: postgres.NewOrigin(),
			Logger: slog.New(slog.NewJSONHandler(m.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))}
		db.OnCommit = notifier.Add
		d, replayed, err := db.ReplayDeadLetter(ctx, w.ID, letter)
		// Sent whatever the answer: a replay may store its event and still
		// fail (CONFLICT: the letter was deleted during its replay). With
		// nothing committed there is nothing to send.
		if !notifier.Flush(ctx) {
			fmt.Fprintln(m.Stderr, "warning: the servers were not notified of the replayed event: their subscribers get it at their next resync (C360_RESYNC_INTERVAL)")
		}
		if err != nil {
			return err
		}
		// Recorded as the GraphQL mutation records it, with the command
		// line as the actor. A letter replayed already is no change:
		// nothing is recorded.
		if replayed {
			e := c360.NewAuditEntry(nil, w.ID, c360.AuditDeadLetterReplay, time.Now())
			e.Detail = map[string]any{"deadLetterId": d.ID, "replayedEventId": d.ReplayedEventID}
			m.recordAudit(ctx, db, e, "the dead letter was replayed")
		}
		if *asJSON {
			out := deadLetterToJSON(d)
			out.AlreadyReplayed = !replayed
			return json.NewEncoder(m.Stdout).Encode(out)
		}
		if !replayed {
			fmt.Fprintf(m.Stdout, "dead letter %d of %s already replayed at %s: event %d\n", d.ID, w.Slug, timeOrDash(d.ReplayedAt), d.ReplayedEventID)
			return nil
		}
		fmt.Fprintf(m.Stdout, "dead letter %d of %s replayed: event %d\n", d.ID, w.Slug, d.ReplayedEventID)
		return nil
	}
	page, err := db.DeadLetters(ctx, w.ID, c360.DeadLetterFilter{PageArgs: c360.PageArgs{First: *limit, After: *after}, Pending: *pending})
	if err != nil {
		return err
	}
	if *asJSON {
		// Each letter carries its cursor: --after the last one's is the
		// next page (an empty list once there is none).
		out := make([]deadLetterJSON, len(page.Items))
		for i, d := range page.Items {
			out[i] = deadLetterToJSON(d)
			out[i].Cursor = page.Cursors[i]
		}
		return json.NewEncoder(m.Stdout).Encode(out)
	}
	tw := tabwriter.NewWriter(m.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSOURCE\tKEY\tTYPE\tATTEMPTS\tLAST FAILED\tREPLAYED\tERROR")
	for _, d := range page.Items {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", d.ID, d.Source, truncate(d.DedupeKey), d.EventType, d.Attempts,
			d.LastFailedAt.UTC().Format(time.RFC3339), timeOrDash(d.ReplayedAt), truncate(d.Error))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if page.HasNext {
		fmt.Fprintf(m.Stdout, "more: --after %s\n", page.Cursors[len(page.Cursors)-1])
	}
	return nil
}

// deadLetterJSON is a dead letter as `deadletter list --json` prints it:
// the event itself stays in the database (it holds what the provider sent).
type deadLetterJSON struct {
	ID              int64      `json:"id"`
	Source          string     `json:"source"`
	DedupeKey       string     `json:"dedupeKey"`
	EventType       string     `json:"eventType"`
	Error           string     `json:"error"`
	Attempts        int        `json:"attempts"`
	FirstFailedAt   time.Time  `json:"firstFailedAt"`
	LastFailedAt    time.Time  `json:"lastFailedAt"`
	ReplayedAt      *time.Time `json:"replayedAt"`
	ReplayedEventID int64      `json:"replayedEventId,omitempty"`
	// Cursor, in `deadletter list --json` only, is the letter's place in
	// the list: --after it lists the letters after it.
	Cursor string `json:"cursor,omitempty"`
	// AlreadyReplayed, in `deadletter replay --json` only, says the letter
	// had been replayed before (or by a replay at the same time): this
	// one changed nothing and recorded nothing.
	AlreadyReplayed bool `json:"alreadyReplayed,omitempty"`
}

func deadLetterToJSON(d *c360.DeadLetter) deadLetterJSON {
	return deadLetterJSON{ID: d.ID, Source: d.Source, DedupeKey: d.DedupeKey, EventType: d.EventType, Error: d.Error,
		Attempts: d.Attempts, FirstFailedAt: d.FirstFailedAt, LastFailedAt: d.LastFailedAt, ReplayedAt: d.ReplayedAt,
		ReplayedEventID: d.ReplayedEventID}
}
