package supervise

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"
)

// upstream is the app's local reverse proxy (see the package doc).
type upstream struct {
	dir      string
	backends atomic.Pointer[[]string]
	next     atomic.Uint64
	tr       *http.Transport
	log      *slog.Logger
}

// RunUpstream is `berth-agent upstream --dir DIR`: it listens on
// 127.0.0.1:port (DIR/upstream.json) and forwards HTTP, WebSocket
// upgrades included, round-robin to DIR/backends.json. SIGHUP re-reads
// the backends and then writes their generation to DIR/applied; SIGTERM
// stops accepting and lets requests in flight finish.
func RunUpstream(dir string) error {
	if !filepath.IsAbs(dir) {
		return fmt.Errorf("--dir %q: must be absolute", dir)
	}
	var cfg upstreamConfig
	if err := readJSON(filepath.Join(dir, upstreamFile), &cfg); err != nil {
		return err
	}
	if cfg.Port == 0 || cfg.Port > 65535 {
		return fmt.Errorf("upstream port %d: out of range", cfg.Port)
	}
	lock, err := lockDir(dir)
	if err != nil {
		return err
	}
	defer lock.Close()
	u := &upstream{dir: dir, log: slog.New(slog.NewTextHandler(os.Stderr, nil))}
	u.tr = &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     90 * time.Second,
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM, syscall.SIGINT)
	signal.Ignore(syscall.SIGPIPE)
	gen, err := u.load()
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(int(cfg.Port))))
	if err != nil {
		return fmt.Errorf("upstream listen: %w", err)
	}
	if err := writePid(dir, os.Getpid()); err != nil {
		return err
	}
	if err := u.applied(gen); err != nil {
		return err
	}
	proxy := &httputil.ReverseProxy{
		Rewrite:       u.rewrite,
		Transport:     retryTransport{u},
		FlushInterval: -1, // stream: server-sent events and chunked bodies pass as they come
		ErrorLog:      slog.NewLogLogger(u.log.Handler(), slog.LevelWarn),
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			status := http.StatusBadGateway
			if errors.Is(err, errNoBackend) {
				status = http.StatusServiceUnavailable
			}
			w.WriteHeader(status)
		},
	}
	srv := &http.Server{Handler: proxy, ReadHeaderTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	for {
		select {
		case <-hup:
			gen, err := u.load()
			if err != nil {
				u.log.Error("reload backends", "err", err)
				continue
			}
			u.tr.CloseIdleConnections()
			if err := u.applied(gen); err != nil {
				u.log.Error("write applied", "err", err)
			}
		case <-term:
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			return srv.Shutdown(ctx)
		case err := <-served:
			return err
		}
	}
}

func (u *upstream) load() (uint64, error) {
	var set backendSet
	if err := readJSON(filepath.Join(u.dir, backendsFile), &set); err != nil {
		if !os.IsNotExist(err) {
			return 0, err
		}
	}
	for _, b := range set.Backends {
		host, port, err := net.SplitHostPort(b)
		if err != nil || host != "127.0.0.1" || port == "" {
			return 0, fmt.Errorf("backend %q: must be 127.0.0.1:PORT", b)
		}
	}
	list := append([]string(nil), set.Backends...)
	u.backends.Store(&list)
	return set.Generation, nil
}

func (u *upstream) applied(gen uint64) error {
	return writeFileAtomic(filepath.Join(u.dir, appliedFile), []byte(strconv.FormatUint(gen, 10)+"\n"), 0o600)
}

var errNoBackend = errors.New("no backend")

func (u *upstream) pick() (string, bool) {
	list := *u.backends.Load()
	if len(list) == 0 {
		return "", false
	}
	return list[int(u.next.Add(1)%uint64(len(list)))], true
}

func (u *upstream) rewrite(pr *httputil.ProxyRequest) {
	host, _ := u.pick()
	pr.Out.URL.Scheme = "http"
	pr.Out.URL.Host = host
	// Only local clients reach the loopback listener (nginx in front of
	// it): keep what they say about the original client, and add ours.
	for _, h := range []string{"X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto"} {
		if v := pr.In.Header.Values(h); len(v) > 0 {
			pr.Out.Header[h] = v
		}
	}
	host0, proto0 := pr.Out.Header.Get("X-Forwarded-Host"), pr.Out.Header.Get("X-Forwarded-Proto")
	pr.SetXForwarded()
	if host0 != "" {
		pr.Out.Header.Set("X-Forwarded-Host", host0)
	}
	if proto0 != "" {
		pr.Out.Header.Set("X-Forwarded-Proto", proto0)
	}
	pr.Out.Host = pr.In.Host
}

// retryTransport sends a request that could not reach its backend (the
// connection was refused: an instance that just stopped) to the others,
// when the request has no body that was already consumed.
type retryTransport struct{ u *upstream }

func (t retryTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.URL.Host == "" {
		return nil, errNoBackend
	}
	resp, err := t.u.tr.RoundTrip(r)
	if err == nil || (r.Body != nil && r.Body != http.NoBody) {
		return resp, err
	}
	tried := map[string]bool{r.URL.Host: true}
	for range len(*t.u.backends.Load()) {
		var opErr *net.OpError
		if !errors.As(err, &opErr) || opErr.Op != "dial" {
			return nil, err
		}
		host, ok := t.u.pick()
		if !ok || tried[host] {
			continue
		}
		tried[host] = true
		r2 := r.Clone(r.Context())
		r2.URL.Host = host
		if resp, err = t.u.tr.RoundTrip(r2); err == nil {
			return resp, nil
		}
	}
	return nil, err
}
