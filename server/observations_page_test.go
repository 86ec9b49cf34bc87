package server_test

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/server"
)

// seedObservations stores n observations on customer cust, the i-th
// (0-based) text "<tag>-<i>", recorded i seconds before now (0 is the
// newest); those whose i is in verified are verified.
func seedObservations(t *testing.T, e *env, cust int64, tag string, n int, verified ...int) {
	t.Helper()
	if _, err := e.db.Pool.Exec(context.Background(), `INSERT INTO observations
		(workspace_id, customer_id, text, source, recorded_by, recorded_by_role, created_at, verified, verified_by, verified_at)
		SELECT $1, $2, $3 || '-' || i, 'seed', 'key seed', 'assistant', now() - i * interval '1 second',
			i = ANY($5), CASE WHEN i = ANY($5) THEN 'key seed' END, CASE WHEN i = ANY($5) THEN now() END
		FROM generate_series(0, $4 - 1) AS i`, e.ws, cust, tag, n, verified); err != nil {
		t.Fatal(err)
	}
}

// wantObservations is the order Customer.observations lists the first n
// of seedObservations' texts in: verified first, then newest first.
func wantObservations(tag string, total, n int, verified ...int) []string {
	var out []string
	for _, i := range verified {
		out = append(out, fmt.Sprintf("%s-%d", tag, i))
	}
	for i := 0; i < total; i++ {
		if !slices.Contains(verified, i) {
			out = append(out, fmt.Sprintf("%s-%d", tag, i))
		}
	}
	return out[:min(n, len(out))]
}

type observationTexts []struct{ Text string }

func (o observationTexts) texts() []string {
	out := make([]string, len(o))
	for i, x := range o {
		out[i] = x.Text
	}
	return out
}

// Customer.observations is a page: first (default 20, at most 100)
// observations, verified first, then newest first, each customer's of a
// list bounded on its own. Before, it listed every unexpired observation,
// whatever their number: 3,000 of 4,096 bytes made a 12 MB answer.
func TestCustomerObservationsArePaged(t *testing.T) {
	e := newEnv(t)
	jane := ingest(t, e.db, e.ws, email("jane.obs@example.com"), nil)
	seedObservations(t, e, jane, "jane", 150, 7, 120)
	const one = `query($id: ID!, $n: Int) { customer(id: $id) { observations(first: $n) { text } } }`
	read := func(n any) (*response, []string) {
		t.Helper()
		vars := map[string]any{"id": fmt.Sprint(jane)}
		if n != nil {
			vars["n"] = n
		}
		var out struct {
			Customer struct{ Observations observationTexts }
		}
		r := gql(t, e.srv, e.key, one, vars)
		if r.code() == "" {
			r.ok(t, &out)
		}
		return r, out.Customer.Observations.texts()
	}
	if _, got := read(nil); !slices.Equal(got, wantObservations("jane", 150, 20, 7, 120)) {
		t.Errorf("observations (default first): %d %q, want the first 20: %q", len(got), got, wantObservations("jane", 150, 20, 7, 120))
	}
	// Without the argument at all, as clients before it asked.
	var plain struct {
		Customer struct{ Observations observationTexts }
	}
	gql(t, e.srv, e.key, `query($id: ID!) { customer(id: $id) { observations { text } } }`, map[string]any{"id": fmt.Sprint(jane)}).ok(t, &plain)
	if got := plain.Customer.Observations.texts(); len(got) != 20 {
		t.Errorf("observations without first: %d, want 20", len(got))
	}
	if _, got := read(100); !slices.Equal(got, wantObservations("jane", 150, 100, 7, 120)) {
		t.Errorf("observations(first: 100): %d, want the first 100 in order", len(got))
	}
	if _, got := read(3); !slices.Equal(got, []string{"jane-7", "jane-120", "jane-0"}) {
		t.Errorf("observations(first: 3) = %q, want the verified ones, then the newest", got)
	}
	for _, n := range []int{0, -1, 101} {
		r, _ := read(n)
		if r.code() != c360.EINVALID || r.Errors[0].Message != "first must be between 1 and 100" {
			t.Errorf("observations(first: %d): %s, want BAD_USER_INPUT first must be between 1 and 100", n, r.Body)
		}
	}

	// A list: each customer's own first n, in one statement per first.
	custs := []int64{jane}
	for i := range 3 {
		c := ingest(t, e.db, e.ws, email(fmt.Sprintf("c%d.obs@example.com", i)), nil)
		seedObservations(t, e, c, fmt.Sprintf("c%d", i), 30+i, 29)
		custs = append(custs, c)
	}
	var list struct {
		Customers struct {
			Edges []struct {
				Node struct {
					ID   string
					A, B observationTexts
				}
			}
		}
	}
	gql(t, e.srv, e.key, `{ customers(first: 10) { edges { node { id a: observations(first: 2) { text } b: observations(first: 7) { text } } } } }`, nil).ok(t, &list)
	if len(list.Customers.Edges) != 4 {
		t.Fatalf("%d customers, want 4", len(list.Customers.Edges))
	}
	for _, edge := range list.Customers.Edges {
		tag, total, verified := "jane", 150, []int{7, 120}
		for i, c := range custs[1:] {
			if fmt.Sprint(c) == edge.Node.ID {
				tag, total, verified = fmt.Sprintf("c%d", i), 30+i, []int{29}
			}
		}
		if got, want := edge.Node.A.texts(), wantObservations(tag, total, 2, verified...); !slices.Equal(got, want) {
			t.Errorf("customer %s observations(first: 2) = %q, want %q", edge.Node.ID, got, want)
		}
		if got, want := edge.Node.B.texts(), wantObservations(tag, total, 7, verified...); !slices.Equal(got, want) {
			t.Errorf("customer %s observations(first: 7) = %q, want %q", edge.Node.ID, got, want)
		}
	}
	r := gql(t, e.srv, e.key, `{ customers(first: 10) { edges { node { id observations(first: 500) { text } } } } }`, nil)
	if r.code() != c360.EINVALID || r.Errors[0].Message != "first must be between 1 and 100" {
		t.Errorf("a list's observations(first: 500): %s, want BAD_USER_INPUT", r.Body)
	}

	// A mutation selecting it with a first the store refuses is refused
	// before it runs, as for a connection.
	r = gql(t, e.srv, e.key, `mutation { identify(input: {identities: [{type: "email", value: "new.obs@example.com"}]}) {
		id observations(first: 101) { text } } }`, nil)
	wantRefusedBeforeRun(t, r, c360.EINVALID, "first must be between 1 and 100", "identify", "observations")
	var found struct{ CustomerByIdentity *struct{ ID string } }
	gql(t, e.srv, e.key, `{ customerByIdentity(type: "email", value: "new.obs@example.com") { id } }`, nil).ok(t, &found)
	if found.CustomerByIdentity != nil {
		t.Error("identify refused before it ran stored its customer")
	}
}

// Customer.observations is priced as a page of first items, each as a
// connection's row, so a list of customers with many observations each is
// refused under the default limit as a list of their events is. Before,
// the field cost 2 whatever it returned.
func TestCustomerObservationsArePricedAsAPage(t *testing.T) {
	srv, key := limitsEnv(t, false, server.Limits{})
	// 100 customers × 100 observations: 30,301, under the limit.
	gql(t, srv, key, `{ customers(first: 100) { edges { node { observations(first: 100) { text } } } } }`, nil).ok(t, nil)
	// Twice that, or 100 × 100 with four fields: over it.
	wantRefused(t, gql(t, srv, key, `{ a: customers(first: 100) { edges { node { observations(first: 100) { text } } } }
		b: customers(first: 100) { edges { node { observations(first: 100) { text } } } } }`, nil), "COMPLEXITY_LIMIT_EXCEEDED")
	wantRefused(t, gql(t, srv, key, `{ customers(first: 100) { edges { node { observations(first: 100) { id text source createdAt } } } } }`, nil),
		"COMPLEXITY_LIMIT_EXCEEDED")
	// The default page: 100 customers × 20 observations fit.
	gql(t, srv, key, `{ customers(first: 100) { edges { node { observations { id text source createdAt } } } } }`, nil).ok(t, nil)
}
