// Package daemon runs `berth serve`: the embedded or external PostgreSQL,
// migrations, the HTTP and gRPC listeners and the background maintenance,
// started in that order and stopped in reverse.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"

	"github.com/berthhq/berth/controller/internal/audit"
	"github.com/berthhq/berth/controller/internal/backups"
	"github.com/berthhq/berth/controller/internal/ca"
	"github.com/berthhq/berth/controller/internal/deploys"
	"github.com/berthhq/berth/controller/internal/domains"
	"github.com/berthhq/berth/controller/internal/fleet"
	"github.com/berthhq/berth/controller/internal/grpcapi"
	"github.com/berthhq/berth/controller/internal/httpapi"
	"github.com/berthhq/berth/controller/internal/maintenance"
	"github.com/berthhq/berth/controller/internal/migrate"
	"github.com/berthhq/berth/controller/internal/notify"
	"github.com/berthhq/berth/controller/internal/secrets"
	"github.com/berthhq/berth/controller/internal/store"
)

// Config is everything `berth serve` is told.
type Config struct {
	DataDir     string
	DatabaseURL string
	HTTPAddr    string
	GRPCAddr    string
	// EncryptionKeys is BERTH_ENCRYPTION_KEYS; empty means the key file in
	// the data dir (created on first start).
	EncryptionKeys string
	Logger         *slog.Logger
	// MetricsInterval is how often agents sample (1s at least).
	MetricsInterval time.Duration
	// HeartbeatInterval is how often agents report in.
	HeartbeatInterval time.Duration
	// AdvertiseAddr is the gRPC address agents dial, printed in enroll
	// commands; default the gRPC listen address.
	AdvertiseAddr string
	// AgentCertTTL is the lifetime of agents' client certificates.
	AgentCertTTL time.Duration
	// StartGrace is how long after start no server is marked offline.
	StartGrace time.Duration
	// UnreachableGrace is how long past its deadline a deployment whose
	// agent stays away waits before it is failed as "agent unreachable"
	// (0: 30s).
	UnreachableGrace time.Duration
	// UpstreamPorts is the range apps' local upstreams get their port from,
	// "LOW-HIGH" (empty: 10000-19999).
	UpstreamPorts string
	// AgentDist is the directory with the agent binaries and install script.
	AgentDist string
	// PublicURL is the controller's HTTP base as servers reach it, for the
	// install one-liner; default http://HTTP_ADDR.
	PublicURL string
	// EnrollPerMinute limits enrollment attempts per address (0: 10).
	EnrollPerMinute int
	// Hostnames go into the serving certificate besides the fixed name.
	Hostnames []string
	// Web is the web UI's configuration.
	Web WebConfig
	// AllowPrivateWebhookTargets lets notification channels call private,
	// loopback and link-local addresses (off: SSRF protection).
	AllowPrivateWebhookTargets bool
	// NotifyLease is how long a notification being sent is left alone by
	// other controllers, and so how soon after a crash it is sent again
	// (0: the notify package's default).
	NotifyLease time.Duration
	// Domains configures ACME and the certificate loop.
	Domains domains.Config
	// Ready, when set, is called once every listener is up.
	Ready func(httpAddr, grpcAddr net.Addr)
}

func (c *Config) checkAndSetDefaults() error {
	if c.DataDir == "" {
		return errors.New("--data-dir is required")
	}
	abs, err := filepath.Abs(c.DataDir)
	if err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	c.DataDir = abs
	if c.HTTPAddr == "" {
		c.HTTPAddr = "127.0.0.1:8080"
	}
	if c.GRPCAddr == "" {
		c.GRPCAddr = "127.0.0.1:7443"
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if err := c.Web.checkHTTP(c.HTTPAddr); err != nil {
		return err
	}
	if c.MetricsInterval != 0 && c.MetricsInterval < time.Second {
		return errors.New("--metrics-interval must be at least 1s")
	}
	if c.UnreachableGrace < 0 {
		return errors.New("--unreachable-grace must not be negative")
	}
	if c.NotifyLease != 0 && c.NotifyLease < time.Second {
		return errors.New("--notify-lease must be at least 1s")
	}
	if c.UpstreamPorts != "" {
		if _, _, err := deploys.ParsePortRange(c.UpstreamPorts); err != nil {
			return fmt.Errorf("--upstream-ports: %w", err)
		}
	}
	if c.HeartbeatInterval != 0 && c.HeartbeatInterval < time.Second {
		return errors.New("--heartbeat-interval must be at least 1s")
	}
	if c.EnrollPerMinute < 0 {
		return errors.New("--enroll-rate must be at least 1")
	}
	return nil
}

// KeyFile is where the encryption keyring lives in the data dir.
func KeyFile(dataDir string) string { return filepath.Join(dataDir, "encryption.keys") }

// Run serves until ctx is canceled, then shuts down cleanly.
func Run(ctx context.Context, cfg Config) error {
	if err := cfg.checkAndSetDefaults(); err != nil {
		return err
	}
	log := cfg.Logger
	if err := EnsureDataDir(cfg.DataDir); err != nil {
		return err
	}
	unlock, err := lockDataDir(cfg.DataDir)
	if err != nil {
		return err
	}
	defer unlock()

	// Listen before starting PostgreSQL so a taken port fails fast.
	httpLn, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("http listen: %w", err)
	}
	defer httpLn.Close()
	grpcLn, err := net.Listen("tcp", cfg.GRPCAddr)
	if err != nil {
		return fmt.Errorf("grpc listen: %w", err)
	}
	defer grpcLn.Close()

	database, err := OpenDatabase(ctx, cfg.DataDir, cfg.DatabaseURL, false, log)
	if err != nil {
		return err
	}
	defer func() {
		stopCtx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := database.Close(stopCtx); err != nil {
			log.Error("stop embedded PostgreSQL", "err", err)
		}
	}()

	st, err := migrate.UpDSN(ctx, database.DSN, log)
	if err != nil {
		return err
	}
	log.Info("schema up to date", "version", st.Version)

	pool, err := newPool(ctx, database.DSN)
	if err != nil {
		return err
	}
	defer pool.Close()

	// Keys load after the database answers, so a bad --database-url fails
	// with one line and no key file is created for a controller that never ran.
	keys, created, err := secrets.Load(cfg.EncryptionKeys, KeyFile(cfg.DataDir))
	if err != nil {
		return fmt.Errorf("encryption keys: %w", err)
	}
	if created {
		log.Warn("generated a new encryption key: back up this file with your database backups", "path", KeyFile(cfg.DataDir))
	}
	log.Info("encryption keys loaded", "keys", keys)
	keyPath := KeyFile(cfg.DataDir)
	if cfg.EncryptionKeys != "" {
		keyPath = "" // from the environment: nothing on disk to reload
	}
	keySource := secrets.NewSource(keys, keyPath)

	db := store.New(pool, keySource)

	// The CA lives in the data dir; its certificate (public part only) is
	// DATA_DIR/ca.crt for CLI clients.
	authority, _, err := ca.LoadOrCreate(cfg.DataDir, ca.Options{Hostnames: cfg.Hostnames})
	if err != nil {
		return fmt.Errorf("certificate authority: %w", err)
	}
	certs, err := authority.ServerCertificateSource(nil)
	if err != nil {
		return fmt.Errorf("serving certificate: %w", err)
	}
	webTLS, err := cfg.Web.tlsConfig()
	if err != nil {
		return err
	}
	publicURL := cfg.PublicURL
	if publicURL == "" {
		publicURL = "http://" + httpLn.Addr().String()
		if webTLS != nil {
			publicURL = "https://" + httpLn.Addr().String()
		}
	}
	dist, err := httpapi.NewDist(cfg.AgentDist, publicURL)
	if err != nil {
		return err
	}
	advertise := cfg.AdvertiseAddr
	if advertise == "" {
		advertise = grpcLn.Addr().String()
	}
	fleetSvc := fleet.New(db, authority, log, fleet.Config{
		HeartbeatInterval: cfg.HeartbeatInterval, MetricsInterval: cfg.MetricsInterval, StartGrace: cfg.StartGrace, AgentCertTTL: cfg.AgentCertTTL,
		ControllerAddr: advertise, InstallURL: publicURL, AgentSHA256: dist.AgentSHA256(), EnrollPerMinute: cfg.EnrollPerMinute,
	})

	deploySvc := deploys.New(db, fleetSvc, log, deploys.Config{StartGrace: cfg.StartGrace, UnreachableGrace: cfg.UnreachableGrace, UpstreamPorts: cfg.UpstreamPorts})
	// Backups take the agents' job events first and hand the deploys
	// service those of its jobs.
	backupSvc := backups.New(db, fleetSvc, deploySvc, log, backups.Config{StartGrace: cfg.StartGrace, UnreachableGrace: cfg.UnreachableGrace})
	deploySvc.OnAppChange(backupSvc.AppChanged)
	notifySvc, err := newNotify(ctx, cfg, db, publicURL, log)
	if err != nil {
		return err
	}
	alertEng, alertSvc, err := newAlerts(ctx, cfg, db, fleetSvc, log)
	if err != nil {
		return err
	}
	domainSvc, err := domains.New(db, deploySvc, log, cfg.Domains)
	if err != nil {
		return err
	}
	ui, accountsSvc, err := newWeb(cfg.Web, db, fleetSvc, deploySvc, notifySvc, domainSvc, publicURL, log)
	if err != nil {
		return err
	}
	ui.SetAlerts(alertSvc)
	ui.SetBackups(backupSvc)
	defer accountsSvc.Wait()

	var wg sync.WaitGroup
	bgCtx, cancelBG := context.WithCancel(ctx)
	defer func() { cancelBG(); wg.Wait() }()
	wg.Add(1)
	go func() {
		defer wg.Done()
		maintenance.New(db, log).WithJobs(append(accountJobs(accountsSvc), notify.RetentionJob())...).Run(bgCtx)
	}()
	wg.Add(1)
	go func() {
		defer wg.Done()
		// Delivery workers: outbox rows are claimed with SKIP LOCKED and a
		// lease, so every controller sharing the database delivers.
		notifySvc.Run(bgCtx)
	}()
	wg.Add(1)
	go func() {
		defer wg.Done()
		// Transitions, reloads on NOTIFY and offline checks: conditional
		// writes, so every controller sharing the database runs it.
		alertEng.Run(bgCtx, pool)
	}()
	wg.Add(3)
	go func() {
		defer wg.Done()
		fleetSvc.Liveness(bgCtx)
	}()
	go func() {
		defer wg.Done()
		fleetSvc.FlushHeartbeats(bgCtx)
	}()
	go func() {
		defer wg.Done()
		fleetSvc.ListenRevocations(bgCtx, pool)
	}()
	wg.Add(1)
	go func() {
		defer wg.Done()
		// Dispatch, deadlines, and the schedule loop (due scheduled
		// commands are claimed with SKIP LOCKED, so every controller
		// sharing the database may run it).
		deploySvc.Run(bgCtx, pool)
	}()
	wg.Add(1)
	go func() {
		defer wg.Done()
		backupSvc.Run(bgCtx, pool)
	}()

	wg.Add(1)
	go func() {
		defer wg.Done()
		// Certificates: due domains are claimed with SKIP LOCKED and a
		// lease, so every controller sharing the database may run it.
		domainSvc.Run(bgCtx)
	}()
	wg.Add(1)
	go func() {
		defer wg.Done()
		ui.Run(bgCtx)
	}()

	mux := http.NewServeMux()
	httpapi.Register(mux, httpapi.Deps{DB: pool, SchemaVersion: st.Version})
	dist.Register(mux)
	mux.Handle("POST /hooks/apps/{app}/{provider}", deploySvc.WebhookHandler())
	ui.Register(mux)
	httpSrv := &http.Server{
		Handler:           ui.Wrap(mux),
		TLSConfig:         webTLS,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       time.Minute,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	deps := grpcapi.Deps{Store: db, CA: authority, Fleet: fleetSvc, Accounts: accountsSvc, Audit: audit.New(db), Deploys: deploySvc, Notify: notifySvc, Alerts: alertSvc, Backups: backupSvc, Domains: domainSvc, SchemaVersion: st.Version, Log: log}
	authn := grpcapi.NewAuthenticator(deps)
	grpcSrv := grpc.NewServer(
		// Handshake deadlines (ClientHello, slot queue, the rest) and the
		// per-address cap are AdmitHandshakes'; refused handshakes are
		// recorded within the agent port's refusal budget.
		grpc.Creds(grpcapi.AdmitHandshakes(authority.ServerTLSConfig(certs.GetCertificate),
			grpcapi.AdmitOptions{Slots: handshakeSlots, Refused: authn.HandshakeRefused})),
		// As long as agents wait for their handshake (agent client's
		// MinConnectTimeout); AdmitHandshakes sets shorter deadlines for
		// each step within it (grpc's default is two minutes).
		grpc.ConnectionTimeout(time.Minute),
		grpc.ChainUnaryInterceptor(recovery.UnaryServerInterceptor(), authn.Unary),
		grpc.ChainStreamInterceptor(recovery.StreamServerInterceptor(), authn.Stream),
		grpc.MaxRecvMsgSize(4<<20),
		// Thousands of mostly idle agent connections: a write buffer only
		// while writing (pooled), and a read buffer of one TLS record
		// (tls.Conn hands over at most a record per read anyway), not
		// 32 KB of each held for the life of every connection.
		grpc.SharedWriteBuffer(true),
		grpc.ReadBufferSize(16<<10),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
	)
	grpcapi.Register(grpcSrv, deps)

	errc := make(chan error, 2)
	go func() {
		if webTLS != nil {
			errc <- ignoreClosed(httpSrv.ServeTLS(httpLn, "", ""))
			return
		}
		errc <- ignoreClosed(httpSrv.Serve(httpLn))
	}()
	go func() { errc <- grpcSrv.Serve(grpcLn) }()
	log.Info("berth controller listening", "http", httpLn.Addr().String(), "grpc", grpcLn.Addr().String(), "data_dir", cfg.DataDir)
	if cfg.Ready != nil {
		cfg.Ready(httpLn.Addr(), grpcLn.Addr())
	}

	var serveErr error
	select {
	case <-ctx.Done():
		log.Info("shutting down")
	case serveErr = <-errc:
		log.Error("listener failed", "err", serveErr)
	}
	shutCtx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	_ = httpSrv.Shutdown(shutCtx)
	stopped := make(chan struct{})
	go func() { grpcSrv.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-shutCtx.Done():
		grpcSrv.Stop()
	}
	return serveErr
}

// handshakeSlots is how many TLS handshakes of the gRPC listener run at
// once (see grpcapi.AdmitHandshakes). Far above the cores: a slot is held
// across the round trips to the client too, and a busy client (one
// process simulating 10,000 agents in scripts/fleet-bench.sh) answers
// slowly; 64 drained that fleet no faster. Bounded all the same, and high
// enough that a few stalled clients cannot block the rest for long.
const handshakeSlots = 512

// defaultPoolConns is the controller's pool size unless the database URL
// sets pool_max_conns. Metrics are group-committed by a few workers, but a
// fleet reconnecting at once (a controller restart) needs a certificate
// check and a hello update per agent beside them; pgxpool's own default (4
// on a small machine, one held by LISTEN) made those wait past the agents'
// handshake deadline (scripts/fleet-bench.sh). Well inside PostgreSQL's
// default of 100 connections.
const defaultPoolConns = 32

func newPool(ctx context.Context, dsn string) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("database url: %w", err)
	}
	if !strings.Contains(dsn, "pool_max_conns") {
		cfg.MaxConns = defaultPoolConns
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("database pool: %w", err)
	}
	pingCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := pool.Ping(pingCtx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("connect to database: %w", err)
	}
	return pool, nil
}

func ignoreClosed(err error) error {
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}
