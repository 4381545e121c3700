package segmentsync_test

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"pgregory.net/rapid"

	segmentsyncv1 "github.com/seghub/seghub/gen/seghub/segmentsync/v1"
	"github.com/seghub/seghub/pkg/app/apptest"
)

// Random add / remove / replace / delete-user sequences applied through the
// API leave each segment equal to a model, and a watcher that follows the
// feed (reconnecting from its sequence now and then) rebuilds the same state.
func TestMembershipMatchesModel(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			e := startService(t, apptest.Options{Postgres: b.postgres})
			ctx := apptest.Context(t, 120*time.Second)
			c := client(e, e.A.Member)
			svc := client(e, e.A.Service)
			checks := 0
			rapid.Check(t, func(rt *rapid.T) {
				checks++
				segs := make([]string, 2)
				for i := range segs {
					s, err := c.CreateSegment(ctx, &segmentsyncv1.CreateSegmentRequest{Name: fmt.Sprintf("prop-%d-%d", checks, i)})
					if err != nil {
						rt.Fatal(err)
					}
					segs[i] = s.GetSegment().GetSegmentId()
				}
				model := map[string]map[string]bool{segs[0]: {}, segs[1]: {}}
				userGen := rapid.Map(rapid.SampledFrom([]string{"a", "b", "c", "d", "e", "f"}), func(s string) string { return fmt.Sprintf("%s-%d", s, checks) })
				w := &watchState{}
				var cancels []context.CancelFunc
				defer func() {
					for _, c := range cancels {
						c()
					}
				}()
				wctx, cancel := context.WithCancel(ctx)
				cancels = append(cancels, cancel)
				st, err := svc.WatchMembership(wctx, &segmentsyncv1.WatchMembershipRequest{IncludeUsers: true, SegmentIds: segs})
				if err != nil {
					rt.Fatal(err)
				}
				steps := rapid.IntRange(1, 12).Draw(rt, "steps")
				for i := 0; i < steps; i++ {
					sid := rapid.SampledFrom(segs).Draw(rt, "segment")
					users := rapid.SliceOfN(userGen, 0, 4).Draw(rt, "users")
					switch rapid.IntRange(0, 3).Draw(rt, "op") {
					case 0:
						if len(users) == 0 {
							continue
						}
						if _, err := c.AddMembers(ctx, &segmentsyncv1.AddMembersRequest{SegmentId: sid, UserIds: users}); err != nil {
							rt.Fatal(err)
						}
						for _, u := range users {
							model[sid][u] = true
						}
					case 1:
						if len(users) == 0 {
							continue
						}
						if _, err := c.RemoveMembers(ctx, &segmentsyncv1.RemoveMembersRequest{SegmentId: sid, UserIds: users}); err != nil {
							rt.Fatal(err)
						}
						for _, u := range users {
							delete(model[sid], u)
						}
					case 2:
						if _, err := replace(ctx, c, sid, users, 2); err != nil {
							rt.Fatal(err)
						}
						model[sid] = map[string]bool{}
						for _, u := range users {
							model[sid][u] = true
						}
					case 3:
						if len(users) == 0 {
							continue
						}
						_, err := c.DeleteUser(ctx, &segmentsyncv1.DeleteUserRequest{UserId: users[0]})
						if err != nil && !strings.Contains(err.Error(), "not found") {
							rt.Fatal(err)
						}
						for _, m := range model {
							delete(m, users[0])
						}
					}
					if rapid.Bool().Draw(rt, "reconnect") {
						// Drop the stream and resume from the sequence reached so far.
						recvUntil(t, st, w, func() bool { return w.caughtUp })
						cancel()
						wctx, cancel = context.WithCancel(ctx)
						cancels = append(cancels, cancel)
						st, err = svc.WatchMembership(wctx, &segmentsyncv1.WatchMembershipRequest{IncludeUsers: true, SegmentIds: segs, AfterSequence: map[string]int64{e.A.EnvironmentID: w.seq}})
						if err != nil {
							rt.Fatal(err)
						}
					}
				}
				for _, sid := range segs {
					want := keys(model[sid])
					got := allMembers(ctx, rt, c, sid)
					if strings.Join(got, ",") != strings.Join(want, ",") {
						rt.Fatalf("segment %s: store has %v, model %v", sid, got, want)
					}
				}
				// The watcher converges on the store's state.
				deadline := time.Now().Add(10 * time.Second)
				recvUntil(t, st, w, func() bool {
					if time.Now().After(deadline) {
						rt.Fatalf("watcher did not converge")
					}
					for _, sid := range segs {
						if strings.Join(w.members(sid), ",") != strings.Join(keys(model[sid]), ",") {
							return false
						}
					}
					return w.caughtUp
				})
			})
		})
	}
}

func keys(m map[string]bool) []string {
	out := []string{}
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func allMembers(ctx context.Context, rt *rapid.T, c segmentsyncv1.SegmentSyncServiceClient, sid string) []string {
	out := []string{}
	tok := ""
	for {
		page, err := c.GetMembers(ctx, &segmentsyncv1.GetMembersRequest{SegmentId: sid, PageSize: 3, PageToken: tok})
		if err != nil {
			rt.Fatal(err)
		}
		out = append(out, page.GetUserIds()...)
		if tok = page.GetNextPageToken(); tok == "" {
			break
		}
	}
	sort.Strings(out)
	return out
}
