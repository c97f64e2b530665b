package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	adminv1 "github.com/berthhq/berth/gen/proto/berth/admin/v1"
)

// withBackups dials the backup service.
func withBackups(ctx context.Context, f *apiFlags, fn func(context.Context, adminv1.BackupServiceClient) error) error {
	conn, err := f.conn()
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := fn(ctx, adminv1.NewBackupServiceClient(conn)); err != nil {
		return rpcErr(err)
	}
	return nil
}

func destinationJSON(d *adminv1.BackupDestination) map[string]any {
	return map[string]any{"id": d.GetId(), "name": d.GetName(), "kind": d.GetKind(), "path": d.GetPath(), "endpoint": d.GetEndpoint(),
		"bucket": d.GetBucket(), "region": d.GetRegion(), "prefix": d.GetPrefix(), "path_style": d.GetPathStyle(), "host": d.GetHost(),
		"port": d.GetPort(), "username": d.GetUsername(), "host_key_fingerprint": d.GetHostKeyFingerprint(),
		"has_credentials": d.GetHasCredentials(), "last_checked_at": tsOrNil(d.GetLastCheckedAt()), "last_check": d.GetLastCheck(),
		"last_check_error": d.GetLastCheckError(), "created_at": tsString(d.GetCreatedAt())}
}

func backupJSON(b *adminv1.Backup) map[string]any {
	return map[string]any{"id": b.GetId(), "app": b.GetApp(), "app_id": b.GetAppId(), "server_id": b.GetServerId(),
		"destination": b.GetDestination(), "schedule_id": b.GetScheduleId(), "triggered_by": b.GetTriggeredBy(), "kind": b.GetKind(),
		"source": b.GetSource(), "connection_env": b.GetConnectionEnv(), "status": b.GetStatus(), "object_key": b.GetObjectKey(),
		"compression": b.GetCompression(), "encryption_key_id": b.GetEncryptionKeyId(), "size_bytes": b.GetSizeBytes(),
		"checksum_sha256": b.GetChecksumSha256(), "failure_reason": b.GetFailureReason(), "queued_at": tsOrNil(b.GetQueuedAt()),
		"started_at": tsOrNil(b.GetStartedAt()), "finished_at": tsOrNil(b.GetFinishedAt()), "deadline_at": tsOrNil(b.GetDeadlineAt()),
		"cancel_requested": b.GetCancelRequested(), "verified_at": tsOrNil(b.GetVerifiedAt()), "verification_error": b.GetVerificationError(),
		"delete_requested_at": tsOrNil(b.GetDeleteRequestedAt()), "delete_error": b.GetDeleteError(), "log_bytes": b.GetLogBytes(),
		"log_truncated": b.GetLogTruncated(), "scheduled_for": tsOrNil(b.GetScheduledFor()), "held": b.GetHeld(),
		"cleanup_status": b.GetCleanupStatus(), "cleanup_error": b.GetCleanupError(), "cleanup_at": tsOrNil(b.GetCleanupAt())}
}

func backupTaskJSON(t *adminv1.BackupTask) map[string]any {
	return map[string]any{"id": t.GetId(), "kind": t.GetKind(), "backup_id": t.GetBackupId(), "destination": t.GetDestination(),
		"server_id": t.GetServerId(), "target": t.GetTarget(), "force": t.GetForce(), "status": t.GetStatus(),
		"failure_reason": t.GetFailureReason(), "queued_at": tsOrNil(t.GetQueuedAt()), "started_at": tsOrNil(t.GetStartedAt()),
		"finished_at": tsOrNil(t.GetFinishedAt()), "cancel_requested": t.GetCancelRequested()}
}

// backupExit is a followed backup job that did not succeed; exit codes as
// deploy: 1 failed, 3 canceled, 4 timed out.
type backupExit struct{ what, id, status, reason string }

func (e backupExit) Error() string {
	msg := fmt.Sprintf("%s %s %s", e.what, e.id, e.status)
	if e.reason != "" {
		msg += ": " + e.reason
	}
	return msg
}

func (e backupExit) ExitCode() int {
	switch e.status {
	case "canceled":
		return 3
	case "timed_out":
		return 4
	}
	return 1
}

// followBackupJob streams a backup's or task's log into w until it ended
// (follow) or the log so far is printed; it returns the last state seen.
func (a *app) followBackupJob(ctx context.Context, c adminv1.BackupServiceClient, id string, follow bool, w io.Writer) (*adminv1.FollowBackupJobResponse, error) {
	var after uint64
	var last *adminv1.FollowBackupJobResponse
	for attempt := 0; ; attempt++ {
		stream, err := c.FollowBackupJob(ctx, &adminv1.FollowBackupJobRequest{Id: id, AfterSeq: after, Follow: follow})
		if err != nil {
			if follow && ctx.Err() == nil && attempt < 600 && isUnavailable(err) {
				time.Sleep(time.Second)
				continue
			}
			return nil, err
		}
		for {
			m, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				return last, nil
			}
			if err != nil {
				// The controller restarted under us: resume after the last
				// chunk seen.
				if follow && ctx.Err() == nil && attempt < 600 && isUnavailable(err) {
					time.Sleep(time.Second)
					break
				}
				return last, err
			}
			if len(m.GetData()) > 0 {
				_, _ = w.Write(m.GetData())
			}
			if m.GetSeq() > after {
				after = m.GetSeq()
			}
			if m.GetBackup() != nil || m.GetTask() != nil {
				st := jobStatusOf(m)
				if follow && (last == nil || jobStatusOf(last) != st) {
					fmt.Fprintf(a.stderr, "==> %s %s\n", id, st)
				}
				last = m
			}
		}
	}
}

func jobStatusOf(m *adminv1.FollowBackupJobResponse) string {
	if b := m.GetBackup(); b != nil {
		return b.GetStatus()
	}
	return m.GetTask().GetStatus()
}

// finishBackupFollow follows a queued job to its end and turns it into the
// exit status.
func (a *app) finishBackupFollow(ctx context.Context, c adminv1.BackupServiceClient, output, what, id string) error {
	w := a.stdout
	if output == "json" {
		w = a.stderr
	}
	m, err := a.followBackupJob(ctx, c, id, true, w)
	if err != nil {
		return err
	}
	if m == nil {
		return fmt.Errorf("%s %s: the stream ended without a state", what, id)
	}
	st, reason := jobStatusOf(m), ""
	if b := m.GetBackup(); b != nil {
		reason = b.GetFailureReason()
		if output == "json" {
			if err := a.printJSON(backupJSON(b)); err != nil {
				return err
			}
		} else if st == "succeeded" {
			fmt.Fprintf(a.stdout, "backup %s stored: %s (%d bytes, sha256 %s)\n", id, b.GetObjectKey(), b.GetSizeBytes(), b.GetChecksumSha256())
		}
	} else {
		t := m.GetTask()
		reason = t.GetFailureReason()
		if output == "json" {
			if err := a.printJSON(backupTaskJSON(t)); err != nil {
				return err
			}
		} else if st == "succeeded" {
			fmt.Fprintf(a.stdout, "%s %s succeeded\n", t.GetKind(), id)
		}
	}
	if st != "succeeded" {
		return backupExit{what: what, id: id, status: st, reason: reason}
	}
	return nil
}

func (a *app) backupCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "backup", Short: "Backups: destinations, backup jobs, verify, restore, download, delete"}
	cmd.AddCommand(a.backupDestinationCmd(), a.backupRunCmd(), a.backupListCmd(), a.backupShowCmd(), a.backupLogsCmd(),
		a.backupCancelCmd(), a.backupVerifyCmd(), a.backupRestoreCmd(), a.backupDownloadCmd(), a.backupDeleteCmd(), a.backupKeyCmd())
	cmd.AddCommand(a.backupScheduleCmd())
	return cmd
}

func (a *app) backupDestinationCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "destination", Short: "Add, list, show, test and remove backup destinations"}

	var addF apiFlags
	var req adminv1.AddBackupDestinationRequest
	var secretStdin, passwordStdin bool
	var keyFile string
	var port int
	add := apiCommand(&cobra.Command{
		Use:   "add NAME",
		Short: "Add a local, S3 or SFTP destination (admin)",
		Long: "  --kind local --path DIR\n" +
			"  --kind s3 --endpoint URL --bucket B [--region R] [--prefix P] [--path-style] --access-key-id ID --secret-access-key-stdin\n" +
			"  --kind sftp --host H [--port N] --username U (--password-stdin | --private-key-file F) --path DIR --host-key-fingerprint SHA256:...\n" +
			"Secrets come from standard input or a file, never from the command line.",
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			r := &adminv1.AddBackupDestinationRequest{
				Name: args[0], Kind: req.Kind, Path: req.Path, Endpoint: req.Endpoint, Bucket: req.Bucket, Region: req.Region,
				Prefix: req.Prefix, PathStyle: req.PathStyle, AccessKeyId: req.AccessKeyId, Host: req.Host, Username: req.Username,
				HostKeyFingerprint: req.HostKeyFingerprint,
			}
			if port < 0 || port > 65535 {
				return usageError{errors.New("--port must be 1-65535")}
			}
			r.Port = uint32(port)
			switch req.Kind {
			case "local":
				if secretStdin || passwordStdin || keyFile != "" {
					return usageError{errors.New("--kind local takes --path only")}
				}
			case "s3":
				if !secretStdin {
					return usageError{errors.New("--kind s3 needs --secret-access-key-stdin (the secret never goes on the command line)")}
				}
				if passwordStdin || keyFile != "" {
					return usageError{errors.New("--kind s3 takes no --password-stdin or --private-key-file")}
				}
				s, err := a.stdinLine("secret access key")
				if err != nil {
					return err
				}
				r.SecretAccessKey = s
			case "sftp":
				if passwordStdin == (keyFile != "") {
					return usageError{errors.New("--kind sftp needs exactly one of --password-stdin and --private-key-file")}
				}
				if secretStdin {
					return usageError{errors.New("--kind sftp takes no --secret-access-key-stdin")}
				}
				if passwordStdin {
					s, err := a.stdinLine("password")
					if err != nil {
						return err
					}
					r.Password = s
				} else {
					b, err := readSmallFile(keyFile, 16<<10)
					if err != nil {
						return err
					}
					r.PrivateKey = b
				}
			case "":
				return usageError{errors.New("--kind is required: local, s3 or sftp")}
			default:
				return usageError{fmt.Errorf("--kind %q: want local, s3 or sftp", req.Kind)}
			}
			return withBackups(cmd.Context(), &addF, func(ctx context.Context, c adminv1.BackupServiceClient) error {
				res, err := c.AddBackupDestination(ctx, r)
				if err != nil {
					return err
				}
				if addF.output == "json" {
					return a.printJSON(destinationJSON(res.GetDestination()))
				}
				fmt.Fprintf(a.stdout, "added %s destination %s (%s); check it with: berth backup destination test %s\n",
					res.GetDestination().GetKind(), res.GetDestination().GetName(), res.GetDestination().GetId(), res.GetDestination().GetName())
				return nil
			})
		},
	}, &addF)
	fs := add.Flags()
	fs.StringVar(&req.Kind, "kind", "", "local, s3 or sftp")
	fs.StringVar(&req.Path, "path", "", "local: directory on the server; sftp: directory on the SFTP server")
	fs.StringVar(&req.Endpoint, "endpoint", "", "s3: endpoint URL")
	fs.StringVar(&req.Bucket, "bucket", "", "s3: bucket")
	fs.StringVar(&req.Region, "region", "", "s3: region")
	fs.StringVar(&req.Prefix, "prefix", "", "s3: key prefix")
	fs.BoolVar(&req.PathStyle, "path-style", false, "s3: path-style addressing")
	fs.StringVar(&req.AccessKeyId, "access-key-id", "", "s3: access key id")
	fs.BoolVar(&secretStdin, "secret-access-key-stdin", false, "s3: read the secret access key from standard input")
	fs.StringVar(&req.Host, "host", "", "sftp: host")
	fs.IntVar(&port, "port", 0, "sftp: port (default 22)")
	fs.StringVar(&req.Username, "username", "", "sftp: user")
	fs.BoolVar(&passwordStdin, "password-stdin", false, "sftp: read the password from standard input")
	fs.StringVar(&keyFile, "private-key-file", "", "sftp: private key file")
	fs.StringVar(&req.HostKeyFingerprint, "host-key-fingerprint", "", "sftp: the server's pinned host key, SHA256:... (ssh-keygen -lf)")

	var listF apiFlags
	list := apiCommand(&cobra.Command{
		Use: "list", Short: "List destinations with their last test", Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withBackups(cmd.Context(), &listF, func(ctx context.Context, c adminv1.BackupServiceClient) error {
				res, err := c.ListBackupDestinations(ctx, &adminv1.ListBackupDestinationsRequest{})
				if err != nil {
					return err
				}
				if listF.output == "json" {
					out := []map[string]any{}
					for _, d := range res.GetDestinations() {
						out = append(out, destinationJSON(d))
					}
					return a.printJSON(out)
				}
				tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "NAME\tKIND\tWHERE\tLAST CHECK\tCHECKED AT\tERROR")
				for _, d := range res.GetDestinations() {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", d.GetName(), d.GetKind(), destinationWhere(d), dash(d.GetLastCheck()),
						tsString(d.GetLastCheckedAt()), dash(d.GetLastCheckError()))
				}
				return tw.Flush()
			})
		},
	}, &listF)

	var showF apiFlags
	show := apiCommand(&cobra.Command{
		Use: "show NAME", Short: "Show a destination (never its credentials)", Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withBackups(cmd.Context(), &showF, func(ctx context.Context, c adminv1.BackupServiceClient) error {
				res, err := c.GetBackupDestination(ctx, &adminv1.GetBackupDestinationRequest{Name: args[0]})
				if err != nil {
					return err
				}
				return a.printDestination(showF.output, res.GetDestination())
			})
		},
	}, &showF)

	var testF apiFlags
	var server string
	test := apiCommand(&cobra.Command{
		Use: "test NAME", Short: "Write, read back and delete a probe object from a server; records the result", Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withBackups(cmd.Context(), &testF, func(ctx context.Context, c adminv1.BackupServiceClient) error {
				res, err := c.TestBackupDestination(ctx, &adminv1.TestBackupDestinationRequest{Name: args[0], Server: server})
				if err != nil {
					return err
				}
				if err := a.printDestination(testF.output, res.GetDestination()); err != nil {
					return err
				}
				if t := res.GetTask(); t.GetStatus() != "succeeded" {
					return backupExit{what: "destination test", id: args[0], status: t.GetStatus(), reason: t.GetFailureReason()}
				}
				return nil
			})
		},
	}, &testF)
	test.Flags().StringVar(&server, "server", "", "the server that runs the test (default: a connected server)")

	var rmF apiFlags
	remove := apiCommand(&cobra.Command{
		Use: "remove NAME", Short: "Remove a destination no backup or schedule uses (admin)", Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withBackups(cmd.Context(), &rmF, func(ctx context.Context, c adminv1.BackupServiceClient) error {
				if _, err := c.RemoveBackupDestination(ctx, &adminv1.RemoveBackupDestinationRequest{Name: args[0]}); err != nil {
					return err
				}
				if rmF.output == "json" {
					return a.printJSON(map[string]any{"removed": args[0]})
				}
				fmt.Fprintf(a.stdout, "removed destination %s\n", args[0])
				return nil
			})
		},
	}, &rmF)
	cmd.AddCommand(add, list, show, test, remove)
	return cmd
}

func readSmallFile(path string, max int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		return nil, usageError{fmt.Errorf("%s is larger than %d bytes", path, max)}
	}
	return b, nil
}

func destinationWhere(d *adminv1.BackupDestination) string {
	switch d.GetKind() {
	case "s3":
		return strings.TrimSuffix(d.GetEndpoint(), "/") + "/" + d.GetBucket() + "/" + d.GetPrefix()
	case "sftp":
		return fmt.Sprintf("%s@%s:%d%s", d.GetUsername(), d.GetHost(), d.GetPort(), d.GetPath())
	}
	return d.GetPath()
}

func (a *app) printDestination(output string, d *adminv1.BackupDestination) error {
	if output == "json" {
		return a.printJSON(destinationJSON(d))
	}
	tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "name\t%s\nid\t%s\nkind\t%s\nwhere\t%s\ncredentials\t%v\nlast check\t%s\nchecked at\t%s\nerror\t%s\n",
		d.GetName(), d.GetId(), d.GetKind(), destinationWhere(d), map[bool]string{true: "stored (write-only)", false: "none"}[d.GetHasCredentials()],
		dash(d.GetLastCheck()), tsString(d.GetLastCheckedAt()), dash(d.GetLastCheckError()))
	if d.GetKind() == "sftp" {
		fmt.Fprintf(tw, "host key\t%s\n", d.GetHostKeyFingerprint())
	}
	return tw.Flush()
}

func (a *app) backupRunCmd() *cobra.Command {
	var f apiFlags
	var req adminv1.RunBackupRequest
	var follow bool
	cmd := apiCommand(&cobra.Command{
		Use: "run APP", Short: "Back up an app's database or directory now", Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			r := &adminv1.RunBackupRequest{App: args[0], Destination: req.Destination, Kind: req.Kind, Source: req.Source, ConnectionEnv: req.ConnectionEnv}
			if r.Destination == "" || r.Kind == "" || r.Source == "" {
				return usageError{errors.New("--destination, --kind and --source are required")}
			}
			return withBackups(cmd.Context(), &f, func(ctx context.Context, c adminv1.BackupServiceClient) error {
				res, err := c.RunBackup(ctx, r)
				if err != nil {
					return err
				}
				b := res.GetBackup()
				if follow {
					fmt.Fprintf(a.stderr, "==> backup %s of %s queued\n", b.GetId(), b.GetApp())
					return a.finishBackupFollow(ctx, c, f.output, "backup", b.GetId())
				}
				if f.output == "json" {
					return a.printJSON(backupJSON(b))
				}
				fmt.Fprintf(a.stdout, "backup %s of %s queued (%s %s to %s)\n", b.GetId(), b.GetApp(), b.GetKind(), b.GetSource(), b.GetDestination())
				return nil
			})
		},
	}, &f)
	fs := cmd.Flags()
	fs.StringVar(&req.Destination, "destination", "", "destination name")
	fs.StringVar(&req.Kind, "kind", "", "postgres, mysql or directory")
	fs.StringVar(&req.Source, "source", "", "database name, or the directory's absolute path")
	fs.StringVar(&req.ConnectionEnv, "connection-env", "", "connect with the URL in this variable of the app's environment (default: the local superuser over the unix socket)")
	fs.BoolVar(&follow, "follow", false, "stream the log until the backup ends; exit 0 only on success (1 failed, 3 canceled, 4 timed out)")
	return cmd
}

func (a *app) printBackups(output string, list []*adminv1.Backup) error {
	if output == "json" {
		out := []map[string]any{}
		for _, b := range list {
			out = append(out, backupJSON(b))
		}
		return a.printJSON(out)
	}
	tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tAPP\tKIND\tSOURCE\tDESTINATION\tSTATUS\tSIZE\tQUEUED\tVERIFIED")
	for _, b := range list {
		size := "-"
		if b.GetStatus() == "succeeded" {
			size = fmt.Sprint(b.GetSizeBytes())
		}
		verified := tsString(b.GetVerifiedAt())
		if b.GetVerificationError() != "" {
			verified = "FAILED"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", b.GetId(), b.GetApp(), b.GetKind(), b.GetSource(), b.GetDestination(),
			b.GetStatus(), size, tsString(b.GetQueuedAt()), verified)
	}
	return tw.Flush()
}

func (a *app) backupListCmd() *cobra.Command {
	var f apiFlags
	var app, status string
	var limit uint32
	cmd := apiCommand(&cobra.Command{
		Use: "list", Short: "List backups, newest first", Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withBackups(cmd.Context(), &f, func(ctx context.Context, c adminv1.BackupServiceClient) error {
				res, err := c.ListBackups(ctx, &adminv1.ListBackupsRequest{App: app, Status: status, Limit: limit})
				if err != nil {
					return err
				}
				return a.printBackups(f.output, res.GetBackups())
			})
		},
	}, &f)
	cmd.Flags().StringVar(&app, "app", "", "only this app's backups")
	cmd.Flags().StringVar(&status, "status", "", "only backups in this status")
	cmd.Flags().Uint32Var(&limit, "limit", 0, "at most this many (default 50)")
	return cmd
}

func (a *app) backupShowCmd() *cobra.Command {
	var f apiFlags
	return apiCommand(&cobra.Command{
		Use: "show ID", Short: "Show a backup and its verify, restore, download and delete jobs", Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withBackups(cmd.Context(), &f, func(ctx context.Context, c adminv1.BackupServiceClient) error {
				res, err := c.GetBackup(ctx, &adminv1.GetBackupRequest{Id: args[0]})
				if err != nil {
					return err
				}
				b := res.GetBackup()
				if f.output == "json" {
					m := backupJSON(b)
					tasks := []map[string]any{}
					for _, t := range res.GetTasks() {
						tasks = append(tasks, backupTaskJSON(t))
					}
					m["tasks"] = tasks
					return a.printJSON(m)
				}
				tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintf(tw, "id\t%s\napp\t%s\nkind\t%s\nsource\t%s\ndestination\t%s\nstatus\t%s\n", b.GetId(), b.GetApp(), b.GetKind(), b.GetSource(), b.GetDestination(), b.GetStatus())
				if b.GetConnectionEnv() != "" {
					fmt.Fprintf(tw, "connection env\t%s\n", b.GetConnectionEnv())
				}
				fmt.Fprintf(tw, "object\t%s\nsize\t%d\nsha256\t%s\nencryption key\t%s\nqueued\t%s\nstarted\t%s\nfinished\t%s\nverified\t%s\n",
					dash(b.GetObjectKey()), b.GetSizeBytes(), dash(b.GetChecksumSha256()), dash(b.GetEncryptionKeyId()), tsString(b.GetQueuedAt()),
					tsString(b.GetStartedAt()), tsString(b.GetFinishedAt()), tsString(b.GetVerifiedAt()))
				for k, v := range map[string]string{"failure": b.GetFailureReason(), "verification error": b.GetVerificationError(), "delete error": b.GetDeleteError()} {
					if v != "" {
						fmt.Fprintf(tw, "%s\t%s\n", k, v)
					}
				}
				if cs := b.GetCleanupStatus(); cs != "" {
					// What the unsucceeded backup may have left at the
					// destination: pending, done, or failed: reason.
					if e := b.GetCleanupError(); cs == "failed" && e != "" {
						cs += ": " + e
					}
					fmt.Fprintf(tw, "cleanup\t%s\n", cs)
				}
				for _, t := range res.GetTasks() {
					fmt.Fprintf(tw, "task\t%s %s %s %s\n", t.GetId(), t.GetKind(), t.GetStatus(), t.GetFailureReason())
				}
				return tw.Flush()
			})
		},
	}, &f)
}

func (a *app) backupLogsCmd() *cobra.Command {
	var f apiFlags
	var follow bool
	cmd := apiCommand(&cobra.Command{
		Use: "logs ID", Short: "Print a backup's (or a backup task's) log", Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withBackups(cmd.Context(), &f, func(ctx context.Context, c adminv1.BackupServiceClient) error {
				if follow {
					return a.finishBackupFollow(ctx, c, f.output, "job", args[0])
				}
				m, err := a.followBackupJob(ctx, c, args[0], false, a.stdout)
				if err != nil {
					return err
				}
				if f.output == "json" && m != nil {
					if b := m.GetBackup(); b != nil {
						return a.printJSON(backupJSON(b))
					}
					return a.printJSON(backupTaskJSON(m.GetTask()))
				}
				return nil
			})
		},
	}, &f)
	cmd.Flags().BoolVar(&follow, "follow", false, "stream until the job ends; exit 0 only on success (1 failed, 3 canceled, 4 timed out)")
	return cmd
}

func (a *app) backupCancelCmd() *cobra.Command {
	var f apiFlags
	return apiCommand(&cobra.Command{
		Use: "cancel ID", Short: "Cancel an unfinished backup or backup task", Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withBackups(cmd.Context(), &f, func(ctx context.Context, c adminv1.BackupServiceClient) error {
				res, err := c.CancelBackupJob(ctx, &adminv1.CancelBackupJobRequest{Id: args[0]})
				if err != nil {
					return err
				}
				if f.output == "json" {
					if b := res.GetBackup(); b != nil {
						return a.printJSON(backupJSON(b))
					}
					return a.printJSON(backupTaskJSON(res.GetTask()))
				}
				fmt.Fprintf(a.stdout, "cancel requested for %s\n", args[0])
				return nil
			})
		},
	}, &f)
}

func (a *app) taskQueued(ctx context.Context, c adminv1.BackupServiceClient, output string, t *adminv1.BackupTask, follow bool) error {
	if follow {
		fmt.Fprintf(a.stderr, "==> %s %s queued\n", t.GetKind(), t.GetId())
		return a.finishBackupFollow(ctx, c, output, t.GetKind(), t.GetId())
	}
	if output == "json" {
		return a.printJSON(backupTaskJSON(t))
	}
	fmt.Fprintf(a.stdout, "%s %s of backup %s queued; follow it with: berth backup logs %s --follow\n", t.GetKind(), t.GetId(), t.GetBackupId(), t.GetId())
	return nil
}

func (a *app) backupVerifyCmd() *cobra.Command {
	var f apiFlags
	var follow bool
	cmd := apiCommand(&cobra.Command{
		Use: "verify ID", Short: "Read a backup back: size, SHA-256, decrypt, decompress, check its content", Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withBackups(cmd.Context(), &f, func(ctx context.Context, c adminv1.BackupServiceClient) error {
				res, err := c.VerifyBackup(ctx, &adminv1.VerifyBackupRequest{Id: args[0]})
				if err != nil {
					return err
				}
				return a.taskQueued(ctx, c, f.output, res.GetTask(), follow)
			})
		},
	}, &f)
	cmd.Flags().BoolVar(&follow, "follow", false, "stream the log until it ends; exit 0 only on success")
	return cmd
}

func (a *app) backupRestoreCmd() *cobra.Command {
	var f apiFlags
	var to, connEnv string
	var force, follow bool
	cmd := apiCommand(&cobra.Command{
		Use: "restore ID", Short: "Restore a backup into its database or directory, or another one (--to) (admin)", Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withBackups(cmd.Context(), &f, func(ctx context.Context, c adminv1.BackupServiceClient) error {
				res, err := c.RestoreBackup(ctx, &adminv1.RestoreBackupRequest{Id: args[0], To: to, Force: force, ConnectionEnv: connEnv})
				if err != nil {
					return err
				}
				return a.taskQueued(ctx, c, f.output, res.GetTask(), follow)
			})
		},
	}, &f)
	cmd.Flags().StringVar(&to, "to", "", "another database name or directory")
	cmd.Flags().BoolVar(&force, "force", false, "restore into a database that is not empty")
	cmd.Flags().StringVar(&connEnv, "connection-env", "", "connect with the URL in this variable of the app's environment")
	cmd.Flags().BoolVar(&follow, "follow", false, "stream the log until it ends; exit 0 only on success (1 failed, 3 canceled, 4 timed out)")
	return cmd
}

func (a *app) backupDownloadCmd() *cobra.Command {
	var f apiFlags
	var out string
	cmd := &cobra.Command{
		Use:   "download ID --output FILE",
		Short: "Download a backup's decrypted, decompressed dump (admin)",
		Long: "The stored object's size and SHA-256 are checked on the way; FILE appears only once they matched\n" +
			"(the data goes to a new FILE.partial-* beside it first).",
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if out == "" {
				return usageError{errors.New("--output FILE is required")}
			}
			f.output = "text"
			return withBackups(cmd.Context(), &f, func(ctx context.Context, c adminv1.BackupServiceClient) error {
				return a.download(ctx, c, args[0], out)
			})
		},
	}
	registerConn(&f, cmd.Flags())
	cmd.Flags().StringVar(&out, "output", "", "write the dump to FILE")
	return cmd
}

// registerConn registers the connection flags of apiFlags without -o
// (download's --output is its file).
func registerConn(f *apiFlags, fs *pflag.FlagSet) {
	fs.StringVar(&f.addr, "addr", "127.0.0.1:7443", "controller gRPC address (BERTH_ADDR)")
	fs.StringVar(&f.token, "token", "", "API token (BERTH_TOKEN)")
	fs.StringVar(&f.caFile, "ca-file", "", "controller CA certificate, DATA_DIR/ca.crt (BERTH_CA_FILE)")
	fs.StringVar(&f.caPin, "ca-pin", "", "controller CA pin sha256:HEX instead of --ca-file (BERTH_CA_PIN)")
}

func (a *app) download(ctx context.Context, c adminv1.BackupServiceClient, id, out string) error {
	// A new file of a random name beside FILE (O_EXCL, mode 0600): a
	// fixed FILE.partial in a shared directory could be a symlink someone
	// planted, which opening with O_TRUNC would follow and overwrite.
	fh, err := os.CreateTemp(filepath.Dir(out), filepath.Base(out)+".partial-*")
	if err != nil {
		return err
	}
	partial := fh.Name()
	ok := false
	defer func() {
		if !ok {
			fh.Close()
			os.Remove(partial)
		}
	}()
	stream, err := c.DownloadBackup(ctx, &adminv1.DownloadBackupRequest{Id: id})
	if err != nil {
		return err
	}
	var n int64
	for {
		m, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return fmt.Errorf("download of %s ended before the checksum was confirmed", id)
		}
		if err != nil {
			return err
		}
		if len(m.GetData()) > 0 {
			if _, err := fh.Write(m.GetData()); err != nil {
				return err
			}
			n += int64(len(m.GetData()))
		}
		if m.GetDone() {
			break
		}
	}
	if err := fh.Sync(); err != nil {
		return err
	}
	if err := fh.Close(); err != nil {
		return err
	}
	if err := os.Rename(partial, out); err != nil {
		return err
	}
	ok = true
	fmt.Fprintf(a.stderr, "wrote %d bytes to %s (checksum of the stored object verified)\n", n, filepath.Clean(out))
	return nil
}

func (a *app) backupDeleteCmd() *cobra.Command {
	var f apiFlags
	var forget bool
	cmd := apiCommand(&cobra.Command{
		Use: "delete ID", Short: "Delete a backup: its object, then its record (admin)", Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withBackups(cmd.Context(), &f, func(ctx context.Context, c adminv1.BackupServiceClient) error {
				res, err := c.DeleteBackup(ctx, &adminv1.DeleteBackupRequest{Id: args[0], Forget: forget})
				if err != nil {
					return err
				}
				if forget {
					if f.output == "json" {
						return a.printJSON(map[string]any{"forgotten": args[0]})
					}
					fmt.Fprintf(a.stdout, "forgot backup %s: its record is gone, its object stays at the destination\n", args[0])
					return nil
				}
				t := res.GetTask()
				if t == nil {
					if f.output == "json" {
						return a.printJSON(map[string]any{"deleted": args[0]})
					}
					fmt.Fprintf(a.stdout, "deleted backup %s (it stored no object)\n", args[0])
					return nil
				}
				// The record goes once the object is gone: wait for it.
				return a.finishBackupFollow(ctx, c, f.output, "delete", t.GetId())
			})
		},
	}, &f)
	cmd.Flags().BoolVar(&forget, "forget", false, "only remove the record of a stored backup whose delete failed or whose server was removed (the object stays)")
	return cmd
}

func (a *app) backupKeyCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "key", Short: "The age keyring backups are encrypted to"}
	var listF apiFlags
	list := apiCommand(&cobra.Command{
		Use: "list", Short: "List the keyring's recipients, newest (used for new backups) first", Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withBackups(cmd.Context(), &listF, func(ctx context.Context, c adminv1.BackupServiceClient) error {
				res, err := c.ListBackupKeys(ctx, &adminv1.ListBackupKeysRequest{})
				if err != nil {
					return err
				}
				if listF.output == "json" {
					out := []map[string]any{}
					for _, k := range res.GetKeys() {
						out = append(out, map[string]any{"id": k.GetId(), "recipient": k.GetRecipient(), "created_at": tsString(k.GetCreatedAt()), "newest": k.GetNewest()})
					}
					return a.printJSON(out)
				}
				tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "ID\tRECIPIENT\tCREATED\tNEWEST")
				for _, k := range res.GetKeys() {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%v\n", k.GetId(), k.GetRecipient(), tsString(k.GetCreatedAt()), k.GetNewest())
				}
				return tw.Flush()
			})
		},
	}, &listF)
	var rotF apiFlags
	rotate := apiCommand(&cobra.Command{
		Use: "rotate", Short: "Make a new key for new backups; old backups keep decrypting with theirs (admin)", Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withBackups(cmd.Context(), &rotF, func(ctx context.Context, c adminv1.BackupServiceClient) error {
				res, err := c.RotateBackupKey(ctx, &adminv1.RotateBackupKeyRequest{})
				if err != nil {
					return err
				}
				if rotF.output == "json" {
					return a.printJSON(map[string]any{"id": res.GetKey().GetId(), "recipient": res.GetKey().GetRecipient()})
				}
				fmt.Fprintf(a.stdout, "new backup key %s (%s)\n", res.GetKey().GetId(), res.GetKey().GetRecipient())
				return nil
			})
		},
	}, &rotF)
	cmd.AddCommand(list, rotate)
	return cmd
}
