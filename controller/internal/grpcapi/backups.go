package grpcapi

import (
	"context"
	"encoding/hex"
	"errors"
	"io"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/berthhq/berth/controller/internal/auth"
	"github.com/berthhq/berth/controller/internal/backups"
	"github.com/berthhq/berth/controller/internal/store"
	adminv1 "github.com/berthhq/berth/gen/proto/berth/admin/v1"
	agentv1 "github.com/berthhq/berth/gen/proto/berth/agent/v1"
)

// backupServer is the gRPC face of the backups service: the same
// principal-taking methods the web UI calls.
type backupServer struct {
	adminv1.UnimplementedBackupServiceServer
	d Deps
}

// Request bounds checked before the service sees a request.
const (
	maxBackupField  = 4096
	maxBackupSecret = 16 << 10
	downloadChunk   = 64 << 10
)

func backupStatus(err error) error {
	if errors.Is(err, backups.ErrChecksum) {
		return status.Error(codes.DataLoss, err.Error())
	}
	return toStatus(err)
}

func checkBackupFields(fields ...string) error {
	for _, f := range fields {
		if len(f) > maxBackupField {
			return status.Errorf(codes.InvalidArgument, "a field is longer than %d bytes", maxBackupField)
		}
	}
	return nil
}

func optTS(t *time.Time) *timestamppb.Timestamp {
	if t == nil {
		return nil
	}
	return timestamppb.New(*t)
}

func destinationPB(d backups.Destination) *adminv1.BackupDestination {
	c := d.Settings
	out := &adminv1.BackupDestination{
		Id: d.ID.String(), Name: d.Name, Kind: string(d.Kind), Path: c.Path, Endpoint: c.Endpoint, Bucket: c.Bucket,
		Region: c.Region, Prefix: c.Prefix, PathStyle: c.PathStyle, Host: c.Host, Port: uint32(c.Port), Username: c.Username,
		HostKeyFingerprint: c.HostKeyFingerprint, HasCredentials: d.HasCredentials, LastCheckedAt: optTS(d.LastCheckedAt),
		LastCheckError: deref(d.LastCheckError), CreatedAt: timestamppb.New(d.CreatedAt),
	}
	if d.LastCheckOK != nil {
		out.LastCheck = map[bool]string{true: "ok", false: "failed"}[*d.LastCheckOK]
	}
	return out
}

func backupPB(b store.Backup, dest string) *adminv1.Backup {
	out := &adminv1.Backup{
		Id: b.ID.String(), App: b.AppName, Destination: dest, TriggeredBy: string(b.TriggeredBy), Kind: string(b.Kind),
		Source: b.Source, ConnectionEnv: deref(b.ConnectionEnv), Status: string(b.Status), ObjectKey: deref(b.ObjectKey),
		Compression: string(b.Compression), EncryptionKeyId: deref(b.EncryptionKeyID), FailureReason: deref(b.FailureReason),
		QueuedAt: timestamppb.New(b.QueuedAt), StartedAt: optTS(b.StartedAt), FinishedAt: optTS(b.FinishedAt),
		DeadlineAt: timestamppb.New(b.DeadlineAt), CancelRequested: b.CancelRequestedAt != nil, VerifiedAt: optTS(b.VerifiedAt),
		VerificationError: deref(b.VerificationError), DeleteRequestedAt: optTS(b.DeleteRequestedAt), DeleteError: deref(b.DeleteError),
		LogBytes: b.LogBytes, LogTruncated: b.LogTruncated, ScheduledFor: optTS(b.ScheduledFor), Held: b.Held,
		CleanupStatus: string(b.CleanupStatus), CleanupError: deref(b.CleanupError), CleanupAt: optTS(b.CleanupAt),
	}
	if b.AppID != nil {
		out.AppId = b.AppID.String()
	}
	if b.ServerID != nil {
		out.ServerId = b.ServerID.String()
	}
	if b.ScheduleID != nil {
		out.ScheduleId = b.ScheduleID.String()
	}
	if b.SizeBytes != nil {
		out.SizeBytes = *b.SizeBytes
	}
	if len(b.ChecksumSHA256) > 0 {
		out.ChecksumSha256 = hex.EncodeToString(b.ChecksumSHA256)
	}
	return out
}

func backupTaskPB(t store.BackupTask, dest string) *adminv1.BackupTask {
	out := &adminv1.BackupTask{
		Id: t.ID.String(), Kind: string(t.Kind), Destination: dest, Target: deref(t.Target), Force: t.Force,
		Status: string(t.Status), FailureReason: deref(t.FailureReason), QueuedAt: timestamppb.New(t.QueuedAt),
		StartedAt: optTS(t.StartedAt), FinishedAt: optTS(t.FinishedAt), CancelRequested: t.CancelRequestedAt != nil,
	}
	if t.BackupID != nil {
		out.BackupId = t.BackupID.String()
	}
	if t.ServerID != nil {
		out.ServerId = t.ServerID.String()
	}
	return out
}

func (b *backupServer) svc() (*backups.Service, error) {
	if b.d.Backups == nil {
		return nil, status.Error(codes.Unimplemented, "backups are not enabled")
	}
	return b.d.Backups, nil
}

func (b *backupServer) AddBackupDestination(ctx context.Context, req *adminv1.AddBackupDestinationRequest) (*adminv1.AddBackupDestinationResponse, error) {
	svc, err := b.svc()
	if err != nil {
		return nil, err
	}
	if err := checkBackupFields(req.GetName(), req.GetKind(), req.GetPath(), req.GetEndpoint(), req.GetBucket(), req.GetRegion(),
		req.GetPrefix(), req.GetAccessKeyId(), req.GetHost(), req.GetUsername(), req.GetHostKeyFingerprint()); err != nil {
		return nil, err
	}
	if len(req.GetSecretAccessKey()) > maxBackupSecret || len(req.GetPassword()) > maxBackupSecret || len(req.GetPrivateKey()) > maxBackupSecret {
		return nil, status.Errorf(codes.InvalidArgument, "a secret is longer than %d bytes", maxBackupSecret)
	}
	if req.GetPort() > 65535 {
		return nil, status.Error(codes.InvalidArgument, "port must be 1-65535")
	}
	d, err := svc.AddDestination(ctx, auth.PrincipalFrom(ctx), peerOf(ctx), backups.DestinationSpec{
		Name: req.GetName(), Kind: req.GetKind(), Path: req.GetPath(), Endpoint: req.GetEndpoint(), Bucket: req.GetBucket(),
		Region: req.GetRegion(), Prefix: req.GetPrefix(), PathStyle: req.GetPathStyle(), AccessKeyID: req.GetAccessKeyId(),
		SecretAccessKey: req.GetSecretAccessKey(), Host: req.GetHost(), Port: int(req.GetPort()), Username: req.GetUsername(),
		Password: req.GetPassword(), PrivateKey: req.GetPrivateKey(), HostKeyFingerprint: req.GetHostKeyFingerprint(),
	})
	if err != nil {
		return nil, toStatus(err)
	}
	return &adminv1.AddBackupDestinationResponse{Destination: destinationPB(d)}, nil
}

func (b *backupServer) ListBackupDestinations(ctx context.Context, _ *adminv1.ListBackupDestinationsRequest) (*adminv1.ListBackupDestinationsResponse, error) {
	svc, err := b.svc()
	if err != nil {
		return nil, err
	}
	list, err := svc.Destinations(ctx, auth.PrincipalFrom(ctx))
	if err != nil {
		return nil, toStatus(err)
	}
	out := &adminv1.ListBackupDestinationsResponse{}
	for _, d := range list {
		out.Destinations = append(out.Destinations, destinationPB(d))
	}
	return out, nil
}

func (b *backupServer) GetBackupDestination(ctx context.Context, req *adminv1.GetBackupDestinationRequest) (*adminv1.GetBackupDestinationResponse, error) {
	svc, err := b.svc()
	if err != nil {
		return nil, err
	}
	if err := checkBackupFields(req.GetName()); err != nil {
		return nil, err
	}
	d, err := svc.Destination(ctx, auth.PrincipalFrom(ctx), req.GetName())
	if err != nil {
		return nil, toStatus(err)
	}
	return &adminv1.GetBackupDestinationResponse{Destination: destinationPB(d)}, nil
}

func (b *backupServer) TestBackupDestination(ctx context.Context, req *adminv1.TestBackupDestinationRequest) (*adminv1.TestBackupDestinationResponse, error) {
	svc, err := b.svc()
	if err != nil {
		return nil, err
	}
	if err := checkBackupFields(req.GetName(), req.GetServer()); err != nil {
		return nil, err
	}
	d, t, err := svc.TestDestination(ctx, auth.PrincipalFrom(ctx), peerOf(ctx), req.GetName(), req.GetServer())
	if err != nil {
		return nil, toStatus(err)
	}
	return &adminv1.TestBackupDestinationResponse{Destination: destinationPB(d), Task: backupTaskPB(t, d.Name)}, nil
}

func (b *backupServer) RemoveBackupDestination(ctx context.Context, req *adminv1.RemoveBackupDestinationRequest) (*adminv1.RemoveBackupDestinationResponse, error) {
	svc, err := b.svc()
	if err != nil {
		return nil, err
	}
	if err := checkBackupFields(req.GetName()); err != nil {
		return nil, err
	}
	if err := svc.RemoveDestination(ctx, auth.PrincipalFrom(ctx), peerOf(ctx), req.GetName()); err != nil {
		return nil, toStatus(err)
	}
	return &adminv1.RemoveBackupDestinationResponse{}, nil
}

func (b *backupServer) RunBackup(ctx context.Context, req *adminv1.RunBackupRequest) (*adminv1.RunBackupResponse, error) {
	svc, err := b.svc()
	if err != nil {
		return nil, err
	}
	if err := checkBackupFields(req.GetApp(), req.GetDestination(), req.GetKind(), req.GetSource(), req.GetConnectionEnv()); err != nil {
		return nil, err
	}
	bk, err := svc.RunBackup(ctx, auth.PrincipalFrom(ctx), peerOf(ctx), backups.RunRequest{
		App: req.GetApp(), Destination: req.GetDestination(), Kind: req.GetKind(), Source: req.GetSource(), ConnectionEnv: req.GetConnectionEnv(),
	})
	if err != nil {
		return nil, toStatus(err)
	}
	return &adminv1.RunBackupResponse{Backup: backupPB(bk, svc.DestinationName(ctx, bk.DestinationID))}, nil
}

func (b *backupServer) ListBackups(ctx context.Context, req *adminv1.ListBackupsRequest) (*adminv1.ListBackupsResponse, error) {
	svc, err := b.svc()
	if err != nil {
		return nil, err
	}
	if err := checkBackupFields(req.GetApp(), req.GetStatus()); err != nil {
		return nil, err
	}
	if req.GetLimit() > 1000 {
		return nil, status.Error(codes.InvalidArgument, "limit is at most 1000")
	}
	list, err := svc.Backups(ctx, auth.PrincipalFrom(ctx), backups.ListRequest{App: req.GetApp(), Status: req.GetStatus(), Limit: int(req.GetLimit())})
	if err != nil {
		return nil, toStatus(err)
	}
	names := map[store.ID]string{}
	out := &adminv1.ListBackupsResponse{}
	for _, bk := range list {
		n, ok := names[bk.DestinationID]
		if !ok {
			n = svc.DestinationName(ctx, bk.DestinationID)
			names[bk.DestinationID] = n
		}
		out.Backups = append(out.Backups, backupPB(bk, n))
	}
	return out, nil
}

func (b *backupServer) GetBackup(ctx context.Context, req *adminv1.GetBackupRequest) (*adminv1.GetBackupResponse, error) {
	svc, err := b.svc()
	if err != nil {
		return nil, err
	}
	if err := checkBackupFields(req.GetId()); err != nil {
		return nil, err
	}
	bk, tasks, err := svc.Backup(ctx, auth.PrincipalFrom(ctx), req.GetId())
	if err != nil {
		return nil, toStatus(err)
	}
	n := svc.DestinationName(ctx, bk.DestinationID)
	out := &adminv1.GetBackupResponse{Backup: backupPB(bk, n)}
	for _, t := range tasks {
		out.Tasks = append(out.Tasks, backupTaskPB(t, n))
	}
	return out, nil
}

func (b *backupServer) FollowBackupJob(req *adminv1.FollowBackupJobRequest, stream grpc.ServerStreamingServer[adminv1.FollowBackupJobResponse]) error {
	svc, err := b.svc()
	if err != nil {
		return err
	}
	if err := checkBackupFields(req.GetId()); err != nil {
		return err
	}
	ctx := stream.Context()
	dest := ""
	err = svc.Follow(ctx, auth.PrincipalFrom(ctx), req.GetId(), int64(min(req.GetAfterSeq(), 1<<62)), req.GetFollow(), func(c *backups.Chunk, j *backups.Job) error {
		m := &adminv1.FollowBackupJobResponse{}
		if c != nil {
			m.Seq, m.Step, m.Data = uint64(c.Seq), c.Step, c.Data
		}
		if j != nil {
			if j.Backup != nil {
				if dest == "" {
					dest = svc.DestinationName(ctx, j.Backup.DestinationID)
				}
				m.Backup = backupPB(*j.Backup, dest)
			} else {
				if dest == "" {
					dest = svc.DestinationName(ctx, j.Task.DestinationID)
				}
				m.Task = backupTaskPB(*j.Task, dest)
			}
		}
		return stream.Send(m)
	})
	return toStatus(err)
}

func (b *backupServer) CancelBackupJob(ctx context.Context, req *adminv1.CancelBackupJobRequest) (*adminv1.CancelBackupJobResponse, error) {
	svc, err := b.svc()
	if err != nil {
		return nil, err
	}
	if err := checkBackupFields(req.GetId()); err != nil {
		return nil, err
	}
	j, err := svc.Cancel(ctx, auth.PrincipalFrom(ctx), peerOf(ctx), req.GetId())
	if err != nil {
		return nil, toStatus(err)
	}
	out := &adminv1.CancelBackupJobResponse{}
	if j.Backup != nil {
		out.Backup = backupPB(*j.Backup, svc.DestinationName(ctx, j.Backup.DestinationID))
	} else {
		out.Task = backupTaskPB(*j.Task, svc.DestinationName(ctx, j.Task.DestinationID))
	}
	return out, nil
}

func (b *backupServer) VerifyBackup(ctx context.Context, req *adminv1.VerifyBackupRequest) (*adminv1.VerifyBackupResponse, error) {
	svc, err := b.svc()
	if err != nil {
		return nil, err
	}
	if err := checkBackupFields(req.GetId()); err != nil {
		return nil, err
	}
	t, err := svc.Verify(ctx, auth.PrincipalFrom(ctx), peerOf(ctx), req.GetId())
	if err != nil {
		return nil, toStatus(err)
	}
	return &adminv1.VerifyBackupResponse{Task: backupTaskPB(t, svc.DestinationName(ctx, t.DestinationID))}, nil
}

func (b *backupServer) RestoreBackup(ctx context.Context, req *adminv1.RestoreBackupRequest) (*adminv1.RestoreBackupResponse, error) {
	svc, err := b.svc()
	if err != nil {
		return nil, err
	}
	if err := checkBackupFields(req.GetId(), req.GetTo(), req.GetConnectionEnv()); err != nil {
		return nil, err
	}
	t, err := svc.Restore(ctx, auth.PrincipalFrom(ctx), peerOf(ctx), backups.RestoreRequest{ID: req.GetId(), To: req.GetTo(), Force: req.GetForce(), ConnectionEnv: req.GetConnectionEnv()})
	if err != nil {
		return nil, toStatus(err)
	}
	return &adminv1.RestoreBackupResponse{Task: backupTaskPB(t, svc.DestinationName(ctx, t.DestinationID))}, nil
}

// chunkWriter sends what it is given as DownloadBackupResponse messages of
// at most downloadChunk bytes.
type chunkWriter struct {
	stream grpc.ServerStreamingServer[adminv1.DownloadBackupResponse]
}

func (w chunkWriter) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		c := p[:min(len(p), downloadChunk)]
		if err := w.stream.Send(&adminv1.DownloadBackupResponse{Data: c}); err != nil {
			return n, err
		}
		n += len(c)
		p = p[len(c):]
	}
	return n, nil
}

func (b *backupServer) DownloadBackup(req *adminv1.DownloadBackupRequest, stream grpc.ServerStreamingServer[adminv1.DownloadBackupResponse]) error {
	svc, err := b.svc()
	if err != nil {
		return err
	}
	if err := checkBackupFields(req.GetId()); err != nil {
		return err
	}
	ctx := stream.Context()
	if err := svc.Download(ctx, auth.PrincipalFrom(ctx), peerOf(ctx), req.GetId(), chunkWriter{stream}); err != nil {
		return backupStatus(err)
	}
	return stream.Send(&adminv1.DownloadBackupResponse{Done: true})
}

func (b *backupServer) DeleteBackup(ctx context.Context, req *adminv1.DeleteBackupRequest) (*adminv1.DeleteBackupResponse, error) {
	svc, err := b.svc()
	if err != nil {
		return nil, err
	}
	if err := checkBackupFields(req.GetId()); err != nil {
		return nil, err
	}
	if req.GetForget() {
		if err := svc.Forget(ctx, auth.PrincipalFrom(ctx), peerOf(ctx), req.GetId()); err != nil {
			return nil, toStatus(err)
		}
		return &adminv1.DeleteBackupResponse{}, nil
	}
	t, err := svc.Delete(ctx, auth.PrincipalFrom(ctx), peerOf(ctx), req.GetId())
	if err != nil {
		return nil, toStatus(err)
	}
	out := &adminv1.DeleteBackupResponse{}
	if t != nil {
		out.Task = backupTaskPB(*t, svc.DestinationName(ctx, t.DestinationID))
	}
	return out, nil
}

func backupKeyPB(k store.BackupEncryptionKey, newest bool) *adminv1.BackupKey {
	return &adminv1.BackupKey{Id: k.ID.String(), Recipient: k.Recipient, CreatedAt: timestamppb.New(k.CreatedAt), Newest: newest}
}

func (b *backupServer) ListBackupKeys(ctx context.Context, _ *adminv1.ListBackupKeysRequest) (*adminv1.ListBackupKeysResponse, error) {
	svc, err := b.svc()
	if err != nil {
		return nil, err
	}
	keys, err := svc.Keys(ctx, auth.PrincipalFrom(ctx))
	if err != nil {
		return nil, toStatus(err)
	}
	out := &adminv1.ListBackupKeysResponse{}
	for i, k := range keys {
		out.Keys = append(out.Keys, backupKeyPB(k, i == 0))
	}
	return out, nil
}

func (b *backupServer) RotateBackupKey(ctx context.Context, _ *adminv1.RotateBackupKeyRequest) (*adminv1.RotateBackupKeyResponse, error) {
	svc, err := b.svc()
	if err != nil {
		return nil, err
	}
	k, err := svc.RotateKey(ctx, auth.PrincipalFrom(ctx), peerOf(ctx))
	if err != nil {
		return nil, toStatus(err)
	}
	return &adminv1.RotateBackupKeyResponse{Key: backupKeyPB(k, true)}, nil
}

// SendObject is a download job's upload of the stored bytes (agent
// certificate): the first message names the job; the backups service
// checks it is this server's download that a client waits for.
func (a *agentServer) SendObject(stream grpc.ClientStreamingServer[agentv1.SendObjectRequest, agentv1.SendObjectResponse]) error {
	ag := auth.AgentFrom(stream.Context())
	if ag == nil {
		return status.Error(codes.Unauthenticated, "client certificate required")
	}
	if a.d.Backups == nil {
		return status.Error(codes.Unimplemented, "backups are not enabled")
	}
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	pending := first.GetData()
	recv := func() ([]byte, string, error) {
		if pending != nil {
			d := pending
			pending = nil
			return d, "", nil
		}
		m, err := stream.Recv()
		if err != nil {
			return nil, "", err
		}
		if m.GetError() != "" {
			return nil, m.GetError(), nil
		}
		return m.GetData(), "", nil
	}
	if first.GetError() != "" {
		recv = func() ([]byte, string, error) { return nil, first.GetError(), nil }
	}
	if err := a.d.Backups.ReceiveObject(stream.Context(), ag.ServerID, first.GetJobId(), recv); err != nil && !errors.Is(err, io.EOF) {
		return toStatus(err)
	}
	return stream.SendAndClose(&agentv1.SendObjectResponse{})
}

func deref(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}
