package store

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/berthhq/berth/controller/internal/secrets"
)

// KeyUsage counts the encrypted values of one column per key id.
type KeyUsage struct {
	Column Column
	ByKey  map[uint32]int64
	// Unreadable counts values whose envelope cannot be parsed at all.
	Unreadable int64
}

// EncryptionUsage reports, for every encrypted column, how many values are
// under each key: what `berth keys status` prints and what tells an operator
// that an old key can be retired.
func (s *Store) EncryptionUsage(ctx context.Context) ([]KeyUsage, error) {
	var out []KeyUsage
	for _, c := range EncryptedColumns {
		u := KeyUsage{Column: c, ByKey: map[uint32]int64{}}
		err := s.scanColumn(ctx, c, 1000, func(_ ID, ct []byte) error {
			id, err := secrets.KeyID(ct)
			if err != nil {
				u.Unreadable++
				return nil
			}
			u.ByKey[id]++
			return nil
		})
		if err != nil {
			return nil, err
		}
		out = append(out, u)
	}
	return out, nil
}

// scanColumn walks the non-NULL values of an encrypted column in id order,
// batch rows per query, so memory stays flat on big tables.
func (s *Store) scanColumn(ctx context.Context, c Column, batch int, fn func(ID, []byte) error) error {
	table, col := pgx.Identifier{c.Table}.Sanitize(), pgx.Identifier{c.Column}.Sanitize()
	q := fmt.Sprintf(`SELECT id, %s FROM %s WHERE %s IS NOT NULL AND id > $1 ORDER BY id LIMIT $2`, col, table, col)
	after := pgtype.UUID{Valid: true} // the zero uuid sorts first
	for {
		rows, err := s.db.Query(ctx, q, after, batch)
		if err != nil {
			return mapErr("scan "+c.Table+"."+c.Column, err)
		}
		type row struct {
			id pgtype.UUID
			ct []byte
		}
		got, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (row, error) {
			var v row
			return v, r.Scan(&v.id, &v.ct)
		})
		if err != nil {
			return mapErr("scan "+c.Table+"."+c.Column, err)
		}
		for _, r := range got {
			if err := fn(fromPG(r.id), r.ct); err != nil {
				return err
			}
		}
		if len(got) < batch {
			return nil
		}
		after = got[len(got)-1].id
	}
}

// ReencryptColumn re-seals every value of c that is not under the primary
// key, batch rows per transaction. It is idempotent and so resumable: after
// a crash, running it again skips what is already done. Each update is a
// compare-and-swap on the old ciphertext, so a value changed concurrently by
// the application is left alone (it was written under the primary key).
func (s *Store) ReencryptColumn(ctx context.Context, c Column, batch int) (int64, error) {
	if s.keys == nil {
		return 0, errNoKeys
	}
	table, col := pgx.Identifier{c.Table}.Sanitize(), pgx.Identifier{c.Column}.Sanitize()
	upd := fmt.Sprintf(`UPDATE %s SET %s = $1 WHERE id = $2 AND %s = $3`, table, col, col)
	type pending struct {
		id    ID
		oldCT []byte
		newCT []byte
	}
	var done int64
	var buf []pending
	flush := func() error {
		if len(buf) == 0 {
			return nil
		}
		err := s.InTx(ctx, func(tx *Store) error {
			for _, p := range buf {
				tag, err := tx.db.Exec(ctx, upd, p.newCT, pgID(p.id), p.oldCT)
				if err != nil {
					return mapErr("reencrypt "+c.Table+"."+c.Column, err)
				}
				done += tag.RowsAffected()
			}
			return nil
		})
		buf = buf[:0]
		return err
	}
	err := s.scanColumn(ctx, c, batch, func(id ID, ct []byte) error {
		if !s.keys.Keyring().NeedsRotation(ct) {
			return nil
		}
		pt, err := s.open(c.Table, c.Column, id, ct)
		if err != nil {
			return fmt.Errorf("row %s: %w", id, err)
		}
		nct, err := s.seal(c.Table, c.Column, id, pt)
		if err != nil {
			return err
		}
		buf = append(buf, pending{id, ct, nct})
		if len(buf) >= batch {
			return flush()
		}
		return nil
	})
	if err != nil {
		return done, err
	}
	return done, flush()
}
