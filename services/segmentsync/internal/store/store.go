// Package store is segmentsync's SQL: users with dense ids and typed
// properties, segments with their membership bitmaps (and, per user, the
// segments it is in), and the per-environment change log that
// WatchMembership replays. Every write appends to the log in
// the same transaction; writers of one environment serialise on its head row,
// so log sequences are gapless and in commit order.
package store

import (
	"context"
	"database/sql"
	"embed"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/RoaringBitmap/roaring/v2"
	"github.com/jackc/pgx/v5"

	segmentsyncv1 "github.com/seghub/seghub/gen/seghub/segmentsync/v1"
	"github.com/seghub/seghub/pkg/apperr"
	"github.com/seghub/seghub/pkg/ids"
	"github.com/seghub/seghub/pkg/membership"
	"github.com/seghub/seghub/pkg/store"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Change kinds in the log.
const (
	KindUsers          = "users"
	KindUsersDeleted   = "users_deleted"
	KindSegment        = "segment"
	KindMembership     = "membership"
	KindSegmentDeleted = "segment_deleted"
)

// Visibility values as stored.
const (
	Public  = "public"
	Private = "private"
)

// PropKind tells which field of a Prop holds the value.
type PropKind byte

const (
	PropString PropKind = 's'
	PropNumber PropKind = 'n'
	PropBool   PropKind = 'b'
	PropTime   PropKind = 't'
)

// Prop is a typed user property value.
type Prop struct {
	Kind PropKind
	S    string
	N    float64
	B    bool
	T    time.Time
}

// String is the value as text (identity values are sent as strings).
func (p Prop) String() string {
	switch p.Kind {
	case PropString:
		return p.S
	case PropNumber:
		if p.N == math.Trunc(p.N) && math.Abs(p.N) < 1e15 {
			return fmt.Sprintf("%d", int64(p.N))
		}
		return fmt.Sprintf("%g", p.N)
	case PropBool:
		if p.B {
			return "true"
		}
		return "false"
	case PropTime:
		return p.T.UTC().Format(time.RFC3339Nano)
	}
	return ""
}

type jsonProp struct {
	S *string  `json:"s,omitempty"`
	N *float64 `json:"n,omitempty"`
	B *bool    `json:"b,omitempty"`
	T *int64   `json:"t,omitempty"`
}

func encodeProps(props map[string]Prop) string {
	out := make(map[string]jsonProp, len(props))
	for k, p := range props {
		var j jsonProp
		switch p.Kind {
		case PropString:
			j.S = &p.S
		case PropNumber:
			j.N = &p.N
		case PropBool:
			j.B = &p.B
		case PropTime:
			t := p.T.UnixMicro()
			j.T = &t
		}
		out[k] = j
	}
	b, _ := json.Marshal(out)
	return string(b)
}

func decodeProps(s string) (map[string]Prop, error) {
	var in map[string]jsonProp
	if err := json.Unmarshal([]byte(s), &in); err != nil {
		return nil, fmt.Errorf("decode user properties: %w", err)
	}
	out := make(map[string]Prop, len(in))
	for k, j := range in {
		switch {
		case j.S != nil:
			out[k] = Prop{Kind: PropString, S: *j.S}
		case j.N != nil:
			out[k] = Prop{Kind: PropNumber, N: *j.N}
		case j.B != nil:
			out[k] = Prop{Kind: PropBool, B: *j.B}
		case j.T != nil:
			out[k] = Prop{Kind: PropTime, T: time.UnixMicro(*j.T).UTC()}
		}
	}
	return out, nil
}

// User is a user with its dense id.
type User struct {
	ID       string
	Dense    uint32
	Props    map[string]Prop
	Created  time.Time
	Updated  time.Time
	Segments []string
}

// UserUpsert is one user of UpsertUsers; a nil Prop removes the property.
type UserUpsert struct {
	ID    string
	Props map[string]*Prop
}

// Segment is a segment's metadata; Members is loaded only where asked.
type Segment struct {
	ID, Env, Name, Description, Visibility, ExternalID string
	Count                                              uint64
	Version                                            int64
	Created, Updated                                   time.Time
	Members                                            *roaring.Bitmap
}

// Change is one entry of the change log.
type Change struct {
	Env       string
	Seq       int64
	Kind      string
	SegmentID string
	Version   int64
	Added     *roaring.Bitmap
	Removed   *roaring.Bitmap
	Detail    string
}

func newSegmentID() string { return ids.New("seg") }

// Store is segmentsync's data plane.
type Store struct {
	db  *store.DB
	now func() time.Time
	// notify is called after a commit that appended to env's log.
	notify func(env string, seq int64)
	// beforeDelete runs in a user's deleting transaction (see OnDeleteUser).
	beforeDelete func(ctx context.Context, q store.Querier, env string, dense uint32, userID string) error
	// scanAbove is the count of ids above which a lookup scans the
	// environment's users instead of IN lists (lowered by tests).
	scanAbove int
	// bulkChunk bounds the ids of one bulk insert statement (one JSON or
	// array parameter, so no placeholder limit applies; lowered by tests).
	bulkChunk int
	// programs caches each computed segment's compiled rule by segment id
	// (a new rule version replaces the entry).
	programs sync.Map
}

// OnDeleteUser sets what runs in a user's deleting transaction, before the
// user's row goes: the sync engine keeps the user's id there for syncs that
// derive their identity from it.
func (s *Store) OnDeleteUser(f func(ctx context.Context, q store.Querier, env string, dense uint32, userID string) error) {
	s.beforeDelete = f
}

// Open migrates db and returns the store. notify may be nil.
func Open(ctx context.Context, db *store.DB, notify func(env string, seq int64)) (*Store, error) {
	sub, _ := fs.Sub(migrations, "migrations")
	if err := db.Migrate(ctx, "segmentsync", sub); err != nil {
		return nil, err
	}
	if notify == nil {
		notify = func(string, int64) {}
	}
	s := &Store{db: db, now: time.Now, notify: notify, scanAbove: 50000, bulkChunk: 65536}
	if err := s.backfillUserSegments(ctx); err != nil {
		return nil, err
	}
	if err := s.convertEventCounts(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// SetClock replaces the store's clock (tests and the service's injected clock).
func (s *Store) SetClock(now func() time.Time) { s.now = now }

// DB returns the underlying database (for packages sharing the service's store).
func (s *Store) DB() *store.DB { return s.db }

func (s *Store) micros() int64 { return s.now().UTC().UnixMicro() }

// write runs fn in a transaction holding env's head row and notifies
// watchers of the last sequence appended once it commits.
func (s *Store) write(ctx context.Context, env string, fn func(w *writer) error) error {
	return s.writeEnvs(ctx, []string{env}, func(_ *store.Tx, ws map[string]*writer) error { return fn(ws[env]) })
}

// writeEnvs is write over several environments in one transaction (the
// event consumer commits a batch of many environments' events with its
// position). Head rows are taken in sorted order, so writers never deadlock.
func (s *Store) writeEnvs(ctx context.Context, envs []string, fn func(tx *store.Tx, ws map[string]*writer) error) error {
	envs = dedupe(envs)
	sort.Strings(envs)
	var ws map[string]*writer
	err := s.db.InTx(ctx, func(tx *store.Tx) error {
		ws = make(map[string]*writer, len(envs))
		for _, env := range envs {
			w := &writer{s: s, env: env, ctx: ctx, tx: tx}
			if err := w.begin(); err != nil {
				return err
			}
			ws[env] = w
		}
		if err := fn(tx, ws); err != nil {
			return err
		}
		for _, env := range envs {
			if err := ws[env].finish(); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil {
		for _, env := range envs {
			if w := ws[env]; w.seq != w.startSeq {
				s.notify(env, w.seq)
			}
		}
	}
	return err
}

// begin takes env's head row.
func (w *writer) begin() error {
	if _, err := w.tx.ExecContext(w.ctx, `INSERT INTO ss_env_heads (environment_id, seq, next_dense) VALUES (?, 0, 1) ON CONFLICT (environment_id) DO NOTHING`, w.env); err != nil {
		return err
	}
	// Taking the row lock first serialises this environment's writers.
	if err := w.tx.QueryRowContext(w.ctx, `UPDATE ss_env_heads SET seq = seq WHERE environment_id = ? RETURNING seq, next_dense`, w.env).Scan(&w.seq, &w.nextDense); err != nil {
		return err
	}
	w.startSeq = w.seq
	return nil
}

// finish re-evaluates the computed segments of the users the transaction
// created or changed, then moves the head.
func (w *writer) finish() error {
	if w.touched != nil && !w.touched.IsEmpty() {
		if err := w.evaluateTouched(); err != nil {
			return fmt.Errorf("segmentsync: computed segments of changed users: %w", err)
		}
	}
	if w.seq != w.startSeq || w.denseUsed {
		_, err := w.tx.ExecContext(w.ctx, `UPDATE ss_env_heads SET seq = ?, next_dense = ? WHERE environment_id = ?`, w.seq, w.nextDense, w.env)
		return err
	}
	return nil
}

// writer is the state of one write transaction of one environment.
type writer struct {
	s             *Store
	ctx           context.Context
	tx            *store.Tx
	env           string
	seq, startSeq int64
	nextDense     int64
	denseUsed     bool
	// touched holds the users created or changed (their computed segments
	// are evaluated before commit).
	touched *roaring.Bitmap
}

func (w *writer) log(kind, segmentID string, version int64, added, removed *roaring.Bitmap, detail string) error {
	if kind == KindUsers && added != nil {
		if w.touched == nil {
			w.touched = roaring.New()
		}
		w.touched.Or(added)
	}
	w.seq++
	var a, r []byte
	if added != nil {
		a = membership.Encode(added)
	}
	if removed != nil {
		r = membership.Encode(removed)
	}
	_, err := w.tx.ExecContext(w.ctx, `INSERT INTO ss_changes (environment_id, seq, kind, segment_id, version, added, removed, detail, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		w.env, w.seq, kind, segmentID, version, a, r, detail, w.s.micros())
	return err
}

const inChunk = 500

func placeholders(n int) string {
	return strings.TrimSuffix(strings.Repeat("?,", n), ",")
}

// inList completes prefix ("... AND column") with a membership test on
// values: one array parameter on PostgreSQL (a long IN list of parameters
// gets a poor generic plan there), an IN list on SQLite.
func inList[T any](d store.Dialect, prefix, env string, values []T) (string, []any) {
	if d == store.Postgres {
		// A semi-join with the unnested array, not "= ANY(?)": a plan cached
		// while the table was small (a sequential scan) then searches the
		// array linearly for every row — seconds a batch at 100 k users.
		switch any(values).(type) {
		case []string:
			return prefix + ` IN (SELECT unnest(?::text[]))`, []any{env, values}
		case []int64:
			return prefix + ` IN (SELECT unnest(?::bigint[]))`, []any{env, values}
		}
		return prefix + ` = ANY(?)`, []any{env, values}
	}
	args := make([]any, 0, len(values)+1)
	args = append(args, env)
	for _, v := range values {
		args = append(args, v)
	}
	return prefix + ` IN (` + placeholders(len(values)) + `)`, args
}

// resolve maps user ids to dense ids, creating bare users for unknown ids
// when create is set (logged as one users change).
func (w *writer) resolve(userIDs []string, create bool) (map[string]uint32, error) {
	uniq := SortedUnique(userIDs)
	dense, err := w.denseOf(uniq, create)
	if err != nil {
		return nil, err
	}
	out := make(map[string]uint32, len(uniq))
	for i, d := range dense {
		if d != 0 {
			out[uniq[i]] = d
		}
	}
	return out, nil
}

// resolveBitmap is resolve for callers that only need the dense ids.
func (w *writer) resolveBitmap(userIDs []string, create bool) (*roaring.Bitmap, error) {
	dense, err := w.denseOf(SortedUnique(userIDs), create)
	if err != nil {
		return nil, err
	}
	out := roaring.New()
	for _, d := range dense {
		if d != 0 {
			out.Add(d)
		}
	}
	return out, nil
}

// SortedUnique returns ids sorted (byte order) without duplicates: ids
// itself when it already is so (never modified), a sorted copy otherwise.
// Sorted ids are deduplicated and looked up without
// maps of strings, and users created from them enter the user-id index in
// key order (appends rather than page splits all over it).
func SortedUnique(ids []string) []string {
	if strictlySorted(ids) {
		return ids
	}
	out := slices.Clone(ids)
	slices.Sort(out)
	return slices.Compact(out)
}

func strictlySorted(ids []string) bool {
	for i := 1; i < len(ids); i++ {
		if ids[i-1] >= ids[i] {
			return false
		}
	}
	return true
}

// dense ids start at 1 (ss_env_heads.next_dense), so 0 means unknown.

// denseOf returns the dense ids of uniq (sorted, distinct), 0 for unknown
// ids; with create, unknown ids become bare users first, with consecutive
// dense ids in uniq's order.
func (w *writer) denseOf(uniq []string, create bool) ([]uint32, error) {
	dense := make([]uint32, len(uniq))
	found := 0
	// index finds an id's position in uniq: a binary search, or for a scan
	// of the whole dictionary a map (a million binary searches of strings
	// cost seconds).
	index := func(id sql.RawBytes) (int, bool) { return slices.BinarySearchFunc(uniq, id, compareID) }
	scan := func(rows *sql.Rows) error {
		defer rows.Close()
		var id sql.RawBytes
		var d int64
		for rows.Next() {
			if err := rows.Scan(&id, &d); err != nil {
				return err
			}
			if i, ok := index(id); ok {
				dense[i] = uint32(d)
				found++
			}
		}
		return rows.Err()
	}
	if len(uniq) > w.s.scanAbove {
		// Large uploads: one scan of the dictionary beats thousands of IN lists.
		pos := make(map[string]int, len(uniq))
		for i, id := range uniq {
			pos[id] = i
		}
		index = func(id sql.RawBytes) (int, bool) {
			i, ok := pos[string(id)]
			return i, ok
		}
		q := `SELECT user_id, dense_id FROM ss_users WHERE environment_id = ?`
		if w.tx.Dialect == store.Postgres {
			// Through pgx in binary form: no database/sql conversions per user.
			if err := w.tx.Pgx(func(c *pgx.Conn) error {
				rows, err := c.Query(w.ctx, w.tx.Rebind(q), w.env)
				if err != nil {
					return err
				}
				defer rows.Close()
				for rows.Next() {
					v := rows.RawValues()
					if len(v) != 2 || len(v[1]) != 8 {
						return fmt.Errorf("user row of %d values, not a text and 8 bytes", len(v))
					}
					if i, ok := index(v[0]); ok {
						dense[i] = uint32(binary.BigEndian.Uint64(v[1]))
						found++
					}
				}
				return rows.Err()
			}); err != nil {
				return nil, err
			}
			return w.createMissing(uniq, dense, found, create)
		}
		// On SQLite in dense-id order: the primary key's index leads through
		// the table in its insertion order, where the user-id index would
		// visit it at random (the table's pages read again and again).
		rows, err := w.tx.QueryContext(w.ctx, q+` ORDER BY dense_id`, w.env)
		if err != nil {
			return nil, err
		}
		if err := scan(rows); err != nil {
			return nil, err
		}
	} else {
		// PostgreSQL takes one array parameter: a batch's users in one statement.
		chunk := inChunk
		if w.tx.Dialect == store.Postgres {
			chunk = 10 * inChunk
		}
		for i := 0; i < len(uniq); i += chunk {
			q, args := inList(w.tx.Dialect, `SELECT user_id, dense_id FROM ss_users WHERE environment_id = ? AND user_id`, w.env, uniq[i:min(i+chunk, len(uniq))])
			rows, err := w.tx.QueryContext(w.ctx, q, args...)
			if err != nil {
				return nil, err
			}
			if err := scan(rows); err != nil {
				return nil, err
			}
		}
	}
	return w.createMissing(uniq, dense, found, create)
}

// createMissing completes denseOf: with create, the ids of uniq without a
// dense id (found have one) become bare users.
func (w *writer) createMissing(uniq []string, dense []uint32, found int, create bool) ([]uint32, error) {
	if !create || found == len(uniq) {
		return dense, nil
	}
	missing := make([]string, 0, len(uniq)-found)
	for i, d := range dense {
		if d == 0 {
			missing = append(missing, uniq[i])
		}
	}
	first, err := w.createUsers(missing, nil)
	if err != nil {
		return nil, err
	}
	next := first
	for i, d := range dense {
		if d == 0 {
			dense[i] = next
			next++
		}
	}
	return dense, nil
}

func compareID(a string, b sql.RawBytes) int {
	switch {
	case a < string(b):
		return -1
	case a == string(b):
		return 0
	}
	return 1
}

// insertUsers creates users with fresh dense ids (props per id may be nil).
func (w *writer) insertUsers(userIDs []string, props map[string]map[string]Prop) (map[string]uint32, error) {
	first, err := w.createUsers(userIDs, props)
	if err != nil {
		return nil, err
	}
	out := make(map[string]uint32, len(userIDs))
	for i, id := range userIDs {
		out[id] = first + uint32(i)
	}
	return out, nil
}

// createUsers creates users (distinct, none existing) with consecutive
// fresh dense ids from first, in the order given, and logs them as one users
// change. props per id may be nil.
func (w *writer) createUsers(userIDs []string, props map[string]map[string]Prop) (first uint32, err error) {
	if w.nextDense+int64(len(userIDs)) > math.MaxUint32 {
		return 0, apperr.ResourceExhausted("environment has reached the maximum of %d users", uint32(math.MaxUint32))
	}
	first = uint32(w.nextDense)
	if len(props) == 0 {
		err = w.insertBareUsers(userIDs)
	} else {
		err = w.insertUsersWithProps(userIDs, props)
	}
	if err != nil {
		return 0, err
	}
	w.nextDense += int64(len(userIDs))
	w.denseUsed = true
	added := roaring.New()
	added.AddRange(uint64(first), uint64(first)+uint64(len(userIDs)))
	return first, w.log(KindUsers, "", 0, added, nil, "")
}

// insertBareUsers inserts users without properties, dense ids from
// w.nextDense on: the ids travel as one JSON array (SQLite's json_each) or
// one text array (PostgreSQL's unnest) per statement, instead of six bound
// parameters a row.
func (w *writer) insertBareUsers(userIDs []string) error {
	now := w.s.micros()
	empty := encodeProps(nil)
	var buf []byte
	for i := 0; i < len(userIDs); i += w.s.bulkChunk {
		chunk := userIDs[i:min(i+w.s.bulkChunk, len(userIDs))]
		base := w.nextDense + int64(i)
		var err error
		if w.tx.Dialect == store.Postgres {
			_, err = w.tx.ExecContext(w.ctx, `INSERT INTO ss_users (environment_id, dense_id, user_id, properties, created_at, updated_at) SELECT ?, ?::bigint + t.o - 1, t.u, ?, ?, ? FROM unnest(?::text[]) WITH ORDINALITY AS t(u, o)`,
				w.env, base, empty, now, now, chunk)
		} else {
			var ok bool
			if buf, ok = appendJSONStrings(buf[:0], chunk); !ok {
				// Not valid UTF-8 (callers check ids; this keeps the store exact regardless).
				err = w.insertUsersWithPropsAt(chunk, nil, base, now)
			} else {
				_, err = w.tx.ExecContext(w.ctx, `INSERT INTO ss_users (environment_id, dense_id, user_id, properties, created_at, updated_at) SELECT ?, ? + key, value, ?, ?, ? FROM json_each(?)`,
					w.env, base, empty, now, now, string(buf))
			}
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// appendJSONStrings appends ids as a JSON array of strings; ok is false when
// an id is not valid UTF-8 (JSON would not carry its bytes unchanged).
func appendJSONStrings(b []byte, ids []string) (_ []byte, ok bool) {
	const hex = "0123456789abcdef"
	b = append(b, '[')
	for i, id := range ids {
		if !utf8.ValidString(id) {
			return b, false
		}
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, '"')
		for j := 0; j < len(id); j++ {
			switch c := id[j]; {
			case c == '"' || c == '\\':
				b = append(b, '\\', c)
			case c < 0x20:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			default:
				b = append(b, c)
			}
		}
		b = append(b, '"')
	}
	return append(b, ']'), true
}

// insertUsersWithProps inserts users with their properties, dense ids from
// w.nextDense on.
func (w *writer) insertUsersWithProps(userIDs []string, props map[string]map[string]Prop) error {
	return w.insertUsersWithPropsAt(userIDs, props, w.nextDense, w.s.micros())
}

func (w *writer) insertUsersWithPropsAt(userIDs []string, props map[string]map[string]Prop, base, now int64) error {
	const rowsPer = 400
	for i := 0; i < len(userIDs); i += rowsPer {
		chunk := userIDs[i:min(i+rowsPer, len(userIDs))]
		args := make([]any, 0, len(chunk)*6)
		var b strings.Builder
		for j, id := range chunk {
			if j > 0 {
				b.WriteString(",")
			}
			b.WriteString("(?, ?, ?, ?, ?, ?)")
			args = append(args, w.env, base+int64(i+j), id, encodeProps(props[id]), now, now)
		}
		if _, err := w.tx.ExecContext(w.ctx, `INSERT INTO ss_users (environment_id, dense_id, user_id, properties, created_at, updated_at) VALUES `+b.String(), args...); err != nil {
			return err
		}
	}
	return nil
}

func dedupe(in []string) []string {
	seen := make(map[string]struct{}, len(in))
	out := make([]string, 0, len(in))
	for _, id := range in {
		if _, ok := seen[id]; !ok {
			seen[id] = struct{}{}
			out = append(out, id)
		}
	}
	return out
}

// UpsertUsers creates or updates users, merging properties.
func (s *Store) UpsertUsers(ctx context.Context, env string, users []UserUpsert) (created, updated int, err error) {
	err = s.write(ctx, env, func(w *writer) error {
		created, updated = 0, 0
		byID := make(map[string]UserUpsert, len(users))
		order := make([]string, 0, len(users))
		for _, u := range users {
			if prev, ok := byID[u.ID]; ok {
				for k, v := range u.Props {
					prev.Props[k] = v
				}
				continue
			}
			merged := UserUpsert{ID: u.ID, Props: map[string]*Prop{}}
			for k, v := range u.Props {
				merged.Props[k] = v
			}
			byID[u.ID] = merged
			order = append(order, u.ID)
		}
		existing, err := w.loadUsers(order)
		if err != nil {
			return err
		}
		var missing []string
		newProps := map[string]map[string]Prop{}
		touched := roaring.New()
		now := s.micros()
		for _, id := range order {
			u := byID[id]
			cur, ok := existing[id]
			if !ok {
				missing = append(missing, id)
				props := map[string]Prop{}
				for k, v := range u.Props {
					if v != nil {
						props[k] = *v
					}
				}
				newProps[id] = props
				continue
			}
			for k, v := range u.Props {
				if v == nil {
					delete(cur.Props, k)
				} else {
					cur.Props[k] = *v
				}
			}
			if _, err := w.tx.ExecContext(ctx, `UPDATE ss_users SET properties = ?, updated_at = ? WHERE environment_id = ? AND dense_id = ?`, encodeProps(cur.Props), now, env, int64(cur.Dense)); err != nil {
				return err
			}
			touched.Add(cur.Dense)
			updated++
		}
		if len(missing) > 0 {
			if _, err := w.insertUsers(missing, newProps); err != nil {
				return err
			}
			created = len(missing)
		}
		if !touched.IsEmpty() {
			return w.log(KindUsers, "", 0, touched, nil, "")
		}
		return nil
	})
	return created, updated, err
}

func (w *writer) loadUsers(userIDs []string) (map[string]*User, error) {
	out := map[string]*User{}
	for i := 0; i < len(userIDs); i += inChunk {
		chunk := userIDs[i:min(i+inChunk, len(userIDs))]
		q, args := inList(w.tx.Dialect, `SELECT `+userCols+` FROM ss_users WHERE environment_id = ? AND user_id`, w.env, chunk)
		rows, err := w.tx.QueryContext(w.ctx, q, args...)
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			u, err := scanUser(rows)
			if err != nil {
				rows.Close()
				return nil, err
			}
			out[u.ID] = u
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

const userCols = `user_id, dense_id, properties, created_at, updated_at`

func scanUser(sc interface{ Scan(...any) error }) (*User, error) {
	var u User
	var d, c, up int64
	var props string
	if err := sc.Scan(&u.ID, &d, &props, &c, &up); err != nil {
		return nil, err
	}
	u.Dense = uint32(d)
	var err error
	if u.Props, err = decodeProps(props); err != nil {
		return nil, err
	}
	u.Created, u.Updated = time.UnixMicro(c).UTC(), time.UnixMicro(up).UTC()
	return &u, nil
}

// GetUser returns a user and the segments it is in.
func (s *Store) GetUser(ctx context.Context, env, userID string) (*User, error) {
	u, err := scanUser(s.db.QueryRowContext(ctx, `SELECT `+userCols+` FROM ss_users WHERE environment_id = ? AND user_id = ?`, env, userID))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, apperr.NotFound("user %q not found", userID)
	}
	if err != nil {
		return nil, err
	}
	if u.Segments, err = userSegmentIDs(ctx, s.db, env, u.Dense); err != nil {
		return nil, fmt.Errorf("segmentsync: segments of user %q: %w", userID, err)
	}
	return u, nil
}

// UsersByDense returns the users with the given dense ids that still exist.
func (s *Store) UsersByDense(ctx context.Context, env string, dense []uint32) ([]*User, error) {
	if len(dense) == 0 {
		return nil, nil
	}
	// Users created together have consecutive dense ids: read them as one
	// range (one statement shape, one index range scan) rather than IN
	// lists, when the range holds at most twice the users asked for.
	want := roaring.BitmapOf(dense...)
	if lo, hi := want.Minimum(), want.Maximum(); uint64(hi-lo)+1 <= 2*want.GetCardinality() {
		return s.usersInRange(ctx, env, lo, hi, want)
	}
	var out []*User
	for i := 0; i < len(dense); i += inChunk {
		chunk := make([]int64, 0, inChunk)
		for _, d := range dense[i:min(i+inChunk, len(dense))] {
			chunk = append(chunk, int64(d))
		}
		q, args := inList(s.db.Dialect, `SELECT `+userCols+` FROM ss_users WHERE environment_id = ? AND dense_id`, env, chunk)
		rows, err := s.db.QueryContext(ctx, q+` ORDER BY dense_id`, args...)
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			u, err := scanUser(rows)
			if err != nil {
				rows.Close()
				return nil, err
			}
			out = append(out, u)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// usersInRange returns the users of want, all within [lo, hi], in dense order.
func (s *Store) usersInRange(ctx context.Context, env string, lo, hi uint32, want *roaring.Bitmap) ([]*User, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+userCols+` FROM ss_users WHERE environment_id = ? AND dense_id >= ? AND dense_id <= ? ORDER BY dense_id`, env, int64(lo), int64(hi))
	if err != nil {
		return nil, fmt.Errorf("segmentsync: users %d..%d of %s: %w", lo, hi, env, err)
	}
	defer rows.Close()
	out := make([]*User, 0, want.GetCardinality())
	for rows.Next() {
		u, err := scanUser(rows)
		if err != nil {
			return nil, err
		}
		if want.Contains(u.Dense) {
			out = append(out, u)
		}
	}
	return out, rows.Err()
}

// UsersPage returns up to limit users with dense id > after, in order.
func (s *Store) UsersPage(ctx context.Context, env string, after uint32, limit int) ([]*User, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+userCols+` FROM ss_users WHERE environment_id = ? AND dense_id > ? ORDER BY dense_id LIMIT ?`, env, int64(after), limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*User
	for rows.Next() {
		u, err := scanUser(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, u)
	}
	return out, rows.Err()
}

// LeanUser is a user as a dictionary needs it: no times, properties only
// when it holds some.
type LeanUser struct {
	Dense uint32
	ID    string
	Props map[string]Prop // nil when none
	// PropBytes is the size of the stored properties (0 when none), to
	// bound what one message carries.
	PropBytes int
}

// LeanUsersPage returns up to limit users with dense id > after, in order,
// stopping early once their properties pass maxPropBytes. Properties are
// decoded only for users holding some (bare users are the bulk of large
// environments).
func (s *Store) LeanUsersPage(ctx context.Context, env string, after uint32, limit, maxPropBytes int) ([]LeanUser, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT dense_id, user_id, properties FROM ss_users WHERE environment_id = ? AND dense_id > ? ORDER BY dense_id LIMIT ?`, env, int64(after), limit)
	if err != nil {
		return nil, fmt.Errorf("segmentsync: users of %s after %d: %w", env, after, err)
	}
	defer rows.Close()
	empty := encodeProps(nil)
	out := make([]LeanUser, 0, min(limit, 4096))
	var props sql.RawBytes
	total := 0
	for rows.Next() {
		var u LeanUser
		var d int64
		if err := rows.Scan(&d, &u.ID, &props); err != nil {
			return nil, err
		}
		u.Dense = uint32(d)
		if string(props) != empty {
			if u.Props, err = decodeProps(string(props)); err != nil {
				return nil, err
			}
			if len(u.Props) == 0 {
				u.Props = nil
			}
			u.PropBytes = len(props)
			total += len(props)
		}
		out = append(out, u)
		if total >= maxPropBytes {
			break
		}
	}
	return out, rows.Err()
}

// DeleteUser deletes a user and removes it from every segment.
func (s *Store) DeleteUser(ctx context.Context, env, userID string) ([]string, error) {
	var removedFrom []string
	err := s.write(ctx, env, func(w *writer) error {
		removedFrom = nil
		var d int64
		err := w.tx.QueryRowContext(ctx, `SELECT dense_id FROM ss_users WHERE environment_id = ? AND user_id = ?`, env, userID).Scan(&d)
		if errors.Is(err, sql.ErrNoRows) {
			return apperr.NotFound("user %q not found", userID)
		}
		if err != nil {
			return err
		}
		segIDs, err := userSegmentIDs(ctx, w.tx, env, uint32(d))
		if err != nil {
			return fmt.Errorf("segmentsync: segments of user %q: %w", userID, err)
		}
		one := roaring.BitmapOf(uint32(d))
		for _, id := range segIDs {
			sg, err := s.getSegment(ctx, w.tx, env, id, true)
			if err != nil {
				return err
			}
			if _, _, err := w.applyMembership(sg, nil, one); err != nil {
				return err
			}
			removedFrom = append(removedFrom, sg.ID)
		}
		if s.beforeDelete != nil {
			if err := s.beforeDelete(ctx, w.tx, env, uint32(d), userID); err != nil {
				return err
			}
		}
		if _, err := w.tx.ExecContext(ctx, `DELETE FROM ss_users WHERE environment_id = ? AND dense_id = ?`, env, d); err != nil {
			return err
		}
		if err := w.forgetUserEvents(uint32(d)); err != nil {
			return fmt.Errorf("segmentsync: forget events of user %q: %w", userID, err)
		}
		detail, _ := json.Marshal([]string{userID})
		return w.log(KindUsersDeleted, "", 0, nil, one, string(detail))
	})
	return removedFrom, err
}

const segCols = `segment_id, environment_id, name, description, visibility, external_id, member_count, version, created_at, updated_at`

func scanSegment(sc interface{ Scan(...any) error }, withMembers bool) (*Segment, error) {
	var sg Segment
	var count, c, u int64
	dest := []any{&sg.ID, &sg.Env, &sg.Name, &sg.Description, &sg.Visibility, &sg.ExternalID, &count, &sg.Version, &c, &u}
	var blob []byte
	if withMembers {
		dest = append(dest, &blob)
	}
	if err := sc.Scan(dest...); err != nil {
		return nil, err
	}
	sg.Count = uint64(count)
	sg.Created, sg.Updated = time.UnixMicro(c).UTC(), time.UnixMicro(u).UTC()
	if withMembers {
		m, err := membership.Decode(blob)
		if err != nil {
			return nil, err
		}
		sg.Members = m
	}
	return &sg, nil
}

func (s *Store) segments(ctx context.Context, q store.Querier, env string, withMembers bool) ([]*Segment, error) {
	cols := segCols
	if withMembers {
		cols += `, members`
	}
	rows, err := q.QueryContext(ctx, `SELECT `+cols+` FROM ss_segments WHERE environment_id = ? ORDER BY segment_id`, env)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*Segment
	for rows.Next() {
		sg, err := scanSegment(rows, withMembers)
		if err != nil {
			return nil, err
		}
		out = append(out, sg)
	}
	return out, rows.Err()
}

// Segments returns every segment of env, with members when asked.
func (s *Store) Segments(ctx context.Context, env string, withMembers bool) ([]*Segment, error) {
	return s.segments(ctx, s.db, env, withMembers)
}

// CreateSegment creates an empty segment.
func (s *Store) CreateSegment(ctx context.Context, env, name, description, visibility, externalID string) (*Segment, error) {
	now := s.now().UTC().Truncate(time.Microsecond)
	sg := &Segment{ID: newSegmentID(), Env: env, Name: name, Description: description, Visibility: visibility, ExternalID: externalID, Version: 1, Created: now, Updated: now, Members: roaring.New()}
	err := s.write(ctx, env, func(w *writer) error {
		_, err := w.tx.ExecContext(ctx, `INSERT INTO ss_segments (`+segCols+`, members) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			sg.ID, env, name, description, visibility, externalID, 0, sg.Version, now.UnixMicro(), now.UnixMicro(), membership.Encode(sg.Members))
		if store.IsUniqueViolation(err) {
			return apperr.AlreadyExists("a segment named %q already exists in this environment", name)
		}
		if err != nil {
			return err
		}
		return w.log(KindSegment, sg.ID, sg.Version, nil, nil, "")
	})
	if err != nil {
		return nil, err
	}
	return sg, nil
}

func (s *Store) getSegment(ctx context.Context, q store.Querier, env, id string, withMembers bool) (*Segment, error) {
	cols := segCols
	if withMembers {
		cols += `, members`
	}
	sg, err := scanSegment(q.QueryRowContext(ctx, `SELECT `+cols+` FROM ss_segments WHERE environment_id = ? AND segment_id = ?`, env, id), withMembers)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, apperr.NotFound("segment %q not found", id)
	}
	return sg, err
}

// GetSegment returns a segment, with its members when asked.
func (s *Store) GetSegment(ctx context.Context, env, id string, withMembers bool) (*Segment, error) {
	return s.getSegment(ctx, s.db, env, id, withMembers)
}

// SegmentByExternalID finds the segment linked to an analytics tool's id.
func (s *Store) SegmentByExternalID(ctx context.Context, env, externalID string) (*Segment, error) {
	var id string
	err := s.db.QueryRowContext(ctx, `SELECT segment_id FROM ss_segments WHERE environment_id = ? AND external_id = ?`, env, externalID).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, apperr.NotFound("no segment linked to external id %q", externalID)
	}
	if err != nil {
		return nil, err
	}
	return s.GetSegment(ctx, env, id, false)
}

// SegmentFilter narrows ListSegments.
type SegmentFilter struct {
	Visibility string
	NonEmpty   bool
	// NameContains keeps segments whose name contains it, ignoring case.
	NameContains string
	// TargetableBy keeps segments at least one of whose members holds this
	// identity property: the only ones its destination can target.
	TargetableBy string
}

// likeEscaper makes user text literal inside a LIKE pattern.
var likeEscaper = strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`)

// ListSegments pages through segments ordered by (name, id) after the given cursor.
func (s *Store) ListSegments(ctx context.Context, env string, f SegmentFilter, afterName, afterID string, limit int) ([]*Segment, error) {
	if f.TargetableBy == "user_id" {
		f.TargetableBy, f.NonEmpty = "", true // every user has their own id
	}
	if f.TargetableBy == "" {
		return s.listSegments(ctx, env, f, afterName, afterID, limit, false)
	}
	holders, err := s.PropertyHolders(ctx, env, f.TargetableBy)
	if err != nil {
		return nil, err
	}
	f.NonEmpty = true
	// Membership is in bitmaps, not SQL: read pages and keep those meeting a holder.
	var out []*Segment
	for len(out) < limit && !holders.IsEmpty() {
		page, err := s.listSegments(ctx, env, f, afterName, afterID, limit, true)
		if err != nil {
			return nil, err
		}
		for _, sg := range page {
			if sg.Members.Intersects(holders) && len(out) < limit {
				sg.Members = nil
				out = append(out, sg)
			}
		}
		if len(page) < limit {
			break
		}
		afterName, afterID = page[len(page)-1].Name, page[len(page)-1].ID
	}
	return out, nil
}

// PropertyHolders returns the dense ids of the users holding a property.
func (s *Store) PropertyHolders(ctx context.Context, env, name string) (*roaring.Bitmap, error) {
	held := `EXISTS (SELECT 1 FROM json_each(properties) p WHERE p.key = ?)`
	if s.db.Dialect == store.Postgres {
		held = `jsonb_exists(properties::jsonb, ?)`
	}
	rows, err := s.db.QueryContext(ctx, `SELECT dense_id FROM ss_users WHERE environment_id = ? AND `+held, env, name)
	if err != nil {
		return nil, fmt.Errorf("segmentsync: users holding %q in %s: %w", name, env, err)
	}
	defer rows.Close()
	out := roaring.New()
	for rows.Next() {
		var d int64
		if err := rows.Scan(&d); err != nil {
			return nil, err
		}
		out.Add(uint32(d))
	}
	return out, rows.Err()
}

func (s *Store) listSegments(ctx context.Context, env string, f SegmentFilter, afterName, afterID string, limit int, withMembers bool) ([]*Segment, error) {
	cols := segCols
	if withMembers {
		cols += `, members`
	}
	q := `SELECT ` + cols + ` FROM ss_segments WHERE environment_id = ? AND (name > ? OR (name = ? AND segment_id > ?))`
	args := []any{env, afterName, afterName, afterID}
	if f.Visibility != "" {
		q += ` AND visibility = ?`
		args = append(args, f.Visibility)
	}
	if f.NonEmpty {
		q += ` AND member_count > 0`
	}
	if f.NameContains != "" {
		q += ` AND lower(name) LIKE ? ESCAPE '\'`
		args = append(args, "%"+likeEscaper.Replace(strings.ToLower(f.NameContains))+"%")
	}
	q += ` ORDER BY name, segment_id LIMIT ?`
	args = append(args, limit)
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*Segment
	for rows.Next() {
		sg, err := scanSegment(rows, withMembers)
		if err != nil {
			return nil, err
		}
		out = append(out, sg)
	}
	return out, rows.Err()
}

// SegmentUpdate lists the fields to change; nil leaves a field as it is.
type SegmentUpdate struct {
	Name, Description, Visibility *string
	// Rule replaces a computed segment's rule (validated by rules.Compile).
	Rule *segmentsyncv1.SegmentRule
}

// UpdateSegment changes a segment's metadata and bumps its version.
func (s *Store) UpdateSegment(ctx context.Context, env, id string, up SegmentUpdate) (*Segment, error) {
	var out *Segment
	err := s.write(ctx, env, func(w *writer) error {
		sg, err := s.getSegment(ctx, w.tx, env, id, false)
		if err != nil {
			return err
		}
		if up.Name != nil {
			sg.Name = *up.Name
		}
		if up.Description != nil {
			sg.Description = *up.Description
		}
		if up.Visibility != nil {
			sg.Visibility = *up.Visibility
		}
		sg.Version++
		sg.Updated = s.now().UTC().Truncate(time.Microsecond)
		_, err = w.tx.ExecContext(ctx, `UPDATE ss_segments SET name = ?, description = ?, visibility = ?, version = ?, updated_at = ? WHERE segment_id = ?`, sg.Name, sg.Description, sg.Visibility, sg.Version, sg.Updated.UnixMicro(), id)
		if store.IsUniqueViolation(err) {
			return apperr.AlreadyExists("a segment named %q already exists in this environment", sg.Name)
		}
		if err != nil {
			return err
		}
		if up.Rule != nil {
			if err := w.setRule(id, up.Rule); err != nil {
				return err
			}
		}
		out = sg
		return w.log(KindSegment, id, sg.Version, nil, nil, "")
	})
	return out, err
}

// DeleteSegment deletes a segment; watchers (targeting, the sync engine)
// are told by a segment_deleted change.
func (s *Store) DeleteSegment(ctx context.Context, env, id string) error {
	return s.write(ctx, env, func(w *writer) error {
		sg, err := s.getSegment(ctx, w.tx, env, id, true)
		if err != nil {
			return err
		}
		if _, err := w.tx.ExecContext(ctx, `DELETE FROM ss_segments WHERE segment_id = ?`, id); err != nil {
			return err
		}
		if err := w.unindexMembers(id, sg.Members); err != nil {
			return fmt.Errorf("segmentsync: unindex members of segment %s: %w", id, err)
		}
		if _, err := w.tx.ExecContext(ctx, `DELETE FROM ss_user_segments_backfill WHERE segment_id = ?`, id); err != nil {
			return err
		}
		if err := w.forgetComputed(id); err != nil {
			return fmt.Errorf("segmentsync: forget rule of segment %s: %w", id, err)
		}
		return w.log(KindSegmentDeleted, id, sg.Version+1, nil, nil, "")
	})
}

// applyMembership adds and removes dense ids, writes the segment and logs the
// actual change. It returns how many were added and removed.
func (w *writer) applyMembership(sg *Segment, add, remove *roaring.Bitmap) (added, removed uint64, err error) {
	var realAdd, realRemove *roaring.Bitmap
	if add != nil {
		realAdd = roaring.AndNot(add, sg.Members)
	} else {
		realAdd = roaring.New()
	}
	if remove != nil {
		realRemove = roaring.And(remove, sg.Members)
		realRemove.AndNot(realAdd)
	} else {
		realRemove = roaring.New()
	}
	if realAdd.IsEmpty() && realRemove.IsEmpty() {
		return 0, 0, nil
	}
	if err := w.indexMembers(sg.ID, realAdd); err != nil {
		return 0, 0, fmt.Errorf("segmentsync: index members of segment %s: %w", sg.ID, err)
	}
	if err := w.unindexMembers(sg.ID, realRemove); err != nil {
		return 0, 0, fmt.Errorf("segmentsync: unindex members of segment %s: %w", sg.ID, err)
	}
	sg.Members.Or(realAdd)
	sg.Members.AndNot(realRemove)
	sg.Count = sg.Members.GetCardinality()
	sg.Version++
	sg.Updated = w.s.now().UTC().Truncate(time.Microsecond)
	if _, err := w.tx.ExecContext(w.ctx, `UPDATE ss_segments SET members = ?, member_count = ?, version = ?, updated_at = ? WHERE segment_id = ?`,
		membership.Encode(sg.Members), int64(sg.Count), sg.Version, sg.Updated.UnixMicro(), sg.ID); err != nil {
		return 0, 0, err
	}
	return realAdd.GetCardinality(), realRemove.GetCardinality(), w.log(KindMembership, sg.ID, sg.Version, realAdd, realRemove, "")
}

// MembershipResult is the outcome of a membership write.
type MembershipResult struct {
	Added, Removed, Count uint64
	Version               int64
}

// ChangeMembers adds and removes user ids (unknown ids in adds create bare
// users; unknown ids in removes are not members anyway).
func (s *Store) ChangeMembers(ctx context.Context, env, segmentID string, add, remove []string) (MembershipResult, error) {
	var res MembershipResult
	err := s.write(ctx, env, func(w *writer) error {
		sg, err := s.getSegment(ctx, w.tx, env, segmentID, true)
		if err != nil {
			return err
		}
		if err := w.refuseComputed(sg); err != nil {
			return err
		}
		a, err := w.resolveBitmap(add, true)
		if err != nil {
			return err
		}
		r, err := w.resolveBitmap(remove, false)
		if err != nil {
			return err
		}
		added, removed, err := w.applyMembership(sg, a, r)
		if err != nil {
			return err
		}
		res = MembershipResult{Added: added, Removed: removed, Count: sg.Count, Version: sg.Version}
		return nil
	})
	return res, err
}

// ReplaceMembers sets a segment's membership to exactly userIDs, atomically.
func (s *Store) ReplaceMembers(ctx context.Context, env, segmentID string, userIDs []string) (MembershipResult, error) {
	var res MembershipResult
	err := s.write(ctx, env, func(w *writer) error {
		sg, err := s.getSegment(ctx, w.tx, env, segmentID, true)
		if err != nil {
			return err
		}
		if err := w.refuseComputed(sg); err != nil {
			return err
		}
		target, err := w.resolveBitmap(userIDs, true)
		if err != nil {
			return err
		}
		adds, removes := membership.Diff(target, sg.Members)
		added, removed, err := w.applyMembership(sg, adds, removes)
		if err != nil {
			return err
		}
		res = MembershipResult{Added: added, Removed: removed, Count: sg.Count, Version: sg.Version}
		return nil
	})
	return res, err
}

// DenseIDs looks user ids up without creating any.
func (s *Store) DenseIDs(ctx context.Context, env string, userIDs []string) (map[string]uint32, error) {
	var out map[string]uint32
	err := s.db.InTx(ctx, func(tx *store.Tx) error {
		w := &writer{s: s, ctx: ctx, tx: tx, env: env}
		var err error
		out, err = w.resolve(userIDs, false)
		return err
	})
	return out, err
}

// UserIDs maps dense ids to user ids.
func (s *Store) UserIDs(ctx context.Context, env string, dense []uint32) (map[uint32]string, error) {
	users, err := s.UsersByDense(ctx, env, dense)
	if err != nil {
		return nil, err
	}
	out := make(map[uint32]string, len(users))
	for _, u := range users {
		out[u.Dense] = u.ID
	}
	return out, nil
}

// Head returns env's last change-log sequence.
func (s *Store) Head(ctx context.Context, env string) (int64, error) {
	var seq int64
	err := s.db.QueryRowContext(ctx, `SELECT seq FROM ss_env_heads WHERE environment_id = ?`, env).Scan(&seq)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	return seq, err
}

// OldestSeq returns the first sequence still in env's log (0 when empty).
func (s *Store) OldestSeq(ctx context.Context, env string) (int64, error) {
	var seq sql.NullInt64
	err := s.db.QueryRowContext(ctx, `SELECT MIN(seq) FROM ss_changes WHERE environment_id = ?`, env).Scan(&seq)
	return seq.Int64, err
}

// Changes returns env's log entries after seq, in order.
func (s *Store) Changes(ctx context.Context, env string, after int64, limit int) ([]Change, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT seq, kind, segment_id, version, added, removed, detail FROM ss_changes WHERE environment_id = ? AND seq > ? ORDER BY seq LIMIT ?`, env, after, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Change
	for rows.Next() {
		c := Change{Env: env}
		var a, r []byte
		if err := rows.Scan(&c.Seq, &c.Kind, &c.SegmentID, &c.Version, &a, &r, &c.Detail); err != nil {
			return nil, err
		}
		if c.Added, err = membership.Decode(a); err != nil {
			return nil, err
		}
		if c.Removed, err = membership.Decode(r); err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

// Prune keeps at most keep entries of each environment's log; watchers
// further behind get a fresh snapshot.
func (s *Store) Prune(ctx context.Context, keep int64) error {
	rows, err := s.db.QueryContext(ctx, `SELECT environment_id, seq FROM ss_env_heads`)
	if err != nil {
		return err
	}
	type head struct {
		env string
		seq int64
	}
	var heads []head
	for rows.Next() {
		var h head
		if err := rows.Scan(&h.env, &h.seq); err != nil {
			rows.Close()
			return err
		}
		heads = append(heads, h)
	}
	rows.Close()
	for _, h := range heads {
		if h.seq > keep {
			if _, err := s.db.ExecContext(ctx, `DELETE FROM ss_changes WHERE environment_id = ? AND seq <= ?`, h.env, h.seq-keep); err != nil {
				return err
			}
		}
	}
	return nil
}

// Environments lists every environment with segmentsync data or an admin row.
func (s *Store) Environments(ctx context.Context) ([]string, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id FROM environments UNION SELECT environment_id FROM ss_env_heads`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		out = append(out, id)
	}
	sort.Strings(out)
	return out, rows.Err()
}

// Identity is a member's id at a destination.
type Identity struct {
	UserID, Value string
}

// UsersChangedSince returns the users created, updated or deleted in env
// after log sequence seq; ok is false when the log was pruned past seq (the
// caller must then assume any user may have changed).
func (s *Store) UsersChangedSince(ctx context.Context, env string, seq int64) (changed *roaring.Bitmap, ok bool, err error) {
	head, err := s.Head(ctx, env)
	if err != nil {
		return nil, false, err
	}
	changed = roaring.New()
	if head <= seq {
		return changed, head == seq, nil
	}
	oldest, err := s.OldestSeq(ctx, env)
	if err != nil {
		return nil, false, err
	}
	if oldest == 0 || oldest > seq+1 {
		return nil, false, nil
	}
	rows, err := s.db.QueryContext(ctx, `SELECT added, removed FROM ss_changes WHERE environment_id = ? AND seq > ? AND kind IN (?, ?)`, env, seq, KindUsers, KindUsersDeleted)
	if err != nil {
		return nil, false, err
	}
	defer rows.Close()
	for rows.Next() {
		var a, r []byte
		if err := rows.Scan(&a, &r); err != nil {
			return nil, false, err
		}
		for _, blob := range [][]byte{a, r} {
			m, err := membership.Decode(blob)
			if err != nil {
				return nil, false, err
			}
			changed.Or(m)
		}
	}
	return changed, true, rows.Err()
}

// IdentityValues returns, for the users in members, the value of the
// identity property ("user_id" means the user id itself); users without a
// value are absent. Few members are looked up by dense id; many take one
// scan of the environment's users, which is cheaper per user.
func (s *Store) IdentityValues(ctx context.Context, env, prop string, members *roaring.Bitmap) (map[uint32]Identity, error) {
	var nextDense int64
	if err := s.db.QueryRowContext(ctx, `SELECT next_dense FROM ss_env_heads WHERE environment_id = ?`, env).Scan(&nextDense); err != nil && !errors.Is(err, sql.ErrNoRows) {
		return nil, err
	}
	if int64(members.GetCardinality())*lookupCost < nextDense {
		return s.identityValuesByLookup(ctx, env, prop, members)
	}
	return s.identityValuesByScan(ctx, env, prop, members)
}

func (s *Store) identityValuesByLookup(ctx context.Context, env, prop string, members *roaring.Bitmap) (map[uint32]Identity, error) {
	out := make(map[uint32]Identity, members.GetCardinality())
	users, err := s.UsersByDense(ctx, env, members.ToArray())
	if err != nil {
		return nil, err
	}
	for _, u := range users {
		if id, ok := identityOf(u.ID, u.Props, prop); ok {
			out[u.Dense] = id
		}
	}
	return out, nil
}

func (s *Store) identityValuesByScan(ctx context.Context, env, prop string, members *roaring.Bitmap) (map[uint32]Identity, error) {
	out := make(map[uint32]Identity, members.GetCardinality())
	if prop == "user_id" {
		// The id alone: reading every user's properties would be the cost.
		rows, err := s.db.QueryContext(ctx, `SELECT dense_id, user_id FROM ss_users WHERE environment_id = ?`, env)
		if err != nil {
			return nil, err
		}
		defer rows.Close()
		for rows.Next() {
			var d int64
			var id string
			if err := rows.Scan(&d, &id); err != nil {
				return nil, err
			}
			if members.Contains(uint32(d)) {
				out[uint32(d)] = Identity{UserID: id, Value: id}
			}
		}
		return out, rows.Err()
	}
	rows, err := s.db.QueryContext(ctx, `SELECT dense_id, user_id, properties FROM ss_users WHERE environment_id = ?`, env)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	needle := `"` + prop + `"`
	for rows.Next() {
		var d int64
		var id, props string
		if err := rows.Scan(&d, &id, &props); err != nil {
			return nil, err
		}
		if !members.Contains(uint32(d)) {
			continue
		}
		var pm map[string]Prop
		if prop != "user_id" {
			if !strings.Contains(props, needle) {
				continue // decoding is the cost: skip users without the property
			}
			if pm, err = decodeProps(props); err != nil {
				return nil, err
			}
		}
		if v, ok := identityOf(id, pm, prop); ok {
			out[uint32(d)] = v
		}
	}
	return out, rows.Err()
}

// lookupCost is roughly what reading one user by dense id costs in rows of a
// sequential scan.
const lookupCost = 8

func identityOf(userID string, props map[string]Prop, prop string) (Identity, bool) {
	if prop == "user_id" {
		return Identity{UserID: userID, Value: userID}, true
	}
	if v, ok := props[prop]; ok {
		if val := v.String(); val != "" {
			return Identity{UserID: userID, Value: val}, true
		}
	}
	return Identity{}, false
}
