package segmentsync_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	connectorv1 "github.com/seghub/seghub/gen/seghub/connector/v1"
	segmentsyncv1 "github.com/seghub/seghub/gen/seghub/segmentsync/v1"
	"github.com/seghub/seghub/pkg/app/apptest"
	"github.com/seghub/seghub/services/destsim"
)

// cutter stands between seghub and the simulator and cuts a sync run off at
// a chosen batch: it lets a number of segment batches through, then holds
// the next one until seghub gives up on it (its process stops) — either
// before the destination sees it, or after the destination carried it out
// and only the answer is lost.
type cutter struct {
	sim http.Handler

	mu      sync.Mutex
	pass    int // batches still let through; < 0: no cut
	applied bool
	held    chan struct{} // closed once a batch is held
}

func newCutter(sim http.Handler) *cutter { return &cutter{sim: sim, pass: -1} }

// cut arms the cutter; the returned channel closes once a batch is held.
func (c *cutter) cut(pass int, applied bool) <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pass, c.applied, c.held = pass, applied, make(chan struct{})
	return c.held
}

func (c *cutter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	r.Body = io.NopCloser(bytes.NewReader(body))
	batch := r.Method == "POST" && (strings.HasSuffix(r.URL.Path, "/import/profiles") || bytes.Contains(body, []byte(`"segment.users.sync"`)))
	c.mu.Lock()
	if !batch || c.pass != 0 {
		if batch && c.pass > 0 {
			c.pass--
		}
		c.mu.Unlock()
		c.sim.ServeHTTP(w, r)
		return
	}
	applied, held := c.applied, c.held
	c.mu.Unlock()
	if applied {
		c.sim.ServeHTTP(httptest.NewRecorder(), r)
	}
	select {
	case <-held:
	default:
		close(held)
	}
	<-r.Context().Done()
}

// A mirror run cut off after its first batch, after two more, and with a
// batch carried out but its answer lost, resumed each time by a new
// process, leaves the destination holding exactly the segment — against a
// destination that answers a repeated Idempotency-Key from its memory and
// refuses a key reused for other content (Appcues), and against a
// Heap-format receiver that refuses a sync task with two page totals or a
// page number with two contents (webhook).
func TestRunCutOffRepeatedlyEndsExact(t *testing.T) {
	for _, pg := range []bool{false, true} {
		for _, dest := range []string{"appcues", "webhook"} {
			t.Run(map[bool]string{false: "sqlite", true: "postgres"}[pg]+"/"+dest, func(t *testing.T) {
				testRunCutOff(t, pg, dest)
			})
		}
	}
}

func testRunCutOff(t *testing.T, pg bool, dest string) {
	sim := destsim.New(destsim.DemoCredentials())
	cut := newCutter(sim)
	srv := httptest.NewServer(cut)
	defer srv.Close()
	dir := t.TempDir()
	f := startSync(t, syncOpts{postgres: pg, dataDir: dir, sim: sim, simURL: srv.URL})
	keys, dbURL := f.e.A, f.e.Config.DatabaseURL
	ctx := apptest.Context(t, 240*time.Second)

	var conn string
	if dest == "appcues" {
		conn = f.appcues(t, ctx, "Appcues")
	} else {
		r, err := f.conn.CreateConnection(ctx, &connectorv1.CreateConnectionRequest{Type: "webhook", Name: "Heap-format receiver",
			Credentials: map[string]string{"url": srv.URL + "/hooks/seghub"}})
		if err != nil {
			t.Fatal(err)
		}
		conn = r.GetConnection().GetConnectionId()
	}
	// Users u0..u10999 with an identity; the segment first holds u0..u5999.
	seg := f.segment(t, ctx, "Cut", 11000, 11000)
	members := func(from, to int) []string {
		var ids []string
		for i := from; i < to; i++ {
			ids = append(ids, fmt.Sprint("u", i))
		}
		return ids
	}
	if _, err := replace(ctx, f.ss, seg, members(0, 6000), 5000); err != nil {
		t.Fatal(err)
	}
	en, err := f.admin.EnableSync(ctx, &segmentsyncv1.EnableSyncRequest{SegmentId: seg, ConnectionId: conn, Schedule: segmentsyncv1.SyncSchedule_SYNC_SCHEDULE_ONE_TIME})
	if err != nil {
		t.Fatal(err)
	}
	syncID := en.GetSync().GetSyncId()
	if r := f.waitRun(t, ctx, syncID, 1, en.GetRun().GetRunId()); r.GetStatus() != segmentsyncv1.SyncRunStatus_SYNC_RUN_STATUS_SUCCEEDED {
		t.Fatalf("first run = %v", r)
	}

	// held reads who the destination holds, by seghub user id.
	held := func() map[string]bool {
		st := sim.Snapshot()
		out := map[string]bool{}
		if dest == "webhook" {
			if s := st.WebhookSegments["/hooks/seghub"][seg]; s != nil {
				for id := range s.Members {
					out[id] = true
				}
			}
			return out
		}
		for user, p := range st.Appcues["demo"] {
			if p["[seghub] Cut"] == true {
				out["u"+strings.TrimPrefix(user, "ac-")] = true
			}
		}
		return out
	}
	// The segment becomes u3000..u10999: 3 000 removals and 5 000 additions,
	// eight batches of 1 000.
	if _, err := replace(ctx, f.ss, seg, members(3000, 11000), 5000); err != nil {
		t.Fatal(err)
	}
	// Cut off after the first batch, after two more, then with the next
	// batch carried out but its answer lost; each time a new process
	// resumes. The last resumes with the plan the cut-off attempt had.
	cuts := []struct {
		pass    int
		applied bool
	}{{1, false}, {2, false}, {0, true}}
	wait := cut.cut(cuts[0].pass, cuts[0].applied) // armed before the run starts
	now, err := f.admin.SyncNow(ctx, &segmentsyncv1.SyncNowRequest{SyncId: syncID})
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range cuts {
		if i > 0 {
			wait = cut.cut(c.pass, c.applied)
			f = startSync(t, syncOpts{dataDir: dir, dbURL: dbURL, sim: sim, simURL: srv.URL})
		}
		select {
		case <-wait:
		case <-ctx.Done():
			t.Fatalf("cut %d: the run never reached batch %d", i+1, c.pass+1)
		}
		f.e.Stop()
	}
	cut.cut(-1, false)
	f = startSync(t, syncOpts{dataDir: dir, dbURL: dbURL, sim: sim, simURL: srv.URL})
	f.ss = segmentsyncv1.NewSegmentSyncServiceClient(f.e.Dial(keys.Member))
	r := f.waitRun(t, ctx, syncID, 2, now.GetRun().GetRunId())
	if r.GetStatus() != segmentsyncv1.SyncRunStatus_SYNC_RUN_STATUS_SUCCEEDED || r.GetFailed() != 0 {
		t.Fatalf("resumed run = %v", r)
	}
	got, want := held(), map[string]bool{}
	for _, id := range members(3000, 11000) {
		want[id] = true
	}
	var missing, extra []string
	for id := range want {
		if !got[id] {
			missing = append(missing, id)
		}
	}
	for id := range got {
		if !want[id] {
			extra = append(extra, id)
		}
	}
	if len(missing)+len(extra) > 0 {
		t.Fatalf("destination holds %d: %d members missing (e.g. %v), %d non-members held (e.g. %v); counters %v",
			len(got), len(missing), missing[:min(5, len(missing))], len(extra), extra[:min(5, len(extra))], sim.Snapshot().Counters)
	}
	c := sim.Snapshot().Counters
	if c["idempotency_conflicts"]+c["webhook_task_conflicts"] != 0 {
		t.Fatalf("seghub reused a key or a task page for other content: %v", c)
	}
	// The batch whose answer was lost went again under its key (task page).
	if c["idempotent_replays"]+c["webhook_repeated_pages"] == 0 {
		t.Fatalf("the batch carried out before the last cut was not repeated under its key: %v", c)
	}
	t.Logf("run %v; simulator counters %v", r, c)
}

// A run whose worker stops renewing its lease — as a process killed
// outright does — is taken over within seconds by a sweeper, long before
// River would rescue its job (syncengine.RescueAfter, 90 s; waitRun gives
// up after 60 s), and the destination ends exact. Here the lease is made to
// lapse under a live worker holding a batch, which also shows the fencing:
// that worker is cut off and writes nothing more, the takeover resumes
// from the checkpoints.
func TestRunOfAStoppedWorkerIsTakenOver(t *testing.T) {
	for _, pg := range []bool{false, true} {
		t.Run(map[bool]string{false: "sqlite", true: "postgres"}[pg], func(t *testing.T) {
			sim := destsim.New(destsim.DemoCredentials())
			cut := newCutter(sim)
			srv := httptest.NewServer(cut)
			defer srv.Close()
			f := startSync(t, syncOpts{postgres: pg, sim: sim, simURL: srv.URL, wallClock: true, lease: time.Second})
			ctx := apptest.Context(t, 120*time.Second)
			en := heldRun(t, ctx, f, cut, "Lapsed", 5000, 2) // two batches through, the third held
			// The worker "dies": its lease now names a worker long gone.
			res, err := f.e.P.DB.ExecContext(ctx, `UPDATE se_runs SET lease_owner = 'worker_gone', lease_expires_at = 1 WHERE run_id = ?`, en.GetRun().GetRunId())
			if n, _ := res.RowsAffected(); err != nil || n != 1 {
				t.Fatalf("lapsing the lease: %d rows, %v", n, err)
			}
			cut.cut(-1, false)
			r := f.waitRun(t, ctx, en.GetSync().GetSyncId(), 1, en.GetRun().GetRunId())
			if r.GetStatus() != segmentsyncv1.SyncRunStatus_SYNC_RUN_STATUS_SUCCEEDED || r.GetAdded() != 5000 {
				t.Fatalf("taken-over run = %v", r)
			}
			var takeovers int64
			if err := f.e.P.DB.QueryRowContext(ctx, `SELECT takeovers FROM se_runs WHERE run_id = ?`, r.GetRunId()).Scan(&takeovers); err != nil || takeovers < 1 {
				t.Fatalf("takeovers = %d, %v; the run finished without being taken over", takeovers, err)
			}
			n := 0
			for _, p := range sim.Snapshot().Appcues["demo"] {
				if p["[seghub] Lapsed"] == true {
					n++
				}
			}
			if c := sim.Snapshot().Counters; n != 5000 || c["idempotency_conflicts"] != 0 {
				t.Fatalf("destination holds %d of 5000 (counters %v)", n, c)
			}
		})
	}
}

// A second execution of a run whose lease is live in the same process (a
// job rescued late, a duplicate) does not join it: leases name attempts, not
// processes, so only the holder sends and counts.
func TestSecondExecutionInTheSameProcessStandsAside(t *testing.T) {
	sim := destsim.New(destsim.DemoCredentials())
	cut := newCutter(sim)
	srv := httptest.NewServer(cut)
	defer srv.Close()
	f := startSync(t, syncOpts{sim: sim, simURL: srv.URL, wallClock: true})
	ctx := apptest.Context(t, 120*time.Second)
	en := heldRun(t, ctx, f, cut, "Twice", 3000, 1) // one batch through, the second held
	runID := en.GetRun().GetRunId()
	var owner string
	if err := f.e.P.DB.QueryRowContext(ctx, `SELECT lease_owner FROM se_runs WHERE run_id = ?`, runID).Scan(&owner); err != nil || owner == "" {
		t.Fatalf("lease owner %q, %v", owner, err)
	}
	done := make(chan error, 1)
	go func() { done <- f.svc.Engine().Execute(ctx, runID) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("second execution: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("a second execution of a leased run went on with it (it waits on the held batch)")
	}
	var now string
	if err := f.e.P.DB.QueryRowContext(ctx, `SELECT lease_owner FROM se_runs WHERE run_id = ?`, runID).Scan(&now); err != nil || now != owner {
		t.Fatalf("lease owner after the second execution = %q, %v; want the holder's %q", now, err, owner)
	}
	cut.cut(-1, false)
	r := f.waitRun(t, ctx, en.GetSync().GetSyncId(), 1, runID)
	if r.GetStatus() != segmentsyncv1.SyncRunStatus_SYNC_RUN_STATUS_SUCCEEDED || r.GetAdded() != 3000 {
		t.Fatalf("run = %v; want SUCCEEDED with 3000 added", r)
	}
}

// heldRun starts a one-time Appcues sync of a new segment of n members
// ("u0" …) and returns once the run's batch after the first `through` is
// held at the destination's door.
func heldRun(t *testing.T, ctx context.Context, f *syncFixture, cut *cutter, name string, n, through int) *segmentsyncv1.EnableSyncResponse {
	t.Helper()
	conn := f.appcues(t, ctx, "Appcues")
	seg := f.segment(t, ctx, name, n, n)
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprint("u", i)
	}
	if _, err := replace(ctx, f.ss, seg, ids, n); err != nil {
		t.Fatal(err)
	}
	held := cut.cut(through, false)
	en, err := f.admin.EnableSync(ctx, &segmentsyncv1.EnableSyncRequest{SegmentId: seg, ConnectionId: conn, Schedule: segmentsyncv1.SyncSchedule_SYNC_SCHEDULE_ONE_TIME})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-held:
	case <-ctx.Done():
		t.Fatalf("the run never reached batch %d", through+1)
	}
	return en
}
