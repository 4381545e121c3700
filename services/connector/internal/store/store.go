// Package store keeps connections with their credentials sealed (AES-GCM,
// bound to the connection id) and the OAuth states in flight.
package store

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io/fs"
	"time"

	"github.com/seghub/seghub/pkg/apperr"
	"github.com/seghub/seghub/pkg/secretbox"
	"github.com/seghub/seghub/pkg/store"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Statuses as stored.
const (
	StatusConnected   = "connected"
	StatusNeedsReauth = "needs_reauth"
	StatusError       = "error"
)

// Connection is a stored connection; Credentials and SigningSecret are
// decrypted only when loaded with secrets.
type Connection struct {
	ID, Env, Type, Name, Account, Status, LastError string
	LastErrorAt                                     time.Time
	SendEvents                                      bool
	IdentityProperty                                string
	Credentials                                     map[string]string
	SigningSecret                                   string
	Created, Updated                                time.Time
}

// Store is the connector's SQL.
type Store struct {
	db  *store.DB
	box *secretbox.Box
	now func() time.Time
}

// Open migrates db and returns the store.
func Open(ctx context.Context, db *store.DB, box *secretbox.Box) (*Store, error) {
	sub, _ := fs.Sub(migrations, "migrations")
	if err := db.Migrate(ctx, "connector", sub); err != nil {
		return nil, err
	}
	return &Store{db: db, box: box, now: time.Now}, nil
}

func (s *Store) seal(v any, aad string) []byte {
	b, _ := json.Marshal(v)
	return s.box.Seal(b, []byte(aad))
}

func (s *Store) open(sealed []byte, aad string, v any) error {
	b, err := s.box.Open(sealed, []byte(aad))
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

// Create inserts a connection.
func (s *Store) Create(ctx context.Context, c *Connection) error {
	now := s.now().UTC().Truncate(time.Microsecond)
	c.Created, c.Updated = now, now
	var secret []byte
	if c.SigningSecret != "" {
		secret = s.seal(c.SigningSecret, "signing:"+c.ID)
	}
	_, err := s.db.ExecContext(ctx, `INSERT INTO cn_connections (connection_id, environment_id, type, name, account, status, last_error, last_error_at, send_events, identity_property, credentials, signing_secret, created_at, updated_at)
		VALUES (?, ?, ?, ?, ?, ?, '', 0, ?, ?, ?, ?, ?, ?)`,
		c.ID, c.Env, c.Type, c.Name, c.Account, c.Status, c.SendEvents, c.IdentityProperty, s.seal(c.Credentials, "credentials:"+c.ID), secret, now.UnixMicro(), now.UnixMicro())
	if store.IsUniqueViolation(err) {
		return apperr.AlreadyExists("a connection named %q already exists in this environment", c.Name)
	}
	return err
}

const cols = `connection_id, environment_id, type, name, account, status, last_error, last_error_at, send_events, identity_property, credentials, signing_secret, created_at, updated_at`

func (s *Store) scan(sc interface{ Scan(...any) error }, withSecrets bool) (*Connection, error) {
	var c Connection
	var errAt, cr, up int64
	var creds, secret []byte
	if err := sc.Scan(&c.ID, &c.Env, &c.Type, &c.Name, &c.Account, &c.Status, &c.LastError, &errAt, &c.SendEvents, &c.IdentityProperty, &creds, &secret, &cr, &up); err != nil {
		return nil, err
	}
	if errAt > 0 {
		c.LastErrorAt = time.UnixMicro(errAt).UTC()
	}
	c.Created, c.Updated = time.UnixMicro(cr).UTC(), time.UnixMicro(up).UTC()
	if withSecrets {
		if err := s.open(creds, "credentials:"+c.ID, &c.Credentials); err != nil {
			return nil, apperr.Internal(err, "credentials of connection %s cannot be decrypted (was SEGHUB_SECRET_KEY changed?)", c.ID)
		}
		if len(secret) > 0 {
			if err := s.open(secret, "signing:"+c.ID, &c.SigningSecret); err != nil {
				return nil, apperr.Internal(err, "signing secret of connection %s cannot be decrypted", c.ID)
			}
		}
	}
	return &c, nil
}

// Get returns env's connection id; secrets are decrypted when asked.
func (s *Store) Get(ctx context.Context, env, id string, withSecrets bool) (*Connection, error) {
	c, err := s.scan(s.db.QueryRowContext(ctx, `SELECT `+cols+` FROM cn_connections WHERE environment_id = ? AND connection_id = ?`, env, id), withSecrets)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, apperr.NotFound("connection %q not found", id)
	}
	return c, err
}

// GetByID returns a connection of any environment with its secrets; only
// for seghub's own components (inbound webhooks name a connection, not an
// environment).
func (s *Store) GetByID(ctx context.Context, id string) (*Connection, error) {
	c, err := s.scan(s.db.QueryRowContext(ctx, `SELECT `+cols+` FROM cn_connections WHERE connection_id = ?`, id), true)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, apperr.NotFound("connection %q not found", id)
	}
	return c, err
}

// List pages through env's connections (of one type unless typ is empty)
// ordered by (name, id) after the given cursor.
func (s *Store) List(ctx context.Context, env, typ, afterName, afterID string, limit int) ([]*Connection, error) {
	q := `SELECT ` + cols + ` FROM cn_connections WHERE environment_id = ? AND (name > ? OR (name = ? AND connection_id > ?))`
	args := []any{env, afterName, afterName, afterID}
	if typ != "" {
		q += ` AND type = ?`
		args = append(args, typ)
	}
	rows, err := s.db.QueryContext(ctx, q+` ORDER BY name, connection_id LIMIT ?`, append(args, limit)...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*Connection
	for rows.Next() {
		c, err := s.scan(rows, false)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

// Update writes name, settings, status and (re-sealed) credentials.
func (s *Store) Update(ctx context.Context, c *Connection) error {
	c.Updated = s.now().UTC().Truncate(time.Microsecond)
	var errAt int64
	if !c.LastErrorAt.IsZero() {
		errAt = c.LastErrorAt.UnixMicro()
	}
	res, err := s.db.ExecContext(ctx, `UPDATE cn_connections SET name = ?, account = ?, status = ?, last_error = ?, last_error_at = ?, send_events = ?, identity_property = ?, credentials = ?, updated_at = ? WHERE environment_id = ? AND connection_id = ?`,
		c.Name, c.Account, c.Status, c.LastError, errAt, c.SendEvents, c.IdentityProperty, s.seal(c.Credentials, "credentials:"+c.ID), c.Updated.UnixMicro(), c.Env, c.ID)
	if store.IsUniqueViolation(err) {
		return apperr.AlreadyExists("a connection named %q already exists in this environment", c.Name)
	}
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return apperr.NotFound("connection %q not found", c.ID)
	}
	return nil
}

// Delete removes a connection.
func (s *Store) Delete(ctx context.Context, env, id string) error {
	res, err := s.db.ExecContext(ctx, `DELETE FROM cn_connections WHERE environment_id = ? AND connection_id = ?`, env, id)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return apperr.NotFound("connection %q not found", id)
	}
	return nil
}

// OAuthState is an authorisation in flight.
type OAuthState struct {
	Env, Type, Name, Account string
	SendEvents               bool
	IdentityProperty         string
	Verifier                 string
	Expires                  time.Time
}

func hashState(state string) string {
	h := sha256.Sum256([]byte(state))
	return hex.EncodeToString(h[:])
}

// SaveState records a state (only its hash) and its sealed PKCE verifier.
func (s *Store) SaveState(ctx context.Context, state string, st OAuthState) error {
	h := hashState(state)
	_, err := s.db.ExecContext(ctx, `INSERT INTO cn_oauth_states (state_hash, environment_id, type, name, account, send_events, identity_property, verifier, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		h, st.Env, st.Type, st.Name, st.Account, st.SendEvents, st.IdentityProperty, s.seal(st.Verifier, "state:"+h), st.Expires.UnixMicro())
	return err
}

// ErrBadState covers unknown, used and expired states alike, so a caller
// learns nothing about which.
var ErrBadState = apperr.PermissionDenied("invalid OAuth state: unknown, already used or expired; start the authorisation again")

// UseState consumes a state: it is marked used whatever happens next.
func (s *Store) UseState(ctx context.Context, state string) (*OAuthState, error) {
	h := hashState(state)
	var st OAuthState
	err := s.db.InTx(ctx, func(tx *store.Tx) error {
		var sealed []byte
		var exp int64
		var used sql.NullInt64
		err := tx.QueryRowContext(ctx, `SELECT environment_id, type, name, account, send_events, identity_property, verifier, expires_at, used_at FROM cn_oauth_states WHERE state_hash = ?`, h).
			Scan(&st.Env, &st.Type, &st.Name, &st.Account, &st.SendEvents, &st.IdentityProperty, &sealed, &exp, &used)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrBadState
		}
		if err != nil {
			return err
		}
		if used.Valid || s.now().UnixMicro() > exp {
			return ErrBadState
		}
		if _, err := tx.ExecContext(ctx, `UPDATE cn_oauth_states SET used_at = ? WHERE state_hash = ?`, s.now().UnixMicro(), h); err != nil {
			return err
		}
		st.Expires = time.UnixMicro(exp)
		return s.open(sealed, "state:"+h, &st.Verifier)
	})
	if err != nil {
		return nil, err
	}
	return &st, nil
}
