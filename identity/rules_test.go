package identity

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
)

func uid(v string) Identity  { return Identity{Type: TypeUserID, Value: v} }
func anon(v string) Identity { return Identity{Type: TypeAnonymousID, Value: v} }

// world describes the customers already stored: customer id -> identities.
type world map[int64][]Identity

// owners derives the owner map the store would report for ids.
func (w world) owners(ids []Identity) map[Identity]int64 {
	out := map[Identity]int64{}
	for c, held := range w {
		for _, h := range held {
			if slices.Contains(ids, h) {
				out[h] = c
			}
		}
	}
	return out
}

// existing returns the identities of the customers that own one of ids,
// which is exactly what the store loads before calling Plan.
func (w world) existing(ids []Identity) map[int64][]Identity {
	out := map[int64][]Identity{}
	for _, c := range w.owners(ids) {
		out[c] = w[c]
	}
	return out
}

func (w world) plan(r Rules, ids ...Identity) Decision {
	return r.Plan(ids, w.owners(ids), w.existing(ids))
}

func checkDecision(t *testing.T, got, want Decision) {
	t.Helper()
	if got.Survivor != want.Survivor {
		t.Errorf("Survivor = %d, want %d", got.Survivor, want.Survivor)
	}
	if !slices.Equal(got.Merge, want.Merge) {
		t.Errorf("Merge = %v, want %v", got.Merge, want.Merge)
	}
	if !slices.Equal(got.Attach, want.Attach) {
		t.Errorf("Attach = %v, want %v", got.Attach, want.Attach)
	}
	gotDropped := make([]Identity, len(got.Dropped))
	for i, d := range got.Dropped {
		gotDropped[i] = d.Identity
		if d.Reason == "" {
			t.Errorf("Dropped %v has no reason", d.Identity)
		}
	}
	wantDropped := make([]Identity, len(want.Dropped))
	for i, d := range want.Dropped {
		wantDropped[i] = d.Identity
	}
	if !slices.Equal(gotDropped, wantDropped) {
		t.Errorf("Dropped = %v, want %v", gotDropped, wantDropped)
	}
	for i := range min(len(got.Dropped), len(want.Dropped)) {
		if w := want.Dropped[i].Reason; w != "" && got.Dropped[i].Reason != w {
			t.Errorf("Dropped[%d].Reason = %q, want %q", i, got.Dropped[i].Reason, w)
		}
	}
}

func drop(id Identity) Dropped { return Dropped{Identity: id} }

func TestPlanNewCustomer(t *testing.T) {
	got := world{}.plan(DefaultRules(), email("b@x.com"), uid("u1"), anon("a1"), email("a@x.com"))
	checkDecision(t, got, Decision{
		Attach: []Identity{anon("a1"), email("a@x.com"), email("b@x.com"), uid("u1")},
	})
}

func TestPlanEmpty(t *testing.T) {
	checkDecision(t, DefaultRules().Plan(nil, nil, nil), Decision{})
}

func TestPlanAttachToOne(t *testing.T) {
	w := world{7: {uid("u1"), email("a@x.com")}}
	got := w.plan(DefaultRules(), uid("u1"), email("a@x.com"), email("b@x.com"), phone("+14155550100"))
	checkDecision(t, got, Decision{
		Survivor: 7,
		Attach:   []Identity{email("b@x.com"), phone("+14155550100")},
	})
}

func TestPlanKnownIdentitiesOnly(t *testing.T) {
	w := world{7: {uid("u1"), email("a@x.com")}}
	checkDecision(t, w.plan(DefaultRules(), email("a@x.com")), Decision{Survivor: 7})
}

func TestPlanMergeTwo(t *testing.T) {
	// A device seen anonymously (customer 9) logs in as a known user (3).
	w := world{
		3: {uid("u1"), email("a@x.com")},
		9: {anon("a1"), email("b@x.com")},
	}
	got := w.plan(DefaultRules(), uid("u1"), anon("a1"), anon("a2"))
	checkDecision(t, got, Decision{
		Survivor: 3,
		Merge:    []int64{9},
		Attach:   []Identity{anon("a2")},
	})
}

func TestPlanSurvivorIsOldest(t *testing.T) {
	// The survivor is the smallest id even when the higher-priority
	// identifier belongs to the newer customer.
	w := world{
		2: {anon("a1")},
		5: {email("e@x.com"), uid("u1")},
	}
	got := w.plan(DefaultRules(), anon("a1"), email("e@x.com"))
	checkDecision(t, got, Decision{Survivor: 2, Merge: []int64{5}})
}

func TestPlanMergeThree(t *testing.T) {
	w := world{
		4: {anon("a1")},
		8: {email("e@x.com")},
		6: {phone("+14155550100")},
	}
	got := w.plan(DefaultRules(), anon("a1"), email("e@x.com"), phone("+14155550100"), uid("u9"))
	checkDecision(t, got, Decision{Survivor: 4, Merge: []int64{6, 8}, Attach: []Identity{uid("u9")}})
}

func TestPlanNewUserIDConflictsWithOwnedEmail(t *testing.T) {
	// u2 is new and outranks the email, so the email (whose customer has
	// u1) is dropped and a new customer is created for u2.
	w := world{1: {uid("u1"), email("e@x.com")}}
	got := w.plan(DefaultRules(), uid("u2"), email("e@x.com"))
	checkDecision(t, got, Decision{
		Attach: []Identity{uid("u2")},
		Dropped: []Dropped{{Identity: email("e@x.com"),
			Reason: `limit: user_id allows 1 per customer; merging customer 1 would combine user_id "u1", "u2"`}},
	})
}

func TestPlanTwoOwnedUserIDsNeverMerged(t *testing.T) {
	w := world{
		1: {uid("u1"), email("a@x.com")},
		2: {uid("u2"), email("b@x.com")},
	}
	for name, ids := range map[string][]Identity{
		"user_id and other's email": {uid("u1"), email("b@x.com")},
		"both user_ids":             {uid("u2"), uid("u1")},
		"both emails":               {email("a@x.com"), email("b@x.com")},
	} {
		t.Run(name, func(t *testing.T) {
			got := w.plan(DefaultRules(), ids...)
			if got.Survivor != 1 || len(got.Merge) != 0 || len(got.Dropped) != 1 {
				t.Fatalf("Plan(%v) = %+v, want survivor 1, no merge, one dropped", ids, got)
			}
			if r := got.Dropped[0].Reason; !strings.HasPrefix(r, "limit: user_id allows 1 per customer") {
				t.Errorf("Dropped reason = %q, want a user_id limit reason", r)
			}
		})
	}
}

func TestPlanTwoNewUserIDs(t *testing.T) {
	got := world{}.plan(DefaultRules(), uid("u2"), uid("u1"))
	checkDecision(t, got, Decision{
		Attach: []Identity{uid("u1")},
		Dropped: []Dropped{{Identity: uid("u2"),
			Reason: `limit: user_id allows 1 per customer and customer already has user_id "u1"`}},
	})
}

func TestPlanNewUserIDOnCustomerWithOne(t *testing.T) {
	w := world{3: {uid("u1"), email("e@x.com")}}
	got := w.plan(DefaultRules(), email("e@x.com"), uid("u2"))
	// user_id outranks email: u2 starts a new customer, the email (owned by
	// the customer with u1) is dropped.
	checkDecision(t, got, Decision{
		Attach:  []Identity{uid("u2")},
		Dropped: []Dropped{drop(email("e@x.com"))},
	})
}

func TestPlanAnonymousMergesIntoEmailOwner(t *testing.T) {
	w := world{
		1: {anon("a1")},
		2: {email("e@x.com"), uid("u1")},
	}
	got := w.plan(DefaultRules(), anon("a1"), email("e@x.com"))
	checkDecision(t, got, Decision{Survivor: 1, Merge: []int64{2}})
}

func TestPlanStaleOwnerMap(t *testing.T) {
	// The owner map can miss an identity that a customer's identity list
	// already has (read between two writes). It reaches the survivor via
	// the customer, so it must not be attached a second time.
	owners := map[Identity]int64{uid("u1"): 4}
	existing := map[int64][]Identity{4: {uid("u1"), email("e@x.com")}}
	got := DefaultRules().Plan([]Identity{uid("u1"), email("e@x.com"), email("f@x.com")}, owners, existing)
	checkDecision(t, got, Decision{Survivor: 4, Attach: []Identity{email("f@x.com")}})
}

func TestPlanEmailLimit(t *testing.T) {
	var ids []Identity
	for i := range 7 {
		ids = append(ids, email(fmt.Sprintf("e%d@x.com", i)))
	}
	t.Run("new customer", func(t *testing.T) {
		got := world{}.plan(DefaultRules(), ids...)
		checkDecision(t, got, Decision{
			Attach:  ids[:5],
			Dropped: []Dropped{drop(ids[5]), drop(ids[6])},
		})
		want := `limit: email allows 5 per customer and customer already has email "e0@x.com", "e1@x.com", "e2@x.com", "e3@x.com", "e4@x.com"`
		if got := got.Dropped[0].Reason; got != want {
			t.Errorf("Reason = %q, want %q", got, want)
		}
	})
	t.Run("existing customer with four", func(t *testing.T) {
		w := world{5: ids[:4]}
		got := w.plan(DefaultRules(), ids[3], ids[4], ids[5])
		checkDecision(t, got, Decision{
			Survivor: 5,
			Attach:   []Identity{ids[4]},
			Dropped:  []Dropped{drop(ids[5])},
		})
	})
	t.Run("merge would exceed", func(t *testing.T) {
		// 3 + 3 emails cannot merge; the phone-owned customer is refused.
		w := world{1: append([]Identity{uid("u1")}, ids[:3]...), 2: {ids[3], ids[4], ids[5], phone("+14155550100")}}
		got := w.plan(DefaultRules(), uid("u1"), phone("+14155550100"))
		checkDecision(t, got, Decision{Survivor: 1, Dropped: []Dropped{drop(phone("+14155550100"))}})
		if r := got.Dropped[0].Reason; !strings.HasPrefix(r, "limit: email allows 5 per customer; merging customer 2 would combine email ") || !strings.HasSuffix(r, " and 1 more") {
			t.Errorf("Reason = %q, want an email merge reason listing 5 values and 1 more", r)
		}
	})
	t.Run("custom limit", func(t *testing.T) {
		r := DefaultRules()
		r.Limits[TypeEmail] = 2
		got := world{}.plan(r, ids[:3]...)
		checkDecision(t, got, Decision{Attach: ids[:2], Dropped: []Dropped{drop(ids[2])}})
	})
}

func TestPlanGrandfathersOverLimitCustomer(t *testing.T) {
	// The limit was lowered after customer 1 got two user_ids; its events
	// must still resolve to it, but it may not gain more.
	w := world{1: {uid("u1"), uid("u2"), email("e@x.com")}}
	got := w.plan(DefaultRules(), email("e@x.com"), phone("+14155550100"))
	checkDecision(t, got, Decision{Survivor: 1, Attach: []Identity{phone("+14155550100")}})

	got = w.plan(DefaultRules(), email("e@x.com"), uid("u3"))
	checkDecision(t, got, Decision{Attach: []Identity{uid("u3")}, Dropped: []Dropped{drop(email("e@x.com"))}})
}

func TestPlanBlocked(t *testing.T) {
	r := DefaultRules()
	r.Blocked = []string{" QA@Example.com "}
	got := world{}.plan(r, email("qa@example.com"), anon("a1"))
	checkDecision(t, got, Decision{
		Attach:  []Identity{anon("a1")},
		Dropped: []Dropped{{Identity: email("qa@example.com"), Reason: "blocked: value is on the workspace's block list"}},
	})
}

func TestPlanExplicitPriority(t *testing.T) {
	// With email ranked above user_id, the email's owner wins and the new
	// user_id is dropped instead of the email.
	r := DefaultRules()
	r.Priority = []string{TypeEmail, TypeUserID}
	w := world{1: {uid("u1"), email("e@x.com")}}
	got := w.plan(r, uid("u2"), email("e@x.com"))
	checkDecision(t, got, Decision{Survivor: 1, Dropped: []Dropped{drop(uid("u2"))}})
}

func TestPlanDuplicatesInInput(t *testing.T) {
	got := world{}.plan(DefaultRules(), uid("u1"), uid("u1"), email("e@x.com"), email("e@x.com"))
	checkDecision(t, got, Decision{Attach: []Identity{email("e@x.com"), uid("u1")}})
}

func TestPlanDeterministic(t *testing.T) {
	w := world{
		10: {uid("u1"), email("a@x.com"), anon("d1")},
		11: {email("b@x.com"), anon("d2")},
		12: {uid("u2"), phone("+14155550100")},
		13: {anon("d3"), Identity{"crm_id", "c1"}},
	}
	ids := []Identity{
		uid("u1"), email("a@x.com"), email("b@x.com"), email("c@x.com"), phone("+14155550100"),
		anon("d2"), anon("d3"), anon("d4"), Identity{"crm_id", "c2"},
	}
	r := DefaultRules()
	r.Limits["crm_id"] = 1
	want := w.plan(r, ids...)
	// Sanity: the scenario exercises merge, attach and drop at once.
	if want.Survivor != 10 || !slices.Equal(want.Merge, []int64{11}) || len(want.Attach) == 0 || len(want.Dropped) == 0 {
		t.Fatalf("baseline decision = %+v, want survivor 10 merging 11 with attaches and drops", want)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 200 {
		shuffled := slices.Clone(ids)
		rng.Shuffle(len(shuffled), func(a, b int) { shuffled[a], shuffled[b] = shuffled[b], shuffled[a] })
		// Also shuffle each customer's identities, as the store returns
		// them in no particular order.
		existing := w.existing(ids)
		for c := range existing {
			held := slices.Clone(existing[c])
			rng.Shuffle(len(held), func(a, b int) { held[a], held[b] = held[b], held[a] })
			existing[c] = held
		}
		got := r.Plan(shuffled, w.owners(ids), existing)
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("shuffle %d: Plan(%v) = %+v, want %+v", i, shuffled, got, want)
		}
	}
}

func TestPlanDoesNotModifyInput(t *testing.T) {
	ids := []Identity{email("b@x.com"), uid("u1"), email("a@x.com")}
	before := slices.Clone(ids)
	world{}.plan(DefaultRules(), ids...)
	if !slices.Equal(ids, before) {
		t.Errorf("ids after Plan = %v, want unchanged %v", ids, before)
	}
}

func TestRulesLimit(t *testing.T) {
	r := DefaultRules()
	for typ, want := range map[string]int{TypeUserID: 1, TypeEmail: 5, TypePhone: 5, TypeAnonymousID: 5, "crm_id": 5} {
		if got := r.Limit(typ); got != want {
			t.Errorf("DefaultRules().Limit(%q) = %d, want %d", typ, got, want)
		}
	}
	if err := r.Validate(); err != nil {
		t.Errorf("DefaultRules().Validate() = %v, want nil", err)
	}
}

func TestRulesValidate(t *testing.T) {
	for _, tc := range []struct {
		name  string
		rules Rules
		want  []string // substrings of the error; nil means valid
	}{
		{name: "default", rules: DefaultRules()},
		{name: "full", rules: Rules{Limits: map[string]int{"crm_id": 2, TypeUserID: 1}, DefaultLimit: 3,
			Priority: []string{"crm_id", TypeUserID}, Blocked: []string{"test"}}},
		{name: "zero value", rules: Rules{}, want: []string{"default limit is 0"}},
		{name: "zero limit", rules: Rules{DefaultLimit: 5, Limits: map[string]int{TypeEmail: 0}},
			want: []string{`limit for "email" is 0`}},
		{name: "negative limit", rules: Rules{DefaultLimit: 5, Limits: map[string]int{TypeEmail: -1}},
			want: []string{`limit for "email" is -1`}},
		{name: "bad limit type", rules: Rules{DefaultLimit: 5, Limits: map[string]int{"Email": 2}},
			want: []string{`limit for "Email": invalid identity type`}},
		{name: "bad priority type", rules: Rules{DefaultLimit: 5, Priority: []string{"email", "1x"}},
			want: []string{`priority entry 1 "1x": invalid identity type`}},
		{name: "duplicate priority", rules: Rules{DefaultLimit: 5, Priority: []string{"email", "user_id", "email"}},
			want: []string{`priority entry 2 "email": listed more than once`}},
		{name: "all problems reported", rules: Rules{Limits: map[string]int{"phone": 0}, Priority: []string{"a", "a"}},
			want: []string{"default limit is 0", `limit for "phone" is 0`, `"a": listed more than once`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.rules.Validate()
			if tc.want == nil {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate() = nil, want error containing %q", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate() = %q, want it to contain %q", err, w)
				}
			}
		})
	}
}

func TestRank(t *testing.T) {
	builtin := DefaultRules()
	order := []string{TypeUserID, TypeEmail, TypePhone, "crm_id", TypeAnonymousID}
	for i := 1; i < len(order); i++ {
		if hi, lo := builtin.Rank(order[i-1]), builtin.Rank(order[i]); hi <= lo {
			t.Errorf("Rank(%s) = %d, Rank(%s) = %d, want the first higher", order[i-1], hi, order[i], lo)
		}
	}
	if got, want := builtin.Rank("crm_id"), Priority("crm_id"); got != want {
		t.Errorf("Rank(crm_id) without list = %d, want Priority() %d", got, want)
	}

	r := Rules{Priority: []string{"crm_id", TypeEmail, TypeAnonymousID}}
	order = []string{"crm_id", TypeEmail, TypeAnonymousID, TypeUserID, TypePhone, "other_id"}
	for i := 1; i < len(order); i++ {
		if hi, lo := r.Rank(order[i-1]), r.Rank(order[i]); hi <= lo {
			t.Errorf("explicit Rank(%s) = %d, Rank(%s) = %d, want the first higher", order[i-1], hi, order[i], lo)
		}
	}
}

func TestPriority(t *testing.T) {
	for typ, want := range map[string]int{TypeUserID: 400, TypeEmail: 300, TypePhone: 200, "crm_id": 100, TypeAnonymousID: 0} {
		if got := Priority(typ); got != want {
			t.Errorf("Priority(%q) = %d, want %d", typ, got, want)
		}
	}
}

func TestIsBlocked(t *testing.T) {
	r := Rules{Blocked: []string{"test@example.com", " Guest "}}
	for v, want := range map[string]bool{
		"test@example.com": true, " TEST@example.COM ": true, "guest": true, "GUEST": true,
		"guest2": false, "null": false, "": false,
	} {
		if got := r.IsBlocked(v); got != want {
			t.Errorf("IsBlocked(%q) = %v, want %v", v, got, want)
		}
	}
}

// An entry is also blocked in the forms ingest normalizes identities to:
// a phone number as people write it in E.164, an address written with
// mailto: without it. The entry as written stays blocked too.
func TestWithNormalizedBlocked(t *testing.T) {
	r := Rules{Blocked: []string{"(415) 555-0100", "mailto:QA@Example.com", "test-device"}}.WithNormalizedBlocked(Normalizer{DefaultRegion: "US"})
	for v, want := range map[string]bool{
		"+14155550100": true, "(415) 555-0100": true,
		"qa@example.com": true, "mailto:qa@example.com": true,
		"test-device": true, "other@example.com": false,
	} {
		if got := r.IsBlocked(v); got != want {
			t.Errorf("IsBlocked(%q) = %v, want %v (blocked %q)", v, got, want, r.Blocked)
		}
	}
	if got, want := len(r.Blocked), 5; got != want {
		t.Errorf("blocked %q: %d entries, want %d", r.Blocked, got, want)
	}
}

func TestSort(t *testing.T) {
	in := []Identity{email("b@x.com"), uid("u1"), email("a@x.com"), email("b@x.com"), anon("z"), uid("u1")}
	before := slices.Clone(in)
	got := Sort(in)
	want := []Identity{anon("z"), email("a@x.com"), email("b@x.com"), uid("u1")}
	if !slices.Equal(got, want) {
		t.Errorf("Sort(%v) = %v, want %v", before, got, want)
	}
	if !slices.Equal(in, before) {
		t.Errorf("Sort modified its input: %v, want %v", in, before)
	}
	if got := Sort(nil); len(got) != 0 {
		t.Errorf("Sort(nil) = %v, want empty", got)
	}
}

// fnv1a is an independent FNV-1a 64 implementation, so that TestKey pins
// the documented algorithm rather than whatever Key happens to do.
func fnv1a(data []byte) uint64 {
	h := uint64(14695981039346656037)
	for _, c := range data {
		h ^= uint64(c)
		h *= 1099511628211
	}
	return h
}

func TestKey(t *testing.T) {
	id := email("a@x.com")
	data := append([]byte{0, 0, 0, 0, 0, 0, 0, 42}, "email\x00a@x.com"...)
	if got, want := Key(42, id), int64(fnv1a(data)); got != want {
		t.Errorf("Key(42, %v) = %d, want %d", id, got, want)
	}
	if got, want := Key(42, id), int64(6898784680800666313); got != want {
		t.Errorf("Key(42, %v) = %d, want %d", id, got, want)
	}
	// Pinned values (cross-checked with an external FNV-1a): lock keys
	// must not change between releases.
	if got, want := Key(1, uid("u1")), int64(3568626164540529263); got != want {
		t.Errorf("Key(1, user_id u1) = %d, want %d", got, want)
	}
	if got, want := Key(1, uid("u1")), Key(1, uid("u1")); got != want {
		t.Errorf("Key not stable: %d, then %d", got, want)
	}
	if Key(1, id) == Key(2, id) {
		t.Errorf("Key(1, %v) == Key(2, %v), want different keys per workspace", id, id)
	}
	if Key(1, Identity{"ab", "c"}) == Key(1, Identity{"a", "bc"}) {
		t.Error("Key does not separate type from value")
	}
	if Key(1, email("a@x.com")) == Key(1, email("b@x.com")) {
		t.Error("Key ignores the value")
	}
}

func TestPlanApartNeverMergesSeparatedCustomers(t *testing.T) {
	w := world{
		3:  {email("a@x.com")},
		9:  {phone("+14155550100")},
		12: {anon("a1")},
	}
	ids := []Identity{email("a@x.com"), phone("+14155550100"), anon("a1")}
	apart := func(a, b int64) bool { return min(a, b) == 3 && max(a, b) == 9 }
	got := DefaultRules().PlanApart(ids, w.owners(ids), w.existing(ids), apart)
	// email outranks phone: customer 3 is chosen, 9 is kept apart, 12 merges.
	checkDecision(t, got, Decision{
		Survivor: 3,
		Merge:    []int64{12},
		Dropped:  []Dropped{drop(phone("+14155550100"))},
	})
	if !strings.HasPrefix(got.Dropped[0].Reason, "split:") {
		t.Errorf("reason = %q, want a split: reason", got.Dropped[0].Reason)
	}
	// Without the separation the same input merges all three.
	checkDecision(t, DefaultRules().Plan(ids, w.owners(ids), w.existing(ids)), Decision{Survivor: 3, Merge: []int64{9, 12}})
}

// An event whose identities that are not blocked all belong to one
// customer resolves to it without that customer's identities being read:
// Plan given no identities decides exactly what the full resolution decides
// given all of them, whatever the limits, priorities and block list. The
// customers include some over a limit, as after a limit was lowered.
func TestPlanSettledNeedsNoExistingIdentities(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	pool := []Identity{uid("u1"), uid("u2"), email("a@x.com"), email("b@x.com"), email("c@x.com"),
		phone("+14155550100"), anon("d1"), anon("d2"), {"crm_id", "c1"}, {"crm_id", "c2"}}
	settled := 0
	for i := range 2000 {
		r := DefaultRules()
		for _, typ := range []string{TypeUserID, TypeEmail, TypeAnonymousID, "crm_id"} {
			r.Limits[typ] = 1 + rng.IntN(2)
		}
		if rng.IntN(3) == 0 {
			r.Priority = []string{TypeEmail, TypeUserID}
		}
		if rng.IntN(4) == 0 {
			r.Blocked = []string{pool[rng.IntN(len(pool))].Value}
		}
		// Each identity of the pool belongs to customer 1 or 2, or to
		// no one.
		w := world{}
		for _, id := range pool {
			if c := int64(rng.IntN(3)); c > 0 {
				w[c] = append(w[c], id)
			}
		}
		var ids []Identity
		for _, id := range pool {
			if rng.IntN(3) == 0 {
				ids = append(ids, id)
			}
		}
		owners := w.owners(ids)
		d, candidates := r.screen(ids)
		if r.SettledBy(ids, owners) == 0 {
			if r.SettledBy(candidates, owners) != 0 {
				t.Fatalf("case %d: SettledBy(%v) = 0, but one customer owns %v", i, ids, candidates)
			}
			continue
		}
		settled++
		want := r.resolve(d, candidates, owners, w.existing(ids), nil)
		if got := r.Plan(ids, owners, nil); !reflect.DeepEqual(got, want) {
			t.Fatalf("case %d: rules %+v, world %v: Plan(%v) without existing identities = %+v, want %+v", i, r, w, ids, got, want)
		}
	}
	if settled < 200 {
		t.Fatalf("only %d settled cases; the test would prove little", settled)
	}
}

func TestSettledBy(t *testing.T) {
	owners := map[Identity]int64{uid("u1"): 7, email("a@x.com"): 7, email("b@x.com"): 8}
	r := DefaultRules()
	r.Blocked = []string{"b@x.com"}
	for _, tc := range []struct {
		ids  []Identity
		want int64
	}{
		{nil, 0},
		{[]Identity{uid("u1")}, 7},
		{[]Identity{uid("u1"), email("a@x.com")}, 7},
		{[]Identity{uid("u1"), email("c@x.com")}, 0},
		{[]Identity{uid("u1"), anon("new")}, 0},
		{[]Identity{anon("new"), uid("u1")}, 0},
		// A blocked identity is dropped whoever owns it.
		{[]Identity{uid("u1"), email("b@x.com")}, 7},
		// With every identity blocked, Plan decides nothing: not settled.
		{[]Identity{email("b@x.com")}, 0},
	} {
		if got := r.SettledBy(tc.ids, owners); got != tc.want {
			t.Errorf("SettledBy(%v) = %d, want %d", tc.ids, got, tc.want)
		}
	}
}
