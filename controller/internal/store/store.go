package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/berthhq/berth/controller/internal/secrets"
	"github.com/berthhq/berth/gen/dbsqlc"
)

// dbtx is what both a pool and a transaction offer.
type dbtx interface {
	dbsqlc.DBTX
	CopyFrom(ctx context.Context, table pgx.Identifier, columns []string, src pgx.CopyFromSource) (int64, error)
	Begin(ctx context.Context) (pgx.Tx, error)
}

// Store wraps the database. The zero value is not usable; call New.
type Store struct {
	pool *pgxpool.Pool
	db   dbtx
	q    *dbsqlc.Queries
	keys *secrets.Source
}

// New returns a Store on pool. keys seals and opens encrypted columns; it may
// be nil for callers that never touch them (maintenance, read-only tools).
func New(pool *pgxpool.Pool, keys *secrets.Source) *Store {
	return &Store{pool: pool, db: pool, q: dbsqlc.New(pool), keys: keys}
}

// Pool is the underlying pool, for health checks and LISTEN.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// Keys is the key source the store seals with.
func (s *Store) Keys() *secrets.Source { return s.keys }

// InTx runs fn with a Store bound to one transaction: committed when fn
// returns nil, rolled back otherwise (and on panic). Nested calls use a
// savepoint.
func (s *Store) InTx(ctx context.Context, fn func(tx *Store) error) error {
	return pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		return fn(&Store{pool: s.pool, db: tx, q: dbsqlc.New(tx), keys: s.keys})
	})
}

// Errors callers branch on. Every error the store returns for these cases
// wraps one of them, with the constraint name for context.
var (
	ErrNotFound = errors.New("not found")
	// ErrConflict: a unique constraint (a name or hostname already taken).
	ErrConflict = errors.New("already exists")
	// ErrMissingParent: an insert or update refers to a row that does not exist.
	ErrMissingParent = errors.New("referenced row does not exist")
	// ErrReferenced: a delete is refused because other rows still need this one.
	ErrReferenced = errors.New("still referenced")
	// ErrInvalid: a CHECK or NOT NULL constraint refused the value.
	ErrInvalid = errors.New("invalid value")
)

// mapErr turns driver errors into the store's errors. what names the
// operation for the message ("get user").
func mapErr(what string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("%s: %w", what, ErrNotFound)
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "23505":
			return fmt.Errorf("%s: %w (%s)", what, ErrConflict, pgErr.ConstraintName)
		case "23503":
			// The same SQLSTATE covers both directions: the message says
			// whether a parent is missing or a child still points here.
			if pgErr.TableName != "" && isDeleteViolation(pgErr) {
				return fmt.Errorf("%s: %w (%s)", what, ErrReferenced, pgErr.ConstraintName)
			}
			return fmt.Errorf("%s: %w (%s)", what, ErrMissingParent, pgErr.ConstraintName)
		case "23514", "23502", "22001", "22P02", "22023":
			return fmt.Errorf("%s: %w (%s)", what, ErrInvalid, firstNonEmpty(pgErr.ConstraintName, pgErr.ColumnName, pgErr.Code))
		}
	}
	return fmt.Errorf("%s: %w", what, err)
}

// isUniqueViolation says whether err is a unique violation of constraint.
func isUniqueViolation(err error, constraint string) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "23505" && pgErr.ConstraintName == constraint
}

// isDeleteViolation tells "update or delete on table X violates foreign key"
// from "insert or update on table X violates foreign key".
func isDeleteViolation(e *pgconn.PgError) bool {
	return len(e.Message) >= 16 && e.Message[:16] == "update or delete"
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}
