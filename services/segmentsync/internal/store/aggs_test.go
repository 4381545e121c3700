package store

import (
	"context"
	"fmt"
	"math/rand"
	"reflect"
	"testing"

	"github.com/RoaringBitmap/roaring/v2"

	"github.com/seghub/seghub/pkg/store"
	"github.com/seghub/seghub/services/segmentsync/internal/rules"
)

// A store of a version before migration 006 (a row per user, condition and
// day in ss_event_counts, first/last in ss_event_seen) opens with the same
// aggregates in ss_event_aggs, and the old tables gone.
func TestEventCountsConvertOnOpen(t *testing.T) {
	backends(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		if err := db.Migrate(ctx, "segmentsync", migrationsBefore(t, 6)); err != nil {
			t.Fatal(err)
		}
		rng := rand.New(rand.NewSource(18))
		type condRef struct{ env, key string }
		conds := []condRef{{"env_a", "k1"}, {"env_a", "k2"}, {"env_b", "k1"}}
		want := map[condRef]map[uint32]*rules.Agg{}
		for i, c := range conds {
			def := (&rules.Cond{Source: "api", Name: fmt.Sprintf("E%d", i)}).Encode()
			if _, err := db.ExecContext(ctx, `INSERT INTO ss_event_conditions (environment_id, cond_key, definition, state, scanned, target, first_seq) VALUES (?, ?, ?, ?, 7, 9, 1)`, c.env, c.key, def, Live); err != nil {
				t.Fatal(err)
			}
			want[c] = map[uint32]*rules.Agg{}
			for d := uint32(1); d <= 40; d++ {
				if rng.Intn(3) == 0 {
					continue
				}
				a := &rules.Agg{}
				day := int32(20400 + rng.Intn(5))
				for range 1 + rng.Intn(4) {
					a.Days = append(a.Days, rules.DayCount{Day: day, N: int64(1 + rng.Intn(1000))})
					day += int32(1 + rng.Intn(30))
				}
				a.First, a.Last = int64(a.Days[0].Day)*86_400_000_000+5, int64(day)*86_400_000_000
				want[c][d] = a
				for _, dc := range a.Days {
					if _, err := db.ExecContext(ctx, `INSERT INTO ss_event_counts (environment_id, dense_id, cond_key, day, n) VALUES (?, ?, ?, ?, ?)`, c.env, d, c.key, dc.Day, dc.N); err != nil {
						t.Fatal(err)
					}
				}
				if _, err := db.ExecContext(ctx, `INSERT INTO ss_event_seen (environment_id, dense_id, cond_key, first_at, last_at) VALUES (?, ?, ?, ?, ?)`, c.env, d, c.key, a.First, a.Last); err != nil {
					t.Fatal(err)
				}
			}
		}
		for _, env := range []string{"env_a", "env_b"} {
			for d := 1; d <= 40; d++ {
				if _, err := db.ExecContext(ctx, `INSERT INTO ss_users (environment_id, dense_id, user_id, properties, created_at, updated_at) VALUES (?, ?, ?, ?, 0, 0)`, env, d, fmt.Sprintf("u%d", d), encodeProps(nil)); err != nil {
					t.Fatal(err)
				}
			}
		}
		s, err := Open(ctx, db, nil)
		if err != nil {
			t.Fatal(err)
		}
		all := roaring.New()
		all.AddRange(1, 41)
		for _, env := range []string{"env_a", "env_b"} {
			facts, err := loadFacts(ctx, s.db, s.db.Dialect, env, all)
			if err != nil {
				t.Fatal(err)
			}
			if len(facts) != 40 {
				t.Fatalf("%s: %d users", env, len(facts))
			}
			for c, byUser := range want {
				if c.env != env {
					continue
				}
				for d := uint32(1); d <= 40; d++ {
					got, w := facts[d].aggs[c.key], byUser[d]
					if (got == nil) != (w == nil) || got != nil && !reflect.DeepEqual(*got, *w) {
						t.Fatalf("%s %s user %d: converted %+v, want %+v", env, c.key, d, got, w)
					}
				}
			}
		}
		ids := map[int64]bool{}
		for _, env := range []string{"env_a", "env_b"} {
			m, err := condIDs(ctx, s.db, env)
			if err != nil {
				t.Fatal(err)
			}
			for id := range m {
				if id == 0 || ids[id] {
					t.Fatalf("condition id %d given twice or zero", id)
				}
				ids[id] = true
			}
		}
		for _, table := range []string{"ss_event_counts", "ss_event_seen"} {
			if ok, err := tableExists(ctx, s.db, s.db.Dialect, table); err != nil || ok {
				t.Fatalf("%s still there (%v)", table, err)
			}
		}
		// Opening again finds nothing to convert.
		if _, err := Open(ctx, db, nil); err != nil {
			t.Fatal(err)
		}
	})
}
