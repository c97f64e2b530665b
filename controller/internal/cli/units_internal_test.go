package cli

import "testing"

func TestHumanBytes(t *testing.T) {
	for in, want := range map[float64]string{
		0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 1536: "1.5 KiB", 5 << 20: "5.0 MiB",
		8 << 30: "8.0 GiB", 3 << 40: "3.0 TiB", 1 << 62: "4.0 EiB",
	} {
		if got := humanBytes(in); got != want {
			t.Errorf("humanBytes(%v) = %q, want %q", in, got, want)
		}
	}
	if got := ofTotal(1<<30, 4<<30); got != "1.0 GiB / 4.0 GiB" {
		t.Errorf("ofTotal = %q", got)
	}
	if got := ofTotal(512, 0); got != "512 B" {
		t.Errorf("ofTotal without a total = %q", got)
	}
}
