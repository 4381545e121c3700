package store

import (
	"context"
	"database/sql"
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"math"
	"slices"
	"sort"
	"strings"

	"github.com/RoaringBitmap/roaring/v2"
	"github.com/jackc/pgx/v5"

	"github.com/seghub/seghub/pkg/store"
	"github.com/seghub/seghub/services/segmentsync/internal/rules"
)

// Aggregates live one row per (condition, user) in ss_event_aggs: the day
// buckets packed (rules.EncodeDays), first/last times, and expires, the day
// the window pass must look at the row again.

// neverExpires is the expires of a row none of whose buckets will leave a
// window.
const neverExpires = math.MaxInt32

// condIDs returns env's condition keys by dense id.
func condIDs(ctx context.Context, q store.Querier, env string) (map[int64]string, error) {
	out := map[int64]string{}
	err := eachRow(ctx, q, `SELECT cond_id, cond_key FROM ss_event_conditions WHERE environment_id = ?`, []any{env}, func(r *sql.Rows) error {
		var id int64
		var key string
		if err := r.Scan(&id, &key); err != nil {
			return err
		}
		out[id] = key
		return nil
	})
	return out, err
}

// allocCondID takes the next condition id from the counter row (its row
// lock serialises environments adding conditions at once).
func (w *writer) allocCondID() (int64, error) {
	var id int64
	err := w.tx.QueryRowContext(w.ctx, `UPDATE ss_event_cond_counter SET next = next + 1 WHERE one = 1 RETURNING next`).Scan(&id)
	return id, err
}

// condWindows is, per condition key, the window lengths of env's computed
// rules (any state) using it, sorted and distinct. replace, when set,
// stands for the segment of that id (nil prog: the segment is gone).
func condWindows(segs []*computedSegment, replaceID string, replace *rules.Program) map[string][]int32 {
	out := map[string][]int32{}
	add := func(p *rules.Program) {
		for _, win := range p.Windows() {
			out[win.Key] = append(out[win.Key], win.Days)
		}
	}
	for _, c := range segs {
		if c.id == replaceID {
			continue
		}
		add(c.prog)
	}
	if replace != nil {
		add(replace)
	}
	for k, ds := range out {
		slices.Sort(ds)
		out[k] = slices.Compact(ds)
	}
	return out
}

// resetExpiries makes the next window pass look at every row of the
// conditions whose set of windows differs between before and after.
func (w *writer) resetExpiries(before, after map[string][]int32) error {
	var changed []string
	for k, ds := range before {
		if !slices.Equal(ds, after[k]) {
			changed = append(changed, k)
		}
	}
	for k := range after {
		if _, ok := before[k]; !ok {
			changed = append(changed, k)
		}
	}
	sort.Strings(changed)
	for _, k := range changed {
		if _, err := w.tx.ExecContext(w.ctx, `UPDATE ss_event_aggs SET expires = 0 WHERE cond_id = (SELECT cond_id FROM ss_event_conditions WHERE environment_id = ? AND cond_key = ?)`, w.env, k); err != nil {
			return err
		}
	}
	return nil
}

// aggRow is one row of ss_event_aggs.
type aggRow struct {
	cond    int64
	dense   uint32
	agg     *rules.Agg
	expires int32
}

func sortAggRows(rows []aggRow) {
	sort.Slice(rows, func(i, j int) bool {
		if rows[i].cond != rows[j].cond {
			return rows[i].cond < rows[j].cond
		}
		return rows[i].dense < rows[j].dense
	})
}

// aggRowsPer bounds a SQLite multi-row upsert (6 parameters a row).
const aggRowsPer = 500

// aggArraysPer bounds the rows of one PostgreSQL array upsert.
const aggArraysPer = 50_000

// writeAggs upserts rows (sorted by condition and user, so concurrent
// writers lock in one order): on PostgreSQL one statement of arrays per
// aggArraysPer rows, on SQLite one prepared multi-row statement per
// aggRowsPer rows.
func writeAggs(ctx context.Context, tx *store.Tx, rows []aggRow) error {
	return writeAggRows(ctx, tx, rows, false)
}

// writeAggRows is writeAggs; fresh says no row exists yet (plain inserts,
// without the conflict check that costs PostgreSQL about half the time).
func writeAggRows(ctx context.Context, tx *store.Tx, rows []aggRow, fresh bool) error {
	upsert := ` ON CONFLICT (cond_id, dense_id) DO UPDATE SET first_at = excluded.first_at, last_at = excluded.last_at, expires = excluded.expires, days = excluded.days`
	if fresh {
		upsert = ""
	}
	if tx.Dialect == store.Postgres && fresh {
		// COPY: a third faster than the arrays below, which a conflict needs.
		return tx.Pgx(func(c *pgx.Conn) error {
			row := make([]any, 6)
			_, err := c.CopyFrom(ctx, pgx.Identifier{"ss_event_aggs"}, []string{"cond_id", "dense_id", "first_at", "last_at", "expires", "days"},
				pgx.CopyFromSlice(len(rows), func(i int) ([]any, error) {
					r := &rows[i]
					row[0], row[1], row[2], row[3], row[4], row[5] = r.cond, int64(r.dense), r.agg.First, r.agg.Last, r.expires, rules.EncodeDays(r.agg.Days)
					return row, nil
				}))
			return err
		})
	}
	if tx.Dialect == store.Postgres {
		for i := 0; i < len(rows); i += aggArraysPer {
			chunk := rows[i:min(i+aggArraysPer, len(rows))]
			conds, dense, first, last := make([]int64, len(chunk)), make([]int64, len(chunk)), make([]int64, len(chunk)), make([]int64, len(chunk))
			expires, days := make([]int32, len(chunk)), make([][]byte, len(chunk))
			for j, r := range chunk {
				conds[j], dense[j], first[j], last[j], expires[j], days[j] = r.cond, int64(r.dense), r.agg.First, r.agg.Last, r.expires, rules.EncodeDays(r.agg.Days)
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO ss_event_aggs (cond_id, dense_id, first_at, last_at, expires, days)
				SELECT * FROM unnest(?::bigint[], ?::bigint[], ?::bigint[], ?::bigint[], ?::int[], ?::bytea[])`+upsert,
				conds, dense, first, last, expires, days); err != nil {
				return err
			}
		}
		return nil
	}
	var full *sql.Stmt
	defer func() {
		if full != nil {
			full.Close()
		}
	}()
	q := func(n int) string {
		return `INSERT INTO ss_event_aggs (cond_id, dense_id, first_at, last_at, expires, days) VALUES ` + rowsOf(6, n) + upsert
	}
	args := make([]any, 0, 6*aggRowsPer)
	for i := 0; i < len(rows); i += aggRowsPer {
		chunk := rows[i:min(i+aggRowsPer, len(rows))]
		args = args[:0]
		for _, r := range chunk {
			args = append(args, r.cond, int64(r.dense), r.agg.First, r.agg.Last, r.expires, rules.EncodeDays(r.agg.Days))
		}
		var err error
		if len(chunk) == aggRowsPer {
			if full == nil {
				if full, err = tx.Tx.PrepareContext(ctx, q(aggRowsPer)); err != nil {
					return err
				}
			}
			_, err = full.ExecContext(ctx, args...)
		} else {
			_, err = tx.ExecContext(ctx, q(len(chunk)), args...)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// idPage is a run of the dense ids wanted: read as a range (lo, hi] when
// the ids fill most of it, else as a list.
type idPage struct {
	lo, hi uint32
	list   []int64
}

// factsPage is how many users one page of loadFacts reads.
const factsPage = 10_000

func idPages(d store.Dialect, ids []uint32) []idPage {
	var out []idPage
	for i := 0; i < len(ids); {
		j := min(i+factsPage, len(ids))
		if span := uint64(ids[j-1]) - uint64(ids[i]) + 1; span <= uint64(2*(j-i)) {
			lo := uint32(0)
			if ids[i] > 0 {
				lo = ids[i] - 1
			}
			out = append(out, idPage{lo: lo, hi: ids[j-1]})
			i = j
			continue
		}
		// Sparse: a list (SQLite binds each id, so shorter lists there).
		if d != store.Postgres {
			j = min(i+inChunk, len(ids))
		}
		list := make([]int64, 0, j-i)
		for _, v := range ids[i:j] {
			list = append(list, int64(v))
		}
		out = append(out, idPage{list: list})
		i = j
	}
	return out
}

// denseIn completes a query's WHERE clause with the page's test on col.
func (p idPage) denseIn(d store.Dialect, col string) (string, []any) {
	if p.list == nil {
		return col + ` > ? AND ` + col + ` <= ?`, []any{int64(p.lo), int64(p.hi)}
	}
	if d == store.Postgres {
		return col + ` = ANY(?)`, []any{p.list}
	}
	args := make([]any, len(p.list))
	for i, v := range p.list {
		args[i] = v
	}
	return col + ` IN (` + placeholders(len(p.list)) + `)`, args
}

// condIn is a test of cond_id against ids.
func condIn(d store.Dialect, ids []int64) (string, []any) {
	if d == store.Postgres {
		return `cond_id = ANY(?)`, []any{ids}
	}
	args := make([]any, len(ids))
	for i, v := range ids {
		args[i] = v
	}
	return `cond_id IN (` + placeholders(len(ids)) + `)`, args
}

// loadFacts reads the properties and aggregates of the users in dense that
// exist (a deleted user is absent from the answer): per page of users one
// statement for the users and one for their aggregates of every condition.
func loadFacts(ctx context.Context, q store.Querier, d store.Dialect, env string, dense *roaring.Bitmap) (map[uint32]*userFacts, error) {
	if dense.IsEmpty() {
		return map[uint32]*userFacts{}, nil
	}
	conds, err := condIDs(ctx, q, env)
	if err != nil {
		return nil, err
	}
	return loadFactsOf(ctx, q, d, env, dense, conds)
}

// loadFactsOf is loadFacts with env's conditions known.
func loadFactsOf(ctx context.Context, q store.Querier, d store.Dialect, env string, dense *roaring.Bitmap, conds map[int64]string) (map[uint32]*userFacts, error) {
	out := make(map[uint32]*userFacts, dense.GetCardinality())
	if dense.IsEmpty() {
		return out, nil
	}
	ids := make([]int64, 0, len(conds))
	for id := range conds {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, p := range idPages(d, dense.ToArray()) {
		where, args := p.denseIn(d, `dense_id`)
		if err := eachRow(ctx, q, `SELECT `+userCols+` FROM ss_users WHERE environment_id = ? AND `+where, append([]any{env}, args...), func(r *sql.Rows) error {
			u, err := scanUser(r)
			if err != nil {
				return err
			}
			if p.list == nil && !dense.Contains(u.Dense) {
				return nil
			}
			out[u.Dense] = &userFacts{props: u.Props, aggs: map[string]*rules.Agg{}}
			return nil
		}); err != nil {
			return nil, err
		}
		if len(ids) == 0 {
			continue
		}
		if err := loadAggs(ctx, q, d, conds, ids, p, out); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// loadAggs reads the aggregates of the page's users in out.
func loadAggs(ctx context.Context, q store.Querier, d store.Dialect, conds map[int64]string, ids []int64, p idPage, out map[uint32]*userFacts) error {
	cw, cargs := condIn(d, ids)
	dw, dargs := p.denseIn(d, `dense_id`)
	return eachRow(ctx, q, `SELECT cond_id, dense_id, first_at, last_at, days FROM ss_event_aggs WHERE `+cw+` AND `+dw, append(cargs, dargs...), func(r *sql.Rows) error {
		var cond, dense int64
		var a rules.Agg
		var days []byte
		if err := r.Scan(&cond, &dense, &a.First, &a.Last, &days); err != nil {
			return err
		}
		u := out[uint32(dense)]
		if u == nil {
			return nil
		}
		var err error
		if a.Days, err = rules.DecodeDays(days); err != nil {
			return fmt.Errorf("aggregate of condition %d, user %d: %w", cond, dense, err)
		}
		u.aggs[conds[cond]] = &a
		return nil
	})
}

// convertEventCounts moves aggregates of versions before migration 006 (a
// row per user, condition and day in ss_event_counts, first/last in
// ss_event_seen) to ss_event_aggs, one condition at a time in one
// transaction, then drops the old tables. Converted rows expire at once:
// the next window pass looks at them and computes their expiry.
func (s *Store) convertEventCounts(ctx context.Context) error {
	if ok, err := tableExists(ctx, s.db, s.db.Dialect, "ss_event_counts"); err != nil || !ok {
		return err
	}
	err := s.db.InTx(ctx, func(tx *store.Tx) error {
		if tx.Dialect == store.Postgres {
			// Of processes opening together, one converts.
			h := fnv.New64a()
			h.Write([]byte("seghub-convert-event-counts"))
			if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(?)`, int64(h.Sum64()>>1)); err != nil {
				return err
			}
			if ok, err := tableExists(ctx, tx, tx.Dialect, "ss_event_counts"); err != nil || !ok {
				return err
			}
		}
		var conds []int64
		if err := eachRow(ctx, tx, `SELECT cond_id FROM ss_event_conditions ORDER BY cond_id`, nil, func(r *sql.Rows) error {
			conds = append(conds, 0)
			return r.Scan(&conds[len(conds)-1])
		}); err != nil {
			return err
		}
		for _, id := range conds {
			aggs := map[uint32]*rules.Agg{}
			get := func(d int64) *rules.Agg {
				a := aggs[uint32(d)]
				if a == nil {
					a = &rules.Agg{}
					aggs[uint32(d)] = a
				}
				return a
			}
			const join = ` JOIN ss_event_conditions c ON c.environment_id = e.environment_id AND c.cond_key = e.cond_key WHERE c.cond_id = ?`
			if err := eachRow(ctx, tx, `SELECT e.dense_id, e.day, e.n FROM ss_event_counts e`+join+` ORDER BY e.dense_id, e.day`, []any{id}, func(r *sql.Rows) error {
				var d, n int64
				var day int32
				if err := r.Scan(&d, &day, &n); err != nil {
					return err
				}
				a := get(d)
				a.Days = append(a.Days, rules.DayCount{Day: day, N: n})
				return nil
			}); err != nil {
				return err
			}
			if err := eachRow(ctx, tx, `SELECT e.dense_id, e.first_at, e.last_at FROM ss_event_seen e`+join, []any{id}, func(r *sql.Rows) error {
				var d, first, last int64
				if err := r.Scan(&d, &first, &last); err != nil {
					return err
				}
				a := get(d)
				a.First, a.Last = first, last
				return nil
			}); err != nil {
				return err
			}
			rows := make([]aggRow, 0, len(aggs))
			for d, a := range aggs {
				if len(a.Days) > 0 {
					rows = append(rows, aggRow{cond: id, dense: d, agg: a})
				}
			}
			sortAggRows(rows)
			if err := writeAggs(ctx, tx, rows); err != nil {
				return err
			}
		}
		for _, t := range []string{"ss_event_counts", "ss_event_seen"} {
			if _, err := tx.ExecContext(ctx, `DROP TABLE `+t); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("segmentsync: convert event aggregates: %w", err)
	}
	return nil
}

func tableExists(ctx context.Context, q store.Querier, d store.Dialect, name string) (bool, error) {
	var n int
	query := `SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?`
	if d == store.Postgres {
		query = `SELECT COUNT(*) FROM pg_tables WHERE schemaname = current_schema() AND tablename = ?`
	}
	err := q.QueryRowContext(ctx, query, name).Scan(&n)
	return n > 0, err
}

// rowsOf is n rows of cols placeholders: "(?, ?), (?, ?)".
func rowsOf(cols, n int) string {
	row := "(" + placeholders(cols) + ")"
	return strings.TrimSuffix(strings.Repeat(row+",", n), ",")
}

// eachAggRow calls fn with cond_id, dense_id, first_at, last_at and days of
// each row of query (which selects those columns; days valid during the
// call only). On PostgreSQL the rows come through pgx in binary form,
// which spares database/sql's conversions per row (a million rows a page).
func eachAggRow(ctx context.Context, tx *store.Tx, query string, args []any, fn func(cond, dense, first, last int64, days []byte) error) error {
	if tx.Dialect != store.Postgres {
		return eachRow(ctx, tx, query, args, func(r *sql.Rows) error {
			var cond, dense, first, last int64
			var days sql.RawBytes
			if err := r.Scan(&cond, &dense, &first, &last, &days); err != nil {
				return err
			}
			return fn(cond, dense, first, last, days)
		})
	}
	return tx.Pgx(func(c *pgx.Conn) error {
		rows, err := c.Query(ctx, tx.Rebind(query), args...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			v := rows.RawValues()
			if len(v) != 5 || len(v[0]) != 8 || len(v[1]) != 8 || len(v[2]) != 8 || len(v[3]) != 8 {
				return fmt.Errorf("aggregate row of %d values, not 5 (4 of 8 bytes)", len(v))
			}
			if err := fn(be64(v[0]), be64(v[1]), be64(v[2]), be64(v[3]), v[4]); err != nil {
				return err
			}
		}
		return rows.Err()
	})
}

func be64(b []byte) int64 { return int64(binary.BigEndian.Uint64(b)) }
