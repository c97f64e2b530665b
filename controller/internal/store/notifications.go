package store

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/berthhq/berth/gen/dbsqlc"
)

// NotificationLevel is how a notification is shown.
type NotificationLevel string

// The notification levels.
const (
	NotifyInfo    NotificationLevel = "info"
	NotifySuccess NotificationLevel = "success"
	NotifyWarning NotificationLevel = "warning"
	NotifyError   NotificationLevel = "error"
)

// Notification is one entry of a user's in-app inbox.
type Notification struct {
	ID        ID
	UserID    ID
	Kind      string // dotted lowercase, e.g. deployment.failed, server.offline
	Level     NotificationLevel
	Title     string
	Body      string
	Link      string // relative UI URL, or ""
	DedupeKey string
	ReadAt    *time.Time
	CreatedAt time.Time
}

func notificationFromRow(r dbsqlc.Notification) Notification {
	return Notification{
		ID: fromPG(r.ID), UserID: fromPG(r.UserID), Kind: r.Kind, Level: NotificationLevel(r.Level),
		Title: r.Title, Body: r.Body, Link: textOf(r.Link), DedupeKey: textOf(r.DedupeKey),
		ReadAt: r.ReadAt, CreatedAt: r.CreatedAt,
	}
}

// CreateNotificationParams describes a notification; Level defaults to info.
// With a DedupeKey (e.g. server.offline:<ulid>) a user has at most one unread
// notification per key.
type CreateNotificationParams struct {
	ID        ID
	UserID    ID
	Kind      string
	Level     NotificationLevel
	Title     string
	Body      string
	Link      string
	DedupeKey string
}

// CreateNotification puts a notification in a user's inbox. It reports false
// (and stores nothing) when an unread one with the same DedupeKey is there.
func (s *Store) CreateNotification(ctx context.Context, p CreateNotificationParams) (Notification, bool, error) {
	if p.ID == (ID{}) {
		p.ID = NewID()
	}
	if p.Level == "" {
		p.Level = NotifyInfo
	}
	r, err := s.q.CreateNotification(ctx, dbsqlc.CreateNotificationParams{
		ID: pgID(p.ID), UserID: pgID(p.UserID), Kind: p.Kind, Level: string(p.Level), Title: p.Title,
		Body: p.Body, Link: nullText(p.Link), DedupeKey: nullText(p.DedupeKey),
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return Notification{}, false, nil // ON CONFLICT DO NOTHING: a duplicate
	}
	if err != nil {
		return Notification{}, false, mapErr("create notification", err)
	}
	return notificationFromRow(r), true, nil
}

// Notification gets one of a user's notifications.
func (s *Store) Notification(ctx context.Context, userID, id ID) (Notification, error) {
	r, err := s.q.GetNotification(ctx, dbsqlc.GetNotificationParams{ID: pgID(id), UserID: pgID(userID)})
	if err != nil {
		return Notification{}, mapErr("get notification", err)
	}
	return notificationFromRow(r), nil
}

// NotificationFilter selects a user's notifications.
type NotificationFilter struct {
	UnreadOnly bool
	Before     *ID
	Limit      int
}

// Notifications lists a user's inbox, newest first.
func (s *Store) Notifications(ctx context.Context, userID ID, f NotificationFilter) ([]Notification, error) {
	before, lim := keyset(f.Before, f.Limit)
	rows, err := s.q.ListNotifications(ctx, dbsqlc.ListNotificationsParams{UserID: pgID(userID), UnreadOnly: f.UnreadOnly, Before: before, Lim: lim})
	if err != nil {
		return nil, mapErr("list notifications", err)
	}
	out := make([]Notification, len(rows))
	for i, r := range rows {
		out[i] = notificationFromRow(r)
	}
	return out, nil
}

// UnreadNotificationCount is the inbox badge.
func (s *Store) UnreadNotificationCount(ctx context.Context, userID ID) (int64, error) {
	n, err := s.q.CountUnreadNotifications(ctx, pgID(userID))
	return n, mapErr("count unread notifications", err)
}

// MarkNotificationRead marks one of a user's notifications read
// (idempotent); ErrNotFound when it is not theirs.
func (s *Store) MarkNotificationRead(ctx context.Context, userID, id ID) (Notification, error) {
	r, err := s.q.MarkNotificationRead(ctx, dbsqlc.MarkNotificationReadParams{ID: pgID(id), UserID: pgID(userID)})
	if err != nil {
		return Notification{}, mapErr("mark notification read", err)
	}
	return notificationFromRow(r), nil
}

// MarkAllNotificationsRead marks a user's whole inbox read and reports how
// many were unread.
func (s *Store) MarkAllNotificationsRead(ctx context.Context, userID ID) (int64, error) {
	n, err := s.q.MarkAllNotificationsRead(ctx, pgID(userID))
	return n, mapErr("mark all notifications read", err)
}

// DeleteNotification removes one of a user's notifications.
func (s *Store) DeleteNotification(ctx context.Context, userID, id ID) error {
	n, err := s.q.DeleteNotification(ctx, dbsqlc.DeleteNotificationParams{ID: pgID(id), UserID: pgID(userID)})
	return affected("delete notification", n, err)
}
