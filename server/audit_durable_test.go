package server_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/resolver"
)

// durableEnv is a server whose audit writer lingers an hour: a read
// written in the background is not in the log when the answer comes, so
// an entry found at once was written before the answer.
func durableEnv(t *testing.T, mode resolver.ReadAudit) (*rtEnv, map[c360.Role]string, int64) {
	t.Helper()
	e := newRTEnv(t, rtOptions{audit: true, auditLinger: time.Hour, readAudit: mode})
	keys := map[c360.Role]string{}
	for _, role := range []c360.Role{c360.RoleAssistant, c360.RoleAgent} {
		key, _, err := e.db.CreateAPIKey(context.Background(), workspaceSlug(t, e), role, nil)
		if err != nil {
			t.Fatal(err)
		}
		keys[role] = key
	}
	cust := ingest(t, e.db, e.ws, []c360.Identity{{Type: "phone", Value: "+14155550161"}}, map[string]any{"name": "Ann Lee", "plan": "pro"})
	return e, keys, cust
}

// entriesNow returns the workspace's audit entries of action now, without
// flushing the background writer.
func entriesNow(t *testing.T, e *rtEnv, action string) []*c360.AuditEntry {
	t.Helper()
	entries, _, _, err := e.db.FindAuditEntries(context.Background(), e.ws, c360.AuditFilter{First: 100, Action: action})
	if err != nil {
		t.Fatal(err)
	}
	return entries
}

// failAudit makes every insert into the workspace's audit log fail, as a
// full disk or a lost table would, until the test ends.
func failAudit(t *testing.T, e *rtEnv) {
	t.Helper()
	ctx := context.Background()
	name := fmt.Sprintf("fail_audit_%d", e.ws)
	for _, sql := range []string{
		`CREATE FUNCTION ` + name + `() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'audit unavailable (test)'; END $$`,
		fmt.Sprintf(`CREATE TRIGGER %s BEFORE INSERT ON audit_log FOR EACH ROW WHEN (NEW.workspace_id = %d) EXECUTE FUNCTION %s()`, name, e.ws, name),
	} {
		if _, err := e.db.Pool.Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		if _, err := e.db.Pool.Exec(context.Background(), `DROP TRIGGER `+name+` ON audit_log; DROP FUNCTION `+name+`()`); err != nil {
			t.Error(err)
		}
	})
}

const durableQuery = `query Card($id: ID!) { customer(id: $id) { traits } }`

// By default an assistant's read is in the audit log when its answer
// arrives; a console's is written in the background (the writer here
// lingers an hour, so it is not there yet). With ReadAuditAll the
// console's is there too.
func TestAssistantReadsAreRecordedBeforeTheAnswer(t *testing.T) {
	e, keys, cust := durableEnv(t, resolver.ReadAuditAssistant)
	vars := map[string]any{"id": fmt.Sprint(cust)}
	gql(t, e.srv, keys[c360.RoleAssistant], durableQuery, vars).ok(t, nil)
	reads := entriesNow(t, e, c360.AuditCustomerRead)
	if len(reads) != 1 || reads[0].CustomerID != cust || reads[0].Role != c360.RoleAssistant {
		t.Fatalf("customer.read entries when the answer came = %+v, want the assistant's read of %d", reads, cust)
	}
	gql(t, e.srv, keys[c360.RoleAgent], durableQuery, vars).ok(t, nil)
	if got := entriesNow(t, e, c360.AuditPIIRead); len(got) != 0 {
		t.Errorf("the agent's pii.read was written before its answer: %+v (ReadAuditAssistant writes it in the background)", got)
	}
	if err := e.audit.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := entriesNow(t, e, c360.AuditPIIRead); len(got) != 1 || got[0].Role != c360.RoleAgent {
		t.Errorf("pii.read entries after a flush = %+v, want the agent's", got)
	}

	all, allKeys, allCust := durableEnv(t, resolver.ReadAuditAll)
	gql(t, all.srv, allKeys[c360.RoleAgent], durableQuery, map[string]any{"id": fmt.Sprint(allCust)}).ok(t, nil)
	if got := entriesNow(t, all, c360.AuditPIIRead); len(got) != 1 || got[0].CustomerID != allCust {
		t.Errorf("with ReadAuditAll, pii.read entries when the agent's answer came = %+v, want its read of %d", got, allCust)
	}
}

// When an assistant's read cannot be recorded, nothing it read leaves:
// the answer is UNAVAILABLE, without data and without the database's
// error. A console's read, recorded in the background, is still served.
// With ReadAuditAsync the assistant is served too, as before.
func TestAssistantReadIsRefusedWhenItCannotBeRecorded(t *testing.T) {
	e, keys, cust := durableEnv(t, resolver.ReadAuditAssistant)
	failAudit(t, e)
	vars := map[string]any{"id": fmt.Sprint(cust)}
	r := gql(t, e.srv, keys[c360.RoleAssistant], durableQuery, vars)
	r.wantCode(t, string(c360.EUNAVAILABLE))
	if strings.Contains(r.Body, "plan") || strings.Contains(r.Body, "pro") || strings.Contains(r.Body, "test)") {
		t.Errorf("the refusal carries the data or the database's error: %s", r.Body)
	}
	if len(r.Errors) != 1 || !strings.Contains(r.Errors[0].Message, "audit log") {
		t.Errorf("errors = %+v, want one saying the audit log could not record the read", r.Errors)
	}
	var agent struct {
		Customer struct{ Traits map[string]any }
	}
	gql(t, e.srv, keys[c360.RoleAgent], durableQuery, vars).ok(t, &agent)
	if agent.Customer.Traits["plan"] != "pro" {
		t.Errorf("the agent's answer = %+v, want the traits", agent)
	}

	// A mutation's change is made: its answer stands (its reads are queued
	// for the background writer), as a change whose own entry fails.
	// (An assistant key with the pii scope reads the text it recorded
	// unmasked: a pii.read to record.)
	piiKey, _, err := e.db.CreateAPIKey(context.Background(), workspaceSlug(t, e), c360.RoleAssistant, []string{c360.ScopePII})
	if err != nil {
		t.Fatal(err)
	}
	var obs struct{ RecordObservation struct{ ID, Text string } }
	gql(t, e.srv, piiKey, `mutation($id: ID!) { recordObservation(customerId: $id, text: "prefers email at ann@example.com") { id text } }`,
		vars).ok(t, &obs)
	if obs.RecordObservation.ID == "" || count(t, e.db, "observations", e.ws) != 1 {
		t.Errorf("recordObservation answered %+v with %d observations stored, want the one it made", obs, count(t, e.db, "observations", e.ws))
	}

	async, asyncKeys, asyncCust := durableEnv(t, resolver.ReadAuditAsync)
	failAudit(t, async)
	gql(t, async.srv, asyncKeys[c360.RoleAssistant], durableQuery, map[string]any{"id": fmt.Sprint(asyncCust)}).ok(t, nil)
}

// An assistant's subscription whose read of a change cannot be recorded
// does not deliver the change: the websocket closes with 1013, and the
// client resubscribes from its last cursor. Once the log records again,
// the resubscription delivers the change.
func TestAssistantSubscriptionChangeNotDeliveredUnrecorded(t *testing.T) {
	e, keys, cust := durableEnv(t, resolver.ReadAuditAssistant)
	const sub = `subscription Diffs($id: ID!, $after: String) { customerChanged(id: $id, after: $after) { kind cursor diff } }`
	c := dialWS(t, wsURL(e.srv), "graphql-transport-ws", nil)
	c.init(keys[c360.RoleAssistant])
	c.subscribe("d", sub, map[string]any{"id": fmt.Sprint(cust)})
	waitFor(t, "the subscription to start", func() bool { return e.hub.Stats().Streams >= 1 })
	ingest(t, e.db, e.ws, []c360.Identity{{Type: "phone", Value: "+14155550161"}}, map[string]any{"plan": "enterprise"})
	first := c.nextChange("d")

	failAudit(t, e)
	ingest(t, e.db, e.ws, []c360.Identity{{Type: "phone", Value: "+14155550161"}}, map[string]any{"plan": "team"})
	for {
		c.c.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, raw, err := c.c.ReadMessage()
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			if ce.Code != 1013 || !strings.Contains(ce.Text, "Audit log") {
				t.Fatalf("close %d %q, want 1013 (try again later) naming the audit log", ce.Code, ce.Text)
			}
			break
		} else if err != nil {
			t.Fatalf("want a close frame, got %v", err)
		}
		if strings.Contains(string(raw), "team") {
			t.Fatalf("the change was delivered unrecorded: %s", raw)
		}
	}
	if _, err := e.db.Pool.Exec(context.Background(), fmt.Sprintf(`DROP TRIGGER fail_audit_%d ON audit_log`, e.ws)); err != nil {
		t.Fatal(err)
	}
	if _, err := e.db.Pool.Exec(context.Background(), fmt.Sprintf(`CREATE TRIGGER fail_audit_%d BEFORE INSERT ON audit_log FOR EACH ROW WHEN (false) EXECUTE FUNCTION fail_audit_%d()`, e.ws, e.ws)); err != nil {
		t.Fatal(err) // put back harmless, for failAudit's cleanup
	}
	again := dialWS(t, wsURL(e.srv), "graphql-transport-ws", nil)
	again.init(keys[c360.RoleAssistant])
	again.subscribe("d", sub, map[string]any{"id": fmt.Sprint(cust), "after": first.Cursor})
	if ch := again.nextChange("d"); !strings.Contains(fmt.Sprint(ch.Diff), "team") {
		t.Errorf("the change after the resubscription = %s, want the one not delivered (plan team)", ch.Diff)
	}
}

// Over SSE, which has no close code to resume on, an assistant's change
// whose read cannot be recorded ends the stream with UNAVAILABLE, saying
// why, and the change is not in it.
func TestAssistantSSEChangeNotDeliveredUnrecorded(t *testing.T) {
	e, keys, cust := durableEnv(t, resolver.ReadAuditAssistant)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	resp := postSSE(t, ctx, e.srv.URL, keys[c360.RoleAssistant],
		`subscription($id: ID!) { customerChanged(id: $id) { kind diff } }`, map[string]any{"id": fmt.Sprint(cust)})
	waitFor(t, "the subscription to start", func() bool { return e.hub.Stats().Streams >= 1 })
	failAudit(t, e)
	ingest(t, e.db, e.ws, []c360.Identity{{Type: "phone", Value: "+14155550161"}}, map[string]any{"plan": "team"})
	r := newSSEReader(resp.Body)
	var events []string
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			data, ok := r.next()
			if !ok {
				return
			}
			events = append(events, data)
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		cancel()
		<-done
		t.Fatalf("the stream did not end; events so far: %q", events)
	}
	all := strings.Join(events, "\n")
	if strings.Contains(all, "team") || !strings.Contains(all, `"UNAVAILABLE"`) || !strings.Contains(all, "audit log") {
		t.Errorf("stream events %q, want one UNAVAILABLE error naming the audit log, and no change", events)
	}
}
