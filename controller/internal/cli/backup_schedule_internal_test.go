package cli

import (
	"bytes"
	"strings"
	"testing"
)

// Bad schedule flags are refused before dialing, in one line.
func TestBackupScheduleFlagsAreValidated(t *testing.T) {
	add := []string{"backup", "schedule", "add", "shop", "--destination", "d", "--kind", "postgres", "--source", "shop", "--cron", "0 3 * * *"}
	with := func(extra ...string) []string { return append(append([]string{}, add...), extra...) }
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"backup", "schedule", "add", "shop", "--cron", "0 3 * * *", "--keep", "3"}, "--destination, --kind, --source and --cron are required"},
		{[]string{"backup", "schedule", "add", "shop", "--destination", "d", "--kind", "postgres", "--source", "shop", "--keep", "3"}, "--cron are required"},
		{add, "give --keep N and/or --keep-days D"},
		{with("--keep", "0"), "give --keep N and/or --keep-days D"},
		{with("--keep", "-1"), "--keep and --keep-days are positive"},
		{with("--keep-days", "-2"), "--keep and --keep-days are positive"},
		{with("--keep", "x"), "invalid argument"},
		{with("--keep", "99999999"), "at most"},
		{[]string{"backup", "schedule", "add"}, "accepts 1 arg(s)"},
		{[]string{"backup", "schedule", "show"}, "accepts 1 arg(s)"},
		{[]string{"backup", "schedule", "disable"}, "accepts 1 arg(s)"},
		{[]string{"backup", "schedule", "enable", "a", "b"}, "accepts 1 arg(s)"},
		{[]string{"backup", "schedule", "remove"}, "accepts 1 arg(s)"},
		{[]string{"backup", "schedule", "list", "-o", "yaml"}, "-o must be text or json"},
		// Valid flags reach the dial, which needs the CA.
		{with("--keep", "7", "--keep-days", "30", "--timezone", "Europe/Berlin", "--verify"), "set BERTH_CA_FILE"},
		{[]string{"backup", "schedule", "list", "--app", "shop", "-o", "json"}, "set BERTH_CA_FILE"},
	} {
		var out, errb bytes.Buffer
		code := Main(tc.args, strings.NewReader(""), &out, &errb)
		if code == 0 || out.String() != "" || !strings.Contains(errb.String(), tc.want) || strings.Count(errb.String(), "\n") != 1 {
			t.Errorf("%v: code %d, stdout %q, stderr %q; want one line with %q", tc.args, code, out.String(), errb.String(), tc.want)
		}
	}
}
