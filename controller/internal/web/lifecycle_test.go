package web_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/berthhq/berth/controller/internal/store"
)

// The edit form saves through UpdateApp with its checks; delete needs the
// app's name typed.
func TestAppEditAndDelete(t *testing.T) {
	e := newEnv(t, false)
	e.user("admin@example.com", store.RoleAdmin)
	c := e.client()
	c.login("admin@example.com", adminPassword)
	c.post("/servers", url.Values{"name": {"web-1"}})
	if resp, body := c.post("/apps", url.Values{"name": {"shop"}, "server": {"web-1"}, "repo": {"https://git.example.com/shop.git"}}); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("create app: %d %s", resp.StatusCode, body)
	}
	resp, body := c.get("/apps/shop/edit")
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `value="https://git.example.com/shop.git"`) || !strings.Contains(body, `id="deploy_script_path"`) {
		t.Fatalf("edit form: %d", resp.StatusCode)
	}
	resp, _ = c.post("/apps/shop/edit", url.Values{"branch": {"release"}, "deploy_script_path": {"deploy/berth.sh"}, "keep": {"9"}, "timeout_minutes": {"10"}})
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("save: %d", resp.StatusCode)
	}
	_, page := c.get("/apps/shop")
	if !strings.Contains(page, "deploy/berth.sh") || !strings.Contains(page, "(release)") || !strings.Contains(page, "600 s") {
		t.Fatalf("saved settings not shown:\n%s", page)
	}
	if resp, body := c.post("/apps/shop/edit", url.Values{"deploy_script_path": {"../etc/passwd"}}); resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "deploy-script-path") {
		t.Fatalf("bad script path: %d", resp.StatusCode)
	}
	if resp, _ := c.post("/apps/shop/edit", url.Values{"keep": {"many"}}); resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("bad number: %d", resp.StatusCode)
	}

	// Delete: the name must be typed.
	if resp, body := c.post("/apps/shop/delete", url.Values{"confirm": {"shp"}}); resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "Type the app") {
		t.Fatalf("delete without the name: %d", resp.StatusCode)
	}
	// Without keep_files a delete job is queued (no agent here): its page
	// says what it is, and the app stays until it succeeds.
	c.post("/servers", url.Values{"name": {"web-2"}})
	if resp, body := c.post("/apps", url.Values{"name": {"blog"}, "server": {"web-2"}, "repo": {"https://git.example.com/blog.git"}}); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("create blog: %d %s", resp.StatusCode, body)
	}
	resp, _ = c.post("/apps/blog/delete", url.Values{"confirm": {"blog"}})
	if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(resp.Header.Get("Location"), "/deployments/") {
		t.Fatalf("delete blog: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	if _, page := c.get(resp.Header.Get("Location")); !strings.Contains(page, "blog: app delete") {
		t.Fatalf("delete job page:\n%s", page)
	}
	if resp, body := c.post("/apps/blog/delete", url.Values{"confirm": {"blog"}}); resp.StatusCode != http.StatusConflict || !strings.Contains(body, "unfinished delete job") {
		t.Fatalf("second delete: %d", resp.StatusCode)
	}

	resp, _ = c.post("/apps/shop/delete", url.Values{"confirm": {"shop"}, "keep_files": {"1"}})
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/apps" {
		t.Fatalf("delete: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	if resp, _ := c.get("/apps/shop"); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("deleted app page: %d", resp.StatusCode)
	}
}
