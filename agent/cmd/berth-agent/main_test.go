package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestRunCommands(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"version"}, nil, &out, &errb); code != 0 || !strings.HasPrefix(out.String(), "berth-agent ") {
		t.Fatalf("version: code %d out %q", code, out.String())
	}
	out.Reset()
	if code := run([]string{"nope"}, nil, &out, &errb); code != 2 || !strings.Contains(errb.String(), `unknown command "nope"`) {
		t.Fatalf("unknown command: code %d err %q", code, errb.String())
	}
	if code := run(nil, nil, &out, &errb); code != 2 {
		t.Fatalf("no args: code %d", code)
	}
}
