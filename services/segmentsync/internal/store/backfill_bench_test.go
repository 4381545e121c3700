package store

import (
	"context"
	"fmt"
	"math/rand"
	"os"
	"strconv"
	"testing"
	"time"

	segmentsyncv1 "github.com/seghub/seghub/gen/seghub/segmentsync/v1"
	"github.com/seghub/seghub/pkg/store"
	"github.com/seghub/seghub/pkg/store/storetest"
	"github.com/seghub/seghub/services/segmentsync/internal/rules"
)

// BenchmarkApplyBackfill times one ApplyBackfill of a read of N users
// (SEGHUB_BENCH_USERS, default 100 000) × 2 conditions, then the first
// evaluation (InitComputedSegments) of a rule over both:
// go test -run - -bench ApplyBackfill -benchtime 1x ./internal/store
// In "new" the read's users are new to the store (ApplyBackfill creates
// them); in "existing" they exist already, created in an order unrelated to
// their ids (as the live consumer creates them when their events pass).
func BenchmarkApplyBackfill(b *testing.B) {
	n := 100_000
	if v, err := strconv.Atoi(os.Getenv("SEGHUB_BENCH_USERS")); err == nil {
		n = v
	}
	for _, be := range []struct {
		name string
		open func(testing.TB) *store.DB
	}{{"sqlite", storetest.SQLite}, {"postgres", storetest.Postgres}} {
		for _, existing := range []bool{false, true} {
			name := be.name + "/new"
			if existing {
				name = be.name + "/existing"
			}
			b.Run(name, func(b *testing.B) {
				benchApplyBackfill(b, be.open, n, existing)
			})
		}
	}
}

func benchApplyBackfill(b *testing.B, open func(testing.TB) *store.DB, n int, existing bool) {
	for range b.N {
		b.StopTimer()
		ctx := context.Background()
		db := open(b)
		s, err := Open(ctx, db, nil)
		if err != nil {
			b.Fatal(err)
		}
		now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
		s.SetClock(func() time.Time { return now })
		const env = "env_bench"
		if existing {
			ids := make([]string, n)
			for i, j := range rand.New(rand.NewSource(2)).Perm(n) {
				ids[i] = fmt.Sprintf("user-%07d", j)
			}
			if err := s.write(ctx, env, func(w *writer) error {
				_, err := w.createUsers(ids, nil)
				return err
			}); err != nil {
				b.Fatal(err)
			}
		}
		ev := func(name string, times uint32, within uint32) *segmentsyncv1.SegmentRule {
			return &segmentsyncv1.SegmentRule{Event: &segmentsyncv1.EventCondition{Source: "api", Name: name, CountOperator: segmentsyncv1.CountOperator_COUNT_OPERATOR_AT_LEAST, Times: times, WithinDays: within}}
		}
		rule := &segmentsyncv1.SegmentRule{All: []*segmentsyncv1.SegmentRule{ev("A", 3, 30), ev("B", 1, 7)}}
		sg, err := s.CreateComputedSegment(ctx, env, "bench", "", Public, rule)
		if err != nil {
			b.Fatal(err)
		}
		conds, err := s.Conditions(ctx)
		if err != nil {
			b.Fatal(err)
		}
		rng := rand.New(rand.NewSource(1))
		today := rules.Today(now)
		read := &BackfillRead{Env: env, Since: map[string]uint64{}, Through: 1000, Target: 1000, First: 1}
		for _, c := range conds {
			read.Since[c.Cond.Key] = 0
		}
		for i := range n {
			u := UserAggs{User: fmt.Sprintf("user-%07d", i)}
			for _, c := range conds {
				var a rules.Agg
				for range 1 + rng.Intn(3) {
					a.AddEvent((int64(today-int32(rng.Intn(30)))*86_400 + int64(rng.Intn(86_400))) * 1_000_000)
				}
				u.Aggs = append(u.Aggs, KeyedAgg{Key: c.Cond.Key, Agg: a})
			}
			read.Users = append(read.Users, u)
		}
		b.StartTimer()
		t0 := time.Now()
		if err := s.ApplyBackfill(ctx, read); err != nil {
			b.Fatal(err)
		}
		applied := time.Since(t0)
		b.StopTimer()
		for _, c := range conds {
			if err := s.MarkConditionLive(ctx, env, c.Cond.Key); err != nil {
				b.Fatal(err)
			}
		}
		b.StartTimer()
		t1 := time.Now()
		if done, err := s.InitComputedSegments(ctx, now); err != nil || done != 1 {
			b.Fatalf("first evaluation: %d %v", done, err)
		}
		evaluated := time.Since(t1)
		b.StopTimer()
		got, err := s.GetSegment(ctx, env, sg.ID, false)
		if err != nil || got.Count == 0 {
			b.Fatalf("members %v %v", got, err)
		}
		// The next day's window pass (untimed: for the rows' expires index).
		t2 := time.Now()
		moved, err := s.WindowPass(ctx, now.Add(24*time.Hour))
		if err != nil {
			b.Fatal(err)
		}
		passed := time.Since(t2)
		b.Logf("ApplyBackfill of %d users × 2 conditions %v; first evaluation %v; %d members; next day's window pass %v (%d users)", n, applied, evaluated, got.Count, passed, moved)
	}
}
