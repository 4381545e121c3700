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
// member outside UnmatchedHeld still has the value the destination holds.
type IdentityCheck struct {
	IdentityProperty string
	Seq              int64
	UnmatchedHeld    *roaring.Bitmap
}

// IdentityCheck returns a sync's last identity check (nil when none).
func (st *Store) IdentityCheck(ctx context.Context, syncID string) (*IdentityCheck, error) {
	var c IdentityCheck
	var blob []byte
	err := st.db.QueryRowContext(ctx, `SELECT identity_property, seq, unmatched_held FROM se_identity_checks WHERE sync_id = ?`, syncID).Scan(&c.IdentityProperty, &c.Seq, &blob)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("syncengine: identity check of %s: %w", syncID, err)
	}
	if c.UnmatchedHeld, err = membership.Decode(blob); err != nil {
		return nil, fmt.Errorf("syncengine: identity check of %s: %w", syncID, err)
	}
	return &c, nil
}

// SaveIdentityCheck records a finished run's identity check.
func (st *Store) SaveIdentityCheck(ctx context.Context, syncID string, c IdentityCheck) error {
	_, err := st.db.ExecContext(ctx, `INSERT INTO se_identity_checks (sync_id, identity_property, seq, unmatched_held) VALUES (?, ?, ?, ?)
		ON CONFLICT (sync_id) DO UPDATE SET identity_property = excluded.identity_property, seq = excluded.seq, unmatched_held = excluded.unmatched_held`,
		syncID, c.IdentityProperty, c.Seq, membership.Encode(c.UnmatchedHeld))
	if err != nil {
		return fmt.Errorf("syncengine: save identity check of %s: %w", syncID, err)
	}
	return nil
}
