package client

import (
	"testing"
	"time"

	agentv1 "github.com/berthhq/berth/gen/proto/berth/agent/v1"
)

func TestSentBatchesAck(t *testing.T) {
	var s sentBatches
	t0 := time.Unix(1000, 0)
	s.record(1, 10, t0)
	s.record(2, 20, t0.Add(time.Second))
	s.record(3, 30, t0.Add(2*time.Second))

	// An ack releases its batch and every earlier one (whose ack was lost).
	got := s.ack(&agentv1.MetricsAck{Seq: 2, Duplicate: true})
	want := Ack{Seq: 2, Samples: 20, SentAt: t0.Add(time.Second), Duplicate: true}
	if got != want {
		t.Fatalf("ack 2 = %+v, want %+v", got, want)
	}
	if len(s.m) != 1 {
		t.Fatalf("after ack 2, %d batches remembered, want 1 (batch 3)", len(s.m))
	}
	if got := s.ack(&agentv1.MetricsAck{Seq: 1}); !got.SentAt.IsZero() || got.Samples != 0 {
		t.Fatalf("ack for a forgotten batch = %+v, want no send time", got)
	}
	if got := s.ack(&agentv1.MetricsAck{Seq: 3}); got.Samples != 30 || !got.SentAt.Equal(t0.Add(2*time.Second)) {
		t.Fatalf("ack 3 = %+v", got)
	}
	if len(s.m) != 0 {
		t.Fatalf("%d batches remembered after the last ack", len(s.m))
	}
}
