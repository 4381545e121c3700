// Package ratelimit is a token bucket kept in the shared database, so every
// sync run and event consumer of every process writing to one connection
// draws from the same bucket, and a 429's Retry-After pauses all of them.
package ratelimit

import (
	"context"
	"embed"
	"io/fs"
	"time"

	"github.com/seghub/seghub/pkg/store"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Migrate creates the buckets table.
func Migrate(ctx context.Context, db *store.DB) error {
	sub, _ := fs.Sub(migrations, "migrations")
	return db.Migrate(ctx, "ratelimit", sub)
}

// Bucket is one shared token bucket.
type Bucket struct {
	db    *store.DB
	key   string
	rate  float64 // tokens per second
	burst float64
	now   func() time.Time
}

// New returns the bucket key refilling perMinute tokens a minute up to burst.
func New(db *store.DB, key string, perMinute, burst int) *Bucket {
	if burst < 1 {
		burst = 1
	}
	return &Bucket{db: db, key: key, rate: float64(perMinute) / 60, burst: float64(burst), now: time.Now}
}

// Wait blocks until n tokens are taken (n is capped at the burst).
func (b *Bucket) Wait(ctx context.Context, n int) error {
	_, err := b.WaitFor(ctx, n)
	return err
}

// WaitFor is Wait, also saying how long it slept for tokens (metrics count
// that, not the store round trips of taking them).
func (b *Bucket) WaitFor(ctx context.Context, n int) (time.Duration, error) {
	need := min(float64(n), b.burst)
	var slept time.Duration
	for {
		wait, err := b.take(ctx, need)
		if err != nil {
			return slept, err
		}
		if wait <= 0 {
			return slept, nil
		}
		wait = min(wait, time.Second)
		start := time.Now()
		select {
		case <-ctx.Done():
			return slept + time.Since(start), ctx.Err()
		case <-time.After(wait):
		}
		slept += time.Since(start)
	}
}

// take takes need tokens if it can, else says how long to wait.
func (b *Bucket) take(ctx context.Context, need float64) (time.Duration, error) {
	var wait time.Duration
	err := b.db.InTx(ctx, func(tx *store.Tx) error {
		now := b.now().UnixMicro()
		if _, err := tx.ExecContext(ctx, `INSERT INTO rl_buckets (bucket_key, tokens, updated_at, paused_until) VALUES (?, ?, ?, 0) ON CONFLICT (bucket_key) DO NOTHING`, b.key, b.burst, now); err != nil {
			return err
		}
		var tokens float64
		var updated, paused int64
		// The no-op update takes the row lock on both engines.
		if err := tx.QueryRowContext(ctx, `UPDATE rl_buckets SET bucket_key = bucket_key WHERE bucket_key = ? RETURNING tokens, updated_at, paused_until`, b.key).Scan(&tokens, &updated, &paused); err != nil {
			return err
		}
		if paused > now {
			wait = time.Duration(paused-now) * time.Microsecond
			return nil
		}
		tokens = min(b.burst, tokens+float64(now-max(updated, paused))/1e6*b.rate)
		if tokens >= need {
			tokens -= need
			wait = 0
		} else {
			wait = time.Duration((need - tokens) / b.rate * float64(time.Second))
		}
		_, err := tx.ExecContext(ctx, `UPDATE rl_buckets SET tokens = ?, updated_at = ? WHERE bucket_key = ?`, tokens, now, b.key)
		return err
	})
	return wait, err
}

// Pause stops every user of the bucket until t and empties it, so traffic
// resumes at the refill rate rather than in a burst.
func (b *Bucket) Pause(ctx context.Context, until time.Time) error {
	u := until.UnixMicro()
	_, err := b.db.ExecContext(ctx, `INSERT INTO rl_buckets (bucket_key, tokens, updated_at, paused_until) VALUES (?, 0, ?, ?)
		ON CONFLICT (bucket_key) DO UPDATE SET tokens = 0, paused_until = CASE WHEN rl_buckets.paused_until > ? THEN rl_buckets.paused_until ELSE ? END`, b.key, b.now().UnixMicro(), u, u, u)
	return err
}
