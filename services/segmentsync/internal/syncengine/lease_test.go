package syncengine

import (
	"context"
	"errors"
	"testing"
	"time"

	pkgstore "github.com/seghub/seghub/pkg/store"
)

// A run's lease: one live owner at a time; a lapsed lease is claimed by one
// sweeper for one takeover, which may acquire it at once; the old owner can
// neither renew nor write the run's progress any more; an unused takeover
// reservation lapses and is claimed again under the next number.
func TestRunLeaseTakeoverAndFencing(t *testing.T) {
	eachStore(t, func(t *testing.T, ctx context.Context, db *pkgstore.DB, st *Store) {
		t0 := time.Unix(1_700_000_000, 0)
		ttl := 10 * time.Second
		r := &Run{ID: "run_1", SyncID: "sync_1", Env: "env", Trigger: TriggerManual, Status: StatusQueued, Created: t0}
		if err := st.CreateRun(ctx, r); err != nil {
			t.Fatal(err)
		}
		acquire := func(owner string, at time.Time, want bool) {
			t.Helper()
			if ok, err := st.AcquireLease(ctx, r.ID, owner, at, ttl); err != nil || ok != want {
				t.Fatalf("AcquireLease(%s, +%v) = %v, %v; want %v", owner, at.Sub(t0), ok, err, want)
			}
		}
		claim := func(at time.Time, want int64) {
			t.Helper()
			got, err := st.ClaimLapsed(ctx, at, ttl, 10)
			if err != nil {
				t.Fatal(err)
			}
			if want == 0 && len(got) != 0 || want != 0 && (len(got) != 1 || got[0].ID != r.ID || got[0].Takeover != want) {
				t.Fatalf("ClaimLapsed(+%v) = %+v; want takeover %d", at.Sub(t0), got, want)
			}
		}

		acquire("a", t0, true)
		r.Status, r.LeaseOwner = StatusRunning, "a"
		if err := st.UpdateRun(ctx, r); err != nil {
			t.Fatalf("the owner's write: %v", err)
		}
		acquire("b", t0.Add(time.Second), false) // a's lease is live
		claim(t0.Add(5*time.Second), 0)          // nothing lapsed
		if ok, err := st.RenewLease(ctx, r.ID, "a", t0.Add(5*time.Second), ttl); err != nil || !ok {
			t.Fatalf("renewal by the owner = %v, %v", ok, err)
		}
		claim(t0.Add(14*time.Second), 0) // renewed until +15 s

		// a dies: its lease lapses and one sweeper claims it.
		claim(t0.Add(16*time.Second), 1)
		claim(t0.Add(16*time.Second), 0) // the reservation holds it
		if ok, _ := st.RenewLease(ctx, r.ID, "a", t0.Add(16*time.Second), ttl); ok {
			t.Fatal("the old owner renewed a lease that was taken over")
		}
		r.Added = 99
		if err := st.UpdateRun(ctx, r); !errors.Is(err, errLeaseLost) {
			t.Fatalf("the old owner's write after the takeover = %v; want errLeaseLost", err)
		}
		if err := st.Checkpoint(ctx, r.SyncID, Ack{Added: map[uint32]HeldIdentity{7: {UserID: "u7", Identity: "ac-7"}}}, r); !errors.Is(err, errLeaseLost) {
			t.Fatalf("the old owner's checkpoint after the takeover = %v; want errLeaseLost", err)
		}
		if d, err := st.Delivered(ctx, r.SyncID); err != nil || len(d) != 0 {
			t.Fatalf("a fenced checkpoint recorded deliveries: %v, %v", d, err)
		}
		if got, _ := st.GetRun(ctx, r.ID); got.Added != 0 {
			t.Fatalf("a fenced write changed the run: added = %d", got.Added)
		}

		// The takeover job is never started: its reservation lapses too.
		claim(t0.Add(27*time.Second), 2)
		acquire("c", t0.Add(27*time.Second), true) // the reservation is free to take
		r.LeaseOwner = "c"
		if err := st.UpdateRun(ctx, r); err != nil {
			t.Fatalf("the new owner's write: %v", err)
		}
		acquire("a", t0.Add(28*time.Second), false)
		if err := st.ReleaseLease(ctx, r.ID, "c"); err != nil {
			t.Fatal(err)
		}
		acquire("d", t0.Add(28*time.Second), true) // released: no wait
		// A finished run is neither acquired nor swept.
		r.Status, r.LeaseOwner = StatusSucceeded, "d"
		if err := st.UpdateRun(ctx, r); err != nil {
			t.Fatal(err)
		}
		claim(t0.Add(time.Hour), 0)
		acquire("e", t0.Add(time.Hour), false)
	})
}
