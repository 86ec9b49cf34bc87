package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/postgres"
	"github.com/jackc/pgx/v5"
)

// hasKey reports whether m holds k (a notification names a workspace's
// customers, or with a nil list the whole workspace).
func hasKey[V any](m map[int64]V, k int64) bool {
	_, ok := m[k]
	return ok
}

// listenChanges returns a connection listening on the change feed's
// channel (postgres.ChangesChannel), closed when the test ends.
func listenChanges(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	ctx := context.Background()
	listener, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { listener.Close(ctx) })
	if _, err := listener.Exec(ctx, "LISTEN "+postgres.ChangesChannel); err != nil {
		t.Fatal(err)
	}
	return listener
}

// notified waits up to 5 s for a notification on listener's channel that
// names customers of workspace ws, passing over others (another test's
// commits, should any share the database).
func notified(listener *pgx.Conn, ws int64) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for {
		note, err := listener.WaitForNotification(ctx)
		if err != nil {
			return fmt.Errorf("no change notification naming workspace %d: %w", ws, err)
		}
		if n, err := postgres.DecodeNotification(note.Payload); err == nil && hasKey(n.Customers, ws) {
			return nil
		}
	}
}

// deadLettered creates a workspace (slug from prefix) whose block list
// holds phone, and ingests a track from phone under key, kept as a dead
// letter: no usable identity. It returns the slug, a store on the test's
// database (closed when the test ends), the workspace and the letter's id.
// The phone stays blocked: a replay fails until the test unblocks it.
func deadLettered(t *testing.T, c *cli, prefix, phone, key string) (string, *postgres.DB, *c360.Workspace, int64) {
	t.Helper()
	slug := uniqueSlug(prefix)
	var cr creds
	decodeOne(t, c.mustRun("workspace", "create", "--slug", slug, "--json"), &cr)
	ctx := context.Background()
	db, err := postgres.Open(ctx, c.env["DATABASE_URL"])
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	w, err := db.FindWorkspaceBySlug(ctx, slug)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.UpdateIdentityRules(ctx, w.ID, c360.IdentityRules{DefaultLimit: 5, Blocked: []string{phone}}); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	_, err = db.Ingest(c360.WithInvalidAsDeadLetters(ctx), w.ID, []*c360.Event{{Type: c360.EventTrack, Name: "Order Completed",
		Identities: []c360.Identity{{Type: "phone", Value: phone}}, Source: "cli-test", DedupeKey: key,
		OccurredAt: now, ReceivedAt: now}})
	var kept *c360.DeadLetteredError
	if !errors.As(err, &kept) || len(kept.IDs) != 1 {
		t.Fatalf("ingest: %v, want a dead letter", err)
	}
	return slug, db, w, kept.IDs[0]
}

// An operator lists a workspace's dead letters and replays one from the
// command line: a replay before the cause is fixed fails as it would over
// GraphQL (exit 1, the reason), one after it stores the event, and each
// replay is in the audit log with the command line as its actor.
func TestDeadLetterCommands(t *testing.T) {
	c := newCLI(t)
	ctx := context.Background()
	slug, db, w, letter := deadLettered(t, c, "dl", "+14155550172", "dl-1")
	id := strconv.FormatInt(letter, 10)

	var listed []struct {
		ID         int64
		DedupeKey  string
		Attempts   int
		ReplayedAt *time.Time
	}
	if err := json.Unmarshal([]byte(c.mustRun("deadletter", "list", "--workspace", slug, "--pending", "--json")), &listed); err != nil {
		t.Fatal(err)
	}
	if len(listed) != 1 || listed[0].ID != letter || listed[0].DedupeKey != "dl-1" || listed[0].ReplayedAt != nil {
		t.Fatalf("deadletter list = %+v, want the one pending letter", listed)
	}
	if out := c.mustRun("deadletter", "list", "--workspace", slug); !strings.Contains(out, "dl-1") || !strings.Contains(out, "cli-test") {
		t.Errorf("deadletter list (table) = %q, want the letter's key and source", out)
	}

	// Before the fix: refused, with the reason, and counted.
	if _, _, err := c.run("deadletter", "replay", "--workspace", slug, "--id", id); err == nil || exitCode(err) != 1 ||
		!strings.Contains(c360.ErrorMessageOrText(err), "no usable identity") {
		t.Errorf("replay before the fix: %v (exit %d), want the refusal", err, exitCode(err))
	}
	if _, err := db.UpdateIdentityRules(ctx, w.ID, c360.IdentityRules{DefaultLimit: 5}); err != nil {
		t.Fatal(err)
	}
	var replayed struct {
		ID              int64
		Attempts        int
		ReplayedAt      *time.Time
		ReplayedEventID int64
	}
	// Servers hear of the replayed event's changes from the command's
	// notification, as of their own commits.
	listener := listenChanges(t, c.env["DATABASE_URL"])
	decodeOne(t, c.mustRun("deadletter", "replay", "--workspace", slug, "--id", id, "--json"), &replayed)
	if err := notified(listener, w.ID); err != nil {
		t.Errorf("after the replay: %v", err)
	}
	if replayed.ReplayedAt == nil || replayed.ReplayedEventID == 0 || replayed.Attempts != 2 {
		t.Errorf("replay after the fix = %+v, want replayed after 2 attempts", replayed)
	}
	// Replayed again: nothing happens, it says so, and nothing is recorded.
	if out := c.mustRun("deadletter", "replay", "--workspace", slug, "--id", id); !strings.Contains(out, "already replayed") {
		t.Errorf("a second replay = %q, want it said to be replayed already", out)
	}
	var again struct {
		ReplayedAt      *time.Time
		AlreadyReplayed bool
	}
	decodeOne(t, c.mustRun("deadletter", "replay", "--workspace", slug, "--id", id, "--json"), &again)
	if !again.AlreadyReplayed || again.ReplayedAt == nil || !again.ReplayedAt.Equal(*replayed.ReplayedAt) {
		t.Errorf("a second replay --json = %+v, want alreadyReplayed and the first replay's replayedAt %v", again, replayed.ReplayedAt)
	}
	if out := c.mustRun("deadletter", "list", "--workspace", slug, "--pending"); strings.Contains(out, "dl-1") {
		t.Errorf("deadletter list --pending after the replay = %q, want it gone", out)
	}
	entries, _, _, err := db.FindAuditEntries(ctx, w.ID, c360.AuditFilter{First: 10, Action: c360.AuditDeadLetterReplay})
	if err != nil || len(entries) != 1 || entries[0].Actor != "cli" {
		t.Errorf("audit of the replay = %+v, %v; want one entry by cli", entries, err)
	}

	// Usage mistakes are refused before anything is opened.
	for _, args := range [][]string{
		{"deadletter"}, {"deadletter", "purge"}, {"deadletter", "list"}, {"deadletter", "replay", "--workspace", slug},
		{"deadletter", "replay", "--workspace", slug, "--id", "x"}, {"deadletter", "list", "--workspace", slug, "--limit", "0"},
	} {
		if _, _, err := c.run(args...); exitCode(err) != 2 {
			t.Errorf("%v: %v (exit %d), want a usage error", args, err, exitCode(err))
		}
	}
}

// A replay whose letter is deleted while its event is stored fails with
// CONFLICT, saying the event was stored; the servers are still notified
// of that event's changes before the command exits.
func TestDeadLetterReplayDeletedMidwayStillNotifies(t *testing.T) {
	c := newCLI(t)
	ctx := context.Background()
	key := "dl-deleted-" + uniqueSlug("k")
	slug, db, w, letter := deadLettered(t, c, "dldel", "+14155550173", key)
	if _, err := db.UpdateIdentityRules(ctx, w.ID, c360.IdentityRules{DefaultLimit: 5}); err != nil {
		t.Fatal(err)
	}
	// The letter goes with the replay's commit of its event, as if
	// something deleted it meanwhile.
	fn := "c360_test_" + strings.ReplaceAll(slug, "-", "_")
	for _, q := range []string{
		`CREATE FUNCTION ` + fn + `() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN DELETE FROM dead_letters WHERE dedupe_key = NEW.dedupe_key; RETURN NEW; END $$`,
		`CREATE TRIGGER ` + fn + ` AFTER INSERT ON events FOR EACH ROW WHEN (NEW.dedupe_key = '` + key + `') EXECUTE FUNCTION ` + fn + `()`,
	} {
		if _, err := db.Pool.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	defer func() { // before the pool closes (at the test's cleanup)
		if _, err := db.Pool.Exec(ctx, `DROP TRIGGER `+fn+` ON events; DROP FUNCTION `+fn+`()`); err != nil {
			t.Errorf("drop the test's trigger: %v", err)
		}
	}()

	listener := listenChanges(t, c.env["DATABASE_URL"])
	_, _, err := c.run("deadletter", "replay", "--workspace", slug, "--id", strconv.FormatInt(letter, 10))
	if c360.ErrorCode(err) != c360.ECONFLICT || !strings.Contains(c360.ErrorMessageOrText(err), "its event was stored") {
		t.Fatalf("replay of a letter deleted midway: %v, want CONFLICT saying the event was stored", err)
	}
	if err := notified(listener, w.ID); err != nil {
		t.Errorf("after the replay that stored its event: %v", err)
	}
}

// deadletter list pages past its --limit: the table ends with the next
// page's --after, and --json gives each letter its cursor. A --limit over
// 100 and a cursor that is not one are refused naming the flag, not the
// GraphQL argument (first) behind it.
func TestDeadLetterListPages(t *testing.T) {
	c := newCLI(t)
	slug := uniqueSlug("dlpage")
	var cr creds
	decodeOne(t, c.mustRun("workspace", "create", "--slug", slug, "--json"), &cr)
	ctx := context.Background()
	db, err := postgres.Open(ctx, c.env["DATABASE_URL"])
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	w, err := db.FindWorkspaceBySlug(ctx, slug)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.UpdateIdentityRules(ctx, w.ID, c360.IdentityRules{DefaultLimit: 5, Blocked: []string{"+14155550173"}}); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		now := time.Now().UTC()
		_, err = db.Ingest(c360.WithInvalidAsDeadLetters(ctx), w.ID, []*c360.Event{{Type: c360.EventTrack, Name: "Order Completed",
			Identities: []c360.Identity{{Type: "phone", Value: "+14155550173"}}, Source: "cli-test", DedupeKey: "page-" + strconv.Itoa(i),
			OccurredAt: now, ReceivedAt: now}})
		var kept *c360.DeadLetteredError
		if !errors.As(err, &kept) {
			t.Fatalf("ingest: %v, want a dead letter", err)
		}
	}
	// The table: two, then the third after the cursor it printed.
	first := c.mustRun("deadletter", "list", "--workspace", slug, "--limit", "2")
	_, cursor, ok := strings.Cut(first, "more: --after ")
	if !ok || !strings.Contains(first, "page-2") || !strings.Contains(first, "page-1") || strings.Contains(first, "page-0") {
		t.Fatalf("deadletter list --limit 2 = %q, want page-2 and page-1, then the next page's cursor", first)
	}
	second := c.mustRun("deadletter", "list", "--workspace", slug, "--limit", "2", "--after", strings.TrimSpace(cursor))
	if !strings.Contains(second, "page-0") || strings.Contains(second, "page-1") || strings.Contains(second, "more:") {
		t.Errorf("deadletter list --after the cursor = %q, want page-0 only, and no more", second)
	}
	// --json: each letter's cursor, the last one's the next page.
	var listed []struct {
		DedupeKey string
		Cursor    string
	}
	if err := json.Unmarshal([]byte(c.mustRun("deadletter", "list", "--workspace", slug, "--limit", "2", "--json")), &listed); err != nil {
		t.Fatal(err)
	}
	if len(listed) != 2 || listed[1].Cursor == "" {
		t.Fatalf("deadletter list --json = %+v, want two letters with cursors", listed)
	}
	if err := json.Unmarshal([]byte(c.mustRun("deadletter", "list", "--workspace", slug, "--json", "--after", listed[1].Cursor)), &listed); err != nil {
		t.Fatal(err)
	}
	if len(listed) != 1 || listed[0].DedupeKey != "page-0" {
		t.Errorf("deadletter list --json --after = %+v, want page-0", listed)
	}
	for _, tc := range []struct {
		args []string
		flag string
	}{
		{[]string{"--limit", "101"}, "--limit"},
		{[]string{"--after", "not-a-cursor"}, "--after"},
	} {
		_, _, err := c.run(append([]string{"deadletter", "list", "--workspace", slug}, tc.args...)...)
		if exitCode(err) != 2 || !strings.Contains(err.Error(), tc.flag) || strings.Contains(err.Error(), "first") {
			t.Errorf("deadletter list %v: %v (exit %d), want a usage error naming %s", tc.args, err, exitCode(err), tc.flag)
		}
	}
}
