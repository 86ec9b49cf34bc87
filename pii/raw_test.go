package pii

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
)

func TestMayHold(t *testing.T) {
	for _, tc := range []struct {
		raw  string
		want bool
	}{
		// Nothing personal: the object can be handed on as stored.
		{`{"sku": "SKU-0", "price": 5}`, false},
		{`{}`, false},
		{`{"productName": "Shoe", "tags": ["red", "sale"], "size": {"eu": 42, "note": "wide: yes"}}`, false},
		{`{"when": "2024-03-01", "order": "12345678", "ok": true, "none": null}`, false},
		// A personal key, whatever its value and however deep.
		{`{"email": null}`, true},
		{`{"cart": {"items": [{"sku": "a"}], "shipping": {"zip": 94107}}}`, true},
		{`{"First Name": "Jane"}`, true},
		{`{"work_email":"x"}`, true},
		{`{"address_line1": "1 Main St"}`, true},
		// Any JSON whitespace may stand between a key and its colon.
		{"{\"email\"\n: 1}", true},
		{"{\"phone\"\t:\r\n\"x\"}", true},
		{"{\"zip\" \r :1}", true},
		// A string shaped like personal data, wherever it sits.
		{`{"contact": "jane@example.com"}`, true},
		{`{"to": ["+14155550100"]}`, true},
		{`{"a": {"b": {"c": "+14155550100"}}}`, true},
		// Free text that may hold an address or a number.
		{`{"note": "call me on (415) 555-0100"}`, true},
		{`{"note": "reach me at jane at example.com"}`, false},
		{`{"note": "ring +1 415 5550"}`, true},
		// A key or value it cannot read as Find would: decode and ask.
		{`{"note": "say \"hi\""}`, true},
		{`{"n\u0061me": "Jane"}`, true},
		{`{"unterminated`, true},
		// A key that holds an address or a number (JSON masks it).
		{`{"invitees": {"bob.smith@example.com": "accepted"}}`, true},
		{`{"replies": {"+14155550100": "no"}}`, true},
		{`{"replies": {"(415) 555-0100": "no"}}`, true},
		{`{"orders": {"1234": "ok", "SKU-0": 1}}`, false},
		// Numbers alone, keys or values, are ids and times, not phones.
		{`{"1700000000": "seen", "4006381333931": {"qty": 2}, "20240115103000": "batch"}`, false},
		{`{"at": "1700000000", "ean": "4006381333931", "replies": {"4155550100": "no"}}`, false},
		{`{"note": "call 4155550100"}`, true},
		// A WhatsApp message id encodes the customer's number in base64,
		// which no scan reads: as a value or a key, at any depth.
		{`{"replyTo": "wamid.HBgLMTQxNTU1NTAxMDAVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA="}`, true},
		{`{"reaction": {"to": ["wamid.HBgLMTY1MDM4Nzk0MzkV"]}}`, true},
		{`{"statuses": {"wamid.HBgLMTQxNTU1NTAxMDAV": "read"}}`, true},
		{`{"replyTo": "wamid.***", "id": "mid.wamid.x"}`, false},
	} {
		if got := MayHold([]byte(tc.raw)); got != tc.want {
			t.Errorf("MayHold(%s) = %v, want %v", tc.raw, got, tc.want)
		}
	}
}

// TestMayHoldAgreesWithFind builds random objects from personal and plain
// keys and values, writes them as encoding/json and as PostgreSQL's jsonb
// text does (a space after each colon and comma), and checks that MayHold
// never says "nothing" where Find finds something, and says "nothing" for
// objects built from plain parts only.
func TestMayHoldAgreesWithFind(t *testing.T) {
	keys := []string{"sku", "price", "plan", "note", "tags", "items", "productName", "city", "url",
		"1700000000", "4006381333931",
		"email", "phone", "name", "zip", "mobile", "lastName", "home_phone", "address", "dob",
		"bob@example.com", "+14155550100", "(415) 555-0100", "wamid.HBgLMTQxNTU1NTAxMDAV"}
	plainKeys := 11
	strs := []string{"pro", "red", "SKU-1", "https://example.com", "2024-03-01", "12345678", "a: b, c",
		"2025-05-03T10:00:00.000Z", "123e4567-e89b-12d3-a456-426614174000", "50314b8e9bcf000000000000",
		"https://shop.example.com/orders/1234567890", "1700000000", "4006381333931", "wamid.***",
		"jane@example.com", "+14155550100", "+442071838750", "call (415) 555-0100",
		"wamid.HBgLMTQxNTU1NTAxMDAVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA="}
	plainStrs := 14
	rng := rand.New(rand.NewPCG(1, 2))
	var value func(depth int, plain bool) any
	object := func(depth int, plain bool) map[string]any {
		m := map[string]any{}
		for range rng.IntN(4) {
			k := keys[rng.IntN(len(keys))]
			if plain {
				k = keys[rng.IntN(plainKeys)]
			}
			m[k] = value(depth+1, plain)
		}
		return m
	}
	value = func(depth int, plain bool) any {
		switch n := rng.IntN(6); {
		case n == 0 && depth < 4:
			return object(depth, plain)
		case n == 1 && depth < 4:
			return []any{value(depth+1, plain), value(depth+1, plain)}
		case n == 2:
			return float64(rng.IntN(100000))
		case n == 3:
			return nil
		default:
			if plain {
				return strs[rng.IntN(plainStrs)]
			}
			return strs[rng.IntN(len(strs))]
		}
	}
	found, plainSeen := 0, 0
	for i := range 20000 {
		plain := i%2 == 0
		m := object(0, plain)
		for _, raw := range [][]byte{mustMarshal(t, m), []byte(jsonbText(m))} {
			got := MayHold(raw)
			if len(Find(m)) > 0 {
				found++
				if !got {
					t.Fatalf("MayHold(%s) = false, but Find finds %v", raw, Find(m))
				}
			}
			if plain {
				plainSeen++
				if got {
					t.Fatalf("MayHold(%s) = true for an object of plain keys and values", raw)
				}
			}
		}
	}
	if found < 1000 || plainSeen < 1000 {
		t.Fatalf("too few cases: %d with personal data, %d plain", found, plainSeen)
	}
}

// FuzzMayHold checks, for any input that decodes to an object, that
// MayHold is true wherever Find finds personal data.
func FuzzMayHold(f *testing.F) {
	for _, s := range []string{`{"sku": "SKU-0", "price": 5}`, `{"a": {"email": 1}}`, `{"x": ["+14155550100"]}`,
		`{"Zip Code": "94107"}`, `{"note": "jane@example.com"}`, `{"a":"b","c":[{"d":"e"}]}`,
		"{\"email\"\n: 1}", "{\"dob\"\t:\r\n2}"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		var m map[string]any
		if json.Unmarshal(raw, &m) != nil {
			return
		}
		if found := Find(m); len(found) > 0 && !MayHold(raw) {
			t.Fatalf("MayHold(%q) = false, but Find finds %v", raw, found)
		}
	})
}

func mustMarshal(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// jsonbText writes v as PostgreSQL prints a jsonb value.
func jsonbText(v any) string {
	switch v := v.(type) {
	case map[string]any:
		parts := make([]string, 0, len(v))
		for k, e := range v {
			parts = append(parts, fmt.Sprintf("%q: %s", k, jsonbText(e)))
		}
		return "{" + strings.Join(parts, ", ") + "}"
	case []any:
		parts := make([]string, 0, len(v))
		for _, e := range v {
			parts = append(parts, jsonbText(e))
		}
		return "[" + strings.Join(parts, ", ") + "]"
	}
	b, _ := json.Marshal(v)
	return string(b)
}

func BenchmarkMayHold(b *testing.B) {
	raw := []byte(`{"sku": "SKU-0", "price": 5, "productName": "Shoe", "tags": ["red", "sale"], "currency": "EUR"}`)
	b.ReportAllocs()
	for b.Loop() {
		MayHold(raw)
	}
}
