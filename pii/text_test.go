package pii

import (
	"fmt"
	"iter"
	"math/rand/v2"
	"regexp"
	"slices"
	"strings"
	"testing"
)

func TestText(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"write to jane.doe+x@mail.example.co.uk please", "write to j***@mail.example.co.uk please"},
		{"call +14155550100", "call +1******0100"},
		{"call +1 (415) 555-0100 today", "call +1******0100 today"},
		{"call (415) 555-0100", "call (******0100"},
		{"order 2024-03-01 at 10:00", "order 2024-03-01 at 10:00"},
		{"order #12345 and 3 items", "order #12345 and 3 items"},
		{"tracking 1Z9999", "tracking 1Z9999"},
		{"no personal data", "no personal data"},
		// The fewest digits a number is masked with, and an address without
		// digits: Text counts both before it runs its regexps.
		{"ring +12345678 now", "ring +1***5678 now"},
		{"ring +1234567 now", "ring +1234567 now"},
		{"x@y.io", "x***@y.io"},
		// Numbers written as people write them, and addresses in any script.
		{"call +1\u00a0415\u00a0555\u00a00100", "call +1******0100"},
		{"call +1\u202f415\u202f555\u202f0100", "call +1******0100"},
		{"415\n555\n0100", "******0100"},
		{"+1/415/555/0100", "+1******0100"},
		{"write to josé@example.com", "write to j***@example.com"},
		{"mail ünal@exämple.de", "mail ü***@exämple.de"},
		// A date a number follows is the date's, and the number is masked.
		{"on 2025-05-03 4155550100", "on 2025-05-03 ******0100"},
		{"on 03.05.2025 +14155550100 at 10:00", "on 03.05.2025 +1******0100 at 10:00"},
		{"on 2025/05/03 10:00", "on 2025/05/03 10:00"},
		// More digits than a phone number: two numbers in one run, a card.
		{"4155550100 4155550101", "****************0101"},
		{"card 4111 1111 1111 1111", "card ************1111"},
		// French numbers, whose groups look like a date's.
		{"au 06.12.34.56.78", "au ******5678"},
		// Digits glued to a word are not a number of their own: a UUID's
		// tail, a URL's path, an ObjectId; a number after such a prefix is.
		{"id 123e4567-e89b-12d3-a456-426614174000", "id 123e4567-e89b-12d3-a456-426614174000"},
		{"see https://shop.example.com/orders/1234567890 now", "see https://shop.example.com/orders/1234567890 now"},
		{"https://cdn.example.com/i/2024/123/4567/89.jpg", "https://cdn.example.com/i/2024/123/4567/89.jpg"},
		{"order 50314b8e9bcf000000000000", "order 50314b8e9bcf000000000000"},
		{"ref x-123 4155550100", "ref x-123 ******0100"},
		{"id a1b2-4155550100-c3", "id a1b2-4155550100-c3"},
		// A word that names a phone does not glue the number after it.
		{"Tel-4155550100", "Tel-******0100"},
		{"Fax/415-555-0100", "Fax/******0100"},
		{"Handy-0151 2345 6789", "Handy-********6789"},
		{"order-4155550100", "order-4155550100"},
		{"a1tel-4155550100", "a1tel-4155550100"},
		{"on 05/13/2025 10:30", "on 05/13/2025 10:30"},
		{"at 2025-05-03T10:00:00.000Z", "at 2025-05-03T10:00:00.000Z"},
		{"tel:+14155550100", "tel:+1******0100"},
		{"(415) 555-0100.", "(******0100."},
		// What stands before a number in the world's writing: an
		// abbreviation and its dot, punctuation after it, quotes, other
		// scripts, which write no space before a number, symbols.
		{"Tel./+1-415-555-0100", "Tel./+1******0100"},
		{"Tel.-Nr.-030-1234-5678", "Tel.-Nr.-*******5678"},
		{"Fax./-415-555-0100", "Fax./-******0100"},
		{"ph.4155550100", "ph.******0100"},
		{"Tel.+49 30 123456", "Tel.+49****3456"},
		{"t.415.555.0100", "t.******0100"},
		{"\u201c415-555-0100\u201d", "\u201c******0100\u201d"},
		{"\u00ab4155550100\u00bb", "\u00ab******0100\u00bb"},
		{"电话4155550100", "电话******0100"},
		{"电话：4155550100", "电话：******0100"},
		{"N\u00b04155550100", "N\u00b0******0100"},
		// An extension after the number, a WhatsApp link.
		{"415-555-0100x123", "******0100x123"},
		{"415-555-0100 ext123", "******0100 ext123"},
		{"https://wa.me/14155550100", "https://wa.me/*******0100"},
		{"wa.me/+14155550100", "wa.me/+1******0100"},
		// A + number whatever follows it; a long number a word follows.
		{"+14155550100Email: x", "+1******0100Email: x"},
		{"+14155550100/office", "+1******0100/office"},
		{"+1 415 555 0100-mobile", "+1******0100-mobile"},
		{"Phone: 4155550100Email", "Phone: ******0100Email"},
		// Dashes and invisible characters word processors put in.
		{"415\u2013555\u20130100", "******0100"},
		{"+44\u20117700\u2011900123", "+44******0123"},
		{"415\u200b555\u200b0100", "******0100"},
		{"+1\u00ad415\u00ad5550100", "+1******0100"},
		{"415\u2212555\u22120100", "******0100"},
		// Addresses written decomposed, or with punctuation in the local part.
		{"jose\u0301@example.com", "j***@example.com"},
		{"o'brien@example.com", "o***@example.com"},
		{"first&last@example.com", "f***@example.com"},
		// Digits of other scripts: fullwidth, Arabic-Indic.
		{"電話番号は０９０\u2212１２３４\u2212５６７８です", "電話番号は*******5678です"},
		{"رقمي ٤١٥٥٥٥٠١٠٠", "رقمي ******0100"},
		{"\uff0b\uff11 415 555 0100", "\uff0b1******0100"},
		{"mail jane\uff20example.com", "mail j***\uff20example.com"},
		{"mail jane\ufe6bexample.com", "mail j***\ufe6bexample.com"},
		// Addresses and numbers in a URL, escaped as its query writes them:
		// analytics events record the pages people visit.
		{"https://x.example/s?email=jane%40example.com&p=2", "https://x.example/s?email=j***%40example.com&p=2"},
		{"https://x.example/s?email=jane@example.com&p=2", "https://x.example/s?email=j***@example.com&p=2"},
		{"mailto%3Ajane.doe%40example.com", "mailto%3Aj***%40example.com"},
		{"https://x.example/s?a=1&email=jane@example.com", "https://x.example/s?a=1&email=j***@example.com"},
		{"email=jane@example.com&p=2", "email=j***@example.com&p=2"},
		// A local part's own +, = and ? are the address's, masked with it.
		{"mail user123+456@example.com", "mail u***@example.com"},
		{"mail john.doe1980+2@gmail.com", "mail j***@gmail.com"},
		{"mail first=last@example.com", "mail f***@example.com"},
		{"mail who?me@example.com", "mail w***@example.com"},
		{"mail user123%2B456%40example.com", "mail u***%40example.com"},
		{"https://x.example/c?phone=%2B14155550100", "https://x.example/c?phone=%2B1******0100"},
		{"https://x.example/c?phone=%2b1%20415%20555%200100&x=1", "https://x.example/c?phone=%2b1******0100&x=1"},
		{"https://x.example/c?phone=%2B1+415+555+0100", "https://x.example/c?phone=%2B1******0100"},
		{"tel%3A%2B14155550100", "tel%3A%2B1******0100"},
		{"tel=%28415%29%20555-0100", "tel=%28******0100"},
		// Escapes of letters and digits are not read; a % that escapes
		// nothing stands as written.
		{"https://x.example/%34%31%35/p", "https://x.example/%34%31%35/p"},
		{"up 100% 4155550100", "up 100% ******0100"},
		{"a=%zz 1+2=3", "a=%zz 1+2=3"},
		// Not phone numbers: an IPv4 address, a decimal, a query value.
		{"from 192.168.100.200", "from 192.168.100.200"},
		{"at 37.77, -122.4194155", "at 37.77, -122.4194155"},
		{"see https://x.example/track?order=1234567890", "see https://x.example/track?order=1234567890"},
		{"see https://x.example/c?phone=4155550100", "see https://x.example/c?phone=******0100"},
	} {
		if got, _ := Text(tc.in, true); got != tc.want {
			t.Errorf("Text(%q) = %q, want %q", tc.in, got, tc.want)
		}
		if got, _ := Text(tc.in, false); got != tc.in {
			t.Errorf("Text(%q, not masking) = %q, want it unchanged", tc.in, got)
		}
	}
}

// Under a key that says nothing (a property, a trait), a bare run of digits
// is an id or a time, not a phone number; a formatted number, or one with
// a +, still is, and so is an address.
func TestTextInValues(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"1714732800", "1714732800"},
		{"5012345678901", "5012345678901"},
		{"4155550100", "4155550100"},
		{"(415) 555-0100", "(******0100"},
		{"+14155550100", "+1******0100"},
		{"call me at 415 555 0100", "call me at ******0100"},
		{"call me at 4155550100 tomorrow", "call me at ******0100 tomorrow"},
		{" 4155550100 ", " 4155550100 "},
		{"jane@example.com", "j***@example.com"},
		{"05/13/2025 10:30", "05/13/2025 10:30"},
	} {
		if got, _ := text(tc.in, true, bareInWords); got != tc.want {
			t.Errorf("text(%q, in a value) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// Formatted finds addresses and numbers written as phone numbers, but no
// run of digits alone, however long or wherever it stands: a request's
// number (ticket 1234567890), which Text takes for a phone number.
func TestFormatted(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{"ticket 1234567890", nil},
		{"DSAR 2024061501", nil},
		{"request 1718000000 of 2024-06-15", nil},
		{"#12345678901234", nil},
		{"ticket 42", nil},
		// A request's number in groups, or after a year in parentheses,
		// is no phone number: only a + or an area code in parentheses
		// writes one (the person's own number, however written, is
		// refused by postgres.reasonNames).
		{"DSAR 2024-000123-45", nil},
		{"ticket 1234 5678 90", nil},
		{"Zendesk 4815 1623 42", nil},
		{"case (2024) 5550100123", nil},
		{"case (2024) 555-0100", nil},
		{"ticket 415 555 0101", nil},
		{"ticket 415.555.0101", nil},
		{"ticket 5550100 (2024)", nil},
		{"called from +14155550101", []string{"phone"}},
		{"called from +1 415 555 0100", []string{"phone"}},
		{"+1 415 555 0100", []string{"phone"}},
		{"(415) 555-0100", []string{"phone"}},
		{"called from (415) 555-0101", []string{"phone"}},
		{"called from 1 (415) 555 0101", []string{"phone"}},
		{"called from (415) 5550101", []string{"phone"}},
		{"called from (020) 7946 0958", []string{"phone"}},
		{"called from (0161) 496 0000", []string{"phone"}},
		{"called from (11) 98765-4321", []string{"phone"}},
		{"called from （415） ５５５-０１０１", []string{"phone"}},
		{"asked by ann@example.com", []string{"email"}},
		{"ticket 1234567890 from jane%40example.com", []string{"email"}},
	} {
		if got := Formatted(tc.in); !slices.Equal(got, tc.want) {
			t.Errorf("Formatted(%q) = %v, want %v", tc.in, got, tc.want)
		}
		if _, kinds := Text(tc.in, false); len(kinds) < len(tc.want) {
			t.Errorf("Text(%q) finds %v, less than Formatted", tc.in, kinds)
		}
	}
}

// mayHoldText is false only where the scan it spares finds nothing: the
// email regexp and digitRuns narrowed by phoneRun, as free text and as a
// value, called here without the check in front of them. Random strings of
// the characters phone numbers, dates, ids, links and addresses are made
// of, and of what glues or unglues them.
func TestMayHoldTextCoversTheScan(t *testing.T) {
	parts := []string{"0", "1", "4", "9", "415", "5550100", " ", "\u00a0", "\n", "-", "/", ".", "(", ")", "+",
		"a", "e", "T", "x", "ext", "_", ":", ",", "@", "x.io", "é", "\u201c", "电话", "wa.me/", ".-", "./",
		"2025-05-03", "05/13/2025", "\uff14\uff11\uff15", "\uff10", "\u0664\u0661", "\u2212", "=",
		"%40", "%2B", "%2b", "%20", "%28", "%", "%4", "2B", "\uff20", "\uff0b", "\ufe6b", "?",
		"\u200b", "\u00ad", "\ufeff"}
	scan := func(s string, value bool) bool {
		_, found := emails(s, false)
		bare := bareAnywhere
		if value {
			bare = bareInWords
		}
		return len(phoneSpans(s, bare)) > 0 || len(found) > 0
	}
	for s := range randomStrings(3, 300_000, 12, parts) {
		if !mayHoldText(s) && (scan(s, false) || scan(s, true)) {
			t.Fatalf("mayHoldText(%q) = false, but the scan finds something", s)
		}
	}
}

// randomStrings yields n strings of 1 to most of parts, drawn from a
// generator seeded with seed.
func randomStrings(seed uint64, n, most int, parts []string) iter.Seq[string] {
	return func(yield func(string) bool) {
		rng := rand.New(rand.NewPCG(seed, seed+1))
		for range n {
			var b strings.Builder
			for range 1 + rng.IntN(most) {
				b.WriteString(parts[rng.IntN(len(parts))])
			}
			if !yield(b.String()) {
				return
			}
		}
	}
}

// BenchmarkTextLongRun is a property of 32 KB (Segment's limit for an
// event) that is one run of dates: each is dropped once, so the scan stays
// linear in the text (it took 1.7 s when each date started a new scan of
// the rest).
func BenchmarkTextLongRun(b *testing.B) {
	s := strings.Repeat("2025-05-03 ", 2900)
	b.ReportAllocs()
	for b.Loop() {
		Text(s, true)
	}
}

// digitRuns finds what its regexp finds, over random strings of digits,
// every kind of separator (ASCII and Unicode spaces among them), letters,
// + and (.
func TestDigitRunsAsTheRegexp(t *testing.T) {
	re := regexp.MustCompile(`\+?\(?\d[\d\s\p{Zs}\p{Pd}\p{Cf}\x{2212}\x{00B7}().\-/]{5,}\d`)
	parts := []string{"0", "1", "7", "12", "415", " ", "\t", "\n", "\v", "\u00a0", "\u202f", "\u2003", "\u3000",
		"(", ")", ".", "-", "/", "+", "++", "+(", "a", "é", ":", "_", "\u200b", "\u2013", "\u2011", "\u2212",
		"\u00b7", "\u00ad", "\u2060", "\u2022"}
	for s := range randomStrings(5, 300_000, 16, parts) {
		var want [][2]int
		for _, l := range re.FindAllStringIndex(s, -1) {
			want = append(want, [2]int{l[0], l[1]})
		}
		if got := digitRuns(s); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("digitRuns(%q) = %v, the regexp finds %v", s, got, want)
		}
	}
}

func TestDateLen(t *testing.T) {
	for s, want := range map[string]int{
		"2024-03-01": 10, "2024/3/1 x": 8, "2024.12.31": 10, "1999-1-09": 9, "2024-03-10 4155550100": 10,
		"01.03.2024": 10, "1/3/2024": 8, "05/13/2025 10:30": 10, "31-12-1999": 10, "13/05/2025": 10,
		"2024-13-01": 0, "2024-03": 0, "2024-00-01": 0, "1899-01-01": 0, "32/01/2024": 0, "13/13/2024": 0,
		"01.03.24": 0, "4155550100": 0, "06.12.34.56.78": 0, "": 0, "2024-03-": 0, "2024-03-x": 0,
	} {
		if got := dateLen(s); got != want {
			t.Errorf("dateLen(%q) = %d, want %d", s, got, want)
		}
	}
}

// An invisible format character (\p{Cf}: a zero-width space, a soft
// hyphen, a word joiner, a byte order mark) inside an address does not cut
// it in two: the address is found and masked whole, wherever the
// character sits, and MayHold does not pass an object holding one by.
func TestTextMasksAddressesWithFormatCharacters(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"jane\u200b@example.com", "j***@example.com"},
		{"jane\u00ad@example.com", "j***@example.com"},
		{"jane\u2060@example.com", "j***@example.com"},
		{"jane.doe\ufeff@example.com", "j***@example.com"},
		{"jane@example\u200b.com", "j***@example.com"},
		{"ja\u200bne@\u200bexample.com", "j***@\u200bexample.com"},
		{"write to jane\u200b@example.com today", "write to j***@example.com today"},
		{"\u200bjane@example.com", "\u200bj***@example.com"},
		{"jane%40example\u00ad.com", "j***%40example.com"},
	} {
		got, kinds := Text(tc.in, true)
		if got != tc.want || len(kinds) != 1 || kinds[0] != string(KindEmail) {
			t.Errorf("Text(%q) = %q, %v; want %q, [email]", tc.in, got, kinds, tc.want)
		}
		if m, _ := JSON(map[string]any{"note": tc.in}); strings.Contains(m["note"].(string), "jane") {
			t.Errorf("JSON(note: %q) = %q", tc.in, m["note"])
		}
		if raw := []byte(`{"note": "` + tc.in + `"}`); !MayHold(raw) {
			t.Errorf("MayHold(%s) = false", raw)
		}
	}
	// Format characters elsewhere change nothing.
	for _, s := range []string{"no\u200baddress here", "soft\u00adhyphen 4155550100", "a @ b", "\ufeff"} {
		want, _ := Text(strings.NewReplacer("\u200b", "", "\u00ad", "", "\ufeff", "").Replace(s), true)
		if got, _ := Text(s, true); strings.NewReplacer("\u200b", "", "\u00ad", "", "\ufeff", "").Replace(got) != want {
			t.Errorf("Text(%q) = %q, want %q (format characters aside)", s, got, want)
		}
	}
}
