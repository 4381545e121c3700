package syncengine

import (
	"context"
	"database/sql"
	"embed"
	"encoding/json"
	"errors"
	"io/fs"
	"math"
	"strings"
	"time"

	"github.com/seghub/seghub/pkg/apperr"
	"github.com/seghub/seghub/pkg/store"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Schedules, modes, statuses and triggers as stored.
const (
	OneTime   = "one_time"
	Recurring = "recurring"
	Upsert    = "upsert"
	Mirror    = "mirror"

	StatusQueued    = "queued"
	StatusRunning   = "running"
	StatusSucceeded = "succeeded"
	StatusPartial   = "partial"
	StatusFailed    = "failed"
	StatusCanceled  = "canceled"
	// The segment is no longer public: the run sent nothing; the sync stays
	// enabled and its next run delivers once the segment is public again.
	StatusSegmentNotPublic = "segment_not_public"

	TriggerEnable    = "enable"
	TriggerManual    = "manual"
	TriggerSchedule  = "schedule"
	TriggerRetention = "retention_refresh"
	TriggerDisable   = "disable"
)

// Sync is a segment synced to a connection.
type Sync struct {
	ID, Env, SegmentID, ConnectionID, DestinationType, IdentityProperty string
	Schedule                                                            string
	Interval                                                            time.Duration
	Mode                                                                string
	Enabled                                                             bool
	FrozenName                                                          string
	// FrozenPrefix is the connection's property prefix, frozen with the
	// name: a later change of the setting must not orphan the live property.
	FrozenPrefix          string
	LastSynced            time.Time
	LastStatus, LastError string
	NextRun, DataExpires  time.Time
	Created, Updated      time.Time
	Delivered             uint64
}

// Run is one sync run.
type Run struct {
	ID, SyncID, Env, Trigger, Status           string
	Created, Started, Finished                 time.Time
	Added, Removed, Unmatched, Failed, Retried uint64
	Error                                      string
	FailedSample                               []FailedIdentity
	DataExpires                                time.Time
	TraceID                                    string
	// LeaseOwner, when set, fences writes of the run's progress: they
	// change nothing once another worker took the run over.
	LeaseOwner string
}

// FailedIdentity is a permanently refused add or remove.
type FailedIdentity struct {
	UserID   string `json:"user_id"`
	Identity string `json:"identity"`
	Reason   string `json:"reason"`
	Removal  bool   `json:"removal"`
}

// Store is the sync engine's SQL.
type Store struct{ db *store.DB }

// OpenStore migrates db.
func OpenStore(ctx context.Context, db *store.DB) (*Store, error) {
	sub, _ := fs.Sub(migrations, "migrations")
	if err := db.Migrate(ctx, "syncengine", sub); err != nil {
		return nil, err
	}
	st := &Store{db: db}
	if err := st.convertDelivered(ctx); err != nil {
		return nil, err
	}
	return st, nil
}

func us(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMicro()
}

func ut(v int64) time.Time {
	if v == 0 {
		return time.Time{}
	}
	return time.UnixMicro(v).UTC()
}

const syncCols = `sync_id, environment_id, segment_id, connection_id, destination_type, identity_property, schedule, interval_us, mode, enabled, frozen_name, frozen_prefix, last_synced_at, last_status, last_error, next_run_at, data_expires_at, created_at, updated_at`

func scanSync(sc interface{ Scan(...any) error }) (*Sync, error) {
	var s Sync
	var interval, last, next, exp, c, u int64
	if err := sc.Scan(&s.ID, &s.Env, &s.SegmentID, &s.ConnectionID, &s.DestinationType, &s.IdentityProperty, &s.Schedule, &interval, &s.Mode, &s.Enabled, &s.FrozenName, &s.FrozenPrefix, &last, &s.LastStatus, &s.LastError, &next, &exp, &c, &u); err != nil {
		return nil, err
	}
	s.Interval = time.Duration(interval) * time.Microsecond
	s.LastSynced, s.NextRun, s.DataExpires, s.Created, s.Updated = ut(last), ut(next), ut(exp), ut(c), ut(u)
	return &s, nil
}

// CreateSync inserts a sync.
func (st *Store) CreateSync(ctx context.Context, q store.Querier, s *Sync) error {
	_, err := q.ExecContext(ctx, `INSERT INTO se_syncs (`+syncCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		s.ID, s.Env, s.SegmentID, s.ConnectionID, s.DestinationType, s.IdentityProperty, s.Schedule, s.Interval.Microseconds(), s.Mode, s.Enabled, s.FrozenName, s.FrozenPrefix, us(s.LastSynced), s.LastStatus, s.LastError, us(s.NextRun), us(s.DataExpires), us(s.Created), us(s.Updated))
	return err
}

// UpdateSync writes every mutable field of s.
func (st *Store) UpdateSync(ctx context.Context, q store.Querier, s *Sync) error {
	_, err := q.ExecContext(ctx, `UPDATE se_syncs SET identity_property = ?, schedule = ?, interval_us = ?, mode = ?, enabled = ?, frozen_name = ?, frozen_prefix = ?, last_synced_at = ?, last_status = ?, last_error = ?, next_run_at = ?, data_expires_at = ?, updated_at = ? WHERE sync_id = ?`,
		s.IdentityProperty, s.Schedule, s.Interval.Microseconds(), s.Mode, s.Enabled, s.FrozenName, s.FrozenPrefix, us(s.LastSynced), s.LastStatus, s.LastError, us(s.NextRun), us(s.DataExpires), us(s.Updated), s.ID)
	return err
}

// SetNextRun moves a sync's schedule and nothing else: the scheduler and a
// finishing run write the same row, and neither may undo the other.
func (st *Store) SetNextRun(ctx context.Context, q store.Querier, id string, next, updated time.Time) error {
	_, err := q.ExecContext(ctx, `UPDATE se_syncs SET next_run_at = ?, updated_at = ? WHERE sync_id = ?`, us(next), us(updated), id)
	return err
}

// Outcome is what a finished run records on its sync.
type Outcome struct {
	Status, Error string
	// Set when the run delivered: last synced time, the frozen name (kept if
	// already frozen), and the destination data's expiry.
	Synced     time.Time
	FrozenName string
	// FrozenPrefix is frozen with FrozenName, in the same statement.
	FrozenPrefix string
	SetExpires   bool
	DataExpires  time.Time
	// RefreshAt, when set, pulls a recurring, enabled sync's next run
	// forward to it (before its data lapses).
	RefreshAt time.Time
	Updated   time.Time
}

// RecordOutcome writes a run's outcome in one statement, leaving the columns
// other writers own (schedule, settings) as they are now.
func (st *Store) RecordOutcome(ctx context.Context, q store.Querier, id string, o Outcome) error {
	_, err := q.ExecContext(ctx, `UPDATE se_syncs SET last_status = ?, last_error = ?,
		last_synced_at = CASE WHEN CAST(? AS BIGINT) > 0 THEN ? ELSE last_synced_at END,
		frozen_prefix = CASE WHEN frozen_name = '' THEN ? ELSE frozen_prefix END,
		frozen_name = CASE WHEN frozen_name = '' THEN ? ELSE frozen_name END,
		data_expires_at = CASE WHEN ? THEN ? ELSE data_expires_at END,
		next_run_at = CASE WHEN CAST(? AS BIGINT) > 0 AND schedule = ? AND enabled AND next_run_at > ? THEN ? ELSE next_run_at END,
		updated_at = ?
		WHERE sync_id = ?`,
		o.Status, o.Error, us(o.Synced), us(o.Synced), o.FrozenPrefix, o.FrozenName, o.SetExpires, us(o.DataExpires),
		us(o.RefreshAt), Recurring, us(o.RefreshAt), us(o.RefreshAt), us(o.Updated), id)
	return err
}

// GetSync returns env's sync (env "" for the engine's own lookups).
func (st *Store) GetSync(ctx context.Context, env, id string) (*Sync, error) {
	q := `SELECT ` + syncCols + ` FROM se_syncs WHERE sync_id = ?`
	args := []any{id}
	if env != "" {
		q += ` AND environment_id = ?`
		args = append(args, env)
	}
	s, err := scanSync(st.db.QueryRowContext(ctx, q, args...))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, apperr.NotFound("sync %q not found", id)
	}
	return s, err
}

// DeliveredCount counts the identities a sync's destination holds. It reads
// the held bitmap and its deltas, so only GetSync's answer carries it.
func (st *Store) DeliveredCount(ctx context.Context, syncID string) (uint64, error) {
	b, err := st.Held(ctx, syncID)
	if err != nil {
		return 0, err
	}
	return b.GetCardinality(), nil
}

// ListSyncs lists env's syncs, optionally of one segment or connection.
func (st *Store) ListSyncs(ctx context.Context, env, segmentID, connectionID string) ([]*Sync, error) {
	return st.ListSyncsPage(ctx, env, segmentID, connectionID, Cursor{}, math.MaxInt32)
}

// Cursor is a keyset position in a list ordered by time, then id.
type Cursor struct {
	T  int64  `json:"t"`
	ID string `json:"i"`
}

// ListSyncsPage lists up to limit syncs of env after cursor (oldest first).
func (st *Store) ListSyncsPage(ctx context.Context, env, segmentID, connectionID string, after Cursor, limit int) ([]*Sync, error) {
	q := `SELECT ` + syncCols + ` FROM se_syncs WHERE environment_id = ? AND (created_at > ? OR (created_at = ? AND sync_id > ?))`
	args := []any{env, after.T, after.T, after.ID}
	if segmentID != "" {
		q += ` AND segment_id = ?`
		args = append(args, segmentID)
	}
	if connectionID != "" {
		q += ` AND connection_id = ?`
		args = append(args, connectionID)
	}
	return st.querySyncs(ctx, q+` ORDER BY created_at, sync_id LIMIT ?`, append(args, limit)...)
}

func (st *Store) querySyncs(ctx context.Context, q string, args ...any) ([]*Sync, error) {
	rows, err := st.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*Sync
	for rows.Next() {
		s, err := scanSync(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, rows.Err()
}

// CountRecurring counts an environment's enabled recurring syncs to a
// destination type (all its connections), except one sync.
func (st *Store) CountRecurring(ctx context.Context, q store.Querier, env, destType, except string) (int, error) {
	var n int
	err := q.QueryRowContext(ctx, `SELECT COUNT(*) FROM se_syncs WHERE environment_id = ? AND destination_type = ? AND schedule = ? AND enabled = TRUE AND sync_id <> ?`, env, destType, Recurring, except).Scan(&n)
	return n, err
}

// DueSyncs returns enabled recurring syncs whose next run is due.
func (st *Store) DueSyncs(ctx context.Context, now time.Time) ([]*Sync, error) {
	return st.querySyncs(ctx, `SELECT `+syncCols+` FROM se_syncs WHERE enabled = TRUE AND schedule = ? AND next_run_at <= ? ORDER BY next_run_at`, Recurring, now.UnixMicro())
}

// DeleteSync removes a sync with its runs, checkpoints and failures.
func (st *Store) DeleteSync(ctx context.Context, q store.Querier, syncID string) error {
	if err := forgetHeld(ctx, q, syncID); err != nil {
		return err
	}
	for _, table := range []string{"se_failed", "se_identity_checks", "se_runs", "se_syncs"} {
		if _, err := q.ExecContext(ctx, `DELETE FROM `+table+` WHERE sync_id = ?`, syncID); err != nil {
			return err
		}
	}
	return nil
}

// SyncOf returns env's sync of a segment to a connection, or nil: there is
// at most one (unique index).
func (st *Store) SyncOf(ctx context.Context, q store.Querier, env, segmentID, connectionID string) (*Sync, error) {
	s, err := scanSync(q.QueryRowContext(ctx, `SELECT `+syncCols+` FROM se_syncs WHERE environment_id = ? AND segment_id = ? AND connection_id = ?`, env, segmentID, connectionID))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	return s, err
}

// ForgetDelivered drops what a sync delivered and its identity check, so
// its next run sends everything again.
func (st *Store) ForgetDelivered(ctx context.Context, q store.Querier, syncID string) error {
	if err := forgetHeld(ctx, q, syncID); err != nil {
		return err
	}
	for _, table := range []string{"se_failed", "se_identity_checks"} {
		if _, err := q.ExecContext(ctx, `DELETE FROM `+table+` WHERE sync_id = ?`, syncID); err != nil {
			return err
		}
	}
	return nil
}

// SyncsOfSegment returns env's syncs of a segment.
func (st *Store) SyncsOfSegment(ctx context.Context, env, segmentID string) ([]*Sync, error) {
	return st.ListSyncs(ctx, env, segmentID, "")
}

// Failed returns the identities whose last delivery failed.
func (st *Store) Failed(ctx context.Context, syncID string) (map[uint32]FailedIdentity, error) {
	rows, err := st.db.QueryContext(ctx, `SELECT dense_id, identity, removal, reason FROM se_failed WHERE sync_id = ?`, syncID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[uint32]FailedIdentity{}
	for rows.Next() {
		var d int64
		var f FailedIdentity
		if err := rows.Scan(&d, &f.Identity, &f.Removal, &f.Reason); err != nil {
			return nil, err
		}
		out[uint32(d)] = f
	}
	return out, rows.Err()
}

// Ack is one acknowledged batch: the checkpoint.
type Ack struct {
	Added   map[uint32]HeldIdentity // dense → identity now held
	Removed []uint32                // no longer held
	Failed  map[uint32]FailedIdentity
	OK      []uint32 // delivered this batch, earlier failures to clear
}

// Checkpoint records an acknowledged batch and the run's progress in one
// transaction, so a run resumed after a crash counts every batch once. The
// run's fenced update comes first: a worker that lost the lease writes nothing.
func (st *Store) Checkpoint(ctx context.Context, syncID string, a Ack, r *Run) error {
	return st.db.InTx(ctx, func(tx *store.Tx) error {
		if err := updateRun(ctx, tx, r); err != nil {
			return err
		}
		if err := writeHeld(ctx, tx, syncID, a); err != nil {
			return err
		}
		if err := chunked(ctx, tx, len(a.OK), func(i, j int) (string, []any) {
			return denseIn(tx.Dialect, `DELETE FROM se_failed WHERE sync_id = ? AND dense_id`, syncID, a.OK[i:j])
		}); err != nil {
			return err
		}
		for d, f := range a.Failed {
			if _, err := tx.ExecContext(ctx, `INSERT INTO se_failed (sync_id, dense_id, identity, removal, reason) VALUES (?, ?, ?, ?, ?) ON CONFLICT (sync_id, dense_id) DO UPDATE SET identity = excluded.identity, removal = excluded.removal, reason = excluded.reason`, syncID, int64(d), f.Identity, f.Removal, f.Reason); err != nil {
				return err
			}
		}
		return nil
	})
}

func marks(n int) string { return strings.TrimSuffix(strings.Repeat("?,", n), ",") }

// chunked runs a statement per chunk of at most 300 items.
func chunked(ctx context.Context, tx *store.Tx, n int, stmt func(i, j int) (string, []any)) error {
	for i := 0; i < n; i += 300 {
		q, args := stmt(i, min(i+300, n))
		if _, err := tx.ExecContext(ctx, q, args...); err != nil {
			return err
		}
	}
	return nil
}

const runCols = `run_id, sync_id, environment_id, trigger_kind, status, created_at, started_at, finished_at, added, removed, unmatched, failed, retried, error, failed_sample, data_expires_at, trace_id`

// CreateRun inserts a queued run.
func (st *Store) CreateRun(ctx context.Context, r *Run) error {
	_, err := st.db.ExecContext(ctx, `INSERT INTO se_runs (`+runCols+`) VALUES (?, ?, ?, ?, ?, ?, 0, 0, 0, 0, 0, 0, 0, '', '[]', 0, '')`, r.ID, r.SyncID, r.Env, r.Trigger, r.Status, us(r.Created))
	return err
}

// UpdateRun writes a run's progress.
func (st *Store) UpdateRun(ctx context.Context, r *Run) error {
	return updateRun(ctx, st.db, r)
}

func updateRun(ctx context.Context, q interface {
	ExecContext(context.Context, string, ...any) (sql.Result, error)
}, r *Run) error {
	sample, _ := json.Marshal(r.FailedSample)
	const set = `UPDATE se_runs SET status = ?, started_at = ?, finished_at = ?, added = ?, removed = ?, unmatched = ?, failed = ?, retried = ?, error = ?, failed_sample = ?, data_expires_at = ?, trace_id = ? WHERE run_id = ?`
	args := []any{r.Status, us(r.Started), us(r.Finished), int64(r.Added), int64(r.Removed), int64(r.Unmatched), int64(r.Failed), int64(r.Retried), r.Error, string(sample), us(r.DataExpires), r.TraceID, r.ID}
	if r.LeaseOwner == "" {
		_, err := q.ExecContext(ctx, set, args...)
		return err
	}
	res, err := q.ExecContext(ctx, set+` AND lease_owner = ?`, append(args, r.LeaseOwner)...)
	if err != nil {
		return err
	}
	return fenced(res)
}

func scanRun(sc interface{ Scan(...any) error }) (*Run, error) {
	var r Run
	var c, s, f, exp int64
	var added, removed, unmatched, failed, retried int64
	var sample string
	if err := sc.Scan(&r.ID, &r.SyncID, &r.Env, &r.Trigger, &r.Status, &c, &s, &f, &added, &removed, &unmatched, &failed, &retried, &r.Error, &sample, &exp, &r.TraceID); err != nil {
		return nil, err
	}
	r.Created, r.Started, r.Finished, r.DataExpires = ut(c), ut(s), ut(f), ut(exp)
	r.Added, r.Removed, r.Unmatched, r.Failed, r.Retried = uint64(added), uint64(removed), uint64(unmatched), uint64(failed), uint64(retried)
	_ = json.Unmarshal([]byte(sample), &r.FailedSample)
	return &r, nil
}

// GetRun returns a run.
func (st *Store) GetRun(ctx context.Context, id string) (*Run, error) {
	r, err := scanRun(st.db.QueryRowContext(ctx, `SELECT `+runCols+` FROM se_runs WHERE run_id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, apperr.NotFound("sync run %q not found", id)
	}
	return r, err
}

// ListRuns returns a sync's runs, newest first.
func (st *Store) ListRuns(ctx context.Context, syncID string, before *Cursor, limit int) ([]*Run, error) {
	q, args := `SELECT `+runCols+` FROM se_runs WHERE sync_id = ?`, []any{syncID}
	if before != nil {
		q += ` AND (created_at < ? OR (created_at = ? AND run_id < ?))`
		args = append(args, before.T, before.T, before.ID)
	}
	rows, err := st.db.QueryContext(ctx, q+` ORDER BY created_at DESC, run_id DESC LIMIT ?`, append(args, limit)...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*Run
	for rows.Next() {
		r, err := scanRun(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// PendingRun returns a sync's queued or running run, if any.
func (st *Store) PendingRun(ctx context.Context, syncID string) (*Run, error) {
	r, err := scanRun(st.db.QueryRowContext(ctx, `SELECT `+runCols+` FROM se_runs WHERE sync_id = ? AND status IN (?, ?) ORDER BY created_at LIMIT 1`, syncID, StatusQueued, StatusRunning))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	return r, err
}
