package pii

import "testing"

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
	} {
		if got, _ := Text(tc.in, true); got != tc.want {
			t.Errorf("Text(%q) = %q, want %q", tc.in, got, tc.want)
		}
		if got, _ := Text(tc.in, false); got != tc.in {
			t.Errorf("Text(%q, not masking) = %q, want it unchanged", tc.in, got)
		}
	}
}
