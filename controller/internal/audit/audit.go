// Package audit reads the security-event and activity trails for people:
// the web UI and the gRPC API list them through here, so who may see what
// is decided in one place. Writing them is each service's job.
package audit

import (
	"context"
	"fmt"

	"github.com/berthhq/berth/controller/internal/auth"
	"github.com/berthhq/berth/controller/internal/store"
)

// MaxPage bounds one page of either trail.
const MaxPage = 200

// Service lists the audit trails.
type Service struct{ st *store.Store }

// New returns the audit service.
func New(st *store.Store) *Service { return &Service{st: st} }

// SecurityEvents lists security events, newest first. Admins only: they
// name addresses, accounts and refused attempts.
func (s *Service) SecurityEvents(ctx context.Context, pr *auth.Principal, f store.SecurityEventFilter) ([]store.SecurityEvent, error) {
	if err := require(pr, store.ScopeAdmin); err != nil {
		return nil, err
	}
	if err := page(&f.Limit); err != nil {
		return nil, err
	}
	switch f.Severity {
	case "", store.SeverityInfo, store.SeverityWarning, store.SeverityCritical:
	default:
		return nil, fmt.Errorf("%w: severity must be info, warning or critical", store.ErrInvalid)
	}
	if len(f.Type) > 64 {
		return nil, fmt.Errorf("%w: type filter too long", store.ErrInvalid)
	}
	return s.st.SecurityEvents(ctx, f)
}

// Activity lists the activity log, newest first. Everyone signed in may
// read it: it records what was done, never secret values.
func (s *Service) Activity(ctx context.Context, pr *auth.Principal, f store.ActivityFilter) ([]store.Activity, error) {
	if err := require(pr, store.ScopeRead); err != nil {
		return nil, err
	}
	if err := page(&f.Limit); err != nil {
		return nil, err
	}
	if len(f.Action) > 64 || len(f.SubjectType) > 64 {
		return nil, fmt.Errorf("%w: filter too long", store.ErrInvalid)
	}
	return s.st.ActivityLog(ctx, f)
}

func page(limit *int) error {
	if *limit < 0 || *limit > MaxPage {
		return fmt.Errorf("%w: limit must be between 1 and %d", store.ErrInvalid, MaxPage)
	}
	if *limit == 0 {
		*limit = 50
	}
	return nil
}

// require is auth.Require, the check every service shares.
var require = auth.Require
