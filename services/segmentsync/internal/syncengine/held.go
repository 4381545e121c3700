package syncengine

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"github.com/RoaringBitmap/roaring/v2"

	"github.com/seghub/seghub/pkg/membership"
	"github.com/seghub/seghub/pkg/store"
)

// What a sync's destination holds (migration 006): the dense ids as a
// bitmap, compacted in se_held, plus one delta per acknowledged batch in
// se_held_log; identities only where the user's own id does not give them
// (se_held_identities). A run plans by bitmap algebra and writes per batch
// one delta row and the identities that need a row, not one row per user.

// compactEvery is how many batch deltas a run appends before folding them
// into the bitmap, so a resumed run replays few.
const compactEvery = 256

// HeldIdentity is an identity a batch delivered: Identity is what the
// destination now holds for UserID. Stored says the user's previous identity
// had a row, which then keeps it even when Identity is the user id.
type HeldIdentity struct {
	UserID, Identity string
	Stored           bool
}

// needsRow reports whether h cannot be derived from the user's id alone.
func (h HeldIdentity) needsRow() bool { return h.Stored || h.Identity != h.UserID }

// Held returns the dense ids a sync's destination holds.
func (st *Store) Held(ctx context.Context, syncID string) (*roaring.Bitmap, error) {
	b, _, err := held(ctx, st.db, syncID)
	return b, err
}

// held reads the compacted bitmap and applies the deltas after it; it also
// returns the last delta's seq (0 when none).
func held(ctx context.Context, q store.Querier, syncID string) (*roaring.Bitmap, int64, error) {
	var blob []byte
	err := q.QueryRowContext(ctx, `SELECT members FROM se_held WHERE sync_id = ?`, syncID).Scan(&blob)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return nil, 0, fmt.Errorf("syncengine: held members of %s: %w", syncID, err)
	}
	b, err := membership.Decode(blob)
	if err != nil {
		return nil, 0, fmt.Errorf("syncengine: held members of %s: %w", syncID, err)
	}
	rows, err := q.QueryContext(ctx, `SELECT seq, added, removed FROM se_held_log WHERE sync_id = ? ORDER BY seq`, syncID)
	if err != nil {
		return nil, 0, fmt.Errorf("syncengine: held deltas of %s: %w", syncID, err)
	}
	defer rows.Close()
	var last int64
	for rows.Next() {
		var a, r []byte
		if err := rows.Scan(&last, &a, &r); err != nil {
			return nil, 0, fmt.Errorf("syncengine: held deltas of %s: %w", syncID, err)
		}
		added, err := membership.Decode(a)
		if err != nil {
			return nil, 0, fmt.Errorf("syncengine: held delta %d of %s: %w", last, syncID, err)
		}
		removed, err := membership.Decode(r)
		if err != nil {
			return nil, 0, fmt.Errorf("syncengine: held delta %d of %s: %w", last, syncID, err)
		}
		b.AndNot(removed)
		b.Or(added)
	}
	if err := rows.Err(); err != nil {
		return nil, 0, fmt.Errorf("syncengine: held deltas of %s: %w", syncID, err)
	}
	return b, last, nil
}

// storedIdentities returns a sync's identity rows, of the given dense ids
// only unless members is nil. Rows of users not held (a deleted user's id
// kept for a sync that never held it) may be among them.
func (st *Store) storedIdentities(ctx context.Context, syncID string, members *roaring.Bitmap) (map[uint32]string, error) {
	out := map[uint32]string{}
	read := func(q string, args ...any) error {
		rows, err := st.db.QueryContext(ctx, q, args...)
		if err != nil {
			return fmt.Errorf("syncengine: stored identities of %s: %w", syncID, err)
		}
		defer rows.Close()
		for rows.Next() {
			var d int64
			var id string
			if err := rows.Scan(&d, &id); err != nil {
				return fmt.Errorf("syncengine: stored identities of %s: %w", syncID, err)
			}
			out[uint32(d)] = id
		}
		return rows.Err()
	}
	if members == nil {
		return out, read(`SELECT dense_id, identity FROM se_held_identities WHERE sync_id = ?`, syncID)
	}
	all := members.ToArray()
	for i := 0; i < len(all); i += 500 {
		q, args := denseIn(st.db.Dialect, `SELECT dense_id, identity FROM se_held_identities WHERE sync_id = ? AND dense_id`, syncID, all[i:min(i+500, len(all))])
		if err := read(q, args...); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// denseIn completes prefix ("... AND dense_id") with a membership test: one
// array parameter on PostgreSQL, an IN list on SQLite.
func denseIn(d store.Dialect, prefix string, first any, dense []uint32) (string, []any) {
	vals := make([]int64, len(dense))
	for i, v := range dense {
		vals[i] = int64(v)
	}
	if d == store.Postgres {
		return prefix + ` = ANY(?)`, []any{first, vals}
	}
	args := make([]any, 0, len(vals)+1)
	args = append(args, first)
	for _, v := range vals {
		args = append(args, v)
	}
	return prefix + ` IN (` + marks(len(vals)) + `)`, args
}

// userIDs returns the user ids of env's users with the given dense ids that
// still exist (a user's id never changes with its dense id).
func (st *Store) userIDs(ctx context.Context, env string, members *roaring.Bitmap) (map[uint32]string, error) {
	out := make(map[uint32]string, members.GetCardinality())
	if members.IsEmpty() {
		return out, nil
	}
	read := func(q string, args ...any) error {
		rows, err := st.db.QueryContext(ctx, q, args...)
		if err != nil {
			return fmt.Errorf("syncengine: user ids of %s: %w", env, err)
		}
		defer rows.Close()
		for rows.Next() {
			var d int64
			var id string
			if err := rows.Scan(&d, &id); err != nil {
				return fmt.Errorf("syncengine: user ids of %s: %w", env, err)
			}
			if members.Contains(uint32(d)) {
				out[uint32(d)] = id
			}
		}
		return rows.Err()
	}
	// Users created together have consecutive dense ids: one range scan
	// when the range holds at most twice the users asked for.
	if lo, hi := members.Minimum(), members.Maximum(); uint64(hi-lo)+1 <= 2*members.GetCardinality() {
		return out, read(`SELECT dense_id, user_id FROM ss_users WHERE environment_id = ? AND dense_id BETWEEN ? AND ?`, env, int64(lo), int64(hi))
	}
	all := members.ToArray()
	for i := 0; i < len(all); i += 500 {
		q, args := denseIn(st.db.Dialect, `SELECT dense_id, user_id FROM ss_users WHERE environment_id = ? AND dense_id`, env, all[i:min(i+500, len(all))])
		if err := read(q, args...); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// heldIdentities returns what the destination holds for the given held
// users: the stored identity, else the user's id. stored holds the rows
// already read (nil: read them).
func (st *Store) heldIdentities(ctx context.Context, env, syncID string, members *roaring.Bitmap, stored map[uint32]string) (map[uint32]string, error) {
	var err error
	if stored == nil {
		if stored, err = st.storedIdentities(ctx, syncID, members); err != nil {
			return nil, err
		}
	}
	out := make(map[uint32]string, members.GetCardinality())
	derive := roaring.New()
	it := members.Iterator()
	for it.HasNext() {
		d := it.Next()
		if id, ok := stored[d]; ok {
			out[d] = id
		} else {
			derive.Add(d)
		}
	}
	ids, err := st.userIDs(ctx, env, derive)
	if err != nil {
		return nil, err
	}
	for d, id := range ids {
		out[d] = id
	}
	if n := derive.GetCardinality() - uint64(len(ids)); n > 0 {
		// Only a deletion without its row could cause this; a user deleted
		// keeps a row for every sync (keepDeletedIdentity).
		return nil, fmt.Errorf("syncengine: sync %s holds %d users whose identity is neither stored nor derivable", syncID, n)
	}
	return out, nil
}

// Delivered returns what the destination holds for a sync: dense id → identity.
func (st *Store) Delivered(ctx context.Context, syncID string) (map[uint32]string, error) {
	b, err := st.Held(ctx, syncID)
	if err != nil || b.IsEmpty() {
		return map[uint32]string{}, err
	}
	var env string
	if err := st.db.QueryRowContext(ctx, `SELECT environment_id FROM se_syncs WHERE sync_id = ?`, syncID).Scan(&env); err != nil && !errors.Is(err, sql.ErrNoRows) {
		return nil, err
	}
	return st.heldIdentities(ctx, env, syncID, b, nil)
}

// writeHeld records a batch's effect on what the destination holds: one
// delta and the identity rows it changes.
func writeHeld(ctx context.Context, tx *store.Tx, syncID string, a Ack) error {
	added := roaring.New()
	for d := range a.Added {
		added.Add(d)
	}
	removed := roaring.BitmapOf(a.Removed...)
	if !added.IsEmpty() || !removed.IsEmpty() {
		var last int64
		if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(seq), 0) FROM se_held_log WHERE sync_id = ?`, syncID).Scan(&last); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO se_held_log (sync_id, seq, added, removed) VALUES (?, ?, ?, ?)`,
			syncID, last+1, membership.Encode(added), membership.Encode(removed)); err != nil {
			return err
		}
	}
	if err := chunked(ctx, tx, len(a.Removed), func(i, j int) (string, []any) {
		return denseIn(tx.Dialect, `DELETE FROM se_held_identities WHERE sync_id = ? AND dense_id`, syncID, a.Removed[i:j])
	}); err != nil {
		return err
	}
	rows := make([]uint32, 0)
	for d, h := range a.Added {
		if h.needsRow() {
			rows = append(rows, d)
		}
	}
	return chunked(ctx, tx, len(rows), func(i, j int) (string, []any) {
		var b strings.Builder
		args := make([]any, 0, (j-i)*3)
		for k, d := range rows[i:j] {
			if k > 0 {
				b.WriteString(",")
			}
			b.WriteString("(?, ?, ?, FALSE)")
			args = append(args, syncID, int64(d), a.Added[d].Identity)
		}
		return `INSERT INTO se_held_identities (sync_id, dense_id, identity, deleted_user) VALUES ` + b.String() +
			` ON CONFLICT (sync_id, dense_id) DO UPDATE SET identity = excluded.identity, deleted_user = excluded.deleted_user`, args
	})
}

// Compact folds a sync's deltas into its bitmap. It changes what is read,
// not what is held, so it needs no lease; but with cleanup (at a run's end,
// every acknowledged batch recorded) it also drops the rows of deleted
// users the sync does not hold, and then only while r's lease is held.
func (st *Store) Compact(ctx context.Context, syncID string, cleanup bool, r *Run) error {
	return st.db.InTx(ctx, func(tx *store.Tx) error {
		if cleanup && r != nil && r.LeaseOwner != "" {
			res, err := tx.ExecContext(ctx, `UPDATE se_runs SET lease_owner = lease_owner WHERE run_id = ? AND lease_owner = ?`, r.ID, r.LeaseOwner)
			if err != nil {
				return err
			}
			if err := fenced(res); err != nil {
				return err
			}
		}
		// The row lock serialises compactions (PostgreSQL): two folding the
		// same deltas must not each delete what the other did not write.
		if _, err := tx.ExecContext(ctx, `INSERT INTO se_held (sync_id, members) VALUES (?, ?) ON CONFLICT (sync_id) DO UPDATE SET sync_id = excluded.sync_id`,
			syncID, membership.Encode(roaring.New())); err != nil {
			return err
		}
		b, last, err := held(ctx, tx, syncID)
		if err != nil {
			return err
		}
		if last > 0 {
			if _, err := tx.ExecContext(ctx, `UPDATE se_held SET members = ? WHERE sync_id = ?`, membership.Encode(b), syncID); err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, `DELETE FROM se_held_log WHERE sync_id = ? AND seq <= ?`, syncID, last); err != nil {
				return err
			}
		}
		if !cleanup {
			return nil
		}
		rows, err := tx.QueryContext(ctx, `SELECT dense_id FROM se_held_identities WHERE sync_id = ? AND deleted_user`, syncID)
		if err != nil {
			return err
		}
		var drop []uint32
		for rows.Next() {
			var d int64
			if err := rows.Scan(&d); err != nil {
				rows.Close()
				return err
			}
			if !b.Contains(uint32(d)) {
				drop = append(drop, uint32(d))
			}
		}
		if err := rows.Close(); err != nil {
			return err
		}
		return chunked(ctx, tx, len(drop), func(i, j int) (string, []any) {
			return denseIn(tx.Dialect, `DELETE FROM se_held_identities WHERE sync_id = ? AND dense_id`, syncID, drop[i:j])
		})
	})
}

// KeepDeletedIdentity stores a user's id for every sync of env before the
// user is deleted, in the deleting transaction: the id is the identity a
// sync holding the user derives, and the next run must still remove it.
// Rows of syncs that do not hold the user are dropped at their next run's end.
func (st *Store) KeepDeletedIdentity(ctx context.Context, tx store.Querier, env string, dense uint32, userID string) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO se_held_identities (sync_id, dense_id, identity, deleted_user)
		SELECT sync_id, CAST(? AS BIGINT), CAST(? AS TEXT), TRUE FROM se_syncs WHERE environment_id = ?
		ON CONFLICT (sync_id, dense_id) DO NOTHING`, int64(dense), userID, env)
	if err != nil {
		return fmt.Errorf("syncengine: keep the identity of deleted user %q: %w", userID, err)
	}
	return nil
}

// forgetHeld drops what a sync's destination holds.
func forgetHeld(ctx context.Context, q store.Querier, syncID string) error {
	for _, table := range []string{"se_held", "se_held_log", "se_held_identities", "se_delivered"} {
		if _, err := q.ExecContext(ctx, `DELETE FROM `+table+` WHERE sync_id = ?`, syncID); err != nil {
			return err
		}
	}
	return nil
}

// convertDelivered moves checkpoints of versions before migration 006 (one
// se_delivered row per user) to the bitmap and identity rows, one sync per
// transaction; identities equal to the user's id are dropped as derivable.
func (st *Store) convertDelivered(ctx context.Context) error {
	rows, err := st.db.QueryContext(ctx, `SELECT DISTINCT sync_id FROM se_delivered`)
	if err != nil {
		return fmt.Errorf("syncengine: convert checkpoints: %w", err)
	}
	var syncs []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return fmt.Errorf("syncengine: convert checkpoints: %w", err)
		}
		syncs = append(syncs, id)
	}
	if err := rows.Close(); err != nil {
		return fmt.Errorf("syncengine: convert checkpoints: %w", err)
	}
	if len(syncs) == 0 {
		return nil
	}
	users, err := st.tableExists(ctx, "ss_users")
	if err != nil {
		return fmt.Errorf("syncengine: convert checkpoints: %w", err)
	}
	for _, id := range syncs {
		if err := st.convertSync(ctx, id, users); err != nil {
			return fmt.Errorf("syncengine: convert the checkpoint of sync %s: %w", id, err)
		}
	}
	return nil
}

func (st *Store) convertSync(ctx context.Context, syncID string, users bool) error {
	return st.db.InTx(ctx, func(tx *store.Tx) error {
		// Locks the sync's row: of two processes converting, one does.
		if _, err := tx.ExecContext(ctx, `UPDATE se_syncs SET sync_id = sync_id WHERE sync_id = ?`, syncID); err != nil {
			return err
		}
		q := `SELECT dense_id, identity, '' FROM se_delivered WHERE sync_id = ?`
		if users {
			q = `SELECT d.dense_id, d.identity, COALESCE(u.user_id, '') FROM se_delivered d
				LEFT JOIN se_syncs s ON s.sync_id = d.sync_id
				LEFT JOIN ss_users u ON u.environment_id = s.environment_id AND u.dense_id = d.dense_id
				WHERE d.sync_id = ?`
		}
		rows, err := tx.QueryContext(ctx, q, syncID)
		if err != nil {
			return err
		}
		type stored struct {
			dense    uint32
			identity string
			deleted  bool
		}
		b := roaring.New()
		var keep []stored
		for rows.Next() {
			var d int64
			var identity, user string
			if err := rows.Scan(&d, &identity, &user); err != nil {
				rows.Close()
				return err
			}
			b.Add(uint32(d))
			if identity != user {
				keep = append(keep, stored{uint32(d), identity, user == "" && users})
			}
		}
		if err := rows.Close(); err != nil {
			return err
		}
		if b.IsEmpty() {
			return nil // converted meanwhile
		}
		cur, _, err := held(ctx, tx, syncID)
		if err != nil {
			return err
		}
		b.Or(cur)
		if _, err := tx.ExecContext(ctx, `INSERT INTO se_held (sync_id, members) VALUES (?, ?) ON CONFLICT (sync_id) DO UPDATE SET members = excluded.members`,
			syncID, membership.Encode(b)); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM se_held_log WHERE sync_id = ?`, syncID); err != nil {
			return err
		}
		if err := chunked(ctx, tx, len(keep), func(i, j int) (string, []any) {
			var sb strings.Builder
			args := make([]any, 0, (j-i)*4)
			for k, s := range keep[i:j] {
				if k > 0 {
					sb.WriteString(",")
				}
				sb.WriteString("(?, ?, ?, ?)")
				args = append(args, syncID, int64(s.dense), s.identity, s.deleted)
			}
			return `INSERT INTO se_held_identities (sync_id, dense_id, identity, deleted_user) VALUES ` + sb.String() + ` ON CONFLICT (sync_id, dense_id) DO NOTHING`, args
		}); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `DELETE FROM se_delivered WHERE sync_id = ?`, syncID)
		return err
	})
}

func (st *Store) tableExists(ctx context.Context, name string) (bool, error) {
	q := `SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?`
	if st.db.Dialect == store.Postgres {
		q = `SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = ?`
	}
	var n int
	err := st.db.QueryRowContext(ctx, q, name).Scan(&n)
	return n > 0, err
}
