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
}
