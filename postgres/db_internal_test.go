package postgres

import (
	"context"
	"testing"
)

// The tenant pool's size comes from MaxConns (C360_DB_MAX_CONNS), else the
// URL's pool_max_conns, else 16; the owner pool stays at 4. Opening a pool
// does not connect, so no server need listen at the URL.
func TestPoolSizeOrder(t *testing.T) {
	const url = "postgres://c360@127.0.0.1:1/none"
	for _, tc := range []struct {
		name string
		url  string
		opts []Option
		want int32
	}{
		{"default", url, nil, 16},
		{"url", url + "?pool_max_conns=5", nil, 5},
		{"option", url, []Option{MaxConns(3)}, 3},
		{"option over url", url + "?pool_max_conns=5", []Option{MaxConns(3)}, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			db, err := Open(context.Background(), tc.url, tc.opts...)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			if got := db.app.Config().MaxConns; got != tc.want {
				t.Errorf("tenant pool max conns = %d, want %d", got, tc.want)
			}
			if got := db.Pool.Config().MaxConns; got != 4 {
				t.Errorf("owner pool max conns = %d, want 4", got)
			}
		})
	}
}
