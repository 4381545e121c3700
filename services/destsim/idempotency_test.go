package destsim_test

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/seghub/seghub/pkg/destinations"
	"github.com/seghub/seghub/services/destsim"
)

// Every segment endpoint the real APIs make idempotent: a repeated key with
// the same body gets the first answer and changes nothing; the same key
// with another body is refused with 422 and changes nothing either.
func TestIdempotencyKeyReplaysOrRefuses(t *testing.T) {
	t.Parallel()
	sim, srv := startSim(t, destsim.DemoCredentials())
	appcues := map[string]string{"Authorization": "Basic ZGVtby1rZXk6ZGVtby1zZWNyZXQ="} // demo-key:demo-secret
	tok := map[string]string{"Authorization": bearer(t, srv.URL)}

	type endpoint struct {
		name, path string
		auth       map[string]string
		// body sets ids' membership to member.
		body func(member bool, ids ...string) []byte
		// holds reports whether id is a member now.
		holds func(st destsim.State, id string) bool
	}
	for _, ep := range []endpoint{
		{"appcues import", "/v2/accounts/demo/import/profiles", appcues,
			func(member bool, ids ...string) []byte {
				var p []map[string]any
				for _, id := range ids {
					p = append(p, map[string]any{"user_id": id, "[seghub] Trial": member})
				}
				return mustJSON(map[string]any{"profiles": p})
			},
			func(st destsim.State, id string) bool { return st.Appcues["demo"][id]["[seghub] Trial"] == true }},
		{"commandbar identify", "/api/org-1/bulk-identify/", tok,
			func(member bool, ids ...string) []byte {
				var rows []map[string]any
				for _, id := range ids {
					rows = append(rows, map[string]any{"id": id, "properties": map[string]any{"Trial": member}})
				}
				return mustJSON(rows)
			},
			func(st destsim.State, id string) bool { return st.CommandBar["org-1"][id]["Trial"] == true }},
		{"abtasty segment", "/accounts/acc/segments/Trial", tok,
			func(member bool, ids ...string) []byte {
				var rows []map[string]any
				for _, id := range ids {
					rows = append(rows, map[string]any{"visitor_id": id, "value": member})
				}
				return mustJSON(rows)
			},
			func(st destsim.State, id string) bool { return st.ABTasty["acc"]["Trial"][id] }},
	} {
		t.Run(ep.name, func(t *testing.T) {
			h := func(key string) map[string]string {
				out := map[string]string{"Idempotency-Key": key}
				for k, v := range ep.auth {
					out[k] = v
				}
				return out
			}
			before := sim.Snapshot().Counters
			first := send(t, "POST", srv.URL+ep.path, h("run_1-a"), ep.body(true, "a-1", "a-2"))
			if first.status/100 != 2 || first.replayed || !ep.holds(sim.Snapshot(), "a-1") {
				t.Fatalf("first delivery: %+v", first)
			}
			// a-1 leaves meanwhile (no key); a replay must not bring it back.
			if r := send(t, "POST", srv.URL+ep.path, ep.auth, ep.body(false, "a-1")); r.status/100 != 2 || ep.holds(sim.Snapshot(), "a-1") {
				t.Fatalf("removal: %+v", r)
			}
			again := send(t, "POST", srv.URL+ep.path, h("run_1-a"), ep.body(true, "a-1", "a-2"))
			if again.status != first.status || again.body != first.body || !again.replayed {
				t.Fatalf("retry with the same key and body = %+v, want the first answer %+v replayed", again, first)
			}
			if st := sim.Snapshot(); ep.holds(st, "a-1") || st.Counters["idempotent_replays"]-before["idempotent_replays"] != 1 {
				t.Fatalf("a replay was carried out again: a-1 held %v, counters %v", ep.holds(st, "a-1"), st.Counters)
			}
			// The key of the first batch, sent with other members: refused.
			other := send(t, "POST", srv.URL+ep.path, h("run_1-a"), ep.body(true, "b-1", "b-2"))
			if other.status != http.StatusUnprocessableEntity || !strings.Contains(other.body, "different request body") {
				t.Fatalf("same key, other body = %+v, want 422 naming the reuse", other)
			}
			if st := sim.Snapshot(); ep.holds(st, "b-1") || st.Counters["idempotency_conflicts"]-before["idempotency_conflicts"] != 1 {
				t.Fatalf("a refused batch changed state: b-1 held %v, counters %v", ep.holds(st, "b-1"), st.Counters)
			}
			// Under its own key the same content is carried out.
			if r := send(t, "POST", srv.URL+ep.path, h("run_1-b"), ep.body(true, "b-1", "b-2")); r.status/100 != 2 || r.replayed || !ep.holds(sim.Snapshot(), "b-1") {
				t.Fatalf("new key: %+v", r)
			}
		})
	}
}

// Refused credentials are not what a key stands for: the retry with a good
// token is carried out, not answered 401 again.
func TestIdempotencyKeyForgetsRefusedCredentials(t *testing.T) {
	t.Parallel()
	sim, srv := startSim(t, destsim.DemoCredentials())
	body := mustJSON([]map[string]any{{"visitor_id": "v-1", "value": true}})
	if r := send(t, "POST", srv.URL+"/accounts/acc/segments/Trial", map[string]string{"Authorization": "Bearer at_revoked", "Idempotency-Key": "k"}, body); r.status != 401 {
		t.Fatalf("revoked token: %+v", r)
	}
	r := send(t, "POST", srv.URL+"/accounts/acc/segments/Trial", map[string]string{"Authorization": bearer(t, srv.URL), "Idempotency-Key": "k"}, body)
	if r.status != 200 || r.replayed || !sim.Snapshot().ABTasty["acc"]["Trial"]["v-1"] {
		t.Fatalf("retry with a fresh token = %+v, want it carried out", r)
	}
}

// The memory of keys is bounded: the oldest key is forgotten first.
func TestIdempotencyKeysBounded(t *testing.T) {
	t.Parallel()
	sim, srv := startSim(t, destsim.DemoCredentials())
	sim.SetLimits(destsim.Limits{IdempotencyKeys: 2})
	auth := map[string]string{"Authorization": bearer(t, srv.URL)}
	post := func(key, id string) reply {
		auth["Idempotency-Key"] = key
		return send(t, "POST", srv.URL+"/api/org-1/bulk-identify/", auth, mustJSON([]map[string]any{{"id": id, "properties": map[string]any{"x": true}}}))
	}
	for i, key := range []string{"k1", "k2", "k3"} {
		if r := post(key, fmt.Sprint("u", i)); r.status != 200 {
			t.Fatalf("%s: %+v", key, r)
		}
	}
	if r := post("k3", "other"); r.status != 422 {
		t.Fatalf("a remembered key with another body: %+v, want 422", r)
	}
	if r := post("k1", "other"); r.status != 200 || r.replayed {
		t.Fatalf("the oldest key, forgotten: %+v, want carried out", r)
	}
}

// Event tracks honour their keys too: Appcues' Idempotency-Key header and
// the bulk track API's per-event idempotency_key.
func TestEventKeysReplayOrRefuse(t *testing.T) {
	t.Parallel()
	sim, srv := startSim(t, destsim.DemoCredentials())
	ctx := t.Context()
	ac, err := destinations.New("appcues", destinations.Config{Egress: loopback, BaseURL: srv.URL, MaxAttempts: 1, Credentials: map[string]string{"account_id": "demo", "api_key": "demo-key", "api_secret": "demo-secret"}})
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 11, 30, 4, 0, 0, 0, time.UTC)
	ev := destinations.Event{ID: "e1", Identity: "ac-1", Name: "Flow Started", Timestamp: at, Properties: map[string]any{"flowId": "f1"}}
	for range 2 {
		if err := ac.(destinations.Events).Track(ctx, []destinations.Event{ev}); err != nil {
			t.Fatal(err)
		}
	}
	changed := ev
	changed.Name = "Flow Completed"
	err = ac.(destinations.Events).Track(ctx, []destinations.Event{changed})
	var de *destinations.Error
	if !errors.As(err, &de) || de.Status != 422 || de.Kind != destinations.Permanent {
		t.Fatalf("another event under a used key: %v, want a permanent 422", err)
	}
	if evs := sim.Snapshot().AppcuesEvents["demo"]; len(evs) != 1 || evs[0]["name"] != "Flow Started" {
		t.Fatalf("appcues events = %v, want the first one once", evs)
	}

	track := srv.URL + "/api/track"
	first := map[string]any{"identity": "u1", "event": "Signed Up", "timestamp": at.Format(time.RFC3339), "idempotency_key": "k1"}
	for range 2 {
		if r := send(t, "POST", track, nil, mustJSON(map[string]any{"app_id": "app", "events": []any{first}})); r.status != 200 {
			t.Fatalf("track: %+v", r)
		}
	}
	other := map[string]any{"identity": "u2", "event": "Signed Up", "timestamp": at.Format(time.RFC3339), "idempotency_key": "k1"}
	fresh := map[string]any{"identity": "u3", "event": "Signed Up", "timestamp": at.Format(time.RFC3339), "idempotency_key": "k2"}
	if r := send(t, "POST", track, nil, mustJSON(map[string]any{"app_id": "app", "events": []any{fresh, other}})); r.status != 422 || !strings.Contains(r.body, `\"k1\"`) {
		t.Fatalf("another event under k1: %+v, want 422 naming the key", r)
	}
	if evs := sim.Snapshot().Analytics["app"]; len(evs) != 1 || evs[0]["identity"] != "u1" {
		t.Fatalf("analytics events = %v, want u1's once and nothing of the refused request", evs)
	}
}

// A Heap-format receiver puts a task's pages together: one task has one
// page total, and a page number names one content.
func TestWebhookTaskPagesConsistent(t *testing.T) {
	t.Parallel()
	sim, srv := startSim(t, destsim.DemoCredentials())
	wh, err := destinations.New("webhook", destinations.Config{Egress: loopback, MaxAttempts: 1, Credentials: map[string]string{"url": srv.URL + "/hooks/heap"}})
	if err != nil {
		t.Fatal(err)
	}
	deliver := func(b destinations.SegmentBatch) error {
		_, err := wh.(destinations.Segments).DeliverSegment(t.Context(), b)
		return err
	}
	page := func(p, total int, ids []destinations.Identity) destinations.SegmentBatch {
		return destinations.SegmentBatch{SegmentID: "seg_1", DisplayName: "Trial", Add: ids, Page: p, TotalPages: total, TaskID: "run_1"}
	}
	if err := deliver(page(1, 3, identities("w-", 0, 5))); err != nil {
		t.Fatal(err)
	}
	if err := deliver(page(1, 3, identities("w-", 0, 5))); err != nil { // a retry
		t.Fatal(err)
	}
	for _, tc := range []struct {
		b   destinations.SegmentBatch
		why string
	}{
		{page(2, 4, identities("w-", 5, 10)), "announced with 3 pages; this page says 4"},
		{page(1, 3, identities("w-", 5, 10)), "page 1 of sync task run_1 was received before with other content"},
		{page(4, 3, identities("w-", 5, 10)), "out of range"},
	} {
		err := deliver(tc.b)
		var de *destinations.Error
		if !errors.As(err, &de) || de.Status != 422 || !strings.Contains(de.Message, tc.why) {
			t.Fatalf("page %d/%d: %v, want 422 saying %q", tc.b.Page, tc.b.TotalPages, err, tc.why)
		}
	}
	if seg := sim.Snapshot().WebhookSegments["/hooks/heap"]["seg_1"]; seg != nil {
		t.Fatalf("a task with pages missing was applied: %v", seg.Members)
	}
	for p, ids := range [][]destinations.Identity{identities("x-", 0, 5), identities("x-", 5, 10)} {
		if err := deliver(page(p+2, 3, ids)); err != nil {
			t.Fatal(err)
		}
	}
	st := sim.Snapshot()
	if m := st.WebhookSegments["/hooks/heap"]["seg_1"].Members; len(m) != 15 || m["w-5"] || !m["w-0"] || !m["x-9"] {
		t.Fatalf("members = %v, want w-0..w-4 and x-0..x-9 once the task is whole", m)
	}
	if st.Counters["webhook_task_conflicts"] != 3 || st.Counters["webhook_repeated_pages"] != 1 || len(st.Webhooks) != 3 {
		t.Fatalf("counters %v, %d deliveries; want 3 conflicts, 1 repeat, 3 deliveries", st.Counters, len(st.Webhooks))
	}
}
