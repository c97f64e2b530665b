package cli

import (
	"context"
	"errors"
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	adminv1 "github.com/berthhq/berth/gen/proto/berth/admin/v1"
)

func backupScheduleJSON(s *adminv1.BackupSchedule) map[string]any {
	m := map[string]any{"id": s.GetId(), "app": s.GetApp(), "app_id": s.GetAppId(), "destination": s.GetDestination(),
		"kind": s.GetKind(), "source": s.GetSource(), "connection_env": s.GetConnectionEnv(), "cron": s.GetCron(),
		"timezone": s.GetTimezone(), "keep": s.GetKeep(), "keep_days": s.GetKeepDays(), "verify": s.GetVerify(),
		"enabled": s.GetEnabled(), "next_run_at": tsOrNil(s.GetNextRunAt()), "last_run_at": tsOrNil(s.GetLastRunAt()),
		"created_at": tsOrNil(s.GetCreatedAt()), "last_backup": nil}
	if b := s.GetLastBackup(); b != nil {
		m["last_backup"] = backupJSON(b)
	}
	return m
}

func (a *app) backupScheduleCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "schedule", Short: "Cron schedules of an app's backups, with retention"}
	cmd.AddCommand(a.backupScheduleAddCmd(), a.backupScheduleListCmd(), a.backupScheduleShowCmd(),
		a.backupScheduleToggleCmd("disable", false), a.backupScheduleToggleCmd("enable", true), a.backupScheduleRemoveCmd())
	return cmd
}

func retentionText(s *adminv1.BackupSchedule) string {
	switch {
	case s.GetKeep() > 0 && s.GetKeepDays() > 0:
		return fmt.Sprintf("newest %d and %d days", s.GetKeep(), s.GetKeepDays())
	case s.GetKeep() > 0:
		return fmt.Sprintf("newest %d", s.GetKeep())
	}
	return fmt.Sprintf("%d days", s.GetKeepDays())
}

func (a *app) printSchedule(output string, s *adminv1.BackupSchedule) error {
	if output == "json" {
		return a.printJSON(backupScheduleJSON(s))
	}
	tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "id\t%s\napp\t%s\nkind\t%s\nsource\t%s\ndestination\t%s\ncron\t%s (%s)\nkeep\t%s\nverify\t%t\nenabled\t%t\nnext run\t%s\nlast run\t%s\n",
		s.GetId(), s.GetApp(), s.GetKind(), s.GetSource(), s.GetDestination(), s.GetCron(), s.GetTimezone(), retentionText(s),
		s.GetVerify(), s.GetEnabled(), tsString(s.GetNextRunAt()), tsString(s.GetLastRunAt()))
	if s.GetConnectionEnv() != "" {
		fmt.Fprintf(tw, "connection env\t%s\n", s.GetConnectionEnv())
	}
	if b := s.GetLastBackup(); b != nil {
		fmt.Fprintf(tw, "last backup\t%s %s\n", b.GetId(), b.GetStatus())
	}
	return tw.Flush()
}

func (a *app) backupScheduleAddCmd() *cobra.Command {
	var f apiFlags
	var req adminv1.AddBackupScheduleRequest
	var keep, keepDays int
	cmd := apiCommand(&cobra.Command{
		Use:   "add APP --destination D --kind K --source S --cron EXPR [--timezone Z] [--keep N] [--keep-days D] [--verify]",
		Short: "Back up an app on a cron schedule, keeping the newest N and/or D days of backups (admin)",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if req.Destination == "" || req.Kind == "" || req.Source == "" || req.Cron == "" {
				return usageError{errors.New("--destination, --kind, --source and --cron are required")}
			}
			if keep < 0 || keepDays < 0 {
				return usageError{errors.New("--keep and --keep-days are positive numbers")}
			}
			if keep == 0 && keepDays == 0 {
				return usageError{errors.New("give --keep N and/or --keep-days D (a schedule that never prunes fills its destination)")}
			}
			if keep > 1<<20 || keepDays > 1<<20 {
				return usageError{errors.New("--keep and --keep-days are at most 1048576")}
			}
			r := &adminv1.AddBackupScheduleRequest{App: args[0], Destination: req.Destination, Kind: req.Kind, Source: req.Source,
				ConnectionEnv: req.ConnectionEnv, Cron: req.Cron, Timezone: req.Timezone, Keep: int32(keep), KeepDays: int32(keepDays),
				Verify: req.Verify}
			return withBackups(cmd.Context(), &f, func(ctx context.Context, c adminv1.BackupServiceClient) error {
				res, err := c.AddBackupSchedule(ctx, r)
				if err != nil {
					return err
				}
				s := res.GetSchedule()
				if f.output == "json" {
					return a.printJSON(backupScheduleJSON(s))
				}
				fmt.Fprintf(a.stdout, "schedule %s added: %s %s of %s to %s at %q (%s), first run %s\n", s.GetId(), s.GetKind(), s.GetSource(),
					s.GetApp(), s.GetDestination(), s.GetCron(), s.GetTimezone(), tsString(s.GetNextRunAt()))
				return nil
			})
		},
	}, &f)
	fs := cmd.Flags()
	fs.StringVar(&req.Destination, "destination", "", "destination name")
	fs.StringVar(&req.Kind, "kind", "", "postgres, mysql or directory")
	fs.StringVar(&req.Source, "source", "", "database name, or the directory's absolute path")
	fs.StringVar(&req.ConnectionEnv, "connection-env", "", "connect with the URL in this variable of the app's environment (default: the local superuser over the unix socket)")
	fs.StringVar(&req.Cron, "cron", "", `five fields: minute hour day-of-month month day-of-week (e.g. "0 3 * * *"), or @daily, @hourly`)
	fs.StringVar(&req.Timezone, "timezone", "", "IANA time zone the cron is read in (default UTC)")
	fs.IntVar(&keep, "keep", 0, "keep the newest N succeeded backups")
	fs.IntVar(&keepDays, "keep-days", 0, "keep backups younger than D days")
	fs.BoolVar(&req.Verify, "verify", false, "verify each new backup automatically")
	return cmd
}

func (a *app) backupScheduleListCmd() *cobra.Command {
	var f apiFlags
	var appName string
	cmd := apiCommand(&cobra.Command{
		Use: "list [--app APP]", Short: "List backup schedules", Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withBackups(cmd.Context(), &f, func(ctx context.Context, c adminv1.BackupServiceClient) error {
				res, err := c.ListBackupSchedules(ctx, &adminv1.ListBackupSchedulesRequest{App: appName})
				if err != nil {
					return err
				}
				if f.output == "json" {
					out := []map[string]any{}
					for _, s := range res.GetSchedules() {
						out = append(out, backupScheduleJSON(s))
					}
					return a.printJSON(out)
				}
				tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "ID\tAPP\tKIND\tSOURCE\tDESTINATION\tCRON\tTIMEZONE\tKEEP\tVERIFY\tENABLED\tNEXT RUN\tLAST")
				for _, s := range res.GetSchedules() {
					last := "-"
					if b := s.GetLastBackup(); b != nil {
						last = b.GetStatus()
					}
					next := "-"
					if s.GetEnabled() {
						next = tsString(s.GetNextRunAt())
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%t\t%t\t%s\t%s\n", s.GetId(), s.GetApp(), s.GetKind(), s.GetSource(),
						s.GetDestination(), s.GetCron(), s.GetTimezone(), retentionText(s), s.GetVerify(), s.GetEnabled(), next, last)
				}
				return tw.Flush()
			})
		},
	}, &f)
	cmd.Flags().StringVar(&appName, "app", "", "only this app's schedules")
	return cmd
}

func (a *app) backupScheduleShowCmd() *cobra.Command {
	var f apiFlags
	return apiCommand(&cobra.Command{
		Use: "show ID", Short: "Show a backup schedule and its newest backup", Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withBackups(cmd.Context(), &f, func(ctx context.Context, c adminv1.BackupServiceClient) error {
				res, err := c.GetBackupSchedule(ctx, &adminv1.GetBackupScheduleRequest{Id: args[0]})
				if err != nil {
					return err
				}
				return a.printSchedule(f.output, res.GetSchedule())
			})
		},
	}, &f)
}

func (a *app) backupScheduleToggleCmd(verb string, enable bool) *cobra.Command {
	var f apiFlags
	short := "Stop a schedule's runs (admin); an unfinished run ends on its own"
	if enable {
		short = "Run a disabled schedule again from its next tick (admin); missed ticks are not caught up"
	}
	return apiCommand(&cobra.Command{
		Use: verb + " ID", Short: short, Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withBackups(cmd.Context(), &f, func(ctx context.Context, c adminv1.BackupServiceClient) error {
				var s *adminv1.BackupSchedule
				if enable {
					res, err := c.EnableBackupSchedule(ctx, &adminv1.EnableBackupScheduleRequest{Id: args[0]})
					if err != nil {
						return err
					}
					s = res.GetSchedule()
				} else {
					res, err := c.DisableBackupSchedule(ctx, &adminv1.DisableBackupScheduleRequest{Id: args[0]})
					if err != nil {
						return err
					}
					s = res.GetSchedule()
				}
				if f.output == "json" {
					return a.printJSON(backupScheduleJSON(s))
				}
				if enable {
					fmt.Fprintf(a.stdout, "schedule %s enabled, next run %s\n", s.GetId(), tsString(s.GetNextRunAt()))
				} else {
					fmt.Fprintf(a.stdout, "schedule %s disabled\n", s.GetId())
				}
				return nil
			})
		},
	}, &f)
}

func (a *app) backupScheduleRemoveCmd() *cobra.Command {
	var f apiFlags
	return apiCommand(&cobra.Command{
		Use: "remove ID", Short: "Remove a schedule; its backups stay (admin)", Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withBackups(cmd.Context(), &f, func(ctx context.Context, c adminv1.BackupServiceClient) error {
				if _, err := c.RemoveBackupSchedule(ctx, &adminv1.RemoveBackupScheduleRequest{Id: args[0]}); err != nil {
					return err
				}
				if f.output == "json" {
					return a.printJSON(map[string]any{"id": args[0], "removed": true})
				}
				fmt.Fprintf(a.stdout, "schedule %s removed\n", args[0])
				return nil
			})
		},
	}, &f)
}
