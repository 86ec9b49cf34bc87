package segment

import (
	"bytes"
	"encoding/json"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/c360dev/c360"
)

var received = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

func TestCanonical(t *testing.T) {
	for _, tc := range []struct {
		name, typ, body string
		check           func(t *testing.T, ev *c360.Event)
		err             string
	}{
		{name: "identify", typ: "identify", body: `{"userId":"u1","anonymousId":"a1","traits":{"email":"x@y.z"},"messageId":"m1"}`,
			check: func(t *testing.T, ev *c360.Event) {
				if len(ev.Identities) != 2 || ev.Identities[0] != (c360.Identity{Type: "user_id", Value: "u1"}) ||
					ev.Identities[1] != (c360.Identity{Type: "anonymous_id", Value: "a1"}) {
					t.Errorf("identities = %v", ev.Identities)
				}
				if ev.Traits["email"] != "x@y.z" || ev.DedupeKey != "m1" || ev.Source != "segment" {
					t.Errorf("event = %+v", ev)
				}
			}},
		{name: "numeric ids", typ: "track", body: `{"userId":12345678901234567890,"anonymousId":-1.5e3,"event":"E","messageId":7}`,
			check: func(t *testing.T, ev *c360.Event) {
				if ev.Identities[0].Value != "12345678901234567890" || ev.Identities[1].Value != "-1.5e3" || ev.DedupeKey != "7" {
					t.Errorf("ids = %v, key %q", ev.Identities, ev.DedupeKey)
				}
			}},
		{name: "escaped id", typ: "track", body: `{"userId":"a\"b\u00e9","event":"E"}`,
			check: func(t *testing.T, ev *c360.Event) {
				if ev.Identities[0].Value != `a"bé` {
					t.Errorf("userId = %q", ev.Identities[0].Value)
				}
			}},
		{name: "track drops traits", typ: "track", body: `{"userId":"u","event":"E","traits":{"a":1}}`,
			check: func(t *testing.T, ev *c360.Event) {
				if ev.Traits != nil || ev.Name != "E" {
					t.Errorf("event = %+v", ev)
				}
			}},
		{name: "page category kept when set in properties", typ: "page", body: `{"userId":"u","name":"P","category":"C","properties":{"category":"own"}}`,
			check: func(t *testing.T, ev *c360.Event) {
				if ev.Properties["category"] != "own" || ev.Name != "P" {
					t.Errorf("properties = %v", ev.Properties)
				}
			}},
		{name: "screen category", typ: "screen", body: `{"userId":"u","name":"S","category":"C"}`,
			check: func(t *testing.T, ev *c360.Event) {
				if ev.Properties["category"] != "C" {
					t.Errorf("properties = %v", ev.Properties)
				}
			}},
		{name: "alias previousId = anonymousId", typ: "alias", body: `{"userId":"u","anonymousId":"a","previousId":"a"}`,
			check: func(t *testing.T, ev *c360.Event) {
				if *ev.PreviousID != (c360.Identity{Type: "anonymous_id", Value: "a"}) {
					t.Errorf("previousId = %v", ev.PreviousID)
				}
			}},
		{name: "alias previousId left to the handler", typ: "alias", body: `{"userId":"u","previousId":"p"}`,
			check: func(t *testing.T, ev *c360.Event) {
				if ev.PreviousID.Type != aliasUnresolved || ev.PreviousID.Value != "p" {
					t.Errorf("previousId = %v", ev.PreviousID)
				}
			}},
		{name: "generated messageId", typ: "track", body: `{"userId":"u","event":"E"}`,
			check: func(t *testing.T, ev *c360.Event) {
				if !strings.HasPrefix(ev.DedupeKey, "c360-") || len(ev.DedupeKey) != 37 {
					t.Errorf("dedupe key = %q", ev.DedupeKey)
				}
			}},
		{name: "no ids", typ: "identify", body: `{"userId":null,"anonymousId":""}`, err: "no userId or anonymousId"},
		{name: "alias without userId", typ: "alias", body: `{"anonymousId":"a","previousId":"p"}`, err: "no userId"},
		{name: "group without groupId", typ: "group", body: `{"userId":"u"}`, err: "no groupId"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := ParseCall([]byte(tc.body))
			if err != nil {
				t.Fatalf("ParseCall: %v", err)
			}
			ev, err := m.Canonical(callTypes[tc.typ], received, time.Time{})
			if tc.err != "" {
				if err == nil || !strings.Contains(c360.ErrorMessage(err), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, ev)
		})
	}
}

// A number no 64-bit float holds, in traits, properties or context,
// refuses the call naming where it is, never the number.
func TestNumberTooLargeIsNamedByItsPath(t *testing.T) {
	for body, want := range map[string]string{
		`{"type":"track","userId":"u","event":"E","properties":{"n":1e400}}`:                 "properties.n: a number too large for a 64-bit float",
		`{"type":"identify","userId":"u","traits":{"plan":{"seats":[1,-1e400]}}}`:            "traits.plan.seats[1]: a number too large for a 64-bit float",
		`{"type":"track","userId":"u","event":"E","context":{"screen":{"width":2e999}}}`:     "context.screen.width: a number too large for a 64-bit float",
		`{"type":"track","userId":"u","event":"E","properties":{"n":1e400},"messageId":"m"}`: "properties.n: a number too large for a 64-bit float",
	} {
		m, err := ParseCall([]byte(body))
		if c360.ErrorCode(err) != c360.EINVALID || c360.ErrorMessage(err) != want {
			t.Errorf("ParseCall(%s) = %v, want BAD_USER_INPUT %q", body, err, want)
		}
		if strings.Contains(body, `"messageId"`) && (m == nil || m.MessageID != "m") {
			t.Errorf("ParseCall(%s) lost the messageId: %+v", body, m)
		}
		b, err := ParseBatch([]byte(`{"batch":[` + body + `]}`))
		if err != nil || len(b.Items) != 1 || c360.ErrorMessage(b.Items[0].Err) != want {
			t.Errorf("ParseBatch of %s = %+v, %v; want the item refused with %q", body, b, err, want)
		}
	}
}

func TestOccurredAt(t *testing.T) {
	ts := "2025-03-01T10:59:50Z"
	for _, tc := range []struct {
		name, body string
		batchSent  time.Time
		want       time.Time
	}{
		{"no timestamp", `{}`, time.Time{}, received},
		{"timestamp only", `{"timestamp":"` + ts + `"}`, time.Time{}, time.Date(2025, 3, 1, 10, 59, 50, 0, time.UTC)},
		{"originalTimestamp", `{"originalTimestamp":"` + ts + `"}`, time.Time{}, time.Date(2025, 3, 1, 10, 59, 50, 0, time.UTC)},
		{"skew from the call's sentAt", `{"timestamp":"` + ts + `","sentAt":"2025-03-01T11:00:00Z"}`, time.Time{}, received.Add(-10 * time.Second)},
		{"skew from the batch's sentAt", `{"timestamp":"` + ts + `"}`, time.Date(2025, 3, 1, 11, 0, 0, 0, time.UTC), received.Add(-10 * time.Second)},
		{"the call's sentAt wins", `{"timestamp":"` + ts + `","sentAt":"2025-03-01T11:00:05Z"}`, time.Date(2025, 3, 1, 11, 0, 0, 0, time.UTC), received.Add(-15 * time.Second)},
		{"offset and fraction", `{"timestamp":"2025-03-01T12:59:50.5+02:00"}`, time.Time{}, time.Date(2025, 3, 1, 10, 59, 50, 5e8, time.UTC)},
		{"no zone", `{"timestamp":"2025-03-01T10:59:50"}`, time.Time{}, time.Date(2025, 3, 1, 10, 59, 50, 0, time.UTC)},
		{"unparseable", `{"timestamp":"soon"}`, time.Time{}, received},
		{"not a string", `{"timestamp":1700000000}`, time.Time{}, received},
		{"years ahead", `{"timestamp":"2999-01-01T00:00:00Z"}`, time.Time{}, received},
		{"a day ahead is believed", `{"timestamp":"` + received.Add(23*time.Hour).Format(time.RFC3339) + `"}`, time.Time{}, received.Add(23 * time.Hour)},
		{"ahead after the skew correction", `{"timestamp":"2999-01-01T00:00:00Z","sentAt":"2999-01-01T00:00:00Z"}`, time.Time{}, received},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var m Message
			if err := json.Unmarshal([]byte(tc.body), &m); err != nil {
				t.Fatal(err)
			}
			if got := occurredAt(&m, received, tc.batchSent); !got.Equal(tc.want) {
				t.Errorf("occurredAt = %s, want %s", got, tc.want)
			}
		})
	}
}

// Each spelling of a time that clients print reads as the instant it
// names; what is not a time is absent and marked Invalid.
func TestTimeSpellings(t *testing.T) {
	noon := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		in      string
		want    time.Time
		invalid bool
	}{
		{`"2025-03-01T12:00:00Z"`, noon, false},
		{`"2025-03-01T12:00:00.123456789Z"`, noon.Add(123456789), false},
		{`"2025-03-01T14:00:00+02:00"`, noon, false},
		{`"2025-03-01 12:00:00+00:00"`, noon, false},            // RFC 3339's space; Python's str(datetime)
		{`"2025-03-01 12:00:00.5+00:00"`, noon.Add(5e8), false}, // with microseconds
		{`"2025-03-01 12:00:00"`, noon, false},                  // no zone: UTC
		{`"2025-03-01T12:00:00"`, noon, false},                  // no zone: UTC
		{`"2025-03-01T12:00:00.000+00"`, noon, false},           // hour-only offset
		{`"2025-03-01T09:00:00-03"`, noon, false},               // hour-only offset
		{`"2025-03-01T14:00:00+0200"`, noon, false},             // offset without colon
		{`"2025-03-01T12:00Z"`, noon, false},                    // minute precision
		{`"2025-03-01T14:00+02:00"`, noon, false},               // minute precision
		{`"2025-03-01 12:00"`, noon, false},                     // minute precision, no zone
		{`"2025-03-01t12:00:00z"`, noon, false},                 // lowercase t and z
		{`"2025-03-01 12:00:00z"`, noon, false},                 // space and lowercase z
		{`"2025-03-01T12:00:00\u005a"`, noon, false},            // an escape
		{`"2025-03-01"`, time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC), false},
		{`null`, time.Time{}, false},
		{`""`, time.Time{}, false},
		{`"yesterday"`, time.Time{}, true},
		{`"2025-03-01T25:00:00Z"`, time.Time{}, true},
		{`"01/03/2025"`, time.Time{}, true},
		{`1740830400`, time.Time{}, true},
		{`{"t":1}`, time.Time{}, true},
	} {
		var got Time
		if err := json.Unmarshal([]byte(tc.in), &got); err != nil {
			t.Errorf("%s: %v", tc.in, err)
			continue
		}
		if !got.Time.Equal(tc.want) || got.Invalid != tc.invalid {
			t.Errorf("%s = %s (invalid %v), want %s (invalid %v)", tc.in, got.Time, got.Invalid, tc.want, tc.invalid)
		}
	}
}

func TestParseBatch(t *testing.T) {
	body := `{"sentAt":"2025-03-01T11:00:00Z","context":{"library":{"name":"x"},"ip":"1.2.3.4"},
		"batch":[{"type":"track","userId":"u","event":"E","context":{"ip":"5.6.7.8"}},
		         {"type":"identify","anonymousId":"a"}],
		"writeKey":"k","integrations":{"All":true}}`
	b, err := ParseBatch([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	if b.WriteKey != "k" || !b.SentAt.Equal(time.Date(2025, 3, 1, 11, 0, 0, 0, time.UTC)) || len(b.Items) != 2 {
		t.Fatalf("batch = %+v", b)
	}
	rs := b.Events(received)
	if cx := storedContext(t, &rs[0]); cx["ip"] != "5.6.7.8" || cx["library"] == nil {
		t.Errorf("item context = %v, want its own ip and the batch's library", cx)
	}
	if cx := storedContext(t, &rs[1]); cx["ip"] != "1.2.3.4" {
		t.Errorf("second item context = %v, want the batch's", cx)
	}
	if size := b.Items[1].Size; size != len(`{"type":"identify","anonymousId":"a"}`) {
		t.Errorf("item size = %d, want the item's exact length", size)
	}
	// A batch of valid calls followed by anything but white space is
	// refused whole, not read up to its first value.
	const call = `{"type":"track","userId":"u","event":"E"}`
	for _, bad := range []string{``, `[]`, `{"batch":[}`, `{"batch":[{"type":"track"}]} trailing`, `{"batch":"x"}`, `{"batch":[1]`, `{}`,
		`{"batch":[` + call + `]} junk`, `{"batch":[` + call + `]}{"batch":[` + call + `]}`, `{"batch":[` + call + `]}]`, `{"batch":[` + call + `]} "x"`} {
		if _, err := ParseBatch([]byte(bad)); c360.ErrorCode(err) != c360.EINVALID {
			t.Errorf("ParseBatch(%q) = %v, want EINVALID", bad, err)
		}
	}
	if b, err := ParseBatch([]byte(`{"batch":[` + call + `]}` + " \r\n\t")); err != nil || len(b.Items) != 1 || b.Items[0].Err != nil {
		t.Errorf("a batch followed by white space: %+v, %v; want its call", b, err)
	}
	for _, bad := range []string{call + ` junk`, call + call} {
		if _, err := ParseCall([]byte(bad)); c360.ErrorCode(err) != c360.EINVALID {
			t.Errorf("ParseCall(%q) = %v, want EINVALID", bad, err)
		}
	}
	if b, err := ParseBatch([]byte(`{"batch":null}`)); c360.ErrorCode(err) != c360.EINVALID || c360.ErrorMessage(err) != "batch: want an array, got null" {
		t.Errorf("null batch: %v, %v; want refused", b, err)
	}
	// The batch's own context is read as a call's: an object, numbers
	// exact; anything else refuses the batch, saying why.
	b, err = ParseBatch([]byte(`{"context":{"seq":12345678901234567},"batch":[{"type":"track","userId":"u","event":"E"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if cx := storedContext(t, &b.Events(received)[0]); cx["seq"] != json.Number("12345678901234567") {
		t.Errorf("merged context = %v, want seq 12345678901234567 as sent", cx)
	}
	for bad, want := range map[string]string{
		`{"context":[1],"batch":[]}`:          "context: want an object, got array",
		`{"context":{"n":1e400},"batch":[]}`:  "context.n: a number too large for a 64-bit float",
		`{"context":"ip=1.2.3.4","batch":[]}`: "context: want an object, got string",
	} {
		if _, err := ParseBatch([]byte(bad)); c360.ErrorCode(err) != c360.EINVALID || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseBatch(%s) = %v, want EINVALID saying %q", bad, err, want)
		}
	}
}

// storedContext returns the context r's event is stored with, decoded as
// PostgreSQL's jsonb reads it: of the keys an object repeats, the last.
func storedContext(t *testing.T, r *Result) map[string]any {
	t.Helper()
	r.applyBatchContext()
	if r.Event.RawContext == nil {
		return r.Event.Context
	}
	if !c360.PlainObject(r.Event.RawContext) {
		t.Fatalf("context %s is kept as bytes that are not a plain object", r.Event.RawContext)
	}
	var m map[string]any
	if err := c360.UnmarshalExact(r.Event.RawContext, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// A batch's context applies to every call, whose own keys win; it is not
// copied into each call until the call is stored, and counts towards each
// call's size.
func TestBatchContext(t *testing.T) {
	body := `{"context":{"ip":"1.2.3.4","library":{"name":"x"},"seq":12345678901234567,"ip":"1.2.3.5"},"batch":[
		{"type":"page","userId":"a"},
		{"type":"page","userId":"b","context":{}},
		{"type":"page","userId":"c","context":{ "ip":"5.6.7.8", "page":{"path":"/"} }},
		{"type":"page","userId":"d","context":{"ip":"9.9.9.9","e":1e3}}]}`
	b, err := ParseBatch([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	rs := b.Events(received)
	for i, r := range rs {
		if r.Err != nil {
			t.Fatalf("call %d refused: %v", i, r.Err)
		}
	}
	if own := rs[2].Event.RawContext; len(own) > 50 {
		t.Errorf("Events copied the batch's context into a call's: %s", own)
	}
	batch := `{"ip":"1.2.3.5","library":{"name":"x"},"seq":12345678901234567}`
	for i, want := range []string{
		batch,
		batch,
		`{"ip":"5.6.7.8","library":{"name":"x"},"page":{"path":"/"},"seq":12345678901234567}`,
		`{"e":1000,"ip":"9.9.9.9","library":{"name":"x"},"seq":12345678901234567}`,
	} {
		if got, _ := json.Marshal(storedContext(t, &rs[i])); string(got) != want {
			t.Errorf("call %d is stored with context %s, want %s", i, got, want)
		}
	}

	// A batch's context that is not kept as bytes (an exponent) is merged
	// all the same.
	b, err = ParseBatch([]byte(`{"context":{"n":2e2,"ip":"1.2.3.4"},"batch":[{"type":"page","userId":"a","context":{"ip":"5.6.7.8"}},{"type":"page","userId":"b"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	rs = b.Events(received)
	for i, want := range []string{`{"ip":"5.6.7.8","n":200}`, `{"ip":"1.2.3.4","n":200}`} {
		if got, _ := json.Marshal(storedContext(t, &rs[i])); string(got) != want {
			t.Errorf("call %d is stored with context %s, want %s", i, got, want)
		}
	}

	// The batch's context counts towards each call's 32 KB, wherever it
	// comes in the body; a context over 32 KB refuses the batch.
	pad := strings.Repeat("x", 20<<10)
	cx := `{"pad":"` + pad + `"}`
	for _, body := range []string{
		`{"context":` + cx + `,"batch":[{"type":"page","userId":"a"},{"type":"page","userId":"b","properties":{"p":"` + pad[:12<<10] + `"}}]}`,
		`{"batch":[{"type":"page","userId":"a"},{"type":"page","userId":"b","properties":{"p":"` + pad[:12<<10] + `"}}], "context" : ` + cx + `}`,
	} {
		b, err = ParseBatch([]byte(body))
		if err != nil {
			t.Fatal(err)
		}
		if b.ContextSize != len(cx) {
			t.Errorf("ContextSize = %d, want %d", b.ContextSize, len(cx))
		}
		rs = b.Events(received)
		if rs[0].Err != nil || rs[1].Err == nil || !strings.Contains(rs[1].Err.Error(), "larger than 32 KB with the batch's context") {
			t.Errorf("calls of %d and %d bytes with a %d-byte context: %v, %v; want the second refused with the context named",
				b.Items[0].Size, b.Items[1].Size, len(cx), rs[0].Err, rs[1].Err)
		}
	}
	big := `{"pad":"` + strings.Repeat("x", MaxCallBytes) + `"}`
	if _, err := ParseBatch([]byte(`{"batch":[{"type":"page","userId":"a"}],"context":` + big + `}`)); c360.ErrorCode(err) != c360.EINVALID ||
		!strings.Contains(err.Error(), "the batch's context is larger than 32 KB") {
		t.Errorf("a %d-byte batch context: %v, want EINVALID naming the context", len(big), err)
	}
}

// A batch with a context as large as allowed and as many calls as fit
// costs memory in proportion to its bytes, not to its calls times its
// context: the copies of the context exist only for the part being stored.
func TestBatchContextMergedIntoEveryCallIsBounded(t *testing.T) {
	// The largest context its calls may carry: with the 500 KB filled with
	// calls, the context's copies come just under MaxBatchContextCopies.
	call := `{"type":"page","userId":1,"context":{"a":1}}`
	n := (MaxBatchBytes - 40<<10) / (len(call) + 1)
	var cx bytes.Buffer
	cx.WriteString(`{`)
	for i := 0; cx.Len() < MaxBatchContextCopies/n-20; i++ {
		if i > 0 {
			cx.WriteByte(',')
		}
		fmt.Fprintf(&cx, `"k%d":%d`, i, i)
	}
	cx.WriteString(`}`)
	body := []byte(`{"context":` + cx.String() + `,"batch":[`)
	for i := 0; i < n; i++ {
		if i > 0 {
			body = append(body, ',')
		}
		body = append(body, call...)
	}
	body = append(body, "]}"...)
	if len(body) > MaxBatchBytes {
		t.Fatalf("the body is %d bytes, over the batch limit", len(body))
	}

	runtime.GC()
	var before, peak runtime.MemStats
	runtime.ReadMemStats(&before)
	bt, err := ParseBatch(body)
	if err != nil {
		t.Fatal(err)
	}
	rs := bt.Events(received)
	calls := 0
	for part := rs; len(part) > 0; part = part[min(len(part), ingestCalls):] {
		part := part[:min(len(part), ingestCalls)]
		for i := range part {
			if part[i].Err != nil {
				t.Fatalf("call %d refused: %v", part[i].Index, part[i].Err)
			}
			part[i].applyBatchContext()
			calls++
		}
		// What Handler.ingest does once the part is stored.
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		if m.HeapAlloc > peak.HeapAlloc {
			peak = m
		}
		for i := range part {
			part[i].Event = nil
		}
	}
	runtime.KeepAlive(rs)
	live := int64(peak.HeapAlloc) - int64(before.HeapAlloc)
	copies := int64(calls) * int64(cx.Len())
	if limit := int64(ingestCalls)*MaxCallBytes + 50*int64(len(body)); live > limit {
		t.Errorf("a %d KB batch of %d calls with a %d KB context holds %d MB while stored, want under %d MB (every copy of its context: %d MB)",
			len(body)>>10, calls, cx.Len()>>10, live>>20, limit>>20, copies>>20)
	}
}

// A batch is one part unless ingestCalls cuts it, or an alias needs an
// earlier call of its part stored first.
func TestPartLen(t *testing.T) {
	parts := func(body string) []int {
		t.Helper()
		b, err := ParseBatch([]byte(body))
		if err != nil {
			t.Fatal(err)
		}
		var out []int
		for rs := b.Events(received); len(rs) > 0; {
			n := partLen(rs)
			out, rs = append(out, n), rs[n:]
		}
		return out
	}
	if got := parts(string(batchBody())); fmt.Sprint(got) != "[100]" {
		t.Errorf("an analytics-node batch of 100 calls is stored in parts %v, want one", got)
	}
	var calls []string
	for i := range 1200 {
		calls = append(calls, fmt.Sprintf(`{"type":"page","userId":"u%d"}`, i))
	}
	if got := parts(`{"batch":[` + strings.Join(calls, ",") + `]}`); fmt.Sprint(got) != "[500 500 200]" {
		t.Errorf("a batch of 1200 calls is stored in parts %v, want [500 500 200]", got)
	}
	for _, tc := range []struct {
		batch string
		want  string
	}{
		{`{"type":"identify","userId":" old"},{"type":"alias","userId":"new","previousId":"old "},{"type":"page","userId":"new"}`, "[1 2]"},
		{`{"type":"page","anonymousId":"old"},{"type":"alias","userId":"new","previousId":"old"}`, "[2]"},
		{`{"type":"alias","userId":"new","previousId":"old"},{"type":"identify","userId":"old"}`, "[2]"},
		{`{"type":"identify","userId":"old"},{"type":"alias","userId":"new","previousId":"old","anonymousId":"old"}`, "[2]"},
		{`{"type":"identify","userId":"old"},{"type":"track","userId":"u"},{"type":"alias","userId":"new","previousId":"old"},` +
			`{"type":"alias","userId":"newer","previousId":"new"},{"type":"alias","userId":"x","previousId":"u"}`, "[2 1 2]"},
	} {
		if got := parts(`{"batch":[` + tc.batch + `]}`); fmt.Sprint(got) != tc.want {
			t.Errorf("batch %s is stored in parts %v, want %s", tc.batch, got, tc.want)
		}
	}
}

func TestBasicUser(t *testing.T) {
	for _, tc := range []struct{ header, want string }{
		{"Basic YWJjMTIzOg==", "abc123"},
		{"basic YWJjMTIzOnB3", "abc123"},
		{"Basic YWJjMTIz", "abc123"},
		{"Bearer abc", ""},
		{"Basic", ""},
		{"Basic Og==", ""},
	} {
		if got, _ := basicUser(tc.header); got != tc.want {
			t.Errorf("basicUser(%q) = %q, want %q", tc.header, got, tc.want)
		}
	}
}

// FuzzSegmentPayload feeds arbitrary bytes to both parsers and converts
// whatever decodes: nothing may panic, and each call ends with an event or
// a refusal, never both or neither.
func FuzzSegmentPayload(f *testing.F) {
	for _, s := range []string{
		`{"batch":[{"type":"track","userId":"u","event":"E","messageId":"m","properties":{"a":[1,{"b":null}]}}],"sentAt":"2025-03-01T11:00:00Z"}`,
		`{"batch":[{"type":"identify","userId":1,"traits":{"email":"a@b.c"}},{"type":"alias","userId":"u","previousId":"p"}],"context":{"ip":"1"}}`,
		`{"batch":[{"type":"group","anonymousId":"a","groupId":9,"traits":{}},{"type":"page","userId":"u","category":"c"}]}`,
		`{"userId":"u","event":"E","timestamp":"2025-03-01T10:00:00.123+01:00","sentAt":"2025-03-01T10:00:01Z"}`,
		`{"userId":true}`, `{"batch":null}`, `{"batch":[{"type":"screen","userId":"\u0000"}]}`, `[]`, `{"batch":[`, `"x"`,
		`{"batch":[{"type":"page","userId":"u","category":"c","properties":{"n":12345678901234567,"e":1e5,"s":"\u00e9\ud800"}},` +
			`{"type":"track","userId":"u","event":"E","properties":{"x":1e400}},{"type":"identify","userId":"u","traits":{"t":2e-7}}],"context":{"n":1.5e3}}`,
		`{"userId":"u","event":"E","properties":[1],"traits":"x","context":{"a":"\u0000"},"messageId":"m"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		check := func(rs []Result) {
			for _, r := range rs {
				if (r.Event == nil) == (r.Err == nil) {
					t.Fatalf("result %+v: want exactly one of event and error", r)
				}
				if r.Err != nil && c360.ErrorCode(r.Err) != c360.EINVALID {
					t.Fatalf("refusal %v is not EINVALID", r.Err)
				}
				if r.Event != nil && (r.Event.DedupeKey == "" || len(r.Event.Identities) == 0 || r.Event.OccurredAt.IsZero()) {
					t.Fatalf("event %+v lacks a dedupe key, an identity or a time", r.Event)
				}
				// Objects kept as bytes are what ingest takes unread.
				if ev := r.Event; ev != nil {
					for _, raw := range []json.RawMessage{ev.RawProperties, ev.RawContext} {
						if raw != nil && !c360.PlainObject(raw) {
							t.Fatalf("event %+v keeps bytes that are not a plain object: %q", ev, raw)
						}
					}
				}
			}
		}
		if b, err := ParseBatch(data); err == nil {
			check(b.Events(received))
		} else if c360.ErrorCode(err) != c360.EINVALID {
			t.Fatalf("ParseBatch error %v is not EINVALID", err)
		}
		if m, err := ParseCall(data); err == nil {
			for _, typ := range callTypes {
				mc := *m
				ev, err := mc.Canonical(typ, received, time.Time{})
				check([]Result{{Event: ev, Err: err}})
			}
		}
	})
}

// batchBody is a 100-call batch shaped like analytics-node's.
func batchBody() []byte {
	var buf bytes.Buffer
	buf.WriteString(`{"batch":[`)
	for i := range 100 {
		if i > 0 {
			buf.WriteByte(',')
		}
		fmt.Fprintf(&buf, `{"timestamp":"2025-03-01T11:59:59.%03dZ","event":"Product Viewed","type":"track",`+
			`"properties":{"product_id":"p-%d","sku":"G-32","category":"Games","name":"Monopoly: 3rd Edition","price":18.99,"quantity":1},`+
			`"context":{"library":{"name":"@segment/analytics-node","version":"3.1.0"}},"integrations":{},`+
			`"_metadata":{"jsRuntime":"node"},"userId":"user-%d","messageId":"node-next-1740830399%03d-3f1c2a7e-8d4b-4c1f-9a6e-%012d"}`,
			i, i, i%20, i, i)
	}
	buf.WriteString(`],"writeKey":"c360_abcdefabcdef_secret","sentAt":"2025-03-01T12:00:00.000Z"}`)
	return buf.Bytes()
}

func BenchmarkSegmentBatchParse(b *testing.B) {
	body := batchBody()
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		batch, err := ParseBatch(body)
		if err != nil {
			b.Fatal(err)
		}
		for _, r := range batch.Events(received) {
			if r.Err != nil {
				b.Fatal(r.Err)
			}
		}
	}
	b.ReportMetric(float64(b.N*100)/b.Elapsed().Seconds(), "events/s")
}

// batchContextBody is a 100-call batch with a context of its own, as
// analytics.js's batching sends, and a small context in each call.
func batchContextBody() []byte {
	var buf bytes.Buffer
	buf.WriteString(`{"context":{"library":{"name":"analytics.js","version":"2.11.1"},"ip":"203.0.113.7",` +
		`"userAgent":"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15","locale":"en-US"},"batch":[`)
	for i := range 100 {
		if i > 0 {
			buf.WriteByte(',')
		}
		fmt.Fprintf(&buf, `{"timestamp":"2025-03-01T11:59:59.%03dZ","event":"Product Viewed","type":"track",`+
			`"properties":{"product_id":"p-%d","sku":"G-32","category":"Games","name":"Monopoly: 3rd Edition","price":18.99,"quantity":1},`+
			`"context":{"page":{"path":"/p/%d","url":"https://shop.example/p/%d"}},"integrations":{},`+
			`"userId":"user-%d","messageId":"node-next-1740830399%03d-3f1c2a7e-8d4b-4c1f-9a6e-%012d"}`,
			i, i, i, i, i%20, i, i)
	}
	buf.WriteString(`],"writeKey":"c360_abcdefabcdef_secret","sentAt":"2025-03-01T12:00:00.000Z"}`)
	return buf.Bytes()
}

// BenchmarkSegmentBatchContext decodes a batch with a context of its own
// and makes each call's context the text the store inserts (as
// postgres.jsonText does: the bytes kept, or the map encoded).
func BenchmarkSegmentBatchContext(b *testing.B) {
	body := batchContextBody()
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		batch, err := ParseBatch(body)
		if err != nil {
			b.Fatal(err)
		}
		rs := batch.Events(received)
		for i := range rs {
			r := &rs[i]
			if r.Err != nil {
				b.Fatal(r.Err)
			}
			r.applyBatchContext()
			if r.Event.RawContext == nil {
				if _, err := json.Marshal(r.Event.Context); err != nil {
					b.Fatal(err)
				}
			} else if len(string(r.Event.RawContext)) == 0 {
				b.Fatal("empty context")
			}
		}
	}
	b.ReportMetric(float64(b.N*100)/b.Elapsed().Seconds(), "events/s")
}

// A batch whose context's copies, one per call, would exceed
// MaxBatchContextCopies is refused whole, however small each call is.
func TestBatchContextCopiesAreBounded(t *testing.T) {
	ctx := `{"pad":"` + strings.Repeat("x", 2000) + `"}`
	body := func(calls int) []byte {
		b := []byte(`{"context":` + ctx + `,"batch":[`)
		for i := 0; i < calls; i++ {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, `{"type":"page","userId":1}`...)
		}
		return append(b, "]}"...)
	}
	most := MaxBatchContextCopies / len(ctx)
	if _, err := ParseBatch(body(most)); err != nil {
		t.Errorf("%d calls with a %d-byte context: %v, want it taken", most, len(ctx), err)
	}
	_, err := ParseBatch(body(most + 1))
	if c360.ErrorCode(err) != c360.EINVALID || !strings.Contains(c360.ErrorMessage(err), "part of each of its") {
		t.Errorf("%d calls with a %d-byte context: %v, want BAD_USER_INPUT naming the context's copies", most+1, len(ctx), err)
	}
}
