package backups

import (
	"context"
	"errors"
	"fmt"

	"github.com/berthhq/berth/controller/internal/auth"
	"github.com/berthhq/berth/controller/internal/store"
)

// Task returns one task of a backup (read): a verify, restore, download or
// delete, for the web UI's task page. A task of another backup, or a probe
// (which belongs to no backup), is not found under this backup.
func (s *Service) Task(ctx context.Context, pr *auth.Principal, backupRef, taskRef string) (store.BackupTask, error) {
	if err := require(pr, store.ScopeRead); err != nil {
		return store.BackupTask{}, err
	}
	bid, err := parseJobID(backupRef)
	if err != nil {
		return store.BackupTask{}, err
	}
	tid, err := parseJobID(taskRef)
	if err != nil {
		return store.BackupTask{}, err
	}
	t, err := s.st.BackupTask(ctx, tid)
	if errors.Is(err, store.ErrNotFound) || (err == nil && (t.BackupID == nil || *t.BackupID != bid)) {
		return store.BackupTask{}, fmt.Errorf("%w: backup %s has no task %s", store.ErrNotFound, bid, tid)
	}
	return t, err
}
