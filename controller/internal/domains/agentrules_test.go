package domains

import "testing"

// What the controller stores, the agent must accept: a redirect target or
// custom certificate path the agent's checks refuse would make every site
// job of the app fail (its other domains too, and every later change)
// until the domain is removed. So the controller refuses them up front,
// with the same rules as agent/internal/proxy/validate.go.
func TestControllerRefusesWhatTheAgentRefuses(t *testing.T) {
	t.Parallel()
	for _, in := range []string{
		"https://example.com/a?b=1",  // the request's own query is appended
		"https://example.com/a#frag", // so is nothing after a fragment
		"https://example.com/?",      // an empty query
		"https://example.com/$host",  // an nginx variable
		"https://example.com/a(b)",   // outside the agent's path characters
		"https://example.com/a,b",
		"https://example.com/a:b",
	} {
		if stored, _, err := redirectTarget(in); err == nil {
			t.Errorf("redirectTarget(%q) accepted as %q", in, stored)
		}
	}
	for in, want := range map[string]string{
		"https://example.com/a/b_c-d.e~f": "https://example.com/a/b_c-d.e~f",
		"https://example.com/%C3%BC":      "https://example.com/%C3%BC",
		"https://example.com/ü":           "https://example.com/%C3%BC",
	} {
		if stored, _, err := redirectTarget(in); err != nil || stored != want {
			t.Errorf("redirectTarget(%q) = %q, %v; want %q", in, stored, err, want)
		}
	}
	for _, in := range []string{"/etc/ssl/c#1.pem", "/etc/ssl/ü.pem", "/etc/ssl/a:b.pem", "/etc/ssl/a,b.pem", "/etc/ssl/a%b.pem"} {
		if _, err := checkServerPath("--cert-path", in); err == nil {
			t.Errorf("checkServerPath(%q) accepted", in)
		}
	}
	if _, err := checkUpstream("unix:/run/a#b.sock"); err == nil {
		t.Error("checkUpstream accepted a socket path the agent refuses")
	}
	for _, in := range []string{"/etc/ssl/private/shop.example.com.key", "/etc/letsencrypt/live/a@b+c/x_y-z.pem"} {
		if _, err := checkServerPath("--key-path", in); err != nil {
			t.Errorf("checkServerPath(%q): %v", in, err)
		}
	}
}
