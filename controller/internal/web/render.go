package web

import (
	"bytes"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"net/url"
	"path"
	"strings"
	"time"
	"unicode"

	"github.com/berthhq/berth/controller/internal/accounts"
	"github.com/berthhq/berth/controller/internal/auth"
	"github.com/berthhq/berth/controller/internal/store"
)

// viewer is the signed-in person behind a request. Principal (the same
// principal Actor carries) is what every service call gets; the services
// make every authorisation decision.
type viewer struct {
	UserID    store.ID
	Email     string
	Name      string
	Role      store.UserRole
	SessionID store.ID
	TwoFactor bool
	Principal *auth.Principal
	Actor     accounts.Actor
}

// IsAdmin, CanWrite and CanDeploy only decide what a page shows (a link,
// a button). They protect nothing: the service behind the action checks
// the same principal again.
func (v *viewer) IsAdmin() bool { return v != nil && v.Principal.Allows(store.ScopeAdmin) }

// CanWrite: the harmless settings (servers, labels).
func (v *viewer) CanWrite() bool { return v != nil && v.Principal.Allows(store.ScopeWrite) }

// CanDeploy: anything that decides what code runs on a server.
func (v *viewer) CanDeploy() bool { return v != nil && v.Principal.Allows(store.ScopeDeploy) }

// view is what every template gets.
type view struct {
	Title  string
	Nav    string
	User   *viewer
	Flash  string
	Error  string
	Status int
	Data   any
	Form   url.Values
	// Unread is the bell's count, filled in by render for a signed-in page.
	Unread int64
}

// Nav items for the whole product, in order. Admin items show only to
// admins (the pages refuse others anyway).
type navItem struct {
	Key, Path, Label string
	Admin            bool
}

var navItems = []navItem{
	{Key: "servers", Path: "/servers", Label: "Servers"},
	{Key: "apps", Path: "/apps", Label: "Apps"},
	{Key: "domains", Path: "/domains", Label: "Domains"},
	{Key: "deployments", Path: "/deployments", Label: "Deployments"},
	{Key: "backups", Path: "/backups", Label: "Backups"},
	{Key: "notifications", Path: "/notifications", Label: "Notifications"},
	{Key: "channels", Path: "/notify/channels", Label: "Channels", Admin: true},
	{Key: "rules", Path: "/notify/rules", Label: "Notify rules", Admin: true},
	{Key: "alerts", Path: "/alerts", Label: "Alerts"},
	{Key: "activity", Path: "/activity", Label: "Activity"},
	{Key: "security", Path: "/security", Label: "Security", Admin: true},
	{Key: "tokens", Path: "/tokens", Label: "API tokens"},
	{Key: "users", Path: "/users", Label: "Users", Admin: true},
	{Key: "settings", Path: "/settings", Label: "Settings"},
}

// navFor is the navigation a viewer sees.
func navFor(v *viewer) []navItem {
	out := make([]navItem, 0, len(navItems))
	for _, it := range navItems {
		if it.Admin && !v.IsAdmin() {
			continue
		}
		out = append(out, it)
	}
	return out
}

type pages struct{ byName map[string]*template.Template }

var funcs = template.FuncMap{
	"nav": navFor,
	"ago": func(t any) string {
		var tt time.Time
		switch v := t.(type) {
		case time.Time:
			tt = v
		case *time.Time:
			if v == nil {
				return "never"
			}
			tt = *v
		default:
			return ""
		}
		return humanAgo(time.Since(tt))
	},
	"when": func(t any) string {
		switch v := t.(type) {
		case time.Time:
			return v.UTC().Format("2006-01-02 15:04:05 UTC")
		case *time.Time:
			if v == nil {
				return "—"
			}
			return v.UTC().Format("2006-01-02 15:04:05 UTC")
		}
		return ""
	},
	"iso": func(t time.Time) string { return t.UTC().Format(time.RFC3339) },
	"isoPtr": func(t *time.Time) string {
		if t == nil {
			return ""
		}
		return t.UTC().Format(time.RFC3339)
	},
	"list":  func(v ...string) []string { return v },
	"bytes": humanBytes,
	"join":  strings.Join,
	"deref": func(s *string) string {
		if s == nil {
			return ""
		}
		return *s
	},
	"str":       func(v any) string { return fmt.Sprint(v) },
	"formValue": formValue,
	"jobTitle":  jobTitle,
	"procCount": processCounts,
	"uptime":    uptime,
	"dur":       func(d time.Duration) string { return d.String() },
}

func parsePages() (*pages, error) {
	names, err := fs.Glob(templatesFS, "templates/*.html")
	if err != nil {
		return nil, err
	}
	p := &pages{byName: map[string]*template.Template{}}
	for _, n := range names {
		base := path.Base(n)
		if base == "layout.html" {
			continue
		}
		t, err := template.New(base).Funcs(funcs).ParseFS(templatesFS, "templates/layout.html", n)
		if err != nil {
			return nil, fmt.Errorf("template %s: %w", base, err)
		}
		p.byName[strings.TrimSuffix(base, ".html")] = t
	}
	return p, nil
}

// render writes a page. It renders into a buffer first so a template error
// becomes a clean error page instead of half a page.
func (s *Server) render(w http.ResponseWriter, r *http.Request, name string, v view) {
	t, ok := s.pages.byName[name]
	if !ok {
		panic("web: no template " + name)
	}
	if v.Flash == "" {
		v.Flash = s.takeFlash(w, r)
	}
	if v.User != nil {
		v.Unread = s.unreadCount(r, v.User)
	}
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, "layout", v); err != nil {
		s.d.Log.Error("render page", "page", name, "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	// Pages show private data: never cache them, anywhere.
	w.Header().Set("Cache-Control", "no-store")
	if v.Status != 0 {
		w.WriteHeader(v.Status)
	}
	_, _ = buf.WriteTo(w)
}

// errorPage answers with a page for people and a line for scripts.
func (s *Server) errorPage(w http.ResponseWriter, r *http.Request, status int, title, detail string) {
	if !wantsHTML(r) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(status)
		_, _ = fmt.Fprintf(w, "%s: %s\n", title, detail)
		return
	}
	s.render(w, r, "error", view{Title: title, Status: status, Error: detail, User: viewerFrom(r)})
}

func wantsHTML(r *http.Request) bool {
	a := r.Header.Get("Accept")
	return a == "" || strings.Contains(a, "text/html") || strings.Contains(a, "*/*")
}

const flashCookie = "berth_flash"

// flash carries a one-line confirmation across a redirect (post, redirect,
// get). It holds no secrets: those are rendered in the response itself.
func (s *Server) flash(w http.ResponseWriter, msg string) {
	http.SetCookie(w, &http.Cookie{Name: flashCookie, Value: url.QueryEscape(msg), Path: "/", HttpOnly: true,
		Secure: s.cfg.Secure, SameSite: http.SameSiteLaxMode, MaxAge: 60})
}

func (s *Server) takeFlash(w http.ResponseWriter, r *http.Request) string {
	c, err := r.Cookie(flashCookie)
	if err != nil {
		return ""
	}
	http.SetCookie(w, &http.Cookie{Name: flashCookie, Path: "/", MaxAge: -1, HttpOnly: true, Secure: s.cfg.Secure, SameSite: http.SameSiteLaxMode})
	msg, err := url.QueryUnescape(c.Value)
	if err != nil || len(msg) > 300 {
		return ""
	}
	return msg
}

func (s *Server) redirect(w http.ResponseWriter, r *http.Request, to, flash string) {
	if flash != "" {
		s.flash(w, flash)
	}
	http.Redirect(w, r, to, http.StatusSeeOther)
}

// safeNext keeps post-login redirects on this site: it returns next only
// when it is a path on this host however a browser reads it, else "/".
//
// A browser does not read a Location value as written. The URL standard
// drops ASCII tab and newline anywhere, trims leading and trailing C0
// controls and spaces, and reads a backslash as a slash in http(s) URLs, so
// "/\t/evil.example" and "/\\evil.example" both become "//evil.example", a
// host. Rather than list such tricks, refuse every character a browser
// might drop or rewrite (controls, DEL, backslash, whitespace), then parse
// what is left and accept only a rooted path with no scheme, user or host.
// What is returned is re-serialised from the parse, so it is the URL that
// was checked.
func safeNext(next string) string {
	if next == "" || len(next) > 2048 || !strings.HasPrefix(next, "/") {
		return "/"
	}
	for _, r := range next {
		if r <= 0x20 || r == 0x7f || r == '\\' || unicode.IsSpace(r) || !unicode.IsPrint(r) {
			return "/"
		}
	}
	u, err := url.Parse(next)
	if err != nil || u.Scheme != "" || u.User != nil || u.Host != "" || u.Opaque != "" ||
		!strings.HasPrefix(u.Path, "/") || strings.HasPrefix(u.Path, "//") {
		return "/"
	}
	out := u.EscapedPath()
	if strings.HasPrefix(out, "//") || !strings.HasPrefix(out, "/") {
		return "/"
	}
	if u.RawQuery != "" {
		out += "?" + u.RawQuery
	}
	if u.Fragment != "" {
		out += "#" + u.EscapedFragment()
	}
	return out
}

func humanAgo(d time.Duration) string {
	switch {
	case d < 0:
		return "just now"
	case d < 5*time.Second:
		return "just now"
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d.Hours()))
	}
	return fmt.Sprintf("%dd ago", int(d.Hours()/24))
}

func humanBytes(v any) string {
	var f float64
	switch x := v.(type) {
	case float64:
		f = x
	case *float64:
		if x == nil {
			return "—"
		}
		f = *x
	case int64:
		f = float64(x)
	case uint64:
		f = float64(x)
	default:
		return fmt.Sprint(v)
	}
	units := []string{"B", "KiB", "MiB", "GiB", "TiB", "PiB"}
	i := 0
	for f >= 1024 && i < len(units)-1 {
		f /= 1024
		i++
	}
	if i == 0 {
		return fmt.Sprintf("%.0f %s", f, units[i])
	}
	return fmt.Sprintf("%.1f %s", f, units[i])
}
