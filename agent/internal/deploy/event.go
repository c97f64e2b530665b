package deploy

import "time"

// Status is a job's outcome.
type Status string

const (
	StatusSucceeded Status = "succeeded"
	StatusFailed    Status = "failed"
	StatusCanceled  Status = "canceled"
	StatusTimedOut  Status = "timed_out"
)

// EventType tells which fields of an Event are set.
type EventType string

const (
	// EventLog carries Data: whole output lines (redacted) of one Step.
	EventLog EventType = "log"
	// EventProgress says a Step started; during fetch it also carries
	// the resolved Commit and CommitMessage.
	EventProgress EventType = "progress"
	// EventResult is a job's last event.
	EventResult EventType = "result"
)

// Event is one numbered thing a job tells the controller. Seq starts at 1
// per job and grows by one per event, across log, progress and result
// alike, so the controller stores each exactly once by remembering the
// highest Seq it committed, and acks with that.
type Event struct {
	JobID string    `json:"job"`
	Seq   uint64    `json:"seq"`
	Type  EventType `json:"type"`
	Step  string    `json:"step,omitempty"`
	Time  time.Time `json:"time"`

	Data []byte `json:"data,omitempty"` // EventLog

	Commit        string `json:"commit,omitempty"` // EventProgress
	CommitMessage string `json:"commit_message,omitempty"`

	Result *Result `json:"result,omitempty"` // EventResult
}

// Result is how a job ended.
type Result struct {
	Status Status `json:"status"`
	// FailedStep names the step that failed, was canceled or timed out.
	FailedStep string `json:"failed_step,omitempty"`
	// ExitCode is the failing process's exit status (128+signal when it
	// was killed), 0 on success, -1 when the failure was not a process's.
	ExitCode int    `json:"exit_code"`
	Error    string `json:"error,omitempty"`

	Commit        string `json:"commit,omitempty"`
	CommitMessage string `json:"commit_message,omitempty"`
	// ReleasePath is the release the job built or rolled back to.
	ReleasePath string `json:"release_path,omitempty"`
	// PreviousRelease is the release id `current` pointed at before the
	// job switched it (the controller's rollback_from_id for rollbacks).
	PreviousRelease string `json:"previous_release,omitempty"`

	StartedAt  time.Time `json:"started_at"`
	FinishedAt time.Time `json:"finished_at"`
	// LogDroppedBytes counts output dropped past Config.MaxLogBytes.
	LogDroppedBytes int64 `json:"log_dropped_bytes,omitempty"`
	// BackupObject is a backup job's stored object (success only).
	BackupObject *BackupObject `json:"backup_object,omitempty"`
}
