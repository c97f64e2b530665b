package store_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5/pgtype"

	"github.com/berthhq/berth/controller/internal/secrets"
	"github.com/berthhq/berth/controller/internal/store"
	"github.com/berthhq/berth/controller/internal/testdb"
)

// Fixtures for the apps, deployments, domains and backups tests. Servers
// and users are inserted with raw SQL so these tests do not depend on the
// servers and users store API.

type appsEnv struct {
	db *testdb.DB
	st *store.Store
	kr *secrets.Keyring
}

func newAppsEnv(t *testing.T) appsEnv {
	t.Helper()
	kr, err := secrets.Generate()
	if err != nil {
		t.Fatal(err)
	}
	db := testdb.New(t)
	return appsEnv{db: db, st: store.New(db.Pool, secrets.NewSource(kr, "")), kr: kr}
}

func pgu(id store.ID) pgtype.UUID { return pgtype.UUID{Bytes: id, Valid: true} }

// rawServer inserts a server row and returns its id.
func rawServer(t *testing.T, db *testdb.DB, name string) store.ID {
	t.Helper()
	id := store.NewID()
	if _, err := db.Pool.Exec(context.Background(), `INSERT INTO servers (id, name) VALUES ($1, $2)`, pgu(id), name); err != nil {
		t.Fatalf("insert server %s: %v", name, err)
	}
	return id
}

// rawUser inserts an active user row and returns its id.
func rawUser(t *testing.T, db *testdb.DB, email string) store.ID {
	t.Helper()
	id := store.NewID()
	if _, err := db.Pool.Exec(context.Background(), `INSERT INTO users (id, email, password_hash) VALUES ($1, $2, 'x')`, pgu(id), email); err != nil {
		t.Fatalf("insert user %s: %v", email, err)
	}
	return id
}

// mkApp creates an app named name on server with the defaults.
func (e appsEnv) mkApp(t *testing.T, server store.ID, name string) store.App {
	t.Helper()
	a, err := e.st.CreateApp(context.Background(), store.CreateAppParams{AppSettings: store.AppSettings{
		ServerID: server, Name: name, RepositoryURL: "https://git.example.com/" + name + ".git",
	}})
	if err != nil {
		t.Fatalf("create app %s: %v", name, err)
	}
	return a
}

// rawBytes reads one bytea column of one row.
func (e appsEnv) rawBytes(t *testing.T, table, column string, id store.ID) []byte {
	t.Helper()
	var b []byte
	q := fmt.Sprintf(`SELECT %s FROM %s WHERE id = $1`, column, table)
	if err := e.db.Pool.QueryRow(context.Background(), q, pgu(id)).Scan(&b); err != nil {
		t.Fatalf("read %s.%s: %v", table, column, err)
	}
	return b
}

// moveCiphertext copies a column's value from one row to another by raw SQL.
func (e appsEnv) moveCiphertext(t *testing.T, table, column string, from, to store.ID) {
	t.Helper()
	q := fmt.Sprintf(`UPDATE %[1]s SET %[2]s = (SELECT %[2]s FROM %[1]s WHERE id = $1) WHERE id = $2`, table, column)
	if _, err := e.db.Pool.Exec(context.Background(), q, pgu(from), pgu(to)); err != nil {
		t.Fatalf("move %s.%s: %v", table, column, err)
	}
}

func ptrTo[T any](v T) *T { return &v }

// wantErr fails unless err matches target.
func wantErr(t *testing.T, what string, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("%s: got error %v, want %v", what, err, target)
	}
}

// pageAll walks a keyset-paged list with the given page size and fails when
// an id repeats; it returns the ids in the order seen.
func pageAll(t *testing.T, size int, page func(before *store.ID, limit int) ([]store.ID, error)) []store.ID {
	t.Helper()
	var all []store.ID
	seen := map[store.ID]bool{}
	var before *store.ID
	for range 1000 {
		ids, err := page(before, size)
		if err != nil {
			t.Fatalf("page: %v", err)
		}
		if len(ids) > size {
			t.Fatalf("page of %d rows for limit %d", len(ids), size)
		}
		for _, id := range ids {
			if seen[id] {
				t.Fatalf("id %s seen twice while paging", id)
			}
			seen[id] = true
			all = append(all, id)
		}
		if len(ids) < size {
			return all
		}
		last := ids[len(ids)-1]
		before = &last
	}
	t.Fatal("paging does not end")
	return nil
}

// sameIDs reports whether got holds exactly want, newest (largest) first.
func checkNewestFirst(t *testing.T, what string, got []store.ID, want []store.ID) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: got %d ids, want %d", what, len(got), len(want))
	}
	for i := range want {
		if got[i] != want[len(want)-1-i] {
			t.Fatalf("%s: position %d is %s, want %s", what, i, got[i], want[len(want)-1-i])
		}
	}
}
