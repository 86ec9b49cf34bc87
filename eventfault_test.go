package c360_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/c360dev/c360"
)

type sqlStateError string

func (e sqlStateError) Error() string    { return "sqlstate " + string(e) }
func (e sqlStateError) SQLState() string { return string(e) }

// The one decision of whose fault a failed ingest is, which dead letters
// (postgres) and Segment's batch isolation both follow.
func TestEventFault(t *testing.T) {
	for _, c := range []struct {
		err  error
		want bool
	}{
		{nil, false},
		{context.Canceled, false},
		{fmt.Errorf("group: %w", context.DeadlineExceeded), false},
		{c360.Errorf(c360.EUNAVAILABLE, "database down"), false},
		{c360.Errorf(c360.ERATELIMITED, "slow down"), false},
		{fmt.Errorf("write group: %w", sqlStateError("40001")), false}, // serialization failure
		{fmt.Errorf("write group: %w", sqlStateError("40P01")), false}, // deadlock
		{fmt.Errorf("write group: %w", sqlStateError("22P05")), true},  // NUL in text
		{c360.Errorf(c360.EINVALID, "bad value"), true},
		{&c360.DeadLetteredError{IDs: []int64{1}, Err: c360.Errorf(c360.EINVALID, "bad")}, true},
		{errors.New("a bug"), true},
	} {
		if got := c360.EventFault(c.err); got != c.want {
			t.Errorf("EventFault(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}
