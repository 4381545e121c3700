package store

import (
	"context"
	"fmt"
	"reflect"
	"testing"

	"github.com/seghub/seghub/pkg/store"
)

// UsersByDense answers the same whether it reads a range (ids mostly
// consecutive) or IN lists (ids spread out): the users asked for that exist,
// in dense order, once each, never a neighbour that was not asked for.
func TestUsersByDenseRangeAndLists(t *testing.T) {
	backends(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		s, err := Open(ctx, db, nil)
		if err != nil {
			t.Fatal(err)
		}
		const env = "env_d"
		var ups []UserUpsert
		for i := range 1600 {
			ups = append(ups, UserUpsert{ID: fmt.Sprintf("u%04d", i)})
		}
		if _, _, err := s.UpsertUsers(ctx, env, ups); err != nil {
			t.Fatal(err)
		}
		all, err := s.UsersPage(ctx, env, 0, 2000)
		if err != nil || len(all) != 1600 {
			t.Fatalf("users page: %d, %v", len(all), err)
		}
		dense := func(i int) uint32 { return all[i].Dense }
		if _, err := s.DeleteUser(ctx, env, all[5].ID); err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			name string
			ask  []uint32
			want []int // indexes into all
		}{
			{"consecutive with a deleted user and duplicates", []uint32{dense(3), dense(4), dense(5), dense(6), dense(4), dense(7)}, []int{3, 4, 6, 7}},
			{"every other id (a range twice the size)", []uint32{dense(10), dense(12), dense(14), dense(16)}, []int{10, 12, 14, 16}},
			{"spread out (IN lists)", []uint32{dense(1599), dense(0), dense(600)}, []int{0, 600, 1599}},
			{"spread out, more than one IN list (534 ids)", spread(all, 0, 1600, 3), every(0, 1600, 3)},
			{"unknown ids", []uint32{dense(1599) + 1000, dense(1599) + 1001}, nil},
			{"none", nil, nil},
		} {
			t.Run(tc.name, func(t *testing.T) {
				got, err := s.UsersByDense(ctx, env, tc.ask)
				if err != nil {
					t.Fatal(err)
				}
				var gotIDs, wantIDs []string
				for _, u := range got {
					gotIDs = append(gotIDs, u.ID)
				}
				for _, i := range tc.want {
					wantIDs = append(wantIDs, all[i].ID)
				}
				if !reflect.DeepEqual(gotIDs, wantIDs) {
					t.Fatalf("UsersByDense = %v, want %v", gotIDs, wantIDs)
				}
			})
		}
	})
}

func every(from, to, step int) []int {
	var out []int
	for i := from; i < to; i += step {
		if i != 5 { // deleted
			out = append(out, i)
		}
	}
	return out
}

func spread(all []*User, from, to, step int) []uint32 {
	var out []uint32
	for i := from; i < to; i += step {
		out = append(out, all[i].Dense)
	}
	return out
}
