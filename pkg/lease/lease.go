// Package lease gives a named role to one process of a deployment at a time
// through a row in the shared database: the holder renews it, the others
// stand by and take the role over when the holder gives it up or its lease
// lapses.
package lease

import (
	"cmp"
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/seghub/seghub/pkg/ids"
	"github.com/seghub/seghub/pkg/store"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Migrate creates the leases table.
func Migrate(ctx context.Context, db *store.DB) error {
	sub, _ := fs.Sub(migrations, "migrations")
	return db.Migrate(ctx, "lease", sub)
}

// TTL is the default lease time: a holder that stops renewing is replaced
// about this long after its last renewal.
const TTL = 10 * time.Second

// Acquire takes lease name for holder until now+ttl, or renews it; false
// when another holder's lease has not expired.
func Acquire(ctx context.Context, db *store.DB, name, holder string, now time.Time, ttl time.Duration) (bool, error) {
	res, err := db.ExecContext(ctx, `INSERT INTO leases (name, holder, expires_at) VALUES (?, ?, ?)
		ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
		WHERE leases.holder = excluded.holder OR leases.expires_at < ?`, name, holder, now.Add(ttl).UnixMicro(), now.UnixMicro())
	if err != nil {
		return false, fmt.Errorf("lease: acquire %s: %w", name, err)
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// Renew extends holder's unexpired lease until now+ttl; false when the lease
// lapsed or is another's (the holder must stop at once).
func Renew(ctx context.Context, db *store.DB, name, holder string, now time.Time, ttl time.Duration) (bool, error) {
	res, err := db.ExecContext(ctx, `UPDATE leases SET expires_at = ? WHERE name = ? AND holder = ? AND expires_at >= ?`,
		now.Add(ttl).UnixMicro(), name, holder, now.UnixMicro())
	if err != nil {
		return false, fmt.Errorf("lease: renew %s: %w", name, err)
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// Release gives lease name up if holder has it, so a standby takes over
// without waiting for it to lapse.
func Release(ctx context.Context, db *store.DB, name, holder string) error {
	if _, err := db.ExecContext(ctx, `DELETE FROM leases WHERE name = ? AND holder = ?`, name, holder); err != nil {
		return fmt.Errorf("lease: release %s: %w", name, err)
	}
	return nil
}

// Holder returns who holds lease name at now ("" when no one does).
func Holder(ctx context.Context, db *store.DB, name string, now time.Time) (string, error) {
	var h string
	err := db.QueryRowContext(ctx, `SELECT holder FROM leases WHERE name = ? AND expires_at >= ?`, name, now.UnixMicro()).Scan(&h)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("lease: holder of %s: %w", name, err)
	}
	return h, nil
}

// Options configure a Role.
type Options struct {
	DB *store.DB
	// Name of the lease, e.g. "segmentsync/computed".
	Name string
	// Holder names this process in the lease (default a random id).
	Holder string
	// TTL of the lease (default TTL); it is renewed every fifth of it, and a
	// standby tries to take it as often.
	TTL time.Duration
	// Now is the clock (default time.Now).
	Now    func() time.Time
	Logger *slog.Logger
	// Alone says this process is the whole deployment (its database is an
	// embedded SQLite file): it holds the role without a lease row, so no
	// renewal takes the single writer's lock.
	Alone bool
}

// Role runs work in the one process holding its lease.
type Role struct {
	o    Options
	held atomic.Bool
}

// New returns a role; Run works it.
func New(o Options) *Role {
	if o.Holder == "" {
		o.Holder = ids.New("replica")
	}
	if o.TTL <= 0 {
		o.TTL = TTL
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	o.Logger = o.Logger.With("lease", o.Name, "holder", o.Holder)
	return &Role{o: o}
}

// Holder is this process's name in the lease.
func (r *Role) Holder() string { return r.o.Holder }

// Held tells whether this process holds the lease and runs the work.
func (r *Role) Held() bool { return r.held.Load() }

// Run stands by until this process holds the lease, then runs work with a
// context that ends when the lease is lost, renewing it meanwhile. A lost
// lease (taken over, or not renewed for 3/5 of the TTL) cancels work and
// waits for it to return before standing by again, so work has stopped
// before another process may take the lease. When ctx ends, work is stopped
// and the lease released. Run returns work's error if work returns on its own.
func (r *Role) Run(ctx context.Context, work func(ctx context.Context) error) error {
	if r.o.Alone {
		r.o.Logger.Info("lease: taken; this process runs the work (alone on its database, no lease row)")
		r.held.Store(true)
		defer r.held.Store(false)
		if err := work(ctx); err != nil || ctx.Err() == nil {
			return fmt.Errorf("lease %s: work: %w", r.o.Name, cmp.Or(err, errors.New("stopped on its own")))
		}
		return nil
	}
	every := r.o.TTL / 5
	t := time.NewTicker(every)
	defer t.Stop()
	lastSeen := "-"
	for {
		at := r.o.Now()
		ok, err := r.call(ctx, at.Add(r.o.TTL/5), func(cctx context.Context) (bool, error) {
			return Acquire(cctx, r.o.DB, r.o.Name, r.o.Holder, at, r.o.TTL)
		})
		switch {
		case err != nil && ctx.Err() == nil:
			r.o.Logger.Warn("lease: cannot take the lease", "error", err.Error())
		case err == nil && ok:
			if err := r.hold(ctx, t, at, work); err != nil || ctx.Err() != nil {
				return err
			}
		case err == nil:
			// Who holds it, for the operator reading this replica's logs.
			if h, err := Holder(ctx, r.o.DB, r.o.Name, r.o.Now()); err == nil && h != lastSeen {
				lastSeen = h
				r.o.Logger.Info("lease: standing by; another process holds the lease", "held_by", h)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// errLost ends work whose lease was lost.
var errLost = errors.New("lease lost")

// hold runs work while the lease, taken at renewed, is this process's. It
// returns nil when the lease is lost (to stand by again) or ctx ends, and
// work's error if work returned on its own.
func (r *Role) hold(ctx context.Context, t *time.Ticker, renewed time.Time, work func(ctx context.Context) error) error {
	r.o.Logger.Info("lease: taken; this process runs the work")
	wctx, cancel := context.WithCancelCause(ctx)
	done := make(chan error, 1)
	r.held.Store(true)
	go func() { done <- work(wctx) }()
	stop := func(cause error) {
		cancel(cause)
		<-done
		r.held.Store(false)
	}
	// Given back at once, so a standby takes over without waiting for the
	// lease to lapse.
	release := func() {
		bg, cancelBg := context.WithTimeout(context.WithoutCancel(ctx), r.o.TTL/5)
		defer cancelBg()
		if err := Release(bg, r.o.DB, r.o.Name, r.o.Holder); err != nil {
			r.o.Logger.Warn("lease: release", "error", err.Error())
			return
		}
		r.o.Logger.Info("lease: released")
	}
	for {
		select {
		case <-ctx.Done():
			stop(ctx.Err())
			release()
			return nil
		case err := <-done:
			cancel(errLost)
			r.held.Store(false)
			release()
			return fmt.Errorf("lease %s: work: %w", r.o.Name, cmp.Or(err, errors.New("stopped on its own")))
		case <-t.C:
		}
		// Past giveUp, work is stopped: the rest of the TTL is its time to
		// end before another process may take the lease.
		now, giveUp := r.o.Now(), renewed.Add(r.o.TTL*3/5)
		ok, err := r.call(ctx, giveUp, func(cctx context.Context) (bool, error) {
			return Renew(cctx, r.o.DB, r.o.Name, r.o.Holder, now, r.o.TTL)
		})
		switch {
		case ctx.Err() != nil:
			continue // stopped above
		case err == nil && ok:
			renewed = now
			continue
		case err == nil:
			r.o.Logger.Warn("lease: lost (lapsed or taken over); stopping the work")
		case r.o.Now().Before(giveUp):
			r.o.Logger.Warn("lease: renewal failed; retrying", "error", err.Error())
			continue
		default:
			r.o.Logger.Warn("lease: could not be renewed in time; stopping the work", "error", err.Error())
		}
		stop(errLost)
		return nil
	}
}

// call runs one lease statement until deadline at the latest (by the
// role's clock), so that a stalled database cannot keep a holder running
// past its lease.
func (r *Role) call(ctx context.Context, deadline time.Time, f func(context.Context) (bool, error)) (bool, error) {
	cctx, cancel := context.WithTimeout(ctx, min(deadline.Sub(r.o.Now()), r.o.TTL/5))
	defer cancel()
	return f(cctx)
}
