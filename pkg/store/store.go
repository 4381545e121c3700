// Package store is seghub's SQL layer over SQLite (modernc.org/sqlite, pure
// Go, the embedded default) and PostgreSQL (pgx): one connection type, queries
// written once with '?' placeholders, and embedded numbered migrations per
// component.
package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// Dialect is the SQL engine behind a DB.
type Dialect int

const (
	SQLite Dialect = iota + 1
	Postgres
)

func (d Dialect) String() string {
	if d == Postgres {
		return "postgres"
	}
	return "sqlite"
}

// DB is a database handle that rewrites '?' placeholders for PostgreSQL.
type DB struct {
	raw     *sql.DB
	Dialect Dialect
	// Pool is the pgx pool behind raw for PostgreSQL (River uses it); nil on SQLite.
	Pool *pgxpool.Pool
	// migrated is the last migration version of each component this process
	// applied or found applied (readiness compares the database with it).
	migrated versions
}

// Open connects to url: "postgres://..." / "postgresql://..." for
// PostgreSQL; anything else is a SQLite file path ("sqlite:" prefix optional),
// whose directory is created.
func Open(ctx context.Context, url string) (*DB, error) {
	if strings.HasPrefix(url, "postgres://") || strings.HasPrefix(url, "postgresql://") {
		cfg, err := pgxpool.ParseConfig(url)
		if err != nil {
			return nil, fmt.Errorf("parse database url: %w", err)
		}
		if cfg.MaxConns < 8 {
			cfg.MaxConns = 8
		}
		pool, err := pgxpool.NewWithConfig(ctx, cfg)
		if err != nil {
			return nil, fmt.Errorf("connect postgres: %w", err)
		}
		pingCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if err := pool.Ping(pingCtx); err != nil {
			pool.Close()
			return nil, fmt.Errorf("connect postgres: %w", err)
		}
		return &DB{raw: stdlib.OpenDBFromPool(pool), Dialect: Postgres, Pool: pool}, nil
	}
	path := strings.TrimPrefix(url, "sqlite:")
	if path != ":memory:" {
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, fmt.Errorf("create database directory: %w", err)
		}
	}
	// WAL lets readers run beside the single writer; IMMEDIATE transactions
	// take the write lock up front so two writers queue instead of deadlocking.
	// The path is a URI's: '#', '?' and '%' in it would cut it short or be
	// read as escapes (a "#01" test directory then shared another's file).
	dsn := "file:" + sqlitePathEscaper.Replace(path) + "?_pragma=busy_timeout(30000)&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)&_pragma=foreign_keys(1)&_txlock=immediate"
	raw, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}
	raw.SetMaxOpenConns(8)
	if err := raw.PingContext(ctx); err != nil {
		raw.Close()
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}
	return &DB{raw: raw, Dialect: SQLite}, nil
}

var sqlitePathEscaper = strings.NewReplacer("%", "%25", "#", "%23", "?", "%3f")

// Close closes the database.
func (db *DB) Close() error {
	err := db.raw.Close()
	if db.Pool != nil {
		db.Pool.Close()
	}
	return err
}

// SQL returns the underlying *sql.DB (for libraries such as River's SQLite driver).
func (db *DB) SQL() *sql.DB { return db.raw }

// Rebind rewrites '?' placeholders to '$n' for PostgreSQL.
func (db *DB) Rebind(q string) string { return rebind(db.Dialect, q) }

func rebind(d Dialect, q string) string {
	if d != Postgres || !strings.Contains(q, "?") {
		return q
	}
	var b strings.Builder
	b.Grow(len(q) + 8)
	n := 0
	for i := 0; i < len(q); i++ {
		if q[i] == '?' {
			n++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
			continue
		}
		b.WriteByte(q[i])
	}
	return b.String()
}

// ExecContext runs a statement.
func (db *DB) ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error) {
	return db.raw.ExecContext(ctx, db.Rebind(q), args...)
}

// QueryContext runs a query.
func (db *DB) QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	return db.raw.QueryContext(ctx, db.Rebind(q), args...)
}

// QueryRowContext runs a query returning one row.
func (db *DB) QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row {
	return db.raw.QueryRowContext(ctx, db.Rebind(q), args...)
}

// Tx is a transaction with the same placeholder rewriting.
type Tx struct {
	*sql.Tx
	Dialect Dialect
	// conn is the connection the transaction runs on (PostgreSQL only).
	conn *sql.Conn
}

// Rebind rewrites '?' placeholders for the transaction's engine (queries
// sent through Pgx).
func (tx *Tx) Rebind(q string) string { return rebind(tx.Dialect, q) }

// Pgx runs fn with the PostgreSQL connection the transaction runs on, for
// what only pgx offers (COPY): what fn does there is part of the
// transaction. It fails on SQLite.
func (tx *Tx) Pgx(fn func(conn *pgx.Conn) error) error {
	if tx.conn == nil {
		return errors.New("store: no pgx connection (not PostgreSQL)")
	}
	return tx.conn.Raw(func(driverConn any) error {
		c, ok := driverConn.(*stdlib.Conn)
		if !ok {
			return fmt.Errorf("store: connection is %T, not pgx", driverConn)
		}
		return fn(c.Conn())
	})
}

// ExecContext runs a statement in the transaction.
func (tx *Tx) ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error) {
	return tx.Tx.ExecContext(ctx, rebind(tx.Dialect, q), args...)
}

// QueryContext runs a query in the transaction.
func (tx *Tx) QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	return tx.Tx.QueryContext(ctx, rebind(tx.Dialect, q), args...)
}

// QueryRowContext runs a one-row query in the transaction.
func (tx *Tx) QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row {
	return tx.Tx.QueryRowContext(ctx, rebind(tx.Dialect, q), args...)
}

// Querier is what DB and Tx have in common.
type Querier interface {
	ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row
}

// InTx runs fn in a transaction, committing if it returns nil and rolling back
// otherwise (also on panic).
func (db *DB) InTx(ctx context.Context, fn func(tx *Tx) error) (err error) {
	var conn *sql.Conn
	var raw *sql.Tx
	if db.Dialect == Postgres {
		// On a connection of its own, which Tx.Pgx reaches.
		if conn, err = db.raw.Conn(ctx); err != nil {
			return fmt.Errorf("begin: %w", err)
		}
		defer conn.Close()
		raw, err = conn.BeginTx(ctx, nil)
	} else {
		raw, err = db.raw.BeginTx(ctx, nil)
	}
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	tx := &Tx{Tx: raw, Dialect: db.Dialect, conn: conn}
	defer func() {
		if p := recover(); p != nil {
			_ = raw.Rollback()
			panic(p)
		}
		if err != nil {
			_ = raw.Rollback()
		}
	}()
	if err = fn(tx); err != nil {
		return err
	}
	if err = raw.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// IsUniqueViolation reports whether err is a unique-constraint failure.
func IsUniqueViolation(err error) bool {
	var pg *pgconn.PgError
	if errors.As(err, &pg) {
		return pg.Code == "23505"
	}
	var se *sqlite.Error
	if errors.As(err, &se) {
		return se.Code() == sqlite3.SQLITE_CONSTRAINT_UNIQUE || se.Code() == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY
	}
	return false
}

var migrationName = regexp.MustCompile(`^(\d+)_[a-z0-9_]+\.sql$`)

// Migrate applies the numbered migrations in dir (NNN_name.sql) of fsys that
// component has not applied yet, each in its own transaction. Tokens let one
// file serve both engines: {{AUTOID}} (auto-increment primary key), {{BLOB}},
// and {{WITHOUT_ROWID}} after a table whose primary key is its only index (on
// SQLite the rows then live in that index instead of twice).
// Concurrent starters on PostgreSQL serialise on an advisory lock.
func (db *DB) Migrate(ctx context.Context, component string, fsys fs.FS) error {
	entries, err := fs.ReadDir(fsys, ".")
	if err != nil {
		return fmt.Errorf("read migrations of %s: %w", component, err)
	}
	type mig struct {
		version int
		name    string
	}
	var migs []mig
	for _, e := range entries {
		m := migrationName.FindStringSubmatch(e.Name())
		if m == nil {
			continue
		}
		v, _ := strconv.Atoi(m[1])
		migs = append(migs, mig{v, e.Name()})
	}
	sort.Slice(migs, func(i, j int) bool { return migs[i].version < migs[j].version })
	for i := 1; i < len(migs); i++ {
		if migs[i].version == migs[i-1].version {
			return fmt.Errorf("migrations of %s: version %d used twice", component, migs[i].version)
		}
	}
	// Every migration step holds one advisory lock on PostgreSQL: processes
	// starting together on a fresh database would otherwise race even on
	// CREATE TABLE IF NOT EXISTS.
	lock := func(tx *Tx) error {
		if db.Dialect != Postgres {
			return nil
		}
		h := fnv.New64a()
		h.Write([]byte("seghub-migrate"))
		_, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(?)`, int64(h.Sum64()>>1))
		return err
	}
	if err := db.InTx(ctx, func(tx *Tx) error {
		if err := lock(tx); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (component TEXT NOT NULL, version INTEGER NOT NULL, applied_at BIGINT NOT NULL, PRIMARY KEY (component, version))`)
		return err
	}); err != nil {
		return fmt.Errorf("create schema_migrations: %w", err)
	}
	for _, m := range migs {
		body, err := fs.ReadFile(fsys, m.name)
		if err != nil {
			return err
		}
		err = db.InTx(ctx, func(tx *Tx) error {
			if err := lock(tx); err != nil {
				return err
			}
			var n int
			if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM schema_migrations WHERE component = ? AND version = ?`, component, m.version).Scan(&n); err != nil {
				return err
			}
			if n > 0 {
				return nil
			}
			if _, err := tx.ExecContext(ctx, db.expand(string(body))); err != nil {
				return fmt.Errorf("%s: %w", m.name, err)
			}
			_, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (component, version, applied_at) VALUES (?, ?, ?)`, component, m.version, time.Now().UnixMicro())
			return err
		})
		if err != nil {
			return fmt.Errorf("migrate %s: %w", component, err)
		}
	}
	if len(migs) > 0 {
		db.migrated.set(component, migs[len(migs)-1].version)
	}
	return nil
}

func (db *DB) expand(q string) string {
	if db.Dialect == Postgres {
		return strings.NewReplacer("{{AUTOID}}", "BIGSERIAL PRIMARY KEY", "{{BLOB}}", "BYTEA", "{{WITHOUT_ROWID}}", "").Replace(q)
	}
	return strings.NewReplacer("{{AUTOID}}", "INTEGER PRIMARY KEY AUTOINCREMENT", "{{BLOB}}", "BLOB", "{{WITHOUT_ROWID}}", "WITHOUT ROWID").Replace(q)
}
