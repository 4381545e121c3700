// Package admin owns environments and API keys: their store, the
// AdminService gRPC server and the first-start bootstrap.
package admin

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"io/fs"
	"time"

	"google.golang.org/grpc/codes"

	authv1 "github.com/seghub/seghub/gen/seghub/auth/v1"
	"github.com/seghub/seghub/pkg/apperr"
	"github.com/seghub/seghub/pkg/auth"
	"github.com/seghub/seghub/pkg/ids"
	"github.com/seghub/seghub/pkg/store"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Migrate applies the admin tables' migrations.
func Migrate(ctx context.Context, db *store.DB) error {
	sub, _ := fs.Sub(migrations, "migrations")
	return db.Migrate(ctx, "admin", sub)
}

// Environment is a tenant: everything else belongs to one.
type Environment struct {
	ID, Name, ParentID string
	CreatedAt          time.Time
}

// Key is an API key without its secret.
type Key struct {
	ID, EnvironmentID, Name, Prefix string
	Role                            authv1.Role
	CreatedAt                       time.Time
	RevokedAt                       *time.Time
}

// Store is the SQL for environments and keys.
type Store struct {
	db  *store.DB
	now func() time.Time
}

// NewStore returns a Store on db (migrated with Migrate).
func NewStore(db *store.DB) *Store { return &Store{db: db, now: time.Now} }

// KeyPrefix starts every API key secret, so leaked keys are easy to grep for.
const KeyPrefix = "sghk_"

// NewSecret returns a fresh API key secret.
func NewSecret() string { return KeyPrefix + ids.Secret(32) }

// CreateEnvironment inserts an environment.
func (s *Store) CreateEnvironment(ctx context.Context, name, parentID string) (Environment, error) {
	e := Environment{ID: ids.New("env"), Name: name, ParentID: parentID, CreatedAt: s.now().UTC().Truncate(time.Microsecond)}
	var parent any
	if parentID != "" {
		parent = parentID
	}
	_, err := s.db.ExecContext(ctx, `INSERT INTO environments (id, name, parent_id, created_at) VALUES (?, ?, ?, ?)`, e.ID, e.Name, parent, e.CreatedAt.UnixMicro())
	if store.IsUniqueViolation(err) {
		return Environment{}, apperr.AlreadyExists("environment %q already exists", name)
	}
	if err != nil {
		return Environment{}, err
	}
	return e, nil
}

// ListEnvironments returns env and the environments it created.
func (s *Store) ListEnvironments(ctx context.Context, env string) ([]Environment, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id, name, COALESCE(parent_id, ''), created_at FROM environments WHERE id = ? OR parent_id = ? ORDER BY created_at, id`, env, env)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Environment
	for rows.Next() {
		var e Environment
		var at int64
		if err := rows.Scan(&e.ID, &e.Name, &e.ParentID, &at); err != nil {
			return nil, err
		}
		e.CreatedAt = time.UnixMicro(at).UTC()
		out = append(out, e)
	}
	return out, rows.Err()
}

// CountEnvironments counts all environments (bootstrap uses it).
func (s *Store) CountEnvironments(ctx context.Context) (int, error) {
	var n int
	err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM environments`).Scan(&n)
	return n, err
}

// CreateKey stores a key for secret (only its hash is kept).
func (s *Store) CreateKey(ctx context.Context, env, name string, role authv1.Role, secret string) (Key, error) {
	k := Key{ID: ids.New("key"), EnvironmentID: env, Name: name, Role: role, Prefix: secret[:min(len(secret), 12)], CreatedAt: s.now().UTC().Truncate(time.Microsecond)}
	_, err := s.db.ExecContext(ctx, `INSERT INTO api_keys (id, environment_id, name, role, prefix, hash, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)`,
		k.ID, env, name, auth.RoleName(role), k.Prefix, auth.HashSecret(secret), k.CreatedAt.UnixMicro())
	if store.IsUniqueViolation(err) {
		return Key{}, apperr.AlreadyExists("this API key secret is already in use")
	}
	return k, err
}

const keyColumns = `id, environment_id, name, role, prefix, created_at, revoked_at`

func scanKey(sc interface{ Scan(...any) error }) (Key, error) {
	var k Key
	var role string
	var at int64
	var rev sql.NullInt64
	if err := sc.Scan(&k.ID, &k.EnvironmentID, &k.Name, &role, &k.Prefix, &at, &rev); err != nil {
		return Key{}, err
	}
	k.Role = auth.ParseRole(role)
	k.CreatedAt = time.UnixMicro(at).UTC()
	if rev.Valid {
		t := time.UnixMicro(rev.Int64).UTC()
		k.RevokedAt = &t
	}
	return k, nil
}

// ListKeys pages through env's keys ordered by (created_at, id) after the
// given cursor; an empty afterID starts at the oldest key.
func (s *Store) ListKeys(ctx context.Context, env string, includeRevoked bool, afterCreated int64, afterID string, limit int) ([]Key, error) {
	q := `SELECT ` + keyColumns + ` FROM api_keys WHERE environment_id = ?`
	args := []any{env}
	if afterID != "" {
		q += ` AND (created_at > ? OR (created_at = ? AND id > ?))`
		args = append(args, afterCreated, afterCreated, afterID)
	}
	if !includeRevoked {
		q += ` AND revoked_at IS NULL`
	}
	rows, err := s.db.QueryContext(ctx, q+` ORDER BY created_at, id LIMIT ?`, append(args, limit)...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Key
	for rows.Next() {
		k, err := scanKey(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, k)
	}
	return out, rows.Err()
}

// RevokeKey revokes env's key id and returns it with its hash.
func (s *Store) RevokeKey(ctx context.Context, env, id string) (Key, string, error) {
	var k Key
	var hash string
	err := s.db.InTx(ctx, func(tx *store.Tx) error {
		var err error
		k, err = scanKey(tx.QueryRowContext(ctx, `SELECT `+keyColumns+` FROM api_keys WHERE id = ? AND environment_id = ?`, id, env))
		if errors.Is(err, sql.ErrNoRows) {
			return apperr.NotFound("API key %q not found in this environment", id)
		}
		if err != nil {
			return err
		}
		if err := tx.QueryRowContext(ctx, `SELECT hash FROM api_keys WHERE id = ?`, id).Scan(&hash); err != nil {
			return err
		}
		if k.RevokedAt == nil {
			now := s.now().UTC().Truncate(time.Microsecond)
			if _, err := tx.ExecContext(ctx, `UPDATE api_keys SET revoked_at = ? WHERE id = ?`, now.UnixMicro(), id); err != nil {
				return err
			}
			k.RevokedAt = &now
		}
		return nil
	})
	return k, hash, err
}

// ResolveKeyHash implements auth.KeyResolver.
func (s *Store) ResolveKeyHash(ctx context.Context, hash string) (auth.Principal, error) {
	var p auth.Principal
	var role string
	err := s.db.QueryRowContext(ctx, `SELECT id, environment_id, role FROM api_keys WHERE hash = ? AND revoked_at IS NULL`, hash).Scan(&p.KeyID, &p.EnvironmentID, &role)
	if errors.Is(err, sql.ErrNoRows) {
		return auth.Principal{}, auth.ErrUnknownKey
	}
	if err != nil {
		return auth.Principal{}, err
	}
	p.Role = auth.ParseRole(role)
	return p, nil
}

// Bootstrap creates the default environment and its first admin key when the
// store holds no environment yet. It returns the secret to print once (the
// given one, or a random one when adminKey is empty); "" when nothing was
// created.
func (s *Store) Bootstrap(ctx context.Context, adminKey string) (env Environment, secret string, err error) {
	n, err := s.CountEnvironments(ctx)
	if err != nil || n > 0 {
		return Environment{}, "", err
	}
	secret = adminKey
	if secret == "" {
		secret = NewSecret()
	}
	if len(secret) < 16 {
		return Environment{}, "", errors.New("SEGHUB_ADMIN_KEY must be at least 16 characters")
	}
	env, err = s.CreateEnvironment(ctx, "default", "")
	if apperr.Code(err) == codes.AlreadyExists {
		return Environment{}, "", nil // another process bootstrapped first
	}
	if err != nil {
		return Environment{}, "", err
	}
	if _, err := s.CreateKey(ctx, env.ID, "bootstrap admin", authv1.Role_ROLE_ADMIN, secret); err != nil {
		return Environment{}, "", err
	}
	return env, secret, nil
}
