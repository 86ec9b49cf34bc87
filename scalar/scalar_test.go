package scalar

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// A time is written as an RFC 3339 JSON string in UTC, into a buffer or
// any other writer alike, and reads back as the same instant.
func TestMarshalTime(t *testing.T) {
	zone := time.FixedZone("", 5*3600+30*60)
	for _, in := range []time.Time{
		time.Date(2025, 3, 1, 11, 58, 0, 0, time.UTC),
		time.Date(2025, 3, 1, 11, 58, 0, 123456789, zone),
		time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC),
	} {
		var buf bytes.Buffer
		buf.WriteString("[")
		MarshalTime(in).MarshalGQL(&buf)
		buf.WriteString("]")
		var other strings.Builder
		MarshalTime(in).MarshalGQL(&other)
		want := `"` + in.UTC().Format(time.RFC3339Nano) + `"`
		if buf.String() != "["+want+"]" || other.String() != want {
			t.Errorf("%v: wrote %s and %s, want %s", in, buf.String(), other.String(), want)
		}
		var s string
		if err := json.Unmarshal([]byte(other.String()), &s); err != nil {
			t.Fatalf("%v: %s is not a JSON string: %v", in, other.String(), err)
		}
		got, err := UnmarshalTime(s)
		if err != nil || !got.Equal(in) {
			t.Errorf("%v: read back %v, %v", in, got, err)
		}
	}
	var buf bytes.Buffer
	buf.Grow(1024)
	m := MarshalTime(time.Now())
	if n := testing.AllocsPerRun(100, func() { buf.Reset(); m.MarshalGQL(&buf) }); n != 0 {
		t.Errorf("writing a time into a buffer costs %v allocations, want none", n)
	}
}

// A stored object is written as it is. An object given as input reads
// back to its encoding; anything but an object is refused.
func TestJSONObject(t *testing.T) {
	for _, c := range []struct {
		in   json.RawMessage
		want string
	}{
		{json.RawMessage(`{"sku": "SKU-0", "n": 12345678901234567}`), `{"sku": "SKU-0", "n": 12345678901234567}`},
		{json.RawMessage(`{}`), `{}`},
	} {
		var b bytes.Buffer
		MarshalJSONObject(c.in).MarshalGQL(&b)
		if b.String() != c.want {
			t.Errorf("MarshalJSONObject(%s) wrote %s, want %s", c.in, b.String(), c.want)
		}
	}
	got, err := UnmarshalJSONObject(map[string]any{"plan": "pro"})
	if err != nil || string(got) != `{"plan":"pro"}` {
		t.Errorf("UnmarshalJSONObject(object) = %s, %v; want {\"plan\":\"pro\"}", got, err)
	}
	if _, err := UnmarshalJSONObject("a string"); err == nil {
		t.Error("UnmarshalJSONObject(a string) took it, want a refusal")
	}
}

// Input objects keep plain numbers as given, read the others as a float64
// does, and refuse one no float64 holds: 1e100000 is 8 bytes in, and
// PostgreSQL would write it out in 100,001 digits on every read.
func TestUnmarshalJSONNumbers(t *testing.T) {
	m, err := UnmarshalJSON(map[string]any{"id": json.Number("12345678901234567"), "e": json.Number("1.5e3"),
		"list": []any{json.Number("2E2")}, "inline": int64(3), "f": 18.99})
	if err != nil {
		t.Fatal(err)
	}
	list, _ := m["list"].([]any)
	if m["id"] != json.Number("12345678901234567") || m["e"] != 1500.0 || len(list) != 1 || list[0] != 200.0 ||
		m["inline"] != int64(3) || m["f"] != 18.99 {
		t.Errorf("UnmarshalJSON = %#v, want id as given, e and list as float64s, the others untouched", m)
	}
	for _, n := range []string{"1e100000", strings.Repeat("9", 400)} {
		if _, err := UnmarshalJSON(map[string]any{"x": map[string]any{"y": json.Number(n)}}); err == nil {
			t.Errorf("UnmarshalJSON took %.20s…, want a refusal", n)
		}
	}
}
