// Package jobs holds the parts of the agent job machinery that every kind
// of job shares (deployments and their process, schedule and delete jobs,
// backups and backup tasks): sending a JobStart with its cancel, reading
// the agent's job events, acknowledging what the store committed, starting
// a dispatched job at its first event and the controller's verdict on an
// overdue job. The exactly-once numbering itself is in the store
// (store/job_events.go). Each kind keeps what differs: which rows it
// claims and lists, how it builds its JobStart, what a result means and
// what it publishes.
package jobs

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/berthhq/berth/controller/internal/store"
	agentv1 "github.com/berthhq/berth/gen/proto/berth/agent/v1"
)

// Sender queues messages for a connected agent (fleet.Hub).
type Sender interface {
	Send(serverID store.ID, msg *agentv1.ConnectResponse) error
}

// Send queues a job's JobStart for its agent, then its JobCancel when a
// cancel was requested before the agent had the job (the agent runs a job
// id once, so a re-sent start of a running job is harmless and the cancel
// reaches it). An agent that is gone gets both again when it reconnects.
func Send(h Sender, log *slog.Logger, server store.ID, js *agentv1.JobStart, cancel bool, logKey string) {
	msgs := []*agentv1.ConnectResponse{{Msg: &agentv1.ConnectResponse_JobStart{JobStart: js}}}
	if cancel {
		msgs = append(msgs, &agentv1.ConnectResponse{Msg: &agentv1.ConnectResponse_JobCancel{JobCancel: &agentv1.JobCancel{JobId: js.JobId}}})
	}
	for _, m := range msgs {
		if err := h.Send(server, m); err != nil {
			log.Warn("dispatch: agent not reachable now; it gets the job when it reconnects", logKey, js.JobId, "err", err)
			return
		}
	}
}

// Event is one agent job event as every kind reads it.
type Event struct {
	JobID string // as the agent wrote it
	Seq   int64
	Step  string // at most 64 bytes
	Data  []byte // output only
	// At is when the agent saw the output or progress (zero for a result:
	// it carries its own start and finish times).
	At       time.Time
	Progress *agentv1.JobProgress // set for a progress event
	Result   *agentv1.JobResult   // set for a result
}

// Decode reads a job event out of an agent message: ok is false for a
// message that is not a job event. Its only error is an output chunk
// larger than the store takes, which the caller reports as its own
// invalid-argument error (the stream ends). The job id and number are
// checked by the caller, which knows the job.
func Decode(m *agentv1.ConnectRequest) (ev Event, ok bool, err error) {
	switch msg := m.Msg.(type) {
	case *agentv1.ConnectRequest_JobOutput:
		o := msg.JobOutput
		ev = Event{JobID: o.GetJobId(), Seq: int64(o.GetSeq()), Step: Truncate(o.GetStep(), 64), Data: o.GetData(), At: o.GetTime().AsTime()}
		if len(ev.Data) > store.MaxLogChunk {
			return Event{}, true, fmt.Errorf("output chunk of %d bytes", len(ev.Data))
		}
	case *agentv1.ConnectRequest_JobProgress:
		p := msg.JobProgress
		ev = Event{JobID: p.GetJobId(), Seq: int64(p.GetSeq()), Step: Truncate(p.GetStep(), 64), At: p.GetTime().AsTime(), Progress: p}
	case *agentv1.ConnectRequest_JobResult:
		r := msg.JobResult
		ev = Event{JobID: r.GetJobId(), Seq: int64(r.GetSeq()), Result: r}
	default:
		return Event{}, false, nil
	}
	return ev, true, nil
}

// Committed is one job of a committed run of events: the highest number to
// acknowledge, and whether any event of the run was new (its log and state
// changed, so watchers are told).
type Committed struct {
	ID      store.ID
	JobID   string // as the agent wrote it
	Seq     int64
	Changed bool
}

// Acks folds the store's outcomes of a run of events (keys[i] and evs[i]
// are the job and event of out[i]) into one entry per job, in the order
// the jobs first appear, with the highest number committed. A job whose
// every event was a gap gets no entry: the agent re-sends from its last
// ack. what and key name the kind in the log.
func Acks(log *slog.Logger, what, key string, keys []store.ID, evs []Event, out []store.JobEventOutcome) []Committed {
	var order []*Committed
	per := map[store.ID]*Committed{}
	acked := map[*Committed]bool{}
	for i, id := range keys {
		j := per[id]
		if j == nil {
			j = &Committed{ID: id, JobID: evs[i].JobID}
			per[id] = j
			order = append(order, j)
		}
		if out[i].Gap {
			log.Warn(what+" event out of order; waiting for the agent to re-send", key, evs[i].JobID, "seq", evs[i].Seq)
			continue
		}
		j.Seq, acked[j] = out[i].Committed, true
		j.Changed = j.Changed || !out[i].Dup
	}
	res := make([]Committed, 0, len(order))
	for _, j := range order {
		if acked[j] {
			res = append(res, *j)
		}
	}
	return res
}

// AckOf is the agent's acknowledgement of a committed job.
func (c Committed) AckOf() *agentv1.JobAck {
	return &agentv1.JobAck{JobId: c.JobID, Seq: uint64(c.Seq)}
}

// StartedAt is an agent's time as the store takes it: nil when the agent
// sent none (the store uses its own clock).
func StartedAt(at time.Time) *time.Time {
	if at.IsZero() || at.Unix() <= 0 {
		return nil
	}
	return &at
}

// IgnoreWrongState: a job that moved on meanwhile (another controller or
// an earlier event started or ended it) is not an error for the one that
// lost the compare-and-set.
func IgnoreWrongState(err error) error {
	if errors.Is(err, store.ErrWrongState) {
		return nil
	}
	return err
}

// Grace is how the controller judges an overdue job.
type Grace struct {
	// Unreachable: how long past its deadline a dispatched or running job
	// may stay without a result (the agent times its own jobs out and
	// reports timed_out before that).
	Unreachable time.Duration
	// Start: for this long after the controller started, no job is failed
	// as unreachable, while agents reconnect and deliver.
	Start time.Duration
	// Started: when this controller started.
	Started time.Time
}

// Overdue is the controller's verdict on a job past its deadline, in the
// status type of its kind (every kind names its end states alike): a
// queued one timed out (canceled when a cancel was asked for), a
// dispatched or running one failed "agent unreachable" once past the
// deadline plus the grace. ok is false while the job may still report.
func Overdue[S ~string](g Grace, now time.Time, queued, cancelRequested bool, deadline time.Time) (status S, reason string, ok bool) {
	switch {
	case queued:
		if cancelRequested {
			return S("canceled"), "waited in the queue past its deadline", true
		}
		return S("timed_out"), "waited in the queue past its deadline", true
	case now.After(deadline.Add(g.Unreachable)) && now.Sub(g.Started) >= g.Start:
		return S("failed"), "agent unreachable", true
	}
	return "", "", false
}

// Truncate cuts s to at most n bytes.
func Truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
