package c360

import "time"

// Consent statuses.
const (
	ConsentOptedIn  = "opted_in"
	ConsentOptedOut = "opted_out"
)

// Consent is a customer's permission to be messaged on a channel.
type Consent struct {
	CustomerID int64
	Channel    string
	Status     string
	UpdatedAt  time.Time
	Source     string
}
