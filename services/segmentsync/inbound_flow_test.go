package segmentsync_test

import (
	"context"
	"encoding/json"
	"sort"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"

	connectorv1 "github.com/seghub/seghub/gen/seghub/connector/v1"
	segmentsyncv1 "github.com/seghub/seghub/gen/seghub/segmentsync/v1"
	"github.com/seghub/seghub/pkg/app/apptest"
	"github.com/seghub/seghub/pkg/destinations"
)

// heapSource is a heap source connection and a caller of
// ReceiveSegmentWebhook with seghub's internal key, as the gateway calls it.
type heapSource struct {
	id, secret string
	system     segmentsyncv1.SegmentSyncServiceClient
}

func (f *syncFixture) heapSource(t *testing.T, ctx context.Context, identityProperty string) *heapSource {
	t.Helper()
	r, err := f.conn.CreateConnection(ctx, &connectorv1.CreateConnectionRequest{Type: "heap", Name: "Heap production",
		Settings: &connectorv1.ConnectionSettings{IdentityProperty: identityProperty}})
	if err != nil {
		t.Fatal(err)
	}
	if r.GetSigningSecret() == "" {
		t.Fatal("heap connection created without a signing secret")
	}
	return &heapSource{id: r.GetConnection().GetConnectionId(), secret: r.GetSigningSecret(),
		system: segmentsyncv1.NewSegmentSyncServiceClient(f.e.Dial(f.e.P.InternalKey))}
}

// heapPage is one page of a Heap partner-webhook sync task.
type heapPage struct {
	segmentID, segmentName, task string
	page, total                  int
	add, remove                  []string
}

func (p heapPage) body() []byte {
	ids := func(in []string) []map[string]string {
		out := []map[string]string{}
		for _, id := range in {
			out = append(out, map[string]string{"id": id})
		}
		return out
	}
	b, _ := json.Marshal(map[string]any{"id_token": "tok", "action_type": "segment.users.sync", "data": map[string]any{
		"segment":   map[string]any{"id": p.segmentID, "name": p.segmentName},
		"sync_info": map[string]any{"page_number": p.page, "total_pages": p.total, "sync_task_id": p.task},
		"add":       ids(p.add), "remove": ids(p.remove)}})
	return b
}

// post signs a page with the source's secret and delivers it.
func (h *heapSource) post(t *testing.T, ctx context.Context, p heapPage) *segmentsyncv1.ReceiveSegmentWebhookResponse {
	t.Helper()
	b := p.body()
	res, err := h.system.ReceiveSegmentWebhook(ctx, &segmentsyncv1.ReceiveSegmentWebhookRequest{ConnectionId: h.id, Signature: destinations.Sign(h.secret, time.Now(), b), Body: b})
	if err != nil {
		t.Fatalf("task %s page %d: %v", p.task, p.page, err)
	}
	return res
}

func (f *syncFixture) memberIDs(t *testing.T, ctx context.Context, sid string) string {
	t.Helper()
	m, err := f.ss.GetMembers(ctx, &segmentsyncv1.GetMembersRequest{SegmentId: sid, PageSize: 1000})
	if err != nil {
		t.Fatal(err)
	}
	ids := m.GetUserIds()
	sort.Strings(ids)
	return strings.Join(ids, ",")
}

func sortedKeys(m map[string]bool) string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return strings.Join(out, ",")
}

// Issue 8, Deliver 4: membership changed by inbound webhooks flows on to an
// enabled outbound sync like any other change.
func TestInboundChangesFlowToOutboundSync(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			f := startSync(t, syncOpts{postgres: b.postgres})
			ctx := apptest.Context(t, 120*time.Second)
			appcues := f.appcues(t, ctx, "Appcues")
			// Heap ids are matched on appcuesUserID, the property the Appcues
			// sync maps identities from.
			heap := f.heapSource(t, ctx, "appcuesUserID")
			if _, err := f.ss.UpsertUsers(ctx, &segmentsyncv1.UpsertUsersRequest{Users: []*segmentsyncv1.User{
				{UserId: "alice", Properties: map[string]*segmentsyncv1.PropertyValue{"appcuesUserID": str("ac-alice")}}}}); err != nil {
				t.Fatal(err)
			}
			// Only seghub's own components may call ReceiveSegmentWebhook.
			body := heapPage{segmentID: "heap-42", segmentName: "Heap: Power users", task: "task-1", page: 1, total: 1}.body()
			_, err := f.admin.ReceiveSegmentWebhook(ctx, &segmentsyncv1.ReceiveSegmentWebhookRequest{ConnectionId: heap.id, Signature: destinations.Sign(heap.secret, time.Now(), body), Body: body})
			if status.Code(err) != codes.PermissionDenied {
				t.Fatalf("admin key calling ReceiveSegmentWebhook: %v", err)
			}

			// Task 1, two pages: the segment appears when the last arrives.
			task1 := []heapPage{
				{segmentID: "heap-42", segmentName: "Heap: Power users", task: "task-1", page: 2, total: 2, add: []string{"ac-carol"}},
				{segmentID: "heap-42", segmentName: "Heap: Power users", task: "task-1", page: 1, total: 2, add: []string{"ac-alice", "ac-bob"}},
			}
			if r := heap.post(t, ctx, task1[0]); r.GetApplied() {
				t.Fatalf("applied after one of two pages: %v", r)
			}
			r := heap.post(t, ctx, task1[1])
			if !r.GetApplied() || r.GetSegmentId() == "" {
				t.Fatalf("last page of task-1 = %v", r)
			}
			sid := r.GetSegmentId()
			g, err := f.ss.GetSegment(ctx, &segmentsyncv1.GetSegmentRequest{SegmentId: sid})
			if err != nil {
				t.Fatal(err)
			}
			if s := g.GetSegment(); s.GetName() != "Heap: Power users" || s.GetExternalId() != "heap-42" || s.GetVisibility() != segmentsyncv1.Visibility_VISIBILITY_PUBLIC || s.GetMemberCount() != 3 {
				t.Fatalf("inbound segment = %v", s)
			}
			// ac-alice matched the existing user by property; the others are
			// bare users carrying the identity value.
			if got := f.memberIDs(t, ctx, sid); got != "ac-bob,ac-carol,alice" {
				t.Fatalf("members = %s", got)
			}
			u, err := f.ss.GetUser(ctx, &segmentsyncv1.GetUserRequest{UserId: "ac-bob"})
			if err != nil || u.GetUser().GetProperties()["appcuesUserID"].GetStringValue() != "ac-bob" {
				t.Fatalf("bare user ac-bob = %v, %v", u, err)
			}

			en, err := f.admin.EnableSync(ctx, &segmentsyncv1.EnableSyncRequest{SegmentId: sid, ConnectionId: appcues, Schedule: segmentsyncv1.SyncSchedule_SYNC_SCHEDULE_ONE_TIME})
			if err != nil {
				t.Fatal(err)
			}
			syncID := en.GetSync().GetSyncId()
			if en.GetSync().GetMode() != segmentsyncv1.SyncMode_SYNC_MODE_MIRROR {
				t.Fatalf("sync mode = %v, want the MIRROR default", en.GetSync().GetMode())
			}
			run := f.waitRun(t, ctx, syncID, 1, en.GetRun().GetRunId())
			if run.GetStatus() != segmentsyncv1.SyncRunStatus_SYNC_RUN_STATUS_SUCCEEDED || run.GetAdded() != 3 || run.GetUnmatched() != 0 {
				t.Fatalf("first run = %v", run)
			}
			const prop = "[seghub] Heap: Power users"
			if got := sortedKeys(f.appcuesMembers(prop)); got != "ac-alice,ac-bob,ac-carol" {
				t.Fatalf("appcues holds %s", got)
			}

			// Task 2 removes one and adds one; the next run mirrors exactly that.
			r = heap.post(t, ctx, heapPage{segmentID: "heap-42", segmentName: "Heap: Power users", task: "task-2", page: 1, total: 1, add: []string{"ac-dave"}, remove: []string{"ac-alice"}})
			if !r.GetApplied() || r.GetSegmentId() != sid {
				t.Fatalf("task-2 = %v, want applied to %s", r, sid)
			}
			if got := f.memberIDs(t, ctx, sid); got != "ac-bob,ac-carol,ac-dave" {
				t.Fatalf("members after task-2 = %s", got)
			}
			now, err := f.admin.SyncNow(ctx, &segmentsyncv1.SyncNowRequest{SyncId: syncID})
			if err != nil {
				t.Fatal(err)
			}
			run = f.waitRun(t, ctx, syncID, 2, now.GetRun().GetRunId())
			if run.GetStatus() != segmentsyncv1.SyncRunStatus_SYNC_RUN_STATUS_SUCCEEDED || run.GetAdded() != 1 || run.GetRemoved() != 1 {
				t.Fatalf("second run = %v", run)
			}
			if got := sortedKeys(f.appcuesMembers(prop)); got != "ac-bob,ac-carol,ac-dave" {
				t.Fatalf("appcues holds %s after task-2", got)
			}
		})
	}
}

// Issue 8: a page repeated after its task was applied changes neither
// membership nor the segment's version, nor the task's history.
func TestInboundRepeatedPageAfterApplyChangesNothing(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			f := startSync(t, syncOpts{postgres: b.postgres})
			ctx := apptest.Context(t, 60*time.Second)
			heap := f.heapSource(t, ctx, "")
			pages := []heapPage{
				{segmentID: "heap-7", segmentName: "Heap: Trial", task: "task-1", page: 1, total: 2, add: []string{"u1", "u2", "u3"}},
				{segmentID: "heap-7", segmentName: "Heap: Trial", task: "task-1", page: 2, total: 2, add: []string{"u4"}, remove: []string{"never-a-member"}},
			}
			heap.post(t, ctx, pages[0])
			r := heap.post(t, ctx, pages[1])
			if !r.GetApplied() {
				t.Fatalf("task-1 not applied: %v", r)
			}
			sid := r.GetSegmentId()
			before, err := f.ss.GetSegment(ctx, &segmentsyncv1.GetSegmentRequest{SegmentId: sid})
			if err != nil {
				t.Fatal(err)
			}
			members := f.memberIDs(t, ctx, sid)
			if members != "u1,u2,u3,u4" {
				t.Fatalf("members = %s", members)
			}

			// Both pages again, freshly signed (a retrying sender), in reverse order.
			for _, p := range []heapPage{pages[1], pages[0]} {
				again := heap.post(t, ctx, p)
				if !again.GetApplied() || again.GetSegmentId() != sid || again.GetPagesReceived() != 2 {
					t.Fatalf("repeated page %d = %v", p.page, again)
				}
			}
			after, err := f.ss.GetSegment(ctx, &segmentsyncv1.GetSegmentRequest{SegmentId: sid})
			if err != nil {
				t.Fatal(err)
			}
			if after.GetSegment().GetVersion() != before.GetSegment().GetVersion() || after.GetSegment().GetMemberCount() != 4 {
				t.Fatalf("repeated pages changed the segment: version %d → %d, %d members", before.GetSegment().GetVersion(), after.GetSegment().GetVersion(), after.GetSegment().GetMemberCount())
			}
			if got := f.memberIDs(t, ctx, sid); got != members {
				t.Fatalf("members after repeats = %s, want %s", got, members)
			}
			tasks, err := f.ss.ListInboundSyncTasks(ctx, &segmentsyncv1.ListInboundSyncTasksRequest{ConnectionId: heap.id})
			if err != nil {
				t.Fatal(err)
			}
			if len(tasks.GetTasks()) != 1 {
				t.Fatalf("tasks = %v", tasks.GetTasks())
			}
			if tk := tasks.GetTasks()[0]; tk.GetPagesReceived() != 2 || tk.GetAdds() != 4 || tk.GetRemoves() != 0 || !tk.GetApplied() {
				t.Fatalf("task history = %v", tk)
			}
		})
	}
}

// Issue 8, Deliver 1: a source's signing secret is shown once, at creation;
// no later read of the connection returns it.
func TestSourceSigningSecretShownOnce(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			f := startSync(t, syncOpts{postgres: b.postgres})
			ctx := apptest.Context(t, 60*time.Second)
			heap := f.heapSource(t, ctx, "")
			member := connectorv1.NewConnectorServiceClient(f.e.Dial(f.e.A.Member))
			reads := map[string]func() (proto.Message, error){}
			for role, c := range map[string]connectorv1.ConnectorServiceClient{"admin": f.conn, "member": member} {
				reads[role+" GetConnection"] = func() (proto.Message, error) {
					return c.GetConnection(ctx, &connectorv1.GetConnectionRequest{ConnectionId: heap.id})
				}
				reads[role+" ListConnections"] = func() (proto.Message, error) {
					return c.ListConnections(ctx, &connectorv1.ListConnectionsRequest{})
				}
				reads[role+" ListConnections type=heap"] = func() (proto.Message, error) {
					return c.ListConnections(ctx, &connectorv1.ListConnectionsRequest{Type: "heap"})
				}
			}
			reads["admin UpdateConnection"] = func() (proto.Message, error) {
				name := "Heap (renamed)"
				return f.conn.UpdateConnection(ctx, &connectorv1.UpdateConnectionRequest{ConnectionId: heap.id, Name: &name})
			}
			for name, read := range reads {
				m, err := read()
				if err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				text := prototext.Format(m)
				if !strings.Contains(text, heap.id) {
					t.Fatalf("%s does not show the connection: %s", name, text)
				}
				if strings.Contains(text, strings.TrimPrefix(heap.secret, "whsec_")) {
					t.Fatalf("%s returned the signing secret: %s", name, text)
				}
			}
			// The secret checked above is the live one: reads neither leaked nor rotated it.
			r := heap.post(t, ctx, heapPage{segmentID: "heap-1", segmentName: "Heap: Anyone", task: "t", page: 1, total: 1, add: []string{"u1"}})
			if !r.GetApplied() {
				t.Fatalf("webhook signed with the creation-time secret = %v", r)
			}
		})
	}
}
