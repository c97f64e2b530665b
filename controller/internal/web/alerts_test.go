package web_test

import (
	"context"
	"html"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/berthhq/berth/controller/internal/store"
)

// selected reports whether the select with id has option value chosen.
func selected(body, id, value string) bool {
	i := strings.Index(body, `<select id="`+id+`"`)
	if i < 0 {
		return false
	}
	end := strings.Index(body[i:], "</select>")
	return end > 0 && strings.Contains(body[i:i+end], `<option value="`+value+`" selected>`)
}

// The edit page of an alert rule: the form shows the rule's definition;
// bad input is refused with a clear message and the form keeps what was
// typed, with the rule unchanged; a valid change replaces the rule's
// definition in place (same id, alert_rule.replaced in the activity log);
// a rule that is not there is not brought back by an edit; viewers see the
// rule but no form, and their posts are refused.
func TestAlertEditPage(t *testing.T) {
	e := newEnv(t, false)
	e.user("admin@example.com", store.RoleAdmin)
	e.user("viewer@example.com", store.RoleViewer)
	ctx := context.Background()
	if _, err := e.st.CreateServer(ctx, store.CreateServerParams{Name: "web-1"}); err != nil {
		t.Fatal(err)
	}
	before, err := e.st.AlertRuleByName(ctx, "disk-above-90")
	if err != nil {
		t.Fatal(err)
	}
	c := e.client()
	c.login("admin@example.com", adminPassword)

	_, body := c.get("/alerts")
	if !strings.Contains(body, `href="/alerts/disk-above-90/edit"`) {
		t.Fatalf("the alerts page has no edit link:\n%s", body)
	}
	resp, body := c.get("/alerts/disk-above-90/edit")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("edit page: %d", resp.StatusCode)
	}
	for id, want := range map[string]string{"above": "90", "resolve_below": "85", "for": "5m", "mount": "", "server": "", "label": ""} {
		if got, ok := inputValue(body, id); !ok || got != want {
			t.Errorf("edit form %s = %q (%v), want %q", id, got, ok, want)
		}
	}
	if !selected(body, "metric", "disk") || !selected(body, "scope", "all") || !selected(body, "level", "critical") {
		t.Errorf("edit form selects do not show the rule:\n%s", body)
	}
	if !strings.Contains(html.UnescapeString(body), "disk > 90.0% for 5m0s (resolves below 85.0%), on every server, every mount") {
		t.Errorf("edit page does not say what the rule is now")
	}

	typed := url.Values{"metric": {"disk"}, "above": {"lots"}, "for": {"2m"}, "resolve_below": {"70"}, "mount": {"/var"},
		"scope": {"server"}, "server": {"web-1"}, "label": {""}, "level": {"warning"}}
	for _, tc := range []struct {
		name   string
		change map[string]string
		status int
		msg    string
	}{
		{"not a number", nil, 400, "Above must be a number."},
		{"over 100%", map[string]string{"above": "120"}, 400, "--above is a percentage for disk: 0 to 100"},
		{"resolve above", map[string]string{"above": "60"}, 400, "--resolve-below (70) must not be above --above (60)"},
		{"bad duration", map[string]string{"above": "80", "for": "soon"}, 400, "For must be a duration such as 30s, 5m or 1h."},
		{"too long", map[string]string{"above": "80", "for": "48h"}, 400, "--for must be whole seconds from 0s to 24h0m0s"},
		{"unknown server", map[string]string{"above": "80", "server": "web-404"}, 404, `There is no server "web-404".`},
		{"mount on cpu", map[string]string{"above": "80", "metric": "cpu"}, 400, "--mount is for disk and inodes only, not cpu"},
		{"bad label", map[string]string{"above": "80", "scope": "label", "label": "no-equals"}, 400, "--label must be KEY=VALUE"},
	} {
		f := url.Values{}
		for k, v := range typed {
			f[k] = v
		}
		for k, v := range tc.change {
			f.Set(k, v)
		}
		resp, body := c.post("/alerts/disk-above-90/edit", f)
		if resp.StatusCode != tc.status || !strings.Contains(html.UnescapeString(body), tc.msg) || !strings.Contains(body, `id="form-error"`) {
			t.Errorf("%s: %d, want %d with %q", tc.name, resp.StatusCode, tc.status, tc.msg)
			continue
		}
		for _, id := range []string{"above", "for", "resolve_below", "mount", "server", "label"} {
			if got, _ := inputValue(body, id); got != f.Get(id) {
				t.Errorf("%s: %s kept %q, want %q", tc.name, id, got, f.Get(id))
			}
		}
		if !selected(body, "metric", f.Get("metric")) || !selected(body, "scope", f.Get("scope")) || !selected(body, "level", "warning") {
			t.Errorf("%s: the selects lost what was chosen", tc.name)
		}
	}
	if after, err := e.st.AlertRuleByName(ctx, "disk-above-90"); err != nil || *after.Above != 90 || after.Level != "critical" || after.Mount != "" || after.For != 5*time.Minute {
		t.Fatalf("refused edits changed the rule: %+v %v", after, err)
	}

	// A valid change: the same rule (id), its new definition.
	f := url.Values{"metric": {"disk"}, "above": {"80"}, "for": {"1m"}, "resolve_below": {""}, "mount": {"/var"}, "scope": {"server"}, "server": {"web-1"}, "level": {"warning"}}
	resp, body = c.post("/alerts/disk-above-90/edit", f)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/alerts" {
		t.Fatalf("save: %d %s", resp.StatusCode, body)
	}
	after, err := e.st.AlertRuleByName(ctx, "disk-above-90")
	if err != nil {
		t.Fatal(err)
	}
	if after.ID != before.ID || *after.Above != 80 || *after.ResolveBelow != 75 || after.For != time.Minute || after.Mount != "/var" ||
		after.ServerID == nil || after.Level != "warning" {
		t.Fatalf("after the edit: %+v", after)
	}
	_, body = c.get("/alerts")
	if !strings.Contains(body, "Alert disk-above-90 changed.") || !strings.Contains(html.UnescapeString(body), "disk > 80.0% for 1m0s (resolves below 75.0%)") ||
		!strings.Contains(body, "server web-1, mount /var") {
		t.Errorf("alerts page after the edit:\n%s", body)
	}
	if _, body := c.get("/activity"); !strings.Contains(body, "alert_rule.replaced") {
		t.Errorf("the activity log lacks alert_rule.replaced")
	}
	// The edit form now shows the new definition.
	_, body = c.get("/alerts/disk-above-90/edit")
	if got, _ := inputValue(body, "server"); got != "web-1" || !selected(body, "scope", "server") || !selected(body, "level", "warning") {
		t.Errorf("edit form after the change: server %q", got)
	}

	// Editing a rule that is not there is a 404 and adds nothing; a name
	// that is not a name is a 400.
	if resp, _ := c.post("/alerts/no-such-rule/edit", f); resp.StatusCode != http.StatusNotFound {
		t.Errorf("edit of a missing rule: %d", resp.StatusCode)
	}
	if _, err := e.st.AlertRuleByName(ctx, "no-such-rule"); err == nil {
		t.Error("an edit of a missing rule added it")
	}
	if resp, _ := c.get("/alerts/no-such-rule/edit"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("edit page of a missing rule: %d", resp.StatusCode)
	}
	if resp, _ := c.get("/alerts/" + url.PathEscape("Not A Name") + "/edit"); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("edit page of a bad name: %d", resp.StatusCode)
	}

	// A viewer sees the rule but no form and no edit link; a post is
	// refused and changes nothing.
	vc := e.client()
	vc.login("viewer@example.com", adminPassword)
	if _, body := vc.get("/alerts"); strings.Contains(body, "/edit") {
		t.Errorf("a viewer is offered the edit link")
	}
	resp, body = vc.get("/alerts/disk-above-90/edit")
	if resp.StatusCode != http.StatusOK || strings.Contains(body, `id="alert-edit-form"`) || !strings.Contains(body, "Only admins change alert rules.") {
		t.Errorf("viewer's edit page: %d", resp.StatusCode)
	}
	if resp, _ := vc.post("/alerts/disk-above-90/edit", url.Values{"metric": {"disk"}, "above": {"10"}, "scope": {"all"}}); resp.StatusCode != http.StatusForbidden {
		t.Errorf("viewer's edit: %d", resp.StatusCode)
	}
	if now, _ := e.st.AlertRuleByName(ctx, "disk-above-90"); *now.Above != 80 {
		t.Errorf("a viewer's refused edit changed the rule: above %v", *now.Above)
	}
}
