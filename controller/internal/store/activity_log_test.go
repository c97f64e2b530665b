package store_test

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/berthhq/berth/controller/internal/store"
)

func TestActivityLog(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, st := keyedStore(t)
	u := mkUser(t, st, "ops@example.com")
	app, srv := store.NewID(), store.NewID()
	ip := netip.MustParseAddr("192.0.2.9")

	rec := func(p store.CreateActivityParams) store.Activity {
		t.Helper()
		a, err := st.CreateActivity(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	a0 := rec(store.CreateActivityParams{UserID: &u.ID, ActorType: store.ActorUser, Actor: "ops@example.com", Action: "app.created",
		SubjectType: "app", SubjectID: &app, SubjectName: "shop", IPAddress: &ip, UserAgent: "Firefox",
		Changes: map[string]any{"branch": map[string]any{"old": nil, "new": "main"}, "env_production": map[string]any{"changed": true}}})
	if a0.SubjectName != "shop" || *a0.SubjectID != app || *a0.IPAddress != ip || a0.UserAgent != "Firefox" {
		t.Fatalf("created = %+v", a0)
	}
	if br, ok := a0.Changes["branch"].(map[string]any); !ok || br["new"] != "main" || br["old"] != nil {
		t.Fatalf("changes = %v", a0.Changes)
	}
	a1 := rec(store.CreateActivityParams{UserID: &u.ID, ActorType: store.ActorAPIToken, Actor: "token:ci", Action: "deployment.queued", SubjectType: "app", SubjectID: &app, SubjectName: "shop"})
	a2 := rec(store.CreateActivityParams{ActorType: store.ActorWebhook, Actor: "webhook:github", Action: "deployment.queued", SubjectType: "app", SubjectID: &app})
	a3 := rec(store.CreateActivityParams{UserID: &u.ID, ActorType: store.ActorUser, Actor: "ops@example.com", Action: "server.removed", SubjectType: "server", SubjectID: &srv, SubjectName: "web"})
	a4 := rec(store.CreateActivityParams{ActorType: store.ActorSystem, Actor: "system", Action: "agent.enrolled"})
	if a4.SubjectType != "" || a4.SubjectID != nil || a4.UserID != nil || a4.Changes == nil {
		t.Fatalf("no subject = %+v", a4)
	}
	if _, err := db.Pool.Exec(ctx, `UPDATE activity_log SET created_at = now() - interval '3 days' WHERE id = $1`, rawID(a0.ID)); err != nil {
		t.Fatal(err)
	}

	for name, c := range map[string]struct {
		p    store.CreateActivityParams
		want error
	}{
		"bad action":        {store.CreateActivityParams{ActorType: store.ActorSystem, Actor: "s", Action: "Created!"}, store.ErrInvalid},
		"bad actor type":    {store.CreateActivityParams{ActorType: "robot", Actor: "s", Action: "app.created"}, store.ErrInvalid},
		"id without type":   {store.CreateActivityParams{ActorType: store.ActorSystem, Actor: "s", Action: "app.created", SubjectID: &app}, store.ErrInvalid},
		"bad subject type":  {store.CreateActivityParams{ActorType: store.ActorSystem, Actor: "s", Action: "app.created", SubjectType: "App"}, store.ErrInvalid},
		"unknown user":      {store.CreateActivityParams{UserID: refTo(store.NewID()), ActorType: store.ActorUser, Actor: "s", Action: "app.created"}, store.ErrMissingParent},
		"changes not a map": {store.CreateActivityParams{ActorType: store.ActorSystem, Actor: "s", Action: "app.created", Changes: map[string]any{"f": func() {}}}, store.ErrInvalid},
	} {
		if _, err := st.CreateActivity(ctx, c.p); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", name, err, c.want)
		}
	}

	ids := func(as []store.Activity) []store.ID {
		out := []store.ID{}
		for _, a := range as {
			out = append(out, a.ID)
		}
		return out
	}
	var got []store.ID
	var before *store.ID
	for range 10 {
		page, err := st.ActivityLog(ctx, store.ActivityFilter{Before: before, Limit: 2})
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, ids(page)...)
		if len(page) < 2 {
			break
		}
		before = &page[len(page)-1].ID
	}
	if want := []store.ID{a4.ID, a3.ID, a2.ID, a1.ID, a0.ID}; !slices.Equal(got, want) {
		t.Fatalf("paged = %v, want %v", got, want)
	}
	for name, c := range map[string]struct {
		f    store.ActivityFilter
		want []store.ID
	}{
		"user":          {store.ActivityFilter{UserID: &u.ID}, []store.ID{a3.ID, a1.ID, a0.ID}},
		"subject":       {store.ActivityFilter{SubjectType: "app", SubjectID: &app}, []store.ID{a2.ID, a1.ID, a0.ID}},
		"subject type":  {store.ActivityFilter{SubjectType: "server"}, []store.ID{a3.ID}},
		"action":        {store.ActivityFilter{Action: "deployment.queued"}, []store.ID{a2.ID, a1.ID}},
		"actor type":    {store.ActivityFilter{ActorType: store.ActorWebhook}, []store.ID{a2.ID}},
		"since":         {store.ActivityFilter{SubjectID: &app, SubjectType: "app", Since: refTo(time.Now().Add(-time.Hour))}, []store.ID{a2.ID, a1.ID}},
		"user + action": {store.ActivityFilter{UserID: &u.ID, Action: "deployment.queued"}, []store.ID{a1.ID}},
		"none":          {store.ActivityFilter{SubjectID: refTo(store.NewID())}, []store.ID{}},
	} {
		list, err := st.ActivityLog(ctx, c.f)
		if err != nil || !slices.Equal(ids(list), c.want) {
			t.Errorf("%s = %v, %v; want %v", name, ids(list), err, c.want)
		}
	}

	// The log outlives the user.
	if err := st.DeleteUser(ctx, u.ID); err != nil {
		t.Fatal(err)
	}
	list, err := st.ActivityLog(ctx, store.ActivityFilter{Action: "server.removed"})
	if err != nil || len(list) != 1 || list[0].UserID != nil || list[0].Actor != "ops@example.com" {
		t.Fatalf("after user delete = %+v, %v", list, err)
	}
}
