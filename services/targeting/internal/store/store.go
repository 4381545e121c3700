// Package store keeps targeting's experiences (product tours, checklists)
// and their audiences; every replica reads them from here.
package store

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"io/fs"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"

	targetingv1 "github.com/seghub/seghub/gen/seghub/targeting/v1"
	"github.com/seghub/seghub/pkg/apperr"
	"github.com/seghub/seghub/pkg/ids"
	"github.com/seghub/seghub/pkg/store"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Store is the experiences table.
type Store struct {
	db  *store.DB
	now func() time.Time
}

// Open migrates db and returns the store.
func Open(ctx context.Context, db *store.DB) (*Store, error) {
	sub, _ := fs.Sub(migrations, "migrations")
	if err := db.Migrate(ctx, "targeting", sub); err != nil {
		return nil, err
	}
	return &Store{db: db, now: time.Now}, nil
}

const cols = `experience_id, name, type, audience, enabled, created_at, updated_at`

func scan(sc interface{ Scan(...any) error }) (*targetingv1.Experience, error) {
	var x targetingv1.Experience
	var typ, aud string
	var c, u int64
	if err := sc.Scan(&x.ExperienceId, &x.Name, &typ, &aud, &x.Enabled, &c, &u); err != nil {
		return nil, err
	}
	x.Type = targetingv1.ExperienceType(targetingv1.ExperienceType_value[typ])
	x.Audience = &targetingv1.Audience{}
	if err := protojson.Unmarshal([]byte(aud), x.Audience); err != nil {
		return nil, err
	}
	x.CreateTime, x.UpdateTime = timestamppb.New(time.UnixMicro(c)), timestamppb.New(time.UnixMicro(u))
	return &x, nil
}

// Create inserts an experience (validated by the caller).
func (s *Store) Create(ctx context.Context, env string, x *targetingv1.Experience) (*targetingv1.Experience, error) {
	now := s.now().UTC().Truncate(time.Microsecond)
	x.ExperienceId = ids.New("exp")
	x.CreateTime, x.UpdateTime = timestamppb.New(now), timestamppb.New(now)
	aud, err := protojson.Marshal(x.Audience)
	if err != nil {
		return nil, err
	}
	_, err = s.db.ExecContext(ctx, `INSERT INTO tg_experiences (experience_id, environment_id, name, type, audience, enabled, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
		x.ExperienceId, env, x.Name, x.Type.String(), string(aud), x.Enabled, now.UnixMicro(), now.UnixMicro())
	return x, err
}

// Get returns one experience of env.
func (s *Store) Get(ctx context.Context, env, id string) (*targetingv1.Experience, error) {
	x, err := scan(s.db.QueryRowContext(ctx, `SELECT `+cols+` FROM tg_experiences WHERE environment_id = ? AND experience_id = ?`, env, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, apperr.NotFound("experience %q not found", id)
	}
	return x, err
}

// List returns all of env's experiences, of one type unless typ is unspecified.
func (s *Store) List(ctx context.Context, env string, typ targetingv1.ExperienceType) ([]*targetingv1.Experience, error) {
	q, args := listQuery(env, typ)
	return s.query(ctx, q+` ORDER BY name, experience_id`, args...)
}

// ListPage pages through env's experiences (of one type unless typ is
// unspecified) ordered by (name, id) after the given cursor.
func (s *Store) ListPage(ctx context.Context, env string, typ targetingv1.ExperienceType, afterName, afterID string, limit int) ([]*targetingv1.Experience, error) {
	q, args := listQuery(env, typ)
	q += ` AND (name > ? OR (name = ? AND experience_id > ?)) ORDER BY name, experience_id LIMIT ?`
	return s.query(ctx, q, append(args, afterName, afterName, afterID, limit)...)
}

func listQuery(env string, typ targetingv1.ExperienceType) (string, []any) {
	q := `SELECT ` + cols + ` FROM tg_experiences WHERE environment_id = ?`
	args := []any{env}
	if typ != targetingv1.ExperienceType_EXPERIENCE_TYPE_UNSPECIFIED {
		q += ` AND type = ?`
		args = append(args, typ.String())
	}
	return q, args
}

func (s *Store) query(ctx context.Context, q string, args ...any) ([]*targetingv1.Experience, error) {
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*targetingv1.Experience
	for rows.Next() {
		x, err := scan(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, x)
	}
	return out, rows.Err()
}

// Update writes an experience's name, audience and enabled flag.
func (s *Store) Update(ctx context.Context, env string, x *targetingv1.Experience) (*targetingv1.Experience, error) {
	now := s.now().UTC().Truncate(time.Microsecond)
	aud, err := protojson.Marshal(x.Audience)
	if err != nil {
		return nil, err
	}
	res, err := s.db.ExecContext(ctx, `UPDATE tg_experiences SET name = ?, audience = ?, enabled = ?, updated_at = ? WHERE environment_id = ? AND experience_id = ?`, x.Name, string(aud), x.Enabled, now.UnixMicro(), env, x.ExperienceId)
	if err != nil {
		return nil, err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return nil, apperr.NotFound("experience %q not found", x.ExperienceId)
	}
	x.UpdateTime = timestamppb.New(now)
	return x, nil
}

// Delete removes an experience.
func (s *Store) Delete(ctx context.Context, env, id string) error {
	res, err := s.db.ExecContext(ctx, `DELETE FROM tg_experiences WHERE environment_id = ? AND experience_id = ?`, env, id)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return apperr.NotFound("experience %q not found", id)
	}
	return nil
}
