package resolver

import (
	"strings"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/pii"
)

// checkErasureReason refuses a reason eraseCustomer cannot keep. The reason
// stays in the audit log after the person's data is gone, as the record of
// why it went: it must say something, within c360.MaxErasureReasonLen
// bytes, and hold no email address or phone number written as one
// (pii.Formatted), or the erasure would leave the person's identifier
// behind in its own record. Digits alone or in groups are a request's
// number (ticket 1234567890, DSAR 2024-000123-45, Zendesk 4815 1623 42),
// which pii.Text would take for a phone number: only a + or an area code
// in parentheses writes one; the erasure itself refuses a reason that holds one of the
// person's identifiers or personal traits, her number written bare
// included (postgres.reasonNames).
func checkErasureReason(reason string) error {
	if strings.TrimSpace(reason) == "" {
		return c360.Errorf(c360.EINVALID, "reason must say why the customer is erased (a ticket number, say)")
	}
	if err := c360.CheckReason(reason, c360.MaxErasureReasonLen); err != nil {
		return err
	}
	if found := pii.Formatted(reason); len(found) > 0 {
		return c360.Errorf(c360.EINVALID, "reason holds personal data (%s): it is kept in the audit log after the erasure; name the request instead (a ticket number, say)",
			strings.Join(found, ", "))
	}
	return nil
}
