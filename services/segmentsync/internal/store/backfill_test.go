package store

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/RoaringBitmap/roaring/v2"

	segmentsyncv1 "github.com/seghub/seghub/gen/seghub/segmentsync/v1"
	"github.com/seghub/seghub/pkg/store"
	"github.com/seghub/seghub/services/segmentsync/internal/rules"
)

// ApplyBackfill adds a read to the conditions whose scanned mark it started
// from (creating its users), leaves the others, and a repeated read changes
// nothing; the next read adds to what the first stored.
func TestApplyBackfillMergesOncePerMark(t *testing.T) {
	backends(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		s, err := Open(ctx, db, nil)
		if err != nil {
			t.Fatal(err)
		}
		s.SetClock(func() time.Time { return propBase })
		const env = "env_bf"
		rule := func(name string) *segmentsyncv1.SegmentRule {
			return &segmentsyncv1.SegmentRule{Event: &segmentsyncv1.EventCondition{Source: "api", Name: name, CountOperator: segmentsyncv1.CountOperator_COUNT_OPERATOR_AT_LEAST, Times: 3, WithinDays: 30}}
		}
		if _, err := s.CreateComputedSegment(ctx, env, "a", "", Public, rule("A")); err != nil {
			t.Fatal(err)
		}
		if _, err := s.CreateComputedSegment(ctx, env, "b", "", Public, rule("B")); err != nil {
			t.Fatal(err)
		}
		conds, err := s.Conditions(ctx)
		if err != nil || len(conds) != 2 {
			t.Fatalf("conditions %v %v", conds, err)
		}
		ka, kb := conds[0].Cond.Key, conds[1].Cond.Key
		today := rules.Today(propBase)
		at := func(day int32) int64 { return int64(day)*86_400_000_000 + 1000 }
		agg := func(day int32, n int64) rules.Agg {
			return rules.Agg{Days: []rules.DayCount{{Day: day, N: n}}, First: at(day), Last: at(day)}
		}
		var users []UserAggs
		for i := range 3000 {
			users = append(users, UserAggs{User: fmt.Sprintf("u%05d", i), Aggs: []KeyedAgg{{Key: ka, Agg: agg(today-1, 1)}, {Key: kb, Agg: agg(today-2, 2)}}})
		}
		first := &BackfillRead{Env: env, Since: map[string]uint64{ka: 0, kb: 0}, Through: 100, Target: 200, First: 1, Users: users}
		for range 2 { // the second is a retry: its marks no longer match
			if err := s.ApplyBackfill(ctx, first); err != nil {
				t.Fatal(err)
			}
		}
		// The next read: for ka from 100, and kb's mark is stale (left alone).
		second := &BackfillRead{Env: env, Since: map[string]uint64{ka: 100, kb: 50}, Through: 150, Target: 200, First: 1,
			Users: []UserAggs{{User: "u00007", Aggs: []KeyedAgg{{Key: ka, Agg: agg(today, 4)}, {Key: kb, Agg: agg(today, 9)}}}, {User: "new", Aggs: []KeyedAgg{{Key: ka, Agg: agg(today-3, 1)}}}}}
		if err := s.ApplyBackfill(ctx, second); err != nil {
			t.Fatal(err)
		}
		if err := s.BackfillProgress(ctx, env, []string{kb}, 190, 200, 1); err != nil {
			t.Fatal(err)
		}
		dense, err := s.DenseIDs(ctx, env, []string{"u00007", "u00008", "new"})
		if err != nil || len(dense) != 3 {
			t.Fatalf("dense ids %v %v", dense, err)
		}
		b := roaring.New()
		for _, d := range dense {
			b.Add(d)
		}
		facts, err := loadFacts(ctx, s.db, s.db.Dialect, env, b)
		if err != nil {
			t.Fatal(err)
		}
		check := func(user, key string, want []rules.DayCount) {
			t.Helper()
			a := facts[dense[user]].aggs[key]
			if a == nil && want == nil {
				return
			}
			if a == nil || fmt.Sprint(a.Days) != fmt.Sprint(want) {
				t.Fatalf("%s %s: %+v, want %v", user, key, a, want)
			}
		}
		check("u00007", ka, []rules.DayCount{{Day: today - 1, N: 1}, {Day: today, N: 4}})
		check("u00007", kb, []rules.DayCount{{Day: today - 2, N: 2}})
		check("u00008", ka, []rules.DayCount{{Day: today - 1, N: 1}})
		check("new", ka, []rules.DayCount{{Day: today - 3, N: 1}})
		check("new", kb, nil)
		conds, err = s.Conditions(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range conds {
			want := map[string]uint64{ka: 150, kb: 100}[c.Cond.Key]
			if c.Scanned != want || c.Target != 200 {
				t.Fatalf("condition %s: scanned %d target %d, want %d, 200", c.Cond.Key, c.Scanned, c.Target, want)
			}
		}
		var progress int64
		if err := db.QueryRowContext(ctx, `SELECT progress FROM ss_event_conditions WHERE environment_id = ? AND cond_key = ?`, env, kb).Scan(&progress); err != nil || progress != 190 {
			t.Fatalf("progress of %s: %d %v", kb, progress, err)
		}
	})
}
