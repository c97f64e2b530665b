package store_test

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/berthhq/berth/controller/internal/store"
)

func TestNotifications(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, st := keyedStore(t)
	u, v := mkUser(t, st, "u@example.com"), mkUser(t, st, "v@example.com")

	n1, ok, err := st.CreateNotification(ctx, store.CreateNotificationParams{UserID: u.ID, Kind: "deployment.failed", Level: store.NotifyError, Title: "Deploy failed", Body: "shop: exit 1", Link: "/deployments/x"})
	if err != nil || !ok || n1.Level != store.NotifyError || n1.Link != "/deployments/x" || n1.ReadAt != nil || n1.DedupeKey != "" {
		t.Fatalf("create = %+v, %v, %v", n1, ok, err)
	}
	// Dedupe: one unread per user and key.
	off := store.CreateNotificationParams{UserID: u.ID, Kind: "server.offline", Level: store.NotifyWarning, Title: "web is offline", DedupeKey: "server.offline:web"}
	n2, ok, err := st.CreateNotification(ctx, off)
	if err != nil || !ok {
		t.Fatalf("offline = %v, %v", ok, err)
	}
	if _, ok, err := st.CreateNotification(ctx, off); err != nil || ok {
		t.Fatalf("duplicate unread = %v, %v", ok, err)
	}
	offV := off
	offV.UserID = v.ID
	if _, ok, err := st.CreateNotification(ctx, offV); err != nil || !ok {
		t.Fatalf("same key, other user = %v, %v", ok, err)
	}
	if c, err := st.UnreadNotificationCount(ctx, u.ID); err != nil || c != 2 {
		t.Fatalf("unread = %d, %v", c, err)
	}

	r, err := st.MarkNotificationRead(ctx, u.ID, n2.ID)
	if err != nil || r.ReadAt == nil {
		t.Fatalf("mark read = %+v, %v", r, err)
	}
	if r2, err := st.MarkNotificationRead(ctx, u.ID, n2.ID); err != nil || !r2.ReadAt.Equal(*r.ReadAt) {
		t.Fatalf("mark read twice moved read_at: %v, %v", r2.ReadAt, err)
	}
	if _, err := st.MarkNotificationRead(ctx, v.ID, n1.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("marking another user's notification: %v", err)
	}
	// Once read, the same key may notify again.
	n3, ok, err := st.CreateNotification(ctx, off)
	if err != nil || !ok {
		t.Fatalf("after read = %v, %v", ok, err)
	}

	for name, c := range map[string]struct {
		p    store.CreateNotificationParams
		want error
	}{
		"no title":     {store.CreateNotificationParams{UserID: u.ID, Kind: "a.b"}, store.ErrInvalid},
		"bad kind":     {store.CreateNotificationParams{UserID: u.ID, Kind: "A B", Title: "t"}, store.ErrInvalid},
		"bad level":    {store.CreateNotificationParams{UserID: u.ID, Kind: "a.b", Title: "t", Level: "loud"}, store.ErrInvalid},
		"unknown user": {store.CreateNotificationParams{UserID: store.NewID(), Kind: "a.b", Title: "t"}, store.ErrMissingParent},
	} {
		if _, _, err := st.CreateNotification(ctx, c.p); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", name, err, c.want)
		}
	}

	ids := func(ns []store.Notification) []store.ID {
		out := []store.ID{}
		for _, n := range ns {
			out = append(out, n.ID)
		}
		return out
	}
	if all, err := st.Notifications(ctx, u.ID, store.NotificationFilter{}); err != nil || !slices.Equal(ids(all), []store.ID{n3.ID, n2.ID, n1.ID}) {
		t.Fatalf("inbox = %v, %v", ids(all), err)
	}
	if unread, _ := st.Notifications(ctx, u.ID, store.NotificationFilter{UnreadOnly: true}); !slices.Equal(ids(unread), []store.ID{n3.ID, n1.ID}) {
		t.Fatalf("unread = %v", ids(unread))
	}
	p1, _ := st.Notifications(ctx, u.ID, store.NotificationFilter{Limit: 2})
	p2, _ := st.Notifications(ctx, u.ID, store.NotificationFilter{Limit: 2, Before: &p1[1].ID})
	if !slices.Equal(append(ids(p1), ids(p2)...), []store.ID{n3.ID, n2.ID, n1.ID}) {
		t.Fatalf("pages = %v + %v", ids(p1), ids(p2))
	}
	if got, err := st.Notification(ctx, u.ID, n1.ID); err != nil || got.Title != "Deploy failed" || got.Body != "shop: exit 1" {
		t.Fatalf("get = %+v, %v", got, err)
	}
	if _, err := st.Notification(ctx, v.ID, n1.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("another user's notification: %v", err)
	}

	if n, err := st.MarkAllNotificationsRead(ctx, u.ID); err != nil || n != 2 {
		t.Fatalf("mark all = %d, %v", n, err)
	}
	if c, _ := st.UnreadNotificationCount(ctx, u.ID); c != 0 {
		t.Fatalf("unread after mark all = %d", c)
	}
	if c, _ := st.UnreadNotificationCount(ctx, v.ID); c != 1 {
		t.Fatalf("mark all touched another inbox: %d unread", c)
	}
	if err := st.DeleteNotification(ctx, v.ID, n1.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("deleting another user's notification: %v", err)
	}
	if err := st.DeleteNotification(ctx, u.ID, n1.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Notification(ctx, u.ID, n1.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("deleted notification: %v", err)
	}
	// An inbox goes with its user.
	if err := st.DeleteUser(ctx, v.ID); err != nil {
		t.Fatal(err)
	}
	if list, _ := st.Notifications(ctx, v.ID, store.NotificationFilter{}); len(list) != 0 {
		t.Fatalf("%d notifications outlived their user", len(list))
	}
}
