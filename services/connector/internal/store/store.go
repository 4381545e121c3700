// Package store keeps connections with their credentials sealed (AES-GCM,
// bound to the connection id) and the OAuth states in flight.
package store

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"database/sql"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"time"

	"google.golang.org/grpc/codes"

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
	PropertyPrefix                                  string
	Credentials                                     map[string]string
	SigningSecret                                   string
	Created, Updated                                time.Time
	// CredentialsVersion is the version of the credentials as read; a
	// credential write succeeds only while it is still current.
	CredentialsVersion int64
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
	_, err := s.db.ExecContext(ctx, `INSERT INTO cn_connections (connection_id, environment_id, type, name, account, status, last_error, last_error_at, send_events, identity_property, property_prefix, credentials, signing_secret, created_at, updated_at)
		VALUES (?, ?, ?, ?, ?, ?, '', 0, ?, ?, ?, ?, ?, ?, ?)`,
		c.ID, c.Env, c.Type, c.Name, c.Account, c.Status, c.SendEvents, c.IdentityProperty, c.PropertyPrefix, s.seal(c.Credentials, "credentials:"+c.ID), secret, now.UnixMicro(), now.UnixMicro())
	if store.IsUniqueViolation(err) {
		return apperr.AlreadyExists("a connection named %q already exists in this environment", c.Name)
	}
	c.CredentialsVersion = 1
	return err
}

const cols = `connection_id, environment_id, type, name, account, status, last_error, last_error_at, send_events, identity_property, property_prefix, credentials, signing_secret, created_at, updated_at, credentials_version`

func (s *Store) scan(sc interface{ Scan(...any) error }, withSecrets bool) (*Connection, error) {
	var c Connection
	var errAt, cr, up int64
	var creds, secret []byte
	if err := sc.Scan(&c.ID, &c.Env, &c.Type, &c.Name, &c.Account, &c.Status, &c.LastError, &errAt, &c.SendEvents, &c.IdentityProperty, &c.PropertyPrefix, &creds, &secret, &cr, &up, &c.CredentialsVersion); err != nil {
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

// CountByStatus counts the connections of every environment in status,
// per destination type (the needs-re-auth gauge).
func (s *Store) CountByStatus(ctx context.Context, status string) (map[string]int64, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT type, COUNT(*) FROM cn_connections WHERE status = ? GROUP BY type`, status)
	if err != nil {
		return nil, fmt.Errorf("connector: count connections in status %s: %w", status, err)
	}
	defer rows.Close()
	out := map[string]int64{}
	for rows.Next() {
		var typ string
		var n int64
		if err := rows.Scan(&typ, &n); err != nil {
			return nil, fmt.Errorf("connector: count connections in status %s: %w", status, err)
		}
		out[typ] = n
	}
	return out, rows.Err()
}

// Fields names what of a connection's name and settings a write sets; a
// write sets only what its caller changes, so that concurrent writers of
// other fields are not undone by values read earlier.
type Fields struct {
	Name     bool
	Settings bool // send events, identity property and property prefix
}

func (f Fields) set(c *Connection) (string, []any) {
	var set string
	var args []any
	if f.Name {
		set += `, name = ?`
		args = append(args, c.Name)
	}
	if f.Settings {
		set += `, send_events = ?, identity_property = ?, property_prefix = ?`
		args = append(args, c.SendEvents, c.IdentityProperty, c.PropertyPrefix)
	}
	return set, args
}

// UpdateSettings writes c's name and settings as f says, nothing else:
// credentials and status have writers of their own that it must not undo.
func (s *Store) UpdateSettings(ctx context.Context, c *Connection, f Fields) error {
	c.Updated = s.now().UTC().Truncate(time.Microsecond)
	set, args := f.set(c)
	res, err := s.db.ExecContext(ctx, `UPDATE cn_connections SET updated_at = ?`+set+` WHERE environment_id = ? AND connection_id = ?`,
		append(append([]any{c.Updated.UnixMicro()}, args...), c.Env, c.ID)...)
	if store.IsUniqueViolation(err) {
		return apperr.AlreadyExists("a connection named %q already exists in this environment", c.Name)
	}
	if err != nil {
		return fmt.Errorf("connector: update settings of %s: %w", c.ID, err)
	}
	return found(res, c.ID)
}

// SetStatus records a connection's status and, unless it is connected, the
// error that caused it; it touches the status columns only.
func (s *Store) SetStatus(ctx context.Context, env, id, status, lastError string) error {
	now := s.now().UTC().Truncate(time.Microsecond)
	q := `UPDATE cn_connections SET status = ?, last_error = ?, last_error_at = ?, updated_at = ? WHERE environment_id = ? AND connection_id = ?`
	args := []any{status, lastError, now.UnixMicro(), now.UnixMicro(), env, id}
	if status == StatusConnected {
		// The time of the last error stays: it is history, not state.
		q = `UPDATE cn_connections SET status = ?, last_error = ?, updated_at = ? WHERE environment_id = ? AND connection_id = ?`
		args = []any{status, "", now.UnixMicro(), env, id}
	}
	res, err := s.db.ExecContext(ctx, q, args...)
	if err != nil {
		return fmt.Errorf("connector: set status of %s: %w", id, err)
	}
	return found(res, id)
}

// ErrCredentialsChanged is a credential write that lost a race: the
// credentials changed since they were read.
var ErrCredentialsChanged = &apperr.Error{Code: codes.Aborted, Message: "the connection's credentials changed while this request was in flight; read the connection again and retry"}

// CredentialWrite says what a credential write sets besides the credentials
// and account.
type CredentialWrite struct {
	// Reconnect marks the connection connected and clears its error: new
	// credentials a destination accepted answer whatever refused the old.
	Reconnect bool
	// LiftReauth marks a connection that needs re-authorisation connected
	// again, leaving any other status alone: a refresh the destination
	// granted refutes a refusal recorded for older credentials (another
	// process's refresh of the same token), not a delivery error.
	LiftReauth bool
	// Fields are written too, in the same statement.
	Fields
}

// UpdateCredentials seals and writes c's credentials if they are still at
// c.CredentialsVersion (compare and swap) and advances the version; a lost
// race is ErrCredentialsChanged and writes nothing.
func (s *Store) UpdateCredentials(ctx context.Context, c *Connection, w CredentialWrite) error {
	now := s.now().UTC().Truncate(time.Microsecond)
	set := `credentials = ?, account = ?, credentials_version = credentials_version + 1, updated_at = ?`
	args := []any{s.seal(c.Credentials, "credentials:"+c.ID), c.Account, now.UnixMicro()}
	switch {
	case w.Reconnect:
		set += `, status = ?, last_error = ''`
		args = append(args, StatusConnected)
	case w.LiftReauth:
		// Both CASEs read the row as it was before this update.
		set += `, status = CASE WHEN status = ? THEN ? ELSE status END, last_error = CASE WHEN status = ? THEN '' ELSE last_error END`
		args = append(args, StatusNeedsReauth, StatusConnected, StatusNeedsReauth)
	}
	fs, fargs := w.Fields.set(c)
	set += fs
	args = append(args, fargs...)
	res, err := s.db.ExecContext(ctx, `UPDATE cn_connections SET `+set+` WHERE environment_id = ? AND connection_id = ? AND credentials_version = ?`,
		append(args, c.Env, c.ID, c.CredentialsVersion)...)
	if store.IsUniqueViolation(err) {
		return apperr.AlreadyExists("a connection named %q already exists in this environment", c.Name)
	}
	if err != nil {
		return fmt.Errorf("connector: update credentials of %s: %w", c.ID, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		if _, err := s.Get(ctx, c.Env, c.ID, false); err != nil {
			return err
		}
		return ErrCredentialsChanged
	}
	c.CredentialsVersion++
	c.Updated = now
	if w.Reconnect || (w.LiftReauth && c.Status == StatusNeedsReauth) {
		c.Status, c.LastError = StatusConnected, ""
	}
	return nil
}

// MarkNeedsReauth records that credentials at c.CredentialsVersion were
// refused for good; it reports false, writing nothing, when they have been
// replaced since, as the refusal then says nothing about the new ones.
func (s *Store) MarkNeedsReauth(ctx context.Context, c *Connection, reason string) (bool, error) {
	now := s.now().UTC().Truncate(time.Microsecond)
	res, err := s.db.ExecContext(ctx, `UPDATE cn_connections SET status = ?, last_error = ?, last_error_at = ?, updated_at = ? WHERE environment_id = ? AND connection_id = ? AND credentials_version = ?`,
		StatusNeedsReauth, reason, now.UnixMicro(), now.UnixMicro(), c.Env, c.ID, c.CredentialsVersion)
	if err != nil {
		return false, fmt.Errorf("connector: mark %s needs re-authorisation: %w", c.ID, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return false, nil
	}
	c.Status, c.LastError, c.LastErrorAt, c.Updated = StatusNeedsReauth, reason, now, now
	return true, nil
}

func found(res sql.Result, id string) error {
	if n, _ := res.RowsAffected(); n == 0 {
		return apperr.NotFound("connection %q not found", id)
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
	// Browser is the nonce of the seghub_oauth cookie of the browser that
	// started the flow; only its hash is stored.
	Browser string
}

func hashState(state string) string {
	h := sha256.Sum256([]byte(state))
	return hex.EncodeToString(h[:])
}

// SaveState records a state (only its hash), the hash of its browser nonce
// and its sealed PKCE verifier.
func (s *Store) SaveState(ctx context.Context, state string, st OAuthState) error {
	if st.Browser == "" {
		return errors.New("connector: an OAuth state needs a browser nonce")
	}
	h := hashState(state)
	_, err := s.db.ExecContext(ctx, `INSERT INTO cn_oauth_states (state_hash, environment_id, type, name, account, send_events, identity_property, verifier, expires_at, browser_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		h, st.Env, st.Type, st.Name, st.Account, st.SendEvents, st.IdentityProperty, s.seal(st.Verifier, "state:"+h), st.Expires.UnixMicro(), hashState(st.Browser))
	if err != nil {
		return fmt.Errorf("connector: save OAuth state: %w", err)
	}
	return nil
}

// ErrBadState covers unknown, used and expired states alike, so a caller
// learns nothing about which.
var ErrBadState = apperr.PermissionDenied("invalid OAuth state: unknown, already used or expired; start the authorisation again")

// ErrOtherBrowser is a state presented without the cookie of the browser
// that started the flow.
var ErrOtherBrowser = apperr.PermissionDenied("this OAuth authorisation was started in another browser (its seghub_oauth cookie is missing or different); start the authorisation again from this browser")

// UseState consumes a state presented by the browser holding nonce: the
// state is deleted whatever happens next. A state presented by another
// browser is refused and kept, so that whoever saw its URL cannot spoil the
// flow of the browser that started it.
func (s *Store) UseState(ctx context.Context, state, browser string) (*OAuthState, error) {
	h := hashState(state)
	var st OAuthState
	err := s.db.InTx(ctx, func(tx *store.Tx) error {
		var sealed []byte
		var exp int64
		var browserHash string
		err := tx.QueryRowContext(ctx, `SELECT environment_id, type, name, account, send_events, identity_property, verifier, expires_at, browser_hash FROM cn_oauth_states WHERE state_hash = ?`, h).
			Scan(&st.Env, &st.Type, &st.Name, &st.Account, &st.SendEvents, &st.IdentityProperty, &sealed, &exp, &browserHash)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrBadState
		}
		if err != nil {
			return fmt.Errorf("connector: read OAuth state: %w", err)
		}
		if s.now().UnixMicro() > exp {
			return ErrBadState // the sweep deletes it
		}
		if browser == "" || subtle.ConstantTimeCompare([]byte(hashState(browser)), []byte(browserHash)) != 1 {
			return ErrOtherBrowser
		}
		res, err := tx.ExecContext(ctx, `DELETE FROM cn_oauth_states WHERE state_hash = ?`, h)
		if err != nil {
			return fmt.Errorf("connector: consume OAuth state: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return ErrBadState // consumed by a concurrent callback
		}
		st.Expires, st.Browser = time.UnixMicro(exp), browser
		return s.open(sealed, "state:"+h, &st.Verifier)
	})
	if err != nil {
		return nil, err
	}
	return &st, nil
}

// SweepStates deletes the states that expired before now and reports how
// many.
func (s *Store) SweepStates(ctx context.Context) (int64, error) {
	res, err := s.db.ExecContext(ctx, `DELETE FROM cn_oauth_states WHERE expires_at < ?`, s.now().UnixMicro())
	if err != nil {
		return 0, fmt.Errorf("connector: sweep expired OAuth states: %w", err)
	}
	return res.RowsAffected()
}
