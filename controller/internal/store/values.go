package store

import (
	"encoding/json"
	"fmt"
	"math"

	"github.com/jackc/pgx/v5/pgtype"
)

// Paging: every listing is newest first with a keyset cursor on the ULID id
// (ids sort by creation time), so a page is "at most limit rows older than
// before" and the next page starts before the last id returned.
const (
	DefaultPageSize = 50
	MaxPageSize     = 1000
)

// keyset turns a caller's cursor and page size into query arguments: a nil
// cursor starts at the newest row; a size outside 1..MaxPageSize is clamped.
func keyset(before *ID, limit int) (pgtype.UUID, int32) {
	switch {
	case limit <= 0:
		limit = DefaultPageSize
	case limit > MaxPageSize:
		limit = MaxPageSize
	}
	return pgOptID(before), int32(limit)
}

// nullText maps "" to SQL NULL for optional free-text columns.
func nullText(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// textOf maps SQL NULL to "".
func textOf(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

// nullEnum maps the zero value of a typed string to NULL: "no filter".
func nullEnum[T ~string](v T) *string {
	return nullText(string(v))
}

// jsonObject encodes v for a jsonb column constrained to objects: a nil map
// becomes {} rather than null.
func jsonObject[M ~map[string]V, V any](m M) ([]byte, error) {
	if m == nil {
		return []byte("{}"), nil
	}
	b, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode json object: %w", ErrInvalid)
	}
	return b, nil
}

// decodeObject reads a jsonb object column. The columns it is used on carry
// a CHECK that they hold an object, so a decode error cannot happen with
// PostgreSQL's own output; it yields an empty map rather than a failed read.
func decodeObject(b []byte) map[string]any {
	m := map[string]any{}
	_ = json.Unmarshal(b, &m)
	return m
}

// nanToNil undoes the series query's NaN-for-NULL (see MetricsSeries).
func nanToNil(f float64) *float64 {
	if math.IsNaN(f) {
		return nil
	}
	return &f
}

// pgIDs converts a slice of ids for a uuid[] argument.
func pgIDs(ids []ID) []pgtype.UUID {
	out := make([]pgtype.UUID, len(ids))
	for i, id := range ids {
		out[i] = pgID(id)
	}
	return out
}

// affected turns "no row changed" into ErrNotFound for updates and deletes
// addressed by id.
func affected(what string, n int64, err error) error {
	if err != nil {
		return mapErr(what, err)
	}
	if n == 0 {
		return fmt.Errorf("%s: %w", what, ErrNotFound)
	}
	return nil
}
