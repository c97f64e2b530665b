package grpcapi

import (
	"context"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/berthhq/berth/controller/internal/auth"
	"github.com/berthhq/berth/controller/internal/deploys"
	"github.com/berthhq/berth/controller/internal/store"
	adminv1 "github.com/berthhq/berth/gen/proto/berth/admin/v1"
	agentv1 "github.com/berthhq/berth/gen/proto/berth/agent/v1"
)

// The app processes, logs and schedules RPCs (issue 16): thin mappings
// onto deploys.Service, which authorises, validates and audits.

func processPB(v deploys.ProcessView) *adminv1.AppProcess {
	out := &adminv1.AppProcess{
		Name: v.Name, Command: v.Command, DesiredInstances: v.DesiredInstances, Port: v.Port, HealthPath: v.HealthPath,
		StopSignal: v.StopSignal, StopGraceSeconds: uint32(v.StopGrace / time.Second), Restart: v.Restart,
		MemoryMaxBytes: v.MemoryMax, CpuMaxPercent: v.CPUMaxPercent, State: v.State, Release: v.Release,
		ReportedAt: ts(v.ReportedAt), CreatedAt: timestamppb.New(v.CreatedAt),
	}
	for _, in := range v.Instances {
		out.Instances = append(out.Instances, &adminv1.ProcessInstance{
			Index: in.Index, Pid: in.PID, Port: in.Port, State: in.State, Restarts: in.Restarts, StartedAt: ts(in.StartedAt),
			LastExitCode: in.LastExitCode, LastError: in.LastError, LimitsEnforced: in.LimitsEnforced,
		})
	}
	return out
}

func schedulePB(v deploys.ScheduleView, appName string) *adminv1.AppSchedule {
	out := &adminv1.AppSchedule{
		Id: v.ID.String(), Name: v.Name, Cron: v.Cron, Command: v.Command, Timezone: v.Timezone,
		NextRunAt: timestamppb.New(v.NextRunAt), CreatedAt: timestamppb.New(v.CreatedAt),
	}
	if v.LastRun != nil {
		out.LastRun = deploymentPB(*v.LastRun, appName)
	}
	return out
}

func (a *adminServer) optJob(ctx context.Context, d *store.Deployment) *adminv1.Deployment {
	if d == nil {
		return nil
	}
	return deploymentPB(*d, a.appName(ctx, d.AppID))
}

func (a *adminServer) AddAppProcess(ctx context.Context, req *adminv1.AddAppProcessRequest) (*adminv1.AddAppProcessResponse, error) {
	svc, err := a.dep()
	if err != nil {
		return nil, err
	}
	v, job, err := svc.AddProcess(ctx, auth.PrincipalFrom(ctx), peerOf(ctx), deploys.ProcessParams{
		App: req.GetApp(), Name: req.GetName(), Command: req.GetCommand(), Instances: req.GetInstances(), Port: req.GetPort(),
		HealthPath: req.GetHealthPath(), StopSignal: req.GetStopSignal(), StopGrace: time.Duration(req.GetStopGraceSeconds()) * time.Second,
		Restart: req.GetRestart(), MemoryMax: req.GetMemoryMaxBytes(), CPUMaxPercent: req.GetCpuMaxPercent(), Replace: req.GetReplace(),
	})
	if err != nil {
		return nil, toStatus(err)
	}
	return &adminv1.AddAppProcessResponse{Process: processPB(v), Job: a.optJob(ctx, job)}, nil
}

func (a *adminServer) ListAppProcesses(ctx context.Context, req *adminv1.ListAppProcessesRequest) (*adminv1.ListAppProcessesResponse, error) {
	svc, err := a.dep()
	if err != nil {
		return nil, err
	}
	list, port, err := svc.ListProcesses(ctx, auth.PrincipalFrom(ctx), req.GetApp())
	if err != nil {
		return nil, toStatus(err)
	}
	out := &adminv1.ListAppProcessesResponse{UpstreamPort: port, Processes: []*adminv1.AppProcess{}}
	for _, v := range list {
		out.Processes = append(out.Processes, processPB(v))
	}
	return out, nil
}

func (a *adminServer) RemoveAppProcess(ctx context.Context, req *adminv1.RemoveAppProcessRequest) (*adminv1.RemoveAppProcessResponse, error) {
	svc, err := a.dep()
	if err != nil {
		return nil, err
	}
	job, err := svc.RemoveProcess(ctx, auth.PrincipalFrom(ctx), peerOf(ctx), req.GetApp(), req.GetName())
	if err != nil {
		return nil, toStatus(err)
	}
	return &adminv1.RemoveAppProcessResponse{Job: a.optJob(ctx, job)}, nil
}

func (a *adminServer) ControlAppProcesses(ctx context.Context, req *adminv1.ControlAppProcessesRequest) (*adminv1.ControlAppProcessesResponse, error) {
	svc, err := a.dep()
	if err != nil {
		return nil, err
	}
	job, err := svc.ControlProcesses(ctx, auth.PrincipalFrom(ctx), peerOf(ctx), req.GetApp(), req.GetAction(), req.GetNames())
	if err != nil {
		return nil, toStatus(err)
	}
	return &adminv1.ControlAppProcessesResponse{Job: a.optJob(ctx, &job)}, nil
}

func (a *adminServer) StreamAppLogs(req *adminv1.StreamAppLogsRequest, stream grpc.ServerStreamingServer[adminv1.StreamAppLogsResponse]) error {
	svc, err := a.dep()
	if err != nil {
		return err
	}
	ctx := stream.Context()
	err = svc.StreamLogs(ctx, auth.PrincipalFrom(ctx), deploys.LogsParams{
		App: req.GetApp(), Processes: req.GetProcesses(), Since: req.GetSince().AsDuration(), Follow: req.GetFollow(), Tail: req.GetTail(),
	}, func(lines []*agentv1.LogLine) error {
		m := &adminv1.StreamAppLogsResponse{Lines: make([]*adminv1.AppLogLine, len(lines))}
		for i, l := range lines {
			m.Lines[i] = &adminv1.AppLogLine{Time: l.GetTime(), Process: l.GetProcess(), Instance: l.GetInstance(), Stream: l.GetStream(), Text: l.GetText()}
		}
		return stream.Send(m)
	})
	return toStatus(err)
}

func (a *adminServer) AddAppSchedule(ctx context.Context, req *adminv1.AddAppScheduleRequest) (*adminv1.AddAppScheduleResponse, error) {
	svc, err := a.dep()
	if err != nil {
		return nil, err
	}
	v, err := svc.AddSchedule(ctx, auth.PrincipalFrom(ctx), peerOf(ctx), deploys.ScheduleParams{
		App: req.GetApp(), Name: req.GetName(), Cron: req.GetCron(), Command: req.GetCommand(), Timezone: req.GetTimezone(), Replace: req.GetReplace(),
	})
	if err != nil {
		return nil, toStatus(err)
	}
	return &adminv1.AddAppScheduleResponse{Schedule: schedulePB(v, req.GetApp())}, nil
}

func (a *adminServer) ListAppSchedules(ctx context.Context, req *adminv1.ListAppSchedulesRequest) (*adminv1.ListAppSchedulesResponse, error) {
	svc, err := a.dep()
	if err != nil {
		return nil, err
	}
	list, err := svc.ListSchedules(ctx, auth.PrincipalFrom(ctx), req.GetApp())
	if err != nil {
		return nil, toStatus(err)
	}
	out := &adminv1.ListAppSchedulesResponse{Schedules: []*adminv1.AppSchedule{}}
	for _, v := range list {
		name := req.GetApp()
		if v.LastRun != nil {
			name = a.appName(ctx, v.LastRun.AppID)
		}
		out.Schedules = append(out.Schedules, schedulePB(v, name))
	}
	return out, nil
}

func (a *adminServer) RemoveAppSchedule(ctx context.Context, req *adminv1.RemoveAppScheduleRequest) (*adminv1.RemoveAppScheduleResponse, error) {
	svc, err := a.dep()
	if err != nil {
		return nil, err
	}
	if err := svc.RemoveSchedule(ctx, auth.PrincipalFrom(ctx), peerOf(ctx), req.GetApp(), req.GetName()); err != nil {
		return nil, toStatus(err)
	}
	return &adminv1.RemoveAppScheduleResponse{}, nil
}

func (a *adminServer) ListScheduleRuns(ctx context.Context, req *adminv1.ListScheduleRunsRequest) (*adminv1.ListScheduleRunsResponse, error) {
	svc, err := a.dep()
	if err != nil {
		return nil, err
	}
	runs, err := svc.ScheduleRuns(ctx, auth.PrincipalFrom(ctx), req.GetApp(), req.GetName(), int(min(req.GetLimit(), 1<<20)))
	if err != nil {
		return nil, toStatus(err)
	}
	out := &adminv1.ListScheduleRunsResponse{Runs: []*adminv1.ScheduleRun{}}
	name := ""
	for _, r := range runs {
		if name == "" {
			name = a.appName(ctx, r.Job.AppID)
		}
		out.Runs = append(out.Runs, &adminv1.ScheduleRun{Job: deploymentPB(r.Job, name), Skipped: r.Skipped, OutputTail: r.OutputTail})
	}
	return out, nil
}
