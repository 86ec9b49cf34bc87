package webhook

import (
	"testing"
	"time"
)

func TestOccurredAt(t *testing.T) {
	received := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		claimed, want time.Time
	}{
		{received.Add(-48 * time.Hour), received.Add(-48 * time.Hour)}, // the past is believed
		{received.Add(MaxFuture), received.Add(MaxFuture)},             // up to a day ahead too
		{received.Add(MaxFuture + time.Nanosecond), received},          // past it, not
		{received.AddDate(30, 0, 0), received},
	} {
		if got := OccurredAt(tc.claimed, received); !got.Equal(tc.want) {
			t.Errorf("OccurredAt(%v) = %v, want %v", tc.claimed, got, tc.want)
		}
	}
}
