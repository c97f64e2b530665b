package auth_test

import (
	"slices"
	"testing"

	"github.com/berthhq/berth/controller/internal/auth"
	"github.com/berthhq/berth/controller/internal/store"
)

func TestOneRanking(t *testing.T) {
	order := []store.Scope{store.ScopeRead, store.ScopeWrite, store.ScopeDeploy, store.ScopeAdmin}
	for i := 1; i < len(order); i++ {
		if auth.Rank(order[i-1]) >= auth.Rank(order[i]) {
			t.Fatalf("%s does not rank below %s", order[i-1], order[i])
		}
	}
	if auth.Rank("root") != 0 || auth.ValidScope("") {
		t.Fatal("unknown scopes rank")
	}
	if got := auth.RoleScopes(store.RoleOperator); !slices.Equal(got, order[:3]) {
		t.Fatalf("operator scopes %v", got)
	}
	if got := auth.CapScopes([]store.Scope{store.ScopeRead, store.ScopeAdmin}, store.RoleViewer); !slices.Equal(got, []store.Scope{store.ScopeRead, store.ScopeRead}) {
		t.Fatalf("admin token of a viewer: %v", got)
	}
	if got := auth.CapScopes([]store.Scope{store.ScopeAdmin}, "gone"); len(got) != 0 {
		t.Fatalf("unknown role keeps %v", got)
	}
	var nobody *auth.Principal
	if nobody.Allows(store.ScopeRead) || auth.Require(nil, store.ScopeRead) == nil {
		t.Fatal("nil principal allowed")
	}
	p := &auth.Principal{UserID: store.NewID(), Scopes: []store.Scope{store.ScopeWrite}}
	if !p.Allows(store.ScopeRead) || !p.Allows(store.ScopeWrite) || p.Allows(store.ScopeDeploy) || p.Allows("bogus") {
		t.Fatal("write principal")
	}
}

// The activity log names an actor the same way in every service.
func TestPrincipalActor(t *testing.T) {
	uid, tid := store.NewID(), store.NewID()
	if typ, name, u := (*auth.Principal)(nil).Actor(); typ != store.ActorSystem || name != "system" || u != nil {
		t.Fatalf("nil principal: %v %q %v", typ, name, u)
	}
	if typ, name, u := (&auth.Principal{UserID: uid, Email: "a@example.com", TokenID: &tid}).Actor(); typ != store.ActorAPIToken || name != "a@example.com" || u == nil || *u != uid {
		t.Fatalf("token: %v %q %v", typ, name, u)
	}
	if typ, name, u := (&auth.Principal{UserID: uid, Email: "a@example.com"}).Actor(); typ != store.ActorUser || name != "a@example.com" || u == nil || *u != uid {
		t.Fatalf("session: %v %q %v", typ, name, u)
	}
}
