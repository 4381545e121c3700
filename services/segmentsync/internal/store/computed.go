package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/RoaringBitmap/roaring/v2"
	"google.golang.org/protobuf/encoding/protojson"

	segmentsyncv1 "github.com/seghub/seghub/gen/seghub/segmentsync/v1"
	"github.com/seghub/seghub/pkg/apperr"
	"github.com/seghub/seghub/pkg/membership"
	"github.com/seghub/seghub/pkg/store"
	"github.com/seghub/seghub/services/segmentsync/internal/rules"
)

// Computed segment and event condition states.
const (
	Computing = "computing"
	Live      = "live"
)

// positionLive names the live consumer's row in ss_event_position.
const positionLive = "computed"

// ComputedInfo is what a computed segment shows beside its metadata.
type ComputedInfo struct {
	Rule    *segmentsyncv1.SegmentRule
	State   string
	Percent uint32
}

// Event is one stored event as the computed-segment consumer reads it.
type Event struct {
	Seq    uint64
	Env    string
	User   string
	Source string
	Name   string
	Time   int64 // unix microseconds (rules.EventTime of the envelope)
	Props  map[string]any
}

type compiled struct {
	version int64
	prog    *rules.Program
}

type computedSegment struct {
	id      string
	version int64
	state   string
	prog    *rules.Program
}

func (s *Store) compileStored(id string, version int64, rule string) (*rules.Program, error) {
	if c, ok := s.programs.Load(id); ok && c.(compiled).version == version {
		return c.(compiled).prog, nil
	}
	var r segmentsyncv1.SegmentRule
	if err := protojson.Unmarshal([]byte(rule), &r); err != nil {
		return nil, fmt.Errorf("segmentsync: rule of segment %s: %w", id, err)
	}
	p, err := rules.Compile(&r)
	if err != nil {
		return nil, fmt.Errorf("segmentsync: rule of segment %s: %w", id, err)
	}
	s.programs.Store(id, compiled{version: version, prog: p})
	return p, nil
}

// computedSegments returns env's computed segments (of one state, or all).
func (w *writer) computedSegments(state string) ([]*computedSegment, error) {
	return w.s.computedSegmentsOf(w.ctx, w.tx, w.env, state)
}

func (s *Store) computedSegmentsOf(ctx context.Context, q store.Querier, env, state string) ([]*computedSegment, error) {
	rows, err := q.QueryContext(ctx, `SELECT segment_id, rule_version, state, rule FROM ss_computed WHERE environment_id = ? ORDER BY segment_id`, env)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*computedSegment
	for rows.Next() {
		var c computedSegment
		var rule string
		if err := rows.Scan(&c.id, &c.version, &c.state, &rule); err != nil {
			return nil, err
		}
		if state != "" && c.state != state {
			continue
		}
		if c.prog, err = s.compileStored(c.id, c.version, rule); err != nil {
			return nil, err
		}
		out = append(out, &c)
	}
	return out, rows.Err()
}

// refuseComputed refuses hand-made membership changes of a computed segment.
func (w *writer) refuseComputed(sg *Segment) error {
	var one int
	err := w.tx.QueryRowContext(w.ctx, `SELECT 1 FROM ss_computed WHERE segment_id = ?`, sg.ID).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return nil
	}
	if err != nil {
		return err
	}
	return apperr.FailedPrecondition("segment %q is computed from its rule: its members cannot be added, removed or replaced by hand (change its rule with UpdateSegment instead)", sg.ID)
}

// CreateComputedSegment creates a segment computed from rule (already
// validated by rules.Compile); it starts computing.
func (s *Store) CreateComputedSegment(ctx context.Context, env, name, description, visibility string, rule *segmentsyncv1.SegmentRule) (*Segment, error) {
	prog, err := rules.Compile(rule)
	if err != nil {
		return nil, err
	}
	text, err := protojson.Marshal(rule)
	if err != nil {
		return nil, err
	}
	now := s.now().UTC().Truncate(time.Microsecond)
	sg := &Segment{ID: newSegmentID(), Env: env, Name: name, Description: description, Visibility: visibility, Version: 1, Created: now, Updated: now, Members: roaring.New()}
	err = s.write(ctx, env, func(w *writer) error {
		_, err := w.tx.ExecContext(ctx, `INSERT INTO ss_segments (`+segCols+`, members) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			sg.ID, env, name, description, visibility, "", 0, sg.Version, now.UnixMicro(), now.UnixMicro(), membership.Encode(sg.Members))
		if store.IsUniqueViolation(err) {
			return apperr.AlreadyExists("a segment named %q already exists in this environment", name)
		}
		if err != nil {
			return err
		}
		if _, err := w.tx.ExecContext(ctx, `INSERT INTO ss_computed (segment_id, environment_id, rule, rule_version, state) VALUES (?, ?, ?, ?, ?)`, sg.ID, env, string(text), 1, Computing); err != nil {
			return err
		}
		segs, err := w.computedSegments("")
		if err != nil {
			return err
		}
		if err := w.linkConditions(sg.ID, prog); err != nil {
			return err
		}
		if err := w.resetExpiries(condWindows(segs, sg.ID, nil), condWindows(segs, sg.ID, prog)); err != nil {
			return err
		}
		return w.log(KindSegment, sg.ID, sg.Version, nil, nil, "")
	})
	if err != nil {
		return nil, err
	}
	return sg, nil
}

// setRule replaces a computed segment's rule; the segment computes again.
func (w *writer) setRule(id string, rule *segmentsyncv1.SegmentRule) error {
	prog, err := rules.Compile(rule)
	if err != nil {
		return err
	}
	text, err := protojson.Marshal(rule)
	if err != nil {
		return err
	}
	segs, err := w.computedSegments("")
	if err != nil {
		return err
	}
	res, err := w.tx.ExecContext(w.ctx, `UPDATE ss_computed SET rule = ?, rule_version = rule_version + 1, state = ? WHERE segment_id = ?`, string(text), Computing, id)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return apperr.FailedPrecondition("segment %q has no rule: a segment of listed members cannot become computed (create a computed segment instead)", id)
	}
	if _, err := w.tx.ExecContext(w.ctx, `DELETE FROM ss_computed_conditions WHERE segment_id = ?`, id); err != nil {
		return err
	}
	if err := w.linkConditions(id, prog); err != nil {
		return err
	}
	if err := w.dropUnusedConditions(); err != nil {
		return err
	}
	return w.resetExpiries(condWindows(segs, "", nil), condWindows(segs, id, prog))
}

// linkConditions records the conditions a segment uses, adding the new ones
// as computing (their backfill starts from the stream's beginning).
func (w *writer) linkConditions(segmentID string, prog *rules.Program) error {
	for _, c := range prog.Conds() {
		if _, err := w.tx.ExecContext(w.ctx, `INSERT INTO ss_computed_conditions (segment_id, environment_id, cond_key) VALUES (?, ?, ?) ON CONFLICT DO NOTHING`, segmentID, w.env, c.Key); err != nil {
			return err
		}
		var id int64
		err := w.tx.QueryRowContext(w.ctx, `SELECT cond_id FROM ss_event_conditions WHERE environment_id = ? AND cond_key = ?`, w.env, c.Key).Scan(&id)
		if err == nil {
			continue
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		if id, err = w.allocCondID(); err != nil {
			return err
		}
		if _, err := w.tx.ExecContext(w.ctx, `INSERT INTO ss_event_conditions (environment_id, cond_key, cond_id, definition, state, scanned, target, first_seq, progress) VALUES (?, ?, ?, ?, ?, 0, 0, 0, 0)`,
			w.env, c.Key, id, c.Encode(), Computing); err != nil {
			return err
		}
	}
	return nil
}

// dropUnusedConditions deletes the conditions no computed segment uses any
// more, with their aggregates.
func (w *writer) dropUnusedConditions() error {
	rows, err := w.tx.QueryContext(w.ctx, `SELECT cond_key, cond_id FROM ss_event_conditions c WHERE environment_id = ? AND NOT EXISTS (SELECT 1 FROM ss_computed_conditions l WHERE l.environment_id = c.environment_id AND l.cond_key = c.cond_key)`, w.env)
	if err != nil {
		return err
	}
	ids := map[string]int64{}
	for rows.Next() {
		var k string
		var id int64
		if err := rows.Scan(&k, &id); err != nil {
			rows.Close()
			return err
		}
		ids[k] = id
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for k, id := range ids {
		if _, err := w.tx.ExecContext(w.ctx, `DELETE FROM ss_event_conditions WHERE environment_id = ? AND cond_key = ?`, w.env, k); err != nil {
			return err
		}
		if _, err := w.tx.ExecContext(w.ctx, `DELETE FROM ss_event_aggs WHERE cond_id = ?`, id); err != nil {
			return err
		}
	}
	return nil
}

// forgetComputed removes a deleted segment's rule.
func (w *writer) forgetComputed(id string) error {
	segs, err := w.computedSegments("")
	if err != nil {
		return err
	}
	w.s.programs.Delete(id)
	if _, err := w.tx.ExecContext(w.ctx, `DELETE FROM ss_computed WHERE segment_id = ?`, id); err != nil {
		return err
	}
	if _, err := w.tx.ExecContext(w.ctx, `DELETE FROM ss_computed_conditions WHERE segment_id = ?`, id); err != nil {
		return err
	}
	if err := w.dropUnusedConditions(); err != nil {
		return err
	}
	return w.resetExpiries(condWindows(segs, "", nil), condWindows(segs, id, nil))
}

// forgetUserEvents deletes a deleted user's aggregates.
func (w *writer) forgetUserEvents(dense uint32) error {
	_, err := w.tx.ExecContext(w.ctx, `DELETE FROM ss_event_aggs WHERE dense_id = ? AND cond_id IN (SELECT cond_id FROM ss_event_conditions WHERE environment_id = ?)`, int64(dense), w.env)
	return err
}

// ComputedInfos returns the rule and state of the computed segments among ids.
func (s *Store) ComputedInfos(ctx context.Context, env string, ids []string) (map[string]*ComputedInfo, error) {
	out := map[string]*ComputedInfo{}
	if len(ids) == 0 {
		return out, nil
	}
	q, args := inList(s.db.Dialect, `SELECT segment_id, rule, state FROM ss_computed WHERE environment_id = ? AND segment_id`, env, ids)
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("segmentsync: computed segments of %s: %w", env, err)
	}
	defer rows.Close()
	for rows.Next() {
		var id, rule, state string
		if err := rows.Scan(&id, &rule, &state); err != nil {
			return nil, err
		}
		var r segmentsyncv1.SegmentRule
		if err := protojson.Unmarshal([]byte(rule), &r); err != nil {
			return nil, fmt.Errorf("segmentsync: rule of segment %s: %w", id, err)
		}
		info := &ComputedInfo{Rule: &r, State: state, Percent: 100}
		out[id] = info
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	rows.Close()
	for id, info := range out {
		if info.State != Computing {
			continue
		}
		if info.Percent, err = s.percent(ctx, env, id); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// percent is how far a computing segment's slowest condition backfill is.
func (s *Store) percent(ctx context.Context, env, segmentID string) (uint32, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT c.state, c.scanned, c.progress, c.target, c.first_seq FROM ss_event_conditions c JOIN ss_computed_conditions l ON l.environment_id = c.environment_id AND l.cond_key = c.cond_key WHERE l.segment_id = ?`, segmentID)
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	pct := uint32(99) // every condition read: the first evaluation is what remains
	for rows.Next() {
		var state string
		var scanned, progress, target, first int64
		if err := rows.Scan(&state, &scanned, &progress, &target, &first); err != nil {
			return 0, err
		}
		scanned = max(scanned, progress)
		if state == Live {
			continue
		}
		p := uint32(0)
		if target > first && scanned >= first {
			p = uint32(min(99, (scanned-first+1)*100/(target-first+1)))
		}
		pct = min(pct, p)
	}
	return pct, rows.Err()
}

// ---- aggregates and evaluation

type userFacts struct {
	props map[string]Prop
	aggs  map[string]*rules.Agg
}

func (u *userFacts) facts() rules.Facts {
	return rules.Facts{
		Prop: func(name string) (rules.Value, bool) {
			p, ok := u.props[name]
			if !ok {
				return rules.Value{}, false
			}
			return propValue(p), true
		},
		Agg: func(key string) *rules.Agg { return u.aggs[key] },
	}
}

func propValue(p Prop) rules.Value {
	switch p.Kind {
	case PropString:
		return rules.Value{Kind: 's', S: p.S}
	case PropNumber:
		return rules.Value{Kind: 'n', N: p.N}
	case PropBool:
		return rules.Value{Kind: 'b', B: p.B}
	default:
		return rules.Value{Kind: 't', T: p.T.UnixMicro()}
	}
}

func eachRow(ctx context.Context, q store.Querier, query string, args []any, fn func(*sql.Rows) error) error {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		if err := fn(rows); err != nil {
			return err
		}
	}
	return rows.Err()
}

// evaluate re-evaluates segs for the users in dense on day today and writes
// the membership changes through applyMembership (the change log).
func (w *writer) evaluate(segs []*computedSegment, dense *roaring.Bitmap, today int32) error {
	return w.evaluateEach(segs, dense, func(*computedSegment) *roaring.Bitmap { return dense }, today)
}

// evaluateEach re-evaluates each segment for its own users (a subset of
// all, whose facts are read once).
func (w *writer) evaluateEach(segs []*computedSegment, all *roaring.Bitmap, users func(*computedSegment) *roaring.Bitmap, today int32) error {
	if len(segs) == 0 || all.IsEmpty() {
		return nil
	}
	facts, err := loadFacts(w.ctx, w.tx, w.tx.Dialect, w.env, all)
	if err != nil {
		return err
	}
	return w.evaluateFacts(segs, facts, users, today)
}

// evaluateFacts is evaluateEach over facts already known (a user absent
// from facts does not exist: it is in no segment).
func (w *writer) evaluateFacts(segs []*computedSegment, facts map[uint32]*userFacts, users func(*computedSegment) *roaring.Bitmap, today int32) error {
	for _, c := range segs {
		dense := users(c)
		if dense.IsEmpty() {
			continue
		}
		sg, err := w.s.getSegment(w.ctx, w.tx, w.env, c.id, true)
		if err != nil {
			return err
		}
		add, remove := roaring.New(), roaring.New()
		it := dense.Iterator()
		for it.HasNext() {
			d := it.Next()
			u := facts[d]
			want := u != nil && c.prog.Eval(u.facts(), today)
			if have := sg.Members.Contains(d); want && !have {
				add.Add(d)
			} else if !want && have {
				remove.Add(d)
			}
		}
		if _, _, err := w.applyMembership(sg, add, remove); err != nil {
			return err
		}
	}
	return nil
}

// evaluateTouched evaluates the live computed segments for the users the
// transaction created or changed.
func (w *writer) evaluateTouched() error {
	touched := w.touched
	w.touched = nil
	segs, err := w.computedSegments(Live)
	if err != nil {
		return err
	}
	return w.evaluate(segs, touched, rules.Today(w.s.now()))
}

// evaluateAll computes a segment's whole membership over every user of the
// environment and writes the difference: aggregates and users are read by
// dense-id range, a page at a time, the page's aggregates into arrays by
// condition and position (no map or allocation per user), then each user
// of the page evaluated as its row is read.
func (w *writer) evaluateAll(c *computedSegment, today int32) error {
	sg, err := w.s.getSegment(w.ctx, w.tx, w.env, c.id, true)
	if err != nil {
		return err
	}
	var top int64
	if err := w.tx.QueryRowContext(w.ctx, `SELECT COALESCE(MAX(dense_id), 0) FROM ss_users WHERE environment_id = ?`, w.env).Scan(&top); err != nil {
		return err
	}
	conds, err := condIDs(w.ctx, w.tx, w.env)
	if err != nil {
		return err
	}
	// Only the conditions the rule reads, each in a slot.
	var ids []int64
	for id, key := range conds {
		for _, cond := range c.prog.Conds() {
			if cond.Key == key {
				ids = append(ids, id)
			}
		}
	}
	slices.Sort(ids)
	slotOfID := make(map[int64]int, len(ids))
	slotOfKey := make(map[string]int, len(ids))
	aggs := make([][]rules.Agg, len(ids))
	for i, id := range ids {
		slotOfID[id], slotOfKey[conds[id]] = i, i
		aggs[i] = make([]rules.Agg, evalPage)
	}
	// The user being evaluated: its position in the page and properties.
	var at int
	var props map[string]Prop
	facts := rules.Facts{
		Prop: func(name string) (rules.Value, bool) {
			p, ok := props[name]
			if !ok {
				return rules.Value{}, false
			}
			return propValue(p), true
		},
		Agg: func(key string) *rules.Agg {
			s, ok := slotOfKey[key]
			if !ok || len(aggs[s][at].Days) == 0 {
				return nil
			}
			return &aggs[s][at]
		},
	}
	var days []rules.DayCount
	target := roaring.New()
	for lo := int64(0); lo < top; lo += evalPage {
		p := idPage{lo: uint32(lo), hi: uint32(min(lo+evalPage, top))}
		where, args := p.denseIn(w.tx.Dialect, `dense_id`)
		if len(ids) > 0 {
			for _, a := range aggs {
				clear(a)
			}
			days = days[:0]
			cw, cargs := condIn(w.tx.Dialect, ids)
			if err := eachAggRow(w.ctx, w.tx, `SELECT cond_id, dense_id, first_at, last_at, days FROM ss_event_aggs WHERE `+cw+` AND `+where, append(cargs, args...), func(cond, dense, first, last int64, b []byte) error {
				n := len(days)
				var err error
				if days, err = rules.AppendDecodeDays(days, b); err != nil {
					return fmt.Errorf("aggregate of condition %d, user %d: %w", cond, dense, err)
				}
				// Full slice expressions: a later append never writes into a row's days.
				aggs[slotOfID[cond]][dense-lo-1] = rules.Agg{First: first, Last: last, Days: days[n:len(days):len(days)]}
				return nil
			}); err != nil {
				return err
			}
		}
		eval := func(d int64) {
			at = int(d - lo - 1)
			if c.prog.Eval(facts, today) {
				target.Add(uint32(d))
			}
		}
		if !c.prog.UsesProperties() {
			// Only which users exist: their properties are never read, and a
			// page without a deleted user (most are) needs only its count.
			var n int64
			if err := w.tx.QueryRowContext(w.ctx, `SELECT COUNT(*) FROM ss_users WHERE environment_id = ? AND `+where, append([]any{w.env}, args...)...).Scan(&n); err != nil {
				return err
			}
			if n == int64(p.hi-p.lo) {
				for d := int64(p.lo) + 1; d <= int64(p.hi); d++ {
					eval(d)
				}
				continue
			}
			if err := eachRow(w.ctx, w.tx, `SELECT dense_id FROM ss_users WHERE environment_id = ? AND `+where, append([]any{w.env}, args...), func(r *sql.Rows) error {
				var d int64
				if err := r.Scan(&d); err != nil {
					return err
				}
				eval(d)
				return nil
			}); err != nil {
				return err
			}
		} else if err := eachRow(w.ctx, w.tx, `SELECT `+userCols+` FROM ss_users WHERE environment_id = ? AND `+where, append([]any{w.env}, args...), func(r *sql.Rows) error {
			u, err := scanUser(r)
			if err != nil {
				return err
			}
			props = u.Props
			eval(int64(u.Dense))
			return nil
		}); err != nil {
			return err
		}
	}
	adds, removes := membership.Diff(target, sg.Members)
	_, _, err = w.applyMembership(sg, adds, removes)
	return err
}

// evalPage is how many users one page of evaluateAll reads.
const evalPage = 65_536

// ---- the live consumer's side

// Position is the stream sequence the live consumer applied through.
func (s *Store) Position(ctx context.Context) (uint64, error) {
	var seq int64
	err := s.db.QueryRowContext(ctx, `SELECT seq FROM ss_event_position WHERE consumer = ?`, positionLive).Scan(&seq)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	return uint64(seq), err
}

// ConditionState is an event condition with its backfill progress.
type ConditionState struct {
	Env                    string
	Cond                   *rules.Cond
	State                  string
	Scanned, Target, First uint64
}

// Conditions returns every event condition of every environment.
func (s *Store) Conditions(ctx context.Context) ([]*ConditionState, error) {
	var out []*ConditionState
	err := eachRow(ctx, s.db, `SELECT environment_id, cond_key, definition, state, scanned, target, first_seq FROM ss_event_conditions ORDER BY environment_id, cond_key`, nil, func(r *sql.Rows) error {
		var c ConditionState
		var key, def string
		var scanned, target, first int64
		if err := r.Scan(&c.Env, &key, &def, &c.State, &scanned, &target, &first); err != nil {
			return err
		}
		cond, err := rules.ParseCond(key, def)
		if err != nil {
			return err
		}
		c.Cond, c.Scanned, c.Target, c.First = cond, uint64(scanned), uint64(target), uint64(first)
		out = append(out, &c)
		return nil
	})
	return out, err
}

// addEvents adds events to the aggregates of conds (events a condition does
// not match are skipped): the affected users' facts are read once (users the
// batch creates are known: no properties, the batch's aggregates), the
// batch merged into them in memory, and the changed rows written back in as
// few statements as the engine allows. It returns the affected users, the
// users the batch created, the keys affected and every affected user's
// facts after the batch.
func (w *writer) addEvents(evs []Event, conds []*rules.Cond, windows map[string][]int32, today int32) (affected, created *roaring.Bitmap, keys map[string]bool, facts map[uint32]*userFacts, err error) {
	type hit struct {
		ev   *Event
		cond *rules.Cond
	}
	var hits []hit
	var users []string
	for i := range evs {
		e := &evs[i]
		for _, c := range conds {
			if c.Matches(e.Source, e.Name, e.Props) {
				hits = append(hits, hit{e, c})
				users = append(users, e.User)
			}
		}
	}
	affected, created, keys = roaring.New(), roaring.New(), map[string]bool{}
	if len(hits) == 0 {
		return affected, created, keys, nil, nil
	}
	dense, err := w.resolve(users, true)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	if w.touched != nil {
		created, w.touched = w.touched, nil
	}
	for _, h := range hits {
		affected.Add(dense[h.ev.User])
	}
	ids, err := condIDs(w.ctx, w.tx, w.env)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	facts, err = loadFactsOf(w.ctx, w.tx, w.tx.Dialect, w.env, roaring.AndNot(affected, created), ids)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	it := created.Iterator()
	for it.HasNext() {
		facts[it.Next()] = &userFacts{props: map[string]Prop{}, aggs: map[string]*rules.Agg{}}
	}
	byKey := make(map[string]int64, len(ids))
	for id, k := range ids {
		byKey[k] = id
	}
	type rowKey struct {
		cond  int64
		dense uint32
	}
	changed := map[rowKey]*rules.Agg{}
	for _, h := range hits {
		d := dense[h.ev.User]
		u := facts[d]
		if u == nil {
			continue // deleted meanwhile (not in this transaction: resolve found it)
		}
		a := u.aggs[h.cond.Key]
		if a == nil {
			a = &rules.Agg{}
			u.aggs[h.cond.Key] = a
		}
		a.AddEvent(h.ev.Time)
		changed[rowKey{byKey[h.cond.Key], d}] = a
		keys[h.cond.Key] = true
	}
	rows := make([]aggRow, 0, len(changed))
	for k, a := range changed {
		rows = append(rows, aggRow{cond: k.cond, dense: k.dense, agg: a, expires: a.Expires(windows[ids[k.cond]], today)})
	}
	sortAggRows(rows)
	if err := writeAggs(w.ctx, w.tx, rows); err != nil {
		return nil, nil, nil, nil, err
	}
	return affected, created, keys, facts, nil
}

// usingKeys tells which segments' rules use one of keys.
func usingKeys(segs []*computedSegment, keys map[string]bool) map[*computedSegment]bool {
	out := map[*computedSegment]bool{}
	for _, c := range segs {
		for _, cond := range c.prog.Conds() {
			if keys[cond.Key] {
				out[c] = true
				break
			}
		}
	}
	return out
}

// EventBatch is a run of the events stream: every message from First to
// Through, and the events among them to apply.
type EventBatch struct {
	Events         []Event
	First, Through uint64
	// Retained is the stream's first sequence: messages below it expired, so
	// a batch may start there after a gap.
	Retained uint64
}

// ApplyEvents applies a batch of the events stream, in stream order, to the
// live conditions' aggregates and re-evaluates the affected users' live
// computed segments, moving the live position to b.Through in the same
// transaction. Events at or below the stored position were applied before
// (a redelivery) and are skipped, so a batch applies exactly once; a batch
// starting beyond the position (messages in between not applied, e.g. taken
// by a second consumer) is refused rather than skipping them.
func (s *Store) ApplyEvents(ctx context.Context, b EventBatch, now time.Time) error {
	evs, through := b.Events, b.Through
	pos, err := s.Position(ctx)
	if err != nil {
		return err
	}
	if through <= pos {
		return nil
	}
	byEnv := map[string][]Event{}
	var envs []string
	for _, e := range evs {
		if e.Seq <= pos {
			continue
		}
		if _, ok := byEnv[e.Env]; !ok {
			envs = append(envs, e.Env)
		}
		byEnv[e.Env] = append(byEnv[e.Env], e)
	}
	// Only environments with live conditions take part.
	live := map[string][]*rules.Cond{}
	if len(envs) > 0 {
		conds, err := s.Conditions(ctx)
		if err != nil {
			return err
		}
		for _, c := range conds {
			if c.State == Live && byEnv[c.Env] != nil {
				live[c.Env] = append(live[c.Env], c.Cond)
			}
		}
	}
	var touch []string
	for env := range live {
		touch = append(touch, env)
	}
	today := rules.Today(now)
	return s.writeEnvs(ctx, touch, func(tx *store.Tx, ws map[string]*writer) error {
		// The position row serialises consumers and is the redelivery guard.
		if _, err := tx.ExecContext(ctx, `INSERT INTO ss_event_position (consumer, seq) VALUES (?, 0) ON CONFLICT (consumer) DO NOTHING`, positionLive); err != nil {
			return err
		}
		var cur int64
		if err := tx.QueryRowContext(ctx, `UPDATE ss_event_position SET seq = seq WHERE consumer = ? RETURNING seq`, positionLive).Scan(&cur); err != nil {
			return err
		}
		if uint64(cur) != pos {
			return fmt.Errorf("segmentsync: event position moved from %d to %d under this consumer", pos, cur)
		}
		if b.First > pos+1 && b.First > b.Retained {
			return fmt.Errorf("segmentsync: events %d..%d of the stream were not applied; refusing the batch from %d", pos+1, b.First-1, b.First)
		}
		for env, w := range ws {
			segs, err := w.computedSegments("")
			if err != nil {
				return err
			}
			affected, created, keys, facts, err := w.addEvents(byEnv[env], live[env], condWindows(segs, "", nil), today)
			if err != nil {
				return fmt.Errorf("segmentsync: events of %s: %w", env, err)
			}
			if affected.IsEmpty() {
				continue
			}
			var liveSegs []*computedSegment
			for _, c := range segs {
				if c.state == Live {
					liveSegs = append(liveSegs, c)
				}
			}
			// Users these events created (a subset of affected) are evaluated
			// for every segment, as an "at most" or a "not" may hold for them;
			// the others only for the segments their events can change.
			uses := usingKeys(liveSegs, keys)
			if err := w.evaluateFacts(liveSegs, facts, func(c *computedSegment) *roaring.Bitmap {
				if uses[c] {
					return affected
				}
				return created
			}, today); err != nil {
				return fmt.Errorf("segmentsync: evaluate computed segments of %s: %w", env, err)
			}
		}
		_, err := tx.ExecContext(ctx, `UPDATE ss_event_position SET seq = ? WHERE consumer = ?`, int64(through), positionLive)
		return err
	})
}

// MarkConditionLive ends a condition's backfill: the live consumer, at
// position, takes it over from the next event.
func (s *Store) MarkConditionLive(ctx context.Context, env, key string) error {
	_, err := s.db.ExecContext(ctx, `UPDATE ss_event_conditions SET state = ? WHERE environment_id = ? AND cond_key = ?`, Live, env, key)
	return err
}

// InitComputedSegments evaluates, over every user, the computing segments
// whose conditions are all live, and makes them live. It returns how many
// became live.
func (s *Store) InitComputedSegments(ctx context.Context, now time.Time) (int, error) {
	type pending struct {
		env, id string
		version int64
	}
	var todo []pending
	err := eachRow(ctx, s.db, `SELECT c.environment_id, c.segment_id, c.rule_version FROM ss_computed c WHERE c.state = ? AND NOT EXISTS (
		SELECT 1 FROM ss_computed_conditions l JOIN ss_event_conditions e ON e.environment_id = l.environment_id AND e.cond_key = l.cond_key
		WHERE l.segment_id = c.segment_id AND e.state <> ?) ORDER BY c.environment_id, c.segment_id`, []any{Computing, Live}, func(r *sql.Rows) error {
		var p pending
		if err := r.Scan(&p.env, &p.id, &p.version); err != nil {
			return err
		}
		todo = append(todo, p)
		return nil
	})
	if err != nil {
		return 0, err
	}
	today := rules.Today(now)
	done := 0
	for _, p := range todo {
		err := s.write(ctx, p.env, func(w *writer) error {
			segs, err := w.computedSegments(Computing)
			if err != nil {
				return err
			}
			for _, c := range segs {
				if c.id != p.id || c.version != p.version {
					continue // changed since: its new conditions decide
				}
				if err := w.evaluateAll(c, today); err != nil {
					return err
				}
				if _, err := w.tx.ExecContext(ctx, `UPDATE ss_computed SET state = ? WHERE segment_id = ?`, Live, c.id); err != nil {
					return err
				}
				// The window pass counts expiries from the day of this evaluation on.
				if _, err := w.tx.ExecContext(ctx, `INSERT INTO ss_window_pass (environment_id, day) VALUES (?, ?) ON CONFLICT (environment_id) DO NOTHING`, p.env, today); err != nil {
					return err
				}
				done++
			}
			return nil
		})
		if err != nil {
			return done, fmt.Errorf("segmentsync: first evaluation of segment %s: %w", p.id, err)
		}
	}
	return done, nil
}

// WindowPass moves users whose counted day buckets left a sliding window
// since the last pass (without an event of theirs): the rows due by their
// expires (the first day one of their buckets leaves one of the condition's
// windows) name the users to re-evaluate, for the live segments with a
// window on that condition; their expires moves on to the next such day.
// It returns how many users were re-evaluated.
func (s *Store) WindowPass(ctx context.Context, now time.Time) (int, error) {
	var envs []string
	if err := eachRow(ctx, s.db, `SELECT DISTINCT environment_id FROM ss_computed WHERE state = ? ORDER BY environment_id`, []any{Live}, func(r *sql.Rows) error {
		var e string
		if err := r.Scan(&e); err != nil {
			return err
		}
		envs = append(envs, e)
		return nil
	}); err != nil {
		return 0, err
	}
	today := rules.Today(now)
	total := 0
	for _, env := range envs {
		err := s.write(ctx, env, func(w *writer) error {
			var last int32
			err := w.tx.QueryRowContext(ctx, `SELECT day FROM ss_window_pass WHERE environment_id = ?`, env).Scan(&last)
			if errors.Is(err, sql.ErrNoRows) {
				last = today
			} else if err != nil {
				return err
			}
			if last >= today {
				return nil
			}
			segs, err := w.computedSegments("")
			if err != nil {
				return err
			}
			windows := condWindows(segs, "", nil)
			ids, err := condIDs(ctx, w.tx, env)
			if err != nil {
				return err
			}
			condList := make([]int64, 0, len(ids))
			for id := range ids {
				condList = append(condList, id)
			}
			slices.Sort(condList)
			due := map[string]*roaring.Bitmap{}
			var rows []aggRow
			for _, id := range condList {
				key := ids[id]
				if err := eachRow(ctx, w.tx, `SELECT dense_id, first_at, last_at, days FROM ss_event_aggs WHERE cond_id = ? AND expires <= ?`, []any{id, today}, func(r *sql.Rows) error {
					var d int64
					var a rules.Agg
					var days []byte
					if err := r.Scan(&d, &a.First, &a.Last, &days); err != nil {
						return err
					}
					if a.Days, err = rules.DecodeDays(days); err != nil {
						return err
					}
					if due[key] == nil {
						due[key] = roaring.New()
					}
					due[key].Add(uint32(d))
					rows = append(rows, aggRow{cond: id, dense: uint32(d), agg: &a, expires: a.Expires(windows[key], today)})
					return nil
				}); err != nil {
					return err
				}
			}
			all := roaring.New()
			users := map[*computedSegment]*roaring.Bitmap{}
			var liveSegs []*computedSegment
			for _, c := range segs {
				if c.state != Live {
					continue
				}
				mine := roaring.New()
				for _, win := range c.prog.Windows() {
					if b := due[win.Key]; b != nil {
						mine.Or(b)
					}
				}
				liveSegs, users[c] = append(liveSegs, c), mine
				all.Or(mine)
			}
			if err := w.evaluateEach(liveSegs, all, func(c *computedSegment) *roaring.Bitmap { return users[c] }, today); err != nil {
				return err
			}
			total += int(all.GetCardinality())
			if err := writeAggs(ctx, w.tx, rows); err != nil {
				return err
			}
			_, err = w.tx.ExecContext(ctx, `UPDATE ss_window_pass SET day = ? WHERE environment_id = ?`, today, env)
			return err
		})
		if err != nil {
			return total, fmt.Errorf("segmentsync: window pass of %s: %w", env, err)
		}
	}
	return total, nil
}

// ---- preview

// Preview evaluates prog over every user of env on day today without saving:
// aggregates of live conditions come from the store, those of other
// conditions from extra (condition key → user id → aggregate, read from the
// stream by the caller). Users known only from extra count with no
// properties.
func (s *Store) Preview(ctx context.Context, env string, prog *rules.Program, extra map[string]map[string]*rules.Agg, today int32, sampleSize int) (uint64, []string, error) {
	liveKeys := map[string]bool{}
	if err := eachRow(ctx, s.db, `SELECT cond_key FROM ss_event_conditions WHERE environment_id = ? AND state = ?`, []any{env, Live}, func(r *sql.Rows) error {
		var k string
		if err := r.Scan(&k); err != nil {
			return err
		}
		liveKeys[k] = true
		return nil
	}); err != nil {
		return 0, nil, err
	}
	var count uint64
	var sample []string
	seenUsers := map[string]bool{}
	take := func(id string, u *userFacts) {
		for key, byUser := range extra {
			if !liveKeys[key] {
				if a := byUser[id]; a != nil {
					u.aggs[key] = a
				} else {
					delete(u.aggs, key)
				}
			}
		}
		if prog.Eval(u.facts(), today) {
			count++
			if len(sample) < sampleSize {
				sample = append(sample, id)
			}
		}
	}
	var after uint32
	for {
		users, err := s.UsersPage(ctx, env, after, 2000)
		if err != nil {
			return 0, nil, err
		}
		if len(users) == 0 {
			break
		}
		dense := roaring.New()
		for _, u := range users {
			dense.Add(u.Dense)
		}
		facts, err := loadFacts(ctx, s.db, s.db.Dialect, env, dense)
		if err != nil {
			return 0, nil, err
		}
		for _, u := range users {
			seenUsers[u.ID] = true
			if f := facts[u.Dense]; f != nil {
				take(u.ID, f)
			}
		}
		after = users[len(users)-1].Dense
	}
	var newcomers []string
	for key, byUser := range extra {
		if liveKeys[key] {
			continue
		}
		for id := range byUser {
			if !seenUsers[id] {
				seenUsers[id] = true
				newcomers = append(newcomers, id)
			}
		}
	}
	sort.Strings(newcomers)
	for _, id := range newcomers {
		take(id, &userFacts{props: map[string]Prop{}, aggs: map[string]*rules.Agg{}})
	}
	return count, sample, nil
}

// LiveConditionKeys returns env's live condition keys.
func (s *Store) LiveConditionKeys(ctx context.Context, env string) (map[string]bool, error) {
	out := map[string]bool{}
	err := eachRow(ctx, s.db, `SELECT cond_key FROM ss_event_conditions WHERE environment_id = ? AND state = ?`, []any{env, Live}, func(r *sql.Rows) error {
		var k string
		if err := r.Scan(&k); err != nil {
			return err
		}
		out[k] = true
		return nil
	})
	return out, err
}
