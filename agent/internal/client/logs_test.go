package client

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	agentv1 "github.com/berthhq/berth/gen/proto/berth/agent/v1"
)

// A request whose chunks the stream does not take fast enough ends with
// "too slow" (its Logs call is told to stop) instead of growing; the
// chunks already queued still go, then the end, and the slot is freed.
func TestLogRequestTooSlow(t *testing.T) {
	ls := newLogStreams(t.Context(), nil, slog.New(slog.DiscardHandler))
	defer func(g time.Duration) { slowGrace = g }(slowGrace)
	slowGrace = 0 // nobody takes chunks here: no wait changes that
	ctx, cancel := context.WithCancelCause(t.Context())
	r := newLogRequest(ctx, "slow", cancel)
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

// Long lines are split into chunks well under gRPC's message limit, and a
// queue is bounded by size as well as by count.
func TestLogChunksBoundedBySize(t *testing.T) {
	ls := newLogStreams(t.Context(), nil, slog.New(slog.DiscardHandler))
	defer func(g time.Duration) { slowGrace = g }(slowGrace)
	slowGrace = 0
	ctx, cancel := context.WithCancelCause(t.Context())
	r := newLogRequest(ctx, "big", cancel)
	ls.reqs[r.id] = r
	ls.order = append(ls.order, r)
	long := strings.Repeat("y", 16<<10)
	var batch []*agentv1.LogLine
	for range 100 { // 1.6 MiB in one batch, as the manager may send
		batch = append(batch, &agentv1.LogLine{Process: "web", Stream: "stdout", Text: long})
	}
	if err := ls.push(r, batch); err != nil {
		t.Fatal(err)
	}
	got, _ := ls.next(maxChunksPerTurn)
	lines := 0
	for _, c := range got {
		if sz := proto.Size(c); sz > maxLogChunkBytes+(64<<10) {
			t.Errorf("chunk of %d bytes", sz)
		}
		lines += len(c.GetLines())
	}
	if len(got) < 2 || lines != 100 {
		t.Fatalf("%d chunks with %d lines", len(got), lines)
	}
	// Past maxQueuedBytes without the sender taking any: too slow.
	var err error
	for i := 0; err == nil && i < 10; i++ {
		err = ls.push(r, batch)
	}
	if !errors.Is(err, errTooSlow) {
		t.Fatalf("pushing 16 MiB nobody takes: %v", err)
	}
	if r.bytes > maxQueuedBytes {
		t.Fatalf("queue holds %d bytes", r.bytes)
	}
}

// A burst bigger than the queue (a long tail) goes through when the stream
// takes chunks meanwhile: the request waits instead of ending.
func TestLogBurstWaitsForTheSender(t *testing.T) {
	ls := newLogStreams(t.Context(), nil, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancelCause(t.Context())
	r := newLogRequest(ctx, "tail", cancel)
	ls.reqs[r.id] = r
	ls.order = append(ls.order, r)
	var batch []*agentv1.LogLine
	for range 400 { // 400 lines of 16 KiB: 6.4 MiB, past maxQueuedBytes
		batch = append(batch, &agentv1.LogLine{Process: "web", Stream: "stdout", Text: strings.Repeat("z", 16<<10)})
	}
	pushed := make(chan error, 1)
	go func() { pushed <- ls.push(r, batch) }()
	lines, ended, more := 0, false, false
	for !ended || lines < len(batch) {
		if !more {
			select {
			case err := <-pushed:
				if err != nil {
					t.Fatalf("push: %v", err)
				}
				ended = true
			case <-ls.wake:
			}
		}
		var got []*agentv1.LogsChunk
		got, more = ls.next(maxChunksPerTurn)
		for _, c := range got {
			if c.GetEnd() {
				t.Fatalf("request ended: %v", c.GetError())
			}
			lines += len(c.GetLines())
		}
	}
}
