package syncengine

import (
	"context"
	"reflect"
	"testing"
	"time"

	pkgstore "github.com/seghub/seghub/pkg/store"
	ssstore "github.com/seghub/seghub/services/segmentsync/internal/store"
)

// Migration 006 converts the per-user checkpoint rows of earlier versions
// without loss: every sync holds the same users with the same identities,
// rows remain only where the user's id does not give the identity (another
// property's value, a deleted user), and opening the store again changes
// nothing.
func TestMigrationConvertsDeliveredRowsLosslessly(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			db := b.open(t)
			data, err := ssstore.Open(ctx, db, nil)
			if err != nil {
				t.Fatal(err)
			}
			migrateTo(t, ctx, db, "001_syncs.sql", "002_identity_checks.sql", "003_one_sync_per_segment_connection.sql", "004_frozen_property_prefix.sql", "005_run_leases.sql")
			var users []ssstore.UserUpsert
			for _, id := range []string{"u1", "u2", "u3"} {
				users = append(users, ssstore.UserUpsert{ID: id})
			}
			if _, _, err := data.UpsertUsers(ctx, "env", users); err != nil {
				t.Fatal(err)
			}
			dense := map[string]uint32{}
			for _, id := range []string{"u1", "u2", "u3"} {
				u, err := data.GetUser(ctx, "env", id)
				if err != nil {
					t.Fatal(err)
				}
				dense[id] = u.Dense
			}
			if _, err := data.DeleteUser(ctx, "env", "u3"); err != nil { // no engine yet: no row kept
				t.Fatal(err)
			}
			byID := ruleSync("sync_ids", "seg", "conn", "appcues", OneTime, true, time.Now())
			byID.IdentityProperty = "user_id"
			byProp := ruleSync("sync_prop", "seg", "conn2", "appcues", OneTime, true, time.Now())
			want := map[string]map[uint32]string{
				// u3 was deleted after its delivery: only the row knows its id.
				byID.ID:   {dense["u1"]: "u1", dense["u2"]: "u2", dense["u3"]: "u3"},
				byProp.ID: {dense["u1"]: "ac-1", dense["u2"]: "u2", 1_000_000: "ac-x"},
			}
			for _, s := range []*Sync{byID, byProp} {
				if err := insertBefore004(ctx, db, s); err != nil {
					t.Fatal(err)
				}
				for d, id := range want[s.ID] {
					if _, err := db.ExecContext(ctx, `INSERT INTO se_delivered (sync_id, dense_id, identity) VALUES (?, ?, ?)`, s.ID, int64(d), id); err != nil {
						t.Fatal(err)
					}
				}
			}
			for round := 0; round < 2; round++ {
				st, err := OpenStore(ctx, db)
				if err != nil {
					t.Fatal(err)
				}
				for id, w := range want {
					got, err := st.Delivered(ctx, id)
					if err != nil || !reflect.DeepEqual(got, w) {
						t.Fatalf("round %d: %s delivered %v (%v), want %v", round, id, got, err, w)
					}
					if n, err := st.DeliveredCount(ctx, id); err != nil || n != uint64(len(w)) {
						t.Fatalf("round %d: %s delivered count %d (%v), want %d", round, id, n, err, len(w))
					}
				}
				rows := countRows(t, ctx, db, `SELECT COUNT(*) FROM se_held_identities`)
				if rows != 3 { // u3 of sync_ids; u1 and the unknown user of sync_prop
					t.Fatalf("round %d: %d identity rows, want 3", round, rows)
				}
				if n := countRows(t, ctx, db, `SELECT COUNT(*) FROM se_delivered`); n != 0 {
					t.Fatalf("round %d: %d per-user rows left", round, n)
				}
			}
		})
	}
}

func countRows(t *testing.T, ctx context.Context, db *pkgstore.DB, q string) int {
	t.Helper()
	var n int
	if err := db.QueryRowContext(ctx, q).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// A sync identifying users by their id keeps no identity rows; a user
// deleted after delivery keeps one (written in the deleting transaction), so
// a mirror run still removes the id the destination holds, and the row goes
// with the removal. Compaction at a run's end drops the rows kept for syncs
// that never held the deleted user.
func TestDeletedUserIsRemovedByItsDeliveredID(t *testing.T) {
	eachStore(t, func(t *testing.T, ctx context.Context, db *pkgstore.DB, st *Store) {
		data, err := ssstore.Open(ctx, db, nil)
		if err != nil {
			t.Fatal(err)
		}
		e := New(st, data, nil, Options{})
		seg, err := data.CreateSegment(ctx, "env", "s", "", ssstore.Public, "")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := data.ChangeMembers(ctx, "env", seg.ID, []string{"u1", "u2"}, nil); err != nil {
			t.Fatal(err)
		}
		other, err := data.CreateSegment(ctx, "env", "t", "", ssstore.Public, "")
		if err != nil {
			t.Fatal(err)
		}
		var syncs []*Sync
		for i, segID := range []string{seg.ID, other.ID} {
			s := ruleSync([]string{"sync_a", "sync_b"}[i], segID, "conn", "appcues", OneTime, true, time.Now())
			s.IdentityProperty = "user_id"
			if err := st.CreateSync(ctx, db, s); err != nil {
				t.Fatal(err)
			}
			syncs = append(syncs, s)
		}
		s := syncs[0]
		run := func() *Plan {
			t.Helper()
			p, err := e.plan(ctx, s, TriggerManual, true)
			if err != nil {
				t.Fatal(err)
			}
			ack := Ack{Added: map[uint32]HeldIdentity{}}
			for _, x := range p.Removes {
				ack.Removed = append(ack.Removed, x.dense)
			}
			for _, x := range p.Adds {
				ack.Added[x.dense] = HeldIdentity{UserID: x.userID, Identity: x.identity, Stored: x.stored}
			}
			if err := st.Checkpoint(ctx, s.ID, ack, &Run{ID: "run", SyncID: s.ID}); err != nil {
				t.Fatal(err)
			}
			if err := st.Compact(ctx, s.ID, true, nil); err != nil {
				t.Fatal(err)
			}
			if err := st.SaveIdentityCheck(ctx, s.ID, *p.check); err != nil {
				t.Fatal(err)
			}
			return p
		}
		if p := run(); len(p.Adds) != 2 {
			t.Fatalf("first run adds %v", p.Adds)
		}
		if n := countRows(t, ctx, db, `SELECT COUNT(*) FROM se_held_identities`); n != 0 {
			t.Fatalf("%d identity rows for identities that are user ids", n)
		}
		if _, err := data.DeleteUser(ctx, "env", "u1"); err != nil {
			t.Fatal(err)
		}
		p := run()
		if len(p.Adds) != 0 || len(p.Removes) != 1 || p.Removes[0].identity != "u1" {
			t.Fatalf("after u1's deletion the run plans adds %v removes %v; want u1 removed", p.Adds, p.Removes)
		}
		if d, err := st.Delivered(ctx, s.ID); err != nil || len(d) != 1 {
			t.Fatalf("delivered after the removal: %v, %v", d, err)
		}
		// sync_b never held u1: its kept row goes at its run's end.
		if err := st.Compact(ctx, syncs[1].ID, true, nil); err != nil {
			t.Fatal(err)
		}
		if n := countRows(t, ctx, db, `SELECT COUNT(*) FROM se_held_identities`); n != 0 {
			t.Fatalf("%d identity rows left after the removal and compaction", n)
		}
	})
}
