package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	"github.com/berthhq/berth/controller/internal/mail"
	"github.com/berthhq/berth/controller/internal/notify"
	"github.com/berthhq/berth/controller/internal/store"
)

// newNotify builds the notifications service and adds its defaults (an
// email channel to every admin when SMTP is configured; the inbox default
// comes with the migration).
func newNotify(ctx context.Context, cfg Config, db *store.Store, publicURL string, log *slog.Logger) (*notify.Service, error) {
	mailer, err := mail.New(cfg.Web.SMTP, log)
	if err != nil {
		return nil, fmt.Errorf("smtp: %w", err)
	}
	svc, err := notify.New(notify.Config{
		Store: db, Mailer: mailer, Logger: log, AllowPrivateTargets: cfg.AllowPrivateWebhookTargets, PublicURL: publicURL,
		Lease: cfg.NotifyLease,
	})
	if err != nil {
		return nil, err
	}
	if err := svc.EnsureDefaults(ctx, strings.TrimSpace(cfg.Web.SMTP.Host) != ""); err != nil {
		return nil, fmt.Errorf("notification defaults: %w", err)
	}
	return svc, nil
}
