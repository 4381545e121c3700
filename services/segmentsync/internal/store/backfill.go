package store

import (
	"cmp"
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strings"

	"github.com/seghub/seghub/pkg/store"

	"github.com/seghub/seghub/services/segmentsync/internal/rules"
)

// KeyedAgg is one condition's aggregate of one user.
type KeyedAgg struct {
	Key string
	Agg rules.Agg
}

// UserAggs is what a backfill read found for one user.
type UserAggs struct {
	User string
	Aggs []KeyedAgg
}

// BackfillRead is what one read of an environment's events stream produced for its computing conditions.
type BackfillRead struct {
	Env string
	// Since is, per computing condition key, the scanned mark the read started after: the read counted
	// only events with a sequence above it for that key.
	Since   map[string]uint64
	Through uint64 // every message of the stream up to Through was read
	// Target and First are the live position aimed at and the stream's first sequence (for the percentage).
	Target, First uint64
	Users         []UserAggs // any order; a user appears once
}

// ApplyBackfill merges a read into the stored aggregates in one transaction: for each key still computing
// whose scanned mark equals Since[key], the users' aggregates are added (sum of day counts, min first,
// max last; users created when missing) and scanned becomes Through (target, first recorded); other keys
// are left alone (a concurrent change: the reader reads again). It is idempotent per (key, Since).
func (s *Store) ApplyBackfill(ctx context.Context, b *BackfillRead) error {
	err := s.write(ctx, b.Env, func(w *writer) error {
		type cond struct {
			key     string
			id      int64
			scanned int64
		}
		var apply []cond
		if err := eachRow(ctx, w.tx, `SELECT cond_key, cond_id, state, scanned FROM ss_event_conditions WHERE environment_id = ? ORDER BY cond_id`, []any{b.Env}, func(r *sql.Rows) error {
			var c cond
			var state string
			if err := r.Scan(&c.key, &c.id, &state, &c.scanned); err != nil {
				return err
			}
			if since, ok := b.Since[c.key]; ok && state == Computing && uint64(c.scanned) == since {
				apply = append(apply, c)
			}
			return nil
		}); err != nil {
			return err
		}
		if len(apply) == 0 {
			return nil
		}
		slotOf := make(map[string]int, len(apply))
		for i, c := range apply {
			slotOf[c.key] = i
		}
		// The users with an aggregate to apply, by user id.
		var idx []int32
		for i, u := range b.Users {
			for _, a := range u.Aggs {
				if _, ok := slotOf[a.Key]; ok && len(a.Agg.Days) > 0 {
					idx = append(idx, int32(i))
					break
				}
			}
		}
		byID := func(x, y int32) int { return strings.Compare(b.Users[x].User, b.Users[y].User) }
		if !slices.IsSortedFunc(idx, byID) {
			slices.SortFunc(idx, byID)
		}
		uniq := make([]string, 0, len(idx))
		for _, i := range idx {
			if id := b.Users[i].User; len(uniq) == 0 || uniq[len(uniq)-1] != id {
				uniq = append(uniq, id)
			}
		}
		dense, err := w.denseOf(uniq, true)
		if err != nil {
			return err
		}
		// The users in dense-id order (ints sort in a fraction of the
		// time a condition's rows would), so each condition's rows come
		// out in key order.
		type userAt struct {
			dense uint32
			i     int32
		}
		order := make([]userAt, 0, len(idx))
		k := -1
		for j, i := range idx {
			if j == 0 || b.Users[i].User != b.Users[idx[j-1]].User {
				k++
			}
			if dense[k] != 0 {
				order = append(order, userAt{dense[k], i})
			}
		}
		slices.SortFunc(order, func(x, y userAt) int { return cmp.Compare(x.dense, y.dense) })
		segs, err := w.computedSegments("")
		if err != nil {
			return err
		}
		windows := condWindows(segs, "", nil)
		today := rules.Today(s.now())
		byCond := make([][]aggRow, len(apply))
		for i := range apply {
			byCond[i] = make([]aggRow, 0, len(order))
		}
		for _, o := range order {
			u := &b.Users[o.i]
			for i := range u.Aggs {
				a := &u.Aggs[i]
				if slot, ok := slotOf[a.Key]; ok && len(a.Agg.Days) > 0 {
					byCond[slot] = append(byCond[slot], aggRow{cond: apply[slot].id, dense: o.dense, agg: &a.Agg})
				}
			}
		}
		for slot, c := range apply {
			rows := byCond[slot] // by user, as order is
			var stored int
			if len(rows) > 0 {
				if err := w.tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM (SELECT 1 FROM ss_event_aggs WHERE cond_id = ? LIMIT 1) t`, c.id).Scan(&stored); err != nil {
					return err
				}
			}
			if stored > 0 {
				// Earlier reads of this condition stored rows: add to them.
				if err := mergeStored(ctx, w.tx, c.id, rows); err != nil {
					return err
				}
			}
			for i := range rows {
				rows[i].expires = rows[i].agg.Expires(windows[c.key], today)
			}
			if err := writeAggRows(ctx, w.tx, rows, stored == 0); err != nil {
				return err
			}
			if _, err := w.tx.ExecContext(ctx, `UPDATE ss_event_conditions SET scanned = ?, progress = ?, target = ?, first_seq = ? WHERE cond_id = ?`,
				int64(max(b.Through, uint64(c.scanned))), int64(max(b.Through, uint64(c.scanned))), int64(b.Target), int64(b.First), c.id); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("segmentsync: backfill of %s: %w", b.Env, err)
	}
	return nil
}

// mergeStored adds the stored aggregates of condition id to rows (sorted by
// user; a row's agg is replaced, never modified, as it may be the caller's).
func mergeStored(ctx context.Context, tx *store.Tx, id int64, rows []aggRow) error {
	ids := make([]uint32, len(rows))
	for i, r := range rows {
		ids[i] = r.dense
	}
	for _, p := range idPages(tx.Dialect, ids) {
		where, args := p.denseIn(tx.Dialect, `dense_id`)
		if err := eachRow(ctx, tx, `SELECT dense_id, first_at, last_at, days FROM ss_event_aggs WHERE cond_id = ? AND `+where, append([]any{id}, args...), func(r *sql.Rows) error {
			var d int64
			var stored rules.Agg
			var days []byte
			if err := r.Scan(&d, &stored.First, &stored.Last, &days); err != nil {
				return err
			}
			i, ok := slices.BinarySearchFunc(rows, uint32(d), func(r aggRow, d uint32) int { return cmp.Compare(r.dense, d) })
			if !ok {
				return nil
			}
			var err error
			if stored.Days, err = rules.DecodeDays(days); err != nil {
				return err
			}
			stored.Add(rows[i].agg)
			rows[i].agg = &stored
			return nil
		}); err != nil {
			return err
		}
	}
	return nil
}

// BackfillProgress records how far a read not yet applied has got, for compute_percent only.
func (s *Store) BackfillProgress(ctx context.Context, env string, keys []string, read, target, first uint64) error {
	for _, k := range keys {
		if _, err := s.db.ExecContext(ctx, `UPDATE ss_event_conditions SET progress = ?, target = ?, first_seq = ? WHERE environment_id = ? AND cond_key = ? AND state = ? AND progress < ?`,
			int64(read), int64(target), int64(first), env, k, Computing, int64(read)); err != nil {
			return fmt.Errorf("segmentsync: backfill progress of %s: %w", env, err)
		}
	}
	return nil
}
