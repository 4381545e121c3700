package segmentsync_test

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	segmentsyncv1 "github.com/seghub/seghub/gen/seghub/segmentsync/v1"
	"github.com/seghub/seghub/pkg/app/apptest"
	"github.com/seghub/seghub/pkg/destinations"
)

// As a Heap-format receiver seghub holds a page number to one content: a
// page repeated with the same users (in any order) changes nothing, one
// repeated with other users is refused, not dropped as a repeat, so the
// sender learns that those users were not taken.
func TestInboundPageNumberNamesOneContent(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			f := startSync(t, syncOpts{postgres: b.postgres})
			ctx := apptest.Context(t, 60*time.Second)
			heap := f.heapSource(t, ctx, "")
			page1 := heapPage{segmentID: "heap-9", segmentName: "Heap: Cut", task: "task-1", page: 1, total: 2, add: []string{"u1", "u2"}}
			heap.post(t, ctx, page1)
			heap.post(t, ctx, heapPage{segmentID: "heap-9", segmentName: "Heap: Cut", task: "task-1", page: 1, total: 2, add: []string{"u2", "u1"}})

			other := heapPage{segmentID: "heap-9", segmentName: "Heap: Cut", task: "task-1", page: 1, total: 2, add: []string{"u1", "u9"}}
			body := other.body()
			_, err := heap.system.ReceiveSegmentWebhook(ctx, &segmentsyncv1.ReceiveSegmentWebhookRequest{ConnectionId: heap.id, Signature: destinations.Sign(heap.secret, time.Now(), body), Body: body})
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "page 1 of task task-1 was received before with other users") {
				t.Fatalf("page 1 again with other users: %v, want InvalidArgument naming the page", err)
			}

			r := heap.post(t, ctx, heapPage{segmentID: "heap-9", segmentName: "Heap: Cut", task: "task-1", page: 2, total: 2, add: []string{"u3"}})
			if !r.GetApplied() || r.GetPagesReceived() != 2 {
				t.Fatalf("task-1 = %v, want applied with 2 pages", r)
			}
			if got := f.memberIDs(t, ctx, r.GetSegmentId()); got != "u1,u2,u3" {
				t.Fatalf("members = %s, want u1,u2,u3", got)
			}
		})
	}
}
