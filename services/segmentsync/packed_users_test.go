package segmentsync_test

import (
	"fmt"
	"reflect"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	segmentsyncv1 "github.com/seghub/seghub/gen/seghub/segmentsync/v1"
	"github.com/seghub/seghub/pkg/app/apptest"
)

// A watcher asking for packed users (UserChunk) and one asking for UserBatch
// rebuild the same users, properties and segments, from a snapshot and from
// live changes: an upload of new users, property changes (set, removed, all
// removed) and a deletion. (How users split into chunks is
// TestLeanChunksSplit's and TestLeanUsersPage's.)
func TestPackedUsersMatchUserBatches(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			e := startService(t, apptest.Options{Postgres: b.postgres})
			ctx := apptest.Context(t, 180*time.Second)
			c := client(e, e.A.Member)
			svc := client(e, e.A.Service)
			str := func(s string) *segmentsyncv1.PropertyValue {
				return &segmentsyncv1.PropertyValue{Kind: &segmentsyncv1.PropertyValue_StringValue{StringValue: s}}
			}
			if _, err := c.UpsertUsers(ctx, &segmentsyncv1.UpsertUsersRequest{Users: []*segmentsyncv1.User{
				{UserId: "p1", Properties: map[string]*segmentsyncv1.PropertyValue{"plan": str("pro"), "seats": {Kind: &segmentsyncv1.PropertyValue_NumberValue{NumberValue: 4}}}},
				{UserId: "p2", Properties: map[string]*segmentsyncv1.PropertyValue{"beta": {Kind: &segmentsyncv1.PropertyValue_BoolValue{BoolValue: true}}, "seen": {Kind: &segmentsyncv1.PropertyValue_TimestampValue{TimestampValue: timestamppb.New(time.Unix(1700000000, 0))}}}},
				{UserId: "p3", Properties: map[string]*segmentsyncv1.PropertyValue{"plan": str("free")}},
			}}); err != nil {
				t.Fatal(err)
			}
			ids := func(prefix string, n int) []string {
				out := make([]string, n)
				for i := range out {
					out[i] = fmt.Sprintf("%s%d", prefix, i)
				}
				return out
			}
			seg, err := c.CreateSegment(ctx, &segmentsyncv1.CreateSegmentRequest{Name: "Big"})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := replace(ctx, c, seg.GetSegment().GetSegmentId(), append(ids("a", 2000), "p1", "p3"), 500); err != nil {
				t.Fatal(err)
			}
			watch := func(packed bool) (*watchState, segmentsyncv1.SegmentSyncService_WatchMembershipClient) {
				st, err := svc.WatchMembership(ctx, &segmentsyncv1.WatchMembershipRequest{IncludeUsers: true, PackedUsers: packed})
				if err != nil {
					t.Fatal(err)
				}
				w := &watchState{}
				recvUntil(t, st, w, func() bool { return w.caughtUp })
				return w, st
			}
			same := func(stage string, pw, bw *watchState) {
				t.Helper()
				if !reflect.DeepEqual(pw.users, bw.users) || !reflect.DeepEqual(pw.props, bw.props) {
					t.Fatalf("%s: packed feed has %d users, %d with properties; batches %d, %d", stage, len(pw.users), len(pw.props), len(bw.users), len(bw.props))
				}
				if len(pw.segments) != len(bw.segments) {
					t.Fatalf("%s: %d segments packed, %d batched", stage, len(pw.segments), len(bw.segments))
				}
				for id, m := range bw.segments {
					if pm := pw.segments[id]; pm == nil || !pm.Equals(m) {
						t.Fatalf("%s: segment %s differs", stage, id)
					}
				}
			}
			pw, pst := watch(true)
			bw, bst := watch(false)
			if len(pw.users) != 2003 || len(pw.props) != 3 {
				t.Fatalf("snapshot: %d users, %d with properties; want 2003, 3", len(pw.users), len(pw.props))
			}
			same("snapshot", pw, bw)

			// Live: 2 000 new users in one change, properties changed, a user deleted.
			seg2, err := c.CreateSegment(ctx, &segmentsyncv1.CreateSegmentRequest{Name: "Big 2"})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := replace(ctx, c, seg2.GetSegment().GetSegmentId(), append(ids("b", 2000), "a7", "p2"), 500); err != nil {
				t.Fatal(err)
			}
			if _, err := c.UpsertUsers(ctx, &segmentsyncv1.UpsertUsersRequest{Users: []*segmentsyncv1.User{
				{UserId: "p1", Properties: map[string]*segmentsyncv1.PropertyValue{"plan": {Kind: &segmentsyncv1.PropertyValue_NullValue{NullValue: true}}, "team": str("core")}},
				{UserId: "p3", Properties: map[string]*segmentsyncv1.PropertyValue{"plan": {Kind: &segmentsyncv1.PropertyValue_NullValue{NullValue: true}}}},
				{UserId: "b5", Properties: map[string]*segmentsyncv1.PropertyValue{"plan": str("team")}},
			}}); err != nil {
				t.Fatal(err)
			}
			if _, err := c.DeleteUser(ctx, &segmentsyncv1.DeleteUserRequest{UserId: "a3"}); err != nil {
				t.Fatal(err)
			}
			// The deletion is the last change: wait until both applied it.
			gone := func(w *watchState) func() bool {
				return func() bool {
					for _, id := range w.users {
						if id == "a3" {
							return false
						}
					}
					return true
				}
			}
			recvUntil(t, pst, pw, gone(pw))
			recvUntil(t, bst, bw, gone(bw))
			if len(pw.users) != 4002 || len(pw.props) != 3 {
				t.Fatalf("live: %d users, %d with properties; want 4002, 3 (p1, p2, b5)", len(pw.users), len(pw.props))
			}
			same("live", pw, bw)
		})
	}
}
