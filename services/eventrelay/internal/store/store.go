// Package store keeps the event relay's routes and dead letters.
package store

import (
	"context"
	"database/sql"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"strconv"
	"strings"
	"time"

	"github.com/seghub/seghub/pkg/apperr"
	"github.com/seghub/seghub/pkg/ids"
	"github.com/seghub/seghub/pkg/store"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Route sends events to a sink connection.
type Route struct {
	ID, Env, ConnectionID string
	Sources, EventNames   []string
	// DeliverAs renames the events this route takes; "" keeps their names.
	DeliverAs string
	Created   time.Time
	// FromSources marks the implicit route of an analytics connection: it
	// takes only events of source connections (not stored).
	FromSources bool
}

// Matches reports whether an event of source named name takes this route.
func (r Route) Matches(source, name string) bool {
	return (len(r.Sources) == 0 || contains(r.Sources, source)) && (len(r.EventNames) == 0 || contains(r.EventNames, name))
}

func contains(xs []string, x string) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}

// DeadLetter is an event a sink gave up on.
type DeadLetter struct {
	ID, Env, ConnectionID, EventID string
	Envelope                       []byte
	Reason                         string
	Attempts                       int
	FirstAttempt, Dead             time.Time
	Replayed                       time.Time
	// TraceParent is the W3C traceparent of the event's trace ("" if none).
	TraceParent string
}

// Store is the relay's SQL.
type Store struct{ db *store.DB }

// Open migrates db and returns the store.
func Open(ctx context.Context, db *store.DB) (*Store, error) {
	sub, _ := fs.Sub(migrations, "migrations")
	if err := db.Migrate(ctx, "eventrelay", sub); err != nil {
		return nil, err
	}
	return &Store{db: db}, nil
}

func micros(t time.Time) int64 { return t.UnixMicro() }

func fromMicros(v int64) time.Time {
	if v == 0 {
		return time.Time{}
	}
	return time.UnixMicro(v).UTC()
}

// CreateRoute stores r (its ID and Created are set here).
func (s *Store) CreateRoute(ctx context.Context, r *Route) error {
	r.ID, r.Created = ids.New("route"), time.Now().UTC()
	src, _ := json.Marshal(nonNil(r.Sources))
	names, _ := json.Marshal(nonNil(r.EventNames))
	_, err := s.db.ExecContext(ctx, `INSERT INTO er_routes (route_id, environment_id, connection_id, sources, event_names, deliver_as, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)`,
		r.ID, r.Env, r.ConnectionID, string(src), string(names), r.DeliverAs, micros(r.Created))
	return err
}

func nonNil(xs []string) []string {
	if xs == nil {
		return []string{}
	}
	return xs
}

const routeCols = `route_id, environment_id, connection_id, sources, event_names, deliver_as, created_at`

// Routes lists routes of env, or of every environment when env is "".
func (s *Store) Routes(ctx context.Context, env string) ([]Route, error) {
	q := `SELECT ` + routeCols + ` FROM er_routes`
	var args []any
	if env != "" {
		q += ` WHERE environment_id = ?`
		args = append(args, env)
	}
	return s.queryRoutes(ctx, q+` ORDER BY created_at, route_id`, args...)
}

// RoutesPage pages through env's routes ordered by (created_at, id) after
// the given cursor; an empty afterID starts at the oldest route.
func (s *Store) RoutesPage(ctx context.Context, env string, afterCreated int64, afterID string, limit int) ([]Route, error) {
	q := `SELECT ` + routeCols + ` FROM er_routes WHERE environment_id = ?`
	args := []any{env}
	if afterID != "" {
		q += ` AND (created_at > ? OR (created_at = ? AND route_id > ?))`
		args = append(args, afterCreated, afterCreated, afterID)
	}
	return s.queryRoutes(ctx, q+` ORDER BY created_at, route_id LIMIT ?`, append(args, limit)...)
}

func (s *Store) queryRoutes(ctx context.Context, q string, args ...any) ([]Route, error) {
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Route
	for rows.Next() {
		var r Route
		var src, names string
		var created int64
		if err := rows.Scan(&r.ID, &r.Env, &r.ConnectionID, &src, &names, &r.DeliverAs, &created); err != nil {
			return nil, err
		}
		_ = json.Unmarshal([]byte(src), &r.Sources)
		_ = json.Unmarshal([]byte(names), &r.EventNames)
		r.Created = fromMicros(created)
		out = append(out, r)
	}
	return out, rows.Err()
}

// MarkSourceEnv records that env's source connections forward events, from
// since on; a later call keeps the first time.
func (s *Store) MarkSourceEnv(ctx context.Context, env string, since time.Time) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO er_source_envs (environment_id, since) VALUES (?, ?) ON CONFLICT (environment_id) DO NOTHING`, env, micros(since))
	return err
}

// SourceEnvs lists the environments MarkSourceEnv recorded, with their times.
func (s *Store) SourceEnvs(ctx context.Context) (map[string]time.Time, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT environment_id, since FROM er_source_envs`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]time.Time{}
	for rows.Next() {
		var env string
		var since int64
		if err := rows.Scan(&env, &since); err != nil {
			return nil, err
		}
		out[env] = fromMicros(since)
	}
	return out, rows.Err()
}

// DeleteRoute removes a route of env.
func (s *Store) DeleteRoute(ctx context.Context, env, id string) error {
	res, err := s.db.ExecContext(ctx, `DELETE FROM er_routes WHERE environment_id = ? AND route_id = ?`, env, id)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return apperr.NotFound("route %q not found", id)
	}
	return nil
}

// AddDeadLetter records an event a sink gave up on.
func (s *Store) AddDeadLetter(ctx context.Context, d *DeadLetter) error {
	d.ID = ids.New("dl")
	_, err := s.db.ExecContext(ctx, `INSERT INTO er_dead_letters (dead_letter_id, environment_id, connection_id, event_id, envelope, reason, attempts, first_attempt_at, dead_at, trace_parent) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		d.ID, d.Env, d.ConnectionID, d.EventID, d.Envelope, d.Reason, d.Attempts, micros(d.FirstAttempt), micros(d.Dead), d.TraceParent)
	return err
}

// DeadLetterFilter selects dead letters of one environment.
type DeadLetterFilter struct {
	Env, ConnectionID string
	IDs               []string
	IncludeReplayed   bool
	PageSize          int
	PageToken         string
}

// DeadLetters lists dead letters oldest first, and the next page token.
func (s *Store) DeadLetters(ctx context.Context, f DeadLetterFilter) ([]DeadLetter, string, error) {
	q := `SELECT dead_letter_id, environment_id, connection_id, event_id, envelope, reason, attempts, first_attempt_at, dead_at, COALESCE(replayed_at, 0), trace_parent FROM er_dead_letters WHERE environment_id = ?`
	args := []any{f.Env}
	if f.ConnectionID != "" {
		q += ` AND connection_id = ?`
		args = append(args, f.ConnectionID)
	}
	if !f.IncludeReplayed {
		q += ` AND replayed_at IS NULL`
	}
	if len(f.IDs) > 0 {
		q += ` AND dead_letter_id IN (?` + strings.Repeat(", ?", len(f.IDs)-1) + `)`
		for _, id := range f.IDs {
			args = append(args, id)
		}
	}
	if f.PageToken != "" {
		at, id, ok := strings.Cut(f.PageToken, "_")
		n, err := strconv.ParseInt(at, 10, 64)
		if !ok || err != nil {
			return nil, "", apperr.Invalid("page_token", "is not a token this API returned")
		}
		q += ` AND (dead_at > ? OR (dead_at = ? AND dead_letter_id > ?))`
		args = append(args, n, n, id)
	}
	size := f.PageSize
	if size <= 0 {
		size = 100
	}
	size = min(size, 10000)
	q += fmt.Sprintf(` ORDER BY dead_at, dead_letter_id LIMIT %d`, size+1)
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, "", err
	}
	defer rows.Close()
	var out []DeadLetter
	for rows.Next() {
		var d DeadLetter
		var first, dead, replayed int64
		if err := rows.Scan(&d.ID, &d.Env, &d.ConnectionID, &d.EventID, &d.Envelope, &d.Reason, &d.Attempts, &first, &dead, &replayed, &d.TraceParent); err != nil {
			return nil, "", err
		}
		d.FirstAttempt, d.Dead, d.Replayed = fromMicros(first), fromMicros(dead), fromMicros(replayed)
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, "", err
	}
	next := ""
	if len(out) > size {
		out = out[:size]
		last := out[len(out)-1]
		next = strconv.FormatInt(micros(last.Dead), 10) + "_" + last.ID
	}
	return out, next, nil
}

// MarkReplayed records that a dead letter was republished; false when it was
// already replayed (by a concurrent call).
func (s *Store) MarkReplayed(ctx context.Context, env, id string, at time.Time) (bool, error) {
	res, err := s.db.ExecContext(ctx, `UPDATE er_dead_letters SET replayed_at = ? WHERE environment_id = ? AND dead_letter_id = ? AND replayed_at IS NULL`, micros(at), env, id)
	if err != nil {
		return false, err
	}
	n, _ := res.RowsAffected()
	return n == 1, nil
}

// CountDeadLetters counts a sink's dead letters not yet replayed.
func (s *Store) CountDeadLetters(ctx context.Context, env, conn string) (uint64, error) {
	var n uint64
	err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM er_dead_letters WHERE environment_id = ? AND connection_id = ? AND replayed_at IS NULL`, env, conn).Scan(&n)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	return n, err
}

// AcquireLease takes or renews lease name for holder until now+ttl; false
// when another holder's lease has not expired.
func (s *Store) AcquireLease(ctx context.Context, name, holder string, now time.Time, ttl time.Duration) (bool, error) {
	res, err := s.db.ExecContext(ctx, `INSERT INTO er_leases (name, holder, expires_at) VALUES (?, ?, ?)
		ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
		WHERE er_leases.holder = excluded.holder OR er_leases.expires_at < ?`, name, holder, micros(now.Add(ttl)), micros(now))
	if err != nil {
		return false, err
	}
	n, _ := res.RowsAffected()
	return n == 1, nil
}

// ReleaseLease gives lease name up if holder has it.
func (s *Store) ReleaseLease(ctx context.Context, name, holder string) error {
	_, err := s.db.ExecContext(ctx, `DELETE FROM er_leases WHERE name = ? AND holder = ?`, name, holder)
	return err
}

// LiveLeases returns the holder of every lease that has not expired at now.
func (s *Store) LiveLeases(ctx context.Context, now time.Time) (map[string]string, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT name, holder FROM er_leases WHERE expires_at >= ?`, micros(now))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var name, holder string
		if err := rows.Scan(&name, &holder); err != nil {
			return nil, err
		}
		out[name] = holder
	}
	return out, rows.Err()
}

// RenewLeases extends until now+ttl every unexpired lease of holder whose
// name starts with prefix, in one statement, and returns their names.
func (s *Store) RenewLeases(ctx context.Context, prefix, holder string, now time.Time, ttl time.Duration) ([]string, error) {
	rows, err := s.db.QueryContext(ctx, `UPDATE er_leases SET expires_at = ? WHERE holder = ? AND expires_at >= ? AND substr(name, 1, ?) = ? RETURNING name`,
		micros(now.Add(ttl)), holder, micros(now), len(prefix), prefix)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			return nil, err
		}
		out = append(out, name)
	}
	return out, rows.Err()
}
