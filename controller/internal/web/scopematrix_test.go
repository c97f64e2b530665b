package web_test

import (
	"context"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/berthhq/berth/controller/internal/auth"
	"github.com/berthhq/berth/controller/internal/backups"
	"github.com/berthhq/berth/controller/internal/deploys"
	"github.com/berthhq/berth/controller/internal/domains"
	"github.com/berthhq/berth/controller/internal/store"
)

// The web route matrix: one row per route the UI registers (web.Routes),
// saying what a session needs. The test requests every route with no
// session and as a viewer (read), an operator (up to deploy) and an admin,
// with the same-origin headers a browser sends on a form post, and checks
// the answer: signed out, a page redirects to the login page (GET) or
// answers 401 (POST); below the row's scope, 403; at or above it, anything
// else (the request got past authorisation: 200, 201, 303 elsewhere, 400,
// 404, 409). A route added without a row fails the test.
//
// need: a scope, or routePublic (signing in, static files: nobody is
// refused). path replaces the pattern's wildcards; $MY_TOKEN (a token of
// the signed-in user), $VICTIM (a viewer's user id) and $NO_SUCH_ID are
// filled in. form is the POST body: valid enough that a refused caller is
// refused by the service's check, not by the form's validation.
type routeRow struct {
	need store.Scope
	path string
	form url.Values
}

const routePublic store.Scope = "public"

func form(kv ...string) url.Values {
	v := url.Values{}
	for i := 0; i < len(kv); i += 2 {
		v.Add(kv[i], kv[i+1])
	}
	return v
}

var routeMatrix = map[string]routeRow{
	"GET /assets/":     {routePublic, "/assets/app.css", nil},
	"GET /favicon.ico": {routePublic, "/favicon.ico", nil},
	"GET /{$}":         {store.ScopeRead, "/", nil},

	"GET /login":           {routePublic, "/login", nil},
	"POST /login":          {routePublic, "/login", form("email", "nobody@example.com", "password", "wrong password here")},
	"GET /login/2fa":       {routePublic, "/login/2fa", nil},
	"POST /login/2fa":      {routePublic, "/login/2fa", form("code", "000000")},
	"POST /logout":         {routePublic, "/logout", nil},
	"GET /forgot":          {routePublic, "/forgot", nil},
	"POST /forgot":         {routePublic, "/forgot", form("email", "nobody@example.com")},
	"GET /reset/{token}":   {routePublic, "/reset/not-a-token", nil},
	"POST /reset/{token}":  {routePublic, "/reset/not-a-token", form("password", "x", "password_confirm", "x")},
	"GET /invite/{token}":  {routePublic, "/invite/not-a-token", nil},
	"POST /invite/{token}": {routePublic, "/invite/not-a-token", form("password", "x", "password_confirm", "x")},

	// A blank form shows nothing; its POST is what the service checks.
	"GET /servers":                        {store.ScopeRead, "/servers", nil},
	"GET /servers/new":                    {store.ScopeRead, "/servers/new", nil},
	"POST /servers":                       {store.ScopeWrite, "/servers", form("name", "added-1")},
	"GET /servers/{name}":                 {store.ScopeRead, "/servers/web-1", nil},
	"GET /servers/{name}/metrics.json":    {store.ScopeRead, "/servers/web-1/metrics.json?range=1h", nil},
	"POST /servers/{name}/disable":        {store.ScopeAdmin, "/servers/off-1/disable", form()},
	"POST /servers/{name}/enable":         {store.ScopeAdmin, "/servers/off-1/enable", form()},
	"POST /servers/{name}/remove":         {store.ScopeAdmin, "/servers/gone-1/remove", form("confirm", "gone-1")},
	"GET /events":                         {store.ScopeRead, "/events", nil},
	"GET /settings":                       {store.ScopeRead, "/settings", nil},
	"POST /settings/password":             {store.ScopeRead, "/settings/password", form("current_password", "not the password", "new_password", "another long passphrase 7", "new_password_confirm", "another long passphrase 7")},
	"POST /settings/2fa/begin":            {store.ScopeRead, "/settings/2fa/begin", form()},
	"POST /settings/2fa/confirm":          {store.ScopeRead, "/settings/2fa/confirm", form("code", "000000")},
	"POST /settings/2fa/disable":          {store.ScopeRead, "/settings/2fa/disable", form("password", "x", "code", "000000")},
	"POST /settings/2fa/recovery-codes":   {store.ScopeRead, "/settings/2fa/recovery-codes", form("password", "x", "code", "000000")},
	"POST /settings/sessions/{id}/revoke": {store.ScopeRead, "/settings/sessions/$NO_SUCH_ID/revoke", form()},
	// Every person manages their own tokens in a session (scopes capped by
	// role); through the API that needs admin.
	"GET /tokens":              {store.ScopeRead, "/tokens", nil},
	"POST /tokens":             {store.ScopeRead, "/tokens", form("name", "matrix", "scope", "read")},
	"POST /tokens/{id}/revoke": {store.ScopeRead, "/tokens/$MY_TOKEN/revoke", form()},

	"GET /users":               {store.ScopeAdmin, "/users", nil},
	"POST /users":              {store.ScopeAdmin, "/users", form("email", "new@example.com", "role", "viewer")},
	"POST /users/{id}/disable": {store.ScopeAdmin, "/users/$VICTIM/disable", form()},
	"POST /users/{id}/enable":  {store.ScopeAdmin, "/users/$VICTIM/enable", form()},
	"GET /security":            {store.ScopeAdmin, "/security", nil},
	"GET /activity":            {store.ScopeRead, "/activity", nil},

	// Anything deciding what code runs on a server needs deploy.
	"GET /apps":                       {store.ScopeRead, "/apps", nil},
	"GET /apps/new":                   {store.ScopeRead, "/apps/new", nil},
	"POST /apps":                      {store.ScopeDeploy, "/apps", form("name", "app-new", "server", "web-1", "repo", "https://git.example.com/a.git", "path", "/srv/a", "user", "app")},
	"GET /apps/{app}":                 {store.ScopeRead, "/apps/shop", nil},
	"POST /apps/{app}/env":            {store.ScopeDeploy, "/apps/shop/env", form("scope", "production", "set", "K=v")},
	"POST /apps/{app}/webhook-secret": {store.ScopeDeploy, "/apps/shop/webhook-secret", form()},
	"POST /apps/{app}/deploy":         {store.ScopeDeploy, "/apps/shop/deploy", form("env", "production")},
	"POST /apps/{app}/rollback":       {store.ScopeDeploy, "/apps/shop/rollback", form()},
	// The edit form's POST needs what the changed fields need: write for
	// --keep alone.
	"GET /apps/{app}/edit":    {store.ScopeRead, "/apps/shop/edit", nil},
	"POST /apps/{app}/edit":   {store.ScopeWrite, "/apps/shop/edit", form("keep", "7")},
	"POST /apps/{app}/delete": {store.ScopeDeploy, "/apps/gone-app/delete", form("confirm", "gone-app", "keep_files", "1")},
	// Processes and schedules decide what code runs: deploy. Their logs
	// and runs are reads.
	"POST /apps/{app}/processes":               {store.ScopeDeploy, "/apps/shop/processes", form("form", "process", "name", "worker", "command", "bin/worker")},
	"GET /apps/{app}/processes.json":           {store.ScopeRead, "/apps/shop/processes.json", nil},
	"POST /apps/{app}/processes/control":       {store.ScopeDeploy, "/apps/shop/processes/control", form("action", "restart")},
	"POST /apps/{app}/processes/{name}/remove": {store.ScopeDeploy, "/apps/shop/processes/web/remove", form()},
	"POST /apps/{app}/schedules":               {store.ScopeDeploy, "/apps/shop/schedules", form("form", "schedule", "name", "report", "cron", "@daily", "command", "bin/report")},
	"POST /apps/{app}/schedules/{name}/remove": {store.ScopeDeploy, "/apps/shop/schedules/nightly/remove", form()},
	"GET /apps/{app}/schedules/{name}/runs":    {store.ScopeRead, "/apps/shop/schedules/nightly/runs", nil},
	"GET /apps/{app}/logs":                     {store.ScopeRead, "/apps/shop/logs", nil},
	"GET /apps/{app}/logs/stream":              {store.ScopeRead, "/apps/shop/logs/stream?since=1m", nil},
	"GET /deployments":                         {store.ScopeRead, "/deployments", nil},
	"GET /deployments/{id}":                    {store.ScopeRead, "/deployments/$NO_SUCH_ID", nil},
	"GET /deployments/{id}/log":                {store.ScopeRead, "/deployments/$NO_SUCH_ID/log", nil},
	"POST /deployments/{id}/cancel":            {store.ScopeDeploy, "/deployments/$NO_SUCH_ID/cancel", form()},
	"GET /git-credentials":                     {store.ScopeRead, "/git-credentials", nil},
	"POST /git-credentials":                    {store.ScopeAdmin, "/git-credentials", form("name", "cred-new", "kind", "https", "username", "u", "token", "t")},
	"POST /git-credentials/{name}/delete":      {store.ScopeAdmin, "/git-credentials/cred-rm/delete", form()},

	// Backups: anyone reads them; write tests a destination, runs,
	// verifies and cancels; admins add and remove destinations, restore,
	// download and delete. $BACKUP is a queued backup of shop: restore and
	// delete read it for the typed confirmation before the service's
	// check, so their rows carry the right confirmation.
	"GET /backups":                             {store.ScopeRead, "/backups", nil},
	"POST /backups/destinations":               {store.ScopeAdmin, "/backups/destinations", form("form", "dest-local", "kind", "local", "name", "matrix-dest", "path", "/var/backups/matrix")},
	"POST /backups/destinations/{name}/test":   {store.ScopeWrite, "/backups/destinations/vault/test", form()},
	"POST /backups/destinations/{name}/remove": {store.ScopeAdmin, "/backups/destinations/rm-dest/remove", form()},
	"GET /apps/{app}/backups":                  {store.ScopeRead, "/apps/shop/backups", nil},
	"POST /apps/{app}/backups":                 {store.ScopeWrite, "/apps/shop/backups", form("destination", "vault", "kind", "directory", "source", "/srv/shop/shared")},
	"GET /backups/{id}":                        {store.ScopeRead, "/backups/$BACKUP", nil},
	"GET /backups/{id}/log":                    {store.ScopeRead, "/backups/$NO_SUCH_ID/log", nil},
	"POST /backups/{id}/cancel":                {store.ScopeWrite, "/backups/$NO_SUCH_ID/cancel", form()},
	"POST /backups/{id}/verify":                {store.ScopeWrite, "/backups/$BACKUP/verify", form()},
	"POST /backups/{id}/restore":               {store.ScopeAdmin, "/backups/$BACKUP/restore", form("confirm", "shop")},
	"POST /backups/{id}/download":              {store.ScopeAdmin, "/backups/$BACKUP/download", form()},
	"POST /backups/{id}/delete":                {store.ScopeAdmin, "/backups/$BACKUP/delete", form("confirm", "shop")},
	"GET /backups/{id}/tasks/{task}":           {store.ScopeRead, "/backups/$BACKUP/tasks/$NO_SUCH_ID", nil},
	"GET /backups/{id}/tasks/{task}/log":       {store.ScopeRead, "/backups/$BACKUP/tasks/$NO_SUCH_ID/log", nil},
	"POST /backups/{id}/tasks/{task}/cancel":   {store.ScopeWrite, "/backups/$BACKUP/tasks/$NO_SUCH_ID/cancel", form()},
	// Schedules: admins change them (their retention deletes backups).
	"POST /apps/{app}/backup-schedules":    {store.ScopeAdmin, "/apps/shop/backup-schedules", form("destination", "vault", "kind", "directory", "source", "/srv/shop/shared", "cron", "0 3 * * *", "keep", "7")},
	"POST /backups/schedules/{id}/disable": {store.ScopeAdmin, "/backups/schedules/$NO_SUCH_ID/disable", form()},
	"POST /backups/schedules/{id}/enable":  {store.ScopeAdmin, "/backups/schedules/$NO_SUCH_ID/enable", form()},
	"POST /backups/schedules/{id}/remove":  {store.ScopeAdmin, "/backups/schedules/$NO_SUCH_ID/remove?app=shop", form()},
	// The inbox is always the caller's own: any signed-in person.
	"GET /notifications":            {store.ScopeRead, "/notifications", nil},
	"GET /notifications/stream":     {store.ScopeRead, "/notifications/stream", nil},
	"POST /notifications/{id}/read": {store.ScopeRead, "/notifications/$NO_SUCH_ID/read", form()},
	"POST /notifications/read-all":  {store.ScopeRead, "/notifications/read-all", form()},
	// Channels and rules are the admin's, pages and changes alike.
	"GET /notify/channels":                {store.ScopeAdmin, "/notify/channels", nil},
	"POST /notify/channels":               {store.ScopeAdmin, "/notify/channels", form("form", "email", "name", "matrix-mail", "to", "ops@example.com")},
	"GET /notify/channels/{name}":         {store.ScopeAdmin, "/notify/channels/admins-inbox", nil},
	"POST /notify/channels/{name}/test":   {store.ScopeAdmin, "/notify/channels/admins-inbox/test", form()},
	"POST /notify/channels/{name}/remove": {store.ScopeAdmin, "/notify/channels/nope/remove", form("confirm", "nope")},
	"POST /notify/channels/{name}/update": {store.ScopeAdmin, "/notify/channels/admins-inbox/update", form("form", "rate", "rate_limit_per_hour", "30")},
	"GET /notify/deliveries":              {store.ScopeAdmin, "/notify/deliveries?status=failed", nil},
	"GET /notify/rules":                   {store.ScopeAdmin, "/notify/rules", nil},
	"POST /notify/rules":                  {store.ScopeAdmin, "/notify/rules", form("events", "deployment.*", "channel", "admins-inbox")},
	"POST /notify/rules/{id}/remove":      {store.ScopeAdmin, "/notify/rules/$NO_SUCH_ID/remove", form()},

	// Alert rules: anyone reads them; admins change them.
	"GET /alerts":                {store.ScopeRead, "/alerts", nil},
	"POST /alerts":               {store.ScopeAdmin, "/alerts", form("name", "matrix-cpu", "metric", "cpu", "above", "90", "scope", "all")},
	"POST /alerts/{name}/remove": {store.ScopeAdmin, "/alerts/no-such-alert/remove", form()},
	// The edit form is a read (it shows the rule); saving it is the
	// service's replace, admin only. The rule exists (an install default):
	// editing a missing one is a 404 before any scope check.
	"GET /alerts/{name}/edit":  {store.ScopeRead, "/alerts/memory-above-95/edit", nil},
	"POST /alerts/{name}/edit": {store.ScopeAdmin, "/alerts/memory-above-95/edit", form("metric", "memory", "above", "96", "for", "10m", "scope", "all", "level", "warning")},

	// Domains: read to look, write to change (as DomainService).
	"GET /apps/{app}/domains":      {store.ScopeRead, "/apps/shop/domains", nil},
	"POST /apps/{app}/domains":     {store.ScopeWrite, "/apps/shop/domains", form("form", "domain", "host", "matrix.example.test", "tls", "off")},
	"GET /domains":                 {store.ScopeRead, "/domains", nil},
	"GET /apps/{app}/domains.json": {store.ScopeRead, "/apps/shop/domains.json", nil},
	"POST /domains/{host}/renew":   {store.ScopeWrite, "/domains/renew.example.test/renew", form()},
	"POST /domains/{host}/remove":  {store.ScopeWrite, "/domains/gone.example.test/remove", form()},
}

// status requests path as c and returns the status and Location without
// reading the body, so a live event stream does not hold the test.
func (c *client) status(method, path string, f url.Values) (int, string) {
	c.e.t.Helper()
	var req *http.Request
	if method == http.MethodPost {
		req, _ = http.NewRequest(method, c.e.srv.URL+path, strings.NewReader(f.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		// A browser's same-origin form post, so the cross-origin
		// protection lets it through to the handler.
		req.Header.Set("Origin", c.e.srv.URL)
		req.Header.Set("Sec-Fetch-Site", "same-origin")
	} else {
		req, _ = http.NewRequest(method, c.e.srv.URL+path, nil)
	}
	req.Header.Set("Accept", "text/html")
	resp, err := c.hc.Do(req)
	if err != nil {
		c.e.t.Fatalf("%s %s: %v", method, path, err)
	}
	resp.Body.Close()
	return resp.StatusCode, resp.Header.Get("Location")
}

func TestRouteScopeMatrix(t *testing.T) {
	e := newEnv(t, false)
	ctx := context.Background()
	admin := e.user("admin@example.com", store.RoleAdmin)
	e.user("operator@example.com", store.RoleOperator)
	e.user("viewer@example.com", store.RoleViewer)
	victim := e.user("victim@example.com", store.RoleViewer)
	for _, name := range []string{"web-1", "off-1", "gone-1"} {
		if _, err := e.st.CreateServer(ctx, store.CreateServerParams{Name: name}); err != nil {
			t.Fatal(err)
		}
	}
	pr := &auth.Principal{UserID: admin.ID, Email: admin.Email, Role: store.RoleAdmin, Scopes: []store.Scope{store.ScopeAdmin}}
	if _, err := e.dep.AddGitCredential(ctx, pr, deploys.Peer{}, deploys.AddGitCredentialParams{Name: "cred-rm", Kind: store.GitCredentialHTTPS, Username: "u", Token: "t"}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.dep.CreateApp(ctx, pr, deploys.Peer{}, deploys.CreateAppParams{Server: "web-1", AppSettings: store.AppSettings{
		Name: "shop", RepositoryURL: "https://git.example.com/shop.git", DeployPath: "/srv/shop", RunAsUser: "app"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.dep.CreateApp(ctx, pr, deploys.Peer{}, deploys.CreateAppParams{Server: "web-1", AppSettings: store.AppSettings{
		Name: "gone-app", RepositoryURL: "https://git.example.com/shop.git", DeployPath: "/srv/gone-app", RunAsUser: "app"}}); err != nil {
		t.Fatal(err)
	}
	for _, host := range []string{"renew.example.test", "gone.example.test"} {
		if _, err := e.dom.Add(ctx, pr, deploys.Peer{}, domains.AddParams{App: "shop", Host: host}); err != nil {
			t.Fatal(err)
		}
	}

	for _, name := range []string{"vault", "rm-dest"} {
		if _, err := e.bk.AddDestination(ctx, pr, backups.Peer{}, backups.DestinationSpec{Name: name, Kind: "local", Path: "/var/backups/" + name}); err != nil {
			t.Fatal(err)
		}
	}
	queued, err := e.bk.RunBackup(ctx, pr, backups.Peer{}, backups.RunRequest{App: "shop", Destination: "vault", Kind: "directory", Source: "/srv/shop/shared"})
	if err != nil {
		t.Fatal(err)
	}

	patterns := e.ui.Routes()
	for _, p := range patterns {
		if _, ok := routeMatrix[p]; !ok {
			t.Errorf("route %q has no row in routeMatrix: add one with the scope it needs", p)
		}
	}
	for p := range routeMatrix {
		if !slices.Contains(patterns, p) {
			t.Errorf("routeMatrix row %q names no registered route", p)
		}
	}
	// Signing out ends the session: last.
	slices.SortFunc(patterns, func(a, b string) int {
		return bool2int(a == "POST /logout") - bool2int(b == "POST /logout")
	})

	callers := []struct {
		name  string
		email string
		scope store.Scope
	}{{"no session", "", ""}, {"viewer", "viewer@example.com", store.ScopeRead}, {"operator", "operator@example.com", store.ScopeDeploy}, {"admin", "admin@example.com", store.ScopeAdmin}}
	for _, who := range callers {
		c := e.client()
		myToken := store.NewID()
		if who.email != "" {
			c.login(who.email, adminPassword)
			u, err := e.st.UserByEmail(ctx, who.email)
			if err != nil {
				t.Fatal(err)
			}
			_, hash := auth.NewToken()
			rec, err := e.st.CreateAPIToken(ctx, store.CreateAPITokenParams{UserID: u.ID, Name: "mine", TokenHash: hash, Scopes: []store.Scope{store.ScopeRead}})
			if err != nil {
				t.Fatal(err)
			}
			myToken = rec.ID
		}
		repl := strings.NewReplacer("$MY_TOKEN", myToken.String(), "$VICTIM", victim.ID.String(), "$NO_SUCH_ID", store.NewID().String(), "$BACKUP", queued.ID.String())
		for _, p := range patterns {
			row, ok := routeMatrix[p]
			if !ok {
				continue
			}
			method, _, _ := strings.Cut(p, " ")
			code, loc := c.status(method, repl.Replace(row.path), row.form)
			toLogin := code == http.StatusSeeOther && strings.HasPrefix(loc, "/login")
			got := "allowed"
			switch {
			case code == http.StatusForbidden:
				got = "403"
			case toLogin || code == http.StatusUnauthorized:
				got = "sign in"
			}
			want := "allowed"
			switch {
			case row.need == routePublic:
				if code == http.StatusForbidden {
					t.Errorf("%s (public) as %s: 403", p, who.name)
				}
				continue
			case who.email == "":
				want = "sign in"
			case auth.Rank(who.scope) < auth.Rank(row.need):
				want = "403"
			}
			if got != want {
				t.Errorf("%s (needs %s) as %s: %d %s, want %s", p, row.need, who.name, code, loc, want)
			}
		}
	}
}

func bool2int(b bool) int {
	if b {
		return 1
	}
	return 0
}

// Every POST route refuses a cross-site form post (CSRF) before its
// handler runs, even for a signed-in admin, and the refused posts change
// nothing: the admin's session, the app and its settings are as before.
func TestRouteMatrixCrossOriginPosts(t *testing.T) {
	e := newEnv(t, false)
	ctx := context.Background()
	admin := e.user("admin@example.com", store.RoleAdmin)
	if _, err := e.st.CreateServer(ctx, store.CreateServerParams{Name: "web-1"}); err != nil {
		t.Fatal(err)
	}
	pr := &auth.Principal{UserID: admin.ID, Email: admin.Email, Role: store.RoleAdmin, Scopes: []store.Scope{store.ScopeAdmin}}
	if _, err := e.dep.CreateApp(ctx, pr, deploys.Peer{}, deploys.CreateAppParams{Server: "web-1", AppSettings: store.AppSettings{
		Name: "shop", RepositoryURL: "https://git.example.com/shop.git", DeployPath: "/srv/shop", RunAsUser: "app"}}); err != nil {
		t.Fatal(err)
	}
	c := e.client()
	c.login("admin@example.com", adminPassword)
	repl := strings.NewReplacer("$MY_TOKEN", store.NewID().String(), "$VICTIM", store.NewID().String(), "$NO_SUCH_ID", store.NewID().String(), "$BACKUP", store.NewID().String())
	n := 0
	for p, row := range routeMatrix {
		method, _, _ := strings.Cut(p, " ")
		if method != http.MethodPost {
			continue
		}
		n++
		req, _ := http.NewRequest(method, e.srv.URL+repl.Replace(row.path), strings.NewReader(row.form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Accept", "text/html")
		req.Header.Set("Origin", "https://evil.example")
		req.Header.Set("Sec-Fetch-Site", "cross-site")
		resp, body := c.do(req)
		if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "Cross-origin request refused") {
			t.Errorf("%s cross-site: %d, want 403 refused", p, resp.StatusCode)
		}
	}
	if n < 30 {
		t.Fatalf("only %d POST routes in the matrix", n)
	}
	if resp, _ := c.get("/apps/shop"); resp.StatusCode != http.StatusOK {
		t.Fatalf("after the refused posts: app page %d (session or app gone)", resp.StatusCode)
	}
	av, err := e.dep.GetApp(ctx, pr, "shop")
	if err != nil || av.ReleasesToKeep == 7 || len(av.EnvKeys[store.AppEnvProduction]) != 0 {
		t.Fatalf("a refused post changed the app: %+v %v", av.App, err)
	}
}
