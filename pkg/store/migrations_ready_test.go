package store_test

import (
	"context"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/seghub/seghub/pkg/store"
	"github.com/seghub/seghub/pkg/store/storetest"
)

// Readiness compares the database's schema with what this process migrated
// it to: equal or ahead (a newer release's migration during a rolling
// update) is ready; behind (a restored database) is named with both
// versions.
func TestCheckMigrations(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		if err := db.CheckMigrations(ctx); err != nil {
			t.Fatalf("nothing migrated yet: %v", err)
		}
		v1 := fstest.MapFS{"001_a.sql": {Data: []byte(`CREATE TABLE ready_a (id INTEGER);`)}, "002_b.sql": {Data: []byte(`CREATE TABLE ready_b (id INTEGER);`)}}
		if err := db.Migrate(ctx, "ready", v1); err != nil {
			t.Fatal(err)
		}
		if err := db.CheckMigrations(ctx); err != nil {
			t.Fatalf("just migrated: %v", err)
		}
		// A newer release adds 003.
		if _, err := db.ExecContext(ctx, `INSERT INTO schema_migrations (component, version, applied_at) VALUES (?, ?, ?)`, "ready", 3, time.Now().UnixMicro()); err != nil {
			t.Fatal(err)
		}
		if err := db.CheckMigrations(ctx); err != nil {
			t.Fatalf("after a newer migration: %v", err)
		}
		if _, err := db.ExecContext(ctx, `DELETE FROM schema_migrations WHERE component = ? AND version > 1`, "ready"); err != nil {
			t.Fatal(err)
		}
		if err := db.CheckMigrations(ctx); err == nil || !strings.Contains(err.Error(), "ready is at version 1, this process needs 2") {
			t.Fatalf("behind: %v", err)
		}
	})
}
