package client

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	agentv1 "github.com/berthhq/berth/gen/proto/berth/agent/v1"
)

// A request whose chunks the stream does not take fast enough ends with
// "too slow" (its Logs call is told to stop) instead of growing; the
// chunks already queued still go, then the end, and the slot is freed.
func TestLogRequestTooSlow(t *testing.T) {
	ls := newLogStreams(t.Context(), nil, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancelCause(t.Context())
	r := &logRequest{id: "slow", cancel: cancel}
	ls.reqs[r.id] = r
	ls.order = append(ls.order, r)
	line := []*agentv1.LogLine{{Process: "web", Stream: "stdout", Text: "x"}}
	for i := range maxQueuedChunks {
		if err := ls.push(r, line); err != nil {
			t.Fatalf("push %d: %v", i, err)
		}
	}
	if err := ls.push(r, line); !errors.Is(err, errTooSlow) {
		t.Fatalf("push past the bound: %v", err)
	}
	if !errors.Is(context.Cause(ctx), errTooSlow) {
		t.Fatalf("the request's context: %v", context.Cause(ctx))
	}
	if err := ls.push(r, line); !errors.Is(err, errTooSlow) {
		t.Fatalf("push after the end: %v", err)
	}
	var got []*agentv1.LogsChunk
	for {
		c, more := ls.next(maxChunksPerTurn)
		got = append(got, c...)
		if !more {
			break
		}
	}
	if len(got) != maxQueuedChunks+1 {
		t.Fatalf("%d chunks, want %d", len(got), maxQueuedChunks+1)
	}
	last := got[len(got)-1]
	if !proto.Equal(last, &agentv1.LogsChunk{RequestId: "slow", End: true, Error: errTextTooSlow}) {
		t.Fatalf("last chunk %v", last)
	}
	if ls.active() != 0 {
		t.Fatalf("%d requests still hold a slot", ls.active())
	}
}

// Without a process manager, and for requests without an id, the agent
// answers what it can.
func TestLogRequestRefusals(t *testing.T) {
	ls := newLogStreams(t.Context(), nil, slog.New(slog.DiscardHandler))
	ls.start(&agentv1.LogsRequest{RequestId: "a", AppId: "app1"})
	ls.start(&agentv1.LogsRequest{AppId: "app1"})                                      // no id: nothing to answer
	ls.start(&agentv1.LogsRequest{RequestId: strings.Repeat("x", 129), AppId: "app1"}) // oversized id
	got, more := ls.next(maxChunksPerTurn)
	if more || len(got) != 1 || !proto.Equal(got[0], &agentv1.LogsChunk{RequestId: "a", End: true, Error: errTextNoProcs}) {
		t.Fatalf("chunks %v (more %v)", got, more)
	}
}
