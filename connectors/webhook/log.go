package webhook

import (
	"github.com/c360dev/c360"
	"github.com/c360dev/c360/pii"
)

// LogReason is the message of a refusal as a log line may carry it: with
// the email addresses and phone numbers in it masked as an assistant sees
// them (pii.Text), a refused number of more than 15 digits included
// ("+1415555010012345": too long). A refusal names what it refused
// ("invalid phone \"+4420794609\": it is missing its area code"), which the
// sender may read in the answer; logs are kept longer and read by more
// people.
func LogReason(err error) string {
	reason, _ := pii.Text(c360.ErrorMessage(err), true)
	return reason
}
