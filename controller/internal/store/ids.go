package store

import (
	"crypto/rand"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgtype"
	"github.com/oklog/ulid/v2"
)

// ID is a row id: a ULID, stored as uuid, shown as its 26-character string.
type ID = ulid.ULID

var (
	idMu      sync.Mutex
	idEntropy = ulid.Monotonic(rand.Reader, 0)
)

// NewID makes a ULID that sorts after every id made before it in this
// process, even within one millisecond.
func NewID() ID {
	idMu.Lock()
	defer idMu.Unlock()
	return ulid.MustNew(ulid.Timestamp(time.Now()), idEntropy)
}

// ParseID parses the 26-character form a person or client sees.
func ParseID(s string) (ID, error) {
	id, err := ulid.ParseStrict(s)
	if err != nil {
		return ID{}, fmt.Errorf("invalid id %q: %w", s, ErrInvalid)
	}
	return id, nil
}

func pgID(id ID) pgtype.UUID { return pgtype.UUID{Bytes: id, Valid: true} }

// pgOptID maps nil to SQL NULL.
func pgOptID(id *ID) pgtype.UUID {
	if id == nil {
		return pgtype.UUID{}
	}
	return pgtype.UUID{Bytes: *id, Valid: true}
}

func fromPG(u pgtype.UUID) ID { return ID(u.Bytes) }

// fromOptPG maps SQL NULL to nil.
func fromOptPG(u pgtype.UUID) *ID {
	if !u.Valid {
		return nil
	}
	id := ID(u.Bytes)
	return &id
}

// pgDate is the UTC calendar day of t.
func pgDate(t time.Time) pgtype.Date {
	y, m, d := t.UTC().Date()
	return pgtype.Date{Time: time.Date(y, m, d, 0, 0, 0, 0, time.UTC), Valid: true}
}
