package syncengine

import (
	"context"
	"errors"
	"time"

	"github.com/seghub/seghub/pkg/ids"
)

// Run leases. A worker executing a run holds its lease and renews it every
// LeaseTTL/5; writes of the run's progress are fenced by it, so a worker that
// lost its lease (paused past the TTL) changes nothing. Every process sweeps
// for running runs whose lease lapsed — their worker died — and queues a
// takeover job at once, so a crashed run resumes within LeaseTTL plus a
// sweep, not after River's rescue of the dead job (RescueAfter). The dead job,
// rescued later, finds the run finished or leased and ends.

// errLeaseLost cuts off a worker whose run was taken over.
var errLeaseLost = errors.New("the run's lease was taken over by another worker")

// LeaseTTL and SweepInterval are the defaults of Options.LeaseTTL and
// Options.SweepInterval.
const (
	LeaseTTL      = 10 * time.Second
	SweepInterval = 2 * time.Second
)

// newOwner names this engine's worker in lease rows.
func newOwner() string { return ids.New("worker") }

// AcquireLease gives run id to owner unless another owner's lease is live.
// A takeover reservation (no owner, see ClaimLapsed) may be acquired at once.
func (st *Store) AcquireLease(ctx context.Context, id, owner string, now time.Time, ttl time.Duration) (bool, error) {
	res, err := st.db.ExecContext(ctx, `UPDATE se_runs SET lease_owner = ?, lease_expires_at = ? WHERE run_id = ? AND status IN (?, ?) AND (lease_owner = '' OR lease_owner = ? OR lease_expires_at < ?)`,
		owner, us(now.Add(ttl)), id, StatusQueued, StatusRunning, owner, us(now))
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// RenewLease extends owner's lease; false when the lease is no longer owner's.
func (st *Store) RenewLease(ctx context.Context, id, owner string, now time.Time, ttl time.Duration) (bool, error) {
	res, err := st.db.ExecContext(ctx, `UPDATE se_runs SET lease_expires_at = ? WHERE run_id = ? AND lease_owner = ?`, us(now.Add(ttl)), id, owner)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// ReleaseLease gives up owner's lease, so a retry needs not wait for it.
func (st *Store) ReleaseLease(ctx context.Context, id, owner string) error {
	_, err := st.db.ExecContext(ctx, `UPDATE se_runs SET lease_owner = '', lease_expires_at = 0 WHERE run_id = ? AND lease_owner = ?`, id, owner)
	return err
}

// LapsedRun is a running run whose lease lapsed.
type LapsedRun struct {
	ID, SyncID, Env string
	Takeover        int64 // this takeover's number, naming its job
}

// ClaimLapsed reserves up to limit running runs whose lease lapsed before now
// for a takeover: each loses its owner and is held for ttl, so the takeover
// job acquires it at once and no other sweeper claims it meanwhile; if the
// job is never queued (the sweeper died), the reservation lapses in turn.
func (st *Store) ClaimLapsed(ctx context.Context, now time.Time, ttl time.Duration, limit int) ([]LapsedRun, error) {
	type row struct {
		LapsedRun
		owner   string
		expires int64
	}
	var rows []row
	q, err := st.db.QueryContext(ctx, `SELECT run_id, sync_id, environment_id, takeovers, lease_owner, lease_expires_at FROM se_runs WHERE status = ? AND lease_expires_at < ? ORDER BY lease_expires_at LIMIT ?`, StatusRunning, us(now), limit)
	if err != nil {
		return nil, err
	}
	for q.Next() {
		var r row
		if err := q.Scan(&r.ID, &r.SyncID, &r.Env, &r.Takeover, &r.owner, &r.expires); err != nil {
			q.Close()
			return nil, err
		}
		rows = append(rows, r)
	}
	if err := q.Close(); err != nil {
		return nil, err
	}
	var claimed []LapsedRun
	for _, r := range rows {
		// Compare-and-swap on what was read: of two sweepers, one claims.
		res, err := st.db.ExecContext(ctx, `UPDATE se_runs SET lease_owner = '', lease_expires_at = ?, takeovers = takeovers + 1 WHERE run_id = ? AND status = ? AND lease_owner = ? AND lease_expires_at = ? AND takeovers = ?`,
			us(now.Add(ttl)), r.ID, StatusRunning, r.owner, r.expires, r.Takeover)
		if err != nil {
			return claimed, err
		}
		if n, err := res.RowsAffected(); err != nil {
			return claimed, err
		} else if n == 1 {
			r.Takeover++
			claimed = append(claimed, r.LapsedRun)
		}
	}
	return claimed, nil
}

// holdLease renews owner's lease on run id until ctx ends; when the lease is
// lost (taken over) or cannot be renewed before it lapses, it cancels the
// worker's context with errLeaseLost.
func (e *Engine) holdLease(ctx context.Context, cancel context.CancelCauseFunc, id, owner string) {
	t := time.NewTicker(e.o.LeaseTTL / 5)
	defer t.Stop()
	renewed := e.o.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := e.o.Now()
		ok, err := e.st.RenewLease(ctx, id, owner, now, e.o.LeaseTTL)
		switch {
		case err == nil && !ok:
			cancel(errLeaseLost)
			return
		case err == nil:
			renewed = now
		case now.Sub(renewed) > e.o.LeaseTTL*4/5:
			// The store has been unreachable for most of the TTL: stop
			// before another worker may take the run over.
			e.o.Logger.Warn("sync run lease could not be renewed", "run", id, "error", err)
			cancel(errLeaseLost)
			return
		}
	}
}

// SweepLapsed queues a takeover job for every running run whose worker died.
func (e *Engine) SweepLapsed(ctx context.Context) (int, error) {
	if e.queue == nil {
		return 0, nil
	}
	runs, err := e.st.ClaimLapsed(ctx, e.o.Now(), e.o.LeaseTTL, 100)
	for _, r := range runs {
		e.o.Logger.Info("taking over a sync run whose worker stopped renewing its lease", "run", r.ID, "sync", r.SyncID, "takeover", r.Takeover)
		if _, qerr := e.queue.Takeover(ctx, r.Env, r.SyncID, r.ID, r.Takeover); qerr != nil {
			err = errors.Join(err, qerr)
		}
	}
	return len(runs), err
}

// sweep runs SweepLapsed every SweepInterval until ctx ends.
func (e *Engine) sweep(ctx context.Context) {
	t := time.NewTicker(e.o.SweepInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if _, err := e.SweepLapsed(ctx); err != nil && ctx.Err() == nil {
			e.o.Logger.Warn("sweeping sync runs with lapsed leases", "error", err)
		}
	}
}

// fenced reports whether a run update by a lease holder changed its row.
func fenced(res interface{ RowsAffected() (int64, error) }) error {
	n, err := res.RowsAffected()
	if err != nil {
		return err
	}
	if n == 0 {
		return errLeaseLost
	}
	return nil
}
