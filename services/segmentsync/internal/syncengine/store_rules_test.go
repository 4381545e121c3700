package syncengine

import (
	"context"
	"io/fs"
	"testing"
	"testing/fstest"
	"time"

	pkgstore "github.com/seghub/seghub/pkg/store"
	"github.com/seghub/seghub/pkg/store/storetest"
)

var backends = []struct {
	name string
	open func(testing.TB) *pkgstore.DB
}{{"sqlite", storetest.SQLite}, {"postgres", storetest.Postgres}}

// eachStore runs f on a migrated store on SQLite and on PostgreSQL.
func eachStore(t *testing.T, f func(t *testing.T, ctx context.Context, db *pkgstore.DB, st *Store)) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			db := b.open(t)
			st, err := OpenStore(ctx, db)
			if err != nil {
				t.Fatal(err)
			}
			f(t, ctx, db, st)
		})
	}
}

func ruleSync(id, seg, conn, typ, schedule string, enabled bool, created time.Time) *Sync {
	return &Sync{ID: id, Env: "env", SegmentID: seg, ConnectionID: conn, DestinationType: typ, IdentityProperty: "appcuesUserID",
		Schedule: schedule, Mode: Mirror, Enabled: enabled, Created: created, Updated: created}
}

// The store holds one sync per (segment, connection): a second insert is
// refused whatever the caller checked before.
func TestStoreOneSyncPerSegmentConnection(t *testing.T) {
	eachStore(t, func(t *testing.T, ctx context.Context, db *pkgstore.DB, st *Store) {
		now := time.Now()
		if err := st.CreateSync(ctx, db, ruleSync("sync_a", "seg", "conn", "appcues", OneTime, false, now)); err != nil {
			t.Fatal(err)
		}
		if err := st.CreateSync(ctx, db, ruleSync("sync_b", "seg", "conn", "appcues", OneTime, true, now)); err == nil {
			t.Fatal("a second sync of the same segment to the same connection was stored")
		}
		if err := st.CreateSync(ctx, db, ruleSync("sync_c", "seg", "conn2", "appcues", OneTime, true, now)); err != nil {
			t.Fatalf("the same segment to another connection: %v", err)
		}
		got, err := st.SyncOf(ctx, db, "env", "seg", "conn")
		if err != nil || got == nil || got.ID != "sync_a" {
			t.Fatalf("SyncOf = %v, %v", got, err)
		}
	})
}

// Migration 003 keeps, of duplicate syncs made by earlier versions, the
// enabled one (else the newest) with its checkpoint, and drops the others
// with theirs, so the unique index can be built on existing data.
func TestMigrationKeepsOneSyncPerSegmentConnection(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			db := b.open(t)
			before := fstest.MapFS{}
			for _, name := range []string{"001_syncs.sql", "002_identity_checks.sql"} {
				data, err := fs.ReadFile(migrations, "migrations/"+name)
				if err != nil {
					t.Fatal(err)
				}
				before[name] = &fstest.MapFile{Data: data}
			}
			if err := db.Migrate(ctx, "syncengine", before); err != nil {
				t.Fatal(err)
			}
			old := db
			t0 := time.Now().Add(-time.Hour)
			for _, s := range []*Sync{
				ruleSync("sync_old", "seg", "conn", "appcues", Recurring, false, t0),
				ruleSync("sync_live", "seg", "conn", "appcues", Recurring, true, t0.Add(time.Minute)),
				ruleSync("sync_newer_off", "seg", "conn", "appcues", OneTime, false, t0.Add(2*time.Minute)),
				ruleSync("sync_x1", "seg2", "conn", "appcues", OneTime, false, t0),
				ruleSync("sync_x2", "seg2", "conn", "appcues", OneTime, false, t0.Add(time.Minute)),
			} {
				if err := insertBefore004(ctx, old, s); err != nil {
					t.Fatal(err)
				}
				if _, err := db.ExecContext(ctx, `INSERT INTO se_delivered (sync_id, dense_id, identity) VALUES (?, 1, ?)`, s.ID, "ac-"+s.ID); err != nil {
					t.Fatal(err)
				}
			}
			st, err := OpenStore(ctx, db)
			if err != nil {
				t.Fatal(err)
			}
			syncs, err := st.ListSyncs(ctx, "env", "", "")
			if err != nil {
				t.Fatal(err)
			}
			var kept []string
			for _, s := range syncs {
				kept = append(kept, s.ID)
			}
			if len(kept) != 2 || kept[0] != "sync_x2" && kept[1] != "sync_x2" || kept[0] != "sync_live" && kept[1] != "sync_live" {
				t.Fatalf("kept %v, want sync_live and sync_x2", kept)
			}
			for id, want := range map[string]int{"sync_live": 1, "sync_x2": 1, "sync_old": 0, "sync_newer_off": 0, "sync_x1": 0} {
				d, err := st.Delivered(ctx, id)
				if err != nil || len(d) != want {
					t.Fatalf("%s delivered %v (%v), want %d", id, d, err, want)
				}
			}
		})
	}
}

// migrateTo applies the store's migrations up to (not including) first.
func migrateTo(t *testing.T, ctx context.Context, db *pkgstore.DB, upTo ...string) {
	t.Helper()
	before := fstest.MapFS{}
	for _, name := range upTo {
		data, err := fs.ReadFile(migrations, "migrations/"+name)
		if err != nil {
			t.Fatal(err)
		}
		before[name] = &fstest.MapFile{Data: data}
	}
	if err := db.Migrate(ctx, "syncengine", before); err != nil {
		t.Fatal(err)
	}
}

// insertBefore004 stores s as versions before migration 004 did (no
// frozen prefix).
func insertBefore004(ctx context.Context, db *pkgstore.DB, s *Sync) error {
	_, err := db.ExecContext(ctx, `INSERT INTO se_syncs (sync_id, environment_id, segment_id, connection_id, destination_type, identity_property, schedule, interval_us, mode, enabled, frozen_name, last_synced_at, last_status, last_error, next_run_at, data_expires_at, created_at, updated_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		s.ID, s.Env, s.SegmentID, s.ConnectionID, s.DestinationType, s.IdentityProperty, s.Schedule, s.Interval.Microseconds(), s.Mode, s.Enabled, s.FrozenName, us(s.LastSynced), s.LastStatus, s.LastError, us(s.NextRun), us(s.DataExpires), us(s.Created), us(s.Updated))
	return err
}

// A run's outcome freezes the connection's property prefix with the name,
// in one statement: once frozen, neither changes, so a later prefix setting
// never names a second property at the destination.
func TestStoreFreezesPropertyPrefixWithName(t *testing.T) {
	eachStore(t, func(t *testing.T, ctx context.Context, db *pkgstore.DB, st *Store) {
		now := time.Now()
		if err := st.CreateSync(ctx, db, ruleSync("sync_p", "seg", "conn", "appcues", OneTime, true, now)); err != nil {
			t.Fatal(err)
		}
		for _, o := range []Outcome{
			{Status: StatusSucceeded, Synced: now, FrozenName: "Trial", FrozenPrefix: "[Heap]", Updated: now},
			{Status: StatusSucceeded, Synced: now, FrozenName: "Renamed", FrozenPrefix: "[Other]", Updated: now},
		} {
			if err := st.RecordOutcome(ctx, db, "sync_p", o); err != nil {
				t.Fatal(err)
			}
			got, err := st.GetSync(ctx, "env", "sync_p")
			if err != nil || got.FrozenName != "Trial" || got.FrozenPrefix != "[Heap]" {
				t.Fatalf("after outcome %+v: sync %+v, %v; want [Heap] Trial frozen", o, got, err)
			}
		}
	})
}

// Migration 004 freezes the Appcues syncs that already delivered with the
// only prefix earlier versions used, "[seghub]"; syncs not yet run freeze
// the connection's setting at their first run.
func TestMigrationFreezesExistingSyncsWithSeghubPrefix(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			db := b.open(t)
			migrateTo(t, ctx, db, "001_syncs.sql", "002_identity_checks.sql", "003_one_sync_per_segment_connection.sql")
			now := time.Now()
			live := ruleSync("sync_live", "seg", "conn", "appcues", Recurring, true, now)
			live.FrozenName = "Trial"
			fresh := ruleSync("sync_fresh", "seg2", "conn", "appcues", Recurring, true, now)
			hook := ruleSync("sync_hook", "seg", "conn2", "webhook", Recurring, true, now)
			hook.FrozenName = "Trial"
			for _, s := range []*Sync{live, fresh, hook} {
				if err := insertBefore004(ctx, db, s); err != nil {
					t.Fatal(err)
				}
			}
			st, err := OpenStore(ctx, db)
			if err != nil {
				t.Fatal(err)
			}
			for id, want := range map[string]string{"sync_live": "[seghub]", "sync_fresh": "", "sync_hook": ""} {
				got, err := st.GetSync(ctx, "env", id)
				if err != nil || got.FrozenPrefix != want {
					t.Fatalf("%s frozen prefix = %+v, %v; want %q", id, got, err, want)
				}
			}
		})
	}
}

// The recurring limit counts an environment's enabled recurring syncs per
// destination type, across its connections.
func TestStoreCountRecurringPerEnvironmentAndType(t *testing.T) {
	eachStore(t, func(t *testing.T, ctx context.Context, db *pkgstore.DB, st *Store) {
		now := time.Now()
		for _, s := range []*Sync{
			ruleSync("s1", "seg1", "appcues_a", "appcues", Recurring, true, now),
			ruleSync("s2", "seg2", "appcues_b", "appcues", Recurring, true, now),
			ruleSync("s3", "seg3", "appcues_b", "appcues", Recurring, false, now),
			ruleSync("s4", "seg4", "appcues_b", "appcues", OneTime, true, now),
			ruleSync("s5", "seg5", "commandbar", "commandbar", Recurring, true, now),
		} {
			if err := st.CreateSync(ctx, db, s); err != nil {
				t.Fatal(err)
			}
		}
		other := ruleSync("s6", "seg6", "appcues_c", "appcues", Recurring, true, now)
		other.Env = "env2"
		if err := st.CreateSync(ctx, db, other); err != nil {
			t.Fatal(err)
		}
		for _, c := range []struct {
			typ, except string
			want        int
		}{{"appcues", "", 2}, {"appcues", "s1", 1}, {"commandbar", "", 1}, {"abtasty", "", 0}} {
			if n, err := st.CountRecurring(ctx, db, "env", c.typ, c.except); err != nil || n != c.want {
				t.Errorf("CountRecurring(%s, except %q) = %d, %v; want %d", c.typ, c.except, n, err, c.want)
			}
		}
	})
}
