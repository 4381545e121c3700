package syncengine

import (
	"context"
	"fmt"
	"reflect"
	"testing"
	"time"

	grpccodes "google.golang.org/grpc/codes"
	"pgregory.net/rapid"

	"github.com/seghub/seghub/pkg/apperr"

	pkgstore "github.com/seghub/seghub/pkg/store"
	"github.com/seghub/seghub/pkg/store/storetest"
	ssstore "github.com/seghub/seghub/services/segmentsync/internal/store"
)

// A dry run reads identity values only for the diff and the members changed
// since the last finished run, yet plans exactly what a run (which reads
// every member's value) would: after random identity changes, removals of
// the identity, membership changes, mode switches, refused deliveries,
// finished and unfinished runs, and a change log pruned under it.
func TestDryRunPlansAsARun(t *testing.T) {
	for _, b := range []struct {
		name string
		open func(testing.TB) *pkgstore.DB
	}{{"sqlite", storetest.SQLite}, {"postgres", storetest.Postgres}} {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			db := b.open(t)
			data, err := ssstore.Open(ctx, db, nil)
			if err != nil {
				t.Fatal(err)
			}
			st, err := OpenStore(ctx, db)
			if err != nil {
				t.Fatal(err)
			}
			e := New(st, data, nil, Options{})
			checks, quick := 0, 0
			rapid.Check(t, func(rt *rapid.T) {
				checks++
				env := fmt.Sprintf("env_%d", checks)
				seg, err := data.CreateSegment(ctx, env, "s", "", ssstore.Public, "")
				if err != nil {
					rt.Fatal(err)
				}
				s := &Sync{ID: fmt.Sprintf("sync_%d", checks), Env: env, SegmentID: seg.ID, ConnectionID: "conn", DestinationType: "appcues",
					IdentityProperty: "appcuesUserID", Schedule: OneTime, Mode: Mirror, Enabled: true, Created: time.Now(), Updated: time.Now()}
				if err := st.CreateSync(ctx, db, s); err != nil {
					rt.Fatal(err)
				}
				users := rapid.SampledFrom([]string{"u0", "u1", "u2", "u3"})
				// A start most steps can change: three members with identities, delivered.
				for _, u := range []string{"u0", "u1", "u2"} {
					if _, _, err := data.UpsertUsers(ctx, env, []ssstore.UserUpsert{{ID: u, Props: map[string]*ssstore.Prop{"appcuesUserID": {Kind: ssstore.PropString, S: "ac-0-" + u}}}}); err != nil {
						rt.Fatal(err)
					}
				}
				if _, err := data.ChangeMembers(ctx, env, seg.ID, []string{"u0", "u1", "u2"}, nil); err != nil {
					rt.Fatal(err)
				}
				held := map[uint32]string{} // the destination, as the acknowledgements left it
				deliver(rt, e, s, held, true, 0, false)
				for step := rapid.IntRange(1, 14).Draw(rt, "steps"); step > 0; step-- {
					u := users.Draw(rt, "user")
					switch rapid.IntRange(0, 8).Draw(rt, "op") {
					case 0: // set or change the identity (few values, so some repeat; the user's own id is derivable)
						v := rapid.SampledFrom([]string{"ac-1", "ac-2", "ac-3"}).Draw(rt, "value") + "-" + u
						if rapid.Bool().Draw(rt, "own id") {
							v = u
						}
						if _, _, err := data.UpsertUsers(ctx, env, []ssstore.UserUpsert{{ID: u, Props: map[string]*ssstore.Prop{"appcuesUserID": {Kind: ssstore.PropString, S: v}}}}); err != nil {
							rt.Fatal(err)
						}
					case 1: // remove the identity, or change another property
						p := rapid.SampledFrom([]string{"appcuesUserID", "plan"}).Draw(rt, "property")
						if _, _, err := data.UpsertUsers(ctx, env, []ssstore.UserUpsert{{ID: u, Props: map[string]*ssstore.Prop{p: nil}}}); err != nil {
							rt.Fatal(err)
						}
					case 2:
						if _, err := data.ChangeMembers(ctx, env, seg.ID, []string{u}, nil); err != nil {
							rt.Fatal(err)
						}
					case 3:
						if _, err := data.ChangeMembers(ctx, env, seg.ID, nil, []string{u}); err != nil {
							rt.Fatal(err)
						}
					case 4:
						s.Mode = rapid.SampledFrom([]string{Mirror, Upsert}).Draw(rt, "mode")
						if err := st.UpdateSync(ctx, db, s); err != nil {
							rt.Fatal(err)
						}
					case 8: // delete the user (an upsert or membership change makes it anew)
						if _, err := data.DeleteUser(ctx, env, u); err != nil && apperr.Code(err) != grpccodes.NotFound {
							rt.Fatal(err)
						}
					case 7: // the change log forgets all but its last entries
						if err := data.Prune(ctx, int64(rapid.IntRange(1, 3).Draw(rt, "keep"))); err != nil {
							rt.Fatal(err)
						}
					case 5, 6:
						deliver(rt, e, s, held, rapid.Bool().Draw(rt, "finished"), rapid.IntRange(0, 3).Draw(rt, "refused"), rapid.Bool().Draw(rt, "quick"))
					}
					want, err := e.plan(ctx, s, TriggerManual, false)
					if err != nil {
						rt.Fatal(err)
					}
					got, err := e.DryRun(ctx, env, s.ID, 0)
					if err != nil {
						rt.Fatal(err)
					}
					if got.Quick {
						quick++
					}
					if d, err := st.Delivered(ctx, s.ID); err != nil || !reflect.DeepEqual(d, held) {
						rt.Fatalf("the store says the destination holds %v (%v); the acknowledgements left %v", d, err, held)
					}
					if !reflect.DeepEqual(got.Adds, want.Adds) || !reflect.DeepEqual(got.Removes, want.Removes) || got.Unmatched != want.Unmatched || got.Retry != want.Retry {
						rt.Fatalf("dry run plans adds %v removes %v unmatched %d retry %d; a run: adds %v removes %v unmatched %d retry %d",
							got.Adds, got.Removes, got.Unmatched, got.Retry, want.Adds, want.Removes, want.Unmatched, want.Retry)
					}
				}
			})
			if quick == 0 {
				t.Fatal("no dry run took the quick path: the property compared the full plan with itself")
			}
		})
	}
}

// deliver plays a run without a destination: it plans (quick: as Execute
// does, by the last identity check when it can) and acknowledges the items
// except the first refused ones (recorded failed); a finished run
// acknowledges all, compacts and records the identity check as Execute does
// once every batch is recorded, an unfinished one stops after half (having
// recorded the check a run records before it sends, after a full plan).
func deliver(rt *rapid.T, e *Engine, s *Sync, held map[uint32]string, finished bool, refused int, quick bool) {
	ctx := context.Background()
	p, err := e.plan(ctx, s, TriggerManual, quick)
	if err != nil {
		rt.Fatal(err)
	}
	ack := Ack{Added: map[uint32]HeldIdentity{}, Failed: map[uint32]FailedIdentity{}}
	all := append(append([]item{}, p.Removes...), p.Adds...)
	if !finished {
		all = all[:len(all)/2]
	}
	for i, x := range all {
		remove := i < len(p.Removes)
		if i < refused {
			ack.Failed[x.dense] = FailedIdentity{UserID: x.userID, Identity: x.identity, Removal: remove, Reason: "refused"}
			continue
		}
		if remove && held[x.dense] != x.identity {
			rt.Fatalf("planned to remove %q of user %d; the destination holds %q", x.identity, x.dense, held[x.dense])
		}
		ack.OK = append(ack.OK, x.dense)
		if !remove {
			ack.Added[x.dense] = HeldIdentity{UserID: x.userID, Identity: x.identity, Stored: x.stored}
		} else if _, readd := ack.Added[x.dense]; !readd {
			ack.Removed = append(ack.Removed, x.dense)
		}
	}
	if err := e.st.Checkpoint(ctx, s.ID, ack, &Run{ID: "run", SyncID: s.ID}); err != nil {
		rt.Fatal(err)
	}
	for _, d := range ack.Removed {
		delete(held, d)
	}
	for d, h := range ack.Added {
		held[d] = h.Identity
	}
	if !finished && !p.Quick {
		// As Execute records before it sends.
		if err := e.st.SaveIdentityCheck(ctx, s.ID, p.startCheck()); err != nil {
			rt.Fatal(err)
		}
	}
	if finished {
		if err := e.st.Compact(ctx, s.ID, true, nil); err != nil {
			rt.Fatal(err)
		}
		if err := e.st.SaveIdentityCheck(ctx, s.ID, *p.check); err != nil {
			rt.Fatal(err)
		}
	}
}
