package deploy

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
)

// appEntries are what a deploy makes under the deploy path, and what a
// delete removes: nothing else there is touched.
var appEntries = []string{"current", ".env", "shared", "releases"}

// remove is a delete job: it stops the app's processes, then removes the
// app's releases, current, shared
// and .env below the deploy path through the tree's os.Root, which never
// follows a symlink out of it (a link is removed, not what it names), then
// the deploy path itself when that left it empty, and the app's mirror.
func (j *job) remove(ctx context.Context, res *Result) error {
	if err := j.durable(); err != nil {
		res.FailedStep, res.ExitCode = "start", -1
		return err
	}
	// The processes stop first: nothing may run from files being removed.
	if err := j.stopProcesses(ctx, res); err != nil {
		return err
	}
	if j.spec.DeployPath == "" {
		j.log.printf("no deploy path given: the app's files stay where they are")
		// The mirror is the agent's own cache, not the app's files.
		return os.RemoveAll(j.mirrorPath())
	}
	return j.step(ctx, StepRemove, res, func() error {
		if j.tree == nil {
			j.log.printf("%s does not exist on this server: nothing to remove there", j.spec.DeployPath)
		} else {
			for _, name := range appEntries {
				if _, err := j.tree.root.Lstat(name); errors.Is(err, fs.ErrNotExist) {
					continue
				} else if err != nil {
					return err
				}
				if err := j.tree.root.RemoveAll(name); err != nil {
					return err
				}
				j.log.printf("removed %s", filepath.Join(j.spec.DeployPath, name))
			}
			// Only an empty directory goes (rmdir): whatever else the
			// app's user kept there stays, and so does the path.
			if err := os.Remove(j.tree.root.Name()); err == nil {
				j.log.printf("removed %s (empty)", j.spec.DeployPath)
			} else {
				j.log.printf("kept %s: it holds other files", j.spec.DeployPath)
			}
		}
		if err := os.RemoveAll(j.mirrorPath()); err != nil {
			return err
		}
		return nil
	})
}
