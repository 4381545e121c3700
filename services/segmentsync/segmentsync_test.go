package segmentsync_test

import (
	"context"
	"fmt"
	"math"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/RoaringBitmap/roaring/v2"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	segmentsyncv1 "github.com/seghub/seghub/gen/seghub/segmentsync/v1"
	"github.com/seghub/seghub/pkg/app/apptest"
	"github.com/seghub/seghub/pkg/membership"
	"github.com/seghub/seghub/services/segmentsync"
)

type backend struct {
	name     string
	postgres bool
}

var backends = []backend{{"sqlite", false}, {"postgres", true}}

// startService runs segmentsync in a real process (gRPC on loopback).
func startService(t *testing.T, o apptest.Options) *apptest.Env {
	t.Helper()
	o.NeedBus = true
	e := apptest.New(t, o)
	svc, err := segmentsync.New(context.Background(), e.P)
	if err != nil {
		t.Fatal(err)
	}
	e.Add(svc)
	e.Start()
	return e
}

func client(e *apptest.Env, key string) segmentsyncv1.SegmentSyncServiceClient {
	return segmentsyncv1.NewSegmentSyncServiceClient(e.Dial(key))
}

func wantCode(t *testing.T, err error, code codes.Code, contains string) {
	t.Helper()
	st := status.Convert(err)
	if st.Code() != code {
		t.Fatalf("code = %v (%v), want %v", st.Code(), err, code)
	}
	if contains != "" && !strings.Contains(st.Message(), contains) {
		t.Fatalf("message %q does not mention %q", st.Message(), contains)
	}
}

func str(s string) *segmentsyncv1.PropertyValue {
	return &segmentsyncv1.PropertyValue{Kind: &segmentsyncv1.PropertyValue_StringValue{StringValue: s}}
}

func num(n float64) *segmentsyncv1.PropertyValue {
	return &segmentsyncv1.PropertyValue{Kind: &segmentsyncv1.PropertyValue_NumberValue{NumberValue: n}}
}

func TestUsersSegmentsMembership(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			e := startService(t, apptest.Options{Postgres: b.postgres})
			ctx := apptest.Context(t, 60*time.Second)
			c := client(e, e.A.Member)

			// Users with typed properties.
			now := time.Now().UTC().Truncate(time.Microsecond)
			up, err := c.UpsertUsers(ctx, &segmentsyncv1.UpsertUsersRequest{Users: []*segmentsyncv1.User{
				{UserId: "u1", Properties: map[string]*segmentsyncv1.PropertyValue{
					"appcuesUserID": str("ac-1"),
					"plan_seats":    {Kind: &segmentsyncv1.PropertyValue_NumberValue{NumberValue: 12}},
					"trial":         {Kind: &segmentsyncv1.PropertyValue_BoolValue{BoolValue: true}},
					"signed_up":     {Kind: &segmentsyncv1.PropertyValue_TimestampValue{TimestampValue: timestamppb.New(now)}},
				}},
				{UserId: "u2"},
			}})
			if err != nil || up.GetCreated() != 2 {
				t.Fatalf("upsert = %v, %v", up, err)
			}
			if _, err := c.UpsertUsers(ctx, &segmentsyncv1.UpsertUsersRequest{Users: []*segmentsyncv1.User{{UserId: "u1", Properties: map[string]*segmentsyncv1.PropertyValue{
				"trial":      {Kind: &segmentsyncv1.PropertyValue_NullValue{NullValue: true}},
				"plan_seats": {Kind: &segmentsyncv1.PropertyValue_NumberValue{NumberValue: 15}},
			}}}}); err != nil {
				t.Fatal(err)
			}
			gu, err := c.GetUser(ctx, &segmentsyncv1.GetUserRequest{UserId: "u1"})
			if err != nil {
				t.Fatal(err)
			}
			props := gu.GetUser().GetProperties()
			if props["appcuesUserID"].GetStringValue() != "ac-1" || props["plan_seats"].GetNumberValue() != 15 || props["trial"] != nil || !props["signed_up"].GetTimestampValue().AsTime().Equal(now) {
				t.Fatalf("properties = %v", props)
			}

			// Segments.
			seg, err := c.CreateSegment(ctx, &segmentsyncv1.CreateSegmentRequest{Name: "Trial users", Description: "never finished onboarding"})
			if err != nil {
				t.Fatal(err)
			}
			if seg.GetSegment().GetVisibility() != segmentsyncv1.Visibility_VISIBILITY_PUBLIC {
				t.Fatalf("default visibility = %v", seg.GetSegment().GetVisibility())
			}
			sid := seg.GetSegment().GetSegmentId()
			_, err = c.CreateSegment(ctx, &segmentsyncv1.CreateSegmentRequest{Name: "Trial users"})
			wantCode(t, err, codes.AlreadyExists, "Trial users")
			_, err = c.CreateSegment(ctx, &segmentsyncv1.CreateSegmentRequest{Name: "   "})
			wantCode(t, err, codes.InvalidArgument, "name")
			_, err = c.CreateSegment(ctx, &segmentsyncv1.CreateSegmentRequest{Name: strings.Repeat("x", 201)})
			wantCode(t, err, codes.InvalidArgument, "200")
			priv, err := c.CreateSegment(ctx, &segmentsyncv1.CreateSegmentRequest{Name: "Internal", Visibility: segmentsyncv1.Visibility_VISIBILITY_PRIVATE})
			if err != nil {
				t.Fatal(err)
			}

			// Membership: unknown ids create bare users; every change bumps the version.
			add, err := c.AddMembers(ctx, &segmentsyncv1.AddMembersRequest{SegmentId: sid, UserIds: []string{"u1", "u2", "u3", "u3"}})
			if err != nil || add.GetAdded() != 3 || add.GetMemberCount() != 3 || add.GetVersion() != 2 {
				t.Fatalf("add = %v, %v", add, err)
			}
			if _, err := c.GetUser(ctx, &segmentsyncv1.GetUserRequest{UserId: "u3"}); err != nil {
				t.Fatalf("bare user not created: %v", err)
			}
			again, _ := c.AddMembers(ctx, &segmentsyncv1.AddMembersRequest{SegmentId: sid, UserIds: []string{"u1"}})
			if again.GetAdded() != 0 || again.GetVersion() != 2 {
				t.Fatalf("re-adding a member changed something: %v", again)
			}
			rm, err := c.RemoveMembers(ctx, &segmentsyncv1.RemoveMembersRequest{SegmentId: sid, UserIds: []string{"u2", "nobody"}})
			if err != nil || rm.GetRemoved() != 1 || rm.GetMemberCount() != 2 || rm.GetVersion() != 3 {
				t.Fatalf("remove = %v, %v", rm, err)
			}
			for user, want := range map[string]bool{"u1": true, "u2": false, "u3": true, "ghost": false} {
				is, err := c.IsMember(ctx, &segmentsyncv1.IsMemberRequest{SegmentId: sid, UserId: user})
				if err != nil || is.GetIsMember() != want {
					t.Fatalf("IsMember(%s) = %v, %v", user, is, err)
				}
			}
			gs, _ := c.GetSegment(ctx, &segmentsyncv1.GetSegmentRequest{SegmentId: sid})
			if gs.GetSegment().GetMemberCount() != 2 || gs.GetSegment().GetVersion() != 3 {
				t.Fatalf("segment = %v", gs)
			}

			// Lists: filters and pages.
			all, _ := c.ListSegments(ctx, &segmentsyncv1.ListSegmentsRequest{})
			if len(all.GetSegments()) != 2 {
				t.Fatalf("list = %v", all)
			}
			pub, _ := c.ListSegments(ctx, &segmentsyncv1.ListSegmentsRequest{Visibility: segmentsyncv1.Visibility_VISIBILITY_PUBLIC, NonEmpty: true})
			if len(pub.GetSegments()) != 1 || pub.GetSegments()[0].GetSegmentId() != sid {
				t.Fatalf("public non-empty = %v", pub)
			}
			var names []string
			tok := ""
			for {
				page, err := c.ListSegments(ctx, &segmentsyncv1.ListSegmentsRequest{PageSize: 1, PageToken: tok})
				if err != nil {
					t.Fatal(err)
				}
				for _, s := range page.GetSegments() {
					names = append(names, s.GetName())
				}
				if tok = page.GetNextPageToken(); tok == "" {
					break
				}
			}
			if strings.Join(names, ",") != "Internal,Trial users" {
				t.Fatalf("paged names = %v", names)
			}
			_, err = c.ListSegments(ctx, &segmentsyncv1.ListSegmentsRequest{PageToken: "garbage"})
			wantCode(t, err, codes.InvalidArgument, "page_token")

			// Rename; a duplicate rename is refused and changes nothing.
			newName := "Trial, stuck"
			upd, err := c.UpdateSegment(ctx, &segmentsyncv1.UpdateSegmentRequest{SegmentId: sid, Name: &newName})
			if err != nil || upd.GetSegment().GetName() != newName || upd.GetSegment().GetVersion() != 4 {
				t.Fatalf("rename = %v, %v", upd, err)
			}
			dup := "Internal"
			_, err = c.UpdateSegment(ctx, &segmentsyncv1.UpdateSegmentRequest{SegmentId: sid, Name: &dup})
			wantCode(t, err, codes.AlreadyExists, "Internal")

			// Members page through.
			var members []string
			tok = ""
			for {
				page, err := c.GetMembers(ctx, &segmentsyncv1.GetMembersRequest{SegmentId: sid, PageSize: 1, PageToken: tok})
				if err != nil {
					t.Fatal(err)
				}
				members = append(members, page.GetUserIds()...)
				if tok = page.GetNextPageToken(); tok == "" {
					break
				}
			}
			sort.Strings(members)
			if strings.Join(members, ",") != "u1,u3" {
				t.Fatalf("members = %v", members)
			}

			// Deleting a user removes it from every segment.
			if _, err := c.AddMembers(ctx, &segmentsyncv1.AddMembersRequest{SegmentId: priv.GetSegment().GetSegmentId(), UserIds: []string{"u1"}}); err != nil {
				t.Fatal(err)
			}
			del, err := c.DeleteUser(ctx, &segmentsyncv1.DeleteUserRequest{UserId: "u1"})
			if err != nil || len(del.GetSegmentIds()) != 2 {
				t.Fatalf("delete user = %v, %v", del, err)
			}
			if is, _ := c.IsMember(ctx, &segmentsyncv1.IsMemberRequest{SegmentId: sid, UserId: "u1"}); is.GetIsMember() {
				t.Fatal("deleted user still a member")
			}
			_, err = c.GetUser(ctx, &segmentsyncv1.GetUserRequest{UserId: "u1"})
			wantCode(t, err, codes.NotFound, "u1")

			// Another environment sees nothing of this one.
			other := client(e, e.B.Member)
			_, err = other.GetSegment(ctx, &segmentsyncv1.GetSegmentRequest{SegmentId: sid})
			wantCode(t, err, codes.NotFound, sid)
			_, err = other.AddMembers(ctx, &segmentsyncv1.AddMembersRequest{SegmentId: sid, UserIds: []string{"x"}})
			wantCode(t, err, codes.NotFound, sid)
			if l, _ := other.ListSegments(ctx, &segmentsyncv1.ListSegmentsRequest{}); len(l.GetSegments()) != 0 {
				t.Fatalf("environment B lists A's segments: %v", l)
			}

			// Delete a segment.
			if _, err := c.DeleteSegment(ctx, &segmentsyncv1.DeleteSegmentRequest{SegmentId: sid}); err != nil {
				t.Fatal(err)
			}
			_, err = c.GetSegment(ctx, &segmentsyncv1.GetSegmentRequest{SegmentId: sid})
			wantCode(t, err, codes.NotFound, sid)
		})
	}
}

// A rejected call changes nothing, and says which field was wrong and why.
func TestBadInputChangesNothing(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			e := startService(t, apptest.Options{Postgres: b.postgres})
			ctx := apptest.Context(t, 60*time.Second)
			c := client(e, e.A.Member)
			seg, err := c.CreateSegment(ctx, &segmentsyncv1.CreateSegmentRequest{Name: "S"})
			if err != nil {
				t.Fatal(err)
			}
			sid := seg.GetSegment().GetSegmentId()
			// An existing user whose properties a rejected batch must not touch.
			keepProps := map[string]*segmentsyncv1.PropertyValue{"plan": str("pro"), "seats": num(3)}
			if _, err := c.UpsertUsers(ctx, &segmentsyncv1.UpsertUsersRequest{Users: []*segmentsyncv1.User{{UserId: "keep", Properties: keepProps}}}); err != nil {
				t.Fatal(err)
			}
			tooMany := make([]*segmentsyncv1.User, 1001)
			for i := range tooMany {
				tooMany[i] = &segmentsyncv1.User{UserId: fmt.Sprint("u", i)}
			}
			upsert := func(users ...*segmentsyncv1.User) func() error {
				return func() error {
					_, err := c.UpsertUsers(ctx, &segmentsyncv1.UpsertUsersRequest{Users: users})
					return err
				}
			}
			// keep gets a valid change next to the bad one, so a partial write would show.
			keepWith := func(name string, v *segmentsyncv1.PropertyValue) *segmentsyncv1.User {
				return &segmentsyncv1.User{UserId: "keep", Properties: map[string]*segmentsyncv1.PropertyValue{"plan": str("enterprise"), name: v}}
			}
			cases := []struct {
				name    string
				call    func() error
				field   string // the BadRequest field violation
				mention string // also in the message (a limit or reason)
			}{
				{"oversized upsert", upsert(tooMany...), "users", "1000"},
				{"property without a value", upsert(&segmentsyncv1.User{UserId: "ok"}, &segmentsyncv1.User{UserId: "bad", Properties: map[string]*segmentsyncv1.PropertyValue{"p": {}}}), `users[1].properties["p"]`, "string_value"},
				{"NaN number", upsert(&segmentsyncv1.User{UserId: "ok"}, keepWith("seats", num(math.NaN()))), `users[1].properties["seats"]`, "finite"},
				{"infinite number", upsert(keepWith("seats", num(math.Inf(1)))), `users[0].properties["seats"]`, "finite"},
				{"timestamp after year 9999", upsert(keepWith("signed_up", &segmentsyncv1.PropertyValue{Kind: &segmentsyncv1.PropertyValue_TimestampValue{TimestampValue: &timestamppb.Timestamp{Seconds: 253402300800}}})), `users[0].properties["signed_up"]`, "timestamp"},
				{"timestamp with invalid nanos", upsert(keepWith("signed_up", &segmentsyncv1.PropertyValue{Kind: &segmentsyncv1.PropertyValue_TimestampValue{TimestampValue: &timestamppb.Timestamp{Seconds: 1, Nanos: 1_000_000_000}}})), `users[0].properties["signed_up"]`, "timestamp"},
				{"over-long string value", upsert(keepWith("plan", str(strings.Repeat("x", 4097)))), `users[0].properties["plan"]`, "4096"},
				{"null_value false", upsert(keepWith("seats", &segmentsyncv1.PropertyValue{Kind: &segmentsyncv1.PropertyValue_NullValue{NullValue: false}})), `users[0].properties["seats"]`, "null_value"},
				{"blank user id in a batch", func() error {
					_, err := c.AddMembers(ctx, &segmentsyncv1.AddMembersRequest{SegmentId: sid, UserIds: []string{"fine", " "}})
					return err
				}, "user_ids[1]", "blank"},
				{"over-long user id", func() error {
					_, err := c.AddMembers(ctx, &segmentsyncv1.AddMembersRequest{SegmentId: sid, UserIds: []string{strings.Repeat("x", 257)}})
					return err
				}, "user_ids[0]", "256"},
				{"oversized add", func() error {
					ids := make([]string, 100001)
					for i := range ids {
						ids[i] = fmt.Sprint(i)
					}
					_, err := c.AddMembers(ctx, &segmentsyncv1.AddMembersRequest{SegmentId: sid, UserIds: ids})
					return err
				}, "user_ids", "100000"},
			}
			for _, cs := range cases {
				err := cs.call()
				st := status.Convert(err)
				if st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), cs.field) || !strings.Contains(st.Message(), cs.mention) {
					t.Errorf("%s: %v, want InvalidArgument naming %s and %s", cs.name, err, cs.field, cs.mention)
				}
				var fields []string
				for _, d := range st.Details() {
					if br, ok := d.(*errdetails.BadRequest); ok {
						for _, v := range br.GetFieldViolations() {
							fields = append(fields, v.GetField())
						}
					}
				}
				if len(fields) != 1 || fields[0] != cs.field {
					t.Errorf("%s: field violations %q, want [%s]", cs.name, fields, cs.field)
				}
			}
			for _, id := range []string{"ok", "fine", "bad", "u0"} {
				_, err := c.GetUser(ctx, &segmentsyncv1.GetUserRequest{UserId: id})
				wantCode(t, err, codes.NotFound, id)
			}
			gu, err := c.GetUser(ctx, &segmentsyncv1.GetUserRequest{UserId: "keep"})
			if err != nil {
				t.Fatalf("a rejected upsert broke an existing user: %v", err)
			}
			if p := gu.GetUser().GetProperties(); len(p) != 2 || p["plan"].GetStringValue() != "pro" || p["seats"].GetNumberValue() != 3 {
				t.Fatalf("rejected upserts changed keep's properties: %v", p)
			}
			gs, _ := c.GetSegment(ctx, &segmentsyncv1.GetSegmentRequest{SegmentId: sid})
			if gs.GetSegment().GetVersion() != 1 || gs.GetSegment().GetMemberCount() != 0 {
				t.Fatalf("rejected calls changed the segment: %v", gs)
			}
			_, err = c.AddMembers(ctx, &segmentsyncv1.AddMembersRequest{SegmentId: "seg_nope", UserIds: []string{"a"}})
			wantCode(t, err, codes.NotFound, "seg_nope")
		})
	}
}

func replace(ctx context.Context, c segmentsyncv1.SegmentSyncServiceClient, sid string, ids []string, chunk int) (*segmentsyncv1.ReplaceMembersResponse, error) {
	st, err := c.ReplaceMembers(ctx)
	if err != nil {
		return nil, err
	}
	for i := 0; i < len(ids) || i == 0; i += chunk {
		req := &segmentsyncv1.ReplaceMembersRequest{UserIds: ids[i:min(i+chunk, len(ids))]}
		if i == 0 {
			req.SegmentId = sid
		}
		if err := st.Send(req); err != nil {
			return nil, err
		}
	}
	return st.CloseAndRecv()
}

func TestReplaceMembersAtomic(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			e := startService(t, apptest.Options{Postgres: b.postgres})
			ctx := apptest.Context(t, 60*time.Second)
			c := client(e, e.A.Member)
			seg, _ := c.CreateSegment(ctx, &segmentsyncv1.CreateSegmentRequest{Name: "Big"})
			sid := seg.GetSegment().GetSegmentId()
			ids := make([]string, 20000)
			for i := range ids {
				ids[i] = fmt.Sprintf("user-%d", i)
			}
			res, err := replace(ctx, c, sid, ids, 3000)
			if err != nil || res.GetAdded() != 20000 || res.GetMemberCount() != 20000 {
				t.Fatalf("replace = %v, %v", res, err)
			}
			// Replace with a shifted set: only the difference changes.
			res, err = replace(ctx, c, sid, ids[100:], 3000)
			if err != nil || res.GetAdded() != 0 || res.GetRemoved() != 100 || res.GetMemberCount() != 19900 {
				t.Fatalf("second replace = %v, %v", res, err)
			}

			// A stream broken before its end changes nothing.
			bctx, cancel := context.WithCancel(ctx)
			st, _ := c.ReplaceMembers(bctx)
			_ = st.Send(&segmentsyncv1.ReplaceMembersRequest{SegmentId: sid, UserIds: []string{"only-one"}})
			time.Sleep(100 * time.Millisecond)
			cancel()
			time.Sleep(200 * time.Millisecond)
			gs, _ := c.GetSegment(ctx, &segmentsyncv1.GetSegmentRequest{SegmentId: sid})
			if gs.GetSegment().GetMemberCount() != 19900 {
				t.Fatalf("broken stream changed membership: %v", gs)
			}
			_, err = c.GetUser(ctx, &segmentsyncv1.GetUserRequest{UserId: "only-one"})
			wantCode(t, err, codes.NotFound, "only-one")
			_, err = replace(ctx, c, "", ids[:1], 10)
			wantCode(t, err, codes.InvalidArgument, "segment_id")
		})
	}
}

// watchState rebuilds the store's state from a WatchMembership stream.
type watchState struct {
	seq      int64
	segments map[string]*roaring.Bitmap
	users    map[uint32]string
	// props holds each user's properties as text (users holding none are absent).
	props    map[uint32]map[string]string
	caughtUp bool
}

func propsText(p map[string]*segmentsyncv1.PropertyValue) map[string]string {
	if len(p) == 0 {
		return nil
	}
	out := make(map[string]string, len(p))
	for k, v := range p {
		out[k] = v.String()
	}
	return out
}

func (w *watchState) apply(t *testing.T, m *segmentsyncv1.WatchMembershipResponse) {
	t.Helper()
	if m.GetSequence() < w.seq && m.GetSnapshotStart() == nil {
		t.Fatalf("sequence went back: %d after %d", m.GetSequence(), w.seq)
	}
	w.seq = m.GetSequence()
	switch ev := m.GetEvent().(type) {
	case *segmentsyncv1.WatchMembershipResponse_SnapshotStart:
		w.segments, w.users, w.props, w.caughtUp = map[string]*roaring.Bitmap{}, map[uint32]string{}, map[uint32]map[string]string{}, false
	case *segmentsyncv1.WatchMembershipResponse_Users:
		for _, u := range ev.Users.GetUsers() {
			w.users[u.GetDenseId()] = u.GetUserId()
			w.setProps(u.GetDenseId(), propsText(u.GetProperties()))
		}
	case *segmentsyncv1.WatchMembershipResponse_UserChunk:
		c := ev.UserChunk
		if len(c.GetDenseIds()) != len(c.GetUserIds()) {
			t.Fatalf("user chunk of %d dense ids and %d user ids", len(c.GetDenseIds()), len(c.GetUserIds()))
		}
		props := map[uint32]map[string]string{}
		for _, p := range c.GetProperties() {
			props[p.GetDenseId()] = propsText(p.GetProperties())
		}
		for i, d := range c.GetDenseIds() {
			if i > 0 && d <= c.GetDenseIds()[i-1] {
				t.Fatalf("user chunk dense ids not ascending: %v", c.GetDenseIds())
			}
			w.users[d] = c.GetUserIds()[i]
			w.setProps(d, props[d])
			delete(props, d)
		}
		if len(props) > 0 {
			t.Fatalf("user chunk holds properties of users not in it: %v", props)
		}
	case *segmentsyncv1.WatchMembershipResponse_UsersDeleted:
		for _, d := range ev.UsersDeleted.GetDenseIds() {
			delete(w.users, d)
			delete(w.props, d)
			for _, b := range w.segments {
				b.Remove(d)
			}
		}
	case *segmentsyncv1.WatchMembershipResponse_Segment:
		b, err := membership.Decode(ev.Segment.GetMembers())
		if err != nil {
			t.Fatal(err)
		}
		w.segments[ev.Segment.GetSegment().GetSegmentId()] = b
	case *segmentsyncv1.WatchMembershipResponse_Change:
		a, _ := membership.Decode(ev.Change.GetAdded())
		r, _ := membership.Decode(ev.Change.GetRemoved())
		b := w.segments[ev.Change.GetSegmentId()]
		if b == nil {
			t.Fatalf("change for unknown segment %s", ev.Change.GetSegmentId())
		}
		w.segments[ev.Change.GetSegmentId()] = membership.Apply(b, a, r)
	case *segmentsyncv1.WatchMembershipResponse_SegmentDeleted:
		delete(w.segments, ev.SegmentDeleted.GetSegmentId())
	case *segmentsyncv1.WatchMembershipResponse_CaughtUp:
		w.caughtUp = true
	}
}

func (w *watchState) setProps(d uint32, p map[string]string) {
	if p == nil {
		delete(w.props, d)
	} else {
		w.props[d] = p
	}
}

// members returns segment sid as sorted user ids.
func (w *watchState) members(sid string) []string {
	var out []string
	if b := w.segments[sid]; b != nil {
		for _, d := range b.ToArray() {
			out = append(out, w.users[d])
		}
	}
	sort.Strings(out)
	return out
}

func recvUntil(t *testing.T, st segmentsyncv1.SegmentSyncService_WatchMembershipClient, w *watchState, done func() bool) {
	t.Helper()
	for !done() {
		m, err := st.Recv()
		if err != nil {
			t.Fatalf("watch recv: %v", err)
		}
		w.apply(t, m)
	}
}

func TestWatchMembershipResumes(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			e := startService(t, apptest.Options{Postgres: b.postgres})
			ctx := apptest.Context(t, 60*time.Second)
			c := client(e, e.A.Member)
			svc := client(e, e.A.Service)
			seg, _ := c.CreateSegment(ctx, &segmentsyncv1.CreateSegmentRequest{Name: "W"})
			sid := seg.GetSegment().GetSegmentId()
			if _, err := c.AddMembers(ctx, &segmentsyncv1.AddMembersRequest{SegmentId: sid, UserIds: []string{"a", "b"}}); err != nil {
				t.Fatal(err)
			}
			// Members may not watch; the service role may.
			mst, _ := c.WatchMembership(ctx, &segmentsyncv1.WatchMembershipRequest{})
			if _, err := mst.Recv(); status.Code(err) != codes.PermissionDenied {
				t.Fatalf("member watching: %v", err)
			}
			wctx, cancel := context.WithCancel(ctx)
			st, err := svc.WatchMembership(wctx, &segmentsyncv1.WatchMembershipRequest{IncludeUsers: true})
			if err != nil {
				t.Fatal(err)
			}
			w := &watchState{}
			recvUntil(t, st, w, func() bool { return w.caughtUp })
			if got := strings.Join(w.members(sid), ","); got != "a,b" {
				t.Fatalf("snapshot members = %s", got)
			}
			// Live changes arrive in order.
			_, _ = c.AddMembers(ctx, &segmentsyncv1.AddMembersRequest{SegmentId: sid, UserIds: []string{"c"}})
			r, _ := c.RemoveMembers(ctx, &segmentsyncv1.RemoveMembersRequest{SegmentId: sid, UserIds: []string{"a"}})
			recvUntil(t, st, w, func() bool { return strings.Join(w.members(sid), ",") == "b,c" })
			cancel()
			resumeAt := w.seq
			_ = r

			// Changes while disconnected; a resumed watcher gets exactly them.
			_, _ = c.AddMembers(ctx, &segmentsyncv1.AddMembersRequest{SegmentId: sid, UserIds: []string{"d"}})
			seg2, _ := c.CreateSegment(ctx, &segmentsyncv1.CreateSegmentRequest{Name: "W2"})
			_, _ = c.AddMembers(ctx, &segmentsyncv1.AddMembersRequest{SegmentId: seg2.GetSegment().GetSegmentId(), UserIds: []string{"b"}})
			_, _ = c.DeleteUser(ctx, &segmentsyncv1.DeleteUserRequest{UserId: "c"})

			st2, err := svc.WatchMembership(ctx, &segmentsyncv1.WatchMembershipRequest{IncludeUsers: true, AfterSequence: map[string]int64{e.A.EnvironmentID: resumeAt}})
			if err != nil {
				t.Fatal(err)
			}
			first, err := st2.Recv()
			if err != nil {
				t.Fatal(err)
			}
			if first.GetSnapshotStart() != nil {
				t.Fatal("resumed watcher was sent a snapshot although the log reaches back")
			}
			if first.GetSequence() != resumeAt+1 {
				t.Fatalf("resume started at %d, want %d (no gap)", first.GetSequence(), resumeAt+1)
			}
			w.apply(t, first)
			recvUntil(t, st2, w, func() bool { return w.caughtUp && w.seq >= resumeAt+5 })
			if got := strings.Join(w.members(sid), ","); got != "b,d" {
				t.Fatalf("after resume = %s", got)
			}
			if got := strings.Join(w.members(seg2.GetSegment().GetSegmentId()), ","); got != "b" {
				t.Fatalf("new segment after resume = %s", got)
			}
		})
	}
}

// A watcher whose sequence the log no longer reaches gets a fresh snapshot.
func TestWatchAfterPruneSnapshots(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			e := startService(t, apptest.Options{Postgres: b.postgres})
			ctx := apptest.Context(t, 60*time.Second)
			c := client(e, e.A.Member)
			seg, _ := c.CreateSegment(ctx, &segmentsyncv1.CreateSegmentRequest{Name: "P"})
			sid := seg.GetSegment().GetSegmentId()
			for i := 0; i < 5; i++ {
				if _, err := c.AddMembers(ctx, &segmentsyncv1.AddMembersRequest{SegmentId: sid, UserIds: []string{fmt.Sprint("p", i)}}); err != nil {
					t.Fatal(err)
				}
			}
			// Prune as the retention job would: the log no longer reaches sequence 3.
			res, err := e.P.DB.ExecContext(ctx, `DELETE FROM ss_changes WHERE environment_id = ? AND seq <= ?`, e.A.EnvironmentID, 8)
			if err != nil {
				t.Fatal(err)
			}
			if n, _ := res.RowsAffected(); n == 0 {
				t.Fatal("nothing pruned; the test proves nothing")
			}
			st, err := client(e, e.A.Service).WatchMembership(ctx, &segmentsyncv1.WatchMembershipRequest{IncludeUsers: true, AfterSequence: map[string]int64{e.A.EnvironmentID: 2}})
			if err != nil {
				t.Fatal(err)
			}
			first, err := st.Recv()
			if err != nil || first.GetSnapshotStart() == nil {
				t.Fatalf("first message = %v, %v; want a snapshot", first, err)
			}
			w := &watchState{}
			w.apply(t, first)
			recvUntil(t, st, w, func() bool { return w.caughtUp })
			if got := strings.Join(w.members(sid), ","); got != "p0,p1,p2,p3,p4" {
				t.Fatalf("snapshot = %s", got)
			}
		})
	}
}

func TestRestartKeepsData(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			dir := t.TempDir()
			o := apptest.Options{DataDir: dir, Postgres: b.postgres}
			e := startService(t, o)
			ctx := apptest.Context(t, 60*time.Second)
			c := client(e, e.A.Member)
			seg, _ := c.CreateSegment(ctx, &segmentsyncv1.CreateSegmentRequest{Name: "Kept"})
			sid := seg.GetSegment().GetSegmentId()
			_, _ = c.AddMembers(ctx, &segmentsyncv1.AddMembersRequest{SegmentId: sid, UserIds: []string{"x", "y"}})
			_, _ = c.UpsertUsers(ctx, &segmentsyncv1.UpsertUsersRequest{Users: []*segmentsyncv1.User{{UserId: "x", Properties: map[string]*segmentsyncv1.PropertyValue{"appcuesUserID": str("ac-x")}}}})
			keys := e.A
			o.DatabaseURL = e.Config.DatabaseURL
			e.Stop()

			e2 := startService(t, apptest.Options{DataDir: dir, DatabaseURL: o.DatabaseURL})
			c2 := client(e2, keys.Member)
			gs, err := c2.GetSegment(ctx, &segmentsyncv1.GetSegmentRequest{SegmentId: sid})
			if err != nil || gs.GetSegment().GetMemberCount() != 2 || gs.GetSegment().GetName() != "Kept" {
				t.Fatalf("after restart: %v, %v", gs, err)
			}
			gu, err := c2.GetUser(ctx, &segmentsyncv1.GetUserRequest{UserId: "x"})
			if err != nil || gu.GetUser().GetProperties()["appcuesUserID"].GetStringValue() != "ac-x" || len(gu.GetSegmentIds()) != 1 {
				t.Fatalf("user after restart: %v, %v", gu, err)
			}
			// Dense ids continue after the restart rather than being reused.
			_, _ = c2.AddMembers(ctx, &segmentsyncv1.AddMembersRequest{SegmentId: sid, UserIds: []string{"z"}})
			m, _ := c2.GetMembers(ctx, &segmentsyncv1.GetMembersRequest{SegmentId: sid})
			if len(m.GetUserIds()) != 3 {
				t.Fatalf("members after restart = %v", m.GetUserIds())
			}
		})
	}
}

// UpdateSegment changes only the fields it is given; description and
// visibility changes persist and move the segment between list filters.
func TestUpdateSegmentDescriptionAndVisibility(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			e := startService(t, apptest.Options{Postgres: b.postgres})
			ctx := apptest.Context(t, 60*time.Second)
			c := client(e, e.A.Member)
			seg, err := c.CreateSegment(ctx, &segmentsyncv1.CreateSegmentRequest{Name: "Churn risk", Description: "first draft"})
			if err != nil {
				t.Fatal(err)
			}
			sid := seg.GetSegment().GetSegmentId()
			if _, err := c.AddMembers(ctx, &segmentsyncv1.AddMembersRequest{SegmentId: sid, UserIds: []string{"a", "b"}}); err != nil {
				t.Fatal(err)
			}
			get := func() *segmentsyncv1.Segment {
				t.Helper()
				g, err := c.GetSegment(ctx, &segmentsyncv1.GetSegmentRequest{SegmentId: sid})
				if err != nil {
					t.Fatal(err)
				}
				return g.GetSegment()
			}
			// listed reports whether sid is in ListSegments with this filter.
			listed := func(v segmentsyncv1.Visibility, nonEmpty bool) bool {
				t.Helper()
				l, err := c.ListSegments(ctx, &segmentsyncv1.ListSegmentsRequest{Visibility: v, NonEmpty: nonEmpty})
				if err != nil {
					t.Fatal(err)
				}
				for _, s := range l.GetSegments() {
					if s.GetSegmentId() == sid {
						return true
					}
				}
				return false
			}
			ptr := func(s string) *string { return &s }
			const (
				public  = segmentsyncv1.Visibility_VISIBILITY_PUBLIC
				private = segmentsyncv1.Visibility_VISIBILITY_PRIVATE
				either  = segmentsyncv1.Visibility_VISIBILITY_UNSPECIFIED
			)
			version := get().GetVersion()

			steps := []struct {
				name      string
				req       *segmentsyncv1.UpdateSegmentRequest
				wantDesc  string
				wantVis   segmentsyncv1.Visibility
				inPublic  bool
				inPrivate bool
			}{
				{"description only", &segmentsyncv1.UpdateSegmentRequest{Description: ptr("users with falling activity")}, "users with falling activity", public, true, false},
				{"public to private", &segmentsyncv1.UpdateSegmentRequest{Visibility: private}, "users with falling activity", private, false, true},
				{"description cleared, still private", &segmentsyncv1.UpdateSegmentRequest{Description: ptr("")}, "", private, false, true},
				{"private back to public with a description", &segmentsyncv1.UpdateSegmentRequest{Visibility: public, Description: ptr("back in the open")}, "back in the open", public, true, false},
			}
			for _, st := range steps {
				st.req.SegmentId = sid
				up, err := c.UpdateSegment(ctx, st.req)
				if err != nil {
					t.Fatalf("%s: %v", st.name, err)
				}
				version++
				for where, s := range map[string]*segmentsyncv1.Segment{"response": up.GetSegment(), "GetSegment": get()} {
					if s.GetName() != "Churn risk" || s.GetDescription() != st.wantDesc || s.GetVisibility() != st.wantVis || s.GetVersion() != version || s.GetMemberCount() != 2 {
						t.Fatalf("%s: %s = %v; want description %q, %v, version %d", st.name, where, s, st.wantDesc, st.wantVis, version)
					}
				}
				if listed(public, false) != st.inPublic || listed(public, true) != st.inPublic || listed(private, false) != st.inPrivate || listed(private, true) != st.inPrivate || !listed(either, false) {
					t.Fatalf("%s: filters public=%v private=%v, want public=%v private=%v", st.name, listed(public, false), listed(private, false), st.inPublic, st.inPrivate)
				}
			}

			// Refused updates change nothing.
			refused := []struct {
				name string
				req  *segmentsyncv1.UpdateSegmentRequest
				code codes.Code
				msg  string
			}{
				{"over-long description", &segmentsyncv1.UpdateSegmentRequest{SegmentId: sid, Description: ptr(strings.Repeat("d", 2001)), Visibility: private}, codes.InvalidArgument, "description"},
				{"unknown visibility", &segmentsyncv1.UpdateSegmentRequest{SegmentId: sid, Description: ptr("x"), Visibility: segmentsyncv1.Visibility(7)}, codes.InvalidArgument, "visibility"},
				{"nothing to update", &segmentsyncv1.UpdateSegmentRequest{SegmentId: sid}, codes.InvalidArgument, "nothing to update"},
				{"unknown segment", &segmentsyncv1.UpdateSegmentRequest{SegmentId: "seg_nope", Visibility: private}, codes.NotFound, "seg_nope"},
			}
			for _, r := range refused {
				_, err := c.UpdateSegment(ctx, r.req)
				wantCode(t, err, r.code, r.msg)
			}
			// Another environment cannot change it.
			_, err = client(e, e.B.Member).UpdateSegment(ctx, &segmentsyncv1.UpdateSegmentRequest{SegmentId: sid, Visibility: private})
			wantCode(t, err, codes.NotFound, sid)
			if s := get(); s.GetDescription() != "back in the open" || s.GetVisibility() != public || s.GetVersion() != version {
				t.Fatalf("refused updates changed the segment: %v", s)
			}
		})
	}
}

// DeleteSegment: "its syncs are disabled and removed" (segmentsync.proto).
// Nothing more runs for them, and what the destination holds is left alone.
func TestDeleteSegmentRemovesItsSyncs(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			f := startSync(t, syncOpts{postgres: b.postgres})
			ctx := apptest.Context(t, 120*time.Second)
			conn := f.appcues(t, ctx, "Appcues")
			doomed := f.segment(t, ctx, "Doomed", 4, 4)
			kept := f.segment(t, ctx, "Kept", 2, 2)
			// A segment has one sync per connection: its second goes to another.
			conn2 := f.appcues(t, ctx, "Appcues 2")
			enable := func(seg, conn string, sched segmentsyncv1.SyncSchedule) string {
				t.Helper()
				en, err := f.admin.EnableSync(ctx, &segmentsyncv1.EnableSyncRequest{SegmentId: seg, ConnectionId: conn, Schedule: sched})
				if err != nil {
					t.Fatal(err)
				}
				if r := f.waitRun(t, ctx, en.GetSync().GetSyncId(), 1, en.GetRun().GetRunId()); r.GetStatus() != segmentsyncv1.SyncRunStatus_SYNC_RUN_STATUS_SUCCEEDED {
					t.Fatalf("first run = %v", r)
				}
				return en.GetSync().GetSyncId()
			}
			gone := []string{
				enable(doomed, conn, segmentsyncv1.SyncSchedule_SYNC_SCHEDULE_RECURRING),
				enable(doomed, conn2, segmentsyncv1.SyncSchedule_SYNC_SCHEDULE_ONE_TIME),
			}
			keptSync := enable(kept, conn, segmentsyncv1.SyncSchedule_SYNC_SCHEDULE_RECURRING)
			if n := len(f.appcuesMembers("[seghub] Doomed")); n != 4 {
				t.Fatalf("appcues holds %d of Doomed before the delete", n)
			}

			if _, err := f.ss.DeleteSegment(ctx, &segmentsyncv1.DeleteSegmentRequest{SegmentId: doomed}); err != nil {
				t.Fatal(err)
			}
			_, err := f.ss.GetSegment(ctx, &segmentsyncv1.GetSegmentRequest{SegmentId: doomed})
			wantCode(t, err, codes.NotFound, doomed)

			// Removed: every sync RPC answers NotFound for them.
			for _, id := range gone {
				calls := map[string]func() error{
					"GetSync": func() error {
						_, err := f.ss.GetSync(ctx, &segmentsyncv1.GetSyncRequest{SyncId: id})
						return err
					},
					"ListSyncRuns": func() error {
						_, err := f.ss.ListSyncRuns(ctx, &segmentsyncv1.ListSyncRunsRequest{SyncId: id})
						return err
					},
					"SyncNow": func() error {
						_, err := f.admin.SyncNow(ctx, &segmentsyncv1.SyncNowRequest{SyncId: id})
						return err
					},
					"UpdateSync": func() error {
						_, err := f.admin.UpdateSync(ctx, &segmentsyncv1.UpdateSyncRequest{SyncId: id, Mode: segmentsyncv1.SyncMode_SYNC_MODE_UPSERT})
						return err
					},
					"DryRun": func() error {
						_, err := f.ss.DryRun(ctx, &segmentsyncv1.DryRunRequest{SyncId: id})
						return err
					},
				}
				for name, call := range calls {
					if err := call(); status.Code(err) != codes.NotFound {
						t.Errorf("%s(%s) after the segment was deleted: %v, want NotFound", name, id, err)
					}
				}
			}
			all, err := f.ss.ListSyncs(ctx, &segmentsyncv1.ListSyncsRequest{})
			if err != nil {
				t.Fatal(err)
			}
			if len(all.GetSyncs()) != 1 || all.GetSyncs()[0].GetSyncId() != keptSync {
				t.Fatalf("ListSyncs = %v, want only %s", all.GetSyncs(), keptSync)
			}
			if of, _ := f.ss.ListSyncs(ctx, &segmentsyncv1.ListSyncsRequest{SegmentId: doomed}); len(of.GetSyncs()) != 0 {
				t.Fatalf("ListSyncs of the deleted segment = %v", of.GetSyncs())
			}

			// No further runs: past the recurring interval only Kept's sync is
			// due, and nothing is sent about Doomed.
			requests := f.sim.Snapshot().Counters["requests"]
			f.clock.Add(2 * time.Hour)
			if n, err := f.svc.Engine().Tick(ctx); err != nil || n != 1 {
				t.Fatalf("tick queued %d (%v), want 1 (Kept only)", n, err)
			}
			if r := f.waitRun(t, ctx, keptSync, 2); r.GetTrigger() != segmentsyncv1.SyncRunTrigger_SYNC_RUN_TRIGGER_SCHEDULE || r.GetAdded()+r.GetRemoved() != 0 {
				t.Fatalf("Kept's scheduled run = %v", r)
			}
			if after := f.sim.Snapshot().Counters["requests"]; after != requests {
				t.Fatalf("%d requests reached the destination after the delete", after-requests)
			}
			if n := len(f.appcuesMembers("[seghub] Doomed")); n != 4 {
				t.Fatalf("appcues holds %d of Doomed after the delete, want the 4 it had", n)
			}
		})
	}
}
