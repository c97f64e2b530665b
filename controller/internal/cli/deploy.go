package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	adminv1 "github.com/berthhq/berth/gen/proto/berth/admin/v1"
)

func deploymentJSON(d *adminv1.Deployment) map[string]any {
	m := map[string]any{
		"id": d.GetId(), "app": d.GetApp(), "app_id": d.GetAppId(), "status": d.GetStatus(), "environment": d.GetEnvironment(),
		"branch": d.GetBranch(), "commit_sha": d.GetCommitSha(), "commit_message": d.GetCommitMessage(), "triggered_by": d.GetTriggeredBy(),
		"failed_step": d.GetFailedStep(), "failure_reason": d.GetFailureReason(), "release_path": d.GetReleasePath(),
		"rollback_from_id": d.GetRollbackFromId(), "cancel_requested": d.GetCancelRequested(), "log_bytes": d.GetLogBytes(),
		"log_truncated": d.GetLogTruncated(), "queued_at": d.GetQueuedAt().AsTime(), "deadline_at": d.GetDeadlineAt().AsTime(),
		"exit_code": nil, "started_at": nil, "finished_at": nil, "kind": d.GetKind(), "schedule": d.GetSchedule(),
	}
	if d.GetHasExitCode() {
		m["exit_code"] = d.GetExitCode()
	}
	if d.GetStartedAt() != nil {
		m["started_at"] = d.GetStartedAt().AsTime()
	}
	if d.GetFinishedAt() != nil {
		m["finished_at"] = d.GetFinishedAt().AsTime()
	}
	return m
}

// deployExit is a followed deployment that did not succeed: its status is
// the error line, and the exit code is non-zero.
type deployExit struct {
	d *adminv1.Deployment
}

func (e deployExit) Error() string {
	msg := fmt.Sprintf("deployment %s %s", e.d.GetId(), e.d.GetStatus())
	if s := e.d.GetFailedStep(); s != "" {
		msg += " at step " + s
	}
	if r := e.d.GetFailureReason(); r != "" {
		msg += ": " + r
	}
	return msg
}

func (e deployExit) ExitCode() int {
	switch e.d.GetStatus() {
	case "canceled":
		return 3
	case "timed_out":
		return 4
	}
	return 1
}

// follow streams a deployment's log into w until it finished (follow) or
// until the log so far is printed, and returns the last state seen.
func (a *app) follow(ctx context.Context, c adminv1.AdminServiceClient, id string, follow bool, w io.Writer) (*adminv1.Deployment, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var after uint64
	var last *adminv1.Deployment
	for attempt := 0; ; attempt++ {
		stream, err := c.FollowDeployment(ctx, &adminv1.FollowDeploymentRequest{Id: id, AfterSeq: after})
		if err != nil {
			if follow && ctx.Err() == nil && attempt < 600 && isUnavailable(err) {
				time.Sleep(time.Second)
				continue
			}
			return nil, rpcErr(err)
		}
		for {
			m, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				return last, nil
			}
			if err != nil {
				// The controller restarted under us: resume after the last
				// chunk seen, so no line is lost or doubled.
				if follow && ctx.Err() == nil && attempt < 600 && isUnavailable(err) {
					time.Sleep(time.Second)
					break
				}
				return last, rpcErr(err)
			}
			if len(m.GetData()) > 0 {
				_, _ = w.Write(m.GetData())
			}
			if m.Waiting != nil && m.GetWaiting() != "" && follow {
				fmt.Fprintf(a.stderr, "==> %s\n", m.GetWaiting())
			}
			if m.GetSeq() > after {
				after = m.GetSeq()
			}
			if d := m.GetDeployment(); d != nil {
				if follow && (last == nil || last.GetStatus() != d.GetStatus()) {
					fmt.Fprintf(a.stderr, "==> %s %s\n", d.GetId(), d.GetStatus())
				}
				last = d
				if !follow {
					return last, nil
				}
			}
		}
	}
}

func isUnavailable(err error) bool {
	s := rpcErr(err).Error()
	return strings.HasPrefix(s, "Unavailable") || strings.HasPrefix(s, "Internal: unexpected EOF")
}

func (a *app) printQueued(output string, d *adminv1.Deployment, behind []string, what string) error {
	if output == "json" {
		m := deploymentJSON(d)
		m["queued_behind"] = behind
		return a.printJSON(m)
	}
	fmt.Fprintf(a.stdout, "%s %s of %s queued (%s, branch %s)\n", what, d.GetId(), d.GetApp(), d.GetEnvironment(), d.GetBranch())
	if len(behind) > 0 {
		fmt.Fprintf(a.stdout, "queued behind %d unfinished deployment(s) of %s (%s); it starts when they finish\n", len(behind), d.GetApp(), strings.Join(behind, ", "))
	}
	return nil
}

// finishFollow prints the log of a queued job and turns its end into the
// exit status.
func (a *app) finishFollow(ctx context.Context, c adminv1.AdminServiceClient, output, id string) error {
	w := a.stdout
	if output == "json" {
		w = a.stderr // stdout carries the JSON result
	}
	d, err := a.follow(ctx, c, id, true, w)
	if err != nil {
		return err
	}
	if d == nil {
		return fmt.Errorf("deployment %s: the stream ended without a state", id)
	}
	if output == "json" {
		if err := a.printJSON(deploymentJSON(d)); err != nil {
			return err
		}
	}
	if d.GetStatus() != "succeeded" {
		return deployExit{d}
	}
	return nil
}

func (a *app) deployCmd() *cobra.Command {
	var f apiFlags
	var env, commit string
	var follow bool
	cmd := apiCommand(&cobra.Command{
		Use:   "deploy APP",
		Short: "Deploy an app (one deployment per app runs at a time; others queue behind it)",
		Long: "Queues a deployment of the app's branch head, or --commit. With --follow it streams the log\n" +
			"and exits non-zero unless the deployment succeeded (1 failed, 3 canceled, 4 timed out).",
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, done, err := f.dial()
			if err != nil {
				return err
			}
			defer done()
			res, err := c.Deploy(cmd.Context(), &adminv1.DeployRequest{App: args[0], Environment: env, Commit: commit})
			if err != nil {
				return rpcErr(err)
			}
			if !follow {
				return a.printQueued(f.output, res.GetDeployment(), res.GetQueuedBehind(), "deployment")
			}
			if f.output != "json" {
				_ = a.printQueued("text", res.GetDeployment(), res.GetQueuedBehind(), "deployment")
			}
			return a.finishFollow(cmd.Context(), c, f.output, res.GetDeployment().GetId())
		},
	}, &f)
	cmd.Flags().StringVar(&env, "env", "production", "environment: production or staging")
	cmd.Flags().StringVar(&commit, "commit", "", "deploy this commit SHA instead of the branch head")
	cmd.Flags().BoolVar(&follow, "follow", false, "stream the log; exit non-zero unless the deployment succeeded")

	var cf apiFlags
	cancel := apiCommand(&cobra.Command{
		Use:   "cancel ID",
		Short: "Cancel a deployment (its processes get TERM, then KILL)",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, done, err := cf.dial()
			if err != nil {
				return err
			}
			defer done()
			res, err := c.CancelDeployment(cmd.Context(), &adminv1.CancelDeploymentRequest{Id: args[0]})
			if err != nil {
				return rpcErr(err)
			}
			if cf.output == "json" {
				return a.printJSON(deploymentJSON(res.GetDeployment()))
			}
			if res.GetDeployment().GetStatus() == "canceled" {
				fmt.Fprintf(a.stdout, "deployment %s canceled\n", args[0])
			} else {
				fmt.Fprintf(a.stdout, "cancel of deployment %s requested; its agent stops it\n", args[0])
			}
			return nil
		},
	}, &cf)
	cmd.AddCommand(cancel)
	return cmd
}

func (a *app) rollbackCmd() *cobra.Command {
	var f apiFlags
	var to string
	var follow bool
	cmd := apiCommand(&cobra.Command{
		Use:   "rollback APP",
		Short: "Switch an app back to a kept release without rebuilding (default: the one before the current)",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, done, err := f.dial()
			if err != nil {
				return err
			}
			defer done()
			res, err := c.Rollback(cmd.Context(), &adminv1.RollbackRequest{App: args[0], To: to})
			if err != nil {
				return rpcErr(err)
			}
			if !follow {
				return a.printQueued(f.output, res.GetDeployment(), res.GetQueuedBehind(), "rollback")
			}
			if f.output != "json" {
				_ = a.printQueued("text", res.GetDeployment(), res.GetQueuedBehind(), "rollback")
			}
			return a.finishFollow(cmd.Context(), c, f.output, res.GetDeployment().GetId())
		},
	}, &f)
	cmd.Flags().StringVar(&to, "to", "", "deployment id whose release to switch to")
	cmd.Flags().BoolVar(&follow, "follow", false, "stream the log; exit non-zero unless the rollback succeeded")
	return cmd
}

func (a *app) deploymentsCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "deployments", Short: "List deployments and show their logs"}
	var lf apiFlags
	var limit uint32
	list := apiCommand(&cobra.Command{
		Use:   "list APP",
		Short: "List an app's deployments, newest first",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, done, err := lf.dial()
			if err != nil {
				return err
			}
			defer done()
			res, err := c.ListDeployments(cmd.Context(), &adminv1.ListDeploymentsRequest{App: args[0], Limit: limit})
			if err != nil {
				return rpcErr(err)
			}
			if lf.output == "json" {
				out := make([]map[string]any, 0, len(res.GetDeployments()))
				for _, d := range res.GetDeployments() {
					out = append(out, deploymentJSON(d))
				}
				return a.printJSON(out)
			}
			tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tSTATUS\tENV\tCOMMIT\tTRIGGER\tFAILED STEP\tQUEUED")
			for _, d := range res.GetDeployments() {
				sha := d.GetCommitSha()
				if len(sha) > 12 {
					sha = sha[:12]
				}
				trigger := d.GetTriggeredBy()
				switch d.GetKind() {
				case "delete":
					trigger += " (app delete)"
				case "process":
					trigger += " (processes)"
				case "schedule":
					trigger += " (schedule " + d.GetSchedule() + ")"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", d.GetId(), d.GetStatus(), d.GetEnvironment(), sha, trigger, d.GetFailedStep(), d.GetQueuedAt().AsTime().Local().Format(time.DateTime))
			}
			return tw.Flush()
		},
	}, &lf)
	list.Flags().Uint32Var(&limit, "limit", 50, "at most this many")

	var gf apiFlags
	var follow bool
	logs := apiCommand(&cobra.Command{
		Use:   "logs ID",
		Short: "Print a deployment's log (--follow: until it finishes; exit non-zero unless it succeeded)",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, done, err := gf.dial()
			if err != nil {
				return err
			}
			defer done()
			if follow {
				return a.finishFollow(cmd.Context(), c, gf.output, args[0])
			}
			_, err = a.follow(cmd.Context(), c, args[0], false, a.stdout)
			return err
		},
	}, &gf)
	logs.Flags().BoolVar(&follow, "follow", false, "keep streaming until the deployment finishes")
	cmd.AddCommand(list, logs)
	return cmd
}
