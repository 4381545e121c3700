package store

import (
	"context"
	"fmt"
	"io/fs"
	"reflect"
	"testing"
	"testing/fstest"

	"github.com/RoaringBitmap/roaring/v2"

	"github.com/seghub/seghub/pkg/membership"
	"github.com/seghub/seghub/pkg/store"
	"github.com/seghub/seghub/pkg/store/storetest"
)

func backends(t *testing.T, fn func(t *testing.T, db *store.DB)) {
	for _, b := range []struct {
		name string
		open func(testing.TB) *store.DB
	}{{"sqlite", storetest.SQLite}, {"postgres", storetest.Postgres}} {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			fn(t, b.open(t))
		})
	}
}

// migrationsBefore returns the embedded migrations numbered below version.
func migrationsBefore(t *testing.T, version int) fs.FS {
	t.Helper()
	sub, _ := fs.Sub(migrations, "migrations")
	entries, err := fs.ReadDir(sub, ".")
	if err != nil {
		t.Fatal(err)
	}
	out := fstest.MapFS{}
	for _, e := range entries {
		var v int
		if _, err := fmt.Sscanf(e.Name(), "%d_", &v); err != nil || v >= version {
			continue
		}
		b, _ := fs.ReadFile(sub, e.Name())
		out[e.Name()] = &fstest.MapFile{Data: b}
	}
	return out
}

// A database written before the user → segments index existed gets it filled
// from the segments' bitmaps when the store opens, so GetUser and DeleteUser
// answer from the index as if it had always been kept.
func TestUserSegmentsBackfilledOnOpen(t *testing.T) {
	backends(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		if err := db.Migrate(ctx, "segmentsync", migrationsBefore(t, 4)); err != nil {
			t.Fatal(err)
		}
		// Data as the store wrote it before: users, and segments holding only bitmaps.
		const env = "env_old"
		if _, err := db.ExecContext(ctx, `INSERT INTO ss_env_heads (environment_id, seq, next_dense) VALUES (?, 0, 5)`, env); err != nil {
			t.Fatal(err)
		}
		for d := 1; d <= 4; d++ {
			if _, err := db.ExecContext(ctx, `INSERT INTO ss_users (environment_id, dense_id, user_id, properties, created_at, updated_at) VALUES (?, ?, ?, '{}', 0, 0)`, env, d, fmt.Sprintf("u%d", d)); err != nil {
				t.Fatal(err)
			}
		}
		segs := map[string]*roaring.Bitmap{"seg_a": roaring.BitmapOf(1, 2), "seg_b": roaring.BitmapOf(2, 3), "seg_c": roaring.New()}
		for id, m := range segs {
			if _, err := db.ExecContext(ctx, `INSERT INTO ss_segments (`+segCols+`, members) VALUES (?, ?, ?, '', 'public', '', ?, 1, 0, 0, ?)`, id, env, id, int64(m.GetCardinality()), membership.Encode(m)); err != nil {
				t.Fatal(err)
			}
		}
		s, err := Open(ctx, db, nil)
		if err != nil {
			t.Fatal(err)
		}
		want := map[string][]string{"u1": {"seg_a"}, "u2": {"seg_a", "seg_b"}, "u3": {"seg_b"}, "u4": nil}
		for user, segs := range want {
			u, err := s.GetUser(ctx, env, user)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(u.Segments, segs) {
				t.Errorf("GetUser(%s) segments = %v, want %v", user, u.Segments, segs)
			}
		}
		var pending int
		if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM ss_user_segments_backfill`).Scan(&pending); err != nil || pending != 0 {
			t.Fatalf("segments still waiting to be indexed: %d (%v)", pending, err)
		}
		// Reopening indexes nothing twice; deleting a user leaves each bitmap and the index agreeing.
		if s, err = Open(ctx, db, nil); err != nil {
			t.Fatal(err)
		}
		from, err := s.DeleteUser(ctx, env, "u2")
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(from, []string{"seg_a", "seg_b"}) {
			t.Fatalf("DeleteUser(u2) removed from %v, want [seg_a seg_b]", from)
		}
		assertIndexMatchesBitmaps(t, s, env)
	})
}

// Every membership writer of the store keeps the index equal to the bitmaps.
func TestUserSegmentsFollowEveryWriter(t *testing.T) {
	backends(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		s, err := Open(ctx, db, nil)
		if err != nil {
			t.Fatal(err)
		}
		const env = "env_w"
		a, err := s.CreateSegment(ctx, env, "a", "", Public, "")
		if err != nil {
			t.Fatal(err)
		}
		b, err := s.CreateSegment(ctx, env, "b", "", Public, "")
		if err != nil {
			t.Fatal(err)
		}
		steps := []struct {
			name string
			do   func() error
		}{
			{"add", func() error { _, err := s.ChangeMembers(ctx, env, a.ID, []string{"x", "y", "z"}, nil); return err }},
			{"replace", func() error { _, err := s.ReplaceMembers(ctx, env, b.ID, []string{"y", "z", "w"}); return err }},
			{"remove", func() error { _, err := s.ChangeMembers(ctx, env, a.ID, nil, []string{"z"}); return err }},
			{"add and remove", func() error { _, err := s.ChangeMembers(ctx, env, b.ID, []string{"x"}, []string{"w", "y"}); return err }},
			{"inbound task", func() error {
				_, err := s.ReceiveInboundPage(ctx, env, InboundPage{ConnectionID: "conn_h", TaskID: "t1", ExternalSegmentID: "h1", SegmentName: "heap", Page: 1, TotalPages: 1, Adds: []string{"x", "v"}, IdentityProperty: "user_id"})
				return err
			}},
			{"delete user", func() error { _, err := s.DeleteUser(ctx, env, "x"); return err }},
			{"delete segment", func() error { return s.DeleteSegment(ctx, env, a.ID) }},
		}
		for _, st := range steps {
			if err := st.do(); err != nil {
				t.Fatalf("%s: %v", st.name, err)
			}
			assertIndexMatchesBitmaps(t, s, env)
		}
	})
}

// assertIndexMatchesBitmaps fails unless ss_user_segments of env holds
// exactly the members of env's segment bitmaps.
func assertIndexMatchesBitmaps(t *testing.T, s *Store, env string) {
	t.Helper()
	ctx := context.Background()
	segs, err := s.Segments(ctx, env, true)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]*roaring.Bitmap{}
	for _, sg := range segs {
		if !sg.Members.IsEmpty() {
			want[sg.ID] = sg.Members
		}
	}
	rows, err := s.db.QueryContext(ctx, `SELECT segment_id, dense_id FROM ss_user_segments WHERE environment_id = ?`, env)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	got := map[string]*roaring.Bitmap{}
	for rows.Next() {
		var id string
		var d int64
		if err := rows.Scan(&id, &d); err != nil {
			t.Fatal(err)
		}
		if got[id] == nil {
			got[id] = roaring.New()
		}
		got[id].Add(uint32(d))
	}
	if len(got) != len(want) {
		t.Fatalf("index holds segments %v, bitmaps %v", got, want)
	}
	for id, m := range want {
		if !m.Equals(got[id]) {
			t.Fatalf("segment %s: index holds %v, bitmap %v", id, got[id], m)
		}
	}
}

// Identity values read by dense id (few members) and by a scan of the
// environment (many) agree, for string, number and missing values and for
// the user id itself.
func TestIdentityValuesLookupMatchesScan(t *testing.T) {
	backends(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		s, err := Open(ctx, db, nil)
		if err != nil {
			t.Fatal(err)
		}
		const env = "env_id"
		var ups []UserUpsert
		for i := 0; i < 60; i++ {
			u := UserUpsert{ID: fmt.Sprintf("u%d", i), Props: map[string]*Prop{"plan": {Kind: PropString, S: "pro"}}}
			switch i % 4 {
			case 0:
				u.Props["appcuesUserID"] = &Prop{Kind: PropString, S: fmt.Sprintf("ac-%d", i)}
			case 1:
				u.Props["appcuesUserID"] = &Prop{Kind: PropNumber, N: float64(i)}
			case 2:
				u.Props["appcuesUserID"] = &Prop{Kind: PropString, S: ""}
			}
			ups = append(ups, u)
		}
		if _, _, err := s.UpsertUsers(ctx, env, ups); err != nil {
			t.Fatal(err)
		}
		members := roaring.New()
		for d := uint32(0); d <= 64; d += 3 { // some dense ids of no user
			members.Add(d)
		}
		for _, prop := range []string{"appcuesUserID", "user_id", "absent"} {
			byLookup, err := s.identityValuesByLookup(ctx, env, prop, members)
			if err != nil {
				t.Fatal(err)
			}
			byScan, err := s.identityValuesByScan(ctx, env, prop, members)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(byLookup, byScan) {
				t.Fatalf("%s: by lookup %v, by scan %v", prop, byLookup, byScan)
			}
			if prop != "absent" && len(byScan) == 0 {
				t.Fatalf("%s: no values found", prop)
			}
		}
	})
}
