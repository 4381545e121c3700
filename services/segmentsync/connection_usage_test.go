package segmentsync_test

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	connectorv1 "github.com/seghub/seghub/gen/seghub/connector/v1"
	segmentsyncv1 "github.com/seghub/seghub/gen/seghub/segmentsync/v1"
	"github.com/seghub/seghub/pkg/app/apptest"
)

// A connection says how many recurring syncs of its destination type are in
// use in its environment, against the type's limit ("2 of 10"): counted
// across every connection of the type, as the limit is, by segmentsync.
func TestConnectionReportsRecurringSyncsInUse(t *testing.T) {
	f := startSync(t, syncOpts{})
	ctx := apptest.Context(t, 120*time.Second)
	a, b := f.appcues(t, ctx, "Appcues A"), f.appcues(t, ctx, "Appcues B")
	usage := func(id string) (*uint32, uint32) {
		t.Helper()
		g, err := f.conn.GetConnection(ctx, &connectorv1.GetConnectionRequest{ConnectionId: id})
		if err != nil {
			t.Fatal(err)
		}
		return g.GetConnection().RecurringSyncsInUse, g.GetConnection().GetRecurringSyncsLimit()
	}
	if n, limit := usage(a); n == nil || *n != 0 || limit != 10 {
		t.Fatalf("before any sync: in use %v of %d, want 0 of 10", n, limit)
	}
	for i, conn := range []string{a, b} {
		seg := f.segment(t, ctx, "Recurring "+string(rune('A'+i)), 1, 1)
		if _, err := f.admin.EnableSync(ctx, &segmentsyncv1.EnableSyncRequest{SegmentId: seg, ConnectionId: conn, Schedule: segmentsyncv1.SyncSchedule_SYNC_SCHEDULE_RECURRING}); err != nil {
			t.Fatal(err)
		}
	}
	// One-time syncs are unlimited and not counted.
	once := f.segment(t, ctx, "Once", 1, 1)
	if _, err := f.admin.EnableSync(ctx, &segmentsyncv1.EnableSyncRequest{SegmentId: once, ConnectionId: a, Schedule: segmentsyncv1.SyncSchedule_SYNC_SCHEDULE_ONE_TIME}); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{a, b} {
		if n, limit := usage(id); n == nil || *n != 2 || limit != 10 {
			t.Fatalf("GetConnection %s: in use %v of %d, want 2 of 10", id, n, limit)
		}
	}
	list, err := f.conn.ListConnections(ctx, &connectorv1.ListConnectionsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range list.GetConnections() {
		if c.RecurringSyncsInUse == nil || c.GetRecurringSyncsInUse() != 2 || c.GetRecurringSyncsLimit() != 10 {
			t.Fatalf("ListConnections %s: %v of %d, want 2 of 10", c.GetConnectionId(), c.RecurringSyncsInUse, c.GetRecurringSyncsLimit())
		}
	}
	// A source takes no segments: no limit, no count.
	src, err := f.conn.CreateConnection(ctx, &connectorv1.CreateConnectionRequest{Type: "heap", Name: "Heap"})
	if err != nil {
		t.Fatal(err)
	}
	if c := src.GetConnection(); c.RecurringSyncsInUse != nil || c.RecurringSyncsLimit != nil {
		t.Fatalf("a source connection carries recurring syncs %v of %v", c.RecurringSyncsInUse, c.RecurringSyncsLimit)
	}
	// Another environment's count is its own.
	other := connectorv1.NewConnectorServiceClient(f.e.Dial(f.e.B.Admin))
	created, err := other.CreateConnection(ctx, &connectorv1.CreateConnectionRequest{Type: "appcues", Name: "B's Appcues", Credentials: map[string]string{"account_id": "demo", "api_key": "demo-key", "api_secret": "demo-secret"}})
	if err != nil {
		t.Fatal(err)
	}
	if c := created.GetConnection(); c.RecurringSyncsInUse == nil || c.GetRecurringSyncsInUse() != 0 {
		t.Fatalf("environment B's new Appcues connection: in use %v, want 0", c.RecurringSyncsInUse)
	}
}

// A connection's identity property follows EnableSync's rule: user_id and the
// type's own property always, any other only if some user holds it; an
// unknown one is InvalidArgument on settings.identity_property with the same
// words and close matches EnableSync gives. Sources are not checked: they
// match incoming ids on it.
func TestConnectionIdentityPropertyValidated(t *testing.T) {
	f := startSync(t, syncOpts{})
	ctx := apptest.Context(t, 120*time.Second)
	creds := map[string]string{"account_id": "demo", "api_key": "demo-key", "api_secret": "demo-secret"}
	violation := func(err error) string {
		t.Helper()
		if status.Code(err) != codes.InvalidArgument {
			t.Fatalf("got %v, want InvalidArgument", err)
		}
		for _, d := range status.Convert(err).Details() {
			if br, ok := d.(*errdetails.BadRequest); ok && len(br.GetFieldViolations()) == 1 {
				return br.GetFieldViolations()[0].GetField() + ": " + br.GetFieldViolations()[0].GetDescription()
			}
		}
		t.Fatalf("%v carries no field violation", err)
		return ""
	}
	// Nobody holds "email" yet.
	_, err := f.conn.CreateConnection(ctx, &connectorv1.CreateConnectionRequest{Type: "appcues", Name: "By email", Credentials: creds, Settings: &connectorv1.ConnectionSettings{IdentityProperty: "email"}})
	if v := violation(err); !strings.HasPrefix(v, "settings.identity_property: ") || !strings.Contains(v, `no user holds property "email"`) {
		t.Fatalf("create on a property nobody holds: %s", v)
	}
	seg := f.segment(t, ctx, "Trial", 2, 2)
	if _, err := f.ss.UpsertUsers(ctx, &segmentsyncv1.UpsertUsersRequest{Users: []*segmentsyncv1.User{{UserId: "u0", Properties: map[string]*segmentsyncv1.PropertyValue{
		"email": {Kind: &segmentsyncv1.PropertyValue_StringValue{StringValue: "u0@example.com"}}}}}}); err != nil {
		t.Fatal(err)
	}
	// A typo is refused with the close match, in EnableSync's words.
	_, err = f.conn.CreateConnection(ctx, &connectorv1.CreateConnectionRequest{Type: "appcues", Name: "By emial", Credentials: creds, Settings: &connectorv1.ConnectionSettings{IdentityProperty: "emial"}})
	created := violation(err)
	if !strings.Contains(created, `did you mean "email"?`) {
		t.Fatalf("create on a typo: %s; want the close match", created)
	}
	plain := f.appcues(t, ctx, "Appcues")
	_, err = f.admin.EnableSync(ctx, &segmentsyncv1.EnableSyncRequest{SegmentId: seg, ConnectionId: plain, IdentityProperty: "emial", Schedule: segmentsyncv1.SyncSchedule_SYNC_SCHEDULE_ONE_TIME})
	if enabled := violation(err); strings.TrimPrefix(enabled, "identity_property: ") != strings.TrimPrefix(created, "settings.identity_property: ") {
		t.Fatalf("connection and EnableSync refuse differently:\n%s\n%s", created, enabled)
	}
	_, err = f.conn.UpdateConnection(ctx, &connectorv1.UpdateConnectionRequest{ConnectionId: plain, Settings: &connectorv1.ConnectionSettings{IdentityProperty: "Email"}})
	if v := violation(err); !strings.HasPrefix(v, "settings.identity_property: ") || !strings.Contains(v, `did you mean "email"?`) {
		t.Fatalf("update to a wrong case: %s", v)
	}
	g, _ := f.conn.GetConnection(ctx, &connectorv1.GetConnectionRequest{ConnectionId: plain})
	if got := g.GetConnection().GetSettings().GetIdentityProperty(); got != "appcuesUserID" {
		t.Fatalf("a refused update changed the identity property to %q", got)
	}
	// Held, user_id and the type's own are accepted.
	for _, prop := range []string{"email", "user_id", "appcuesUserID"} {
		if _, err := f.conn.UpdateConnection(ctx, &connectorv1.UpdateConnectionRequest{ConnectionId: plain, Settings: &connectorv1.ConnectionSettings{IdentityProperty: prop}}); err != nil {
			t.Fatalf("update to %q: %v", prop, err)
		}
	}
	ab, err := f.conn.CreateConnection(ctx, &connectorv1.CreateConnectionRequest{Type: "appcues", Name: "By email", Credentials: creds, Settings: &connectorv1.ConnectionSettings{IdentityProperty: "email"}})
	if err != nil {
		t.Fatalf("create on a held property: %v", err)
	}
	// Its last holder leaving does not block other setting changes.
	if _, err := f.ss.DeleteUser(ctx, &segmentsyncv1.DeleteUserRequest{UserId: "u0"}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.conn.UpdateConnection(ctx, &connectorv1.UpdateConnectionRequest{ConnectionId: ab.GetConnection().GetConnectionId(), Settings: &connectorv1.ConnectionSettings{IdentityProperty: "email", SendEvents: true}}); err != nil {
		t.Fatalf("unchanged identity property after its holder left: %v", err)
	}
	// A source matches incoming ids on it and may create its holders.
	if _, err := f.conn.CreateConnection(ctx, &connectorv1.CreateConnectionRequest{Type: "segment_webhook", Name: "Heap by crm id", Settings: &connectorv1.ConnectionSettings{IdentityProperty: "crm_id"}}); err != nil {
		t.Fatalf("source on a property nobody holds yet: %v", err)
	}
}
