package segmentsync_test

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	connectorv1 "github.com/seghub/seghub/gen/seghub/connector/v1"
	segmentsyncv1 "github.com/seghub/seghub/gen/seghub/segmentsync/v1"
	"github.com/seghub/seghub/pkg/app/apptest"
)

// The Appcues property is "<prefix> <name>" with the connection's prefix
// ("[Heap]" for rules built on Heap's integration), frozen with the name at
// the first run: changing the setting later keeps delivering to the live
// property; only start_over takes the new prefix.
func TestPropertyPrefixFrozenWithName(t *testing.T) {
	for _, pg := range []bool{false, true} {
		t.Run(map[bool]string{false: "sqlite", true: "postgres"}[pg], func(t *testing.T) {
			f := startSync(t, syncOpts{postgres: pg})
			ctx := apptest.Context(t, 120*time.Second)
			creds := map[string]string{"account_id": "demo", "api_key": "demo-key", "api_secret": "demo-secret"}

			types, err := f.conn.ListDestinationTypes(ctx, &connectorv1.ListDestinationTypesRequest{})
			if err != nil {
				t.Fatal(err)
			}
			for _, ty := range types.GetTypes() {
				if want := map[string]string{"appcues": "[seghub]"}[ty.GetType()]; ty.GetDefaultPropertyPrefix() != want {
					t.Errorf("catalogue: %s default prefix %q, want %q", ty.GetType(), ty.GetDefaultPropertyPrefix(), want)
				}
			}
			for _, bad := range []string{"Heap", "[Heap", "[]", "[ Heap]", "[He]ap]", "[He\nap]", "[" + strings.Repeat("x", 40) + "]"} {
				_, err := f.conn.CreateConnection(ctx, &connectorv1.CreateConnectionRequest{Type: "appcues", Name: "Bad", Credentials: creds,
					Settings: &connectorv1.ConnectionSettings{PropertyPrefix: bad}})
				if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "property_prefix") {
					t.Errorf("prefix %q: %v, want InvalidArgument naming property_prefix", bad, err)
				}
			}
			_, err = f.conn.CreateConnection(ctx, &connectorv1.CreateConnectionRequest{Type: "webhook", Name: "Hook", Credentials: map[string]string{"url": "https://example.com/hook"},
				Settings: &connectorv1.ConnectionSettings{PropertyPrefix: "[Heap]"}})
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "property_prefix") {
				t.Errorf("a prefix on a webhook connection: %v, want InvalidArgument", err)
			}
			plain, err := f.conn.CreateConnection(ctx, &connectorv1.CreateConnectionRequest{Type: "appcues", Name: "Default", Credentials: creds})
			if err != nil || plain.GetConnection().GetSettings().GetPropertyPrefix() != "[seghub]" {
				t.Fatalf("default prefix on the connection: %v, %v", plain.GetConnection().GetSettings(), err)
			}

			c, err := f.conn.CreateConnection(ctx, &connectorv1.CreateConnectionRequest{Type: "appcues", Name: "Appcues", Credentials: creds,
				Settings: &connectorv1.ConnectionSettings{IdentityProperty: "appcuesUserID", PropertyPrefix: "[Heap]"}})
			if err != nil {
				t.Fatal(err)
			}
			conn := c.GetConnection().GetConnectionId()
			if got := c.GetConnection().GetSettings().GetPropertyPrefix(); got != "[Heap]" {
				t.Fatalf("connection shows prefix %q", got)
			}
			seg := f.segment(t, ctx, "Trial", 10, 10)
			enable := &segmentsyncv1.EnableSyncRequest{SegmentId: seg, ConnectionId: conn, Schedule: segmentsyncv1.SyncSchedule_SYNC_SCHEDULE_ONE_TIME}
			en, err := f.admin.EnableSync(ctx, enable)
			if err != nil {
				t.Fatal(err)
			}
			syncID := en.GetSync().GetSyncId()
			if r := f.waitRun(t, ctx, syncID, 1, en.GetRun().GetRunId()); r.GetAdded() != 10 {
				t.Fatalf("first run = %v", r)
			}
			if got := f.appcuesMembers("[Heap] Trial"); len(got) != 10 {
				t.Fatalf("[Heap] Trial holds %d members, want 10", len(got))
			}

			_, err = f.conn.UpdateConnection(ctx, &connectorv1.UpdateConnectionRequest{ConnectionId: conn,
				Settings: &connectorv1.ConnectionSettings{IdentityProperty: "appcuesUserID", PropertyPrefix: "Heap]"}})
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "property_prefix") {
				t.Errorf("updating to prefix \"Heap]\": %v, want InvalidArgument", err)
			}
			// A later change of the setting leaves the live property in place.
			if _, err := f.conn.UpdateConnection(ctx, &connectorv1.UpdateConnectionRequest{ConnectionId: conn,
				Settings: &connectorv1.ConnectionSettings{IdentityProperty: "appcuesUserID", PropertyPrefix: "[Other]"}}); err != nil {
				t.Fatal(err)
			}
			if _, err := f.ss.RemoveMembers(ctx, &segmentsyncv1.RemoveMembersRequest{SegmentId: seg, UserIds: []string{"u0"}}); err != nil {
				t.Fatal(err)
			}
			now, err := f.admin.SyncNow(ctx, &segmentsyncv1.SyncNowRequest{SyncId: syncID})
			if err != nil {
				t.Fatal(err)
			}
			if r := f.waitRun(t, ctx, syncID, 2, now.GetRun().GetRunId()); r.GetRemoved() != 1 {
				t.Fatalf("run after the prefix changed = %v", r)
			}
			if got := f.appcuesMembers("[Heap] Trial"); len(got) != 9 || got["ac-0"] {
				t.Fatalf("[Heap] Trial after the change = %v, want 9 without ac-0", got)
			}
			if got := f.appcuesMembers("[Other] Trial"); len(got) != 0 {
				t.Fatalf("a second property [Other] Trial appeared with %d members", len(got))
			}
			g, _ := f.ss.GetSync(ctx, &segmentsyncv1.GetSyncRequest{SyncId: syncID})
			if g.GetSync().GetFrozenPropertyPrefix() != "[Heap]" || g.GetSync().GetFrozenDisplayName() != "Trial" {
				t.Fatalf("sync = %v", g.GetSync())
			}

			// start_over freezes the current setting.
			enable.StartOver = true
			over, err := f.admin.EnableSync(ctx, enable)
			if err != nil {
				t.Fatal(err)
			}
			if r := f.waitRun(t, ctx, syncID, 3, over.GetRun().GetRunId()); r.GetAdded() != 9 {
				t.Fatalf("start-over run = %v", r)
			}
			g, _ = f.ss.GetSync(ctx, &segmentsyncv1.GetSyncRequest{SyncId: syncID})
			if g.GetSync().GetFrozenPropertyPrefix() != "[Other]" || len(f.appcuesMembers("[Other] Trial")) != 9 {
				t.Fatalf("after start over: sync %v", g.GetSync())
			}
		})
	}
}
