package load

import (
	"testing"
	"time"
)

// Percentile takes the nearest rank, ceil(p·n): the smallest value that at
// least a share p of the values do not exceed.
func TestPercentile(t *testing.T) {
	seq := func(n int) []time.Duration {
		d := make([]time.Duration, n)
		for i := range d {
			d[i] = time.Duration(i + 1)
		}
		return d
	}
	for _, c := range []struct {
		n    int
		p    float64
		want time.Duration
	}{
		{100, 0.99, 99},
		{100, 0.50, 50},
		{100, 1, 100},
		{100, 0.07, 7}, // 0.07·100 is 7.000000000000001 in float64
		{100, 0.001, 1},
		{4, 0.50, 2},
		{4, 0.99, 4},
		{4, 0.25, 1},
		{1000, 0.99, 990},
		{1000, 0.999, 999},
		{1, 0.50, 1},
		{1, 0.99, 1},
		{3, 0.50, 2},
	} {
		if got := Percentile(seq(c.n), c.p); got != c.want {
			t.Errorf("Percentile(1..%d, %v) = %d, want %d", c.n, c.p, got, c.want)
		}
	}
	if got := Percentile(nil, 0.99); got != 0 {
		t.Errorf("Percentile(nil) = %v, want 0", got)
	}
}
