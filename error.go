package c360

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// Error codes shared by every transport. GraphQL reports them verbatim in
// extensions.code; the HTTP layer maps them to statuses in one table.
const (
	EUNAUTHENTICATED = "UNAUTHENTICATED"
	EFORBIDDEN       = "FORBIDDEN"
	ENOTFOUND        = "NOT_FOUND"
	EINVALID         = "BAD_USER_INPUT"
	ECONFLICT        = "CONFLICT"
	ERATELIMITED     = "RATE_LIMITED"
	EUNAVAILABLE     = "UNAVAILABLE"
	EINTERNAL        = "INTERNAL"
)

// Error is a domain error: a code callers can act on and a message safe to
// show to the client. Anything that is not an *Error is internal, and its
// text never leaves the process.
type Error struct {
	Code    string
	Message string
}

// Error implements the error interface.
func (e *Error) Error() string {
	return fmt.Sprintf("c360 error: code=%s message=%s", e.Code, e.Message)
}

// Errorf returns an *Error with the given code and a formatted message.
func Errorf(code string, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// ErrorCode returns the code of the first *Error in err's chain, EINTERNAL for
// any other non-nil error, and "" for nil.
func ErrorCode(err error) string {
	var e *Error
	if err == nil {
		return ""
	} else if errors.As(err, &e) {
		return e.Code
	}
	return EINTERNAL
}

// ErrorMessage returns the client-safe message of err: the message of an
// *Error, or a generic text for internal errors, whose details stay in logs.
func ErrorMessage(err error) string {
	var e *Error
	if err == nil {
		return ""
	} else if errors.As(err, &e) {
		return e.Message
	}
	return "internal error"
}

// ErrorMessageOrText returns the message of an *Error, or err's own text. The
// CLI uses it: an operator at a terminal should see the cause.
func ErrorMessageOrText(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Message
	}
	return err.Error()
}

// CheckStorable refuses, with EINVALID naming the field, a text that
// PostgreSQL's text columns would refuse: bytes that are not UTF-8, or a
// NUL character (valid JSON as \u0000). Checked before anything is done
// with the text, so that nothing is done that could not be recorded.
func CheckStorable(name, s string) error {
	if !utf8.ValidString(s) {
		return Errorf(EINVALID, "%s is not valid UTF-8", name)
	}
	if strings.IndexByte(s, 0) >= 0 {
		return Errorf(EINVALID, "%s holds a NUL character (\\u0000), which cannot be stored", name)
	}
	return nil
}

// CheckReason refuses, with EINVALID, an operator's reason (of an erasure,
// a merge, a split) longer than limit bytes, or one CheckStorable refuses.
func CheckReason(reason string, limit int) error {
	if len(reason) > limit {
		return Errorf(EINVALID, "reason is longer than %d bytes", limit)
	}
	return CheckStorable("reason", reason)
}
