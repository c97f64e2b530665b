package web_test

import (
	"context"
	"html"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/berthhq/berth/controller/internal/auth"
	"github.com/berthhq/berth/controller/internal/deploys"
	"github.com/berthhq/berth/controller/internal/store"
)

// The main navigation carries API tokens for everyone and Users and
// Security for admins only.
func TestNavTokensAndUsers(t *testing.T) {
	e := newEnv(t, false)
	e.user("admin@example.com", store.RoleAdmin)
	e.user("viewer@example.com", store.RoleViewer)
	navOf := func(email string) string {
		c := e.client()
		c.login(email, adminPassword)
		_, body := c.get("/apps")
		m := regexp.MustCompile(`(?s)<nav aria-label="Main">.*?</nav>`).FindString(body)
		if m == "" {
			t.Fatalf("%s: no main nav", email)
		}
		return m
	}
	admin, viewer := navOf("admin@example.com"), navOf("viewer@example.com")
	for _, want := range []string{`href="/tokens">API tokens<`, `href="/users">Users<`, `href="/security">Security<`} {
		if !strings.Contains(admin, want) {
			t.Errorf("admin nav lacks %s:\n%s", want, admin)
		}
	}
	if !strings.Contains(viewer, `href="/tokens">API tokens<`) || strings.Contains(viewer, `href="/users"`) || strings.Contains(viewer, `href="/security"`) {
		t.Errorf("viewer nav:\n%s", viewer)
	}
	c := e.client()
	c.login("admin@example.com", adminPassword)
	for p, key := range map[string]string{"/tokens": "API tokens", "/users": "Users"} {
		_, body := c.get(p)
		if !strings.Contains(body, `href="`+p+`" aria-current="page">`+key+`<`) {
			t.Errorf("%s is not marked current in the nav", p)
		}
	}
}

// An agent's activity names its server, linked, with the raw actor in
// the title; a removed server's entries say so.
func TestActivityNamesAgentServer(t *testing.T) {
	e := newEnv(t, false)
	ctx := context.Background()
	e.user("viewer@example.com", store.RoleViewer)
	srv, err := e.st.CreateServer(ctx, store.CreateServerParams{Name: "web-7"})
	if err != nil {
		t.Fatal(err)
	}
	gone := store.NewID()
	for _, actor := range []string{"agent:" + srv.ID.String(), "agent:" + gone.String()} {
		if _, err := e.st.CreateActivity(ctx, store.CreateActivityParams{ActorType: store.ActorAgent, Actor: actor, Action: "deployment.succeeded",
			SubjectType: "app", SubjectName: "shop"}); err != nil {
			t.Fatal(err)
		}
	}
	c := e.client()
	c.login("viewer@example.com", adminPassword)
	_, body := c.get("/activity")
	if want := `<a href="/servers/web-7" title="agent:` + srv.ID.String() + `" data-actor="agent:` + srv.ID.String() + `">web-7</a>`; !strings.Contains(body, want) {
		t.Fatalf("activity lacks %s", want)
	}
	if want := `title="agent:` + gone.String() + `" data-actor="agent:` + gone.String() + `">removed server</span>`; !strings.Contains(body, want) {
		t.Fatalf("activity lacks %s", want)
	}
	if strings.Contains(body, ">agent:") {
		t.Fatal("an agent:<id> actor is shown as text")
	}
}

// Malformed and oversized process and schedule forms get a clear error
// and the page shows the form again with everything typed; the log view
// refuses a malformed query with a message.
func TestProcessAndScheduleFormsKeepInput(t *testing.T) {
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

	const cmd = `bin/server --listen ":$PORT" <script>alert(1)</script>`
	good := func(kv ...string) url.Values {
		f := url.Values{"form": {"process"}, "name": {"web"}, "command": {cmd}, "instances": {"2"}, "port": {"1"},
			"health_path": {"/up"}, "stop_signal": {"TERM"}, "stop_grace": {"30s"}, "memory_max": {"512M"}, "cpu_max": {"100%"}, "restart": {"on-failure"}}
		for i := 0; i+1 < len(kv); i += 2 {
			f.Set(kv[i], kv[i+1])
		}
		return f
	}
	for _, tc := range []struct {
		name string
		form url.Values
		msg  string
	}{
		{"no name", good("name", ""), "Name the process"},
		{"long name", good("name", strings.Repeat("w", 33)), "at most 32 characters"},
		{"no command", good("command", "  "), "Give the command"},
		{"huge command", good("command", strings.Repeat("x", 5000)), "at most 4096 bytes"},
		{"instances word", good("instances", "two"), "Instances is a whole number from 1 to 32"},
		{"instances zero", good("instances", "0"), "Instances is a whole number from 1 to 32"},
		{"instances 33", good("instances", "33"), "Instances is a whole number from 1 to 32"},
		{"grace", good("stop_grace", "forever"), "Stop grace is a duration"},
		{"memory", good("memory_max", "lots"), "memory limit"},
		{"memory zero", good("memory_max", "0M"), "memory limit"},
		{"cpu", good("cpu_max", "-5%"), "CPU limit"},
	} {
		resp, body := c.post("/apps/shop/processes", tc.form)
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, tc.msg) {
			t.Errorf("%s: %d, want 400 saying %q", tc.name, resp.StatusCode, tc.msg)
			continue
		}
		if !strings.Contains(body, `<details open id="process-form-box">`) {
			t.Errorf("%s: the process form is not open again", tc.name)
		}
		// What was typed is back in the form, escaped.
		for _, f := range []string{"name", "instances", "health_path", "stop_grace", "memory_max", "cpu_max"} {
			if v := tc.form.Get(f); v != "" && !strings.Contains(body, `name="`+f+`" `) {
				t.Errorf("%s: no %s field", tc.name, f)
			} else if v != "" && !strings.Contains(body, `value="`+html.EscapeString(v)+`"`) && !strings.Contains(body, `value="`+v+`"`) {
				t.Errorf("%s: %s=%q not kept", tc.name, f, v)
			}
		}
		if tc.name != "no command" && tc.name != "huge command" && !strings.Contains(body, html.EscapeString(cmd)) {
			t.Errorf("%s: the command is not kept (escaped)", tc.name)
		}
		if strings.Contains(body, "<script>alert(1)") {
			t.Fatalf("%s: the command is not escaped", tc.name)
		}
		if !strings.Contains(body, `<option value="on-failure" selected>`) || !strings.Contains(body, `name="port" value="1" checked`) {
			t.Errorf("%s: restart or port choice not kept", tc.name)
		}
		// The schedule form stays blank.
		if !strings.Contains(body, `id="s-name" name="name" required maxlength="63" autocomplete="off" placeholder="nightly-report" value=""`) {
			t.Errorf("%s: the schedule form got the process form's values", tc.name)
		}
	}
	if resp, body := c.post("/apps/shop/processes/control", url.Values{"action": {"explode"}}); resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "start, stop or restart") {
		t.Errorf("control with a bad action: %d", resp.StatusCode)
	}

	sched := url.Values{"form": {"schedule"}, "name": {"report"}, "cron": {""}, "command": {"bin/report --daily"}, "timezone": {"Europe/Berlin"}}
	resp, body := c.post("/apps/shop/schedules", sched)
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "Give the schedule a cron expression") ||
		!strings.Contains(body, `<details open id="schedule-form-box">`) || !strings.Contains(body, `value="report"`) ||
		!strings.Contains(body, "bin/report --daily</textarea>") || !strings.Contains(body, `value="Europe/Berlin"`) {
		t.Errorf("schedule without cron: %d", resp.StatusCode)
	}
	sched.Set("cron", strings.Repeat("* ", 100))
	if resp, body := c.post("/apps/shop/schedules", sched); resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "at most 128 characters") {
		t.Errorf("oversized cron: %d", resp.StatusCode)
	}
	// A form over the size limit is refused as a whole, with the reason.
	if resp, body := c.post("/apps/shop/processes", good("command", strings.Repeat("x", 70<<10))); resp.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(body, "64 KiB") {
		t.Errorf("oversized form: %d", resp.StatusCode)
	}

	for _, q := range []string{"since=forever", "since=-5m", "since=800h", "process=" + strings.Repeat("p", 40)} {
		if resp, body := c.get("/apps/shop/logs?" + q); resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, `id="form-error"`) || strings.Contains(body, "data-stream=") {
			t.Errorf("logs page ?%s: %d", q, resp.StatusCode)
		}
		if resp, _ := c.get("/apps/shop/logs/stream?" + q); resp.StatusCode != http.StatusBadRequest {
			t.Errorf("logs stream ?%s: %d", q, resp.StatusCode)
		}
	}
	resp, body = c.get("/apps/shop/logs?process=web&since=2h")
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `data-stream="/apps/shop/logs/stream?follow=1&amp;process=web&amp;since=2h"`) {
		t.Errorf("logs page: %d\n%s", resp.StatusCode, body)
	}
	if resp, _ := c.get("/apps/nope/logs"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("logs of an unknown app: %d", resp.StatusCode)
	}
	// The app page links to the log view.
	if _, body := c.get("/apps/shop"); !strings.Contains(body, `href="/apps/shop/logs" id="logs-link"`) {
		t.Error("no Logs link on the app page")
	}
}

// "Edit" on a process opens the form with its settings and replace
// ticked; saving it replaces the process.
func TestProcessEditForm(t *testing.T) {
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
	resp, body := c.post("/apps/shop/processes", url.Values{"form": {"process"}, "name": {"web"}, "command": {"bin/server"}, "instances": {"3"},
		"port": {"1"}, "health_path": {"/up"}, "stop_grace": {"45s"}, "memory_max": {"1536M"}, "cpu_max": {"150%"}, "restart": {"on-failure"}})
	if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(resp.Header.Get("Location"), "/apps/shop") {
		t.Fatalf("add process: %d %s", resp.StatusCode, body)
	}
	_, page := c.get("/apps/shop")
	if !strings.Contains(page, `href="/apps/shop/logs?process=web"`) || !strings.Contains(page, `href="/apps/shop?edit=web#process-form-box"`) || strings.Contains(page, `<details open id="process-form-box">`) {
		t.Fatal("app page: no Edit link, or the form open without asking")
	}
	_, page = c.get("/apps/shop?edit=web")
	for _, want := range []string{`<details open id="process-form-box">`, `value="web"`, `bin/server</textarea>`, `value="3"`, `value="/up"`,
		`value="45s"`, `value="1536M"`, `value="150%"`, `<option value="on-failure" selected>`, `name="port" value="1" checked`, `name="replace" value="1" checked`} {
		if !strings.Contains(page, want) {
			t.Errorf("edit form lacks %s", want)
		}
	}
	// Saved as shown, with one change: the process is replaced.
	resp, _ = c.post("/apps/shop/processes", url.Values{"form": {"process"}, "name": {"web"}, "command": {"bin/server --fast"}, "instances": {"3"},
		"port": {"1"}, "health_path": {"/up"}, "stop_grace": {"45s"}, "memory_max": {"1536M"}, "cpu_max": {"150%"}, "restart": {"on-failure"}, "replace": {"1"}})
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("replace: %d", resp.StatusCode)
	}
	if _, page = c.get("/apps/shop"); !strings.Contains(page, "bin/server --fast") || !strings.Contains(page, "memory 1.5 GiB") {
		t.Fatal("the replaced process is not shown")
	}
	// Without replace, the same name is a conflict, the form kept.
	resp, page = c.post("/apps/shop/processes", url.Values{"form": {"process"}, "name": {"web"}, "command": {"bin/other"}})
	if resp.StatusCode != http.StatusConflict || !strings.Contains(page, "bin/other</textarea>") {
		t.Fatalf("add twice: %d", resp.StatusCode)
	}
	if _, page = c.get("/apps/shop?edit=nope"); strings.Contains(page, `<details open id="process-form-box">`) {
		t.Fatal("edit of an unknown process opened the form")
	}

	// A viewer sees the processes, their states and logs, and no control.
	e.user("viewer@example.com", store.RoleViewer)
	vc := e.client()
	vc.login("viewer@example.com", adminPassword)
	_, page = vc.get("/apps/shop")
	if !strings.Contains(page, `data-process="web"`) || !strings.Contains(page, `href="/apps/shop/logs?process=web"`) || !strings.Contains(page, "/apps/shop/processes.json") {
		t.Fatal("viewer: processes or their logs missing")
	}
	for _, hidden := range []string{`id="process-form"`, `id="schedule-form"`, `/processes/control`, `/processes/web/remove`, `?edit=web`} {
		if strings.Contains(page, hidden) {
			t.Errorf("viewer sees %s", hidden)
		}
	}
	resp, body = vc.get("/apps/shop/processes.json")
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `"name":"web"`) || !strings.Contains(body, `"state":"unknown"`) {
		t.Fatalf("processes.json for a viewer: %d %s", resp.StatusCode, body)
	}
	if resp, _ := vc.post("/apps/shop/processes/control", url.Values{"action": {"stop"}}); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("viewer stops processes: %d", resp.StatusCode)
	}
}
