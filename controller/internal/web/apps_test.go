package web_test

import (
	"bufio"
	"context"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/berthhq/berth/controller/internal/store"
)

func TestAppsCredentialsAndDeploymentPages(t *testing.T) {
	e := newEnv(t, false)
	e.user("admin@example.com", store.RoleAdmin)
	c := e.client()
	c.login("admin@example.com", adminPassword)
	if resp, body := c.get("/apps"); resp.StatusCode != http.StatusOK || !strings.Contains(body, "No apps yet") {
		t.Fatalf("empty apps: %d", resp.StatusCode)
	}
	c.post("/servers", url.Values{"name": {"web-1"}})

	// A generated deploy key: its public half is shown, never the private.
	resp, body := c.post("/git-credentials", url.Values{"name": {"deploy-key"}, "kind": {"ssh"}})
	if resp.StatusCode != http.StatusCreated || !strings.Contains(body, "ssh-ed25519 ") || strings.Contains(body, "PRIVATE KEY") {
		t.Fatalf("generate key: %d %s", resp.StatusCode, body)
	}
	const token = "glpat-very-secret-token-value"
	resp, body = c.post("/git-credentials", url.Values{"name": {"gitlab"}, "kind": {"https"}, "username": {"ci"}, "token": {token}})
	if resp.StatusCode != http.StatusCreated || strings.Contains(body, token) {
		t.Fatalf("https credential: %d", resp.StatusCode)
	}
	if resp, _ := c.post("/git-credentials", url.Values{"name": {"Bad Name"}, "kind": {"https"}, "username": {"x"}, "token": {token}}); resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("bad credential name: %d", resp.StatusCode)
	}

	if resp, _ := c.post("/apps", url.Values{"name": {"shop"}, "server": {"nope"}, "repo": {"https://git.example.com/shop.git"}}); resp.StatusCode != http.StatusNotFound && resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("app on an unknown server: %d", resp.StatusCode)
	}
	resp, body = c.post("/apps", url.Values{"name": {"shop"}, "server": {"web-1"}, "repo": {"https://git.example.com/shop.git"},
		"branch": {"main"}, "credential": {"gitlab"}, "deploy_script": {"echo build\r\n"}, "keep": {"3"}})
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("create app: %d %s", resp.StatusCode, body)
	}
	if resp, _ := c.post("/apps", url.Values{"name": {"shop"}, "server": {"web-1"}, "repo": {"https://git.example.com/shop.git"}}); resp.StatusCode != http.StatusConflict {
		t.Fatalf("duplicate app: %d", resp.StatusCode)
	}

	// Environment values are write-only: names show, values never do.
	const secretVal = "s3cr3t-database-password"
	resp, _ = c.post("/apps/shop/env", url.Values{"scope": {"production"}, "set": {"DB_PASSWORD=" + secretVal + "\r\nAPP_ENV=prod"}})
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("set env: %d", resp.StatusCode)
	}
	if resp, _ := c.post("/apps/shop/env", url.Values{"scope": {"production"}, "set": {"no equals sign"}}); resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("bad env line: %d", resp.StatusCode)
	}
	_, page := c.get("/apps/shop")
	if !strings.Contains(page, "DB_PASSWORD") || strings.Contains(page, secretVal) {
		t.Fatal("env page: name missing or value shown")
	}

	// Deploy with no agent connected: it queues; a second one queues behind it.
	resp, _ = c.post("/apps/shop/deploy", url.Values{"env": {"production"}})
	if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(resp.Header.Get("Location"), "/deployments/") {
		t.Fatalf("deploy: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	first := resp.Header.Get("Location")
	resp, _ = c.post("/apps/shop/deploy", url.Values{"env": {"production"}})
	second := resp.Header.Get("Location")
	_, page = c.get(second)
	if !strings.Contains(page, "queued behind 1") {
		t.Fatalf("second deploy does not say it queues behind the first:\n%s", page)
	}
	if resp, _ := c.post("/apps/shop/deploy", url.Values{"env": {"qa"}}); resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("unknown environment: %d", resp.StatusCode)
	}
	_, list := c.get("/deployments")
	if strings.Count(list, `href="/deployments/`) < 2 {
		t.Fatal("deployments list misses the deployments")
	}

	// Cancel the queued one; its log stream reports the end state.
	if resp, _ := c.post(first+"/cancel", nil); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("cancel: %d", resp.StatusCode)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, e.srv.URL+first+"/log", nil)
	req.Header.Set("Accept", "text/event-stream")
	sresp, err := c.hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer sresp.Body.Close()
	var sawCanceled, sawEnd bool
	sc := bufio.NewScanner(sresp.Body)
	for sc.Scan() {
		line := sc.Text()
		if strings.Contains(line, `"status":"canceled"`) {
			sawCanceled = true
		}
		if line == "event: end" {
			sawEnd = true
			break
		}
	}
	if !sawCanceled || !sawEnd {
		t.Fatalf("log stream: canceled=%v end=%v", sawCanceled, sawEnd)
	}

	// A viewer sees apps but cannot deploy, and no page or log line holds a secret.
	e.user("viewer@example.com", store.RoleViewer)
	vc := e.client()
	vc.login("viewer@example.com", adminPassword)
	if resp, _ := vc.post("/apps/shop/deploy", url.Values{"env": {"production"}}); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("viewer deploys: %d", resp.StatusCode)
	}
	if resp, _ := vc.post("/git-credentials", url.Values{"name": {"mine"}, "kind": {"ssh"}}); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("viewer adds a credential: %d", resp.StatusCode)
	}
	for _, p := range []string{"/apps", "/apps/shop", "/deployments", first, "/activity"} {
		if _, b := c.get(p); strings.Contains(b, secretVal) || strings.Contains(b, token) {
			t.Fatalf("%s shows a secret", p)
		}
	}
	if l := e.logs.String(); strings.Contains(l, secretVal) || strings.Contains(l, token) {
		t.Fatal("a secret reached the log")
	}
	if !regexp.MustCompile(`app\.created|app.created`).MatchString(c.mustGet("/activity")) {
		t.Fatal("app creation not in the activity log")
	}
}

func (c *client) mustGet(p string) string {
	_, b := c.get(p)
	return b
}
