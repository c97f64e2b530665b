package store

import (
	"fmt"

	"github.com/jackc/pgx/v5/pgtype"
)

// ErrWrongState: a job (deployment, backup) is not in a state that allows
// the requested change, usually because another process moved it first; the
// compare-and-set changed nothing. It also matches ErrConflict, so an API
// answers 409 for it without knowing it.
var ErrWrongState error = wrongStateError{}

type wrongStateError struct{}

func (wrongStateError) Error() string        { return "not in a state that allows this change" }
func (wrongStateError) Is(target error) bool { return target == ErrConflict }

// Trigger says what started a job.
type Trigger string

// The triggers. Deployments accept all of them; backups accept user,
// api_token and schedule.
const (
	TriggerUser     Trigger = "user"
	TriggerAPIToken Trigger = "api_token"
	TriggerWebhook  Trigger = "webhook"
	TriggerRollback Trigger = "rollback"
	TriggerSchedule Trigger = "schedule"
	// TriggerSystem: the controller queued it on its own (a backup task
	// such as a cleanup).
	TriggerSystem Trigger = "system"
)

// Environment is a deployment environment: it picks which environment
// variables overlay the app's common ones.
type Environment string

// The environments.
const (
	EnvironmentProduction Environment = "production"
	EnvironmentStaging    Environment = "staging"
)

// wrongState is the error for a compare-and-set that changed nothing on an
// existing row.
func wrongState(what string, current string) error {
	return fmt.Errorf("%s: %w (status is %s)", what, ErrWrongState, current)
}

// pgIDsOrNull converts ids for a uuid[] argument where nil means "no
// filter" (SQL NULL) and an empty slice matches nothing.
func pgIDsOrNull(ids []ID) []pgtype.UUID {
	if ids == nil {
		return nil
	}
	out := make([]pgtype.UUID, len(ids))
	for i, id := range ids {
		out[i] = pgID(id)
	}
	return out
}

func ptrInt32(n *int) *int32 {
	if n == nil {
		return nil
	}
	v := int32(*n)
	return &v
}

func ptrInt(n *int32) *int {
	if n == nil {
		return nil
	}
	v := int(*n)
	return &v
}

// limitArg clamps a row limit as keyset clamps page sizes.
func limitArg(n int) int32 {
	_, l := keyset(nil, n)
	return l
}
