package cli

import (
	"bytes"
	"strings"
	"testing"
)

// Bad alert flags are refused before dialing, in one line.
func TestAlertFlagsAreValidated(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"alert", "add", "x"}, "--metric is required"},
		{[]string{"alert", "add", "x", "--metric", "temperature", "--above", "1"}, "want one of cpu, memory"},
		{[]string{"alert", "add", "x", "--metric", "cpu"}, "--above X is required for cpu"},
		{[]string{"alert", "add", "x", "--metric", "cpu", "--above", "-5"}, "--above must be a number of at least 0"},
		{[]string{"alert", "add", "x", "--metric", "cpu", "--above", "NaN"}, "--above must be a number of at least 0"},
		{[]string{"alert", "add", "x", "--metric", "cpu", "--above", "many"}, "invalid argument"},
		{[]string{"alert", "add", "x", "--metric", "cpu", "--above", "50", "--resolve-below", "NaN"}, "--resolve-below must be"},
		{[]string{"alert", "add", "x", "--metric", "cpu", "--above", "50", "--server", "web-1", "--label", "env=prod"}, "not both"},
		{[]string{"alert", "add", "x", "--metric", "cpu", "--above", "50", "--mount", "/"}, "--mount is for disk and inodes only"},
		{[]string{"alert", "add", "x", "--metric", "cpu", "--above", "50", "--for", "-1m"}, "--for must be from 0s to 24h"},
		{[]string{"alert", "add", "x", "--metric", "cpu", "--above", "50", "--for", "25h"}, "--for must be from 0s to 24h"},
		{[]string{"alert", "add", "x", "--metric", "cpu", "--above", "50", "--for", "soon"}, "invalid argument"},
		{[]string{"alert", "add", "x", "--metric", "cpu", "--above", "50", "--level", "info"}, "want warning or critical"},
		{[]string{"alert", "add", "x", "--metric", "offline", "--above", "1"}, "offline takes no --above"},
		{[]string{"alert", "add"}, "accepts 1 arg(s)"},
		{[]string{"alert", "show"}, "accepts 1 arg(s)"},
		{[]string{"alert", "remove", "a", "b"}, "accepts 1 arg(s)"},
		{[]string{"alert", "list", "-o", "yaml"}, "-o must be text or json"},
		// Valid flags reach the dial, which needs the CA.
		{[]string{"alert", "add", "tmp", "--metric", "disk", "--above", "50", "--for", "10s", "--mount", "/mnt/t", "--server", "web-1", "--level", "critical"}, "set BERTH_CA_FILE"},
		{[]string{"alert", "add", "gone", "--metric", "offline", "--for", "2m", "--label", "env=prod"}, "set BERTH_CA_FILE"},
		{[]string{"alert", "list", "-o", "json"}, "set BERTH_CA_FILE"},
		{[]string{"alert", "add", "disk-above-90", "--metric", "disk", "--above", "80", "--replace"}, "set BERTH_CA_FILE"},
	} {
		var out, errb bytes.Buffer
		code := Main(tc.args, strings.NewReader(""), &out, &errb)
		if code == 0 || out.String() != "" || !strings.Contains(errb.String(), tc.want) || strings.Count(errb.String(), "\n") != 1 {
			t.Errorf("%v: code %d, stdout %q, stderr %q; want one line with %q", tc.args, code, out.String(), errb.String(), tc.want)
		}
	}
}
