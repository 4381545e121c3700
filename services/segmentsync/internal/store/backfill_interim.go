package store

// Interim: h18agg's backfill.go replaces this file at merge (same names).
// It writes today's tables (day rows and first/last rows per user and
// condition); BackfillProgress is a no-op here, so compute_percent moves
// only when a read is applied.

import (
	"context"
	"database/sql"
	"errors"
	"slices"
	"sort"

	"github.com/seghub/seghub/services/segmentsync/internal/rules"
)

// KeyedAgg is a user's aggregate of one condition key.
type KeyedAgg struct {
	Key string
	Agg rules.Agg
}

// UserAggs is one user's aggregates of a backfill read.
type UserAggs struct {
	User string
	Aggs []KeyedAgg
}

// BackfillRead is what one read of an environment's events counted.
type BackfillRead struct {
	Env string
	// Since is, per computing key, the scanned mark the read started after
	// (only events with seq > it were counted for the key).
	Since map[string]uint64
	// Through: every message up to it was read.
	Through uint64
	// Target is the live position aimed at, First the stream's first
	// sequence (the percentage).
	Target, First uint64
	Users         []UserAggs // a user appears once
}

// ApplyBackfill adds a read's aggregates, in one transaction, to the keys
// still computing whose scanned mark is the read's Since, and moves their
// mark to Through; other keys are skipped (they are read again).
func (s *Store) ApplyBackfill(ctx context.Context, b *BackfillRead) error {
	return s.write(ctx, b.Env, func(w *writer) error {
		take := map[string]bool{}
		for key, since := range b.Since {
			var state string
			var scanned int64
			err := w.tx.QueryRowContext(ctx, `SELECT state, scanned FROM ss_event_conditions WHERE environment_id = ? AND cond_key = ?`, b.Env, key).Scan(&state, &scanned)
			if errors.Is(err, sql.ErrNoRows) {
				continue
			}
			if err != nil {
				return err
			}
			if state == Computing && uint64(scanned) == since {
				take[key] = true
			}
		}
		if len(take) == 0 {
			return nil
		}
		var ids []string
		for _, u := range b.Users {
			for _, a := range u.Aggs {
				if take[a.Key] {
					ids = append(ids, u.User)
					break
				}
			}
		}
		dense, err := w.resolve(ids, true)
		if err != nil {
			return err
		}
		type row struct {
			dense uint32
			key   string
			agg   *rules.Agg
		}
		rows := make([]row, 0, len(ids))
		for i := range b.Users {
			u := &b.Users[i]
			for j := range u.Aggs {
				if a := &u.Aggs[j]; take[a.Key] {
					rows = append(rows, row{dense[u.User], a.Key, &a.Agg})
				}
			}
		}
		// Sorted writes keep lock order stable across transactions.
		sort.Slice(rows, func(i, j int) bool {
			if rows[i].dense != rows[j].dense {
				return rows[i].dense < rows[j].dense
			}
			return rows[i].key < rows[j].key
		})
		const rowsPer = 200
		var args []any
		n := 0
		flushCounts := func() error {
			if n == 0 {
				return nil
			}
			_, err := w.tx.ExecContext(ctx, `INSERT INTO ss_event_counts (environment_id, dense_id, cond_key, day, n) VALUES `+rowsOf(5, n)+
				` ON CONFLICT (environment_id, dense_id, cond_key, day) DO UPDATE SET n = ss_event_counts.n + excluded.n`, args...)
			args, n = args[:0], 0
			return err
		}
		for _, r := range rows {
			for _, d := range r.agg.Days {
				args = append(args, b.Env, int64(r.dense), r.key, d.Day, d.N)
				if n++; n == rowsPer {
					if err := flushCounts(); err != nil {
						return err
					}
				}
			}
		}
		if err := flushCounts(); err != nil {
			return err
		}
		for chunk := range slices.Chunk(rows, rowsPer) {
			args = args[:0]
			for _, r := range chunk {
				args = append(args, b.Env, int64(r.dense), r.key, r.agg.First, r.agg.Last)
			}
			if _, err := w.tx.ExecContext(ctx, `INSERT INTO ss_event_seen (environment_id, dense_id, cond_key, first_at, last_at) VALUES `+rowsOf(5, len(chunk))+` ON CONFLICT (environment_id, dense_id, cond_key) DO UPDATE SET
			first_at = CASE WHEN excluded.first_at < ss_event_seen.first_at THEN excluded.first_at ELSE ss_event_seen.first_at END,
			last_at = CASE WHEN excluded.last_at > ss_event_seen.last_at THEN excluded.last_at ELSE ss_event_seen.last_at END`, args...); err != nil {
				return err
			}
		}
		for key := range take {
			if _, err := w.tx.ExecContext(ctx, `UPDATE ss_event_conditions SET scanned = ?, target = ?, first_seq = ? WHERE environment_id = ? AND cond_key = ?`,
				int64(b.Through), int64(b.Target), int64(b.First), b.Env, key); err != nil {
				return err
			}
		}
		return nil
	})
}

// BackfillProgress records how far an unapplied read has got; a no-op in
// this interim version (the percentage moves when a read is applied).
func (s *Store) BackfillProgress(ctx context.Context, env string, keys []string, read, target, first uint64) error {
	return nil
}
