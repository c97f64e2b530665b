package grpcapi_test

import (
	"context"
	"testing"
	"time"

	"github.com/berthhq/berth/controller/internal/notify"
	"github.com/berthhq/berth/controller/internal/store"
)

// Enrollment publishes server.enrolled; an agent coming back to a server
// marked offline publishes server.online, which closes server.offline in
// the admins' inbox. A first hello after enrollment (pending) is not news.
func TestAgentPublishesServerEvents(t *testing.T) {
	t.Parallel()
	e := setup(t, 100)
	ctx := context.Background()
	id, cert := e.enroll(t, "web-1")
	s, m, err := connect(t, e.client(t, &cert), nil)
	if err != nil || m.GetWelcome() == nil {
		t.Fatalf("connect: %v %v", m, err)
	}
	_ = s.CloseSend()
	// The liveness sweep's doing, with its event, in one transaction.
	srv, _ := e.st.Server(ctx, id)
	if err := e.st.InTx(ctx, func(tx *store.Store) error {
		if _, err := tx.SetServerStatus(ctx, id, store.ServerOffline); err != nil {
			return err
		}
		_, err := notify.Publish(ctx, tx, notify.Event{Kind: notify.KindServerOffline, Level: notify.Critical, Title: "Server web-1 is offline",
			ServerID: &id, DedupeKey: "server.offline:" + id.String()})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if _, m, err := connect(t, e.client(t, &cert), nil); err != nil || m.GetWelcome() == nil {
		t.Fatalf("reconnect: %v %v", m, err)
	}
	kinds := map[string]int{}
	rows, err := e.st.Pool().Query(ctx, "SELECT kind FROM notify_events WHERE server_id = $1", id)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var k string
		_ = rows.Scan(&k)
		kinds[k]++
	}
	rows.Close()
	if kinds[notify.KindServerEnrolled] != 1 || kinds[notify.KindServerOnline] != 1 || kinds[notify.KindServerOffline] != 1 || len(kinds) != 3 {
		t.Fatalf("events %v (server %s)", kinds, srv.Name)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		unread, err := e.st.Notifications(ctx, e.admin.UserID, store.NotificationFilter{UnreadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		if len(unread) == 1 && unread[0].Kind == notify.KindServerOnline && unread[0].Title == "Server web-1 is back online" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("unread %+v: want only server.online (offline closed)", unread)
		}
		time.Sleep(20 * time.Millisecond) // polling a condition
	}
}
