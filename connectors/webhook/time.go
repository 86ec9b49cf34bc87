package webhook

import (
	"time"

	"github.com/c360dev/c360"
)

// MaxFuture is how far past its receipt an event may say it happened:
// c360.MaxFuture, which ingest applies to every event. Connectors apply it
// too where a time they do not believe must not count for anything else.
const MaxFuture = c360.MaxFuture

// OccurredAt returns the time an event claims, unless it is more than
// MaxFuture past receivedAt or before c360.MinOccurredAt (1900): then
// receivedAt (c360.OccurredAt).
func OccurredAt(claimed, receivedAt time.Time) time.Time {
	return c360.OccurredAt(claimed, receivedAt)
}
