package webhook

import "time"

// MaxFuture is how far past its receipt an event may say it happened.
// Further, the clock that stamped it is wrong (or the call is made up; a
// Segment write key is public in a browser), and the time is not believed:
// an event dated years ahead would win every later trait update.
const MaxFuture = 24 * time.Hour

// OccurredAt returns the time an event claims, unless it is more than
// MaxFuture past receivedAt: then receivedAt.
func OccurredAt(claimed, receivedAt time.Time) time.Time {
	if claimed.After(receivedAt.Add(MaxFuture)) {
		return receivedAt
	}
	return claimed
}
