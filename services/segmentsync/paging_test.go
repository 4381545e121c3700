package segmentsync_test

import (
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	segmentsyncv1 "github.com/seghub/seghub/gen/seghub/segmentsync/v1"
	"github.com/seghub/seghub/pkg/app/apptest"
)

// pages walks a list by page_size 2 and returns every item's id in order;
// the list call gets the page token and returns ids and the next token.
func pages(t *testing.T, list func(token string) ([]string, string, error)) []string {
	t.Helper()
	var all []string
	token := ""
	for n := 0; ; n++ {
		ids, next, err := list(token)
		if err != nil {
			t.Fatal(err)
		}
		if len(ids) > 2 || (next != "" && len(ids) != 2) {
			t.Fatalf("page %d holds %d items (next %q)", n, len(ids), next)
		}
		all = append(all, ids...)
		if next == "" {
			return all
		}
		token = next
	}
}

func unique(t *testing.T, what string, ids []string, want int) {
	t.Helper()
	seen := map[string]bool{}
	for _, id := range ids {
		if seen[id] {
			t.Fatalf("%s: %s listed twice in %v", what, id, ids)
		}
		seen[id] = true
	}
	if len(ids) != want {
		t.Fatalf("%s: %d items, want %d: %v", what, len(ids), want, ids)
	}
}

func TestSyncListsPage(t *testing.T) {
	f := startSync(t, syncOpts{})
	ctx := apptest.Context(t, 120*time.Second)
	conn := f.appcues(t, ctx, "Appcues")
	var syncIDs []string
	for i := range 5 {
		seg := f.segment(t, ctx, fmt.Sprint("Paged ", i), 2, 2)
		en, err := f.admin.EnableSync(ctx, &segmentsyncv1.EnableSyncRequest{SegmentId: seg, ConnectionId: conn, Schedule: segmentsyncv1.SyncSchedule_SYNC_SCHEDULE_ONE_TIME})
		if err != nil {
			t.Fatal(err)
		}
		f.waitRun(t, ctx, en.GetSync().GetSyncId(), 1, en.GetRun().GetRunId())
		syncIDs = append(syncIDs, en.GetSync().GetSyncId())
	}
	got := pages(t, func(tok string) ([]string, string, error) {
		r, err := f.ss.ListSyncs(ctx, &segmentsyncv1.ListSyncsRequest{ConnectionId: conn, PageSize: 2, PageToken: tok})
		var ids []string
		for _, s := range r.GetSyncs() {
			ids = append(ids, s.GetSyncId())
		}
		return ids, r.GetNextPageToken(), err
	})
	unique(t, "syncs", got, 5)
	one, err := f.ss.ListSyncs(ctx, &segmentsyncv1.ListSyncsRequest{ConnectionId: conn})
	var want []string
	for _, s := range one.GetSyncs() {
		want = append(want, s.GetSyncId())
	}
	if err != nil || one.GetNextPageToken() != "" || fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("pages %v; one default page %v (%v)", got, want, err)
	}

	// Runs, newest first, across pages.
	sync := syncIDs[0]
	for range 4 {
		r, err := f.admin.SyncNow(ctx, &segmentsyncv1.SyncNowRequest{SyncId: sync})
		if err != nil {
			t.Fatal(err)
		}
		f.waitRun(t, ctx, sync, 1, r.GetRun().GetRunId())
	}
	runs := pages(t, func(tok string) ([]string, string, error) {
		r, err := f.ss.ListSyncRuns(ctx, &segmentsyncv1.ListSyncRunsRequest{SyncId: sync, PageSize: 2, PageToken: tok})
		var ids []string
		for _, x := range r.GetRuns() {
			ids = append(ids, x.GetRunId())
		}
		return ids, r.GetNextPageToken(), err
	})
	unique(t, "runs", runs, 5)
	all, err := f.ss.ListSyncRuns(ctx, &segmentsyncv1.ListSyncRunsRequest{SyncId: sync})
	if err != nil || len(all.GetRuns()) != 5 || all.GetNextPageToken() != "" || all.GetRuns()[0].GetRunId() != runs[0] {
		t.Fatalf("one default page: %v %v", all, err)
	}

	for name, call := range map[string]func() error{
		"syncs": func() error {
			_, err := f.ss.ListSyncs(ctx, &segmentsyncv1.ListSyncsRequest{PageToken: "garbage"})
			return err
		},
		"runs": func() error {
			_, err := f.ss.ListSyncRuns(ctx, &segmentsyncv1.ListSyncRunsRequest{SyncId: sync, PageToken: "garbage"})
			return err
		},
	} {
		if err := call(); status.Code(err) != codes.InvalidArgument {
			t.Errorf("%s with a garbage token: %v", name, err)
		}
	}
}

func TestInboundTasksPage(t *testing.T) {
	f := startSync(t, syncOpts{})
	ctx := apptest.Context(t, 60*time.Second)
	h := f.heapSource(t, ctx, "")
	for i := range 5 {
		h.post(t, ctx, heapPage{segmentID: "ext-1", segmentName: "Heap: paged", task: fmt.Sprint("task-", i), page: 1, total: 1, add: []string{fmt.Sprint("u", i)}})
	}
	got := pages(t, func(tok string) ([]string, string, error) {
		r, err := f.ss.ListInboundSyncTasks(ctx, &segmentsyncv1.ListInboundSyncTasksRequest{ConnectionId: h.id, PageSize: 2, PageToken: tok})
		var ids []string
		for _, x := range r.GetTasks() {
			ids = append(ids, x.GetSyncTaskId())
		}
		return ids, r.GetNextPageToken(), err
	})
	unique(t, "tasks", got, 5)
	if got[0] != "task-4" || got[4] != "task-0" {
		t.Fatalf("tasks %v, want newest first", got)
	}
	_, err := f.ss.ListInboundSyncTasks(ctx, &segmentsyncv1.ListInboundSyncTasksRequest{ConnectionId: h.id, PageToken: "garbage"})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("garbage token: %v", err)
	}
}
