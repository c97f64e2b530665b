package alert

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/berthhq/berth/controller/internal/audit/kind"
	"github.com/berthhq/berth/controller/internal/auth"
	"github.com/berthhq/berth/controller/internal/notify"
	"github.com/berthhq/berth/controller/internal/store"
)

// Service is the alert rules' API for every interface (gRPC, the CLI
// through it, the web UI): authorisation, validation and audit happen
// here. Writing needs the admin scope, reading the read scope.
type Service struct {
	st  *store.Store
	eng *Engine
	log *slog.Logger
	now func() time.Time
}

// NewService returns the service; eng may be nil (no evaluation in this
// process: changes are then picked up by the engines' NOTIFY).
func NewService(st *store.Store, eng *Engine, log *slog.Logger) *Service {
	if log == nil {
		log = slog.Default()
	}
	return &Service{st: st, eng: eng, log: log.With("component", "alert"), now: time.Now}
}

// Rule is a rule as shown, with where it fires now.
type Rule struct {
	store.AlertRule
	ServerName string
	Firing     []Firing
}

// Firing is one (server, mount) where a rule fires.
type Firing struct {
	ServerID     store.ID
	ServerName   string
	Mount        string
	PendingSince time.Time
	Since        time.Time
	Value        float64
}

// Peer is where a request came from, for the audit trail.
type Peer = notify.Peer

func (s *Service) activity(ctx context.Context, pr *auth.Principal, peer Peer, action string, r store.AlertRule, changes map[string]any) {
	id := r.ID
	p := store.CreateActivityParams{
		Action: action, SubjectType: "alert_rule", SubjectID: &id, SubjectName: r.Name, Changes: changes,
		IPAddress: peer.IP, UserAgent: peer.UserAgent,
	}
	p.ActorType, p.Actor, p.UserID = pr.Actor()
	if _, err := s.st.CreateActivity(ctx, p); err != nil {
		s.log.Error("record activity", "action", action, "err", err)
	}
}

// AddAs adds a rule for an admin. A taken name is store.ErrConflict, an
// unknown server store.ErrNotFound.
func (s *Service) AddAs(ctx context.Context, pr *auth.Principal, peer Peer, spec Spec) (Rule, error) {
	if err := auth.Require(pr, store.ScopeAdmin); err != nil {
		return Rule{}, err
	}
	r, err := spec.check()
	if err != nil {
		return Rule{}, err
	}
	var srv store.Server
	if spec.Server != "" {
		if srv, err = s.resolveServer(ctx, spec.Server); err != nil {
			return Rule{}, err
		}
		r.ServerID = &srv.ID
	}
	name := r.Name
	action := kind.AlertRuleCreated
	if spec.Replace {
		var replaced bool
		if r, replaced, err = s.replace(ctx, r); err != nil {
			return Rule{}, err
		}
		if replaced {
			action = kind.AlertRuleReplaced
		}
	} else {
		r, err = s.st.CreateAlertRule(ctx, r)
	}
	if errors.Is(err, store.ErrConflict) {
		return Rule{}, fmt.Errorf("alert %s: %w (give replace to change it)", name, store.ErrConflict)
	}
	if err != nil {
		return Rule{}, err
	}
	s.reload(ctx)
	changes := map[string]any{"metric": r.Metric, "for": r.For.String(), "level": r.Level}
	if r.Above != nil {
		changes["above"], changes["resolve_below"] = *r.Above, *r.ResolveBelow
	}
	if r.Mount != "" {
		changes["mount"] = r.Mount
	}
	if srv.Name != "" {
		changes["server"] = srv.Name
	}
	if r.LabelKey != "" {
		changes["label"] = r.LabelKey + "=" + r.LabelValue
	}
	s.activity(ctx, pr, peer, action, r, changes)
	return Rule{AlertRule: r, ServerName: srv.Name}, nil
}

// replace changes the rule named r.Name to r's definition, or adds it
// when there is none. What the old definition has firing is resolved in
// the same transaction: its thresholds, mount or servers may no longer
// hold, and the new definition fires again on its own terms.
func (s *Service) replace(ctx context.Context, r store.AlertRule) (store.AlertRule, bool, error) {
	replaced := false
	err := s.st.InTx(ctx, func(tx *store.Store) error {
		old, err := tx.AlertRuleByName(ctx, r.Name)
		if errors.Is(err, store.ErrNotFound) {
			r, err = tx.CreateAlertRule(ctx, r)
			return err
		}
		if err != nil {
			return err
		}
		if err := s.resolveAll(ctx, tx, old, "The alert rule "+old.Name+" was changed."); err != nil {
			return err
		}
		r.ID = old.ID
		r, err = tx.UpdateAlertRule(ctx, r)
		replaced = err == nil
		return err
	})
	return r, replaced, err
}

// resolveAll resolves, in tx, everything rule r has firing, with reason as
// the resolved events' body.
func (s *Service) resolveAll(ctx context.Context, tx *store.Store, r store.AlertRule, reason string) error {
	firing, err := tx.FiringAlertsOfRule(ctx, r.ID)
	if err != nil {
		return err
	}
	names := map[store.ID]string{}
	now := s.now()
	for _, f := range firing {
		t := transition{rule: r, server: f.ServerID, name: s.serverName(ctx, f.ServerID, names), mount: f.Mount,
			since: f.PendingSince, at: now, value: f.Value, reason: reason}
		if err := writeTransition(ctx, tx, t); err != nil {
			return err
		}
	}
	return nil
}

// reload makes this controller's engine see a change at once (others
// reload on the trigger's NOTIFY).
func (s *Service) reload(ctx context.Context) {
	if s.eng == nil {
		return
	}
	if err := s.eng.Refresh(ctx); err != nil {
		s.log.Error("reload alert rules", "err", err)
	}
}

func (s *Service) resolveServer(ctx context.Context, ref string) (store.Server, error) {
	if len(ref) > 128 {
		return store.Server{}, fmt.Errorf("%w: server name too long", ErrInvalid)
	}
	if id, err := store.ParseID(ref); err == nil {
		srv, err := s.st.Server(ctx, id)
		if err != nil {
			return store.Server{}, fmt.Errorf("server %s: %w", ref, err)
		}
		return srv, nil
	}
	if !validName(ref) {
		return store.Server{}, fmt.Errorf("%w: server %q is not a server name or id", ErrInvalid, cut(ref, 63))
	}
	srv, err := s.st.ServerByName(ctx, ref)
	if err != nil {
		return store.Server{}, fmt.Errorf("server %s: %w", ref, err)
	}
	return srv, nil
}

// ListAs lists every rule with where it fires.
func (s *Service) ListAs(ctx context.Context, pr *auth.Principal) ([]Rule, error) {
	if err := auth.Require(pr, store.ScopeRead); err != nil {
		return nil, err
	}
	rules, err := s.st.AlertRules(ctx)
	if err != nil {
		return nil, err
	}
	firing, err := s.st.FiringAlerts(ctx)
	if err != nil {
		return nil, err
	}
	byRule := map[store.ID][]store.AlertState{}
	for _, f := range firing {
		byRule[f.RuleID] = append(byRule[f.RuleID], f)
	}
	names := map[store.ID]string{}
	out := make([]Rule, len(rules))
	for i, r := range rules {
		out[i] = s.shown(ctx, r, byRule[r.ID], names)
	}
	return out, nil
}

// GetAs shows one rule with where it fires.
func (s *Service) GetAs(ctx context.Context, pr *auth.Principal, name string) (Rule, error) {
	if err := auth.Require(pr, store.ScopeRead); err != nil {
		return Rule{}, err
	}
	r, err := s.byName(ctx, name)
	if err != nil {
		return Rule{}, err
	}
	firing, err := s.st.FiringAlertsOfRule(ctx, r.ID)
	if err != nil {
		return Rule{}, err
	}
	return s.shown(ctx, r, firing, map[store.ID]string{}), nil
}

func (s *Service) byName(ctx context.Context, name string) (store.AlertRule, error) {
	if !validName(name) {
		return store.AlertRule{}, fmt.Errorf("%w: alert name must be 1-63 lowercase letters, digits, '.', '_' or '-'", ErrInvalid)
	}
	r, err := s.st.AlertRuleByName(ctx, name)
	if err != nil {
		return store.AlertRule{}, fmt.Errorf("alert %s: %w", name, err)
	}
	return r, nil
}

// serverName names a server for display, from the engine's cache when it
// has it.
func (s *Service) serverName(ctx context.Context, id store.ID, cache map[store.ID]string) string {
	if n, ok := cache[id]; ok {
		return n
	}
	n := id.String()
	if t := s.engTarget(id); t != nil {
		n = t.Name
	} else if srv, err := s.st.Server(ctx, id); err == nil {
		n = srv.Name
	}
	cache[id] = n
	return n
}

func (s *Service) engTarget(id store.ID) *store.AlertTarget {
	if s.eng == nil {
		return nil
	}
	return s.eng.Target(id)
}

func (s *Service) shown(ctx context.Context, r store.AlertRule, firing []store.AlertState, names map[store.ID]string) Rule {
	out := Rule{AlertRule: r}
	if r.ServerID != nil {
		out.ServerName = s.serverName(ctx, *r.ServerID, names)
	}
	for _, f := range firing {
		out.Firing = append(out.Firing, Firing{
			ServerID: f.ServerID, ServerName: s.serverName(ctx, f.ServerID, names), Mount: f.Mount,
			PendingSince: f.PendingSince, Since: f.FiringSince, Value: f.Value,
		})
	}
	return out
}

// RemoveAs deletes a rule for an admin. What it had firing is resolved in
// the same transaction (alert.resolved closes each alert.firing), so no
// inbox keeps an alert nothing will ever close.
func (s *Service) RemoveAs(ctx context.Context, pr *auth.Principal, peer Peer, name string) error {
	if err := auth.Require(pr, store.ScopeAdmin); err != nil {
		return err
	}
	r, err := s.byName(ctx, name)
	if err != nil {
		return err
	}
	err = s.st.InTx(ctx, func(tx *store.Store) error {
		if err := s.resolveAll(ctx, tx, r, "The alert rule "+r.Name+" was removed."); err != nil {
			return err
		}
		return tx.DeleteAlertRule(ctx, r.ID)
	})
	if err != nil {
		return fmt.Errorf("remove alert %s: %w", name, err)
	}
	s.reload(ctx)
	s.activity(ctx, pr, peer, kind.AlertRuleDeleted, r, map[string]any{"metric": r.Metric})
	return nil
}

// FiringOnServerAs lists what fires on one server (its page).
func (s *Service) FiringOnServerAs(ctx context.Context, pr *auth.Principal, serverID store.ID) ([]store.ServerAlert, error) {
	if err := auth.Require(pr, store.ScopeRead); err != nil {
		return nil, err
	}
	return s.st.FiringAlertsOfServer(ctx, serverID)
}
