package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/RoaringBitmap/roaring/v2"

	"github.com/seghub/seghub/pkg/apperr"
	"github.com/seghub/seghub/pkg/membership"
)

// InboundPage is one page of a partner-webhook sync task.
type InboundPage struct {
	ConnectionID, TaskID           string
	ExternalSegmentID, SegmentName string
	Page, TotalPages               int
	Adds, Removes                  []string
	// IdentityProperty is what incoming ids are matched on ("user_id" or a
	// user property).
	IdentityProperty string
}

// InboundTask is a task's progress.
type InboundTask struct {
	ConnectionID, TaskID, SegmentID, ExternalSegmentID string
	PagesReceived, TotalPages                          int
	Adds, Removes                                      uint64
	Applied                                            bool
	FirstPage, AppliedAt                               time.Time
}

// ReceiveInboundPage stores a page (a repeated page changes nothing) and,
// when it completes its task, applies every page of the task in the same
// transaction: the segment is created on first sight (public, named from the
// payload, linked to its external id), unknown ids become bare users with the
// identity property set, adds and removes are applied.
func (s *Store) ReceiveInboundPage(ctx context.Context, env string, p InboundPage) (*InboundTask, error) {
	var task *InboundTask
	err := s.write(ctx, env, func(w *writer) error {
		now := s.micros()
		if _, err := w.tx.ExecContext(ctx, `INSERT INTO ss_inbound_tasks (connection_id, sync_task_id, environment_id, external_segment_id, segment_name, segment_id, total_pages, pages_received, adds, removes, applied, first_page_at, applied_at)
			VALUES (?, ?, ?, ?, ?, '', ?, 0, 0, 0, FALSE, ?, 0) ON CONFLICT (connection_id, sync_task_id) DO NOTHING`, p.ConnectionID, p.TaskID, env, p.ExternalSegmentID, p.SegmentName, p.TotalPages, now); err != nil {
			return err
		}
		t, err := loadTask(ctx, w.tx, p.ConnectionID, p.TaskID)
		if err != nil {
			return err
		}
		if t.TotalPages != p.TotalPages {
			return apperr.Invalid("data.sync_info.total_pages", fmt.Sprintf("task %s was announced with %d pages, this page says %d", p.TaskID, t.TotalPages, p.TotalPages))
		}
		if t.ExternalSegmentID != p.ExternalSegmentID {
			return apperr.Invalid("data.segment.id", fmt.Sprintf("task %s is for segment %s", p.TaskID, t.ExternalSegmentID))
		}
		task = t
		if t.Applied {
			return nil // a late duplicate of an applied task
		}
		adds, _ := json.Marshal(p.Adds)
		removes, _ := json.Marshal(p.Removes)
		res, err := w.tx.ExecContext(ctx, `INSERT INTO ss_inbound_pages (connection_id, sync_task_id, page_number, adds, removes) VALUES (?, ?, ?, ?, ?) ON CONFLICT (connection_id, sync_task_id, page_number) DO NOTHING`, p.ConnectionID, p.TaskID, p.Page, string(adds), string(removes))
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return samePage(ctx, w.tx, p) // a repeated page changes nothing
		}
		t.PagesReceived++
		if _, err := w.tx.ExecContext(ctx, `UPDATE ss_inbound_tasks SET pages_received = ? WHERE connection_id = ? AND sync_task_id = ?`, t.PagesReceived, p.ConnectionID, p.TaskID); err != nil {
			return err
		}
		if t.PagesReceived < t.TotalPages {
			return nil
		}
		return w.applyInbound(t, p)
	})
	return task, err
}

// samePage refuses a page number received before with other content: a
// page number names one content, and dropping the new one as a repeat
// would lose the identities a sender meant to deliver.
func samePage(ctx context.Context, q interface {
	QueryRowContext(context.Context, string, ...any) *sql.Row
}, p InboundPage) error {
	var adds, removes string
	if err := q.QueryRowContext(ctx, `SELECT adds, removes FROM ss_inbound_pages WHERE connection_id = ? AND sync_task_id = ? AND page_number = ?`, p.ConnectionID, p.TaskID, p.Page).Scan(&adds, &removes); err != nil {
		return fmt.Errorf("segmentsync: read page %d of inbound task %s: %w", p.Page, p.TaskID, err)
	}
	var first InboundPage
	if err := json.Unmarshal([]byte(adds), &first.Adds); err != nil {
		return fmt.Errorf("segmentsync: decode page %d of inbound task %s: %w", p.Page, p.TaskID, err)
	}
	if err := json.Unmarshal([]byte(removes), &first.Removes); err != nil {
		return fmt.Errorf("segmentsync: decode page %d of inbound task %s: %w", p.Page, p.TaskID, err)
	}
	if !sameIDs(first.Adds, p.Adds) || !sameIDs(first.Removes, p.Removes) {
		return apperr.Invalid("data.sync_info.page_number", fmt.Sprintf("page %d of task %s was received before with other users; a page number names one content, so send changed membership under a new sync_task_id", p.Page, p.TaskID))
	}
	return nil
}

// sameIDs compares two lists of ids as sets (a sender may list them in
// another order when it repeats a page).
func sameIDs(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	seen := make(map[string]int, len(a))
	for _, id := range a {
		seen[id]++
	}
	for _, id := range b {
		if seen[id] == 0 {
			return false
		}
		seen[id]--
	}
	return true
}

func loadTask(ctx context.Context, q interface {
	QueryRowContext(context.Context, string, ...any) *sql.Row
}, conn, taskID string) (*InboundTask, error) {
	var t InboundTask
	var first, applied int64
	err := q.QueryRowContext(ctx, `SELECT connection_id, sync_task_id, segment_id, external_segment_id, pages_received, total_pages, adds, removes, applied, first_page_at, applied_at FROM ss_inbound_tasks WHERE connection_id = ? AND sync_task_id = ?`, conn, taskID).
		Scan(&t.ConnectionID, &t.TaskID, &t.SegmentID, &t.ExternalSegmentID, &t.PagesReceived, &t.TotalPages, &t.Adds, &t.Removes, &t.Applied, &first, &applied)
	if err != nil {
		return nil, err
	}
	t.FirstPage = time.UnixMicro(first).UTC()
	if applied > 0 {
		t.AppliedAt = time.UnixMicro(applied).UTC()
	}
	return &t, nil
}

func (w *writer) applyInbound(t *InboundTask, p InboundPage) error {
	ctx := w.ctx
	rows, err := w.tx.QueryContext(ctx, `SELECT adds, removes FROM ss_inbound_pages WHERE connection_id = ? AND sync_task_id = ? ORDER BY page_number`, t.ConnectionID, t.TaskID)
	if err != nil {
		return err
	}
	var adds, removes []string
	for rows.Next() {
		var a, r string
		if err := rows.Scan(&a, &r); err != nil {
			rows.Close()
			return err
		}
		var pa, pr []string
		_ = json.Unmarshal([]byte(a), &pa)
		_ = json.Unmarshal([]byte(r), &pr)
		adds, removes = append(adds, pa...), append(removes, pr...)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	// The segment linked to the external id, created on first sight.
	var segID string
	err = w.tx.QueryRowContext(ctx, `SELECT segment_id FROM ss_segments WHERE environment_id = ? AND external_id = ?`, w.env, p.ExternalSegmentID).Scan(&segID)
	if errors.Is(err, sql.ErrNoRows) {
		segID, err = w.createLinkedSegment(p.SegmentName, p.ExternalSegmentID)
	}
	if err != nil {
		return err
	}
	sg, err := w.s.getSegment(ctx, w.tx, w.env, segID, true)
	if err != nil {
		return err
	}
	if err := w.refuseComputed(sg); err != nil {
		return err
	}
	addIDs, err := w.matchIdentities(adds, p.IdentityProperty, true)
	if err != nil {
		return err
	}
	rmIDs, err := w.matchIdentities(removes, p.IdentityProperty, false)
	if err != nil {
		return err
	}
	added, removed, err := w.applyMembership(sg, addIDs, rmIDs)
	if err != nil {
		return err
	}
	t.SegmentID, t.Adds, t.Removes, t.Applied = segID, added, removed, true
	t.AppliedAt = w.s.now().UTC()
	_, err = w.tx.ExecContext(ctx, `UPDATE ss_inbound_tasks SET segment_id = ?, adds = ?, removes = ?, applied = TRUE, applied_at = ? WHERE connection_id = ? AND sync_task_id = ?`,
		segID, int64(added), int64(removed), t.AppliedAt.UnixMicro(), t.ConnectionID, t.TaskID)
	if err != nil {
		return err
	}
	_, err = w.tx.ExecContext(ctx, `DELETE FROM ss_inbound_pages WHERE connection_id = ? AND sync_task_id = ?`, t.ConnectionID, t.TaskID)
	return err
}

// createLinkedSegment creates a public segment for an external one; a name
// already taken gets the external id appended.
func (w *writer) createLinkedSegment(name, externalID string) (string, error) {
	id := newSegmentID()
	now := w.s.micros()
	for _, n := range []string{name, fmt.Sprintf("%s (%s)", name, externalID)} {
		var taken int
		if err := w.tx.QueryRowContext(w.ctx, `SELECT COUNT(*) FROM ss_segments WHERE environment_id = ? AND name = ?`, w.env, n).Scan(&taken); err != nil {
			return "", err
		}
		if taken > 0 {
			continue
		}
		if _, err := w.tx.ExecContext(w.ctx, `INSERT INTO ss_segments (`+segCols+`, members) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			id, w.env, n, "Synced from an analytics tool", Public, externalID, 0, 1, now, now, membership.Encode(roaring.New())); err != nil {
			return "", err
		}
		return id, w.log(KindSegment, id, 1, nil, nil, "")
	}
	return "", apperr.AlreadyExists("segment names %q and %q are both taken", name, name+" ("+externalID+")")
}

// matchIdentities maps incoming ids to dense ids through the identity
// property; with create, unknown ids become bare users (user id = the id,
// and the identity property set to it when it is not user_id).
func (w *writer) matchIdentities(incoming []string, prop string, create bool) (*roaring.Bitmap, error) {
	out := roaring.New()
	if len(incoming) == 0 {
		return out, nil
	}
	if prop == "" || prop == "user_id" {
		m, err := w.resolve(incoming, create)
		if err != nil {
			return nil, err
		}
		for _, d := range m {
			out.Add(d)
		}
		return out, nil
	}
	want := map[string]bool{}
	for _, id := range incoming {
		want[id] = true
	}
	rows, err := w.tx.QueryContext(w.ctx, `SELECT dense_id, properties FROM ss_users WHERE environment_id = ?`, w.env)
	if err != nil {
		return nil, err
	}
	found := map[string]bool{}
	for rows.Next() {
		var d int64
		var props string
		if err := rows.Scan(&d, &props); err != nil {
			rows.Close()
			return nil, err
		}
		pm, err := decodeProps(props)
		if err != nil {
			rows.Close()
			return nil, err
		}
		if v, ok := pm[prop]; ok && want[v.String()] {
			out.Add(uint32(d))
			found[v.String()] = true
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if !create {
		return out, nil
	}
	var missing []string
	props := map[string]map[string]Prop{}
	for _, id := range dedupe(incoming) {
		if !found[id] {
			missing = append(missing, id)
			props[id] = map[string]Prop{prop: {Kind: PropString, S: id}}
		}
	}
	if len(missing) > 0 {
		existing, err := w.resolve(missing, false)
		if err != nil {
			return nil, err
		}
		var fresh []string
		for _, id := range missing {
			if _, ok := existing[id]; !ok {
				fresh = append(fresh, id)
			}
		}
		created, err := w.insertUsers(fresh, props)
		if err != nil {
			return nil, err
		}
		for _, d := range created {
			out.Add(d)
		}
	}
	return out, nil
}

// RejectInbound counts a refused request of a source connection of env.
func (s *Store) RejectInbound(ctx context.Context, env, connectionID string) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO ss_inbound_sources (connection_id, environment_id, rejected_requests) VALUES (?, ?, 1) ON CONFLICT (connection_id) DO UPDATE SET rejected_requests = ss_inbound_sources.rejected_requests + 1, environment_id = excluded.environment_id`, connectionID, env)
	return err
}

// InboundTasks lists a source connection's tasks, newest first, and its
// TaskCursor is a keyset position in a source's task history.
type TaskCursor struct {
	T  int64  `json:"t"`
	ID string `json:"i"`
}

// rejected request count.
func (s *Store) InboundTasks(ctx context.Context, env, connectionID string, before *TaskCursor, limit int) ([]*InboundTask, uint64, error) {
	q, args := `SELECT sync_task_id FROM ss_inbound_tasks WHERE environment_id = ? AND connection_id = ?`, []any{env, connectionID}
	if before != nil {
		q += ` AND (first_page_at < ? OR (first_page_at = ? AND sync_task_id < ?))`
		args = append(args, before.T, before.T, before.ID)
	}
	rows, err := s.db.QueryContext(ctx, q+` ORDER BY first_page_at DESC, sync_task_id DESC LIMIT ?`, append(args, limit)...)
	if err != nil {
		return nil, 0, err
	}
	var taskIDs []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return nil, 0, err
		}
		taskIDs = append(taskIDs, id)
	}
	rows.Close()
	var out []*InboundTask
	for _, id := range taskIDs {
		t, err := loadTask(ctx, s.db, connectionID, id)
		if err != nil {
			return nil, 0, err
		}
		out = append(out, t)
	}
	var rejected int64
	err = s.db.QueryRowContext(ctx, `SELECT rejected_requests FROM ss_inbound_sources WHERE environment_id = ? AND connection_id = ?`, env, connectionID).Scan(&rejected)
	if errors.Is(err, sql.ErrNoRows) {
		err = nil
	}
	return out, uint64(rejected), err
}
