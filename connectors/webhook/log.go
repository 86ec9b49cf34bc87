package webhook

import (
	"regexp"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/pii"
)

// digitRun is a run of digits as phone numbers are written, with an
// optional + and the punctuation people put between groups.
var digitRun = regexp.MustCompile(`\+?\d[\d ().\-]*\d`)

// LogReason is the message of a refusal as a log line may carry it: with
// the email addresses and phone numbers in it masked as an assistant sees
// them (pii.Text), and so is a run of more than 15 digits, which pii.Text
// leaves alone in free text (no phone number is that long) but a refused
// one can be ("+1415555010012345": too long). A refusal names what it refused
// ("invalid phone \"+4420794609\": it is missing its area code"), which the
// sender may read in the answer; logs are kept longer and read by more
// people.
func LogReason(err error) string {
	reason, _ := pii.Text(c360.ErrorMessage(err), true)
	return digitRun.ReplaceAllStringFunc(reason, func(m string) string {
		digits := 0
		for i := 0; i < len(m); i++ {
			if m[i] >= '0' && m[i] <= '9' {
				digits++
			}
		}
		if digits <= 15 {
			return m // pii.Text's, masked or not a phone number
		}
		return pii.Phone(m)
	})
}
