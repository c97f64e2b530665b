package fleet

import (
	"strings"
	"testing"
)

// Printed install commands that name a loopback address work only on the
// controller's own machine: they come with a warning naming the flag.
func TestReachabilityWarnings(t *testing.T) {
	for _, tc := range []struct {
		addr, url string
		want      []string
	}{
		{"127.0.0.1:7443", "http://127.0.0.1:8080", []string{"--advertise-addr", "--public-url"}},
		{"localhost:7443", "https://berth.example.com", []string{"--advertise-addr"}},
		{"[::1]:7443", "https://berth.example.com", []string{"--advertise-addr"}},
		{"0.0.0.0:7443", "https://berth.example.com", []string{"--advertise-addr"}},
		{"berth.example.com:7443", "http://localhost:8080", []string{"--public-url"}},
		{"berth.example.com:7443", "https://berth.example.com", nil},
		{"10.0.0.5:7443", "", nil},
	} {
		s := &Service{cfg: Config{ControllerAddr: tc.addr, InstallURL: tc.url}}
		got := s.reachabilityWarnings()
		if len(got) != len(tc.want) {
			t.Errorf("%s %s: %d warnings %q, want %d", tc.addr, tc.url, len(got), got, len(tc.want))
			continue
		}
		for i, flag := range tc.want {
			if !strings.Contains(got[i], flag) {
				t.Errorf("%s %s: warning %q does not name %s", tc.addr, tc.url, got[i], flag)
			}
		}
	}
}
