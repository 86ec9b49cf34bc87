package postgres_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/internal/pgtest"
	"github.com/c360dev/c360/postgres"
)

// deadLetters returns every dead letter of the workspace, newest first.
func deadLetters(t *testing.T, db *postgres.DB, ws int64, pending bool) []*c360.DeadLetter {
	t.Helper()
	p, err := db.DeadLetters(context.Background(), ws, c360.DeadLetterFilter{PageArgs: c360.PageArgs{First: 100}, Pending: pending})
	if err != nil {
		t.Fatalf("dead letters: %v", err)
	}
	return p.Items
}

// A poison event (a NUL character, which PostgreSQL refuses inside the
// transaction) sent among many good ones: the good ones are stored, the
// poison one alone fails, is kept as a dead letter with its error, and
// Ingest says so with a *c360.DeadLetteredError carrying the cause's code.
func TestDeadLetterPoisonAmongGoodEvents(t *testing.T) {
	db := pgtest.Open(t)
	ws, _, _ := pgtest.Workspace(t, db)
	ctx := context.Background()

	const good = 60
	errs := make([]error, good+1)
	var wg sync.WaitGroup
	for i := 0; i <= good; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ev := track(fmt.Sprintf("dl-%d", i), ids("user_id", fmt.Sprintf("u-%d", i%7)))
			if i == good/2 {
				ev.Properties = map[string]any{"note": "a\x00b"}
			}
			_, errs[i] = db.Ingest(ctx, ws, []*c360.Event{ev})
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if i == good/2 {
			continue
		}
		if err != nil {
			t.Errorf("good event %d: %v", i, err)
		}
	}
	var kept *c360.DeadLetteredError
	if err := errs[good/2]; !errors.As(err, &kept) || len(kept.IDs) != 1 {
		t.Fatalf("poison event: error %v, want a *c360.DeadLetteredError with one id", err)
	}
	if code := c360.ErrorCode(errs[good/2]); code != c360.EINVALID {
		t.Errorf("poison event: code %s, want %s (the cause's)", code, c360.EINVALID)
	}
	if n := count(t, db, `SELECT count(*) FROM events WHERE workspace_id = $1`, ws); n != good {
		t.Errorf("events stored = %d, want %d", n, good)
	}

	dls := deadLetters(t, db, ws, false)
	if len(dls) != 1 {
		t.Fatalf("dead letters = %d, want 1", len(dls))
	}
	d := dls[0]
	if d.ID != kept.IDs[0] || d.Source != "test" || d.DedupeKey != fmt.Sprintf("dl-%d", good/2) || d.EventType != c360.EventTrack ||
		d.Attempts != 1 || d.ReplayedAt != nil || !strings.Contains(d.Error, "NUL") {
		t.Errorf("dead letter = %+v", d)
	}
	props, _ := d.Event["properties"].(map[string]any)
	if got, want := props["note"], "a\uFFFDb"; got != want {
		t.Errorf("dead letter event properties.note = %q, want %q (NUL shown as U+FFFD)", got, want)
	}

	// Delivered again: the same dead letter, one more attempt.
	ev := track(d.DedupeKey, ids("user_id", "u-1"))
	ev.Properties = map[string]any{"note": "a\x00b"}
	if _, err := db.Ingest(ctx, ws, []*c360.Event{ev}); !errors.As(err, &kept) || kept.IDs[0] != d.ID {
		t.Fatalf("second delivery: %v, want dead letter %d again", err, d.ID)
	}
	// A replay ingests the exact event (NUL included): it fails again.
	if _, _, err := db.ReplayDeadLetter(ctx, ws, d.ID); c360.ErrorCode(err) != c360.EINVALID {
		t.Fatalf("replay of an unfixed poison: %v, want %s", err, c360.EINVALID)
	}
	if d := deadLetters(t, db, ws, true); len(d) != 1 || d[0].Attempts != 3 || d[0].ReplayedAt != nil {
		t.Errorf("after two more failures: %+v, want one pending dead letter with 3 attempts", d)
	}
}

// The cause fixed (here: a constraint that stood for a bug), a replay stores
// the event exactly once, marks the dead letter replayed, and replaying it
// again changes nothing.
func TestDeadLetterReplayAfterFix(t *testing.T) {
	db := pgtest.Open(t)
	ws, _, _ := pgtest.Workspace(t, db)
	ctx := context.Background()
	name := fmt.Sprintf("Poison %d", time.Now().UnixNano())
	drop := refuseEvents(t, db, fmt.Sprintf(`name IS DISTINCT FROM '%s'`, name))

	ev := track("fix-1", ids("email", "fix@example.com"))
	ev.Name = name
	// As Segment's calls come: objects kept as their bytes.
	ev.RawProperties = json.RawMessage(`{"big": 12345678901234567, "nested": {"a": [1.5, "x"]}}`)
	ev.RawContext = json.RawMessage(`{"seq": 98765432109876543}`)
	_, err := db.Ingest(ctx, ws, []*c360.Event{ev})
	var kept *c360.DeadLetteredError
	if !errors.As(err, &kept) {
		t.Fatalf("ingest: %v, want a dead letter", err)
	}
	if _, _, err := db.ReplayDeadLetter(ctx, ws, kept.IDs[0]); err == nil {
		t.Fatalf("replay before the fix succeeded")
	}

	drop()
	d, replayed, err := db.ReplayDeadLetter(ctx, ws, kept.IDs[0])
	if err != nil {
		t.Fatalf("replay after the fix: %v", err)
	}
	if !replayed || d.ReplayedAt == nil || d.ReplayedEventID == 0 || d.Attempts != 2 {
		t.Fatalf("replayed dead letter = %+v, want replayedAt, replayedEventId and 2 attempts", d)
	}
	got, err := db.FindEventByID(ctx, ws, d.ReplayedEventID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Name != name || got.Source != "test" {
		t.Errorf("replayed event = %+v, want the original event", got)
	}
	var big, seq string
	if err := db.Pool.QueryRow(ctx, `SELECT properties->>'big', context->>'seq' FROM events WHERE workspace_id = $1 AND id = $2`,
		ws, got.ID).Scan(&big, &seq); err != nil || big != "12345678901234567" || seq != "98765432109876543" {
		t.Errorf("replayed properties.big, context.seq = %q, %q, %v, want 12345678901234567 and 98765432109876543 exactly", big, seq, err)
	}
	again, replayed, err := db.ReplayDeadLetter(ctx, ws, d.ID)
	if err != nil || replayed || !again.ReplayedAt.Equal(*d.ReplayedAt) || again.ReplayedEventID != d.ReplayedEventID {
		t.Errorf("second replay = %+v, %v, want the dead letter unchanged", again, err)
	}
	if n := count(t, db, `SELECT count(*) FROM events WHERE workspace_id = $1 AND dedupe_key = 'fix-1'`, ws); n != 1 {
		t.Errorf("events = %d, want 1", n)
	}
	if p := deadLetters(t, db, ws, true); len(p) != 0 {
		t.Errorf("pending dead letters = %d, want 0", len(p))
	}
	if _, _, err := db.ReplayDeadLetter(ctx, ws, d.ID+1000); c360.ErrorCode(err) != c360.ENOTFOUND {
		t.Errorf("replay of an unknown id: %v, want NOT_FOUND", err)
	}
	other, _, _ := pgtest.Workspace(t, db)
	if _, _, err := db.ReplayDeadLetter(ctx, other, d.ID); c360.ErrorCode(err) != c360.ENOTFOUND {
		t.Errorf("replay from another workspace: %v, want NOT_FOUND", err)
	}
}

// poisonedLetter ingests a track of email under key while the database
// refuses it (refuseEvents), so that it is kept as a dead letter, lifts the
// refusal so that a replay stores it, and returns the letter's id.
func poisonedLetter(t *testing.T, db *postgres.DB, ws int64, key, email string) int64 {
	t.Helper()
	name := fmt.Sprintf("Poison %d", time.Now().UnixNano())
	drop := refuseEvents(t, db, fmt.Sprintf(`name IS DISTINCT FROM '%s'`, name))
	ev := track(key, ids("email", email))
	ev.Name = name
	_, err := db.Ingest(context.Background(), ws, []*c360.Event{ev})
	drop()
	var kept *c360.DeadLetteredError
	if !errors.As(err, &kept) {
		t.Fatalf("ingest: %v, want a dead letter", err)
	}
	return kept.IDs[0]
}

// Replays of one dead letter at the same time store its event once, and
// exactly one of them says it replayed it: the others answer the letter as
// that one marked it (one replayedAt), so that only one is audited.
func TestConcurrentReplaysOfOneDeadLetter(t *testing.T) {
	db := pgtest.Open(t)
	ws, _, _ := pgtest.Workspace(t, db)
	ctx := context.Background()
	letter := poisonedLetter(t, db, ws, "concurrent-1", "concurrent@example.com")
	const n = 8
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		replays  int
		replayed = map[time.Time]bool{}
	)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d, did, err := db.ReplayDeadLetter(ctx, ws, letter)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				t.Errorf("replay: %v", err)
				return
			}
			if did {
				replays++
			}
			replayed[d.ReplayedAt.UTC()] = true
		}()
	}
	wg.Wait()
	if replays != 1 || len(replayed) != 1 {
		t.Errorf("%d replays said they replayed, with %d replayedAt values; want 1 and 1", replays, len(replayed))
	}
	if c := count(t, db, `SELECT count(*) FROM events WHERE workspace_id = $1 AND dedupe_key = 'concurrent-1'`, ws); c != 1 {
		t.Errorf("events = %d, want 1", c)
	}
	d := deadLetters(t, db, ws, false)
	if len(d) != 1 || d[0].ReplayedAt == nil || !replayed[d[0].ReplayedAt.UTC()] {
		t.Errorf("dead letter = %+v, want it marked as the replays answered", d)
	}
}

// A replay that fails before ingest's transaction while another replay of
// the letter, at the same time, has marked it replayed leaves the letter
// as the successful replay left it: its attempts and error are not those
// of a failure after it was done.
func TestReplayFailureLeavesAReplayedLetterAlone(t *testing.T) {
	db := pgtest.Open(t)
	ws, _, _ := pgtest.Workspace(t, db)
	ctx := context.Background()
	letter := poisonedLetter(t, db, ws, "replayed-then-failed", "replayed-then-failed@example.com")
	before, did, err := db.ReplayDeadLetter(ctx, ws, letter)
	if err != nil || !did {
		t.Fatalf("replay: %v, %v", did, err)
	}
	// The other replay's failure, recorded after the letter was marked.
	if err := db.RecordReplayFailure(ctx, ws, letter, errors.New("refused by a later rule")); err != nil {
		t.Fatal(err)
	}
	d := deadLetters(t, db, ws, false)
	if len(d) != 1 {
		t.Fatalf("%d dead letters, want 1", len(d))
	}
	if d[0].ReplayedAt == nil || d[0].Attempts != before.Attempts || d[0].Error != before.Error ||
		!d[0].LastFailedAt.Equal(before.LastFailedAt) {
		t.Errorf("dead letter after a late failure: attempts %d, error %q, last failed %s; want %d, %q, %s as its replay left it",
			d[0].Attempts, d[0].Error, d[0].LastFailedAt, before.Attempts, before.Error, before.LastFailedAt)
	}
}

// A caller that handles failures itself (Segment's first try of a whole
// batch) asks for no dead letters; events refused before the transaction
// (a bad identity) are never dead letters.
func TestDeadLetterOnlyForFailuresInsideIngest(t *testing.T) {
	db := pgtest.Open(t)
	ws, _, _ := pgtest.Workspace(t, db)
	ctx := context.Background()

	ev := track("nodl-1", ids("user_id", "u"))
	ev.Properties = map[string]any{"x": "\x00"}
	_, err := db.Ingest(c360.WithoutDeadLetters(ctx), ws, []*c360.Event{ev})
	var kept *c360.DeadLetteredError
	if err == nil || errors.As(err, &kept) || c360.ErrorCode(err) != c360.EINVALID {
		t.Errorf("without dead letters: %v, want a plain BAD_USER_INPUT", err)
	}
	if _, err := db.Ingest(ctx, ws, []*c360.Event{track("nodl-2", ids("email", "not an email"))}); c360.ErrorCode(err) != c360.EINVALID || errors.As(err, &kept) {
		t.Errorf("invalid identity: %v, want a plain BAD_USER_INPUT", err)
	}
	if d := deadLetters(t, db, ws, false); len(d) != 0 {
		t.Errorf("dead letters = %+v, want none", d)
	}
}

// Dead letters page newest first with keyset cursors.
func TestDeadLetterPages(t *testing.T) {
	db := pgtest.Open(t)
	ws, _, _ := pgtest.Workspace(t, db)
	ctx := context.Background()
	for i := range 3 {
		ev := track(fmt.Sprintf("page-%d", i), ids("user_id", "u"))
		ev.Name = "bad\x00name"
		if _, err := db.Ingest(ctx, ws, []*c360.Event{ev}); err == nil {
			t.Fatal("poison event stored")
		}
	}
	p1, err := db.DeadLetters(ctx, ws, c360.DeadLetterFilter{PageArgs: c360.PageArgs{First: 2}})
	if err != nil {
		t.Fatal(err)
	}
	if len(p1.Items) != 2 || !p1.HasNext || p1.Items[0].DedupeKey != "page-2" {
		t.Fatalf("first page: %d items, hasNext %v", len(p1.Items), p1.HasNext)
	}
	p2, err := db.DeadLetters(ctx, ws, c360.DeadLetterFilter{PageArgs: c360.PageArgs{First: 2, After: p1.Cursors[1]}})
	if err != nil {
		t.Fatal(err)
	}
	if len(p2.Items) != 1 || p2.HasNext || p2.Items[0].DedupeKey != "page-0" {
		t.Fatalf("second page: %+v", p2)
	}
	if _, err := db.DeadLetters(ctx, ws, c360.DeadLetterFilter{PageArgs: c360.PageArgs{First: 2, After: "nope"}}); c360.ErrorCode(err) != c360.EINVALID {
		t.Errorf("bad cursor: %v, want BAD_USER_INPUT", err)
	}
}

// Every connection of the pools carries the statement and lock timeouts
// (postgres.Open sets them), so a runaway statement or a lock wait is cut
// off and answered UNAVAILABLE instead of holding a connection; and commits
// are flushed before they are acknowledged, whatever the server's default.
func TestPoolSettings(t *testing.T) {
	db := pgtest.Open(t)
	ctx := context.Background()
	for setting, want := range map[string]string{"statement_timeout": "10s", "lock_timeout": "5s", "synchronous_commit": "on"} {
		var got string
		if err := db.Pool.QueryRow(ctx, "SHOW "+setting).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("SHOW %s = %q, want %q", setting, got, want)
		}
	}
}

// A poison event whose dead letter cannot be written either (the table
// locked past lock_timeout) is neither stored nor kept: Ingest answers
// UNAVAILABLE, not the poison's BAD_USER_INPUT, so no connector
// acknowledges it; the retry, once the table is free, keeps it.
func TestDeadLetterThatCannotBeKeptIsUnavailable(t *testing.T) {
	db := pgtest.OpenStore(t, url.Values{"lock_timeout": {"100ms"}}, postgres.IngestConfig{})
	ws, _, _ := pgtest.Workspace(t, db)
	ctx := context.Background()
	tx := lockDeadLetters(t, db)
	ev := track("dl-locked", ids("user_id", "u"))
	ev.Properties = map[string]any{"note": "a\x00b"}
	_, err := db.Ingest(ctx, ws, []*c360.Event{ev})
	var kept *c360.DeadLetteredError
	if c360.ErrorCode(err) != c360.EUNAVAILABLE || errors.As(err, &kept) {
		t.Errorf("poison with dead_letters locked: %v, want UNAVAILABLE", err)
	}
	tx.Rollback(ctx)
	if n := count(t, db, `SELECT count(*) FROM events WHERE workspace_id = $1`, ws); n != 0 {
		t.Errorf("events stored = %d, want 0", n)
	}
	if d := deadLetters(t, db, ws, false); len(d) != 0 {
		t.Errorf("dead letters = %d, want 0 while the table was locked", len(d))
	}
	if _, err := db.Ingest(ctx, ws, []*c360.Event{ev}); !errors.As(err, &kept) || c360.ErrorCode(err) != c360.EINVALID {
		t.Errorf("the retry: %v, want a dead letter with the poison's BAD_USER_INPUT", err)
	}
}

// So is an event validation refused, when the caller asked for it to be
// kept: a webhook that acknowledges a kept event must never acknowledge one
// that was not.
func TestInvalidDeadLetterThatCannotBeKeptIsUnavailable(t *testing.T) {
	db := pgtest.OpenStore(t, url.Values{"lock_timeout": {"100ms"}}, postgres.IngestConfig{})
	ws, _, _ := pgtest.Workspace(t, db)
	ctx := context.Background()
	tx := lockDeadLetters(t, db)
	ev := track("inv-locked", ids("phone", "+1 234"))
	_, err := db.Ingest(c360.WithInvalidAsDeadLetters(ctx), ws, []*c360.Event{ev})
	tx.Rollback(ctx)
	var kept *c360.DeadLetteredError
	if c360.ErrorCode(err) != c360.EUNAVAILABLE || errors.As(err, &kept) {
		t.Errorf("invalid event with dead_letters locked: %v, want UNAVAILABLE", err)
	}
	if d := deadLetters(t, db, ws, false); len(d) != 0 {
		t.Errorf("dead letters = %d, want 0 while the table was locked", len(d))
	}
}

// An event validation refuses becomes a dead letter only when the caller
// asks for it (c360.WithInvalidAsDeadLetters): then Ingest keeps it, says
// so with a *c360.DeadLetteredError of code BAD_USER_INPUT, counts each
// redelivery, and a replay after the cause is fixed (here the workspace's
// block list, which left the event no identity) stores it.
func TestDeadLetterForInvalidEventWhenAsked(t *testing.T) {
	db := pgtest.Open(t)
	ws, _, _ := pgtest.Workspace(t, db)
	ctx := context.Background()
	keep := c360.WithInvalidAsDeadLetters(ctx)
	if _, err := db.UpdateIdentityRules(ctx, ws, c360.IdentityRules{DefaultLimit: 5, Blocked: []string{"+14155550172"}}); err != nil {
		t.Fatal(err)
	}
	blocked := track("inv-blocked", ids("phone", "+14155550172"))

	// By default a refusal is answered and nothing is kept.
	_, err := db.Ingest(ctx, ws, []*c360.Event{blocked})
	var kept *c360.DeadLetteredError
	if c360.ErrorCode(err) != c360.EINVALID || errors.As(err, &kept) {
		t.Fatalf("refused event: %v, want BAD_USER_INPUT without dead letter", err)
	}
	if dls := deadLetters(t, db, ws, false); len(dls) != 0 {
		t.Fatalf("dead letters = %+v, want none", dls)
	}
	// WithoutDeadLetters wins.
	if _, err := db.Ingest(c360.WithoutDeadLetters(keep), ws, []*c360.Event{blocked}); errors.As(err, &kept) {
		t.Errorf("WithoutDeadLetters: %v, want no dead letter", err)
	}

	for attempt := 1; attempt <= 2; attempt++ {
		_, err = db.Ingest(keep, ws, []*c360.Event{blocked})
		if !errors.As(err, &kept) || len(kept.IDs) != 1 || c360.ErrorCode(err) != c360.EINVALID {
			t.Fatalf("delivery %d: %v, want a *c360.DeadLetteredError of code BAD_USER_INPUT", attempt, err)
		}
		dls := deadLetters(t, db, ws, true)
		if len(dls) != 1 || dls[0].ID != kept.IDs[0] || dls[0].DedupeKey != "inv-blocked" || dls[0].Attempts != attempt ||
			!strings.HasPrefix(dls[0].Error, "refused as invalid before ingest: the event has no usable identity") {
			t.Fatalf("delivery %d: dead letters %+v", attempt, dls)
		}
	}
	// An event whose key cannot key a dead letter is refused as before.
	if _, err := db.Ingest(keep, ws, []*c360.Event{track("inv\x00nul", ids("phone", "+1 234"))}); c360.ErrorCode(err) != c360.EINVALID || errors.As(err, &kept) {
		t.Errorf("unkeyable event: %v, want BAD_USER_INPUT without dead letter", err)
	}
	if n := count(t, db, `SELECT count(*) FROM events WHERE workspace_id = $1`, ws); n != 0 {
		t.Errorf("events = %d, want 0", n)
	}

	// A replay before the fix fails the same way and counts the attempt.
	if _, _, err := db.ReplayDeadLetter(ctx, ws, kept.IDs[0]); c360.ErrorCode(err) != c360.EINVALID {
		t.Errorf("replay before the fix: %v, want BAD_USER_INPUT", err)
	}
	if _, err := db.UpdateIdentityRules(ctx, ws, c360.IdentityRules{DefaultLimit: 5}); err != nil {
		t.Fatal(err)
	}
	d, _, err := db.ReplayDeadLetter(ctx, ws, kept.IDs[0])
	if err != nil || d.ReplayedAt == nil || d.Attempts != 3 {
		t.Fatalf("replay after the fix = %+v, %v; want replayed after 3 attempts", d, err)
	}
	if n := count(t, db, `SELECT count(*) FROM events WHERE workspace_id = $1 AND dedupe_key = 'inv-blocked'`, ws); n != 1 {
		t.Errorf("events after the replay = %d, want 1", n)
	}
}

// lockDeadLetters locks the dead_letters table until the returned
// transaction ends: a dead letter cannot be written meanwhile.
func lockDeadLetters(t *testing.T, db *postgres.DB) pgx.Tx {
	t.Helper()
	ctx := context.Background()
	tx, err := db.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `LOCK TABLE dead_letters IN ACCESS EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	return tx
}

// A replay racing an erasure of the person it names either finishes before
// the erasure reads her dead letters (the erasure then takes the replayed
// event too) or finds the letter gone (NOT_FOUND, nothing stored): it never
// stores the erased person again, nor answers NOT_FOUND after storing her.
func TestDeadLetterReplayRacingAnErasure(t *testing.T) {
	db := pgtest.Open(t)
	ws, _, _ := pgtest.Workspace(t, db)
	ctx := context.Background()
	name := fmt.Sprintf("Poison %d", time.Now().UnixNano())
	drop := refuseEvents(t, db, fmt.Sprintf(`name IS DISTINCT FROM '%s'`, name))

	const people = 40
	customers, letters := make([]int64, people), make([]int64, people)
	for i := range people {
		email := fmt.Sprintf("race-%d@example.com", i)
		customers[i] = ingest1(t, db, ws, &c360.Event{Type: c360.EventIdentify, Source: "test", DedupeKey: fmt.Sprintf("race-id-%d", i),
			Identities: ids("email", email)}).CustomerID
		ev := track(fmt.Sprintf("race-dl-%d", i), ids("email", email))
		ev.Name = name
		var kept *c360.DeadLetteredError
		if _, err := db.Ingest(ctx, ws, []*c360.Event{ev}); !errors.As(err, &kept) {
			t.Fatalf("ingest of %s: %v, want a dead letter", ev.DedupeKey, err)
		}
		letters[i] = kept.IDs[0]
	}
	drop()

	for i := range people {
		var (
			wg        sync.WaitGroup
			replayErr error
		)
		wg.Add(2)
		go func() {
			defer wg.Done()
			_, _, replayErr = db.ReplayDeadLetter(ctx, ws, letters[i])
		}()
		go func() {
			defer wg.Done()
			if _, err := db.EraseCustomer(ctx, ws, customers[i], "test", "race"); err != nil {
				t.Errorf("erase %d: %v", customers[i], err)
			}
		}()
		wg.Wait()
		if replayErr != nil && c360.ErrorCode(replayErr) != c360.ENOTFOUND {
			t.Errorf("replay of dead letter %d: %v, want success or NOT_FOUND", letters[i], replayErr)
		}
		if _, err := db.FindCustomerByIdentity(ctx, ws, c360.Identity{Type: "email", Value: fmt.Sprintf("race-%d@example.com", i)}); c360.ErrorCode(err) != c360.ENOTFOUND {
			t.Errorf("person %d after replay (%v) and erasure: found again (%v), want NOT_FOUND", i, replayErr, err)
		}
	}
}

// A replay holds its erasure lock on a connection of the owner pool, not
// of the tenant pool, which its reads and its ingest need: on a tenant
// pool of one connection (C360_DB_MAX_CONNS=1), a replay whose lock held
// that connection waited on itself until its request ended.
func TestReplayOnATenantPoolOfOne(t *testing.T) {
	db := pgtest.Open(t, postgres.MaxConns(1))
	ws, _, _ := pgtest.Workspace(t, db)
	ctx := context.Background()
	letter := poisonedLetter(t, db, ws, "one-dl", "one@example.com")
	rctx, cancel := context.WithTimeout(ctx, 8*time.Second)
	defer cancel()
	d, _, err := db.ReplayDeadLetter(rctx, ws, letter)
	if err != nil || d.ReplayedAt == nil {
		t.Fatalf("replay on a tenant pool of one: %+v, %v; want it replayed", d, err)
	}
	if n := count(t, db, `SELECT count(*) FROM events WHERE workspace_id = $1 AND dedupe_key = 'one-dl'`, ws); n != 1 {
		t.Errorf("%d events stored by the replay, want 1", n)
	}
}

// refuseEvents makes the events table refuse the rows that fail check (a
// CHECK constraint standing for a bug, NOT VALID: the rows stored stand),
// so that ingest keeps them as dead letters. It returns the fix, which
// drops the constraint; the test's cleanup runs it if the test did not.
func refuseEvents(t *testing.T, db *postgres.DB, check string) (fix func()) {
	t.Helper()
	ctx := context.Background()
	constraint := fmt.Sprintf("dl_test_%d", time.Now().UnixNano())
	if _, err := db.Pool.Exec(ctx, `ALTER TABLE events ADD CONSTRAINT `+constraint+` CHECK (`+check+`) NOT VALID`); err != nil {
		t.Fatal(err)
	}
	fixed := false
	fix = func() {
		if !fixed {
			fixed = true
			if _, err := db.Pool.Exec(ctx, `ALTER TABLE events DROP CONSTRAINT `+constraint); err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Cleanup(fix)
	return fix
}
