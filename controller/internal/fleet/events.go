package fleet

import (
	"context"

	"github.com/berthhq/berth/controller/internal/notify"
	"github.com/berthhq/berth/controller/internal/store"
)

// publishServer publishes server.offline, server.online or server.enrolled
// in tx, the transaction that changed the server's state. Offline opens
// the condition "server.offline:<id>" and online closes it (see the notify
// package's noise rules). A failure to publish is logged and does not undo
// the change (Publish runs in a savepoint).
func (s *Service) publishServer(ctx context.Context, tx *store.Store, kind string, srv store.Server) {
	id := srv.ID
	ev := notify.Event{Kind: kind, ServerID: &id, Link: "/servers/" + id.String(), DedupeKey: "server.offline:" + id.String()}
	switch kind {
	case notify.KindServerOffline:
		ev.Level, ev.Title = notify.Critical, "Server "+srv.Name+" is offline"
		ev.Body = "No heartbeat from its agent."
	case notify.KindServerOnline:
		ev.Level, ev.Title, ev.Resolves = notify.Info, "Server "+srv.Name+" is back online", true
	case notify.KindServerEnrolled:
		ev.Level, ev.Title, ev.DedupeKey = notify.Info, "Server "+srv.Name+" enrolled", ""
	}
	if _, err := notify.Publish(ctx, tx, ev); err != nil {
		s.log.Error("publish server notification", "server", srv.Name, "kind", kind, "err", err)
	}
}
