package daemon

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"github.com/berthhq/berth/controller/internal/accounts"
	"github.com/berthhq/berth/controller/internal/audit"
	"github.com/berthhq/berth/controller/internal/deploys"
	"github.com/berthhq/berth/controller/internal/domains"
	"github.com/berthhq/berth/controller/internal/fleet"
	"github.com/berthhq/berth/controller/internal/mail"
	"github.com/berthhq/berth/controller/internal/maintenance"
	"github.com/berthhq/berth/controller/internal/notify"
	"github.com/berthhq/berth/controller/internal/store"
	"github.com/berthhq/berth/controller/internal/web"
)

// WebConfig is the web UI's part of `berth serve`.
type WebConfig struct {
	// TLSCert and TLSKey: serve HTTPS with this certificate. Without them
	// the HTTP listener must be on loopback (local use, or behind a TLS
	// proxy on the same host).
	TLSCert, TLSKey string
	// SMTP relays mail (password resets, invitations); no host logs a
	// warning instead of sending.
	SMTP mail.SMTPConfig
	// SessionIdle and SessionMax bound browser sessions (30 min, 12 h).
	SessionIdle, SessionMax time.Duration
	// TrustedProxies may set X-Forwarded-For (CIDRs or addresses).
	TrustedProxies []string
}

// checkHTTP refuses plain HTTP where someone else could listen in.
func (c WebConfig) checkHTTP(addr string) error {
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return errors.New("--tls-cert and --tls-key go together")
	}
	if c.TLSCert != "" {
		return nil
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("--http-addr: %w", err)
	}
	if host == "localhost" {
		return nil
	}
	ip, err := netip.ParseAddr(host)
	if err != nil || !ip.IsLoopback() {
		return fmt.Errorf("--http-addr %s is not a loopback address: give --tls-cert and --tls-key to serve HTTPS, or bind to 127.0.0.1 behind a TLS proxy", addr)
	}
	return nil
}

func (c WebConfig) tlsConfig() (*tls.Config, error) {
	if c.TLSCert == "" {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(c.TLSCert, c.TLSKey)
	if err != nil {
		return nil, fmt.Errorf("web TLS certificate: %w", err)
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}, nil
}

func (c WebConfig) proxies() ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, p := range c.TrustedProxies {
		p = strings.TrimSpace(p)
		if pr, err := netip.ParsePrefix(p); err == nil {
			out = append(out, pr.Masked())
			continue
		}
		ip, err := netip.ParseAddr(p)
		if err != nil {
			return nil, fmt.Errorf("--trusted-proxy %q: not an address or CIDR", p)
		}
		out = append(out, netip.PrefixFrom(ip, ip.BitLen()))
	}
	return out, nil
}

// newWeb builds the accounts service and the web UI on it.
func newWeb(c WebConfig, st *store.Store, fl *fleet.Service, dep *deploys.Service, nt *notify.Service, ds *domains.Service, publicURL string, log *slog.Logger) (*web.Server, *accounts.Service, error) {
	mailer, err := mail.New(c.SMTP, log)
	if err != nil {
		return nil, nil, fmt.Errorf("smtp: %w", err)
	}
	acc, err := accounts.New(st, mailer, accounts.Config{
		PublicURL: publicURL, IdleTimeout: c.SessionIdle, AbsoluteTimeout: c.SessionMax, Logger: log,
	})
	if err != nil {
		return nil, nil, err
	}
	proxies, err := c.proxies()
	if err != nil {
		return nil, nil, err
	}
	u, _ := url.Parse(publicURL)
	ui, err := web.New(web.Deps{Log: log, Store: st, Fleet: fl, Accounts: acc, Audit: audit.New(st), Deploys: dep, Notify: nt, Domains: ds},
		web.Config{Secure: c.TLSCert != "" || (u != nil && u.Scheme == "https"), TrustedProxies: proxies})
	if err != nil {
		return nil, nil, err
	}
	return ui, acc, nil
}

// accountJobs are the accounts service's housekeeping: expired sessions and
// spent reset or invitation links, swept on the leader.
func accountJobs(acc *accounts.Service) []maintenance.Job {
	return []maintenance.Job{
		{Name: "sessions_sweep", Every: time.Hour, Run: func(ctx context.Context, _ *store.Store, _ time.Time) (int64, error) {
			return acc.SweepSessions(ctx)
		}},
		{Name: "reset_links_sweep", Every: 24 * time.Hour, Run: func(ctx context.Context, st *store.Store, now time.Time) (int64, error) {
			// Used links are kept a day, so a second click still gets
			// "already used" rather than "not valid".
			return st.DeleteExpiredPasswordResetTokens(ctx, now.Add(-24*time.Hour))
		}},
	}
}
