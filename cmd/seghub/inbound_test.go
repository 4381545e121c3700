package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/seghub/seghub/pkg/destinations"
)

type page struct {
	n           int
	add, remove []string
}

func webhookBody(segID, segName, task string, total int, p page) []byte {
	ids := func(in []string) []map[string]string {
		out := []map[string]string{}
		for _, id := range in {
			out = append(out, map[string]string{"id": id})
		}
		return out
	}
	b, _ := json.Marshal(map[string]any{"id_token": "tok", "action_type": "segment.users.sync", "data": map[string]any{
		"segment":   map[string]any{"id": segID, "name": segName},
		"sync_info": map[string]any{"page_number": p.n, "total_pages": total, "sync_task_id": task},
		"add":       ids(p.add), "remove": ids(p.remove)}})
	return b
}

// post sends a partner webhook signed Heap's way (Heap-Hash).
func (r *running) post(t *testing.T, path, sig string, body []byte) (int, map[string]any) {
	t.Helper()
	return r.postSigned(t, path, "Heap-Hash", sig, body)
}

// postSigned posts body with sig in header (none when sig is empty).
func (r *running) postSigned(t *testing.T, path, header, sig string, body []byte) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest("POST", "http://"+r.httpAddr+path, bytes.NewReader(body))
	if sig != "" {
		req.Header.Set(header, sig)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	_ = json.Unmarshal(raw, &out)
	return resp.StatusCode, out
}

// members lists a segment's members through REST.
func (r *running) members(t *testing.T, key, seg string) []string {
	t.Helper()
	code, body := r.do(t, "GET", "/v1/segments/"+seg+"/members?page_size=1000", key, "")
	if code != 200 {
		t.Fatalf("members: %d %v", code, body)
	}
	var out []string
	if ids, ok := body["user_ids"].([]any); ok {
		for _, id := range ids {
			out = append(out, id.(string))
		}
	}
	sort.Strings(out)
	return out
}

// The "Done when" for inbound segment webhooks, end to end.
func TestInboundSegmentWebhooks(t *testing.T) {
	r := start(t, t.TempDir(), nil)
	key := keyPattern.FindString(r.stdout.String())
	code, body := r.do(t, "POST", "/v1/connections", key, `{"type":"heap","name":"Heap production"}`)
	if code != 200 {
		t.Fatalf("create source: %d %v", code, body)
	}
	conn := body["connection"].(map[string]any)
	secret := body["signing_secret"].(string)
	path := conn["webhook_path"].(string)
	if secret == "" || path != "/webhooks/heap/"+conn["connection_id"].(string) {
		t.Fatalf("source connection = %v", body)
	}
	sign := func(b []byte) string { return destinations.Sign(secret, time.Now(), b) }

	// Bad, missing and stale signatures, and malformed bodies, change nothing.
	good := webhookBody("heap-seg-1", "Heap: Trial", "task-0", 1, page{n: 1, add: []string{"x"}})
	for name, sig := range map[string]string{
		"missing":   "",
		"wrong key": destinations.Sign("not-the-secret", time.Now(), good),
		"stale":     destinations.Sign(secret, time.Now().Add(-6*time.Minute), good),
		"garbage":   "ts:abc,hmac:zz",
	} {
		if code, body := r.post(t, path, sig, good); code != 403 || body["error"] != "Invalid signature" {
			t.Fatalf("%s signature: %d %v", name, code, body)
		}
	}
	if code, _ := r.post(t, "/webhooks/heap/conn_unknown", sign(good), good); code != 403 {
		t.Fatalf("unknown connection: %d", code)
	}
	for name, b := range map[string][]byte{
		"not json":     []byte("{nope"),
		"wrong action": []byte(`{"action_type":"segment.deleted","data":{}}`),
		"bad page":     webhookBody("heap-seg-1", "Heap: Trial", "task-0", 2, page{n: 3}),
		"blank id":     webhookBody("heap-seg-1", "Heap: Trial", "task-0", 1, page{n: 1, add: []string{" "}}),
	} {
		code, body := r.post(t, path, sign(b), b)
		if code != 400 || body["error"] == "" {
			t.Fatalf("%s: %d %v", name, code, body)
		}
	}
	if code, body := r.do(t, "GET", "/v1/segments", key, ""); code != 200 || len(jsonList(body["segments"])) != 0 {
		t.Fatalf("refused requests created something: %v", body)
	}

	// Four pages in shuffled order with one page repeated: nothing applies
	// until the last distinct page arrives, then exactly the union does.
	pages := []page{
		{n: 1, add: []string{"u1", "u2", "u3"}},
		{n: 2, add: []string{"u4", "u5"}},
		{n: 3, add: []string{"u6"}, remove: []string{"never-there"}},
		{n: 4, add: []string{"u7", "u8"}},
	}
	order := []int{2, 0, 2, 3, 1}
	rand.Shuffle(len(order)-1, func(i, j int) { order[i], order[j] = order[j], order[i] })
	// The duplicate must not be the completing page: make the last arrival new.
	seen := map[int]bool{}
	for i, idx := range order {
		b := webhookBody("heap-seg-1", "Heap: Trial", "task-1", 4, pages[idx])
		code, body := r.post(t, path, sign(b), b)
		if code != 200 {
			t.Fatalf("page %d: %d %v", pages[idx].n, code, body)
		}
		seen[idx] = true
		complete := len(seen) == 4
		if body["applied"] != complete {
			t.Fatalf("after arrival %d (page %d), applied=%v, want %v", i, pages[idx].n, body["applied"], complete)
		}
		if !complete {
			if code, b := r.do(t, "GET", "/v1/segments", key, ""); code != 200 || len(jsonList(b["segments"])) != 0 {
				t.Fatalf("segment visible before the last page: %v", b)
			}
		}
	}
	code, body = r.do(t, "GET", "/v1/segments", key, "")
	segs := body["segments"].([]any)
	if len(segs) != 1 {
		t.Fatalf("segments = %v", segs)
	}
	seg := segs[0].(map[string]any)
	if seg["name"] != "Heap: Trial" || seg["external_id"] != "heap-seg-1" || seg["visibility"] != "VISIBILITY_PUBLIC" {
		t.Fatalf("segment = %v", seg)
	}
	sid := seg["segment_id"].(string)
	if got := strings.Join(r.members(t, key, sid), ","); got != "u1,u2,u3,u4,u5,u6,u7,u8" {
		t.Fatalf("members = %s", got)
	}
	// A repeated page of an applied task changes nothing.
	b := webhookBody("heap-seg-1", "Heap: Trial", "task-1", 4, pages[0])
	if code, _ := r.post(t, path, sign(b), b); code != 200 {
		t.Fatal(code)
	}

	// A second task removes and adds; targeting follows.
	for _, p := range []page{{n: 2, add: []string{"u9"}}, {n: 1, remove: []string{"u1", "u2"}}} {
		b := webhookBody("heap-seg-1", "Heap: Trial", "task-2", 2, p)
		if code, body := r.post(t, path, sign(b), b); code != 200 {
			t.Fatalf("task-2: %d %v", code, body)
		}
	}
	if got := strings.Join(r.members(t, key, sid), ","); got != "u3,u4,u5,u6,u7,u8,u9" {
		t.Fatalf("members after task-2 = %s", got)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		c1, b1 := r.do(t, "GET", "/v1/targeting/segments/"+sid+"/members/u9", key, "")
		c2, b2 := r.do(t, "GET", "/v1/targeting/segments/"+sid+"/members/u1", key, "")
		if c1 == 200 && c2 == 200 && b1["is_member"] == true && b2["is_member"] == false {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("targeting did not follow: %v %v", b1, b2)
		}
		time.Sleep(50 * time.Millisecond)
	}

	// History: tasks with pages, adds and removes; rejected requests counted.
	code, body = r.do(t, "GET", "/v1/sources/"+conn["connection_id"].(string)+"/sync-tasks", key, "")
	tasks, _ := body["tasks"].([]any)
	if code != 200 || len(tasks) != 2 {
		t.Fatalf("tasks = %d %v", code, body)
	}
	if fmt.Sprint(body["rejected_requests"]) != "8" {
		t.Fatalf("rejected_requests = %v, want 8 (4 signatures + 4 malformed)", body["rejected_requests"])
	}
	var t1 map[string]any
	for _, x := range tasks {
		if m := x.(map[string]any); m["sync_task_id"] == "task-1" {
			t1 = m
		}
	}
	if t1["applied"] != true || fmt.Sprint(t1["adds"]) != "8" || fmt.Sprint(t1["pages_received"]) != "4" {
		t.Fatalf("task-1 = %v", t1)
	}
	metrics, _ := http.Get("http://" + r.httpAddr + "/metrics")
	mb, _ := io.ReadAll(metrics.Body)
	metrics.Body.Close()
	if !strings.Contains(string(mb), `seghub_inbound_requests_total{connection_id="`+conn["connection_id"].(string)+`",otel_scope_name="seghub",otel_scope_schema_url="",otel_scope_version="",result="accepted"}`) {
		t.Fatalf("/metrics lacks inbound counts:\n%.1500s", grepLines(string(mb), "inbound"))
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// Incoming ids match the identity property chosen at setup; unknown ids
// become bare users carrying that property.
func TestInboundIdentityProperty(t *testing.T) {
	r := start(t, t.TempDir(), nil)
	key := keyPattern.FindString(r.stdout.String())
	if code, body := r.do(t, "POST", "/v1/users:upsert", key, `{"users":[{"user_id":"user-1","properties":{"email":{"string_value":"ann@example.com"}}}]}`); code != 200 {
		t.Fatalf("upsert: %d %v", code, body)
	}
	code, body := r.do(t, "POST", "/v1/connections", key, `{"type":"segment_webhook","name":"Heap by email","settings":{"identity_property":"email"}}`)
	if code != 200 {
		t.Fatalf("create source: %d %v", code, body)
	}
	secret := body["signing_secret"].(string)
	path := body["connection"].(map[string]any)["webhook_path"].(string)
	b := webhookBody("42", "Emailed", "t1", 1, page{n: 1, add: []string{"ann@example.com", "new@example.com"}})
	if code, body := r.post(t, path, destinations.Sign(secret, time.Now(), b), b); code != 200 || body["applied"] != true {
		t.Fatalf("webhook: %d %v", code, body)
	}
	sid := ""
	_, segs := r.do(t, "GET", "/v1/segments", key, "")
	for _, s := range segs["segments"].([]any) {
		sid = s.(map[string]any)["segment_id"].(string)
	}
	got := r.members(t, key, sid)
	if strings.Join(got, ",") != "new@example.com,user-1" {
		t.Fatalf("members = %v (ann@example.com must map to user-1)", got)
	}
	_, u := r.do(t, "GET", "/v1/users/new@example.com", key, "")
	if u["user"].(map[string]any)["properties"].(map[string]any)["email"].(map[string]any)["string_value"] != "new@example.com" {
		t.Fatalf("bare user = %v", u)
	}
}
