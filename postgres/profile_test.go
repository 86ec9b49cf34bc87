package postgres_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/internal/pgtest"
)

// FindProfile finds a customer and its parts in one batch, the parts
// reading the customer the lookup found. What it returns must be what the
// lookup and LoadProfiles return apart, for either kind of key, for a
// merged-away id (the survivor's parts), and for no customer at all.
func TestFindProfileMatchesLookupAndLoadProfiles(t *testing.T) {
	db := pgtest.Open(t)
	ws, _, _ := pgtest.Workspace(t, db)
	ctx := context.Background()
	base := time.Now().Add(-time.Hour)
	var a int64
	for i, ch := range []string{"sms", "whatsapp"} {
		for j := 0; j < 3; j++ {
			a = ingest1(t, db, ws, &c360.Event{Type: c360.EventMessage, Source: "test", DedupeKey: fmt.Sprintf("%s-%d", ch, j),
				Identities: ids("phone", "+14155550160", "email", "a@profile.io"), OccurredAt: base.Add(time.Duration(i*10+j) * time.Minute),
				Message: &c360.MessageInput{Channel: ch, Direction: "inbound", Body: fmt.Sprintf("%s %d", ch, j), Status: "received"}}).CustomerID
		}
	}
	b := ingest1(t, db, ws, &c360.Event{Type: c360.EventIdentify, Source: "test", DedupeKey: "b",
		Identities: ids("email", "b@profile.io"), OccurredAt: base, Consent: &c360.ConsentInput{Channel: "sms", Status: "opted_out"}}).CustomerID
	if _, err := db.MergeCustomers(ctx, ws, a, b, false, "test", "same person"); err != nil {
		t.Fatal(err)
	}
	convs, msgs := c360.PageArgs{First: 1}, c360.PageArgs{First: 2}
	req := c360.ProfileRequest{Identities: true, Consents: true, Events: []c360.PageArgs{{First: 4}, {First: 2}},
		Conversations: []c360.PageArgs{convs}, Messages: &msgs}
	want, err := db.LoadProfiles(ctx, ws, []int64{a}, req)
	if err != nil {
		t.Fatal(err)
	}
	if len(want.Identities[a]) != 3 || len(want.Consents[a]) != 1 || len(want.Events[c360.PageArgs{First: 4}][a].Items) != 4 ||
		!want.Conversations[convs][a].HasNext || len(want.Messages) != 1 {
		t.Fatalf("LoadProfiles: the fixture is not what the test needs: %s", js(want))
	}
	for name, key := range map[string]c360.CustomerKey{
		"by identity":                            {Identity: &c360.Identity{Type: "phone", Value: "(415) 555-0160"}},
		"by id":                                  {ID: a},
		"by a merged-away id":                    {ID: b},
		"by the merged-away customer's identity": {Identity: &c360.Identity{Type: "email", Value: "b@profile.io"}},
	} {
		c, got, err := db.FindProfile(ctx, ws, key, req)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if c.ID != a {
			t.Errorf("%s: customer %d, want the survivor %d", name, c.ID, a)
		}
		if js(got) != js(want) {
			t.Errorf("%s: profile\n%s\nwant\n%s", name, js(got), js(want))
		}
	}

	// No customer: not found, whatever the parts.
	for name, key := range map[string]c360.CustomerKey{
		"unknown identity": {Identity: &c360.Identity{Type: "email", Value: "nobody@profile.io"}},
		"unknown id":       {ID: b + 1000},
	} {
		if c, p, err := db.FindProfile(ctx, ws, key, req); c360.ErrorCode(err) != c360.ENOTFOUND || c != nil || p != nil {
			t.Errorf("%s: %v %v %v, want NOT_FOUND", name, c, p, err)
		}
	}
	// Another workspace finds nothing of this one.
	other, _, _ := pgtest.Workspace(t, db)
	if _, _, err := db.FindProfile(ctx, other, c360.CustomerKey{ID: a}, req); c360.ErrorCode(err) != c360.ENOTFOUND {
		t.Errorf("from another workspace: %v, want NOT_FOUND", err)
	}
	// A bad identity is refused before anything is read.
	if _, _, err := db.FindProfile(ctx, ws, c360.CustomerKey{Identity: &c360.Identity{Type: "phone", Value: "not a phone"}}, req); c360.ErrorCode(err) != c360.EINVALID {
		t.Errorf("bad phone: %v, want BAD_USER_INPUT", err)
	}
	// A part that cannot be loaded leaves the profile out; the customer is
	// still found, and the part's own read reports why.
	bad := req
	bad.Events = []c360.PageArgs{{First: 500}}
	if c, p, err := db.FindProfile(ctx, ws, c360.CustomerKey{ID: a}, bad); err != nil || c == nil || c.ID != a || p != nil {
		t.Errorf("a refused page: %v %v %v, want the customer and no profile", c, p, err)
	}
	// A part that fails in PostgreSQL once the customer is found leaves the
	// customer found and the profile out; a failure before it is an error.
	if c, p, err := db.FindProfileWithFailingPart(ctx, ws, c360.CustomerKey{ID: a}); err != nil || c == nil || c.ID != a || p != nil {
		t.Errorf("a part failing after the lookup: %v %v %v, want the customer and no profile", c, p, err)
	}
	if _, _, err := db.FindProfileWithFailingPart(ctx, ws, c360.CustomerKey{ID: b + 1000}); c360.ErrorCode(err) != c360.ENOTFOUND {
		t.Errorf("a part failing after a lookup that found no one: %v, want NOT_FOUND", err)
	}
	// Duplicate ids load each customer's parts once.
	dup, err := db.LoadProfiles(ctx, ws, []int64{a, a}, c360.ProfileRequest{Identities: true, Consents: true, Events: []c360.PageArgs{{First: 4}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(dup.Identities[a]) != 3 || len(dup.Consents[a]) != 1 || len(dup.Events[c360.PageArgs{First: 4}][a].Items) != 4 {
		t.Errorf("duplicate ids: %s, want each part once", js(dup))
	}
	// A customer with no rows in a part gets an empty page, as LoadProfiles gives.
	all, err := db.LoadProfiles(ctx, ws, []int64{a}, c360.ProfileRequest{Events: []c360.PageArgs{{First: 100}}})
	if err != nil {
		t.Fatal(err)
	}
	cursors := all.Events[c360.PageArgs{First: 100}][a].Cursors
	past := c360.PageArgs{First: 2, After: cursors[len(cursors)-1]}
	_, got, err := db.FindProfile(ctx, ws, c360.CustomerKey{ID: a}, c360.ProfileRequest{Events: []c360.PageArgs{past}})
	if err != nil {
		t.Fatal(err)
	}
	if pg := got.Events[past][a]; pg == nil || len(pg.Items) != 0 || pg.HasNext {
		t.Errorf("events past the last: %s, want an empty page", js(got))
	}
}

// js renders a profile for comparison; page maps are keyed by their
// arguments, which JSON cannot key by, so they are keyed by their text.
func js(p *c360.Profiles) string {
	if p == nil {
		return "null"
	}
	byArgs := func(m any) map[string]any {
		out := map[string]any{}
		switch m := m.(type) {
		case map[c360.PageArgs]map[int64]*c360.Page[*c360.Event]:
			for k, v := range m {
				out[fmt.Sprint(k)] = v
			}
		case map[c360.PageArgs]map[int64]*c360.Page[*c360.Conversation]:
			for k, v := range m {
				out[fmt.Sprint(k)] = v
			}
		}
		return out
	}
	b, err := json.Marshal(map[string]any{"identities": p.Identities, "consents": p.Consents,
		"events": byArgs(p.Events), "conversations": byArgs(p.Conversations), "messages": p.Messages})
	if err != nil {
		panic(err)
	}
	return string(b)
}

// Only a batch that starts with a lookup reads "no customers given" as the
// customer it found: the public reads, given none, read none.
func TestReadsOfNoCustomersReadNone(t *testing.T) {
	db := pgtest.Open(t)
	ws, _, _ := pgtest.Workspace(t, db)
	ctx := context.Background()
	now := time.Now().UTC()
	if _, err := db.Ingest(ctx, ws, []*c360.Event{{Type: c360.EventIdentify, Source: "t", DedupeKey: "none-1",
		Identities: []c360.Identity{{Type: "email", Value: "none@example.com"}}, OccurredAt: now, ReceivedAt: now}}); err != nil {
		t.Fatal(err)
	}
	args := c360.PageArgs{First: 5}
	ids, err1 := db.IdentitiesByCustomers(ctx, ws, nil)
	consents, err2 := db.ConsentsByCustomers(ctx, ws, nil)
	events, err3 := db.EventsByCustomers(ctx, ws, nil, args)
	convs, err4 := db.ConversationsByCustomers(ctx, ws, nil, args)
	if err := errors.Join(err1, err2, err3, err4); err != nil {
		t.Fatal(err)
	}
	if len(ids)+len(consents)+len(events)+len(convs) != 0 {
		t.Errorf("reads of no customers: identities %v, consents %v, events %v, conversations %v; want none", ids, consents, events, convs)
	}
}
