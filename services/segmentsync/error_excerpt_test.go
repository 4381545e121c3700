package segmentsync_test

import (
	"strings"
	"testing"
	"time"

	connectorv1 "github.com/seghub/seghub/gen/seghub/connector/v1"
	segmentsyncv1 "github.com/seghub/seghub/gen/seghub/segmentsync/v1"
	"github.com/seghub/seghub/pkg/app/apptest"
	"github.com/seghub/seghub/pkg/destinations"
	"github.com/seghub/seghub/services/destsim"
)

// A failing destination's answer reaches the run's error, the sync's
// last_error and the connection's last_error only as a short excerpt: a
// secret-looking marker placed past the excerpt in the simulator's error
// body never appears, while the start of the answer does.
func TestRunErrorsRepeatOnlyAnExcerptOfTheAnswer(t *testing.T) {
	const marker = "sk_live_SEGHUB_MARKER_do_not_echo"
	body := `{"error":"` + strings.Repeat("the destination says no; ", 10) + marker + `"}`
	for _, tc := range []struct {
		name   string
		faults destsim.Faults
		reauth bool
	}{
		{"credentials refused", destsim.Faults{Rate401: 1, ErrorBody: body}, true},
		{"destination failing", destsim.Faults{Rate5xx: 1, ErrorBody: body}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := startSync(t, syncOpts{})
			ctx := apptest.Context(t, 120*time.Second)
			conn := f.appcues(t, ctx, "Appcues")
			seg := f.segment(t, ctx, "Trial users", 5, 5)
			f.sim.SetFaults(tc.faults)
			en, err := f.admin.EnableSync(ctx, &segmentsyncv1.EnableSyncRequest{SegmentId: seg, ConnectionId: conn, Schedule: segmentsyncv1.SyncSchedule_SYNC_SCHEDULE_ONE_TIME})
			if err != nil {
				t.Fatal(err)
			}
			r := f.waitRun(t, ctx, en.GetSync().GetSyncId(), 1, en.GetRun().GetRunId())
			if r.GetStatus() != segmentsyncv1.SyncRunStatus_SYNC_RUN_STATUS_FAILED {
				t.Fatalf("run = %v, want failed", r)
			}
			g, err := f.ss.GetSync(ctx, &segmentsyncv1.GetSyncRequest{SyncId: en.GetSync().GetSyncId()})
			if err != nil {
				t.Fatal(err)
			}
			c, err := f.conn.GetConnection(ctx, &connectorv1.GetConnectionRequest{ConnectionId: conn})
			if err != nil {
				t.Fatal(err)
			}
			texts := map[string]string{"run error": r.GetError(), "sync last_error": g.GetSync().GetLastError()}
			if tc.reauth {
				if c.GetConnection().GetStatus() != connectorv1.ConnectionStatus_CONNECTION_STATUS_NEEDS_REAUTH {
					t.Fatalf("connection = %v, want needs re-authorisation", c.GetConnection())
				}
				texts["connection last_error"] = c.GetConnection().GetLastError()
			}
			for what, s := range texts {
				if strings.Contains(s, "MARKER") || !strings.Contains(s, `{"error":"the destination says no;`) {
					t.Errorf("%s = %q: want the start of the answer and nothing past its excerpt", what, s)
				}
				// The excerpt runs from the answer's first byte to the "…" marking the cut.
				i := strings.Index(s, `{"error"`)
				if n := strings.Index(s[max(i, 0):], "…"); i < 0 || n < 0 || n > destinations.MaxExcerpt {
					t.Errorf("%s = %q: want an excerpt of at most %d bytes ending in …", what, s, destinations.MaxExcerpt)
				}
			}
		})
	}
}
