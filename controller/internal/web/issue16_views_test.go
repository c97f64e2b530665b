package web_test

import (
	"context"
	"regexp"
	"strings"
	"testing"

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
