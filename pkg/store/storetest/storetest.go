// Package storetest opens real SQLite and PostgreSQL databases for tests. The
// PostgreSQL one is a fresh database per test, dropped afterwards. Without a
// reachable server, PostgreSQL tests skip with a message, except with CI=true,
// where they fail.
package storetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/seghub/seghub/pkg/store"
)

// AdminURL is the server used to create per-test databases.
func AdminURL() string {
	if u := os.Getenv("SEGHUB_TEST_DATABASE_URL"); u != "" {
		return u
	}
	return "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
}

// SQLite opens a fresh SQLite database in t's temp dir.
func SQLite(t testing.TB) *store.DB {
	t.Helper()
	db, err := store.Open(context.Background(), filepath.Join(t.TempDir(), "seghub.db"))
	if err != nil {
		t.Fatalf("open sqlite: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// PostgresURL creates a fresh database and returns its URL (dropped at cleanup).
func PostgresURL(t testing.TB) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	admin := AdminURL()
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("PostgreSQL at %s is unreachable and CI=true requires it: %v", admin, err)
		}
		t.Skipf("skipping PostgreSQL test: %s unreachable (%v); start PostgreSQL or set SEGHUB_TEST_DATABASE_URL", admin, err)
	}
	defer conn.Close(ctx)
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	name := "seghub_test_" + hex.EncodeToString(b)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("create database: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, admin)
		if err != nil {
			return
		}
		defer c.Close(ctx)
		_, _ = c.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
	})
	i := strings.LastIndex(admin, "/")
	q := ""
	if j := strings.Index(admin[i:], "?"); j >= 0 {
		q = admin[i+j:]
	}
	return admin[:i+1] + name + q
}

// Postgres opens a fresh PostgreSQL database.
func Postgres(t testing.TB) *store.DB {
	t.Helper()
	db, err := store.Open(context.Background(), PostgresURL(t))
	if err != nil {
		t.Fatalf("open postgres: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// Each runs fn as a subtest against SQLite and against PostgreSQL.
func Each(t *testing.T, fn func(t *testing.T, db *store.DB)) {
	t.Helper()
	t.Run("sqlite", func(t *testing.T) { fn(t, SQLite(t)) })
	t.Run("postgres", func(t *testing.T) { fn(t, Postgres(t)) })
}

// Reopen opens another handle to the same database as db was opened from,
// for restart tests: pass the URL or path used originally.
func Reopen(t testing.TB, url string) *store.DB {
	t.Helper()
	db, err := store.Open(context.Background(), url)
	if err != nil {
		t.Fatalf("reopen %s: %v", url, err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// Dialect describes a test database that can be reopened (restart tests).
type Dialect struct {
	Name string
	// URL returns a fresh database's URL or path.
	URL func(t testing.TB) string
}

// Dialects lists SQLite and PostgreSQL for restart-style tests.
func Dialects() []Dialect {
	return []Dialect{
		{Name: "sqlite", URL: func(t testing.TB) string { return filepath.Join(t.TempDir(), "seghub.db") }},
		{Name: "postgres", URL: PostgresURL},
	}
}
