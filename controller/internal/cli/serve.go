package cli

import (
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/berthhq/berth/controller/internal/daemon"
)

func (a *app) serveCmd() *cobra.Command {
	var cfg daemon.Config
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the controller (embedded PostgreSQL unless --database-url is given)",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg.Logger = a.log
			cfg.EncryptionKeys = envEncryptionKeys()
			if v := os.Getenv("BERTH_ACME_EAB_HMAC"); v != "" && cfg.Domains.EABHMAC == "" {
				cfg.Domains.EABHMAC = v
			}
			return daemon.Run(cmd.Context(), cfg)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.DataDir, "data-dir", "/var/lib/berth", "directory for the CA, encryption keys and the embedded database")
	f.StringVar(&cfg.DatabaseURL, "database-url", "", "PostgreSQL URL; empty runs an embedded PostgreSQL in DATA_DIR/postgres")
	f.StringVar(&cfg.HTTPAddr, "http-addr", "127.0.0.1:8080", "address for the web UI and /healthz")
	f.StringVar(&cfg.GRPCAddr, "grpc-addr", "127.0.0.1:7443", "address for the agent and admin gRPC APIs")
	f.DurationVar(&cfg.MetricsInterval, "metrics-interval", 10*time.Second, "how often agents sample metrics (at least 1s)")
	f.DurationVar(&cfg.HeartbeatInterval, "heartbeat-interval", 10*time.Second, "how often agents report in (at least 1s)")
	f.StringVar(&cfg.AdvertiseAddr, "advertise-addr", "", "gRPC address agents dial, for printed enroll commands (default: --grpc-addr)")
	f.DurationVar(&cfg.AgentCertTTL, "agent-cert-ttl", 7*24*time.Hour, "lifetime of agent certificates (renewed with a third left)")
	f.DurationVar(&cfg.StartGrace, "start-grace", 2*time.Minute, "after a start, how long before any server may be marked offline or a deployment failed as agent unreachable (agents reconnecting)")
	f.DurationVar(&cfg.UnreachableGrace, "unreachable-grace", 30*time.Second, "how long past its deadline a deployment whose agent stays away waits before it fails as \"agent unreachable\"")
	f.StringVar(&cfg.UpstreamPorts, "upstream-ports", "10000-19999", "range LOW-HIGH of loopback ports apps' upstreams get on their servers (pick one nothing else on your servers listens in)")
	f.StringVar(&cfg.AgentDist, "agent-dist", defaultAgentDist(), "directory with the agent binaries and install script to serve")
	f.StringVar(&cfg.PublicURL, "public-url", "", "controller HTTP base URL as servers reach it (default http://HTTP_ADDR)")
	f.IntVar(&cfg.EnrollPerMinute, "enroll-rate", 10, "agent enrollments allowed per minute from one address (burst: half of it); raise it to enroll a large fleet from one network address at once")
	f.StringSliceVar(&cfg.Hostnames, "hostname", nil, "extra DNS names or IPs for the controller's certificate (repeatable)")
	f.StringVar(&cfg.Web.TLSCert, "tls-cert", "", "certificate (PEM) to serve the web UI over HTTPS; without it --http-addr must be loopback")
	f.StringVar(&cfg.Web.TLSKey, "tls-key", "", "private key (PEM) for --tls-cert")
	f.StringVar(&cfg.Web.SMTP.Host, "smtp-host", "", "SMTP relay for password resets and invitations (none: mails are logged as dropped)")
	f.IntVar(&cfg.Web.SMTP.Port, "smtp-port", 0, "SMTP port (default by --smtp-tls: 587 starttls, 465 tls, 25 none)")
	f.StringVar(&cfg.Web.SMTP.Username, "smtp-username", "", "SMTP username")
	f.StringVar(&cfg.Web.SMTP.Password, "smtp-password", "", "SMTP password (prefer BERTH_SMTP_PASSWORD: flags show in ps)")
	f.StringVar(&cfg.Web.SMTP.From, "smtp-from", "", "sender address, e.g. 'Berth <berth@example.com>'")
	f.StringVar((*string)(&cfg.Web.SMTP.TLS), "smtp-tls", "starttls", "SMTP transport security: starttls, tls or none")
	f.DurationVar(&cfg.Web.SessionIdle, "session-idle-timeout", 30*time.Minute, "sign a web session out after this long without use")
	f.DurationVar(&cfg.Web.SessionMax, "session-max-age", 12*time.Hour, "sign a web session out this long after login")
	f.StringSliceVar(&cfg.Web.TrustedProxies, "trusted-proxy", nil, "address or CIDR of a reverse proxy whose X-Forwarded-For is trusted (repeatable)")
	f.BoolVar(&cfg.AllowPrivateWebhookTargets, "allow-private-webhook-targets", false, "let notification channels (webhooks, Slack, Discord) call private, loopback and link-local addresses; off, such targets are refused (SSRF protection)")
	f.DurationVar(&cfg.NotifyLease, "notify-lease", 2*time.Minute, "how long a notification being sent is left to its controller (sends end before it); after a crash, how long until another controller sends it again (at least 1s)")
	f.StringVar(&cfg.Domains.ACMEDirectory, "acme-directory", "https://acme-v02.api.letsencrypt.org/directory", "ACME directory certificates come from (a domain may name its own: berth domain add --acme-directory)")
	f.StringVar(&cfg.Domains.ACMEEmail, "acme-email", "", "contact address of the ACME account (expiry notices from the CA)")
	f.StringVar(&cfg.Domains.EABKeyID, "acme-eab-kid", "", "External Account Binding key id, for CAs that require one (ZeroSSL, ...)")
	f.StringVar(&cfg.Domains.EABHMAC, "acme-eab-hmac", "", "External Account Binding HMAC key, base64url (prefer BERTH_ACME_EAB_HMAC: flags show in ps)")
	f.StringVar(&cfg.Domains.ACMECAFile, "acme-ca-file", "", "PEM roots to trust, besides the system's, for HTTPS to ACME directories (a private CA)")
	f.StringSliceVar(&cfg.Domains.DNSResolvers, "acme-dns-resolver", nil, "HOST:PORT of a DNS resolver DNS-01 checks ask (repeatable; default the system's)")
	f.BoolVar(&cfg.Domains.DNSSkipPropagationCheck, "acme-dns-skip-propagation-check", false, "tell the CA to look at a DNS-01 record as soon as the provider accepted it")
	f.BoolVar(&cfg.Domains.AllowDNSExec, "acme-allow-dns-exec", false, "allow the 'exec' DNS provider, which runs a program on this controller")
	f.DurationVar(&cfg.Domains.Tick, "acme-interval", 10*time.Second, "how often the certificate loop looks for due issuances and renewals")
	f.DurationVar(&cfg.Domains.RetryBase, "acme-retry", time.Minute, "wait after a failed certificate attempt, doubled per failure in a row (up to 6h)")
	f.DurationVar(&cfg.Domains.ARIPollMin, "acme-ari-poll-min", time.Hour, "ask a CA for a certificate's renewal window (ARI) again no sooner than this, whatever its Retry-After")
	f.DurationVar(&cfg.Domains.ARIPollMax, "acme-ari-poll-max", 24*time.Hour, "ask a CA for a certificate's renewal window (ARI) again at least this often")
	return cmd
}

// defaultAgentDist is agent-dist beside the berth binary, where `make build`
// puts it.
func defaultAgentDist() string {
	exe, err := os.Executable()
	if err != nil {
		return "agent-dist"
	}
	return filepath.Join(filepath.Dir(exe), "agent-dist")
}
