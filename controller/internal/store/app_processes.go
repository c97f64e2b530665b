package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/berthhq/berth/gen/dbsqlc"
)

// AppProcess is a process an app declares.
type AppProcess struct {
	ID               ID
	AppID            ID
	Name             string
	Command          string
	Instances        int
	Port             bool
	HealthPath       string
	StopSignal       string
	StopGraceSeconds int
	Restart          string
	MemoryMaxBytes   int64
	CPUMaxPercent    int
	CreatedAt        time.Time
	UpdatedAt        time.Time
}

func appProcessFromRow(r dbsqlc.AppProcess) AppProcess {
	return AppProcess{
		ID: fromPG(r.ID), AppID: fromPG(r.AppID), Name: r.Name, Command: r.Command, Instances: int(r.Instances),
		Port: r.Port, HealthPath: r.HealthPath, StopSignal: r.StopSignal, StopGraceSeconds: int(r.StopGraceSeconds),
		Restart: r.Restart, MemoryMaxBytes: r.MemoryMaxBytes, CPUMaxPercent: int(r.CpuMaxPercent),
		CreatedAt: r.CreatedAt, UpdatedAt: r.UpdatedAt,
	}
}

// PutAppProcess declares a process (replace: change the existing one of
// that name). ErrConflict: one of that name exists and replace is false;
// ErrNotFound: replace and there is none; ErrInvalid: a value breaks a
// constraint.
func (s *Store) PutAppProcess(ctx context.Context, p AppProcess, replace bool) (AppProcess, error) {
	if replace {
		r, err := s.q.ReplaceAppProcess(ctx, dbsqlc.ReplaceAppProcessParams{
			AppID: pgID(p.AppID), Name: p.Name, Command: p.Command, Instances: int32(p.Instances), Port: p.Port,
			HealthPath: p.HealthPath, StopSignal: p.StopSignal, StopGraceSeconds: int32(p.StopGraceSeconds),
			Restart: p.Restart, MemoryMaxBytes: p.MemoryMaxBytes, CpuMaxPercent: int32(p.CPUMaxPercent),
		})
		if err == nil {
			return appProcessFromRow(r), nil
		}
		if !errors.Is(mapErr("", err), ErrNotFound) {
			return AppProcess{}, mapErr("replace app process", err)
		}
		// Replace of a missing process declares it.
	}
	if p.ID == (ID{}) {
		p.ID = NewID()
	}
	r, err := s.q.CreateAppProcess(ctx, dbsqlc.CreateAppProcessParams{
		ID: pgID(p.ID), AppID: pgID(p.AppID), Name: p.Name, Command: p.Command, Instances: int32(p.Instances), Port: p.Port,
		HealthPath: p.HealthPath, StopSignal: p.StopSignal, StopGraceSeconds: int32(p.StopGraceSeconds),
		Restart: p.Restart, MemoryMaxBytes: p.MemoryMaxBytes, CpuMaxPercent: int32(p.CPUMaxPercent),
	})
	if err != nil {
		return AppProcess{}, mapErr("create app process", err)
	}
	return appProcessFromRow(r), nil
}

// AppProcesses lists an app's processes by name.
func (s *Store) AppProcesses(ctx context.Context, appID ID) ([]AppProcess, error) {
	rows, err := s.q.ListAppProcesses(ctx, pgID(appID))
	if err != nil {
		return nil, mapErr("list app processes", err)
	}
	out := make([]AppProcess, len(rows))
	for i, r := range rows {
		out[i] = appProcessFromRow(r)
	}
	return out, nil
}

// DeleteAppProcess forgets a process; ErrNotFound when there is none.
func (s *Store) DeleteAppProcess(ctx context.Context, appID ID, name string) error {
	n, err := s.q.DeleteAppProcess(ctx, dbsqlc.DeleteAppProcessParams{AppID: pgID(appID), Name: name})
	return affected("delete app process", n, err)
}

// AllocateUpstreamPort gives the app the lowest free port of 10000-19999
// on its server unless it has one, and returns its port. ErrConflict: the
// server has no free port, or another app took the same one at the same
// time (retry).
func (s *Store) AllocateUpstreamPort(ctx context.Context, appID ID) (int, error) {
	p, err := s.q.AllocateUpstreamPort(ctx, pgID(appID))
	if err != nil {
		return 0, mapErr("allocate upstream port", err)
	}
	if p == nil {
		return 0, fmt.Errorf("allocate upstream port: %w (the server has no free port in 10000-19999)", ErrConflict)
	}
	return int(*p), nil
}

// ProcessStatus is the last report of an app's processes (the agent's
// AppProcesses message as protobuf JSON).
type ProcessStatus struct {
	AppID      ID
	Report     []byte
	ReportedAt time.Time
}

// MaxProcessReport bounds a stored report (app_process_status_report_check).
const MaxProcessReport = 256 << 10

// SetProcessStatus stores the report of an app of serverID; it reports
// false (and stores nothing) when the app is not on that server, or a
// newer report is stored.
func (s *Store) SetProcessStatus(ctx context.Context, serverID ID, st ProcessStatus) (bool, error) {
	if len(st.Report) > MaxProcessReport {
		return false, fmt.Errorf("set process status: %w (report of %d bytes)", ErrInvalid, len(st.Report))
	}
	n, err := s.q.UpsertAppProcessStatus(ctx, dbsqlc.UpsertAppProcessStatusParams{
		AppID: pgID(st.AppID), ServerID: pgID(serverID), Report: st.Report, ReportedAt: st.ReportedAt,
	})
	if err != nil {
		return false, mapErr("set process status", err)
	}
	return n > 0, nil
}

// ClearProcessStatus records an empty report at at for serverID's live
// apps other than keep (unless a newer report is stored): a full report
// left them out, so they have no processes there.
func (s *Store) ClearProcessStatus(ctx context.Context, serverID ID, keep []ID, at time.Time) error {
	_, err := s.q.ClearServerProcessStatus(ctx, dbsqlc.ClearServerProcessStatusParams{
		ServerID: pgID(serverID), Keep: pgIDs(keep), ReportedAt: at,
	})
	return mapErr("clear process status", err)
}

// ProcessStatus returns the last report of an app's processes
// (ErrNotFound: none).
func (s *Store) ProcessStatus(ctx context.Context, appID ID) (ProcessStatus, error) {
	r, err := s.q.GetAppProcessStatus(ctx, pgID(appID))
	if err != nil {
		return ProcessStatus{}, mapErr("get process status", err)
	}
	return ProcessStatus{AppID: fromPG(r.AppID), Report: r.Report, ReportedAt: r.ReportedAt}, nil
}
