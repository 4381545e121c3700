package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/seghub/seghub/pkg/store"
)

// PropertyStat is one user property name and value kind with how many users
// hold it.
type PropertyStat struct {
	Name  string
	Kind  PropKind
	Users int64
}

// UserPropertyStats counts, in one aggregate over the environment's users,
// the users holding each (property name, value kind), most held first. At
// most limit rows are returned; more reports whether others were left out.
func (s *Store) UserPropertyStats(ctx context.Context, env string, limit int) (stats []PropertyStat, more bool, err error) {
	// properties is the JSON encodeProps writes: {"name": {"s"|"n"|"b"|"t": value}}.
	each := "json_each(u.properties)"
	if s.db.Dialect == store.Postgres {
		each = "jsonb_each(u.properties::jsonb)"
	}
	q := `SELECT p.key, CASE
			WHEN p.value -> 's' IS NOT NULL THEN 's'
			WHEN p.value -> 'n' IS NOT NULL THEN 'n'
			WHEN p.value -> 'b' IS NOT NULL THEN 'b'
			ELSE 't' END AS kind, COUNT(*) AS users
		FROM ss_users u, ` + each + ` p
		WHERE u.environment_id = ?
		GROUP BY 1, 2
		ORDER BY 3 DESC, 1, 2
		LIMIT ?`
	rows, err := s.db.QueryContext(ctx, q, env, limit+1)
	if err != nil {
		return nil, false, fmt.Errorf("segmentsync: count user properties of %s: %w", env, err)
	}
	defer rows.Close()
	for rows.Next() {
		var st PropertyStat
		var kind string
		if err := rows.Scan(&st.Name, &kind, &st.Users); err != nil {
			return nil, false, fmt.Errorf("segmentsync: count user properties of %s: %w", env, err)
		}
		st.Kind = PropKind(kind[0])
		stats = append(stats, st)
	}
	if err := rows.Err(); err != nil {
		return nil, false, fmt.Errorf("segmentsync: count user properties of %s: %w", env, err)
	}
	if len(stats) > limit {
		return stats[:limit], true, nil
	}
	return stats, false, nil
}

// HoldsProperty reports whether any user of the environment holds the
// property; it stops at the first holder rather than counting them all.
func (s *Store) HoldsProperty(ctx context.Context, env, name string) (bool, error) {
	held := `EXISTS (SELECT 1 FROM json_each(u.properties) p WHERE p.key = ?)`
	if s.db.Dialect == store.Postgres {
		held = `jsonb_exists(u.properties::jsonb, ?)`
	}
	var one int
	err := s.db.QueryRowContext(ctx, `SELECT 1 FROM ss_users u WHERE u.environment_id = ? AND `+held+` LIMIT 1`, env, name).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("segmentsync: look up user property %q of %s: %w", name, env, err)
	}
	return true, nil
}
