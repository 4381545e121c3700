package syncengine

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/RoaringBitmap/roaring/v2"

	"github.com/seghub/seghub/pkg/membership"
)

// IdentityCheck is the last full comparison of a sync's delivered identities
// with its members' current values. Until a user changes after Seq, a held
// user outside Unverified still has the value the destination holds.
// Unverified holds the held users the comparison did not confirm: members
// without a value and users held but no longer members (upsert keeps them;
// their values were not read).
type IdentityCheck struct {
	IdentityProperty string
	Seq              int64
	Unverified       *roaring.Bitmap
}

// IdentityCheck returns a sync's last identity check (nil when none).
func (st *Store) IdentityCheck(ctx context.Context, syncID string) (*IdentityCheck, error) {
	var c IdentityCheck
	var blob []byte
	err := st.db.QueryRowContext(ctx, `SELECT identity_property, seq, unverified FROM se_identity_checks WHERE sync_id = ?`, syncID).Scan(&c.IdentityProperty, &c.Seq, &blob)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("syncengine: identity check of %s: %w", syncID, err)
	}
	if c.Unverified, err = membership.Decode(blob); err != nil {
		return nil, fmt.Errorf("syncengine: identity check of %s: %w", syncID, err)
	}
	return &c, nil
}

// SaveIdentityCheck records a finished run's identity check.
func (st *Store) SaveIdentityCheck(ctx context.Context, syncID string, c IdentityCheck) error {
	_, err := st.db.ExecContext(ctx, `INSERT INTO se_identity_checks (sync_id, identity_property, seq, unverified) VALUES (?, ?, ?, ?)
		ON CONFLICT (sync_id) DO UPDATE SET identity_property = excluded.identity_property, seq = excluded.seq, unverified = excluded.unverified`,
		syncID, c.IdentityProperty, c.Seq, membership.Encode(c.Unverified))
	if err != nil {
		return fmt.Errorf("syncengine: save identity check of %s: %w", syncID, err)
	}
	return nil
}

// DeliveredMembers returns the dense ids a sync's destination holds (the
// checkpoint's keys only: an index scan, no identities).
func (st *Store) DeliveredMembers(ctx context.Context, syncID string) (*roaring.Bitmap, error) {
	rows, err := st.db.QueryContext(ctx, `SELECT dense_id FROM se_delivered WHERE sync_id = ? ORDER BY dense_id`, syncID)
	if err != nil {
		return nil, fmt.Errorf("syncengine: delivered members of %s: %w", syncID, err)
	}
	defer rows.Close()
	out := roaring.New()
	buf := make([]uint32, 0, 4096)
	for rows.Next() {
		var d int64
		if err := rows.Scan(&d); err != nil {
			return nil, fmt.Errorf("syncengine: delivered members of %s: %w", syncID, err)
		}
		if buf = append(buf, uint32(d)); len(buf) == cap(buf) {
			out.AddMany(buf)
			buf = buf[:0]
		}
	}
	out.AddMany(buf)
	return out, rows.Err()
}

// DeliveredIdentities returns what the destination holds for the given
// members of a sync: dense id → identity.
func (st *Store) DeliveredIdentities(ctx context.Context, syncID string, members *roaring.Bitmap) (map[uint32]string, error) {
	out := make(map[uint32]string, members.GetCardinality())
	all := members.ToArray()
	for i := 0; i < len(all); i += 500 {
		chunk := all[i:min(i+500, len(all))]
		args := make([]any, 0, len(chunk)+1)
		args = append(args, syncID)
		for _, d := range chunk {
			args = append(args, int64(d))
		}
		rows, err := st.db.QueryContext(ctx, `SELECT dense_id, identity FROM se_delivered WHERE sync_id = ? AND dense_id IN (`+marks(len(chunk))+`)`, args...)
		if err != nil {
			return nil, fmt.Errorf("syncengine: delivered identities of %s: %w", syncID, err)
		}
		for rows.Next() {
			var d int64
			var id string
			if err := rows.Scan(&d, &id); err != nil {
				rows.Close()
				return nil, fmt.Errorf("syncengine: delivered identities of %s: %w", syncID, err)
			}
			out[uint32(d)] = id
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("syncengine: delivered identities of %s: %w", syncID, err)
		}
	}
	return out, nil
}
