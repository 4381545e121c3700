package store

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
)

// versions maps components to migration versions.
type versions struct {
	mu sync.Mutex
	m  map[string]int
}

func (v *versions) set(component string, version int) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.m == nil {
		v.m = map[string]int{}
	}
	v.m[component] = version
}

func (v *versions) snapshot() map[string]int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return maps.Clone(v.m)
}

// CheckMigrations reports why the database's schema is behind what this
// process migrated it to (nil when it is not): the database was replaced or
// restored under a running process. A schema ahead is fine: migrations only
// add, and during a rolling update the previous release keeps serving on
// the schema the new one migrated.
func (db *DB) CheckMigrations(ctx context.Context) error {
	want := db.migrated.snapshot()
	if len(want) == 0 {
		return nil
	}
	rows, err := db.QueryContext(ctx, `SELECT component, MAX(version) FROM schema_migrations GROUP BY component`)
	if err != nil {
		return fmt.Errorf("read schema_migrations: %w", err)
	}
	defer rows.Close()
	have := map[string]int{}
	for rows.Next() {
		var c string
		var v int
		if err := rows.Scan(&c, &v); err != nil {
			return fmt.Errorf("read schema_migrations: %w", err)
		}
		have[c] = v
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read schema_migrations: %w", err)
	}
	var problems []string
	for _, c := range slices.Sorted(maps.Keys(want)) {
		if h := have[c]; h < want[c] {
			problems = append(problems, fmt.Sprintf("%s is at version %d, this process needs %d", c, h, want[c]))
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("schema %s", strings.Join(problems, "; "))
	}
	return nil
}
