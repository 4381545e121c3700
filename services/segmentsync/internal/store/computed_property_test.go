package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"
	"pgregory.net/rapid"

	segmentsyncv1 "github.com/seghub/seghub/gen/seghub/segmentsync/v1"
	"github.com/seghub/seghub/pkg/store"
	"github.com/seghub/seghub/pkg/store/storetest"
	"github.com/seghub/seghub/services/segmentsync/internal/rules"
)

// The correctness reference: a batch evaluator that answers a definition
// with one SQL query over a plain table of every event (and one of user
// properties). The incremental evaluator (aggregates updated per event
// batch, backfill, redeliveries, the window pass after clock moves) must
// hold exactly the members the query returns, after every step of random
// event streams, definitions and clock moves.
func TestComputedMatchesBatchSQL(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		st, err := Open(ctx, db, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, q := range []string{
			`CREATE TABLE ref_events (env TEXT NOT NULL, user_id TEXT NOT NULL, source TEXT NOT NULL, name TEXT NOT NULL, flow TEXT, ts BIGINT NOT NULL, rcv BIGINT NOT NULL)`,
			`CREATE TABLE ref_users (env TEXT NOT NULL, user_id TEXT NOT NULL, plan TEXT, score DOUBLE PRECISION)`,
		} {
			if _, err := db.ExecContext(ctx, q); err != nil {
				t.Fatal(err)
			}
		}
		var n atomic.Int64
		rapid.Check(t, func(rt *rapid.T) {
			env := fmt.Sprintf("env-prop-%d", n.Add(1))
			runComputedScenario(ctx, rt, db, st, env)
		})
	})
}

var propUsers = []string{"u0", "u1", "u2", "u3", "u4", "u5"}

func genRule(depth int) *rapid.Generator[*segmentsyncv1.SegmentRule] {
	return rapid.Custom(func(t *rapid.T) *segmentsyncv1.SegmentRule {
		kind := rapid.IntRange(0, 5).Draw(t, "kind")
		if depth >= 3 && kind <= 2 {
			kind = 3 + kind%3
		}
		switch kind {
		case 0, 1:
			n := rapid.IntRange(1, 3).Draw(t, "n")
			var list []*segmentsyncv1.SegmentRule
			for i := 0; i < n; i++ {
				list = append(list, genRule(depth+1).Draw(t, "child"))
			}
			if kind == 0 {
				return &segmentsyncv1.SegmentRule{All: list}
			}
			return &segmentsyncv1.SegmentRule{Any: list}
		case 2:
			return &segmentsyncv1.SegmentRule{Not: genRule(depth+1).Draw(t, "not")}
		case 3:
			return &segmentsyncv1.SegmentRule{Property: genProperty(t)}
		default:
			return &segmentsyncv1.SegmentRule{Event: genEvent(t)}
		}
	})
}

func genProperty(t *rapid.T) *segmentsyncv1.PropertyCondition {
	str := func(s string) *segmentsyncv1.PropertyValue {
		return &segmentsyncv1.PropertyValue{Kind: &segmentsyncv1.PropertyValue_StringValue{StringValue: s}}
	}
	num := func(n float64) *segmentsyncv1.PropertyValue {
		return &segmentsyncv1.PropertyValue{Kind: &segmentsyncv1.PropertyValue_NumberValue{NumberValue: n}}
	}
	switch rapid.IntRange(0, 5).Draw(t, "prop") {
	case 0:
		return &segmentsyncv1.PropertyCondition{Property: "plan", Operator: segmentsyncv1.PropertyOperator_PROPERTY_OPERATOR_EQUALS, Value: str(rapid.SampledFrom([]string{"free", "pro"}).Draw(t, "v"))}
	case 1:
		return &segmentsyncv1.PropertyCondition{Property: "plan", Operator: segmentsyncv1.PropertyOperator_PROPERTY_OPERATOR_NOT_EQUALS, Value: str(rapid.SampledFrom([]string{"free", "pro"}).Draw(t, "v"))}
	case 2:
		return &segmentsyncv1.PropertyCondition{Property: "plan", Operator: segmentsyncv1.PropertyOperator_PROPERTY_OPERATOR_EXISTS}
	case 3:
		return &segmentsyncv1.PropertyCondition{Property: "plan", Operator: segmentsyncv1.PropertyOperator_PROPERTY_OPERATOR_CONTAINS, Value: str(rapid.SampledFrom([]string{"r", "o", "x"}).Draw(t, "v"))}
	case 4:
		return &segmentsyncv1.PropertyCondition{Property: "score", Operator: segmentsyncv1.PropertyOperator_PROPERTY_OPERATOR_GREATER_THAN, Value: num(float64(rapid.IntRange(0, 10).Draw(t, "v")))}
	default:
		return &segmentsyncv1.PropertyCondition{Property: "score", Operator: segmentsyncv1.PropertyOperator_PROPERTY_OPERATOR_LESS_THAN, Value: num(float64(rapid.IntRange(0, 10).Draw(t, "v")))}
	}
}

var propBase = time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)

func genEvent(t *rapid.T) *segmentsyncv1.EventCondition {
	ec := &segmentsyncv1.EventCondition{Source: "appcues", Name: rapid.SampledFrom([]string{"Flow Completed", "Flow Started"}).Draw(t, "name")}
	if rapid.Bool().Draw(t, "filtered") {
		ec.Where = []*segmentsyncv1.EventPropertyFilter{{Property: "Flow ID", Value: &segmentsyncv1.EventPropertyFilter_StringValue{StringValue: rapid.SampledFrom([]string{"f1", "f2"}).Draw(t, "flow")}}}
	}
	if rapid.IntRange(0, 3).Draw(t, "seen?") == 0 {
		ec.Seen = segmentsyncv1.SeenOperator(rapid.IntRange(1, 4).Draw(t, "seen"))
		ec.SeenTime = timestamppb.New(propBase.Add(time.Duration(rapid.IntRange(-72, 72).Draw(t, "seenHours")) * time.Hour))
		return ec
	}
	ec.CountOperator = segmentsyncv1.CountOperator(rapid.IntRange(1, 3).Draw(t, "op"))
	ec.Times = uint32(rapid.IntRange(0, 3).Draw(t, "times"))
	if ec.CountOperator == segmentsyncv1.CountOperator_COUNT_OPERATOR_AT_LEAST && ec.Times == 0 {
		ec.Times = 1
	}
	switch rapid.IntRange(0, 2).Draw(t, "window") {
	case 1:
		ec.WithinDays = uint32(rapid.IntRange(1, 5).Draw(t, "days"))
	case 2:
		lo := rapid.IntRange(-4, 2).Draw(t, "lo")
		hi := lo + rapid.IntRange(0, 3).Draw(t, "len")
		ec.StartDate = propBase.AddDate(0, 0, lo).Format("2006-01-02")
		ec.EndDate = propBase.AddDate(0, 0, hi).Format("2006-01-02")
	}
	return ec
}

// refSQL is the batch evaluator's boolean expression for r over u (a
// ref_users row) and ref_events.
func refSQL(r *segmentsyncv1.SegmentRule, today int64, args *[]any) string {
	join := func(list []*segmentsyncv1.SegmentRule, op string) string {
		parts := make([]string, len(list))
		for i, c := range list {
			parts[i] = refSQL(c, today, args)
		}
		return "(" + strings.Join(parts, " "+op+" ") + ")"
	}
	switch {
	case len(r.GetAll()) > 0:
		return join(r.GetAll(), "AND")
	case len(r.GetAny()) > 0:
		return join(r.GetAny(), "OR")
	case r.GetNot() != nil:
		return "(NOT " + refSQL(r.GetNot(), today, args) + ")"
	case r.GetProperty() != nil:
		p := r.GetProperty()
		col := "u." + p.GetProperty()
		switch p.GetOperator() {
		case segmentsyncv1.PropertyOperator_PROPERTY_OPERATOR_EXISTS:
			return "(" + col + " IS NOT NULL)"
		case segmentsyncv1.PropertyOperator_PROPERTY_OPERATOR_CONTAINS:
			*args = append(*args, "%"+p.GetValue().GetStringValue()+"%")
			return "(" + col + " IS NOT NULL AND " + col + " LIKE ?)"
		}
		var v any = p.GetValue().GetStringValue()
		if p.GetProperty() == "score" {
			v = p.GetValue().GetNumberValue()
		}
		*args = append(*args, v)
		switch p.GetOperator() {
		case segmentsyncv1.PropertyOperator_PROPERTY_OPERATOR_EQUALS:
			return "(" + col + " IS NOT NULL AND " + col + " = ?)"
		case segmentsyncv1.PropertyOperator_PROPERTY_OPERATOR_NOT_EQUALS:
			return "(" + col + " IS NULL OR " + col + " <> ?)"
		case segmentsyncv1.PropertyOperator_PROPERTY_OPERATOR_LESS_THAN:
			return "(" + col + " IS NOT NULL AND " + col + " < ?)"
		default:
			return "(" + col + " IS NOT NULL AND " + col + " > ?)"
		}
	}
	ec := r.GetEvent()
	const t = "(CASE WHEN e.rcv < e.ts THEN e.rcv ELSE e.ts END)"
	from := " FROM ref_events e WHERE e.env = u.env AND e.user_id = u.user_id AND e.source = ? AND e.name = ?"
	*args = append(*args, ec.GetSource(), ec.GetName())
	for _, w := range ec.GetWhere() {
		from += " AND e.flow = ?"
		*args = append(*args, w.GetStringValue())
	}
	if ec.GetSeen() != segmentsyncv1.SeenOperator_SEEN_OPERATOR_UNSPECIFIED {
		at := ec.GetSeenTime().AsTime().UnixMicro()
		agg, none, cmp := "MIN", int64(9e18), "<"
		switch ec.GetSeen() {
		case segmentsyncv1.SeenOperator_SEEN_OPERATOR_FIRST_AFTER:
			none, cmp = -9e18, ">="
		case segmentsyncv1.SeenOperator_SEEN_OPERATOR_LAST_BEFORE:
			agg = "MAX"
		case segmentsyncv1.SeenOperator_SEEN_OPERATOR_LAST_AFTER:
			agg, none, cmp = "MAX", -9e18, ">="
		}
		*args = append(*args, none, at)
		return "(COALESCE((SELECT " + agg + "(" + t + ")" + from + "), ?) " + cmp + " ?)"
	}
	day := t + " / 86400000000"
	switch {
	case ec.GetWithinDays() > 0:
		from += " AND " + day + " >= ?"
		*args = append(*args, today-int64(ec.GetWithinDays())+1)
	case ec.GetStartDate() != "":
		lo, _ := time.Parse("2006-01-02", ec.GetStartDate())
		hi, _ := time.Parse("2006-01-02", ec.GetEndDate())
		from += " AND " + day + " >= ? AND " + day + " <= ?"
		*args = append(*args, lo.Unix()/86400, hi.Unix()/86400)
	}
	cmp := map[segmentsyncv1.CountOperator]string{
		segmentsyncv1.CountOperator_COUNT_OPERATOR_AT_LEAST: ">=",
		segmentsyncv1.CountOperator_COUNT_OPERATOR_AT_MOST:  "<=",
		segmentsyncv1.CountOperator_COUNT_OPERATOR_EXACTLY:  "=",
	}[ec.GetCountOperator()]
	*args = append(*args, int64(ec.GetTimes()))
	return "((SELECT COUNT(*)" + from + ") " + cmp + " ?)"
}

// batchMembers is the batch evaluator: one query per definition.
func batchMembers(ctx context.Context, db *store.DB, env string, r *segmentsyncv1.SegmentRule, now time.Time) ([]string, error) {
	args := []any{}
	expr := refSQL(r, now.UnixMicro()/86400000000, &args)
	rows, err := db.QueryContext(ctx, `SELECT u.user_id FROM ref_users u WHERE u.env = ? AND `+expr+` ORDER BY u.user_id`, append([]any{env}, args...)...)
	if err != nil {
		return nil, fmt.Errorf("batch query %s: %w", expr, err)
	}
	defer rows.Close()
	out := []string{}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		out = append(out, id)
	}
	return out, rows.Err()
}

func incrementalMembers(ctx context.Context, st *Store, env, id string) ([]string, error) {
	sg, err := st.GetSegment(ctx, env, id, true)
	if err != nil {
		return nil, err
	}
	ids, err := st.UserIDs(ctx, env, sg.Members.ToArray())
	if err != nil {
		return nil, err
	}
	out := []string{}
	for _, u := range ids {
		out = append(out, u)
	}
	sort.Strings(out)
	return out, nil
}

func runComputedScenario(ctx context.Context, t *rapid.T, db *store.DB, st *Store, env string) {
	now := propBase
	st.SetClock(func() time.Time { return now })
	fail := func(what string, err error) {
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	// Every user exists (an event of an unknown user creates it only once
	// a condition matches it; the reference has no such notion).
	setProps := func(user string) {
		plan := rapid.SampledFrom([]string{"", "free", "pro"}).Draw(t, "plan")
		score := rapid.IntRange(-1, 10).Draw(t, "score")
		props := map[string]*Prop{"plan": nil, "score": nil}
		var planV, scoreV any
		if plan != "" {
			props["plan"], planV = &Prop{Kind: PropString, S: plan}, plan
		}
		if score >= 0 {
			props["score"], scoreV = &Prop{Kind: PropNumber, N: float64(score)}, float64(score)
		}
		_, _, err := st.UpsertUsers(ctx, env, []UserUpsert{{ID: user, Props: props}})
		fail("upsert", err)
		_, err = db.ExecContext(ctx, `DELETE FROM ref_users WHERE env = ? AND user_id = ?`, env, user)
		fail("ref user", err)
		_, err = db.ExecContext(ctx, `INSERT INTO ref_users (env, user_id, plan, score) VALUES (?, ?, ?, ?)`, env, user, planV, scoreV)
		fail("ref user", err)
	}
	for _, u := range propUsers {
		setProps(u)
	}
	var seq uint64
	var all []Event
	pos, err := st.Position(ctx)
	fail("position", err)
	seq = pos // sequences are global to the stream, shared by every environment
	genEvents := func() []Event {
		n := rapid.IntRange(1, 6).Draw(t, "events")
		out := make([]Event, 0, n)
		for i := 0; i < n; i++ {
			seq++
			ts := now.Add(-time.Duration(rapid.IntRange(-12, 120).Draw(t, "ageHours")) * time.Hour).UnixMicro()
			rcv := now.UnixMicro()
			props := map[string]any{}
			flow := rapid.SampledFrom([]string{"", "f1", "f2"}).Draw(t, "flow")
			var flowV any
			if flow != "" {
				props["Flow ID"], flowV = flow, flow
			}
			e := Event{Seq: seq, Env: env, User: rapid.SampledFrom(propUsers).Draw(t, "user"), Source: "appcues",
				Name: rapid.SampledFrom([]string{"Flow Completed", "Flow Started"}).Draw(t, "name"), Props: props}
			_, err := db.ExecContext(ctx, `INSERT INTO ref_events (env, user_id, source, name, flow, ts, rcv) VALUES (?, ?, ?, ?, ?, ?, ?)`, env, e.User, e.Source, e.Name, flowV, ts, rcv)
			fail("ref event", err)
			e.Time = min(ts, rcv)
			out = append(out, e)
			all = append(all, e)
		}
		return out
	}
	// Events before any definition: a backfill must find them.
	early := rapid.IntRange(0, 2).Draw(t, "earlyBatches")
	for i := 0; i < early; i++ {
		evs := genEvents()
		fail("apply", st.ApplyEvents(ctx, EventBatch{Events: evs, First: evs[0].Seq, Through: seq}, now))
	}
	type def struct {
		id   string
		rule *segmentsyncv1.SegmentRule
	}
	var defs []def
	define := func() {
		r := genRule(1).Draw(t, "rule")
		sg, err := st.CreateComputedSegment(ctx, env, fmt.Sprintf("s%d", len(defs)), "", Public, r)
		fail("create", err)
		defs = append(defs, def{sg.ID, r})
		// What the evaluator does: backfill the stream read so far (in
		// random chunks), mark live, evaluate.
		conds, err := st.Conditions(ctx)
		fail("conditions", err)
		for _, c := range conds {
			if c.Env != env || c.State != Computing {
				continue
			}
			var mine []Event
			for _, e := range all {
				if e.Seq > c.Scanned {
					mine = append(mine, e)
				}
			}
			for len(mine) > 0 {
				k := rapid.IntRange(1, len(mine)).Draw(t, "chunk")
				chunk := mine[:k]
				mine = mine[k:]
				through := chunk[len(chunk)-1].Seq
				if len(mine) == 0 {
					through = seq
				}
				fail("backfill", st.BackfillEvents(ctx, env, c.Cond.Key, chunk, through, seq, 1))
				if rapid.Bool().Draw(t, "backfill again") { // a retried chunk changes nothing
					fail("backfill", st.BackfillEvents(ctx, env, c.Cond.Key, chunk, through, seq, 1))
				}
			}
			fail("live", st.MarkConditionLive(ctx, env, c.Cond.Key))
		}
		_, err = st.InitComputedSegments(ctx, now)
		fail("init", err)
	}
	define()
	check := func(step string) {
		for _, d := range defs {
			want, err := batchMembers(ctx, db, env, d.rule, now)
			fail("batch", err)
			got, err := incrementalMembers(ctx, st, env, d.id)
			fail("incremental", err)
			if strings.Join(want, ",") != strings.Join(got, ",") {
				t.Fatalf("after %s at %s, rule %v: incremental %v, batch SQL %v", step, now.Format(time.RFC3339), d.rule, got, want)
			}
		}
	}
	check("definition")
	steps := rapid.IntRange(1, 12).Draw(t, "steps")
	for i := 0; i < steps; i++ {
		switch rapid.IntRange(0, 9).Draw(t, "step") {
		case 0, 1, 2, 3:
			evs := genEvents()
			batch := EventBatch{Events: evs, First: evs[0].Seq, Through: seq}
			fail("apply", st.ApplyEvents(ctx, batch, now))
			if rapid.Bool().Draw(t, "redeliver") { // redelivery is a no-op
				fail("redeliver", st.ApplyEvents(ctx, batch, now))
			}
			check("events")
		case 4, 5, 6:
			now = now.Add(time.Duration(rapid.IntRange(1, 80).Draw(t, "hours")) * time.Hour)
			_, err := st.WindowPass(ctx, now)
			fail("window pass", err)
			check("clock move")
		case 7:
			setProps(rapid.SampledFrom(propUsers).Draw(t, "user"))
			check("property change")
		case 8:
			if len(defs) < 4 {
				define()
				check("new definition")
			}
		default:
			d := &defs[rapid.IntRange(0, len(defs)-1).Draw(t, "edit")]
			d.rule = genRule(1).Draw(t, "new rule")
			_, err := st.UpdateSegment(ctx, env, d.id, SegmentUpdate{Rule: d.rule})
			fail("edit", err)
			// The evaluator's turn: backfill new conditions, evaluate.
			conds, err := st.Conditions(ctx)
			fail("conditions", err)
			for _, c := range conds {
				if c.Env != env || c.State != Computing {
					continue
				}
				fail("backfill", st.BackfillEvents(ctx, env, c.Cond.Key, all, seq, seq, 1))
				fail("live", st.MarkConditionLive(ctx, env, c.Cond.Key))
			}
			_, err = st.InitComputedSegments(ctx, now)
			fail("init", err)
			check("edited definition")
		}
	}
}

// A batch that does not continue from the stored position is refused (a
// second consumer holding the events in between must not make them skipped),
// unless the events in between expired from the stream.
func TestApplyEventsRefusesAGap(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		st, err := Open(ctx, db, nil)
		if err != nil {
			t.Fatal(err)
		}
		ev := func(seq uint64) Event {
			return Event{Seq: seq, Env: "env-gap", User: "u", Source: "api", Name: "X", Time: propBase.UnixMicro()}
		}
		if err := st.ApplyEvents(ctx, EventBatch{Events: []Event{ev(1), ev(2)}, First: 1, Through: 2}, propBase); err != nil {
			t.Fatal(err)
		}
		if err := st.ApplyEvents(ctx, EventBatch{Events: []Event{ev(5)}, First: 5, Through: 5}, propBase); err == nil {
			t.Fatal("a batch from 5 after position 2 was applied")
		}
		if err := st.ApplyEvents(ctx, EventBatch{Events: []Event{ev(2), ev(3)}, First: 2, Through: 3}, propBase); err != nil {
			t.Fatalf("a batch overlapping the position: %v", err)
		}
		if err := st.ApplyEvents(ctx, EventBatch{Events: []Event{ev(9)}, First: 9, Through: 9, Retained: 9}, propBase); err != nil {
			t.Fatalf("a batch after expired events: %v", err)
		}
		if pos, _ := st.Position(ctx); pos != 9 {
			t.Fatalf("position %d, want 9", pos)
		}
	})
}

// BackfillEvents (the property test's backfill, one condition at a time) applies events of the stream (sequences above the
// condition's scanned mark) to one computing condition and records that the
// stream was read through `through`, out of target, starting at first: an
// ApplyBackfill of one condition.
func (s *Store) BackfillEvents(ctx context.Context, env, key string, evs []Event, through, target, first uint64) error {
	var def, state string
	var scanned int64
	err := s.db.QueryRowContext(ctx, `SELECT definition, state, scanned FROM ss_event_conditions WHERE environment_id = ? AND cond_key = ?`, env, key).Scan(&def, &state, &scanned)
	if errors.Is(err, sql.ErrNoRows) {
		return nil // no longer used
	}
	if err != nil {
		return err
	}
	if state != Computing {
		return nil
	}
	cond, err := rules.ParseCond(key, def)
	if err != nil {
		return err
	}
	byUser := map[string]*rules.Agg{}
	var order []string
	for _, e := range evs {
		if e.Seq > uint64(scanned) && e.Env == env && cond.Matches(e.Source, e.Name, e.Props) {
			a := byUser[e.User]
			if a == nil {
				a = &rules.Agg{}
				byUser[e.User] = a
				order = append(order, e.User)
			}
			a.AddEvent(e.Time)
		}
	}
	read := &BackfillRead{Env: env, Since: map[string]uint64{key: uint64(scanned)}, Through: through, Target: target, First: first}
	for _, u := range order {
		read.Users = append(read.Users, UserAggs{User: u, Aggs: []KeyedAgg{{Key: key, Agg: *byUser[u]}}})
	}
	return s.ApplyBackfill(ctx, read)
}
