package web

import "testing"

// The bypasses below are the known ways to turn a "relative" redirect into
// another host once a browser has normalised it (tab and newline removal,
// backslash as slash, leading control and space trimming), plus schemes.
func TestSafeNextRefusesBrowserBypasses(t *testing.T) {
	refused := []string{
		"", "x", "//evil.example", "//evil.example/x", "///evil.example", "/\\evil.example",
		"\\/evil.example", "\\\\evil.example", "/\t/evil.example", "/\n/evil.example",
		"/\r/evil.example", "/\t\t/evil.example", " //evil.example", "\t//evil.example",
		"\x00//evil.example", "/\x00/evil.example", "/\x0b/evil.example", "/\x0c/evil.example",
		"/\x1f/evil.example", "/\x7f/evil.example", "/ /evil.example", "/\u00a0/evil.example",
		"/\u2028/evil.example", "/\u3000/evil.example", "/\ufeff/evil.example",
		"https://evil.example", "http:evil.example", "https:/evil.example", "javascript:alert(1)",
		"JaVaScRiPt:alert(1)", "data:text/html,x", "/\r\nLocation: //evil",
	}
	for _, next := range refused {
		if got := safeNext(next); got != "/" {
			t.Errorf("safeNext(%q) = %q, want /", next, got)
		}
	}
	kept := map[string]string{
		"/":                          "/",
		"/servers":                   "/servers",
		"/servers?status=online":     "/servers?status=online",
		"/apps/shop#deployments":     "/apps/shop#deployments",
		"/a/%2F%2Fevil.example":      "/a/%2F%2Fevil.example", // an escaped slash stays a path segment
		"/%09/evil.example":          "/%09/evil.example",     // escaped: a browser keeps it in the path
		"/servers/web-1?range=1h&x=": "/servers/web-1?range=1h&x=",
		"/%0d%0aSet-Cookie:x":        "/%0d%0aSet-Cookie:x", // escaped, never a header break
	}
	for next, want := range kept {
		if got := safeNext(next); got != want {
			t.Errorf("safeNext(%q) = %q, want %q", next, got, want)
		}
	}
}
