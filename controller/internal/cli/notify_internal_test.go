package cli

import (
	"bytes"
	"strings"
	"testing"
)

// Bad notify flags are refused before dialing, in one line; secrets are
// only read from standard input.
func TestNotifyFlagsAreValidated(t *testing.T) {
	for _, tc := range []struct {
		args  []string
		stdin string
		want  string
	}{
		{[]string{"notify", "channel", "add", "ops"}, "", "--kind is required"},
		{[]string{"notify", "channel", "add", "ops", "--kind", "sms"}, "", "want email, slack, discord or webhook"},
		{[]string{"notify", "channel", "add", "ops", "--kind", "email"}, "", "needs --to"},
		{[]string{"notify", "channel", "add", "ops", "--kind", "email", "--to", "a@example.com", "--url", "https://x"}, "", "takes --to only"},
		{[]string{"notify", "channel", "add", "ops", "--kind", "slack", "--url", "https://hooks.slack.com/x"}, "", "needs --url-stdin"},
		{[]string{"notify", "channel", "add", "ops", "--kind", "discord", "--url-stdin"}, "", "no URL on standard input"},
		{[]string{"notify", "channel", "add", "ops", "--kind", "webhook"}, "", "needs --url URL"},
		{[]string{"notify", "channel", "add", "ops", "--kind", "webhook", "--url", "https://x", "--secret-stdin"}, "", "no secret on standard input"},
		{[]string{"notify", "channel", "add", "ops", "--kind", "webhook", "--url-stdin"}, "https://x\n", "takes --url URL"},
		{[]string{"notify", "channel", "add", "ops", "--kind", "email", "--to", "a@example.com", "--rate-limit", "0"}, "", "--rate-limit must be 1 to 10000"},
		{[]string{"notify", "channel", "add", "ops", "--kind", "email", "--to", "a@example.com", "--rate-limit", "10001"}, "", "--rate-limit must be 1 to 10000"},
		{[]string{"notify", "channel", "add", "ops", "--kind", "email", "--to", "a@example.com", "--rate-limit", "-3"}, "", "--rate-limit must be 1 to 10000"},
		{[]string{"notify", "channel", "add", "ops", "--kind", "email", "--to", "a@example.com", "--rate-limit", "lots"}, "", "invalid argument \"lots\" for \"--rate-limit\""},
		{[]string{"notify", "channel", "add"}, "", "accepts 1 arg(s)"},
		{[]string{"notify", "channel", "update", "ops"}, "", "nothing to change: give --rate-limit N"},
		{[]string{"notify", "channel", "update", "ops", "--rate-limit", "0"}, "", "--rate-limit must be 1 to 10000"},
		{[]string{"notify", "channel", "update", "ops", "--rate-limit", "20000"}, "", "--rate-limit must be 1 to 10000"},
		{[]string{"notify", "channel", "update", "--rate-limit", "5"}, "", "accepts 1 arg(s)"},
		{[]string{"notify", "channel", "update", "ops", "--rate-limit", "5", "-o", "yaml"}, "", "-o must be text or json"},
		{[]string{"notify", "channel", "test"}, "", "accepts 1 arg(s)"},
		{[]string{"notify", "channel", "remove", "a", "b"}, "", "accepts 1 arg(s)"},
		{[]string{"notify", "rule", "add", "--channel", "ops"}, "", "--events PATTERN[,PATTERN] is required"},
		{[]string{"notify", "rule", "add", "--events", "deployment.*"}, "", "--channel NAME is required"},
		{[]string{"notify", "rule", "remove"}, "", "accepts 1 arg(s)"},
		{[]string{"notifications", "--unread", "--mark-read", "all"}, "", "do not go together"},
		{[]string{"notifications", "-o", "yaml"}, "", "-o must be text or json"},
		{[]string{"notify", "delivery", "list", "--status", "lost"}, "", "--status \"lost\": want pending, delivered, failed"},
		{[]string{"notify", "delivery", "list", "--limit", "0"}, "", "--limit must be 1 to 200"},
		{[]string{"notify", "delivery", "list", "--limit", "5000"}, "", "--limit must be 1 to 200"},
		{[]string{"notify", "delivery", "list", "extra"}, "", "accepts 0 arg(s)"},
		{[]string{"notify", "delivery", "list", "-o", "yaml"}, "", "-o must be text or json"},
		// Valid flags reach the dial, which needs the CA.
		{[]string{"notify", "channel", "add", "ops", "--kind", "slack", "--url-stdin"}, "https://hooks.slack.com/services/T/B/x\n", "set BERTH_CA_FILE"},
		{[]string{"notify", "channel", "add", "ops", "--kind", "email", "--to", "a@example.com", "--rate-limit", "10000"}, "", "set BERTH_CA_FILE"},
		{[]string{"notify", "channel", "update", "admins-inbox", "--rate-limit", "1"}, "", "set BERTH_CA_FILE"},
		{[]string{"notify", "rule", "add", "--events", "deployment.*,server.offline", "--channel", "ops", "--min-level", "warning"}, "", "set BERTH_CA_FILE"},
		{[]string{"notifications", "--mark-read", "all"}, "", "set BERTH_CA_FILE"},
		{[]string{"notify", "delivery", "list", "--channel", "ops", "--status", "failed", "-o", "json"}, "", "set BERTH_CA_FILE"},
	} {
		var out, errb bytes.Buffer
		code := Main(tc.args, strings.NewReader(tc.stdin), &out, &errb)
		if code == 0 || out.String() != "" || !strings.Contains(errb.String(), tc.want) || strings.Count(errb.String(), "\n") != 1 {
			t.Errorf("%v: code %d, stdout %q, stderr %q; want one line with %q", tc.args, code, out.String(), errb.String(), tc.want)
		}
		if strings.Contains(errb.String(), "hooks.slack.com/services") {
			t.Errorf("%v: the URL reached stderr: %q", tc.args, errb.String())
		}
	}
}
