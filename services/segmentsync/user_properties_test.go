package segmentsync_test

import (
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	segmentsyncv1 "github.com/seghub/seghub/gen/seghub/segmentsync/v1"
	"github.com/seghub/seghub/pkg/app/apptest"
)

// ListUserProperties offers the identity property picker the names seghub
// holds, typed and counted, on both backends and per environment.
func TestListUserProperties(t *testing.T) {
	type want = map[string]uint64 // "name/TYPE" → users
	b := func(v bool) *segmentsyncv1.PropertyValue {
		return &segmentsyncv1.PropertyValue{Kind: &segmentsyncv1.PropertyValue_BoolValue{BoolValue: v}}
	}
	null := &segmentsyncv1.PropertyValue{Kind: &segmentsyncv1.PropertyValue_NullValue{NullValue: true}}
	ts := &segmentsyncv1.PropertyValue{Kind: &segmentsyncv1.PropertyValue_TimestampValue{TimestampValue: timestamppb.New(time.Unix(1700000000, 0))}}
	props := func(kv ...any) map[string]*segmentsyncv1.PropertyValue {
		m := map[string]*segmentsyncv1.PropertyValue{}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i].(string)] = kv[i+1].(*segmentsyncv1.PropertyValue)
		}
		return m
	}
	steps := []struct {
		name  string
		users []*segmentsyncv1.User
		del   string
		want  want
	}{
		{name: "no users", want: want{}},
		{name: "typed properties counted per user", users: []*segmentsyncv1.User{
			{UserId: "u1", Properties: props("appcuesUserID", str("ac-1"), "plan_seats", num(3), "trial", b(false), "signed_up", ts)},
			{UserId: "u2", Properties: props("appcuesUserID", str("ac-2"), "trial", b(true))},
			{UserId: "u3", Properties: props("ABTastyVisitorId", str("v-3"))},
			{UserId: "u4"},
		}, want: want{"appcuesUserID/STRING": 2, "plan_seats/NUMBER": 1, "trial/BOOL": 2, "signed_up/TIMESTAMP": 1, "ABTastyVisitorId/STRING": 1}},
		{name: "a name with values of two types is listed per type", users: []*segmentsyncv1.User{
			{UserId: "u4", Properties: props("plan_seats", str("many"))},
		}, want: want{"appcuesUserID/STRING": 2, "plan_seats/NUMBER": 1, "plan_seats/STRING": 1, "trial/BOOL": 2, "signed_up/TIMESTAMP": 1, "ABTastyVisitorId/STRING": 1}},
		{name: "removed values no longer count", users: []*segmentsyncv1.User{
			{UserId: "u1", Properties: props("trial", null, "signed_up", null)},
		}, want: want{"appcuesUserID/STRING": 2, "plan_seats/NUMBER": 1, "plan_seats/STRING": 1, "trial/BOOL": 1, "ABTastyVisitorId/STRING": 1}},
		{name: "deleted users no longer count", del: "u2",
			want: want{"appcuesUserID/STRING": 1, "plan_seats/NUMBER": 1, "plan_seats/STRING": 1, "ABTastyVisitorId/STRING": 1}},
	}
	for _, bk := range backends {
		t.Run(bk.name, func(t *testing.T) {
			e := startService(t, apptest.Options{Postgres: bk.postgres})
			ctx := apptest.Context(t, 60*time.Second)
			member := client(e, e.A.Member) // members may read it: they pick identity properties too
			other := client(e, e.B.Member)
			if _, err := other.UpsertUsers(ctx, &segmentsyncv1.UpsertUsersRequest{Users: []*segmentsyncv1.User{
				{UserId: "b1", Properties: props("otherEnvOnly", str("x"))},
			}}); err != nil {
				t.Fatal(err)
			}
			for _, st := range steps {
				if len(st.users) > 0 {
					if _, err := member.UpsertUsers(ctx, &segmentsyncv1.UpsertUsersRequest{Users: st.users}); err != nil {
						t.Fatalf("%s: %v", st.name, err)
					}
				}
				if st.del != "" {
					if _, err := member.DeleteUser(ctx, &segmentsyncv1.DeleteUserRequest{UserId: st.del}); err != nil {
						t.Fatalf("%s: %v", st.name, err)
					}
				}
				got, err := member.ListUserProperties(ctx, &segmentsyncv1.ListUserPropertiesRequest{})
				if err != nil {
					t.Fatalf("%s: %v", st.name, err)
				}
				if got.GetTruncated() {
					t.Errorf("%s: truncated with %d properties", st.name, len(got.GetProperties()))
				}
				seen := want{}
				var prev uint64 = 1 << 63
				for _, p := range got.GetProperties() {
					key := p.GetName() + "/" + p.GetType().String()[len("PROPERTY_TYPE_"):]
					seen[key] = p.GetUserCount()
					if p.GetUserCount() > prev {
						t.Errorf("%s: %s (%d users) listed after one with %d: most held must come first", st.name, key, p.GetUserCount(), prev)
					}
					prev = p.GetUserCount()
				}
				if len(seen) != len(st.want) {
					t.Errorf("%s: got %v, want %v", st.name, seen, st.want)
					continue
				}
				for k, n := range st.want {
					if seen[k] != n {
						t.Errorf("%s: %s = %d users, want %d (all: %v)", st.name, k, seen[k], n, seen)
					}
				}
			}
		})
	}
}
