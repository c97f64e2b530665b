package cli

import "testing"

// berth metrics rounds disk and inode use up to a whole percent, as df
// does, so "91%" there is "91%" in df; unknown shows "-".
func TestDfPercent(t *testing.T) {
	for _, c := range []struct {
		pct  float64
		ok   bool
		want string
	}{
		{90.01, true, "91%"}, {90, true, "90%"}, {0, true, "0%"}, {100.0 / 6, true, "17%"}, {99.5, true, "100%"}, {42, false, "-"},
	} {
		if got := dfPercent(c.pct, c.ok); got != c.want {
			t.Errorf("dfPercent(%v, %v) = %q, want %q", c.pct, c.ok, got, c.want)
		}
	}
	if optPercent(3, false) != nil || optPercent(3.5, true) != 3.5 {
		t.Error("optPercent: want nil when unknown, the raw value otherwise")
	}
}
