package segmentsync_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	segmentsyncv1 "github.com/seghub/seghub/gen/seghub/segmentsync/v1"
	"github.com/seghub/seghub/pkg/app/apptest"
)

// runTrace is the recorded trace of one sync run.
type runTrace struct {
	root    sdktrace.ReadOnlySpan
	batches []sdktrace.ReadOnlySpan
}

// traceOf waits for run r's root span to end and returns it with every
// batch span recorded in its trace; batch spans of other traces are counted
// in stray.
func traceOf(t *testing.T, rec *tracetest.SpanRecorder, r *segmentsyncv1.SyncRun) (tr runTrace, stray int) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		tr, stray = runTrace{}, 0
		for _, s := range rec.Ended() {
			if s.Name() == "sync.run" && attrs(s)["run.id"].AsString() == r.GetRunId() {
				tr.root = s
			}
		}
		if tr.root != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no sync.run span for run %s", r.GetRunId())
		}
	}
	for _, s := range rec.Ended() {
		if s.Name() != "sync.batch" {
			continue
		}
		if s.SpanContext().TraceID() == tr.root.SpanContext().TraceID() {
			tr.batches = append(tr.batches, s)
		} else {
			stray++
		}
	}
	return tr, stray
}

func attrs(s sdktrace.ReadOnlySpan) map[attribute.Key]attribute.Value {
	m := map[attribute.Key]attribute.Value{}
	for _, kv := range s.Attributes() {
		m[kv.Key] = kv.Value
	}
	return m
}

// checkRunTrace asserts one root span for the run, carrying its counts,
// and ceil(sent/1000) batch spans under it (Appcues batches hold 1000)
// whose adds and removes sum to the run's.
func checkRunTrace(t *testing.T, tr runTrace, r *segmentsyncv1.SyncRun, added, removed, unmatched int64) {
	t.Helper()
	root := tr.root
	if root.Parent().IsValid() {
		t.Fatalf("sync.run has a parent %v; a run starts its own trace", root.Parent())
	}
	if got := root.SpanContext().TraceID().String(); got != r.GetTraceId() {
		t.Fatalf("run %s records trace %s, its span is in %s", r.GetRunId(), r.GetTraceId(), got)
	}
	a := attrs(root)
	if a["sync.id"].AsString() != r.GetSyncId() || a["destination"].AsString() != "appcues" ||
		a["run.added"].AsInt64() != added || a["run.removed"].AsInt64() != removed || a["run.unmatched"].AsInt64() != unmatched || a["run.failed"].AsInt64() != 0 {
		t.Fatalf("sync.run attributes = %v", root.Attributes())
	}
	if want := int((added + removed + 999) / 1000); len(tr.batches) != want {
		t.Fatalf("%d batch spans in the run's trace, want %d", len(tr.batches), want)
	}
	var adds, removes int64
	pages := map[int64]bool{}
	for _, b := range tr.batches {
		if b.Parent().SpanID() != root.SpanContext().SpanID() {
			t.Fatalf("batch span %v is not a child of the run span", b.Attributes())
		}
		ba := attrs(b)
		n := ba["batch.adds"].AsInt64() + ba["batch.removes"].AsInt64()
		if n < 1 || n > 1000 {
			t.Fatalf("batch of %d identities: %v", n, b.Attributes())
		}
		adds, removes = adds+ba["batch.adds"].AsInt64(), removes+ba["batch.removes"].AsInt64()
		pages[ba["batch.page"].AsInt64()] = true
	}
	for p := 1; p <= len(tr.batches); p++ {
		if !pages[int64(p)] {
			t.Fatalf("no span for batch page %d: %v", p, pages)
		}
	}
	if adds != added || removes != removed {
		t.Fatalf("batch spans carry %d adds and %d removes, the run %d and %d", adds, removes, added, removed)
	}
}

// One trace per run: a root span with the run's counts and a child span per
// batch; a second run is a trace of its own.
func TestRunTracePerRunSpanPerBatch(t *testing.T) {
	f := startSync(t, syncOpts{traced: true})
	rec := tracetest.NewSpanRecorder()
	f.e.P.Telemetry.Tracer.RegisterSpanProcessor(rec)
	ctx := apptest.Context(t, 60*time.Second)
	conn := f.appcues(t, ctx, "Appcues")
	// 2600 members, 2300 with an Appcues id: three batches (1000, 1000, 300).
	seg := f.segment(t, ctx, "Traced", 2600, 2300)
	en, err := f.admin.EnableSync(ctx, &segmentsyncv1.EnableSyncRequest{SegmentId: seg, ConnectionId: conn, Schedule: segmentsyncv1.SyncSchedule_SYNC_SCHEDULE_ONE_TIME})
	if err != nil {
		t.Fatal(err)
	}
	syncID := en.GetSync().GetSyncId()
	r1 := f.waitRun(t, ctx, syncID, 1, en.GetRun().GetRunId())
	if r1.GetAdded() != 2300 || r1.GetUnmatched() != 300 {
		t.Fatalf("first run = %v", r1)
	}
	tr1, stray := traceOf(t, rec, r1)
	if stray != 0 {
		t.Fatalf("%d batch spans outside the run's trace", stray)
	}
	checkRunTrace(t, tr1, r1, 2300, 0, 300)

	// 1500 matched members leave: two removal batches (1000, 500), in a new trace.
	var gone []string
	for i := range 1500 {
		gone = append(gone, fmt.Sprint("u", i))
	}
	if _, err := f.ss.RemoveMembers(ctx, &segmentsyncv1.RemoveMembersRequest{SegmentId: seg, UserIds: gone}); err != nil {
		t.Fatal(err)
	}
	now, err := f.admin.SyncNow(ctx, &segmentsyncv1.SyncNowRequest{SyncId: syncID})
	if err != nil {
		t.Fatal(err)
	}
	r2 := f.waitRun(t, ctx, syncID, 2, now.GetRun().GetRunId())
	tr2, stray := traceOf(t, rec, r2)
	if tr2.root.SpanContext().TraceID() == tr1.root.SpanContext().TraceID() {
		t.Fatal("two runs share one trace")
	}
	if stray != len(tr1.batches) {
		t.Fatalf("%d batch spans outside the two runs' traces", stray-len(tr1.batches))
	}
	checkRunTrace(t, tr2, r2, 0, 1500, 300)
	checkQueuedBy(t, rec, tr2.root, "/SyncNow")
	checkQueuedBy(t, rec, tr1.root, "/EnableSync")
	if got := len(f.appcuesMembers("[seghub] Traced")); got != 800 {
		t.Fatalf("appcues holds %d, want 800", got)
	}
}

// checkQueuedBy asserts that root (a new trace) links to the server span of
// the request (method suffix) that queued its run.
func checkQueuedBy(t *testing.T, rec *tracetest.SpanRecorder, root sdktrace.ReadOnlySpan, method string) {
	t.Helper()
	var req sdktrace.ReadOnlySpan
	for _, s := range rec.Ended() {
		if s.SpanKind() == trace.SpanKindServer && strings.HasSuffix(s.Name(), method) {
			req = s
		}
	}
	if req == nil {
		t.Fatalf("no server span for %s", method)
	}
	if req.SpanContext().TraceID() == root.SpanContext().TraceID() {
		t.Fatalf("the run is in its request's trace; it starts its own")
	}
	for _, l := range root.Links() {
		if l.SpanContext.TraceID() == req.SpanContext().TraceID() && l.SpanContext.SpanID() == req.SpanContext().SpanID() {
			return
		}
	}
	t.Fatalf("sync.run links %v, none to the %s request span %v", root.Links(), method, req.SpanContext())
}
