package grpcapi

import (
	"context"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/berthhq/berth/controller/internal/auth"
	"github.com/berthhq/berth/controller/internal/backups"
	adminv1 "github.com/berthhq/berth/gen/proto/berth/admin/v1"
)

// maxKeepArg bounds keep and keep_days before the service sees them (the
// service's own bounds are tighter and say which flag).
const maxKeepArg = 1 << 20

func backupSchedulePB(v backups.ScheduleView) *adminv1.BackupSchedule {
	out := &adminv1.BackupSchedule{
		Id: v.ID.String(), AppId: v.AppID.String(), App: v.AppName, Destination: v.DestinationName, Kind: string(v.Kind),
		Source: v.Source, ConnectionEnv: deref(v.ConnectionEnv), Cron: v.Cron, Timezone: v.Timezone, Verify: v.Verify,
		Enabled: v.Enabled, NextRunAt: optTS(v.NextRunAt), LastRunAt: optTS(v.LastRunAt), CreatedAt: timestamppb.New(v.CreatedAt),
	}
	if v.RetentionCount != nil {
		out.Keep = int32(*v.RetentionCount)
	}
	if v.RetentionDays != nil {
		out.KeepDays = int32(*v.RetentionDays)
	}
	if v.LastBackup != nil {
		out.LastBackup = backupPB(*v.LastBackup, v.DestinationName)
	}
	return out
}

func (b *backupServer) AddBackupSchedule(ctx context.Context, req *adminv1.AddBackupScheduleRequest) (*adminv1.AddBackupScheduleResponse, error) {
	svc, err := b.svc()
	if err != nil {
		return nil, err
	}
	if err := checkBackupFields(req.GetApp(), req.GetDestination(), req.GetKind(), req.GetSource(), req.GetConnectionEnv(),
		req.GetCron(), req.GetTimezone()); err != nil {
		return nil, err
	}
	if k, d := req.GetKeep(), req.GetKeepDays(); k < 0 || d < 0 || k > maxKeepArg || d > maxKeepArg {
		return nil, status.Error(codes.InvalidArgument, "keep and keep_days are positive (or 0 for unset)")
	}
	v, err := svc.AddSchedule(ctx, auth.PrincipalFrom(ctx), peerOf(ctx), backups.ScheduleRequest{
		App: req.GetApp(), Destination: req.GetDestination(), Kind: req.GetKind(), Source: req.GetSource(),
		ConnectionEnv: req.GetConnectionEnv(), Cron: req.GetCron(), Timezone: req.GetTimezone(),
		Keep: int(req.GetKeep()), KeepDays: int(req.GetKeepDays()), Verify: req.GetVerify(),
	})
	if err != nil {
		return nil, toStatus(err)
	}
	return &adminv1.AddBackupScheduleResponse{Schedule: backupSchedulePB(v)}, nil
}

func (b *backupServer) ListBackupSchedules(ctx context.Context, req *adminv1.ListBackupSchedulesRequest) (*adminv1.ListBackupSchedulesResponse, error) {
	svc, err := b.svc()
	if err != nil {
		return nil, err
	}
	if err := checkBackupFields(req.GetApp()); err != nil {
		return nil, err
	}
	list, err := svc.Schedules(ctx, auth.PrincipalFrom(ctx), req.GetApp())
	if err != nil {
		return nil, toStatus(err)
	}
	out := &adminv1.ListBackupSchedulesResponse{}
	for _, v := range list {
		out.Schedules = append(out.Schedules, backupSchedulePB(v))
	}
	return out, nil
}

func (b *backupServer) GetBackupSchedule(ctx context.Context, req *adminv1.GetBackupScheduleRequest) (*adminv1.GetBackupScheduleResponse, error) {
	svc, err := b.svc()
	if err != nil {
		return nil, err
	}
	if err := checkBackupFields(req.GetId()); err != nil {
		return nil, err
	}
	v, err := svc.Schedule(ctx, auth.PrincipalFrom(ctx), req.GetId())
	if err != nil {
		return nil, toStatus(err)
	}
	return &adminv1.GetBackupScheduleResponse{Schedule: backupSchedulePB(v)}, nil
}

func (b *backupServer) setScheduleEnabled(ctx context.Context, id string, enabled bool) (*adminv1.BackupSchedule, error) {
	svc, err := b.svc()
	if err != nil {
		return nil, err
	}
	if err := checkBackupFields(id); err != nil {
		return nil, err
	}
	v, err := svc.SetScheduleEnabled(ctx, auth.PrincipalFrom(ctx), peerOf(ctx), id, enabled)
	if err != nil {
		return nil, toStatus(err)
	}
	return backupSchedulePB(v), nil
}

func (b *backupServer) DisableBackupSchedule(ctx context.Context, req *adminv1.DisableBackupScheduleRequest) (*adminv1.DisableBackupScheduleResponse, error) {
	v, err := b.setScheduleEnabled(ctx, req.GetId(), false)
	if err != nil {
		return nil, err
	}
	return &adminv1.DisableBackupScheduleResponse{Schedule: v}, nil
}

func (b *backupServer) EnableBackupSchedule(ctx context.Context, req *adminv1.EnableBackupScheduleRequest) (*adminv1.EnableBackupScheduleResponse, error) {
	v, err := b.setScheduleEnabled(ctx, req.GetId(), true)
	if err != nil {
		return nil, err
	}
	return &adminv1.EnableBackupScheduleResponse{Schedule: v}, nil
}

func (b *backupServer) RemoveBackupSchedule(ctx context.Context, req *adminv1.RemoveBackupScheduleRequest) (*adminv1.RemoveBackupScheduleResponse, error) {
	svc, err := b.svc()
	if err != nil {
		return nil, err
	}
	if err := checkBackupFields(req.GetId()); err != nil {
		return nil, err
	}
	if err := svc.RemoveSchedule(ctx, auth.PrincipalFrom(ctx), peerOf(ctx), req.GetId()); err != nil {
		return nil, toStatus(err)
	}
	return &adminv1.RemoveBackupScheduleResponse{}, nil
}
