package store_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"testing/fstest"

	"github.com/jackc/pgx/v5"

	"github.com/seghub/seghub/pkg/store"
	"github.com/seghub/seghub/pkg/store/storetest"
)

func TestRebind(t *testing.T) {
	t.Parallel()
	db := &store.DB{Dialect: store.Postgres}
	if got := db.Rebind("SELECT a FROM t WHERE b = ? AND c IN (?, ?)"); got != "SELECT a FROM t WHERE b = $1 AND c IN ($2, $3)" {
		t.Fatalf("postgres rebind = %q", got)
	}
	db.Dialect = store.SQLite
	if got := db.Rebind("x = ?"); got != "x = ?" {
		t.Fatalf("sqlite rebind = %q", got)
	}
}

func TestMigrateAndTransactions(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		v1 := fstest.MapFS{"001_things.sql": {Data: []byte(`CREATE TABLE things (id {{AUTOID}}, name TEXT NOT NULL UNIQUE, body {{BLOB}});`)}}
		if err := db.Migrate(ctx, "test", v1); err != nil {
			t.Fatal(err)
		}
		// Applying again is a no-op; a later version is applied on top.
		v2 := fstest.MapFS{
			"001_things.sql": v1["001_things.sql"],
			"002_more.sql":   {Data: []byte(`ALTER TABLE things ADD COLUMN size BIGINT NOT NULL DEFAULT 0;`)},
			"README.txt":     {Data: []byte("ignored")},
		}
		if err := db.Migrate(ctx, "test", v2); err != nil {
			t.Fatal(err)
		}
		var n int
		if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM schema_migrations WHERE component = ?`, "test").Scan(&n); err != nil || n != 2 {
			t.Fatalf("applied = %d, %v", n, err)
		}
		if _, err := db.ExecContext(ctx, `INSERT INTO things (name, body, size) VALUES (?, ?, ?)`, "a", []byte{1, 2, 3}, 3); err != nil {
			t.Fatal(err)
		}
		_, err := db.ExecContext(ctx, `INSERT INTO things (name, body, size) VALUES (?, ?, ?)`, "a", nil, 0)
		if !store.IsUniqueViolation(err) {
			t.Fatalf("duplicate name: %v, want unique violation", err)
		}
		// A failed transaction leaves nothing behind.
		err = db.InTx(ctx, func(tx *store.Tx) error {
			if _, err := tx.ExecContext(ctx, `INSERT INTO things (name) VALUES (?)`, "b"); err != nil {
				return err
			}
			_, err := tx.ExecContext(ctx, `INSERT INTO things (name) VALUES (?)`, "a")
			return err
		})
		if err == nil {
			t.Fatal("transaction with a duplicate committed")
		}
		if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM things`).Scan(&n); err != nil || n != 1 {
			t.Fatalf("rows after rollback = %d, %v", n, err)
		}
		var body []byte
		if err := db.QueryRowContext(ctx, `SELECT body FROM things WHERE name = ?`, "a").Scan(&body); err != nil || len(body) != 3 {
			t.Fatalf("blob = %v, %v", body, err)
		}
		bad := fstest.MapFS{"003_bad.sql": {Data: []byte(`CREATE TABLE nope (`)}}
		if err := db.Migrate(ctx, "test", bad); err == nil {
			t.Fatal("broken migration applied")
		}
	})
}

// Processes starting together on a fresh database all migrate it, once.
func TestConcurrentMigrationsOnAFreshDatabase(t *testing.T) {
	for _, d := range storetest.Dialects() {
		t.Run(d.Name, func(t *testing.T) {
			url := d.URL(t)
			const procs = 6
			errs := make(chan error, procs)
			for i := range procs {
				db := storetest.Reopen(t, url)
				c := i % 2 // two components (services), three processes each
				fs := fstest.MapFS{"001_things.sql": {Data: []byte(fmt.Sprintf(`CREATE TABLE things_%d (id {{AUTOID}}, name TEXT NOT NULL);`, c))}}
				go func() { errs <- db.Migrate(context.Background(), fmt.Sprint("component-", c), fs) }()
			}
			for range procs {
				if err := <-errs; err != nil {
					t.Fatalf("concurrent migrate: %v", err)
				}
			}
			var n int
			if err := storetest.Reopen(t, url).QueryRowContext(context.Background(), `SELECT COUNT(*) FROM schema_migrations`).Scan(&n); err != nil || n != 2 {
				t.Fatalf("schema_migrations rows = %d, %v; want 2 (one per component)", n, err)
			}
		})
	}
}

// A path with URI characters opens the file it names, not a prefix of it.
func TestSQLitePathWithURICharacters(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"a#01/seghub.db", "b?x=1/seghub.db", "c%23/seghub.db"} {
		path := filepath.Join(dir, name)
		db, err := store.Open(context.Background(), "sqlite:"+path)
		if err != nil {
			t.Fatalf("open %s: %v", name, err)
		}
		if _, err := db.ExecContext(context.Background(), `CREATE TABLE t (x INTEGER)`); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		db.Close()
		if _, err := os.Stat(path); err != nil {
			t.Errorf("%s: the database is not where named: %v", name, err)
		}
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 3 {
		t.Errorf("directories %v, want exactly the three named", entries)
	}
}

// What a transaction writes through Tx.Pgx (COPY) commits and rolls back
// with it, and SQLite has no pgx connection to offer.
func TestPgxInTransaction(t *testing.T) {
	ctx := context.Background()
	if err := storetest.SQLite(t).InTx(ctx, func(tx *store.Tx) error {
		if tx.Pgx(func(*pgx.Conn) error { return nil }) == nil {
			t.Error("Pgx on SQLite: want an error")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	db := storetest.Postgres(t)
	if _, err := db.ExecContext(ctx, `CREATE TABLE t (v BIGINT NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	copyIn := func(tx *store.Tx, v int64) error {
		return tx.Pgx(func(c *pgx.Conn) error {
			_, err := c.CopyFrom(ctx, pgx.Identifier{"t"}, []string{"v"}, pgx.CopyFromRows([][]any{{v}}))
			return err
		})
	}
	if err := db.InTx(ctx, func(tx *store.Tx) error {
		if err := copyIn(tx, 1); err != nil {
			return err
		}
		// The statement after the copy sees its row: one transaction.
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM t`).Scan(&n); err != nil || n != 1 {
			t.Errorf("rows seen in the transaction = %d, %v; want 1", n, err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := db.InTx(ctx, func(tx *store.Tx) error {
		if err := copyIn(tx, 2); err != nil {
			return err
		}
		return fmt.Errorf("roll back")
	}); err == nil {
		t.Fatal("want the rollback's error")
	}
	var sum int64
	if err := db.QueryRowContext(ctx, `SELECT COALESCE(SUM(v), 0) FROM t`).Scan(&sum); err != nil || sum != 1 {
		t.Fatalf("committed rows sum to %d, %v; want 1 (the rolled back copy gone)", sum, err)
	}
}
