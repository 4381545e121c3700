package store

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/RoaringBitmap/roaring/v2"

	"github.com/seghub/seghub/pkg/store"
	"github.com/seghub/seghub/pkg/store/storetest"
)

// Membership writes create unknown users in bulk (a JSON array on SQLite, a
// text array on PostgreSQL) and look known ones up through sorted ids: every
// id must come back byte for byte, once, whatever it holds, in both the
// small (IN lists) and the large (one scan) lookup, and the change log must
// name exactly the users created and the members changed.
func TestMembershipWritesCreateUsersExactly(t *testing.T) {
	odd := []string{`quote"d`, `back\slash`, "tab\tand\nnewline", "ünïcødé", "emoji 🎯", "<html>&amp;", "sp ace", "\u2028sep", "z"}
	for _, size := range []int{40, 300} { // 300: over scanAbove and bulkChunk, lowered below
		// Named subtests: a repeated name gets "#01", which a SQLite file URI
		// would read as a fragment.
		t.Run(fmt.Sprintf("%d ids", size), func(t *testing.T) {
			backends(t, func(t *testing.T, db *store.DB) {
				ctx := context.Background()
				s, err := Open(ctx, db, nil)
				if err != nil {
					t.Fatal(err)
				}
				env := fmt.Sprintf("env_bulk_%d", size)
				// Known users, some with properties, created the other ways.
				if _, _, err := s.UpsertUsers(ctx, env, []UserUpsert{{ID: "known-1", Props: map[string]*Prop{"plan": {Kind: PropString, S: "pro"}}}, {ID: odd[0]}}); err != nil {
					t.Fatal(err)
				}
				sg, err := s.CreateSegment(ctx, env, "s", "", Public, "")
				if err != nil {
					t.Fatal(err)
				}
				head, err := s.Head(ctx, env)
				if err != nil {
					t.Fatal(err)
				}
				var ids []string
				for i := size - 1; i >= 0; i-- { // unsorted on purpose
					ids = append(ids, fmt.Sprintf("u%d", i))
				}
				ids = append(ids, odd...)
				ids = append(ids, "known-1", "u3", odd[1]) // duplicates and a known user
				sent := slices.Clone(ids)
				res, err := s.ReplaceMembers(ctx, env, sg.ID, ids)
				if err != nil {
					t.Fatal(err)
				}
				if !slices.Equal(ids, sent) {
					t.Fatal("ReplaceMembers changed the caller's slice")
				}
				distinct := size + len(odd) + 1
				if res.Added != uint64(distinct) || res.Count != uint64(distinct) {
					t.Fatalf("added %d count %d, want %d", res.Added, res.Count, distinct)
				}
				// Every id is one user holding exactly that id, and a member.
				dense, err := s.DenseIDs(ctx, env, ids)
				if err != nil {
					t.Fatal(err)
				}
				if len(dense) != distinct {
					t.Fatalf("%d ids resolve, want %d", len(dense), distinct)
				}
				got, err := s.GetSegment(ctx, env, sg.ID, true)
				if err != nil {
					t.Fatal(err)
				}
				want := roaring.New()
				for _, d := range dense {
					want.Add(d)
				}
				if !got.Members.Equals(want) {
					t.Fatalf("members %d, want the %d resolved ids", got.Members.GetCardinality(), want.GetCardinality())
				}
				users, err := s.UsersByDense(ctx, env, want.ToArray())
				if err != nil {
					t.Fatal(err)
				}
				for _, u := range users {
					if dense[u.ID] != u.Dense {
						t.Fatalf("user %q has dense %d, lookup says %d", u.ID, u.Dense, dense[u.ID])
					}
				}
				if len(users) != distinct {
					t.Fatalf("%d users read back, want %d", len(users), distinct)
				}
				if u, err := s.GetUser(ctx, env, "known-1"); err != nil || u.Props["plan"].S != "pro" {
					t.Fatalf("known user lost its properties: %+v %v", u, err)
				}
				// The log: one users change with exactly the new users, one
				// membership change with exactly the members.
				changes, err := s.Changes(ctx, env, head, 10)
				if err != nil {
					t.Fatal(err)
				}
				if len(changes) != 2 || changes[0].Kind != KindUsers || changes[1].Kind != KindMembership {
					t.Fatalf("log after the write: %+v", changes)
				}
				created := want.Clone()
				created.Remove(dense["known-1"])
				created.Remove(dense[odd[0]])
				if !changes[0].Added.Equals(created) {
					t.Fatalf("users change holds %d ids, want the %d created", changes[0].Added.GetCardinality(), created.GetCardinality())
				}
				if !changes[1].Added.Equals(want) || !changes[1].Removed.IsEmpty() {
					t.Fatalf("membership change: added %d removed %d", changes[1].Added.GetCardinality(), changes[1].Removed.GetCardinality())
				}
				// Replacing again with the same ids changes and creates nothing.
				res, err = s.ReplaceMembers(ctx, env, sg.ID, sent)
				if err != nil || res.Added != 0 || res.Removed != 0 {
					t.Fatalf("same ids again: %+v %v", res, err)
				}
				if h, _ := s.Head(ctx, env); h != changes[1].Seq {
					t.Fatalf("a no-op replace logged: head %d, want %d", h, changes[1].Seq)
				}
			})
		})
	}
}

// Ids that are not valid UTF-8 (refused by the API, but the store stays
// exact for any caller) are stored byte for byte on SQLite.
func TestBareUsersKeepInvalidUTF8(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, storetest.SQLite(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	sg, err := s.CreateSegment(ctx, "env_bytes", "s", "", Public, "")
	if err != nil {
		t.Fatal(err)
	}
	ids := []string{"ok", "bad\xff\xfe", "also ok"}
	if _, err := s.ReplaceMembers(ctx, "env_bytes", sg.ID, ids); err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		if u, err := s.GetUser(ctx, "env_bytes", id); err != nil || u.ID != id {
			t.Fatalf("user %q: %+v %v", id, u, err)
		}
	}
}

// LeanUsersPage pages users in dense order with their properties decoded
// only for holders, and stops a page early once properties pass the bound.
func TestLeanUsersPage(t *testing.T) {
	backends(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		s, err := Open(ctx, db, nil)
		if err != nil {
			t.Fatal(err)
		}
		const env = "env_lean"
		sg, err := s.CreateSegment(ctx, env, "s", "", Public, "")
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for i := range 10 {
			ids = append(ids, fmt.Sprintf("u%d", i))
		}
		if _, err := s.ReplaceMembers(ctx, env, sg.ID, ids); err != nil {
			t.Fatal(err)
		}
		big := strings.Repeat("x", 1000)
		if _, _, err := s.UpsertUsers(ctx, env, []UserUpsert{
			{ID: "u2", Props: map[string]*Prop{"plan": {Kind: PropString, S: big}}},
			{ID: "u3", Props: map[string]*Prop{"plan": {Kind: PropString, S: big}}},
			{ID: "u4", Props: map[string]*Prop{"gone": {Kind: PropBool, B: true}}},
		}); err != nil {
			t.Fatal(err)
		}
		// u4's only property removed again: stored as {} or not, it holds none.
		if _, _, err := s.UpsertUsers(ctx, env, []UserUpsert{{ID: "u4", Props: map[string]*Prop{"gone": nil}}}); err != nil {
			t.Fatal(err)
		}
		var pages [][]string
		var after uint32
		for {
			page, err := s.LeanUsersPage(ctx, env, after, 4, 1500)
			if err != nil {
				t.Fatal(err)
			}
			if len(page) == 0 {
				break
			}
			var names []string
			for _, u := range page {
				n := u.ID
				if u.Props != nil {
					n += "=" + fmt.Sprint(len(u.Props["plan"].S))
				}
				names = append(names, n)
				if u.Dense <= after {
					t.Fatalf("dense %d after %d", u.Dense, after)
				}
				after = u.Dense
			}
			pages = append(pages, names)
		}
		// Users were created in id order (u0 < u1 < ... < u9 sort that way).
		want := "[[u0 u1 u2=1000 u3=1000] [u4 u5 u6 u7] [u8 u9]]"
		if got := fmt.Sprint(pages); got != want {
			t.Fatalf("pages %s, want %s", got, want)
		}
		// A lower bound on bytes ends a page at the first holder that passes it.
		page, err := s.LeanUsersPage(ctx, env, 0, 100, 500)
		if err != nil || len(page) != 3 || page[2].ID != "u2" {
			t.Fatalf("bounded page: %v %v", page, err)
		}
	})
}
