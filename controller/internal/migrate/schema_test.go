package migrate_test

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/berthhq/berth/controller/internal/store"
	"github.com/berthhq/berth/controller/internal/testdb"
)

func TestMain(m *testing.M) { testdb.Main(m) }

// seedTables is the seed's 16 tables in migration order.
var seedTables = []string{"users", "sessions", "password_reset_tokens", "login_attempts", "servers", "server_metrics",
	"git_credentials", "apps", "deployments", "domains", "backup_destinations", "backups", "backup_schedules",
	"security_events", "notifications", "activity_log"}

// seedEncrypted is the seed's list of encrypted fields.
var seedEncrypted = []store.Column{
	{Table: "users", Column: "two_factor_secret"}, {Table: "users", Column: "recovery_codes"},
	{Table: "servers", Column: "ssh_private_key"},
	{Table: "apps", Column: "env_vars"}, {Table: "apps", Column: "env_production"}, {Table: "apps", Column: "env_staging"},
	{Table: "git_credentials", Column: "credentials"}, {Table: "backup_destinations", Column: "credentials"},
}

type fk struct {
	table, columns, ref string
	onDelete            byte // pg_constraint.confdeltype: a no action, r restrict, c cascade, n set null
}

// seedRelations is every relation in the seed's Relationships and Migration
// Order sections, with its deliberate ON DELETE (reasons in db/README.md).
var seedRelations = []fk{
	{"sessions", "user_id", "users", 'c'},
	{"login_attempts", "user_id", "users", 'n'},
	{"server_metrics", "server_id", "servers", 'c'},
	{"apps", "server_id", "servers", 'r'},
	{"apps", "git_credential_id", "git_credentials", 'r'},
	{"deployments", "app_id", "apps", 'c'},
	{"deployments", "user_id", "users", 'n'},
	{"deployments", "rollback_from_id,app_id", "deployments", 'n'},
	{"domains", "app_id,server_id", "apps", 'c'},
	{"domains", "server_id", "servers", 'r'},
	{"backups", "app_id", "apps", 'n'},
	{"backups", "backup_destination_id", "backup_destinations", 'r'},
	{"backup_schedules", "app_id", "apps", 'c'},
	{"backup_schedules", "backup_destination_id", "backup_destinations", 'r'},
	{"security_events", "user_id", "users", 'n'},
	{"security_events", "server_id", "servers", 'n'},
	{"notifications", "user_id", "users", 'c'},
	{"activity_log", "user_id", "users", 'n'},
}

func strings1(t *testing.T, pool *pgxpool.Pool, q string, args ...any) []string {
	t.Helper()
	rows, err := pool.Query(context.Background(), q, args...)
	if err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return out
}

func TestSchemaMatchesSeed(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t).Pool

	tables := strings1(t, pool, `SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = 'public' AND c.relkind IN ('r','p') AND NOT c.relispartition`)
	for _, name := range seedTables {
		if !slices.Contains(tables, name) {
			t.Errorf("seed table %s missing", name)
		}
	}

	// Every seed table but server_metrics has a uuid primary key on id.
	for _, name := range seedTables {
		got := strings1(t, pool, `SELECT a.attname || ':' || format_type(a.atttypid, a.atttypmod)
			FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
			WHERE i.indrelid = $1::regclass AND i.indisprimary`, name)
		want := []string{"id:uuid"}
		if name == "server_metrics" {
			want = []string{} // no surrogate key: measured COPY speed, db/README.md
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s primary key = %v, want %v", name, got, want)
		}
	}

	// Foreign keys: the seed's relations with their ON DELETE.
	fks := strings1(t, pool, `SELECT c.relname || '|' ||
			(SELECT string_agg(a.attname, ',' ORDER BY k.ord) FROM unnest(con.conkey) WITH ORDINALITY k(attnum, ord)
			 JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.attnum) || '|' ||
			r.relname || '|' || con.confdeltype::text
		FROM pg_constraint con JOIN pg_class c ON c.oid = con.conrelid JOIN pg_class r ON r.oid = con.confrelid
		WHERE con.contype = 'f' AND con.conparentid = 0`)
	for _, want := range seedRelations {
		key := want.table + "|" + want.columns + "|" + want.ref + "|" + string(want.onDelete)
		if !slices.Contains(fks, key) {
			t.Errorf("foreign key %s missing; have %v", key, fks)
		}
	}

	// Every foreign key is backed by an index that starts with its columns,
	// so joins and ON DELETE checks never scan the child table.
	unindexed := strings1(t, pool, `SELECT con.conname::text FROM pg_constraint con
		WHERE con.contype = 'f' AND con.conparentid = 0 AND NOT EXISTS (
			SELECT 1 FROM pg_index i WHERE i.indrelid = con.conrelid
			AND (i.indkey::int2[])[0:cardinality(con.conkey)-1] @> con.conkey
			AND (i.indkey::int2[])[0:cardinality(con.conkey)-1] <@ con.conkey)`)
	if len(unindexed) > 0 {
		t.Errorf("foreign keys without a leading index: %v", unindexed)
	}

	// Status columns: constrained and indexed.
	statusTables := strings1(t, pool, `SELECT c.relname::text FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
		JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = 'public' AND c.relkind IN ('r','p') AND NOT c.relispartition AND a.attname = 'status' AND NOT a.attisdropped`)
	if len(statusTables) < 5 {
		t.Fatalf("only %d tables with a status column: %v", len(statusTables), statusTables)
	}
	for _, tbl := range statusTables {
		checks := strings1(t, pool, `SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = $1::regclass AND contype = 'c'
			AND pg_get_constraintdef(oid) ~ '\mstatus\M'`, tbl)
		if len(checks) == 0 {
			t.Errorf("%s.status has no CHECK constraint", tbl)
		}
		idx := strings1(t, pool, `SELECT indexrelid::regclass::text FROM pg_index i JOIN pg_attribute a
			ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] WHERE i.indrelid = $1::regclass AND a.attname = 'status'`, tbl)
		if len(idx) == 0 {
			t.Errorf("%s.status has no index", tbl)
		}
	}

	// Indexes the seed names.
	defs := strings.Join(strings1(t, pool, `SELECT pg_get_indexdef(indexrelid) FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid WHERE NOT c.relispartition`), "\n")
	for _, want := range []string{"ON public.deployments USING btree (created_at DESC)", "ON ONLY public.server_metrics USING btree (server_id, recorded_at DESC)"} {
		if !strings.Contains(defs, want) {
			t.Errorf("index %q missing", want)
		}
	}

	// Encrypted columns are bytea; the store's list covers the seed's.
	for _, c := range seedEncrypted {
		if !slices.Contains(store.EncryptedColumns, c) {
			t.Errorf("store.EncryptedColumns misses the seed's %s.%s", c.Table, c.Column)
		}
	}
	for _, c := range store.EncryptedColumns {
		typ := strings1(t, pool, `SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = $1::regclass AND attname = $2`, c.Table, c.Column)
		if !slices.Equal(typ, []string{"bytea"}) {
			t.Errorf("encrypted column %s.%s has type %v, want bytea", c.Table, c.Column, typ)
		}
	}

	// server_metrics: range-partitioned by day on recorded_at, with today's
	// partition ready so ingest works on a new install.
	key := strings1(t, pool, `SELECT pg_get_partkeydef('server_metrics'::regclass)`)
	if !slices.Equal(key, []string{"RANGE (recorded_at)"}) {
		t.Errorf("server_metrics partition key = %v", key)
	}
	today := strings1(t, pool, `SELECT 'server_metrics_p' || to_char(now() AT TIME ZONE 'UTC', 'YYYYMMDD')`)[0]
	parts := strings1(t, pool, `SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'server_metrics'::regclass`)
	if !slices.Contains(parts, today) {
		t.Errorf("no partition %s for today; have %v", today, parts)
	}
}
