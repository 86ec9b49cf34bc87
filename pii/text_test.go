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
	} {
		if got, _ := Text(tc.in, true); got != tc.want {
			t.Errorf("Text(%q) = %q, want %q", tc.in, got, tc.want)
		}
		if got, _ := Text(tc.in, false); got != tc.in {
			t.Errorf("Text(%q, not masking) = %q, want it unchanged", tc.in, got)
		}
	}
}
