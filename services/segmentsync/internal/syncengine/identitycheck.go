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
