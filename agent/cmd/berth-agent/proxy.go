package main

import (
	"flag"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/berthhq/berth/agent/internal/proxy"
)

// nginxFlags are `berth-agent run`'s flags for the server's nginx, which
// the agent manages for the apps' domains. The defaults fit Debian's
// nginx package: /etc/nginx/nginx.conf includes /etc/nginx/conf.d/*.conf
// inside http {}, and sites listen on 80 and 443.
type nginxFlags struct {
	mode, bin, conf, prefix, sites, state, challenges, listen, errorLog *string
	httpPort, httpsPort                                                 *int
}

func proxyFlags(fs *flag.FlagSet) nginxFlags {
	return nginxFlags{
		mode:       fs.String("nginx", envDefault("BERTH_AGENT_NGINX", "auto"), "manage nginx sites for apps' domains: auto (when nginx and --nginx-conf exist), on or off"),
		bin:        fs.String("nginx-bin", envDefault("BERTH_AGENT_NGINX_BIN", "nginx"), "the nginx binary"),
		conf:       fs.String("nginx-conf", envDefault("BERTH_AGENT_NGINX_CONF", "/etc/nginx/nginx.conf"), "nginx's main configuration; it must include --nginx-sites-dir/*.conf inside http {}"),
		prefix:     fs.String("nginx-prefix", envDefault("BERTH_AGENT_NGINX_PREFIX", ""), "nginx's prefix (-p), if not the compiled-in one"),
		sites:      fs.String("nginx-sites-dir", envDefault("BERTH_AGENT_NGINX_SITES_DIR", "/etc/nginx/conf.d"), "where the agent writes one site file per app"),
		state:      fs.String("proxy-state-dir", envDefault("BERTH_AGENT_PROXY_STATE_DIR", ""), "certificate keys, certificates and applied sites (default DATA_DIR/proxy)"),
		challenges: fs.String("acme-challenge-dir", envDefault("BERTH_AGENT_ACME_CHALLENGE_DIR", "/var/lib/berth-acme-challenges"), "HTTP-01 answers nginx serves at /.well-known/acme-challenge/ (nginx's workers must reach it)"),
		listen:     fs.String("proxy-listen", envDefault("BERTH_AGENT_PROXY_LISTEN", ""), "address the sites listen on (default all)"),
		errorLog:   fs.String("nginx-error-log", envDefault("BERTH_AGENT_NGINX_ERROR_LOG", ""), "error log passed to nginx -e by checks and reloads"),
		httpPort:   fs.Int("http-port", 80, "the sites' plain HTTP port"),
		httpsPort:  fs.Int("https-port", 443, "the sites' HTTPS port"),
	}
}

// manager opens the nginx site manager, or returns nil (domain jobs then
// fail and say why) when nginx is off or, in auto mode, not there.
func (f nginxFlags) manager(dataDir string, log *slog.Logger) *proxy.Manager {
	switch *f.mode {
	case "off":
		return nil
	case "auto":
		if _, err := exec.LookPath(*f.bin); err != nil {
			log.Info("nginx not found: apps' domains are not served by this server", "nginx_bin", *f.bin)
			return nil
		}
		if _, err := os.Stat(*f.conf); err != nil {
			log.Info("nginx configuration not found: apps' domains are not served by this server", "nginx_conf", *f.conf)
			return nil
		}
	case "on":
	default:
		log.Error("--nginx must be auto, on or off; not managing nginx", "nginx", *f.mode)
		return nil
	}
	state := *f.state
	if state == "" {
		abs, err := filepath.Abs(filepath.Join(dataDir, "proxy"))
		if err != nil {
			log.Error("proxy state dir", "err", err)
			return nil
		}
		state = abs
	}
	m, err := proxy.New(proxy.Config{
		NginxBin: *f.bin, NginxConf: *f.conf, NginxPrefix: *f.prefix, SitesDir: *f.sites, StateDir: state,
		HTTPPort: *f.httpPort, HTTPSPort: *f.httpsPort, ListenAddr: *f.listen, ChallengeDir: *f.challenges, ErrorLog: *f.errorLog,
		// The agent's identity key lives in its data directory: no custom
		// certificate path may name it.
		ProtectedDirs: protectedDirs(dataDir),
	})
	if err != nil {
		log.Error("nginx sites are not managed on this server", "err", err)
		return nil
	}
	return m
}

func protectedDirs(dataDir string) []string {
	if dataDir == "" {
		return nil
	}
	if abs, err := filepath.Abs(dataDir); err == nil {
		return []string{abs}
	}
	return []string{dataDir}
}
