package store

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/berthhq/berth/gen/dbsqlc"
)

// ActorType says who or what acted.
type ActorType string

// The actor types.
const (
	ActorUser     ActorType = "user"
	ActorAPIToken ActorType = "api_token"
	ActorWebhook  ActorType = "webhook"
	ActorAgent    ActorType = "agent"
	ActorSystem   ActorType = "system"
)

// Activity is one entry of the activity log. SubjectID has no foreign key:
// the entry outlives its subject, and SubjectName keeps its label.
type Activity struct {
	ID          ID
	UserID      *ID
	ActorType   ActorType
	Actor       string // an email, token:<name>, webhook:github, system
	Action      string // dotted lowercase, e.g. app.created
	SubjectType string // lowercase word, e.g. server, app; "" for none
	SubjectID   *ID
	SubjectName string
	// Changes is {"field": {"old": ..., "new": ...}}; an encrypted field
	// appears only as {"changed": true}.
	Changes   map[string]any
	IPAddress *netip.Addr
	UserAgent string
	CreatedAt time.Time
}

func activityFromRow(r dbsqlc.ActivityLog) Activity {
	return Activity{
		ID: fromPG(r.ID), UserID: fromOptPG(r.UserID), ActorType: ActorType(r.ActorType), Actor: r.Actor,
		Action: r.Action, SubjectType: textOf(r.SubjectType), SubjectID: fromOptPG(r.SubjectID),
		SubjectName: textOf(r.SubjectName), Changes: decodeObject(r.Changes), IPAddress: r.IpAddress,
		UserAgent: textOf(r.UserAgent), CreatedAt: r.CreatedAt,
	}
}

// CreateActivityParams describes an entry.
type CreateActivityParams struct {
	ID          ID
	UserID      *ID
	ActorType   ActorType
	Actor       string
	Action      string
	SubjectType string
	SubjectID   *ID
	SubjectName string
	Changes     map[string]any
	IPAddress   *netip.Addr
	UserAgent   string
}

// CreateActivity records an entry; ErrInvalid for a malformed action or
// subject type, or a subject id without a type.
func (s *Store) CreateActivity(ctx context.Context, p CreateActivityParams) (Activity, error) {
	if p.ID == (ID{}) {
		p.ID = NewID()
	}
	if err := checkKind(p.Action); err != nil {
		return Activity{}, fmt.Errorf("create activity: %w", err)
	}
	changes, err := jsonObject(p.Changes)
	if err != nil {
		return Activity{}, fmt.Errorf("create activity: %w", err)
	}
	r, err := s.q.CreateActivity(ctx, dbsqlc.CreateActivityParams{
		ID: pgID(p.ID), UserID: pgOptID(p.UserID), ActorType: string(p.ActorType), Actor: p.Actor, Action: p.Action,
		SubjectType: nullText(p.SubjectType), SubjectID: pgOptID(p.SubjectID), SubjectName: nullText(p.SubjectName),
		Changes: changes, IpAddress: p.IPAddress, UserAgent: nullText(p.UserAgent),
	})
	if err != nil {
		return Activity{}, mapErr("create activity", err)
	}
	return activityFromRow(r), nil
}

// ActivityFilter selects entries; zero fields do not filter.
type ActivityFilter struct {
	UserID      *ID
	ActorType   ActorType
	Action      string
	SubjectType string
	SubjectID   *ID
	Since       *time.Time
	Before      *ID
	Limit       int
}

// ActivityLog lists entries, newest first.
func (s *Store) ActivityLog(ctx context.Context, f ActivityFilter) ([]Activity, error) {
	before, lim := keyset(f.Before, f.Limit)
	rows, err := s.q.ListActivity(ctx, dbsqlc.ListActivityParams{
		UserID: pgOptID(f.UserID), ActorType: nullEnum(f.ActorType), Action: nullText(f.Action),
		SubjectType: nullText(f.SubjectType), SubjectID: pgOptID(f.SubjectID), Since: f.Since, Before: before, Lim: lim,
	})
	if err != nil {
		return nil, mapErr("list activity", err)
	}
	out := make([]Activity, len(rows))
	for i, r := range rows {
		out[i] = activityFromRow(r)
	}
	return out, nil
}
