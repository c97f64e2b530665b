package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	adminv1 "github.com/berthhq/berth/gen/proto/berth/admin/v1"
)

// tsJSON is a timestamp for -o json: null when unset.
func tsJSON(ts *timestamppb.Timestamp) any {
	if ts == nil {
		return nil
	}
	return ts.AsTime()
}

func instanceJSON(in *adminv1.ProcessInstance) map[string]any {
	m := map[string]any{
		"index": in.GetIndex(), "pid": in.GetPid(), "port": in.GetPort(), "state": in.GetState(), "restarts": in.GetRestarts(),
		"started_at": tsJSON(in.GetStartedAt()), "uptime_seconds": nil, "last_exit_code": in.GetLastExitCode(),
		"last_error": in.GetLastError(), "limits_enforced": in.GetLimitsEnforced(),
	}
	if in.GetStartedAt() != nil && in.GetPid() > 0 {
		m["uptime_seconds"] = int64(time.Since(in.GetStartedAt().AsTime()).Seconds())
	}
	return m
}

func processJSON(p *adminv1.AppProcess) map[string]any {
	instances := make([]map[string]any, 0, len(p.GetInstances()))
	for _, in := range p.GetInstances() {
		instances = append(instances, instanceJSON(in))
	}
	return map[string]any{
		"name": p.GetName(), "command": p.GetCommand(), "desired_instances": p.GetDesiredInstances(), "port": p.GetPort(),
		"health_path": p.GetHealthPath(), "stop_signal": p.GetStopSignal(), "stop_grace_seconds": p.GetStopGraceSeconds(),
		"restart": p.GetRestart(), "memory_max_bytes": p.GetMemoryMaxBytes(), "cpu_max_percent": p.GetCpuMaxPercent(),
		"state": p.GetState(), "instances": instances, "release": p.GetRelease(), "reported_at": tsJSON(p.GetReportedAt()),
		"created_at": tsJSON(p.GetCreatedAt()),
	}
}

func scheduleJSON(s *adminv1.AppSchedule) map[string]any {
	var last any
	if s.GetLastRun() != nil {
		last = deploymentJSON(s.GetLastRun())
	}
	return map[string]any{
		"id": s.GetId(), "name": s.GetName(), "cron": s.GetCron(), "command": s.GetCommand(), "timezone": s.GetTimezone(),
		"next_run_at": tsJSON(s.GetNextRunAt()), "last_run": last, "created_at": tsJSON(s.GetCreatedAt()),
	}
}

// runningCount is how many instances report running, for "1/2".
func runningCount(p *adminv1.AppProcess) int {
	n := 0
	for _, in := range p.GetInstances() {
		if in.GetState() == "running" {
			n++
		}
	}
	return n
}

// processLimits describes the limits of a process in one word or two.
func processLimits(p *adminv1.AppProcess) string {
	var l []string
	if p.GetMemoryMaxBytes() > 0 {
		l = append(l, "memory "+humanBytes(float64(p.GetMemoryMaxBytes())))
	}
	if p.GetCpuMaxPercent() > 0 {
		l = append(l, fmt.Sprintf("cpu %d%%", p.GetCpuMaxPercent()))
	}
	if len(l) == 0 {
		return "none"
	}
	return strings.Join(l, ", ")
}

// printProcesses prints the processes and, per instance, pid, port,
// restarts and uptime (app show and process list).
func printProcesses(w io.Writer, procs []*adminv1.AppProcess) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PROCESS\tSTATE\tRUNNING\tPORT\tRESTART\tLIMITS\tCOMMAND")
	for _, p := range procs {
		port := "-"
		if p.GetPort() {
			port = "yes"
			if h := p.GetHealthPath(); h != "" {
				port += " (health " + h + ")"
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%d/%d\t%s\t%s\t%s\t%s\n", p.GetName(), or(p.GetState(), "unknown"), runningCount(p), p.GetDesiredInstances(),
			port, fmt.Sprintf("%s, %s %ds", p.GetRestart(), p.GetStopSignal(), p.GetStopGraceSeconds()), processLimits(p), p.GetCommand())
		for _, in := range p.GetInstances() {
			pid, port, up := "-", "-", "-"
			if in.GetPid() > 0 {
				pid = fmt.Sprint(in.GetPid())
				if in.GetStartedAt() != nil {
					up = time.Since(in.GetStartedAt().AsTime()).Truncate(time.Second).String()
				}
			}
			if in.GetPort() > 0 {
				port = fmt.Sprint(in.GetPort())
			}
			extra := ""
			if e := in.GetLastError(); e != "" {
				extra = " last error: " + e
			} else if in.GetLastExitCode() != 0 {
				extra = fmt.Sprintf(" last exit %d", in.GetLastExitCode())
			}
			fmt.Fprintf(tw, "  %s.%d\t%s\tpid %s\tport %s\trestarts %d\tup %s\t%s\n", p.GetName(), in.GetIndex(), or(in.GetState(), "unknown"), pid, port, in.GetRestarts(), up, strings.TrimSpace(extra))
		}
	}
	tw.Flush()
}

// printSchedules prints schedules with their next run and last result.
func printSchedules(w io.Writer, scheds []*adminv1.AppSchedule) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SCHEDULE\tCRON\tTIMEZONE\tNEXT RUN\tLAST RUN\tCOMMAND")
	for _, s := range scheds {
		next := "-"
		if s.GetNextRunAt() != nil {
			next = s.GetNextRunAt().AsTime().Local().Format(time.DateTime)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", s.GetName(), s.GetCron(), or(s.GetTimezone(), "UTC"), next, runResult(s.GetLastRun()), s.GetCommand())
	}
	tw.Flush()
}

// runResult is a run's outcome in a few words: "succeeded (exit 0) at T".
func runResult(d *adminv1.Deployment) string {
	if d == nil {
		return "never"
	}
	s := d.GetStatus()
	if d.GetHasExitCode() {
		s += fmt.Sprintf(" (exit %d)", d.GetExitCode())
	}
	at := d.GetFinishedAt()
	if at == nil {
		at = d.GetStartedAt()
	}
	if at == nil {
		at = d.GetQueuedAt()
	}
	if at != nil {
		s += " at " + at.AsTime().Local().Format(time.DateTime)
	}
	return s
}

func or(v, none string) string {
	if v == "" {
		return none
	}
	return v
}

// jobFlags are the flags of a command that queues a process job.
type jobFlags struct {
	apiFlags
	follow bool
}

func (a *app) jobCommand(cmd *cobra.Command, f *jobFlags) *cobra.Command {
	apiCommand(cmd, &f.apiFlags)
	cmd.Flags().BoolVar(&f.follow, "follow", false, "stream the job's log; exit non-zero unless it succeeded")
	return cmd
}

// reportJob prints what a process change queued and, with --follow,
// follows its job like `berth deploy --follow`. extra goes into the JSON
// object beside "job"; none is the sentence printed when no job was queued.
func (a *app) reportJob(ctx context.Context, c adminv1.AdminServiceClient, f *jobFlags, job *adminv1.Deployment, extra map[string]any, done, none string) error {
	out := map[string]any{"job": nil}
	for k, v := range extra {
		out[k] = v
	}
	if job == nil {
		if f.output == "json" {
			return a.printJSON(out)
		}
		fmt.Fprintf(a.stdout, "%s; %s\n", done, none)
		return nil
	}
	if !f.follow {
		if f.output == "json" {
			out["job"] = deploymentJSON(job)
			return a.printJSON(out)
		}
		fmt.Fprintf(a.stdout, "%s; job %s applies it on %s (berth deployments logs %s --follow)\n", done, job.GetId(), job.GetApp(), job.GetId())
		return nil
	}
	w := a.stdout
	if f.output == "json" {
		w = a.stderr // stdout carries the JSON result
	} else {
		fmt.Fprintf(a.stdout, "%s; job %s applies it\n", done, job.GetId())
	}
	d, err := a.follow(ctx, c, job.GetId(), true, w)
	if err != nil {
		return err
	}
	if d == nil {
		return fmt.Errorf("job %s: the stream ended without a state", job.GetId())
	}
	if f.output == "json" {
		out["job"] = deploymentJSON(d)
		if err := a.printJSON(out); err != nil {
			return err
		}
	}
	if d.GetStatus() != "succeeded" {
		return deployExit{d}
	}
	return nil
}

func (a *app) processCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "process", Short: "Declare, list, remove, start, stop and restart an app's long-running processes"}

	var af jobFlags
	var req adminv1.AddAppProcessRequest
	var grace, memory, cpu string
	add := a.jobCommand(&cobra.Command{
		Use:   "add APP NAME --command CMD",
		Short: "Declare a process the agent keeps running from the app's current release",
		Long: "Declares a process run from the app's `current` release as the app's user with its environment.\n" +
			"--port gives each instance a PORT and makes it a backend of the app's upstream\n" +
			"(127.0.0.1:UPSTREAM_PORT, see berth app show); deploys then start new instances on fresh ports,\n" +
			"wait for --health-path to answer 2xx, switch the upstream and stop the old ones gracefully.\n" +
			"With a current release a job starts it now; otherwise the next deploy does. --replace changes\n" +
			"an existing process. --memory-max takes K/M/G/T (binary: 512M is 512 MiB); --cpu-max is a\n" +
			"percentage of one core (150% is one and a half).",
		Args: exactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			req.App, req.Name = args[0], args[1]
			if strings.TrimSpace(req.Command) == "" {
				return usageError{errors.New("--command is required")}
			}
			fl := cmd.Flags()
			if fl.Changed("instances") && req.Instances == 0 {
				return usageError{errors.New("--instances must be at least 1")}
			}
			switch req.Restart {
			case "", "always", "on-failure", "never":
			default:
				return usageError{fmt.Errorf("--restart %q: want always, on-failure or never", req.Restart)}
			}
			if req.HealthPath != "" && !strings.HasPrefix(req.HealthPath, "/") {
				return usageError{fmt.Errorf("--health-path %q must start with /", req.HealthPath)}
			}
			if req.HealthPath != "" && !req.Port {
				return usageError{errors.New("--health-path needs --port (the health check is an HTTP request to the instance's port)")}
			}
			var err error
			if fl.Changed("stop-grace") {
				if req.StopGraceSeconds, err = parseSeconds("--stop-grace", grace); err != nil {
					return usageError{err}
				}
			}
			if fl.Changed("memory-max") {
				if req.MemoryMaxBytes, err = parseMemory(memory); err != nil {
					return usageError{fmt.Errorf("--memory-max: %w", err)}
				}
			}
			if fl.Changed("cpu-max") {
				if req.CpuMaxPercent, err = parseCPU(cpu); err != nil {
					return usageError{fmt.Errorf("--cpu-max: %w", err)}
				}
			}
			req.StopSignal = strings.TrimPrefix(strings.ToUpper(strings.TrimSpace(req.StopSignal)), "SIG")
			switch req.StopSignal {
			case "TERM", "INT", "QUIT", "HUP", "USR1", "USR2", "KILL":
			default:
				return usageError{fmt.Errorf("--stop-signal %q: want TERM, INT, QUIT, HUP, USR1, USR2 or KILL", req.StopSignal)}
			}
			c, done, err := af.dial()
			if err != nil {
				return err
			}
			defer done()
			res, err := c.AddAppProcess(cmd.Context(), &req)
			if err != nil {
				return rpcErr(err)
			}
			verb := "added"
			if req.Replace {
				verb = "set"
			}
			return a.reportJob(cmd.Context(), c, &af, res.GetJob(), map[string]any{"process": processJSON(res.GetProcess())},
				fmt.Sprintf("process %s of %s %s", req.Name, req.App, verb), "the app has no current release: its next deploy starts it")
		},
	}, &af)
	f := add.Flags()
	f.StringVar(&req.Command, "command", "", "command line, run with bash from the current release (required)")
	f.Uint32Var(&req.Instances, "instances", 1, "how many copies to run")
	f.BoolVar(&req.Port, "port", false, "give each instance a PORT and route the app's upstream to it")
	f.StringVar(&req.HealthPath, "health-path", "", "HTTP path (like /up) that must answer 2xx on a new instance's port before traffic moves to it")
	f.StringVar(&req.StopSignal, "stop-signal", "TERM", "signal that asks the process to stop: TERM, INT, QUIT, HUP, USR1, USR2 or KILL")
	f.StringVar(&grace, "stop-grace", "30s", "how long to wait after the stop signal before KILL")
	f.StringVar(&memory, "memory-max", "", "memory limit, like 512M (binary units)")
	f.StringVar(&cpu, "cpu-max", "", "CPU limit in percent of one core, like 150%")
	f.StringVar(&req.Restart, "restart", "always", "restart policy: always, on-failure or never (restarts back off)")
	f.BoolVar(&req.Replace, "replace", false, "change the process of this name if it exists")

	var lf apiFlags
	list := apiCommand(&cobra.Command{
		Use:   "list APP",
		Short: "List an app's processes with their state and, per instance, pid, port and restarts",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, done, err := lf.dial()
			if err != nil {
				return err
			}
			defer done()
			res, err := c.ListAppProcesses(cmd.Context(), &adminv1.ListAppProcessesRequest{App: args[0]})
			if err != nil {
				return rpcErr(err)
			}
			if lf.output == "json" {
				procs := make([]map[string]any, 0, len(res.GetProcesses()))
				for _, p := range res.GetProcesses() {
					procs = append(procs, processJSON(p))
				}
				return a.printJSON(map[string]any{"processes": procs, "upstream_port": res.GetUpstreamPort()})
			}
			if len(res.GetProcesses()) == 0 {
				fmt.Fprintf(a.stdout, "%s has no processes (berth app process add %s web --command ...)\n", args[0], args[0])
				return nil
			}
			printProcesses(a.stdout, res.GetProcesses())
			if p := res.GetUpstreamPort(); p > 0 {
				fmt.Fprintf(a.stdout, "upstream: 127.0.0.1:%d\n", p)
			}
			return nil
		},
	}, &lf)

	var rf jobFlags
	remove := a.jobCommand(&cobra.Command{
		Use:   "remove APP NAME",
		Short: "Stop a process (stop signal, grace period, KILL) and forget it",
		Args:  exactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, done, err := rf.dial()
			if err != nil {
				return err
			}
			defer done()
			res, err := c.RemoveAppProcess(cmd.Context(), &adminv1.RemoveAppProcessRequest{App: args[0], Name: args[1]})
			if err != nil {
				return rpcErr(err)
			}
			return a.reportJob(cmd.Context(), c, &rf, res.GetJob(), map[string]any{"app": args[0], "process": args[1]},
				fmt.Sprintf("process %s of %s removed", args[1], args[0]), "nothing was running")
		},
	}, &rf)

	cmd.AddCommand(add, list, remove)
	for _, action := range []struct{ name, short string }{
		{"start", "Start an app's processes (all, or those named)"},
		{"stop", "Stop an app's processes (all, or those named): stop signal, grace period, KILL; they stay stopped until started"},
		{"restart", "Restart an app's processes (all, or those named); instances with a port are replaced without dropping requests"},
	} {
		action := action
		var cf jobFlags
		cmd.AddCommand(a.jobCommand(&cobra.Command{
			Use:   action.name + " APP [NAME]...",
			Short: action.short,
			Args: func(cmd *cobra.Command, args []string) error {
				if len(args) < 1 {
					return usageError{errors.New("give the app and optionally process names")}
				}
				return nil
			},
			RunE: func(cmd *cobra.Command, args []string) error {
				c, done, err := cf.dial()
				if err != nil {
					return err
				}
				defer done()
				res, err := c.ControlAppProcesses(cmd.Context(), &adminv1.ControlAppProcessesRequest{App: args[0], Action: action.name, Names: args[1:]})
				if err != nil {
					return rpcErr(err)
				}
				which := "every process"
				if len(args) > 1 {
					which = strings.Join(args[1:], ", ")
				}
				return a.reportJob(cmd.Context(), c, &cf, res.GetJob(), map[string]any{"app": args[0], "action": action.name, "processes": append([]string{}, args[1:]...)},
					fmt.Sprintf("%s of %s (%s) requested", action.name, args[0], which), "the app has no current release")
			},
		}, &cf))
	}
	return cmd
}

// maxTail is the most lines the server sends before following.
const maxTail = 10000

func (a *app) logsCmd() *cobra.Command {
	var f apiFlags
	var procs []string
	var since string
	var follow bool
	var tail uint32
	cmd := apiCommand(&cobra.Command{
		Use:   "logs APP",
		Short: "Print an app's process logs from its server (--follow: keep streaming until interrupted)",
		Long: "Prints the lines the app's processes wrote (kept on its server with rotation, not in the\n" +
			"database) as TIME PROCESS.INSTANCE TEXT: the last --tail lines, or those of the last --since.\n" +
			"With --follow new lines follow until Ctrl-C. -o json prints one JSON object per line.",
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := &adminv1.StreamAppLogsRequest{App: args[0], Processes: procs, Follow: follow, Tail: tail}
			if tail > maxTail {
				return usageError{fmt.Errorf("--tail %d: at most %d", tail, maxTail)}
			}
			if cmd.Flags().Changed("since") {
				d, err := parseSince(since)
				if err != nil {
					return usageError{err}
				}
				req.Since = durationpb.New(d)
				if !cmd.Flags().Changed("tail") {
					// --since alone means every line of that period (up
					// to the most the server sends), not its last 200.
					req.Tail = maxTail
				}
			}
			for _, p := range procs {
				if strings.TrimSpace(p) == "" {
					return usageError{errors.New("--process needs a process name")}
				}
			}
			c, done, err := f.dial()
			if err != nil {
				return err
			}
			defer done()
			return a.streamLogs(cmd.Context(), c, req, f.output == "json")
		},
	}, &f)
	fl := cmd.Flags()
	fl.StringArrayVar(&procs, "process", nil, "only this process (repeatable)")
	fl.StringVar(&since, "since", "", "lines of the last DURATION, like 10m (default: the last --tail lines)")
	fl.BoolVar(&follow, "follow", false, "keep streaming new lines until interrupted")
	fl.Uint32Var(&tail, "tail", 0, "at most this many lines before following (default 200, or 10000 with --since; at most 10000)")
	return cmd
}

// streamLogs prints log lines until the stream ends, or with follow until
// ctx is done (Ctrl-C is a normal end). If the controller restarts while
// following, it resumes from the last line's time and drops the lines
// already printed, so none is lost or doubled.
func (a *app) streamLogs(ctx context.Context, c adminv1.AdminServiceClient, req *adminv1.StreamAppLogsRequest, asJSON bool) error {
	var last time.Time
	seenAtLast := map[string]bool{} // lines printed with time == last
	for attempt := 0; ; attempt++ {
		stream, err := c.StreamAppLogs(ctx, req)
		if err == nil {
			err = a.printLogStream(stream, asJSON, &last, seenAtLast)
			if err == nil {
				return nil
			}
		}
		if ctx.Err() != nil {
			return nil
		}
		// Resume only a stream that worked (the controller restarted
		// under it); an agent that is offline is said at once.
		if !req.GetFollow() || last.IsZero() || attempt >= 600 || !isUnavailable(err) {
			return rpcErr(err)
		}
		if attempt == 0 || attempt%30 == 0 {
			fmt.Fprintf(a.stderr, "==> %s; resuming\n", rpcErr(err))
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
		if !last.IsZero() {
			// Resume where the printed lines end.
			req.Since = durationpb.New(time.Since(last) + time.Second)
			req.Tail = maxTail
		}
	}
}

func logLineJSON(l *adminv1.AppLogLine) map[string]any {
	return map[string]any{"time": l.GetTime().AsTime(), "process": l.GetProcess(), "instance": l.GetInstance(), "stream": l.GetStream(), "text": l.GetText()}
}

// formatLogLine is "TIME PROCESS.INSTANCE TEXT\n", the time with
// milliseconds in loc.
func formatLogLine(l *adminv1.AppLogLine, loc *time.Location) string {
	return fmt.Sprintf("%s %s.%d %s\n", l.GetTime().AsTime().In(loc).Format("2006-01-02T15:04:05.000Z07:00"), l.GetProcess(), l.GetInstance(), strings.TrimRight(l.GetText(), "\r\n"))
}

func logKey(l *adminv1.AppLogLine) string {
	return fmt.Sprintf("%s.%d\x00%s\x00%s", l.GetProcess(), l.GetInstance(), l.GetStream(), l.GetText())
}

func (a *app) printLogStream(stream adminv1.AdminService_StreamAppLogsClient, asJSON bool, last *time.Time, seenAtLast map[string]bool) error {
	for {
		m, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		for _, l := range m.GetLines() {
			t := l.GetTime().AsTime()
			if !last.IsZero() && (t.Before(*last) || (t.Equal(*last) && seenAtLast[logKey(l)])) {
				continue // printed before a reconnect
			}
			if !t.Equal(*last) {
				*last = t
				clear(seenAtLast)
			}
			seenAtLast[logKey(l)] = true
			if asJSON {
				if err := writeJSONLine(a.stdout, logLineJSON(l)); err != nil {
					return err
				}
				continue
			}
			if _, err := io.WriteString(a.stdout, formatLogLine(l, time.Local)); err != nil {
				return err
			}
		}
	}
}

func (a *app) scheduleCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "schedule", Short: "Scheduled commands of an app (cron): add, list, remove, and their runs"}

	var af apiFlags
	var req adminv1.AddAppScheduleRequest
	add := apiCommand(&cobra.Command{
		Use:   "add APP NAME --cron EXPR --command CMD",
		Short: "Run a command on a cron schedule in the app's current release, as the app's user; runs never overlap",
		Long: "--cron takes five fields (minute hour day-of-month month day-of-week) or a descriptor such as\n" +
			"@hourly, read in --timezone (an IANA name like Europe/Paris; default UTC). A run that falls due\n" +
			"while the previous one is unfinished is skipped and recorded as skipped.",
		Args: exactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			req.App, req.Name = args[0], args[1]
			if strings.TrimSpace(req.Cron) == "" || strings.TrimSpace(req.Command) == "" {
				return usageError{errors.New("--cron and --command are required")}
			}
			c, done, err := af.dial()
			if err != nil {
				return err
			}
			defer done()
			res, err := c.AddAppSchedule(cmd.Context(), &req)
			if err != nil {
				return rpcErr(err)
			}
			s := res.GetSchedule()
			if af.output == "json" {
				return a.printJSON(scheduleJSON(s))
			}
			next := "not scheduled"
			if s.GetNextRunAt() != nil {
				next = "next run " + s.GetNextRunAt().AsTime().Local().Format(time.DateTime)
			}
			fmt.Fprintf(a.stdout, "schedule %s of %s set: %q (%s); %s\n", s.GetName(), req.App, s.GetCron(), or(s.GetTimezone(), "UTC"), next)
			return nil
		},
	}, &af)
	f := add.Flags()
	f.StringVar(&req.Cron, "cron", "", "cron expression, like '*/5 * * * *' or @daily (required)")
	f.StringVar(&req.Command, "command", "", "command line, run with bash from the current release (required)")
	f.StringVar(&req.Timezone, "timezone", "", "IANA time zone the cron expression is read in (default UTC)")
	f.BoolVar(&req.Replace, "replace", false, "change the schedule of this name if it exists")

	var lf apiFlags
	list := apiCommand(&cobra.Command{
		Use:   "list APP",
		Short: "List an app's schedules with their next run and last result",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, done, err := lf.dial()
			if err != nil {
				return err
			}
			defer done()
			res, err := c.ListAppSchedules(cmd.Context(), &adminv1.ListAppSchedulesRequest{App: args[0]})
			if err != nil {
				return rpcErr(err)
			}
			if lf.output == "json" {
				out := make([]map[string]any, 0, len(res.GetSchedules()))
				for _, s := range res.GetSchedules() {
					out = append(out, scheduleJSON(s))
				}
				return a.printJSON(out)
			}
			printSchedules(a.stdout, res.GetSchedules())
			return nil
		},
	}, &lf)

	var rf apiFlags
	remove := apiCommand(&cobra.Command{
		Use:   "remove APP NAME",
		Short: "Remove a schedule (a run in progress finishes; its runs stay in the history)",
		Args:  exactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, done, err := rf.dial()
			if err != nil {
				return err
			}
			defer done()
			if _, err := c.RemoveAppSchedule(cmd.Context(), &adminv1.RemoveAppScheduleRequest{App: args[0], Name: args[1]}); err != nil {
				return rpcErr(err)
			}
			if rf.output == "json" {
				return a.printJSON(map[string]any{"app": args[0], "schedule": args[1], "removed": true})
			}
			fmt.Fprintf(a.stdout, "schedule %s of %s removed\n", args[1], args[0])
			return nil
		},
	}, &rf)

	var uf apiFlags
	var limit uint32
	var outputTail bool
	runs := apiCommand(&cobra.Command{
		Use:   "runs APP NAME",
		Short: "List a schedule's runs, newest first, with exit code (and --output-tail, each run's output tail)",
		Args:  exactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, done, err := uf.dial()
			if err != nil {
				return err
			}
			defer done()
			res, err := c.ListScheduleRuns(cmd.Context(), &adminv1.ListScheduleRunsRequest{App: args[0], Name: args[1], Limit: limit})
			if err != nil {
				return rpcErr(err)
			}
			if uf.output == "json" {
				out := make([]map[string]any, 0, len(res.GetRuns()))
				for _, r := range res.GetRuns() {
					m := deploymentJSON(r.GetJob())
					m["skipped"] = r.GetSkipped()
					m["output_tail"] = r.GetOutputTail()
					out = append(out, m)
				}
				return a.printJSON(out)
			}
			tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "JOB\tSTATUS\tEXIT\tQUEUED\tSTARTED\tFINISHED")
			for _, r := range res.GetRuns() {
				j := r.GetJob()
				st := j.GetStatus()
				if r.GetSkipped() {
					st = "skipped (previous run unfinished)"
				}
				exit := "-"
				if j.GetHasExitCode() {
					exit = fmt.Sprint(j.GetExitCode())
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", j.GetId(), st, exit, localTime(j.GetQueuedAt()), localTime(j.GetStartedAt()), localTime(j.GetFinishedAt()))
				if outputTail && r.GetOutputTail() != "" {
					tw.Flush()
					for _, line := range strings.Split(strings.TrimRight(r.GetOutputTail(), "\n"), "\n") {
						fmt.Fprintf(a.stdout, "    | %s\n", line)
					}
				}
			}
			return tw.Flush()
		},
	}, &uf)
	runs.Flags().Uint32Var(&limit, "limit", 20, "at most this many (the last 100 are kept)")
	runs.Flags().BoolVar(&outputTail, "output-tail", false, "print each run's output tail under it")

	cmd.AddCommand(add, list, remove, runs)
	return cmd
}

func localTime(ts *timestamppb.Timestamp) string {
	if ts == nil {
		return "-"
	}
	return ts.AsTime().Local().Format(time.DateTime)
}

// writeJSONLine writes v as one line of JSON (streams print one object per
// line so they can be read as they come).
func writeJSONLine(w io.Writer, v any) error {
	return json.NewEncoder(w).Encode(v)
}
