package pii

import (
	"regexp"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Free text (message bodies, observations) can carry personal data
// anywhere in it. These find what looks like an email address or a phone
// number inside a text, so it can be masked with this package's rules.
var (
	// Letters of any script with their combining marks (josé written
	// decomposed, राम), and the punctuation a local part may hold
	// (o'brien, first&last).
	emailInText = regexp.MustCompile(`[\p{L}\p{M}\p{N}._%+\-'&!#$*=?^{|}~]+@[\p{L}\p{M}\p{N}\-]+(?:\.[\p{L}\p{M}\p{N}\-]+)*\.[\p{L}\p{M}]{2,}`)
)

// Text masks the email addresses and phone numbers in free text when
// masking is set, and reports the kinds of personal data found either way.
//
// A phone number is a run of digits and the separators people write
// between groups, standing as a word of its own: a run glued to a letter,
// a digit or an underscore, or to a word by a hyphen, slash or dot (the
// tail of a UUID, a URL's path, a version), is not one, though a number
// written after such a prefix still is. It counts when it starts with +
// and has at least 8 digits, or has at least 10. Dates it starts with are
// left out of it. A run longer than any phone number (several numbers one
// after another, a card number) is masked too: masking a long order number
// is the price of never letting a phone number through.
//
// The text is read as plainView reads it: digits of other scripts as
// digits, and a URL's escapes (jane%40example.com) as what they escape.
func Text(s string, masking bool) (string, []string) {
	return text(s, masking, bareAnywhere)
}

// Formatted reports the kinds of personal data s holds written as such: an
// email address, or a phone number written in a way no request's number
// is: with a + (8 digits or more: +1 415 555 0100), or with an area code
// in parentheses before a national number ((415) 555-0100,
// parenthesizedAreaCode). Digits alone or in groups, however many, are
// not one, wherever they stand: they read as a ticket's or a request's
// number (ticket 1234567890, DSAR 2024-000123-45, Zendesk 4815 1623 42,
// case (2024) 5550100123), as in a text that names a request, where Text
// would take them for a phone number.
func Formatted(s string) []string {
	_, found := text(s, false, bareNever)
	return found
}

// bareRuns says when a run of digits that is not written as a phone number
// (no +, fewer than three groups, no parentheses: 4155550100, and
// 1234567890.00) is one.
type bareRuns uint8

const (
	// bareInWords: in a value under a key that says nothing, when other
	// words stand around it ("call me at 4155550100"), but not when it is
	// the whole value: an order id, a Unix time, an amount.
	bareInWords bareRuns = iota
	// bareAnywhere: in free text, always.
	bareAnywhere
	// bareNever: in a text that names a request (Formatted), never.
	bareNever
	// bareIdentity: in an identity's value under a type that says nothing
	// (Identity), as in a value (bareInWords: the whole value is an id),
	// and also after a channel's prefix that joins the word to the
	// digits (channelPrefix: wa_14155550199, tel_4155550100). A run of
	// more than 15 digits, the most a phone number has, is an id there
	// whatever its groups: analytics and shop ids are digits joined by
	// dots and slashes (GA1.2.1234567890.1700000000,
	// fb.1.1700000000000.1234567890, shop:12345678/987654321).
	bareIdentity
)

// text is Text; bare says whether a run of digits that is not written as
// a phone number is one (bareRuns). A number written as one (a +, three
// groups or more, or parentheses) always is (phoneRun).
func text(s string, masking bool, bare bareRuns) (string, []string) {
	// Most texts hold neither. Checking first spares the regexps' scans
	// (4% of a console query's CPU); masking an email adds no digit. An
	// identity's value is short, and may hold a number of fewer digits
	// after a channel's prefix (tel:5550100), which mayHoldText does not
	// count: it is spared the scans only when it holds no digit and no @.
	if bare == bareIdentity && !anyTextByte(s) || bare != bareIdentity && !mayHoldText(s) {
		return s, nil
	}
	s, found := emails(s, masking)
	spans := phoneSpans(s, bare)
	if len(spans) == 0 {
		return s, found
	}
	for range spans {
		found = append(found, string(KindPhone))
	}
	if !masking {
		return s, found
	}
	var b strings.Builder
	last := 0
	for _, sp := range spans {
		b.WriteString(s[last:sp.start])
		b.WriteString(sp.masked)
		last = sp.end
	}
	b.WriteString(s[last:])
	return b.String(), found
}

// emails finds the email addresses in s, as plainView reads it (but for a
// + between digits, which an address's local part may hold: user123+456@),
// and without the invisible format characters (\p{Cf}: a zero-width space,
// a soft hyphen, a word joiner, a byte order mark) that would otherwise
// cut an address in two (jane\u200b@example.com), and masks them when
// masking is set; a masked address covers the format characters inside it. An address that is a URL query's
// value starts after its = (?email=jane@example.com is jane's): when the
// key follows a ? or an &, or names an email (email=jane@…); elsewhere an
// = belongs to the address (first=last@example.com). A masked address
// keeps its @ as s wrote it (jane%40example.com reads j***%40example.com).
func emails(s string, masking bool) (string, []string) {
	if !mayHoldAt(s) {
		return s, nil
	}
	view, orig := readView(s, false)
	if strings.IndexByte(view, '@') < 0 {
		return s, nil
	}
	var found []string
	var b strings.Builder
	last := 0
	for _, l := range emailInText.FindAllStringIndex(view, -1) {
		m := view[l[0]:l[1]]
		at := strings.LastIndexByte(m, '@')
		if k := queryValue(view, l[0], at); k > 0 {
			m, at, l[0] = m[k:], at-k, l[0]+k
		}
		if at == 0 {
			continue
		}
		found = append(found, string(KindEmail))
		if !masking {
			continue
		}
		start, end, sign := l[0], l[1], "@"
		if orig != nil {
			start, end = orig[start], orig[end]
			sign = s[orig[l[0]+at]:orig[l[0]+at+1]]
		}
		b.WriteString(s[last:start])
		b.WriteString(strings.Replace(Email(m), "@", sign, 1))
		last = end
	}
	if b.Len() == 0 {
		return s, found
	}
	b.WriteString(s[last:])
	return b.String(), found
}

// mayHoldAt reports whether s holds an @ in any form the address view
// reads as one: as written, escaped (%40), fullwidth (＠) or small (﹫).
func mayHoldAt(s string) bool {
	return strings.IndexByte(s, '@') >= 0 || strings.Contains(s, "%40") || strings.Contains(s, "\uff20") ||
		strings.Contains(s, "\ufe6b")
}

// queryValue returns where, in the address view[start:] whose @ is at at,
// the value of a URL query's key=value starts, 0 when it holds none: after
// the last = whose key follows a ? or an & (in the match or just before
// it), or names an email.
func queryValue(view string, start, at int) int {
	m := view[start : start+at]
	k := strings.LastIndexByte(m, '=')
	if k < 0 {
		return 0
	}
	j := k
	for j > 0 && wordByte(m[j-1]) {
		j--
	}
	var before byte
	switch {
	case j > 0:
		before = m[j-1]
	case start > 0:
		before = view[start-1]
	}
	if before == '?' || before == '&' || KeyKind(m[j:k]) == KindEmail {
		return k + 1
	}
	return 0
}

// phoneSpan is a phone number found in a text: where it is, and how it
// reads masked.
type phoneSpan struct {
	start, end int
	masked     string
}

// phoneSpans finds the phone numbers in s (text's bare says how a run of
// digits alone counts), as plainView reads it; the spans are s's, and a
// masked number keeps the + or parenthesis it starts with as s wrote it.
func phoneSpans(s string, bare bareRuns) []phoneSpan {
	num, orig := plainView(s)
	locs := digitRuns(num)
	if locs == nil {
		return nil
	}
	// In a value, a run that is not written as a phone number is one only
	// inside other words ("call me at 4155550100"), not as the whole value.
	whole := [2]int{-1, -1}
	if bare == bareInWords || bare == bareIdentity {
		t := strings.TrimSpace(num)
		lo := strings.Index(num, t)
		whole = [2]int{lo, lo + len(t)}
	}
	var spans []phoneSpan
	for _, l := range locs {
		start, end, ok := phoneRun(num, l[0], l[1], whole, bare)
		if !ok {
			continue
		}
		m := num[start:end]
		// Keep what precedes a number without a country code (a
		// parenthesis) out of pii.Phone, which masks such a number to its
		// last four; a + is the country code's, and Phone keeps it.
		lead := ""
		if m[0] != '+' {
			lead = m[:strings.IndexAny(m, "0123456789")]
		}
		masked := Phone(m[len(lead):])
		sp := phoneSpan{start: start, end: end}
		if orig != nil {
			sp.start, sp.end = orig[start], orig[end]
			if lead != "" {
				lead = s[sp.start:orig[start+len(lead)]]
			} else if m[0] == '+' && strings.HasPrefix(masked, "+") {
				// The + as s wrote it (%2B, ＋).
				lead, masked = s[sp.start:orig[start+1]], masked[1:]
			}
		}
		sp.masked = lead + masked
		spans = append(spans, sp)
	}
	return spans
}

// plainView returns s as the scans read it and, when that differs from s,
// the offset in s of each byte offset of the view (one past the end
// included); s itself and nil when s reads as written. The view writes:
//   - the decimal digits of other scripts as ASCII digits (fullwidth ４１５,
//     Arabic-Indic ٤١٥), and the fullwidth forms of ASCII punctuation as
//     that punctuation (＠, ＋, and the small ﹫ and ﹢);
//   - a URL's percent-escape of an ASCII space or punctuation as the
//     character it stands for (jane%40example.com, %2B1%20415…): analytics
//     events carry addresses and numbers inside the page URLs they record;
//   - a + between two digits as a space, as a URL's query writes one
//     (phone=%2B1+415+555+0100).
func plainView(s string) (string, []int) { return readView(s, true) }

// readView is plainView; plusSpace says whether a + between two digits
// reads as a space (for numbers) or stays (for addresses, whose local part
// may hold one). The view for addresses also leaves out the invisible
// format characters (formatChar), which the number scan reads as a
// separator between groups instead (runChar).
func readView(s string, plusSpace bool) (string, []int) {
	first := -1
	for i := 0; i < len(s) && first < 0; i++ {
		if c := s[i]; c != '%' && c != '+' && c < utf8.RuneSelf {
			continue
		}
		if _, _, ok := plainByte(s, i, plusSpace); ok || !plusSpace && formatChar(s[i:]) > 0 {
			first = i
		}
	}
	if first < 0 {
		return s, nil
	}
	var b strings.Builder
	b.Grow(len(s))
	orig := make([]int, 0, len(s)+1)
	b.WriteString(s[:first])
	for i := range first {
		orig = append(orig, i)
	}
	for i := first; i < len(s); {
		if !plusSpace {
			if size := formatChar(s[i:]); size > 0 {
				// Left out: the next byte of the view stands for it too.
				i += size
				continue
			}
		}
		c, size, ok := plainByte(s, i, plusSpace)
		if ok {
			b.WriteByte(c)
			orig = append(orig, i)
		} else {
			b.WriteString(s[i : i+size])
			for k := range size {
				orig = append(orig, i+k)
			}
		}
		i += size
	}
	orig = append(orig, len(s))
	return b.String(), orig
}

// formatChar returns the size of the invisible format character (\p{Cf})
// s starts with, 0 when it starts with none.
func formatChar(s string) int {
	if s == "" || s[0] < utf8.RuneSelf {
		return 0
	}
	r, size := utf8.DecodeRuneInString(s)
	if unicode.Is(unicode.Cf, r) {
		return size
	}
	return 0
}

// plainByte reads what starts at s[i] as plainView does: the ASCII byte it
// writes for it and the size it reads, or ok false and the size of what
// stands as written there (a byte, or a rune of several).
func plainByte(s string, i int, plusSpace bool) (c byte, size int, ok bool) {
	switch c := s[i]; {
	case c == '%':
		if r, ok := escapedPunct(s[i:]); ok {
			return r, 3, true
		}
	case c == '+' && plusSpace:
		if i > 0 && isDigit(s[i-1]) && i+1 < len(s) && isDigit(s[i+1]) {
			return ' ', 1, true
		}
	case c >= utf8.RuneSelf:
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r >= '\uff01' && r <= '\uff5e': // fullwidth ASCII
			if c := byte(r - 0xfee0); !isDigit(c) && !isLetter(c) {
				return c, size, true
			}
		case r == '\ufe6b': // small commercial at
			return '@', size, true
		case r == '\ufe62': // small plus sign
			return '+', size, true
		}
		if unicode.IsDigit(r) {
			return '0' + byte(digitValue(r)), size, true
		}
		return 0, size, false
	}
	return 0, 1, false
}

// escapedPunct reads the percent-escape s starts with (%40) as the ASCII
// space, tab, line break or punctuation it stands for; a letter or a digit
// written so is not read.
func escapedPunct(s string) (byte, bool) {
	if len(s) < 3 {
		return 0, false
	}
	hi, lo := unhex(s[1]), unhex(s[2])
	if hi < 0 || lo < 0 {
		return 0, false
	}
	switch c := byte(hi<<4 | lo); {
	case c == '\t', c == '\n', c == '\r', c >= ' ' && c <= '/', c >= ':' && c <= '@', c >= '[' && c <= '`', c >= '{' && c <= '~':
		return c, true
	}
	return 0, false
}

func unhex(c byte) int {
	switch {
	case isDigit(c):
		return int(c - '0')
	case c >= 'a' && c <= 'f':
		return int(c-'a') + 10
	case c >= 'A' && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}

// digitValue is the value of a decimal digit r: Unicode encodes each
// script's digits as a run of ten from its zero, and the ranges of its
// table start at a zero.
func digitValue(r rune) int {
	for _, rg := range unicode.Nd.R16 {
		if r >= rune(rg.Lo) && r <= rune(rg.Hi) {
			return int(r-rune(rg.Lo)) % 10
		}
	}
	for _, rg := range unicode.Nd.R32 {
		if r >= rune(rg.Lo) && r <= rune(rg.Hi) {
			return int(r-rune(rg.Lo)) % 10
		}
	}
	return 0
}

// digitRuns finds the runs a phone number may be written in: digits with
// what people put between their groups (punctuation, a slash, any space,
// among them the no-break spaces that copying and phone keyboards produce,
// or a line break), at least 7 characters from the first digit to the last,
// after an optional + and (. It finds what the regexp
// \+?\(?\d[\d\s\p{Zs}().\-/]{5,}\d finds (TestDigitRunsAsTheRegexp), in
// one pass: Go's regexps take 40–80 ns a byte here, and a property may hold
// 32 KB.
func digitRuns(s string) [][2]int {
	var runs [][2]int
	for p := 0; p < len(s); {
		q := p
		if s[q] == '+' {
			q++
		}
		if q < len(s) && s[q] == '(' {
			q++
		}
		if q >= len(s) || !isDigit(s[q]) {
			p++
			continue
		}
		// The span of run characters after the first digit, its last digit,
		// and how many characters lie between the two.
		j, last, between, n := q+1, -1, 0, 0
		for j < len(s) {
			size := runChar(s[j:])
			if size == 0 {
				break
			}
			if isDigit(s[j]) {
				last, between = j, n
			}
			n++
			j += size
		}
		if last < 0 || between < 5 {
			// No start inside the span does better: the span holds no +,
			// and a start at a ( or a digit in it leaves fewer between.
			p = max(j, p+1)
			continue
		}
		runs = append(runs, [2]int{p, last + 1})
		p = last + 1
	}
	return runs
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// dateLen returns the length of the date s starts with, 0 if none: a
// year-month-day (2024-03-01, 2024/3/1), or a day-month-year or
// month-day-year (01.03.2024, 05/13/2024), years 1900 to 2099, separated by
// - / or . A run may start with a date a phone number follows, which is
// not part of it.
func dateLen(s string) int {
	num := func(i, min, max int) (int, int) { // value and end of 1-2 digits at i
		if i >= len(s) || !isDigit(s[i]) {
			return -1, i
		}
		v, j := int(s[i]-'0'), i+1
		if j < len(s) && isDigit(s[j]) {
			v, j = v*10+int(s[j]-'0'), j+1
		}
		if v < min || v > max {
			// A single digit may stand alone where two do not: 3 in "35".
			if v1 := int(s[i] - '0'); j == i+2 && v1 >= min && v1 <= max {
				return v1, i + 1
			}
			return -1, i
		}
		return v, j
	}
	sep := func(i int) bool { return i < len(s) && (s[i] == '-' || s[i] == '/' || s[i] == '.') }
	year := func(i int) bool {
		return i+4 <= len(s) && (s[i] == '1' && s[i+1] == '9' || s[i] == '2' && s[i+1] == '0') &&
			isDigit(s[i+2]) && isDigit(s[i+3])
	}
	if year(0) && sep(4) {
		if m, j := num(5, 1, 12); m > 0 && sep(j) {
			if d, k := num(j+1, 1, 31); d > 0 {
				return k
			}
		}
	}
	for _, first := range [][2]int{{1, 31}, {1, 12}} { // day or month first
		a, j := num(0, first[0], first[1])
		if a < 0 || !sep(j) {
			continue
		}
		second := [2]int{1, 12}
		if first[1] == 12 {
			second = [2]int{1, 31}
		}
		if b, k := num(j+1, second[0], second[1]); b > 0 && sep(k) && year(k+1) {
			return k + 5
		}
	}
	return 0
}

// runChar returns the size of the rune s starts with when it may stand in a
// run (digitRuns), else 0.
func runChar(s string) int {
	switch c := s[0]; {
	case isDigit(c), c == ' ', c == '\t', c == '\n', c == '\f', c == '\r', c == '(', c == ')', c == '.', c == '-', c == '/':
		return 1
	case c < utf8.RuneSelf:
		return 0
	}
	r, size := utf8.DecodeRuneInString(s)
	if unicode.In(r, unicode.Zs, unicode.Pd, unicode.Cf) || r == '\u2212' || r == '\u00b7' {
		// A space, a dash (the en dash and non-breaking hyphen that word
		// processors put in), an invisible format character (a zero-width
		// space, a soft hyphen), a minus sign, a middle dot.
		return size
	}
	return 0
}

// phoneRun narrows the run s[start:end] that digitRuns found to the
// phone number it holds, if any: the dates it starts with dropped, the
// groups glued to a word on either side dropped. Each step removes a
// whole group, so the work is linear in the run. A run of 10 digits or
// more not written as a phone number is one unless it is whole (a value's
// whole text, bareInWords) or such runs never are (bareNever,
// bareIdentity); there, only a + or an area code in parentheses
// (parenthesizedAreaCode) writes a number as a phone's, not its groups,
// and in an identity's value a channel's prefix before it
// (channelPrefix) too.
func phoneRun(s string, start, end int, whole [2]int, bare bareRuns) (int, int, bool) {
	identity := bare == bareIdentity
	if identity {
		// tel:5550100, wa_14155550199: the prefix says what the digits
		// after it are, whatever their groups or what follows; joined
		// by _ or - (fax-1234567 is a record's id), only when they are as
		// many as a number with its area code has.
		if n := countDigits(s[start:end]); s[start] != '+' && channelPrefix(s[:start]) &&
			(n >= minPrefixedDigits && (strings.HasSuffix(s[:start], ":") || strings.HasSuffix(s[:start], "wa.me/")) || n >= 10) {
			return start, end, true // however many: tel:4155550199/4155550100
		}
		bare = bareInWords
	}
	for start < end {
		if n := dateLen(s[start:end]); n > 0 {
			start = skipSeparators(s, start+n, end)
			continue
		}
		if !leftBounded(s, start) {
			start = nextGroup(s, start, end)
			continue
		}
		break
	}
	if start >= end {
		return 0, 0, false
	}
	// A number that starts with + is one whatever follows it (a flattened
	// signature: +14155550100Email), and so is one of 10 digits or more
	// that a letter follows (4155550100Email); otherwise the groups glued
	// to a word on the right are dropped.
	if s[start] != '+' && !(end < len(s) && isLetter(s[end]) && countDigits(s[start:end]) >= 10) {
		for start < end && !rightBounded(s, end) {
			end = previousGroup(s, start, end)
		}
	}
	if start >= end {
		return 0, 0, false
	}
	m := s[start:end]
	digits, groups, paren, dots, others := 0, 0, false, 0, 0
	for i := 0; i < len(m); i++ {
		switch c := m[i]; {
		case isDigit(c):
			if i == 0 || !isDigit(m[i-1]) {
				groups++
			}
			digits++
		case c == '(' || c == ')':
			paren = true
		case c == '.':
			dots++
		default:
			others++
		}
	}
	if identity && m[0] != '+' && digits > maxPhoneDigits {
		// An id: no phone number has as many digits. One written with a
		// + is a number, an extension or a second number after it
		// (+49 211 1234567-1234) whatever the count.
		return 0, 0, false
	}
	if m[0] == '+' {
		if digits >= 8 {
			return start, end, true
		}
		return 0, 0, false
	}
	// In a text that names a request, groups are no sign of a phone
	// number (DSAR 2024-000123-45, ticket 1234 5678 90): only a + (above)
	// or an area code in parentheses before a national number is.
	if bare == bareNever {
		if parenthesizedAreaCode(m) {
			return start, end, true
		}
		return 0, 0, false
	}
	// Not a phone number: a decimal (-122.4194155, 1234567890.00) or an
	// IPv4 address (192.168.100.200).
	if !paren && others == 0 && (groups == 2 && dots == 1 || ipv4(m)) {
		return 0, 0, false
	}
	// Written as a phone number is: in three groups or more (415 555 0100,
	// 06.12.34.56.78), or with an area code in parentheses. An amount
	// (1234567890.00) or a range (1000000 - 2000000) has two.
	written := groups >= 3 || paren
	isWhole := start == whole[0] && end == whole[1]
	if digits >= 10 && (written || !isWhole) {
		return start, end, true
	}
	return 0, 0, false
}

// parenthesizedAreaCode reports whether the run m is a phone number
// written with its area code in parentheses: a country code of 1 to 3
// digits or none, then the area code, of 2 or 3 digits or of up to 5
// starting with the trunk 0 ((415), (11), (020), (0161)), then the
// subscriber number, in 1 to 3 groups of 2 digits or more, of 6 to 9
// digits, the area code and it 10 to 12 digits in all: (415) 555-0100,
// 1 (415) 555 0100, (020) 7946 0958, (11) 98765-4321. A year in
// parentheses ((2024) 5550100123) or a number after a closing one is not.
func parenthesizedAreaCode(m string) bool {
	groups := func(s string) []int {
		var out []int
		for i := 0; i < len(s); i++ {
			if !isDigit(s[i]) {
				continue
			}
			if i == 0 || !isDigit(s[i-1]) {
				out = append(out, 0)
			}
			out[len(out)-1]++
		}
		return out
	}
	open, closing := strings.IndexByte(m, '('), strings.IndexByte(m, ')')
	if open < 0 || closing < open || strings.ContainsAny(m[closing+1:], "()") {
		return false
	}
	if lead := groups(m[:open]); len(lead) > 1 || len(lead) == 1 && lead[0] > 3 {
		return false
	}
	area := m[open+1 : closing]
	if len(area) < 2 || countDigits(area) != len(area) || len(area) > 3 && (area[0] != '0' || len(area) > 5) {
		return false
	}
	rest := groups(m[closing+1:])
	n := 0
	for _, g := range rest {
		if g < 2 {
			return false
		}
		n += g
	}
	return len(rest) >= 1 && len(rest) <= 3 && n >= 6 && n <= 9 && len(area)+n >= 10 && len(area)+n <= 12
}

// channels are the prefixes that name a phone number's channel in an
// identity's value (tel:4155550100, wa:14155550199, sms:…): the word, in
// any case, and the separator it is joined to the digits by. A URL's
// scheme or an app's channel names a number as such; any other word (user:,
// sess_, shop:, order-) names an id, and the digits after it are one.
var channels = []string{"tel", "phone", "sms", "smsto", "mms", "mmsto", "whatsapp", "wa", "msisdn", "callto", "fax",
	"mobile", "cell", "viber", "telegram", "signal"}

// minPrefixedDigits is how many digits a number after a channel's prefix
// joined by a colon has at least to be one: the shortest subscriber
// numbers (tel:5550100).
const minPrefixedDigits = 7

// maxPhoneDigits is the most digits a phone number has (E.164: 15).
const maxPhoneDigits = 15

// channelPrefix reports whether before, all that precedes a run of digits
// in an identity's value, ends in a channel's prefix (channels) directly
// before it: the channel's word standing alone (at the start, or after a
// character that is not a letter or a digit: sms:, chatbot/wa:,
// bot_wa_), then a :, a - or an _ (wa_14155550199, as an app joins a
// channel to its number in an id); or a WhatsApp link's wa.me/.
func channelPrefix(before string) bool {
	if strings.HasSuffix(before, "wa.me/") {
		return true
	}
	n := len(before)
	if n < 2 || before[n-1] != ':' && before[n-1] != '-' && before[n-1] != '_' {
		return false
	}
	k := n - 1
	for k > 0 && isLetter(before[k-1]) {
		k--
	}
	if k > 0 && (isLetter(before[k-1]) || isDigit(before[k-1])) {
		return false
	}
	word := before[k : n-1]
	for _, c := range channels {
		if strings.EqualFold(word, c) {
			return true
		}
	}
	return false
}

func isLetter(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }

func countDigits(s string) int {
	n := 0
	for i := 0; i < len(s); i++ {
		if isDigit(s[i]) {
			n++
		}
	}
	return n
}

// ipv4 reports whether m is four groups of one to three digits, each at
// most 255, joined by dots.
func ipv4(m string) bool {
	parts := strings.Split(m, ".")
	if len(parts) != 4 {
		return false
	}
	for _, p := range parts {
		if len(p) == 0 || len(p) > 3 {
			return false
		}
		v := 0
		for i := 0; i < len(p); i++ {
			if !isDigit(p[i]) {
				return false
			}
			v = v*10 + int(p[i]-'0')
		}
		if v > 255 {
			return false
		}
	}
	return true
}

// wordByte reports whether c continues a word an id is made of: an ASCII
// letter, digit or underscore. Any other character (a space, punctuation,
// a quote, a letter of another script, which writes no space before a
// number: 电话4155550100) stands between words.
func wordByte(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_'
}

// joiner is a character that glues a run to the word before or after it:
// the hyphen of a UUID, the slash of a path. A dot does not: "Tel.", "No."
// and "ph." come before numbers.
func joiner(c byte) bool { return c == '-' || c == '/' }

// leftBounded reports whether a run starting at i stands as a word: at the
// start, or after a character that is neither a word's nor a joiner glued
// to one, unless that word names a phone (Tel-4155550100). A run starting
// with + always does (a+1 415... is a number), and so does one after a
// WhatsApp link's wa.me/.
func leftBounded(s string, i int) bool {
	switch {
	case i == 0, s[i] == '+', strings.HasSuffix(s[:i], "wa.me/"):
		return true
	case wordByte(s[i-1]):
		return false
	case s[i-1] == '=':
		// A URL's query value (?order=1234567890) is glued to its name,
		// unless the name is personal (phone=, tel=).
		k := i - 1
		for k > 0 && wordByte(s[k-1]) {
			k--
		}
		return k == i-1 || KeyKind(s[k:i-1]) != ""
	}
	if !joiner(s[i-1]) || i < 2 || !wordByte(s[i-2]) {
		return true
	}
	// Glued, unless the word names a phone (Tel-4155550100, Fax/…): a
	// word of letters alone, so that an id's groups are not looked up.
	k := i - 1
	for k > 0 && isLetter(s[k-1]) {
		k--
	}
	return k < i-1 && (k == 0 || !wordByte(s[k-1])) && KeyKind(s[k:i-1]) == KindPhone
}

// rightBounded is leftBounded for a run ending at j; an extension written
// after the number (x123, ext123) does not glue it.
func rightBounded(s string, j int) bool {
	if j == len(s) {
		return true
	}
	rest := s[j:]
	for _, ext := range []string{"x", "X", "ext", "Ext", "EXT"} {
		if r, ok := strings.CutPrefix(rest, ext); ok && r != "" && isDigit(r[0]) {
			return true
		}
	}
	if wordByte(s[j]) {
		return false
	}
	return !joiner(s[j]) || j+1 >= len(s) || !wordByte(s[j+1])
}

// nextGroup returns where the run's next group of digits starts, past the
// separators after its first; end when there is none.
func nextGroup(s string, start, end int) int {
	i := start
	for i < end && (s[i] == '+' || s[i] == '(' || s[i] >= '0' && s[i] <= '9') {
		i++
	}
	return skipSeparators(s, i, end)
}

// skipSeparators returns the first digit, +, or ( at or after i, or end.
func skipSeparators(s string, i, end int) int {
	for i < end && !(s[i] >= '0' && s[i] <= '9' || s[i] == '+' || s[i] == '(') {
		i++
	}
	return i
}

// previousGroup returns the end of the group of digits before the run's
// last one; start when there is none.
func previousGroup(s string, start, end int) int {
	i := end
	for i > start && s[i-1] >= '0' && s[i-1] <= '9' {
		i--
	}
	for i > start && !(s[i-1] >= '0' && s[i-1] <= '9') {
		i--
	}
	return i
}

// mayHoldText reports whether Text could find anything in s: an email
// needs an @, and a phone number a run of at least 10 digits, or 8 after a
// +, counted from the first of its groups that stands as a word
// (leftBounded, as phoneRun drops the others). It reads s once, without a
// regexp, and errs on the side of yes: every byte of a multi-byte rune may
// be a space of a run, and dates and the right end are not looked at
// (TestMayHoldTextCoversTheScan).
func mayHoldText(s string) bool {
	if !anyTextByte(s) {
		return false
	}
	hold, plain := mayHoldASCII(s)
	if hold || plain {
		return hold
	}
	// As the scans read it (plainView): digits of other scripts as ASCII
	// digits, a URL's escapes decoded.
	if num, orig := plainView(s); orig != nil {
		hold, _ = mayHoldASCII(num)
		return hold
	}
	return false
}

// textBytes are the bytes without one of which a text holds nothing the
// scans find: a digit, an @, a % (an escape may write either), and the
// bytes of multi-byte runes (digits of other scripts, a fullwidth ＠).
var textBytes = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	t['@'], t['%'] = true, true
	for c := utf8.RuneSelf; c < 256; c++ {
		t[c] = true
	}
	return t
}()

// anyTextByte reports whether s holds one of textBytes: most keys and
// many values (plan, productName, red) hold none, and are read once, by
// a table.
func anyTextByte(s string) bool {
	for i := 0; i < len(s); i++ {
		if textBytes[s[i]] {
			return true
		}
	}
	return false
}

// mayHoldASCII is mayHoldText with ASCII digits alone counted as digits.
// When it finds nothing, plain reports whether s reads as written, without
// a byte plainView would read otherwise (a %, a +, a multi-byte rune): most
// texts and nearly every key, which are then read once.
func mayHoldASCII(s string) (hold, plain bool) {
	digits, plus, counting := 0, false, false
	plain = true
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '@':
			return true, false
		case c == '%':
			plain = false
			digits, plus, counting = 0, false, false
		case c == '+':
			// A run may start at a +, never go on through one.
			digits, plus, counting, plain = 0, true, true, false
		case isDigit(c) || c == '(':
			if i == 0 || !isDigit(s[i-1]) {
				// A group may start here: the run counts from the first
				// that stands as a word (a digit after a parenthesis is
				// taken as one, which errs on the side of yes).
				counting = counting || leftBounded(s, i)
			}
			if isDigit(c) && counting {
				digits++
				if digits >= 10 || plus && digits >= 8 {
					return true, false
				}
			}
		case c >= utf8.RuneSelf:
			// The run goes on.
			plain = false
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v' ||
			c == ')' || c == '.' || c == '-' || c == '/':
			// The run goes on.
		default:
			digits, plus, counting = 0, false, false
		}
	}
	return false, plain
}
