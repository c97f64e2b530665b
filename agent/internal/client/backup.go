package client

import (
	"context"
	"encoding/hex"
	"errors"
	"io"
	"sync"

	"github.com/berthhq/berth/agent/internal/backup"
	"github.com/berthhq/berth/agent/internal/deploy"
	agentv1 "github.com/berthhq/berth/gen/proto/berth/agent/v1"
)

// backupJobOf is a backup job's spec as the executor takes it; its secrets
// stay in memory (deploy.Spec.Backup is never journaled).
func backupJobOf(b *agentv1.BackupJob) *deploy.BackupJob {
	d := b.GetDestination()
	out := &deploy.BackupJob{
		Source: backup.Source{Kind: b.GetSource().GetKind(), Name: b.GetSource().GetName(), ConnectionURL: b.GetSource().GetConnectionUrl(), Within: b.GetSource().GetWithin()},
		Dest: backup.Destination{
			Kind: d.GetKind(), Path: d.GetPath(), Endpoint: d.GetEndpoint(), Bucket: d.GetBucket(), Region: d.GetRegion(),
			Prefix: d.GetPrefix(), PathStyle: d.GetPathStyle(), AccessKeyID: d.GetAccessKeyId(), SecretAccessKey: d.GetSecretAccessKey(),
			Host: d.GetHost(), Port: int(d.GetPort()), Username: d.GetUsername(), Password: d.GetPassword(), PrivateKey: d.GetPrivateKey(),
			HostKeyFingerprint: d.GetHostKeyFingerprint(),
		},
		Recipient: b.GetRecipient(), Identity: b.GetIdentity(), Force: b.GetForce(),
	}
	if o := b.GetObject(); o != nil {
		out.Object = backup.Object{Key: o.GetKey(), Size: o.GetSize(), Kind: o.GetKind()}
		if len(o.GetSha256()) > 0 {
			out.Object.SHA256 = hex.EncodeToString(o.GetSha256())
		}
	}
	return out
}

func backupObjectPB(o *deploy.BackupObject) *agentv1.BackupObject {
	if o == nil {
		return nil
	}
	return &agentv1.BackupObject{Key: o.Key, Size: o.Size, Sha256: o.SHA256}
}

// objectClient is the controller connection download jobs send objects
// over: the session's, while one is up.
type objectClient struct {
	mu sync.Mutex
	c  agentv1.AgentServiceClient
}

func (o *objectClient) set(c agentv1.AgentServiceClient) {
	o.mu.Lock()
	o.c = c
	o.mu.Unlock()
}

func (o *objectClient) get() agentv1.AgentServiceClient {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.c
}

// sendChunk bounds one SendObject message.
const sendChunk = 64 << 10

// SendObject is deploy.Config.SendObject: it streams r to the controller
// holding this agent's stream, for the download job jobID. A read error
// is reported to the controller (the client sees why) and returned.
func (j *Jobs) SendObject(ctx context.Context, jobID string, r io.Reader) error {
	c := j.objects.get()
	if c == nil {
		return errors.New("not connected to the controller")
	}
	stream, err := c.SendObject(ctx)
	if err != nil {
		return err
	}
	if err := stream.Send(&agentv1.SendObjectRequest{JobId: jobID}); err != nil {
		_, err = stream.CloseAndRecv()
		return err
	}
	buf := make([]byte, sendChunk)
	for {
		n, rerr := r.Read(buf)
		if n > 0 {
			if err := stream.Send(&agentv1.SendObjectRequest{Data: buf[:n]}); err != nil {
				_, err = stream.CloseAndRecv()
				return err
			}
		}
		if errors.Is(rerr, io.EOF) {
			break
		}
		if rerr != nil {
			_ = stream.Send(&agentv1.SendObjectRequest{Error: rerr.Error()})
			_, _ = stream.CloseAndRecv()
			return rerr
		}
	}
	_, err = stream.CloseAndRecv()
	return err
}
