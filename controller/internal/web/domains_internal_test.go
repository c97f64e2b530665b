package web

import (
	"testing"
	"time"
)

func TestDaysLeft(t *testing.T) {
	day := 24 * time.Hour
	for _, tc := range []struct {
		left time.Duration
		n    int
		text string
	}{
		{40*day + time.Hour, 40, "40 days left"},
		{14*day - time.Minute, 13, "13 days left"},
		{day + time.Minute, 1, "1 day left"},
		{time.Hour, 0, "expires today"},
		{-time.Hour, 0, "expired today"},
		{-day - time.Hour, -1, "expired 1 day ago"},
		{-3*day - time.Hour, -3, "expired 3 days ago"},
	} {
		if n, text := daysLeft(tc.left); n != tc.n || text != tc.text {
			t.Errorf("daysLeft(%v) = %d %q, want %d %q", tc.left, n, text, tc.n, tc.text)
		}
	}
}
