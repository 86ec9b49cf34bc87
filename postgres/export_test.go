package postgres

// Statements whose plans tests inspect.
var PlannedStatements = map[string]struct {
	SQL  string
	Args func(ws, customer int64) []any
}{
	"FindCustomerByID": {findCustomerByIDSQL, func(ws, c int64) []any { return []any{ws, c} }},
	"CustomersByIDs":   {customersByIDsSQL, func(ws, c int64) []any { return []any{ws, []int64{c}} }},
}
