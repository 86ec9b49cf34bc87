package pii

import (
	"regexp"
	"strings"
)

// Free text (message bodies, observations) can carry personal data
// anywhere in it. These find what looks like an email address or a phone
// number inside a text, so it can be masked with this package's rules.
var (
	// Letters of any script: josé@example.com is an address too.
	emailInText = regexp.MustCompile(`[\p{L}\p{N}._%+\-]+@[\p{L}\p{N}\-]+(?:\.[\p{L}\p{N}\-]+)*\.\p{L}{2,}`)
	// Digits with what people put between their groups: punctuation, a
	// slash, any space (the no-break spaces that copying and phone
	// keyboards produce) or a line break.
	phoneInText = regexp.MustCompile(`\+?\(?\d[\d\s\p{Zs}().\-/]{5,}\d`)
	// A date a run of digits may start with (2024-03-01, 2024/3/1,
	// 01.03.2024): it is not part of a phone number after it.
	dateInRun = regexp.MustCompile(`^(?:(?:19|20)\d\d[-/.](?:0?[1-9]|1[0-2])[-/.](?:0?[1-9]|[12]\d|3[01])|(?:0?[1-9]|[12]\d|3[01])[-/.](?:0?[1-9]|1[0-2])[-/.](?:19|20)\d\d)`)
)

// Text masks the email addresses and phone numbers in free text when
// masking is set, and reports the kinds of personal data found either way.
// A run of digits counts as a phone number when it starts with + and has
// at least 8 digits, or has at least 10; a date it starts with is left out
// of it. A run longer than any phone number (several numbers written one
// after another, a card number) is masked too: masking a long order number
// is the price of never letting a phone number through.
func Text(s string, masking bool) (string, []string) {
	var found []string
	// Most texts hold neither. Counting first spares the regexps' scans
	// (4% of a console query's CPU); masking an email adds no digit.
	if !mayHoldText(s) {
		return s, nil
	}
	if strings.IndexByte(s, '@') >= 0 {
		s = emailInText.ReplaceAllStringFunc(s, func(m string) string {
			found = append(found, string(KindEmail))
			if !masking {
				return m
			}
			return Email(m)
		})
	}
	var run func(m string) string
	run = func(m string) string {
		if d := dateInRun.FindString(m); d != "" {
			return d + phoneInText.ReplaceAllStringFunc(m[len(d):], run)
		}
		digits := 0
		for i := 0; i < len(m); i++ {
			if m[i] >= '0' && m[i] <= '9' {
				digits++
			}
		}
		plus := strings.HasPrefix(m, "+")
		if !(plus && digits >= 8) && digits < 10 {
			return m
		}
		found = append(found, string(KindPhone))
		if !masking {
			return m
		}
		lead := ""
		if !plus {
			// Keep what precedes the number (a parenthesis) out of pii.Phone,
			// which masks a number without a country code to its last four.
			lead = m[:strings.IndexAny(m, "0123456789")]
		}
		return lead + Phone(strings.TrimPrefix(m, lead))
	}
	s = phoneInText.ReplaceAllStringFunc(s, run)
	return s, found
}

// mayHoldText reports whether Text could find anything in s: an email
// needs an @, and a phone number 10 digits, or 8 after a +.
func mayHoldText(s string) bool {
	plus, digits := false, 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '@':
			return true
		case c == '+':
			plus = true
		case c >= '0' && c <= '9':
			digits++
		}
	}
	return digits >= 10 || plus && digits >= 8
}
