package deploys

import (
	"context"
	"fmt"

	"github.com/berthhq/berth/controller/internal/auth"
	"github.com/berthhq/berth/controller/internal/store"
)

// The web UI's pages show apps and deployments with their server's and
// app's names. These methods gather those names behind the same check as
// the lists themselves, so no page reads the store on its own.

// AppRow is one line of the apps list.
type AppRow struct {
	store.App
	ServerName string
	Last       *store.Deployment // the newest deployment, if any
}

// AppRows lists every app with its server's name and latest deployment.
// Read scope.
func (s *Service) AppRows(ctx context.Context, pr *auth.Principal) ([]AppRow, error) {
	apps, err := s.ListApps(ctx, pr, "")
	if err != nil {
		return nil, err
	}
	servers := map[store.ID]string{}
	rows := make([]AppRow, len(apps))
	for i, a := range apps {
		rows[i] = AppRow{App: a}
		name, ok := servers[a.ServerID]
		if !ok {
			srv, err := s.st.Server(ctx, a.ServerID)
			if err != nil {
				return nil, fmt.Errorf("app %s: server: %w", a.Name, err)
			}
			name = srv.Name
			servers[a.ServerID] = name
		}
		rows[i].ServerName = name
		last, err := s.st.ListDeployments(ctx, store.DeploymentFilter{AppID: &a.ID, Limit: 1})
		if err != nil {
			return nil, fmt.Errorf("app %s: deployments: %w", a.Name, err)
		}
		if len(last) == 1 {
			rows[i].Last = &last[0]
		}
	}
	return rows, nil
}

// DeploymentRow is a deployment with its app's name.
type DeploymentRow struct {
	store.Deployment
	AppName string
}

// AllDeployments lists the deployments of every app, newest first, with
// their apps' names. Read scope.
func (s *Service) AllDeployments(ctx context.Context, pr *auth.Principal, before *store.ID, limit int) ([]DeploymentRow, error) {
	if err := require(pr, store.ScopeRead); err != nil {
		return nil, err
	}
	list, err := s.st.ListDeployments(ctx, store.DeploymentFilter{Before: before, Limit: limit})
	if err != nil {
		return nil, err
	}
	names := map[store.ID]string{}
	rows := make([]DeploymentRow, len(list))
	for i, d := range list {
		rows[i] = DeploymentRow{Deployment: d}
		name, ok := names[d.AppID]
		if !ok {
			a, err := s.st.App(ctx, d.AppID)
			if err != nil {
				return nil, fmt.Errorf("deployment %s: app: %w", d.ID, err)
			}
			name = a.Name
			names[d.AppID] = name
		}
		rows[i].AppName = name
	}
	return rows, nil
}

// DeploymentWithApp returns a deployment and its app. Read scope.
func (s *Service) DeploymentWithApp(ctx context.Context, pr *auth.Principal, ref string) (store.Deployment, store.App, error) {
	d, err := s.GetDeployment(ctx, pr, ref)
	if err != nil {
		return store.Deployment{}, store.App{}, err
	}
	a, err := s.st.App(ctx, d.AppID)
	if err != nil {
		return store.Deployment{}, store.App{}, err
	}
	return d, a, nil
}
