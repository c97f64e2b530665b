// Package backups is the backups capability: destinations (local, S3,
// SFTP) with write-only credentials, the controller's age keyring, backup
// jobs and the tasks that act on a stored object (verify, restore,
// download, delete), test a destination (probe) or remove what an
// unsucceeded backup left at its destination (cleanup, see cleanup.go).
// The gRPC API and the web UI both call this service, so authorisation,
// validation and audit live here once.
//
// Backups and tasks run on the one job machinery of deployments: rows in
// PostgreSQL with the same states and deadlines, sent to the server's agent
// as JobStart over its stream, run by the agent's journaled executor, and
// reported as numbered events that store.CommitBackupJobEvents stores
// exactly once (the numbering is store's commitNumbered, shared with
// deployments). The fleet hands this service every job event; events of
// jobs that are not backups or tasks go on to the deploys service.
//
// Secrets: destination credentials, a connection URL taken from the app's
// environment and the age identity leave the controller only inside the
// JobStart of the job that needs them; the agent keeps them in memory
// (its journal writes the spec without them). A backup is encrypted on the
// server to that server's recipient, derived from the newest keyring key
// (serverkey.go); that server's identity goes out only for a verify or
// restore on it, and a download is decrypted here.
//
// Probes run as a job on a server, not in the controller: the controller
// module does not import the agent's code (the S3 and SFTP clients live
// there, and the agent stays lean by not sharing a module with pgx), and a
// probe from a server also tests what a backup needs: that server's route
// and credentials to the destination.
package backups

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/berthhq/berth/controller/internal/auth"
	"github.com/berthhq/berth/controller/internal/deploys"
	"github.com/berthhq/berth/controller/internal/fleet"
	"github.com/berthhq/berth/controller/internal/jobrelay"
	"github.com/berthhq/berth/controller/internal/jobs"
	"github.com/berthhq/berth/controller/internal/store"
	agentv1 "github.com/berthhq/berth/gen/proto/berth/agent/v1"
)

// Config tunes the service.
type Config struct {
	// LogCap bounds a job's stored log (0: store.DefaultLogCap).
	LogCap int64
	// Timeout bounds a backup, verify, restore, download or delete job
	// (default 6h).
	Timeout time.Duration
	// ProbeTimeout bounds a destination test (default 2m).
	ProbeTimeout time.Duration
	// UnreachableGrace, StartGrace, Tick: as deploys.Config.
	UnreachableGrace time.Duration
	StartGrace       time.Duration
	Tick             time.Duration
	// RetentionEvery: how often schedules' retention is applied besides
	// after each scheduled backup (default 1m); DeleteRetryAfter: how long
	// after a failed delete retention queues it again, and after a failed
	// cleanup (cleanup.go) it is queued again (default 10m).
	RetentionEvery   time.Duration
	DeleteRetryAfter time.Duration
	Now              func() time.Time
}

// Service is the backups capability.
type Service struct {
	st      *store.Store
	fleet   *fleet.Service
	next    fleet.JobHandler
	log     *slog.Logger
	cfg     Config
	wake    chan struct{}
	started time.Time

	// relay carries dispatch, cancel and log messages between
	// controllers and holds this controller's followers (as deploys').
	relay *jobrelay.Relay

	mu        sync.Mutex
	downloads map[store.ID]*download
	pruneNow  bool
	prunedAt  time.Time
	// heldRecipients: each connected agent's held_recipient; heldAcks:
	// the held runs its hello reported, acked after the welcome.
	heldRecipients map[store.ID]string
	heldAcks       map[store.ID][]string
}

// New returns the service and registers it with the fleet as the handler
// of job messages; next (the deploys service) gets the events of every job
// that is not a backup or a task.
func New(st *store.Store, fl *fleet.Service, next fleet.JobHandler, log *slog.Logger, cfg Config) *Service {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 6 * time.Hour
	}
	if cfg.ProbeTimeout <= 0 {
		cfg.ProbeTimeout = 2 * time.Minute
	}
	if cfg.UnreachableGrace <= 0 {
		cfg.UnreachableGrace = 30 * time.Second
	}
	if cfg.StartGrace <= 0 {
		cfg.StartGrace = 2 * time.Minute
	}
	if cfg.Tick <= 0 {
		cfg.Tick = time.Second
	}
	if cfg.RetentionEvery <= 0 {
		cfg.RetentionEvery = time.Minute
	}
	if cfg.DeleteRetryAfter <= 0 {
		cfg.DeleteRetryAfter = 10 * time.Minute
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Service{st: st, fleet: fl, next: next, log: log.With("component", "backups"), cfg: cfg,
		wake: make(chan struct{}, 1), started: cfg.Now(),
		downloads: map[store.ID]*download{}}
	s.relay = jobrelay.New(st.Pool(), jobsChannel, s.log, jobrelay.Handlers{
		Dispatch: s.poke,
		Cancel: func(server store.ID, job string) {
			_ = fl.Hub().Send(server, &agentv1.ConnectResponse{Msg: &agentv1.ConnectResponse_JobCancel{JobCancel: &agentv1.JobCancel{JobId: job}}})
			s.cancelDownload(job)
		},
		Other: func(kind, rest string) {
			if kind == "held" { // held:<server>: re-send its agent's held schedules
				s.relayHeld(rest)
			}
		},
	})
	fl.SetJobHandler(s)
	return s
}

// Errors callers map to status codes: each wraps the store's or deploys'
// kind, so grpcapi's toStatus maps them without knowing this package.
var (
	ErrInvalid = fmt.Errorf("invalid argument%w", quiet{store.ErrInvalid})
	// ErrInUse: a destination backups or schedules use.
	ErrInUse = fmt.Errorf("in use%w", quiet{store.ErrReferenced})
	// ErrUnavailable: the server that must run the job is not connected.
	ErrUnavailable = fmt.Errorf("unavailable%w", quiet{deploys.ErrUnavailable})
	// ErrRefused: the backup is not in a state that allows this.
	ErrRefused = fmt.Errorf("refused%w", quiet{deploys.ErrRefused})
	// ErrChecksum: a downloaded object's size or SHA-256 is not the one
	// recorded.
	ErrChecksum = errors.New("the object does not match its recorded size and SHA-256")
)

// quiet wraps a sentinel without adding its text.
type quiet struct{ err error }

func (q quiet) Error() string { return "" }
func (q quiet) Unwrap() error { return q.err }

var require = auth.Require

// Peer is where a request came from, for the audit trail.
type Peer = fleet.Peer

// validName: ^[a-z0-9][a-z0-9._-]{0,62}$ (the destinations' check).
func validName(s string) bool { return len(s) <= 63 && nameRE.MatchString(s) }

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]*$`)

func (s *Service) activity(ctx context.Context, st *store.Store, pr *auth.Principal, peer Peer, action, subjectType string, id store.ID, name string, changes map[string]any) {
	p := store.CreateActivityParams{
		Action: action, SubjectType: subjectType, SubjectID: &id, SubjectName: name, Changes: changes,
		IPAddress: peer.IP, UserAgent: peer.UserAgent,
	}
	p.ActorType, p.Actor, p.UserID = pr.Actor()
	if _, err := st.CreateActivity(ctx, p); err != nil {
		s.log.Error("record activity", "action", action, "err", err)
	}
}

func (s *Service) systemActivity(ctx context.Context, st *store.Store, actorType store.ActorType, actor, action, subjectType string, id store.ID, name string, changes map[string]any) {
	if _, err := st.CreateActivity(ctx, store.CreateActivityParams{
		ActorType: actorType, Actor: actor, Action: action, SubjectType: subjectType, SubjectID: &id,
		SubjectName: name, Changes: changes,
	}); err != nil {
		s.log.Error("record activity", "action", action, "err", err)
	}
}

func trigger(pr *auth.Principal) store.Trigger {
	if pr.IsToken() {
		return store.TriggerAPIToken
	}
	return store.TriggerUser
}

// Run dispatches, sweeps and relays notifications until ctx ends.
func (s *Service) Run(ctx context.Context, pool *pgxpool.Pool) {
	go s.listen(ctx, pool)
	t := time.NewTicker(s.cfg.Tick)
	defer t.Stop()
	for {
		s.fireSchedules(ctx)
		if s.pruneDue(s.cfg.Now()) {
			s.prune(ctx)
			s.retryCleanups(ctx, s.fleet.Hub().Connected())
		}
		s.dispatch(ctx)
		s.sweep(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-s.wake:
		}
	}
}

func (s *Service) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func optText(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func deref(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

// truncate is jobs.Truncate, the job machinery's one byte-bounded cut,
// under the short name this package's messages use.
func truncate(s string, n int) string { return jobs.Truncate(s, n) }

// resolveServer finds a server by id or name.
func (s *Service) resolveServer(ctx context.Context, ref string) (store.Server, error) {
	if id, err := store.ParseID(ref); err == nil {
		return s.st.Server(ctx, id)
	}
	srv, err := s.st.ServerByName(ctx, strings.ToLower(strings.TrimSpace(ref)))
	if errors.Is(err, store.ErrNotFound) {
		return store.Server{}, fmt.Errorf("%w: no server named %q", store.ErrNotFound, truncate(ref, 64))
	}
	return srv, err
}
