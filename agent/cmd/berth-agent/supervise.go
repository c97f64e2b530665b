package main

import (
	"io"

	"github.com/berthhq/berth/agent/internal/supervise"
)

// superviseCmd and upstreamCmd are the hidden commands the agent starts
// detached for app processes (see package supervise); nobody runs them
// by hand.
func superviseCmd(args []string, stderr io.Writer) error {
	fs := newFlags("supervise", stderr)
	dir := fs.String("dir", "", "the instance's unit directory")
	if err := fs.Parse(args); err != nil {
		return err
	}
	return supervise.RunSupervisor(*dir)
}

func upstreamCmd(args []string, stderr io.Writer) error {
	fs := newFlags("upstream", stderr)
	dir := fs.String("dir", "", "the upstream's directory")
	if err := fs.Parse(args); err != nil {
		return err
	}
	return supervise.RunUpstream(*dir)
}
