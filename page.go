package c360

// Page is one page of a connection: items, the cursor of each, and whether
// more follow the last.
type Page[T any] struct {
	Items   []T
	Cursors []string
	HasNext bool
}

// PageArgs selects a page: at most First items after the After cursor.
type PageArgs struct {
	First int
	After string
	// Dropped asks a page of events for each event's drop records too
	// (Event.Dropped): read only for a query that selects them, since a
	// page of events is read on every customer-360 query. Other lists
	// ignore it.
	Dropped bool
}

// MaxPage bounds any connection's page size.
const MaxPage = 100

// CheckFirst refuses a page size outside 1..MaxPage.
func CheckFirst(first int) error {
	if first < 1 || first > MaxPage {
		return Errorf(EINVALID, "first must be between 1 and %d", MaxPage)
	}
	return nil
}
