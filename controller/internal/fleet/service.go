// Package fleet is the servers capability: adding servers and their join
// tokens, agent enrollment, the agents' live streams (status, heartbeats,
// metrics, certificate renewal) and removing or disabling servers. The gRPC
// admin API and the web UI both call this service, so authorisation,
// validation and audit live here once.
package fleet

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/berthhq/berth/controller/internal/auth"
	"github.com/berthhq/berth/controller/internal/ca"
	"github.com/berthhq/berth/controller/internal/notify"
	"github.com/berthhq/berth/controller/internal/ratelimit"
	"github.com/berthhq/berth/controller/internal/store"
	agentv1 "github.com/berthhq/berth/gen/proto/berth/agent/v1"
)

// Config tunes the fleet.
type Config struct {
	// HeartbeatInterval is what agents are told; a server is offline after
	// HeartbeatInterval*3 plus Grace without one.
	HeartbeatInterval time.Duration
	Grace             time.Duration
	// StartGrace is the longer grace right after this controller started, so
	// a controller restart does not mark the fleet offline.
	StartGrace time.Duration
	// MetricsInterval is how often agents sample (1s at least).
	MetricsInterval time.Duration
	// AgentCertTTL is the client certificate lifetime.
	AgentCertTTL time.Duration
	// ControllerAddr is what agents dial (host:port), for printed commands.
	ControllerAddr string
	// InstallURL is the controller's HTTP base for the install script.
	InstallURL string
	// AgentSHA256 is the hex SHA-256 of each agent binary the controller
	// serves, by GOARCH, for the printed install command.
	AgentSHA256 map[string]string
	// EnrollPerMinute and EnrollBurst limit enrollment attempts per address
	// (default 10 a minute, burst 5). Overall, enrollment is capped at 50 a
	// second, or at EnrollPerMinute/60 a second when that is higher.
	EnrollPerMinute, EnrollBurst int
	Now                          func() time.Time
}

func (c *Config) checkAndSetDefaults() {
	if c.HeartbeatInterval == 0 {
		c.HeartbeatInterval = 10 * time.Second
	}
	if c.Grace == 0 {
		c.Grace = 5 * time.Second
	}
	if c.StartGrace == 0 {
		c.StartGrace = 2 * time.Minute
	}
	if c.MetricsInterval == 0 {
		c.MetricsInterval = 10 * time.Second
	}
	if c.AgentCertTTL == 0 {
		c.AgentCertTTL = ca.DefaultAgentCertTTL
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.EnrollPerMinute <= 0 {
		c.EnrollPerMinute = 10
	}
	if c.EnrollBurst <= 0 {
		c.EnrollBurst = max(c.EnrollPerMinute/2, 1) // half a minute's worth: 5 by default
	}
}

// Service is the fleet capability.
type Service struct {
	st      *store.Store
	ca      *ca.CA
	hub     *Hub
	log     *slog.Logger
	cfg     Config
	limit   *ratelimit.PerKey
	started time.Time
	seen    seenBatch
	ingest  *ingester
	logs    logsRelay
}

// New returns the service.
func New(st *store.Store, authority *ca.CA, log *slog.Logger, cfg Config) *Service {
	cfg.checkAndSetDefaults()
	return &Service{
		st: st, ca: authority, hub: NewHub(), log: log.With("component", "fleet"), cfg: cfg,
		// Per address as configured (10 a minute, burst 5), 50/s overall
		// unless the per-address rate alone is higher.
		limit:   ratelimit.New(cfg.EnrollPerMinute, cfg.EnrollBurst, max(50, float64(cfg.EnrollPerMinute)/60)),
		started: cfg.Now(),
		ingest:  newIngester(st, log.With("component", "fleet")),
	}
}

// Hub is the registry of connected agents.
func (s *Service) Hub() *Hub { return s.hub }

// Errors callers map to status codes.
var (
	ErrInvalid     = errors.New("invalid argument")
	ErrEnrollToken = errors.New("enrollment refused: join token unknown, used or expired, or certificate request invalid")
	ErrRateLimited = errors.New("too many enrollment attempts: slow down")
)

// validName: ^[a-z0-9][a-z0-9._-]{0,62}$. The length is checked apart:
// a counted repetition compiles into that many copies, at every start of
// the binary, CLI included.
func validName(s string) bool { return len(s) <= 63 && nameRE.MatchString(s) }

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]*$`)

// Peer is where a request came from, for the audit trail.
type Peer struct {
	IP        *netip.Addr
	UserAgent string
}

// ParsePeer turns "ip:port" into a Peer.
func ParsePeer(addr, userAgent string) Peer {
	p := Peer{UserAgent: userAgent}
	if ap, err := netip.ParseAddrPort(addr); err == nil {
		ip := ap.Addr().Unmap()
		p.IP = &ip
	}
	return p
}

func (p Peer) String() string {
	if p.IP == nil {
		return ""
	}
	return p.IP.String()
}

// require is auth.Require, the check every service shares.
var require = auth.Require

func (s *Service) activity(ctx context.Context, pr *auth.Principal, peer Peer, action string, srv store.Server, changes map[string]any) {
	p := store.CreateActivityParams{
		Action: action, SubjectType: "server", SubjectID: &srv.ID, SubjectName: srv.Name, Changes: changes, IPAddress: peer.IP, UserAgent: peer.UserAgent,
	}
	p.ActorType, p.Actor, p.UserID = pr.Actor()
	if _, err := s.st.CreateActivity(ctx, p); err != nil {
		s.log.Error("record activity", "action", action, "err", err)
	}
}

func (s *Service) security(ctx context.Context, typ string, sev store.Severity, serverID *store.ID, pr *auth.Principal, peer Peer, details map[string]any) {
	p := store.CreateSecurityEventParams{Type: typ, Severity: sev, ServerID: serverID, IPAddress: peer.IP, UserAgent: peer.UserAgent, Details: details}
	if pr != nil {
		p.UserID, p.Actor = &pr.UserID, pr.Email
	}
	if _, err := s.st.CreateSecurityEvent(ctx, p); err != nil {
		s.log.Error("record security event", "type", typ, "err", err)
	}
}

// AddResult is what adding a server prints, once.
type AddResult struct {
	Server         store.Server
	Token          string
	TokenExpiresAt time.Time
	CAPin          string
	EnrollCommand  string
	InstallCommand string
	// Warnings say why the printed commands would not work from another
	// machine (a loopback address), and which flag fixes it.
	Warnings []string
}

// AddServer creates a pending server and its one-time join token.
func (s *Service) AddServer(ctx context.Context, pr *auth.Principal, peer Peer, name string, labels map[string]string, ttl time.Duration) (AddResult, error) {
	if err := require(pr, store.ScopeWrite); err != nil {
		return AddResult{}, err
	}
	name = strings.ToLower(strings.TrimSpace(name))
	if !validName(name) {
		return AddResult{}, fmt.Errorf("%w: server name must be a lowercase slug of 1-63 letters, digits, '.', '_' or '-'", ErrInvalid)
	}
	if len(labels) > 64 {
		return AddResult{}, fmt.Errorf("%w: at most 64 labels", ErrInvalid)
	}
	for k, v := range labels {
		if !validName(k) || len(v) > 255 {
			return AddResult{}, fmt.Errorf("%w: label %q: keys are lowercase slugs, values at most 255 bytes", ErrInvalid, k)
		}
	}
	if ttl == 0 {
		ttl = time.Hour
	}
	if ttl < time.Minute || ttl > 7*24*time.Hour {
		return AddResult{}, fmt.Errorf("%w: token TTL must be between 1m and 168h", ErrInvalid)
	}
	token, hash := newJoinToken()
	exp := s.cfg.Now().Add(ttl)
	srv, err := s.st.CreateServer(ctx, store.CreateServerParams{Name: name, Labels: labels, JoinTokenHash: hash, JoinTokenExpiresAt: &exp})
	if errors.Is(err, store.ErrConflict) {
		return AddResult{}, fmt.Errorf("%w: a server named %q already exists", store.ErrConflict, name)
	}
	if err != nil {
		return AddResult{}, err
	}
	s.activity(ctx, pr, peer, "server.created", srv, map[string]any{"labels": labels, "token_ttl": ttl.String()})
	return s.joinResult(srv, token, exp), nil
}

// joinResult is what an operator needs to (re-)enroll a server's agent.
// The token is never part of a printed command (it would sit in the
// shell's history and in ps): the installer asks for it on the terminal
// or reads it from --token-file, and `berth-agent enroll --token-stdin`
// reads it pasted (or piped) on standard input. The install
// command carries the agent binaries' SHA-256s, so a checksum file from the
// same origin as the binary is not the only check.
func (s *Service) joinResult(srv store.Server, token string, exp time.Time) AddResult {
	pin := s.ca.Pin()
	res := AddResult{Server: srv, Token: token, TokenExpiresAt: exp, CAPin: pin}
	res.EnrollCommand = fmt.Sprintf("berth-agent enroll --controller %s --ca-pin %s --token-stdin", s.cfg.ControllerAddr, pin)
	if s.cfg.InstallURL != "" {
		cmd := fmt.Sprintf("curl -fsSL %s/install.sh | sudo sh -s -- --controller %s --ca-pin %s",
			strings.TrimRight(s.cfg.InstallURL, "/"), s.cfg.ControllerAddr, pin)
		for _, arch := range []string{"amd64", "arm64"} {
			if sum := s.cfg.AgentSHA256[arch]; sum != "" {
				cmd += fmt.Sprintf(" --sha256-%s %s", arch, sum)
			}
		}
		res.InstallCommand = cmd
	}
	res.Warnings = s.reachabilityWarnings()
	return res
}

// reachabilityWarnings names the loopback addresses in the printed
// commands: they work for an agent on the controller's own machine only,
// and a newcomer copying them to a real server gets a connection refused
// with no hint why.
func (s *Service) reachabilityWarnings() []string {
	var w []string
	if host, _, err := net.SplitHostPort(s.cfg.ControllerAddr); err == nil && isLoopbackName(host) {
		w = append(w, fmt.Sprintf("agents dial %s, which only an agent on this same machine can reach (a loopback address). "+
			"Start the controller with --advertise-addr HOST:PORT (the address other servers reach its gRPC port at).", s.cfg.ControllerAddr))
	}
	if u, err := url.Parse(s.cfg.InstallURL); err == nil && s.cfg.InstallURL != "" && isLoopbackName(u.Hostname()) {
		w = append(w, fmt.Sprintf("the install script is fetched from %s, which only this same machine can reach (a loopback address). "+
			"Start the controller with --public-url https://HOST (its web address as other servers reach it).", s.cfg.InstallURL))
	}
	return w
}

func isLoopbackName(host string) bool {
	if strings.EqualFold(host, "localhost") || strings.HasSuffix(strings.ToLower(host), ".localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && (ip.IsLoopback() || ip.IsUnspecified())
}

// Enable re-enables a disabled server with a new join token. Its old
// certificates stay revoked: the agent enrolls again.
func (s *Service) Enable(ctx context.Context, pr *auth.Principal, peer Peer, ref string, ttl time.Duration) (AddResult, error) {
	if err := require(pr, store.ScopeAdmin); err != nil {
		return AddResult{}, err
	}
	if ttl == 0 {
		ttl = time.Hour
	}
	if ttl < time.Minute || ttl > 7*24*time.Hour {
		return AddResult{}, fmt.Errorf("%w: token TTL must be between 1m and 168h", ErrInvalid)
	}
	srv, err := s.Resolve(ctx, ref)
	if err != nil {
		return AddResult{}, err
	}
	if srv.Status != store.ServerDisabled {
		return AddResult{}, fmt.Errorf("%w: server %s is not disabled", ErrInvalid, srv.Name)
	}
	token, hash := newJoinToken()
	exp := s.cfg.Now().Add(ttl)
	err = s.st.InTx(ctx, func(tx *store.Store) error {
		if _, err := tx.EnableServer(ctx, srv.ID); err != nil {
			return err
		}
		srv, err = tx.SetServerJoinToken(ctx, srv.ID, hash, exp)
		return err
	})
	if err != nil {
		return AddResult{}, err
	}
	s.activity(ctx, pr, peer, "server.enabled", srv, nil)
	return s.joinResult(srv, token, exp), nil
}

// joinTokenPrefix marks join tokens (distinct from API tokens).
const joinTokenPrefix = "bjt_"

func newJoinToken() (string, []byte) {
	var b [32]byte // 256 bits
	_, _ = rand.Read(b[:])
	t := joinTokenPrefix + base64.RawURLEncoding.EncodeToString(b[:])
	return t, auth.HashToken(t)
}

// Enrolled is an agent's new identity.
type Enrolled struct {
	ServerID store.ID
	CertDER  []byte
}

// Enroll trades a join token and CSR for a client certificate. Every refusal
// is recorded with the peer address; the caller gets one generic error,
// ErrEnrollToken, whatever was wrong: a caller without a valid token must
// not learn from a bad CSR's answer that a token it tried was good. Both the
// token and the request are checked on every attempt, in one transaction
// (the token is consumed only when the certificate is issued), and the
// security event names every reason.
func (s *Service) Enroll(ctx context.Context, peer Peer, token string, csr []byte, facts *agentv1.HostFacts) (Enrolled, error) {
	if !s.limit.Allow(peer.String(), s.cfg.Now()) {
		s.security(ctx, "agent.enroll_refused", store.SeverityWarning, nil, nil, peer, map[string]any{"reason": "rate_limited"})
		return Enrolled{}, ErrRateLimited
	}
	var reasons []string
	csrErr := ca.CheckCSR(csr)
	if csrErr != nil {
		reasons = append(reasons, "bad_csr")
	}
	if !strings.HasPrefix(token, joinTokenPrefix) || len(token) > 100 {
		reasons = append(reasons, "malformed_token")
	}
	var out Enrolled
	errRefused := errors.New("refused")
	err := s.st.InTx(ctx, func(tx *store.Store) error {
		if slices.Contains(reasons, "malformed_token") {
			return errRefused
		}
		srv, err := tx.ConsumeServerJoinToken(ctx, auth.HashToken(token))
		if errors.Is(err, store.ErrNotFound) {
			reasons = append(reasons, "invalid_token")
			return errRefused
		}
		if err != nil {
			return err
		}
		if csrErr != nil {
			return errRefused // rolls the token back: the agent may retry
		}
		issued, err := s.ca.SignAgentCSR(csr, srv.ID, s.cfg.AgentCertTTL)
		if err != nil {
			reasons = append(reasons, "bad_csr")
			return errRefused
		}
		if _, err := tx.RecordAgentCertificate(ctx, store.AgentCertificate{ServerID: srv.ID, Serial: issued.SerialHex, IssuedFor: "enroll",
			NotBefore: issued.NotBefore, NotAfter: issued.NotAfter, SPKISHA256: issued.SPKISHA256}); err != nil {
			return err
		}
		if _, err := tx.UpdateServerFacts(ctx, srv.ID, factsOf(facts)); err != nil {
			return err
		}
		out = Enrolled{ServerID: srv.ID, CertDER: issued.DER}
		s.publishServer(ctx, tx, notify.KindServerEnrolled, srv)
		return nil
	})
	if err != nil {
		if !errors.Is(err, errRefused) {
			s.log.Error("enroll", "err", err)
			return Enrolled{}, err
		}
		details := map[string]any{"reason": strings.Join(reasons, ",")}
		if csrErr != nil {
			details["csr_error"] = csrErr.Error()
		}
		s.security(ctx, "agent.enroll_refused", store.SeverityWarning, nil, nil, peer, details)
		return Enrolled{}, ErrEnrollToken
	}
	s.security(ctx, "agent.enrolled", store.SeverityInfo, &out.ServerID, nil, peer, map[string]any{"hostname": facts.GetHostname()})
	return out, nil
}

func factsOf(f *agentv1.HostFacts) store.ServerFacts {
	m := map[string]any{
		"hostname": f.GetHostname(), "os": f.GetOs(), "platform": f.GetPlatform(), "platform_version": f.GetPlatformVersion(),
		"kernel": f.GetKernel(), "arch": f.GetArch(), "cpus": f.GetCpus(), "memory_bytes": f.GetMemoryBytes(), "agent_version": f.GetAgentVersion(),
	}
	if f.GetBootTime() != nil {
		m["boot_time"] = f.GetBootTime().AsTime().UTC().Format(time.RFC3339)
	}
	b, _ := json.Marshal(m)
	return store.ServerFacts{Facts: b, Hostname: truncate(f.GetHostname(), 253), AgentVersion: truncate(f.GetAgentVersion(), 64)}
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// Resolve finds a server by id or name.
func (s *Service) Resolve(ctx context.Context, ref string) (store.Server, error) {
	if id, err := store.ParseID(ref); err == nil {
		return s.st.Server(ctx, id)
	}
	return s.st.ServerByName(ctx, strings.ToLower(strings.TrimSpace(ref)))
}

// Get returns one server.
func (s *Service) Get(ctx context.Context, pr *auth.Principal, ref string) (store.Server, error) {
	if err := require(pr, store.ScopeRead); err != nil {
		return store.Server{}, err
	}
	return s.Resolve(ctx, ref)
}

// List lists servers.
func (s *Service) List(ctx context.Context, pr *auth.Principal, f store.ServerFilter) ([]store.Server, error) {
	if err := require(pr, store.ScopeRead); err != nil {
		return nil, err
	}
	return s.st.Servers(ctx, f)
}

// Remove deletes a server, revokes its certificates and cuts its stream.
func (s *Service) Remove(ctx context.Context, pr *auth.Principal, peer Peer, ref string) error {
	if err := require(pr, store.ScopeAdmin); err != nil {
		return err
	}
	srv, err := s.Resolve(ctx, ref)
	if err != nil {
		return err
	}
	err = s.st.InTx(ctx, func(tx *store.Store) error {
		// The lock a renewal takes: see renew.
		if err := tx.LockServer(ctx, srv.ID); err != nil {
			return err
		}
		if _, err := tx.RevokeServerCertificates(ctx, srv.ID, "server removed"); err != nil {
			return err
		}
		return tx.DeleteServer(ctx, srv.ID)
	})
	if errors.Is(err, store.ErrReferenced) {
		return fmt.Errorf("%w: server %s still has apps: delete or move them first", store.ErrReferenced, srv.Name)
	}
	if err != nil {
		return err
	}
	s.hub.Cut(srv.ID, ErrRevoked)
	s.announceRevoked(ctx, srv.ID)
	s.activity(ctx, pr, peer, "server.removed", srv, nil)
	s.security(ctx, "server.removed", store.SeverityWarning, nil, pr, peer, map[string]any{"server": srv.Name, "server_id": srv.ID.String()})
	return nil
}

// Disable keeps a server but shuts its agent out.
func (s *Service) Disable(ctx context.Context, pr *auth.Principal, peer Peer, ref string) (store.Server, error) {
	if err := require(pr, store.ScopeAdmin); err != nil {
		return store.Server{}, err
	}
	srv, err := s.Resolve(ctx, ref)
	if err != nil {
		return store.Server{}, err
	}
	err = s.st.InTx(ctx, func(tx *store.Store) error {
		// The lock a renewal takes: see renew.
		if err := tx.LockServer(ctx, srv.ID); err != nil {
			return err
		}
		if _, err := tx.RevokeServerCertificates(ctx, srv.ID, "server disabled"); err != nil {
			return err
		}
		srv, err = tx.DisableServer(ctx, srv.ID)
		return err
	})
	if err != nil {
		return store.Server{}, err
	}
	s.hub.Cut(srv.ID, ErrRevoked)
	s.announceRevoked(ctx, srv.ID)
	s.activity(ctx, pr, peer, "server.disabled", srv, nil)
	s.security(ctx, "certificate.revoked", store.SeverityWarning, &srv.ID, pr, peer, map[string]any{"reason": "server disabled"})
	return srv, nil
}

// Metrics returns a server's series.
func (s *Service) Metrics(ctx context.Context, pr *auth.Principal, ref string, since, step time.Duration) ([]store.MetricPoint, error) {
	if err := require(pr, store.ScopeRead); err != nil {
		return nil, err
	}
	if since <= 0 {
		since = time.Hour
	}
	if since > 7*24*time.Hour {
		return nil, fmt.Errorf("%w: --since is at most 168h (metrics are kept 7 days)", ErrInvalid)
	}
	if step <= 0 {
		step = max(since/120, time.Second)
	}
	if step < time.Second || since/step > 5000 {
		return nil, fmt.Errorf("%w: --step too small for --since (at most 5000 points, at least 1s)", ErrInvalid)
	}
	srv, err := s.Resolve(ctx, ref)
	if err != nil {
		return nil, err
	}
	now := s.cfg.Now()
	return s.st.MetricsSeries(ctx, srv.ID, now.Add(-since), now, step)
}

// Liveness marks servers offline when their heartbeats stop. Idempotent,
// so every controller may run it.
func (s *Service) Liveness(ctx context.Context) {
	t := time.NewTicker(s.cfg.HeartbeatInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := s.cfg.Now()
		if now.Sub(s.started) < s.cfg.StartGrace {
			continue // agents are still reconnecting to the restarted controller
		}
		cutoff := now.Add(-(3*s.cfg.HeartbeatInterval + s.cfg.Grace))
		var gone []store.Server
		err := s.st.InTx(ctx, func(tx *store.Store) error {
			var err error
			if gone, err = tx.MarkStaleServersOffline(ctx, cutoff); err != nil {
				return err
			}
			for _, srv := range gone {
				s.publishServer(ctx, tx, notify.KindServerOffline, srv)
			}
			return nil
		})
		if err != nil {
			if ctx.Err() == nil {
				s.log.Error("mark stale servers offline", "err", err)
			}
			continue
		}
		for _, srv := range gone {
			s.log.Info("server offline", "server", srv.Name)
		}
	}
}
