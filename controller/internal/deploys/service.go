// Package deploys is the apps and deployments capability: git credentials,
// apps and their environments, deploy and rollback jobs (queue, dispatch to
// the server's agent, ingest of the agent's numbered events, cancel,
// deadlines), live logs for followers, and the push webhook. The gRPC admin
// API and the web UI both call this service, so authorisation, validation
// and audit live here once.
//
// Jobs are durable in PostgreSQL. Every controller sharing the database runs
// Run: it dispatches queued deployments to the agents connected to it, ends
// overdue ones (idempotent compare-and-set, so several controllers may), and
// relays cancels and log notifications it hears on the berth_jobs channel
// (LISTEN/NOTIFY), so a request served by one controller reaches an agent or
// a follower on another.
package deploys

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/berthhq/berth/controller/internal/auth"
	"github.com/berthhq/berth/controller/internal/fleet"
	"github.com/berthhq/berth/controller/internal/jobrelay"
	"github.com/berthhq/berth/controller/internal/ratelimit"
	"github.com/berthhq/berth/controller/internal/store"
	agentv1 "github.com/berthhq/berth/gen/proto/berth/agent/v1"
)

// Config tunes the service.
type Config struct {
	// LogCap bounds a deployment's stored log (0: store.DefaultLogCap).
	LogCap int64
	// UnreachableGrace is how long past its deadline a dispatched or
	// running deployment may stay unfinished before it is failed with
	// "agent unreachable" (default 30s).
	UnreachableGrace time.Duration
	// StartGrace: for this long after the controller starts, no deployment
	// is failed as "agent unreachable": agents are still reconnecting and
	// delivering what they journaled meanwhile (default 2m).
	StartGrace time.Duration
	// Tick is how often queues and deadlines are checked besides
	// notifications (default 1s).
	Tick time.Duration
	// UpstreamPorts is the range "LOW-HIGH" an app's local upstream gets
	// its port from, the lowest free one among the server's apps (empty:
	// 10000-19999). Nothing else on the servers should listen in it.
	UpstreamPorts string
	Now           func() time.Time
}

// ParsePortRange parses "LOW-HIGH" (1024 <= LOW <= HIGH <= 65535).
func ParsePortRange(s string) (low, high int, err error) {
	a, b, ok := strings.Cut(strings.TrimSpace(s), "-")
	if !ok {
		return 0, 0, fmt.Errorf("%w: port range %q is not LOW-HIGH", ErrInvalid, s)
	}
	low, err1 := strconv.Atoi(strings.TrimSpace(a))
	high, err2 := strconv.Atoi(strings.TrimSpace(b))
	if err1 != nil || err2 != nil || low < 1024 || high > 65535 || low > high {
		return 0, 0, fmt.Errorf("%w: port range %q: LOW-HIGH with 1024 <= LOW <= HIGH <= 65535", ErrInvalid, s)
	}
	return low, high, nil
}

// Service is the deploys capability.
type Service struct {
	st    *store.Store
	fleet *fleet.Service
	log   *slog.Logger
	cfg   Config
	wake  chan struct{}
	// started is when this service started (StartGrace).
	started time.Time
	// badHooks budgets webhook deliveries that fail verification, per app
	// and address: 10 a minute (burst 10), 50 a second over all.
	badHooks *ratelimit.PerKey

	// relay carries dispatch, cancel and log messages between
	// controllers and holds this controller's followers.
	relay *jobrelay.Relay

	// upLow and upHigh bound apps' upstream ports (Config.UpstreamPorts).
	upLow, upHigh int

	// kinds: job kinds other capabilities run here (HandleJobKind).
	kinds map[store.JobKind]JobKindHandler

	// appChanged: what other capabilities do when an app's settings,
	// environment or existence changed (OnAppChange).
	appChanged []AppChangeFunc
}

// AppChangeFunc is told that an app changed: its settings, its
// environment, or it was deleted (a.DeletedAt set). tx is the transaction
// that made the change, or the store when the change is already committed;
// a NOTIFY sent through it is delivered only if the change commits. It
// must not fail the change: it reports its own errors.
type AppChangeFunc func(ctx context.Context, tx *store.Store, a store.App)

// OnAppChange registers f (at start-up, before the service serves). Agent
// held backup schedules carry an app's name and connection URL, and must
// go when it is deleted: the backups service re-sends them through this.
func (s *Service) OnAppChange(f AppChangeFunc) { s.appChanged = append(s.appChanged, f) }

func (s *Service) appChange(ctx context.Context, tx *store.Store, a store.App) {
	for _, f := range s.appChanged {
		f(ctx, tx, a)
	}
}

// New returns the service and registers it with the fleet as the handler of
// job messages on agent streams.
func New(st *store.Store, fl *fleet.Service, log *slog.Logger, cfg Config) *Service {
	if cfg.UnreachableGrace <= 0 {
		cfg.UnreachableGrace = 30 * time.Second
	}
	if cfg.StartGrace <= 0 {
		cfg.StartGrace = 2 * time.Minute
	}
	if cfg.Tick <= 0 {
		cfg.Tick = time.Second
	}
	upLow, upHigh := 10000, 19999
	if cfg.UpstreamPorts != "" {
		if l, h, err := ParsePortRange(cfg.UpstreamPorts); err == nil {
			upLow, upHigh = l, h
		} else {
			log.Error("upstream ports: using 10000-19999", "err", err)
		}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Service{st: st, fleet: fl, log: log.With("component", "deploys"), cfg: cfg,
		wake: make(chan struct{}, 1), started: cfg.Now(), badHooks: ratelimit.New(10, 10, 50),
		upLow: upLow, upHigh: upHigh}
	s.relay = jobrelay.New(st.Pool(), jobsChannel, s.log, jobrelay.Handlers{
		Dispatch: s.poke,
		Cancel: func(server store.ID, job string) {
			_ = fl.Hub().Send(server, &agentv1.ConnectResponse{Msg: &agentv1.ConnectResponse_JobCancel{JobCancel: &agentv1.JobCancel{JobId: job}}})
		},
	})
	fl.SetJobHandler(s)
	return s
}

// Errors callers map to status codes.
var (
	ErrInvalid = errors.New("invalid argument")
	// ErrPruned: a rollback target's release is no longer kept.
	ErrPruned = errors.New("release pruned")
)

// validName: ^[a-z0-9][a-z0-9._-]{0,62}$. The length is checked apart:
// a counted repetition compiles into that many copies, at every start of
// the binary, CLI included.
func validName(s string) bool { return len(s) <= 63 && nameRE.MatchString(s) }

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]*$`)

// require is auth.Require, the check every service shares.
var require = auth.Require

// Peer is where a request came from, for the audit trail.
type Peer = fleet.Peer

func (s *Service) activity(ctx context.Context, pr *auth.Principal, peer Peer, action, subjectType string, id store.ID, name string, changes map[string]any) {
	p := store.CreateActivityParams{
		Action: action, SubjectType: subjectType, SubjectID: &id, SubjectName: name, Changes: changes,
		IPAddress: peer.IP, UserAgent: peer.UserAgent,
	}
	p.ActorType, p.Actor, p.UserID = pr.Actor()
	if _, err := s.st.CreateActivity(ctx, p); err != nil {
		s.log.Error("record activity", "action", action, "err", err)
	}
}

func (s *Service) systemActivity(ctx context.Context, actorType store.ActorType, actor, action string, d store.Deployment, appName string, changes map[string]any) {
	id := d.ID
	if _, err := s.st.CreateActivity(ctx, store.CreateActivityParams{
		ActorType: actorType, Actor: actor, Action: action, SubjectType: "deployment", SubjectID: &id,
		SubjectName: appName, Changes: changes,
	}); err != nil {
		s.log.Error("record activity", "action", action, "err", err)
	}
}

// ResolveApp finds an app by id or name.
func (s *Service) ResolveApp(ctx context.Context, ref string) (store.App, error) {
	if id, err := store.ParseID(ref); err == nil {
		a, err := s.st.App(ctx, id)
		if err == nil && a.DeletedAt != nil {
			return store.App{}, fmt.Errorf("%w: app %s was deleted", store.ErrNotFound, a.Name)
		}
		return a, err
	}
	a, err := s.st.AppByName(ctx, strings.ToLower(strings.TrimSpace(ref)))
	if errors.Is(err, store.ErrNotFound) {
		return store.App{}, fmt.Errorf("%w: no app named %q", store.ErrNotFound, ref)
	}
	return a, err
}

func (s *Service) resolveCredential(ctx context.Context, ref string) (store.GitCredential, error) {
	return s.resolveCredentialIn(ctx, s.st, ref)
}

// resolveCredentialIn is resolveCredential in a transaction.
func (s *Service) resolveCredentialIn(ctx context.Context, st *store.Store, ref string) (store.GitCredential, error) {
	if id, err := store.ParseID(ref); err == nil {
		return st.GitCredential(ctx, id)
	}
	c, err := st.GitCredentialByName(ctx, strings.ToLower(strings.TrimSpace(ref)))
	if errors.Is(err, store.ErrNotFound) {
		return store.GitCredential{}, fmt.Errorf("%w: no git credential named %q", store.ErrNotFound, ref)
	}
	return c, err
}

// Run dispatches, sweeps and relays notifications until ctx ends.
func (s *Service) Run(ctx context.Context, pool *pgxpool.Pool) {
	go s.listen(ctx, pool)
	t := time.NewTicker(s.cfg.Tick)
	defer t.Stop()
	for {
		s.fireSchedules(ctx)
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

// poke wakes this controller's dispatcher.
func (s *Service) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

var fleetParse = fleet.ParsePeer
