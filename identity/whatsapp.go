package identity

import (
	"strings"

	"github.com/nyaruka/phonenumbers"
)

// WhatsAppNumber returns the E.164 phone number that v, a number as
// WhatsApp writes it ("+5215512345678", what Meta sends as a wa_id and
// Twilio as "whatsapp:+5215512345678"), stands for, so that a person's
// WhatsApp messages and SMS reach one customer. WhatsApp keeps two
// national formats that the numbering plans have left behind:
//
//   - Mexico: a mobile number's wa_id has a "1" after the country code
//     ("+52 1 55 1234 5678"), which Mexico stopped dialling in 2019. The
//     number is "+52 55 1234 5678"; with the "1" it is too long to parse.
//   - Brazil: the wa_id of an account created before Brazil added a ninth
//     digit to mobile numbers (2012-2016) still lacks it
//     ("+55 21 8765 4321"). The number is "+55 21 98765 4321"; without the
//     9 it looks like a possible number, and would be another customer.
//
// A number is rewritten only when, as WhatsApp wrote it, it is not a valid
// number, and the rewritten one is a valid mobile number according to
// phonenumbers' metadata; any other v, including one not written in
// international form with a "+" or holding what is not part of a phone
// number, is returned unchanged. Only numbers that
// come from WhatsApp are to be given here: the rules describe WhatsApp's
// ids, not the numbers people write.
func WhatsAppNumber(v string) string {
	s := strings.TrimSpace(v)
	if !strings.HasPrefix(s, "+") || strings.ContainsFunc(s, func(r rune) bool { return !phoneRune(r) }) {
		return v
	}
	digits := phonenumbers.NormalizeDigitsOnly(s)
	// Country calling codes are prefix-free, so the leading digits name
	// the country. These length and prefix tests only keep every other
	// number from being parsed; phonenumbers decides below.
	var fixed string
	switch {
	case len(digits) == 13 && strings.HasPrefix(digits, "521"):
		fixed = "52" + digits[3:]
	case len(digits) == 12 && strings.HasPrefix(digits, "55") && '6' <= digits[4] && digits[4] <= '9':
		// A landline's subscriber number starts with 2 to 5; a mobile
		// number's, before the ninth digit, with 6 to 9.
		fixed = digits[:4] + "9" + digits[4:]
	default:
		return v
	}
	if as, err := phonenumbers.Parse("+"+digits, ""); err != nil || phonenumbers.IsValidNumber(as) {
		return v
	}
	num, err := phonenumbers.Parse("+"+fixed, "")
	if err != nil || !phonenumbers.IsValidNumber(num) {
		return v
	}
	switch phonenumbers.GetNumberType(num) {
	case phonenumbers.MOBILE, phonenumbers.FIXED_LINE_OR_MOBILE: // Mexico no longer tells them apart
	default:
		return v
	}
	// Brazil's area codes have two digits: the 9 must open the subscriber
	// number, right after the area code.
	if num.GetCountryCode() == 55 && phonenumbers.GetLengthOfNationalDestinationCode(num) != 2 {
		return v
	}
	return phonenumbers.Format(num, phonenumbers.E164)
}
