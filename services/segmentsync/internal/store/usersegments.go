package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"

	"github.com/RoaringBitmap/roaring/v2"

	"github.com/seghub/seghub/pkg/membership"
	"github.com/seghub/seghub/pkg/store"
)

// ss_user_segments holds one row per (user, segment) membership: the reverse
// of the segments' bitmaps. applyMembership and DeleteSegment keep it equal
// to the bitmaps inside the transaction that changes them, so GetUser and
// DeleteUser cost the user's memberships, not the environment's segments.

// indexChunk bounds the ids sent in one statement (one JSON or array
// parameter, so no placeholder limit applies).
const indexChunk = 65536

// indexMembers records that members belong to segmentID.
func (w *writer) indexMembers(segmentID string, members *roaring.Bitmap) error {
	q := `INSERT INTO ss_user_segments (environment_id, dense_id, segment_id) SELECT ?, value, ? FROM json_each(?) WHERE true ON CONFLICT DO NOTHING`
	if w.tx.Dialect == store.Postgres {
		q = `INSERT INTO ss_user_segments (environment_id, dense_id, segment_id) SELECT ?, d, ? FROM unnest(?::bigint[]) AS d ON CONFLICT DO NOTHING`
	}
	return eachChunk(w.tx.Dialect, members, func(ids any) error {
		_, err := w.tx.ExecContext(w.ctx, q, w.env, segmentID, ids)
		return err
	})
}

// unindexMembers records that members no longer belong to segmentID.
func (w *writer) unindexMembers(segmentID string, members *roaring.Bitmap) error {
	q := `DELETE FROM ss_user_segments WHERE environment_id = ? AND segment_id = ? AND dense_id IN (SELECT value FROM json_each(?))`
	if w.tx.Dialect == store.Postgres {
		q = `DELETE FROM ss_user_segments WHERE environment_id = ? AND segment_id = ? AND dense_id = ANY(?::bigint[])`
	}
	return eachChunk(w.tx.Dialect, members, func(ids any) error {
		_, err := w.tx.ExecContext(w.ctx, q, w.env, segmentID, ids)
		return err
	})
}

// eachChunk calls fn with members in chunks, as a JSON array of integers on
// SQLite (read by json_each) and as an int64 slice (a bigint[]) on PostgreSQL.
func eachChunk(d store.Dialect, members *roaring.Bitmap, fn func(ids any) error) error {
	if members == nil || members.IsEmpty() {
		return nil
	}
	buf := make([]uint32, min(uint64(indexChunk), members.GetCardinality()))
	it := members.ManyIterator()
	var text []byte
	var ints []int64
	for n := it.NextMany(buf); n > 0; n = it.NextMany(buf) {
		var ids any
		if d == store.Postgres {
			ints = ints[:0]
			for _, v := range buf[:n] {
				ints = append(ints, int64(v))
			}
			ids = ints
		} else {
			text = append(text[:0], '[')
			for i, v := range buf[:n] {
				if i > 0 {
					text = append(text, ',')
				}
				text = strconv.AppendUint(text, uint64(v), 10)
			}
			ids = string(append(text, ']'))
		}
		if err := fn(ids); err != nil {
			return err
		}
	}
	return nil
}

// userSegmentIDs returns the ids of the segments dense is in, in id order.
func userSegmentIDs(ctx context.Context, q store.Querier, env string, dense uint32) ([]string, error) {
	rows, err := q.QueryContext(ctx, `SELECT segment_id FROM ss_user_segments WHERE environment_id = ? AND dense_id = ? ORDER BY segment_id`, env, int64(dense))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		out = append(out, id)
	}
	return out, rows.Err()
}

// backfillUserSegments indexes the members of segments that predate the
// index (listed by migration 004), one segment per transaction under its
// environment's write lock, so concurrent writers and starters never see or
// leave a half-indexed segment behind the marker.
func (s *Store) backfillUserSegments(ctx context.Context) error {
	type pending struct{ segment, env string }
	rows, err := s.db.QueryContext(ctx, `SELECT segment_id, environment_id FROM ss_user_segments_backfill ORDER BY segment_id`)
	if err != nil {
		return fmt.Errorf("segmentsync: list segments to index: %w", err)
	}
	var todo []pending
	for rows.Next() {
		var p pending
		if err := rows.Scan(&p.segment, &p.env); err != nil {
			rows.Close()
			return fmt.Errorf("segmentsync: list segments to index: %w", err)
		}
		todo = append(todo, p)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("segmentsync: list segments to index: %w", err)
	}
	for _, p := range todo {
		err := s.write(ctx, p.env, func(w *writer) error {
			res, err := w.tx.ExecContext(ctx, `DELETE FROM ss_user_segments_backfill WHERE segment_id = ?`, p.segment)
			if err != nil {
				return err
			}
			if n, _ := res.RowsAffected(); n == 0 {
				return nil // another process indexed it first
			}
			var blob []byte
			err = w.tx.QueryRowContext(ctx, `SELECT members FROM ss_segments WHERE segment_id = ?`, p.segment).Scan(&blob)
			if errors.Is(err, sql.ErrNoRows) {
				return nil // deleted since
			}
			if err != nil {
				return err
			}
			m, err := membership.Decode(blob)
			if err != nil {
				return err
			}
			return w.indexMembers(p.segment, m)
		})
		if err != nil {
			return fmt.Errorf("segmentsync: index members of segment %s: %w", p.segment, err)
		}
	}
	return nil
}
