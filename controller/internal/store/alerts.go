package store

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/berthhq/berth/gen/dbsqlc"
)

// This file is the storage of threshold alerts (controller/internal/alert):
// the rules and the per (rule, server, mount) state. The alert package
// holds the rules of evaluation; these are plain reads and writes, except
// that FireAlert and ResolveAlert are conditional so that two controllers
// never both make the same transition.

// AlertRule is a threshold rule as stored. Above and ResolveBelow are nil
// for the offline metric.
type AlertRule struct {
	ID           ID
	Name         string
	Metric       string
	Above        *float64
	ResolveBelow *float64
	For          time.Duration
	Mount        string // "" for every mount (or a metric without mounts)
	ServerID     *ID
	LabelKey     string
	LabelValue   string
	Level        string
	CreatedAt    time.Time
}

func alertRuleFromRow(r dbsqlc.AlertRule) AlertRule {
	return AlertRule{
		ID: fromPG(r.ID), Name: r.Name, Metric: r.Metric, Above: r.Above, ResolveBelow: r.ResolveBelow,
		For: time.Duration(r.ForSeconds) * time.Second, Mount: textOf(r.Mount), ServerID: fromOptPG(r.ServerID),
		LabelKey: textOf(r.LabelKey), LabelValue: textOf(r.LabelValue), Level: r.Level, CreatedAt: r.CreatedAt,
	}
}

// CreateAlertRule stores a rule; a taken name is ErrConflict.
func (s *Store) CreateAlertRule(ctx context.Context, r AlertRule) (AlertRule, error) {
	if r.ID == (ID{}) {
		r.ID = NewID()
	}
	row, err := s.q.CreateAlertRule(ctx, dbsqlc.CreateAlertRuleParams{
		ID: pgID(r.ID), Name: r.Name, Metric: r.Metric, Above: r.Above, ResolveBelow: r.ResolveBelow,
		ForSeconds: int32(r.For / time.Second), Mount: nullText(r.Mount), ServerID: pgOptID(r.ServerID),
		LabelKey: nullText(r.LabelKey), LabelValue: nullText(r.LabelValue), Level: r.Level,
	})
	if err != nil {
		return AlertRule{}, mapErr("create alert rule", err)
	}
	return alertRuleFromRow(row), nil
}

// AlertRules lists every rule by name.
func (s *Store) AlertRules(ctx context.Context) ([]AlertRule, error) {
	rows, err := s.q.ListAlertRules(ctx)
	if err != nil {
		return nil, mapErr("list alert rules", err)
	}
	out := make([]AlertRule, len(rows))
	for i, r := range rows {
		out[i] = alertRuleFromRow(r)
	}
	return out, nil
}

// AlertRuleByName gets one rule.
func (s *Store) AlertRuleByName(ctx context.Context, name string) (AlertRule, error) {
	r, err := s.q.GetAlertRuleByName(ctx, name)
	if err != nil {
		return AlertRule{}, mapErr("get alert rule", err)
	}
	return alertRuleFromRow(r), nil
}

// DeleteAlertRule deletes a rule and (by cascade) its states.
func (s *Store) DeleteAlertRule(ctx context.Context, id ID) error {
	n, err := s.q.DeleteAlertRule(ctx, pgID(id))
	if err != nil {
		return mapErr("delete alert rule", err)
	}
	if n == 0 {
		return mapErr("delete alert rule", pgx.ErrNoRows)
	}
	return nil
}

// AlertState is where a rule fired (or fired and resolved) for one server
// and mount.
type AlertState struct {
	RuleID       ID
	ServerID     ID
	Mount        string
	Firing       bool
	PendingSince time.Time
	FiringSince  time.Time
	ResolvedAt   *time.Time
	Value        float64
}

func alertStateFromRow(r dbsqlc.AlertState) AlertState {
	st := AlertState{
		RuleID: fromPG(r.RuleID), ServerID: fromPG(r.ServerID), Mount: r.Mount, Firing: r.Status == "firing",
		PendingSince: r.PendingSince, FiringSince: r.FiringSince, ResolvedAt: r.ResolvedAt,
	}
	if r.Value != nil {
		st.Value = *r.Value
	}
	return st
}

// FireAlert opens a firing state. fired is false when it was firing
// already (another controller got there first): then nothing is to be
// published.
func (s *Store) FireAlert(ctx context.Context, st AlertState) (fired bool, err error) {
	v := st.Value
	_, err = s.q.FireAlertState(ctx, dbsqlc.FireAlertStateParams{
		RuleID: pgID(st.RuleID), ServerID: pgID(st.ServerID), Mount: st.Mount,
		PendingSince: st.PendingSince, FiringSince: st.FiringSince, Value: &v,
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, mapErr("fire alert", err)
	}
	return true, nil
}

// ResolveAlert closes a firing state. resolved is false when it was not
// firing (resolved already, elsewhere).
func (s *Store) ResolveAlert(ctx context.Context, ruleID, serverID ID, mount string, at time.Time, value float64) (resolved bool, err error) {
	_, err = s.q.ResolveAlertState(ctx, dbsqlc.ResolveAlertStateParams{
		RuleID: pgID(ruleID), ServerID: pgID(serverID), Mount: mount, ResolvedAt: &at, Value: &value,
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, mapErr("resolve alert", err)
	}
	return true, nil
}

// FiringAlerts lists every firing state, oldest first.
func (s *Store) FiringAlerts(ctx context.Context) ([]AlertState, error) {
	rows, err := s.q.ListFiringAlertStates(ctx)
	if err != nil {
		return nil, mapErr("list firing alerts", err)
	}
	out := make([]AlertState, len(rows))
	for i, r := range rows {
		out[i] = alertStateFromRow(r)
	}
	return out, nil
}

// FiringAlertsOfRule lists where one rule fires.
func (s *Store) FiringAlertsOfRule(ctx context.Context, ruleID ID) ([]AlertState, error) {
	rows, err := s.q.ListAlertStatesOfRule(ctx, pgID(ruleID))
	if err != nil {
		return nil, mapErr("list alert states", err)
	}
	out := make([]AlertState, len(rows))
	for i, r := range rows {
		out[i] = alertStateFromRow(r)
	}
	return out, nil
}

// ServerAlert is one rule firing on a server, for the server's page.
type ServerAlert struct {
	AlertState
	RuleName string
	Metric   string
	Level    string
	Above    *float64
}

// FiringAlertsOfServer lists what fires on one server.
func (s *Store) FiringAlertsOfServer(ctx context.Context, serverID ID) ([]ServerAlert, error) {
	rows, err := s.q.ListFiringAlertsOfServer(ctx, pgID(serverID))
	if err != nil {
		return nil, mapErr("list firing alerts of server", err)
	}
	out := make([]ServerAlert, len(rows))
	for i, r := range rows {
		out[i] = ServerAlert{
			AlertState: alertStateFromRow(dbsqlc.AlertState{
				RuleID: r.RuleID, ServerID: r.ServerID, Mount: r.Mount, Status: r.Status, PendingSince: r.PendingSince,
				FiringSince: r.FiringSince, ResolvedAt: r.ResolvedAt, Value: r.Value, UpdatedAt: r.UpdatedAt,
			}),
			RuleName: r.RuleName, Metric: r.Metric, Level: r.Level, Above: r.Above,
		}
	}
	return out, nil
}

// AlertTarget is what evaluation needs to know of a server.
type AlertTarget struct {
	ID         ID
	Name       string
	Labels     map[string]string
	Status     ServerStatus
	LastSeenAt *time.Time
	CPUs       int
}

// AlertTargets lists every server as evaluation sees it (one query for
// the whole fleet, refreshed now and then, not per sample).
func (s *Store) AlertTargets(ctx context.Context) ([]AlertTarget, error) {
	rows, err := s.q.ListAlertTargets(ctx)
	if err != nil {
		return nil, mapErr("list alert targets", err)
	}
	out := make([]AlertTarget, len(rows))
	for i, r := range rows {
		labels := map[string]string{}
		_ = json.Unmarshal(r.Labels, &labels) // a CHECK keeps it an object
		out[i] = AlertTarget{
			ID: fromPG(r.ID), Name: r.Name, Labels: labels, Status: ServerStatus(r.Status), LastSeenAt: r.LastSeenAt, CPUs: int(r.Cpus),
		}
	}
	return out, nil
}

// OfflineAlertTargets lists the servers that are offline now.
func (s *Store) OfflineAlertTargets(ctx context.Context) ([]AlertTarget, error) {
	rows, err := s.q.ListOfflineAlertTargets(ctx)
	if err != nil {
		return nil, mapErr("list offline servers", err)
	}
	out := make([]AlertTarget, len(rows))
	for i, r := range rows {
		labels := map[string]string{}
		_ = json.Unmarshal(r.Labels, &labels)
		out[i] = AlertTarget{ID: fromPG(r.ID), Name: r.Name, Labels: labels, Status: ServerStatus(r.Status), LastSeenAt: r.LastSeenAt}
	}
	return out, nil
}

// FSPercent is filesystem j's use as df computes it, from an agent's
// columns (j indexes FSMount, FSUsed, ...).
func (c *MetricColumns) FSPercent(j int) (pct float64, ok bool) {
	if len(c.FSAvail) > 0 {
		return usePercent(float64(c.FSUsed[j]), float64(c.FSAvail[j]), true, 0)
	}
	return usePercent(float64(c.FSUsed[j]), 0, false, float64(c.FSTotal[j]))
}

// FSInodesPercent is filesystem j's inode use; ok is false without inode
// figures.
func (c *MetricColumns) FSInodesPercent(j int) (pct float64, ok bool) {
	if len(c.FSInodesTotal) == 0 || len(c.FSInodesFree) == 0 {
		return 0, false
	}
	return inodesPercent(float64(c.FSInodesTotal[j]), float64(c.FSInodesFree[j]))
}

// UpdateAlertRule replaces rule r.ID's definition (its name stays).
func (s *Store) UpdateAlertRule(ctx context.Context, r AlertRule) (AlertRule, error) {
	row, err := s.q.UpdateAlertRule(ctx, dbsqlc.UpdateAlertRuleParams{
		ID: pgID(r.ID), Metric: r.Metric, Above: r.Above, ResolveBelow: r.ResolveBelow,
		ForSeconds: int32(r.For / time.Second), Mount: nullText(r.Mount), ServerID: pgOptID(r.ServerID),
		LabelKey: nullText(r.LabelKey), LabelValue: nullText(r.LabelValue), Level: r.Level,
	})
	if err != nil {
		return AlertRule{}, mapErr("update alert rule", err)
	}
	return alertRuleFromRow(row), nil
}
