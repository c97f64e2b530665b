package fleet

import (
	"github.com/berthhq/berth/controller/internal/auth"
	"github.com/berthhq/berth/controller/internal/store"
)

// CanWatch says whether pr may follow the fleet's live status (every
// server's name, status and last contact): what List shows, so read. The
// web UI's event stream asks before it subscribes.
func (s *Service) CanWatch(pr *auth.Principal) error {
	return require(pr, store.ScopeRead)
}
