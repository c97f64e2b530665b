package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Bad backup flags are refused before dialing, in one line; secrets come
// only from standard input or a key file and never reach the output.
func TestBackupFlagsAreValidated(t *testing.T) {
	big := filepath.Join(t.TempDir(), "big")
	if err := os.WriteFile(big, bytes.Repeat([]byte("k"), 17<<10), 0o600); err != nil {
		t.Fatal(err)
	}
	const secret = "cli-secret-0123456789"
	for _, tc := range []struct {
		args  []string
		stdin string
		want  string
	}{
		{[]string{"backup", "destination", "add", "d"}, "", "--kind is required"},
		{[]string{"backup", "destination", "add", "d", "--kind", "ftp"}, "", "want local, s3 or sftp"},
		{[]string{"backup", "destination", "add", "d", "--kind", "local", "--path", "/x", "--password-stdin"}, "", "takes --path only"},
		{[]string{"backup", "destination", "add", "d", "--kind", "s3", "--endpoint", "https://h", "--bucket", "b", "--access-key-id", "a"}, "", "needs --secret-access-key-stdin"},
		{[]string{"backup", "destination", "add", "d", "--kind", "s3", "--secret-access-key-stdin"}, "", "no secret access key on standard input"},
		{[]string{"backup", "destination", "add", "d", "--kind", "sftp", "--host", "h"}, "", "exactly one of --password-stdin and --private-key-file"},
		{[]string{"backup", "destination", "add", "d", "--kind", "sftp", "--password-stdin", "--private-key-file", big}, "", "exactly one of"},
		{[]string{"backup", "destination", "add", "d", "--kind", "sftp", "--private-key-file", big}, "", "larger than"},
		{[]string{"backup", "destination", "add", "d", "--kind", "sftp", "--port", "70000", "--password-stdin"}, secret + "\n", "--port must be 1-65535"},
		{[]string{"backup", "destination", "add"}, "", "accepts 1 arg(s)"},
		{[]string{"backup", "destination", "test"}, "", "accepts 1 arg(s)"},
		{[]string{"backup", "run", "shop"}, "", "--destination, --kind and --source are required"},
		{[]string{"backup", "run"}, "", "accepts 1 arg(s)"},
		{[]string{"backup", "download", "01ARZ3NDEKTSV4RRFFQ69G5FAV"}, "", "--output FILE is required"},
		{[]string{"backup", "restore"}, "", "accepts 1 arg(s)"},
		{[]string{"backup", "list", "-o", "yaml"}, "", "-o must be text or json"},
		// Valid flags reach the dial, which needs the CA.
		{[]string{"backup", "destination", "add", "d", "--kind", "s3", "--endpoint", "https://h", "--bucket", "b", "--access-key-id", "a", "--secret-access-key-stdin"}, secret + "\n", "set BERTH_CA_FILE"},
		{[]string{"backup", "run", "shop", "--destination", "d", "--kind", "postgres", "--source", "shop", "--follow"}, "", "set BERTH_CA_FILE"},
		{[]string{"backup", "download", "01ARZ3NDEKTSV4RRFFQ69G5FAV", "--output", filepath.Join(t.TempDir(), "f")}, "", "set BERTH_CA_FILE"},
	} {
		var out, errb bytes.Buffer
		code := Main(tc.args, strings.NewReader(tc.stdin), &out, &errb)
		if code == 0 || out.String() != "" || !strings.Contains(errb.String(), tc.want) || strings.Count(errb.String(), "\n") != 1 {
			t.Errorf("%v: code %d, stdout %q, stderr %q; want one line with %q", tc.args, code, out.String(), errb.String(), tc.want)
		}
		if strings.Contains(errb.String(), secret) {
			t.Errorf("%v: the secret reached stderr", tc.args)
		}
	}
}
