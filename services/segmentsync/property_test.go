package segmentsync_test

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"pgregory.net/rapid"

	segmentsyncv1 "github.com/seghub/seghub/gen/seghub/segmentsync/v1"
	"github.com/seghub/seghub/pkg/app/apptest"
)

// Random add / remove / replace / delete-user / delete-segment / inbound
// webhook sequences applied through the API leave each segment equal to a
// model, every user's GetUser segments equal to the model's, and a watcher
// that follows the feed (reconnecting from its sequence now and then)
// rebuilds the same state.
func TestMembershipMatchesModel(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			f := startSync(t, syncOpts{postgres: b.postgres})
			e := f.e
			ctx := apptest.Context(t, 300*time.Second)
			c := f.ss
			svc := client(e, e.A.Service)
			heap := f.heapSource(t, ctx, "user_id")
			checks := 0
			rapid.Check(t, func(rt *rapid.T) {
				checks++
				newSegment := func(slot int) string {
					s, err := c.CreateSegment(ctx, &segmentsyncv1.CreateSegmentRequest{Name: fmt.Sprintf("prop-%d-%d-%d", checks, slot, time.Now().UnixNano())})
					if err != nil {
						rt.Fatal(err)
					}
					return s.GetSegment().GetSegmentId()
				}
				segs := []string{newSegment(0), newSegment(1)}
				watched := append([]string(nil), segs...)
				model := map[string]map[string]bool{segs[0]: {}, segs[1]: {}}
				exists := map[string]bool{}
				// change applies adds and removes as the store does: an id in
				// both lists is added if it was out, removed if it was in.
				change := func(sid string, add, remove []string) {
					old := model[sid]
					next := map[string]bool{}
					for u := range old {
						next[u] = true
					}
					for _, u := range remove {
						delete(next, u)
					}
					for _, u := range add {
						if !old[u] {
							next[u] = true
						}
						exists[u] = true
					}
					model[sid] = next
				}
				userGen := rapid.Map(rapid.SampledFrom([]string{"a", "b", "c", "d", "e", "f"}), func(s string) string { return fmt.Sprintf("%s-%d", s, checks) })
				external, linked := fmt.Sprintf("heap-%d", checks), ""
				w := &watchState{}
				var cancels []context.CancelFunc
				defer func() {
					for _, c := range cancels {
						c()
					}
				}()
				wctx, cancel := context.WithCancel(ctx)
				cancels = append(cancels, cancel)
				// Packed users (UserChunk) or not (UserBatch), per stream.
				packed := rapid.Bool().Draw(rt, "packed")
				st, err := svc.WatchMembership(wctx, &segmentsyncv1.WatchMembershipRequest{IncludeUsers: true, PackedUsers: packed, SegmentIds: watched})
				if err != nil {
					rt.Fatal(err)
				}
				// The server checks the named segments when its handler starts:
				// let it, before a step may delete one.
				recvUntil(t, st, w, func() bool { return w.caughtUp })
				steps := rapid.IntRange(1, 12).Draw(rt, "steps")
				for i := 0; i < steps; i++ {
					slot := rapid.IntRange(0, len(segs)-1).Draw(rt, "segment")
					sid := segs[slot]
					users := rapid.SliceOfN(userGen, 0, 4).Draw(rt, "users")
					switch rapid.IntRange(0, 5).Draw(rt, "op") {
					case 0:
						if len(users) == 0 {
							continue
						}
						if _, err := c.AddMembers(ctx, &segmentsyncv1.AddMembersRequest{SegmentId: sid, UserIds: users}); err != nil {
							rt.Fatal(err)
						}
						change(sid, users, nil)
					case 1:
						if len(users) == 0 {
							continue
						}
						if _, err := c.RemoveMembers(ctx, &segmentsyncv1.RemoveMembersRequest{SegmentId: sid, UserIds: users}); err != nil {
							rt.Fatal(err)
						}
						change(sid, nil, users)
					case 2:
						if _, err := replace(ctx, c, sid, users, 2); err != nil {
							rt.Fatal(err)
						}
						model[sid] = map[string]bool{}
						change(sid, users, nil)
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
						delete(exists, users[0])
					case 4:
						// The segment goes; a fresh one takes its slot.
						if _, err := c.DeleteSegment(ctx, &segmentsyncv1.DeleteSegmentRequest{SegmentId: sid}); err != nil {
							rt.Fatal(err)
						}
						model[sid] = nil
						for j, id := range watched {
							if id == sid {
								// A watcher resuming names only live segments.
								watched = append(watched[:j:j], watched[j+1:]...)
								break
							}
						}
						segs[slot] = newSegment(slot)
						model[segs[slot]] = map[string]bool{}
					case 5:
						// An analytics tool's task, its adds and removes split over 1 or 2 pages.
						removes := rapid.SliceOfN(userGen, 0, 3).Draw(rt, "removes")
						pages := []heapPage{{add: users, remove: removes}}
						if rapid.Bool().Draw(rt, "two pages") {
							pages = []heapPage{{add: users}, {remove: removes}}
						}
						var r *segmentsyncv1.ReceiveSegmentWebhookResponse
						for n, p := range pages {
							p.segmentID, p.segmentName, p.task, p.page, p.total = external, "Heap "+external, fmt.Sprintf("task-%d-%d", checks, i), n+1, len(pages)
							r = heap.post(t, ctx, p)
						}
						if !r.GetApplied() {
							rt.Fatalf("inbound task not applied after its last page: %v", r)
						}
						if linked == "" {
							linked = r.GetSegmentId()
							model[linked] = map[string]bool{}
						}
						change(linked, users, removes)
					}
					if rapid.Bool().Draw(rt, "reconnect") && len(watched) > 0 {
						// Drop the stream and resume from the sequence reached so far.
						recvUntil(t, st, w, func() bool { return w.caughtUp })
						cancel()
						wctx, cancel = context.WithCancel(ctx)
						cancels = append(cancels, cancel)
						packed = rapid.Bool().Draw(rt, "packed")
						st, err = svc.WatchMembership(wctx, &segmentsyncv1.WatchMembershipRequest{IncludeUsers: true, PackedUsers: packed, SegmentIds: watched, AfterSequence: map[string]int64{e.A.EnvironmentID: w.seq}})
						if err != nil {
							rt.Fatal(err)
						}
						w.caughtUp = false
						recvUntil(t, st, w, func() bool { return w.caughtUp })
					}
				}
				for sid, m := range model {
					if m == nil {
						continue // deleted
					}
					want := keys(m)
					got := allMembers(ctx, rt, c, sid)
					if strings.Join(got, ",") != strings.Join(want, ",") {
						rt.Fatalf("segment %s: store has %v, model %v", sid, got, want)
					}
				}
				// Every user's segments, read from the user side, are the model's.
				for _, u := range []string{"a", "b", "c", "d", "e", "f"} {
					u = fmt.Sprintf("%s-%d", u, checks)
					gu, err := c.GetUser(ctx, &segmentsyncv1.GetUserRequest{UserId: u})
					if !exists[u] {
						if status.Code(err) != codes.NotFound {
							rt.Fatalf("GetUser(%s) of a user never created or deleted = %v, %v", u, gu, err)
						}
						continue
					}
					if err != nil {
						rt.Fatal(err)
					}
					want := []string{}
					for sid, m := range model {
						if m[u] {
							want = append(want, sid)
						}
					}
					sort.Strings(want)
					got := append([]string{}, gu.GetSegmentIds()...)
					if strings.Join(got, ",") != strings.Join(want, ",") {
						rt.Fatalf("GetUser(%s) segments = %v, model %v", u, got, want)
					}
				}
				// The watcher converges on the store's state.
				deadline := time.Now().Add(10 * time.Second)
				recvUntil(t, st, w, func() bool {
					if time.Now().After(deadline) {
						rt.Fatalf("watcher did not converge")
					}
					for _, sid := range watched {
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
