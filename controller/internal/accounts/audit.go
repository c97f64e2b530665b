package accounts

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/berthhq/berth/controller/internal/store"
)

// activity writes one activity_log row for a state change by a. changes
// must hold no secret values: a secret field appears as {"changed": true}.
func (s *Service) activity(ctx context.Context, st *store.Store, a Actor, action, subjectType string, subjectID *store.ID, subjectName string, changes map[string]any) error {
	p := store.CreateActivityParams{
		ActorType: store.ActorUser, Actor: a.label(), Action: action,
		SubjectType: subjectType, SubjectID: subjectID, SubjectName: subjectName,
		Changes: changes, IPAddress: a.ip(), UserAgent: a.UserAgent,
	}
	if a.UserID != (store.ID{}) {
		p.UserID = idPtr(a.UserID)
	}
	if a.TokenID != nil {
		p.ActorType = store.ActorAPIToken
	}
	if p.Actor == "" {
		p.Actor = "anonymous"
	}
	if _, err := st.CreateActivity(ctx, p); err != nil {
		return fmt.Errorf("activity %s: %w", action, err)
	}
	return nil
}

// event writes one security_events row. details must hold no secrets.
func (s *Service) event(ctx context.Context, st *store.Store, typ string, sev store.Severity, userID *store.ID, actor string, meta Meta, details map[string]any) error {
	if actor == "" {
		actor = "anonymous"
	}
	if _, err := st.CreateSecurityEvent(ctx, store.CreateSecurityEventParams{
		Type: typ, Severity: sev, UserID: userID, Actor: actor,
		IPAddress: meta.ip(), UserAgent: meta.UserAgent, Details: details,
	}); err != nil {
		return fmt.Errorf("security event %s: %w", typ, err)
	}
	level := slog.LevelInfo
	if sev != store.SeverityInfo {
		level = slog.LevelWarn
	}
	s.log.Log(ctx, level, "security event", "type", typ, "severity", sev, "actor", actor, "ip", meta.IP)
	s.notifySecurity(ctx, st, typ, userID, actor, details)
	return nil
}

// changed is the activity-log form of a secret field that changed.
var changed = map[string]any{"changed": true}

func change(oldV, newV any) map[string]any { return map[string]any{"old": oldV, "new": newV} }
