package client

import (
	"regexp"
	"testing"
	"time"
)

// Held job ids are ULIDs the controller parses, ordered by time.
func TestNewULID(t *testing.T) {
	re := regexp.MustCompile(`^[0-7][0-9A-HJKMNP-TV-Z]{25}$`)
	t0 := time.Date(2026, 3, 1, 3, 0, 0, 0, time.UTC)
	a, b := NewULID(t0), NewULID(t0.Add(time.Millisecond))
	if !re.MatchString(a) || !re.MatchString(b) || a >= b || a == NewULID(t0) {
		t.Fatalf("%s %s", a, b)
	}
	// The time part is the milliseconds (oklog/ulid, which the controller uses, gives 01KJKND9W0 for t0).
	if a[:10] != "01KJKND9W0" {
		t.Fatalf("time part %s", a[:10])
	}
}
