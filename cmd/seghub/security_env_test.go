package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	adminv1 "github.com/seghub/seghub/gen/seghub/admin/v1"
	segmentsyncv1 "github.com/seghub/seghub/gen/seghub/segmentsync/v1"
	"github.com/seghub/seghub/pkg/config"
	"github.com/seghub/seghub/pkg/destinations"
	"github.com/seghub/seghub/pkg/ids"
	"github.com/seghub/seghub/pkg/store/storetest"
	"github.com/seghub/seghub/services/destsim"
)

// exchange sends one REST request and returns the status and the raw body.
func (r *running) exchange(t *testing.T, method, path, key, body string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+r.httpAddr+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, raw
}

// field digs a string out of decoded JSON: field(m, "segment", "segment_id").
func field(m map[string]any, path ...string) string {
	var v any = m
	for _, p := range path {
		o, _ := v.(map[string]any)
		v = o[p]
	}
	s, _ := v.(string)
	return s
}

// ok sends a REST request that must answer 200 and returns the body.
func (r *running) ok(t *testing.T, method, path, key, body string) map[string]any {
	t.Helper()
	code, out := r.do(t, method, path, key, body)
	if code != 200 {
		t.Fatalf("%s %s: %d %v", method, path, code, out)
	}
	return out
}

// tenant is one environment with a key of each role.
type tenant struct {
	env, admin, member, service string
	memberKeyID                 string
}

// newTenant creates an environment with the bootstrap admin key, then a
// member and a service key with the new environment's own admin key.
func newTenant(t *testing.T, r *running, rootKey, name string) tenant {
	t.Helper()
	body := r.ok(t, "POST", "/v1/environments", rootKey, `{"name":"`+name+`"}`)
	tn := tenant{env: field(body, "environment", "id"), admin: field(body, "admin_secret")}
	if tn.env == "" || !keyPattern.MatchString(tn.admin) {
		t.Fatalf("environment %s: %v", name, body)
	}
	body = r.ok(t, "POST", "/v1/api-keys", tn.admin, `{"name":"member","role":"ROLE_MEMBER"}`)
	tn.member, tn.memberKeyID = field(body, "secret"), field(body, "api_key", "id")
	if field(body, "api_key", "environment_id") != tn.env {
		t.Fatalf("a key made by %s's admin belongs to %v", name, body["api_key"])
	}
	tn.service = createKey(t, r, tn.admin, "service")
	if _, b := r.do(t, "GET", "/v1/whoami", tn.member, ""); b["environment_id"] != tn.env {
		t.Fatalf("%s member key: whoami = %v", name, b)
	}
	return tn
}

// canonical re-encodes a JSON body with sorted keys and without
// index_version, a counter of the shared targeting index that moves with
// every environment's writes.
func canonical(raw []byte) string {
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return string(raw)
	}
	var drop func(any)
	drop = func(v any) {
		switch x := v.(type) {
		case map[string]any:
			delete(x, "index_version")
			for _, e := range x {
				drop(e)
			}
		case []any:
			for _, e := range x {
				drop(e)
			}
		}
	}
	drop(v)
	b, _ := json.Marshal(v)
	return string(b)
}

// isoProbe is one request environment B makes with environment A's ids.
type isoProbe struct {
	method, path, body string
	// adminOnly: the RPC needs an admin key, so a member is refused (403)
	// before anything is looked up.
	adminOnly bool
	// list: an answer about B's own data (200); it must hold nothing of A.
	list bool
}

// TestNoCrossEnvironmentAccess fills environment A with one resource of
// every kind, then has environment B's admin, member and service keys call
// every REST route (and the gRPC-only membership RPCs) with A's ids. B must
// get exactly the answer an id that exists nowhere gets (404, or 403 for a
// member on an admin route), its lists must hold nothing of A, its writes of
// the same user ids must stay in B, and afterwards every read of A's
// resources with A's key must answer as before.
func TestNoCrossEnvironmentAccess(t *testing.T) {
	for _, backend := range []string{"sqlite", "postgres"} {
		t.Run(backend, func(t *testing.T) {
			sim := destsim.New(destsim.DemoCredentials())
			srv := httptest.NewServer(sim)
			defer srv.Close()
			r := start(t, t.TempDir(), func(c *config.Config) {
				if backend == "postgres" {
					c.DatabaseURL = storetest.PostgresURL(t)
				}
				c.AppcuesURL, c.AnalyticsURL = srv.URL, srv.URL
				// An event that fails once is dead-lettered at once.
				c.DeliveryMaxAttempts, c.DeliveryMaxAge = 1, time.Millisecond
			})
			testNoCrossEnvironmentAccess(t, r, sim)
		})
	}
}

func testNoCrossEnvironmentAccess(t *testing.T, r *running, sim *destsim.Sim) {
	root := keyPattern.FindString(r.stdout.String())
	a := newTenant(t, r, root, "Tenant A")
	b := newTenant(t, r, root, "Tenant B")
	const alice = "alice-a7" // a user id of A's, that B will also use for a user of its own

	// A: users, a public segment with members, Appcues and a one-time sync.
	r.ok(t, "POST", "/v1/users:upsert", a.member, `{"users":[
		{"user_id":"`+alice+`","properties":{"email":{"string_value":"alice@tenant-a.example"},"appcuesUserID":{"string_value":"ac-alice"}}},
		{"user_id":"bob-a7","properties":{"appcuesUserID":{"string_value":"ac-bob"}}}]}`)
	body := r.ok(t, "POST", "/v1/segments", a.member, `{"name":"A churn risk","description":"tenant A only","visibility":"VISIBILITY_PUBLIC"}`)
	segA := field(body, "segment", "segment_id")
	r.ok(t, "POST", "/v1/segments/"+segA+"/members:add", a.member, `{"user_ids":["`+alice+`","bob-a7"]}`)
	body = r.ok(t, "POST", "/v1/connections", a.admin, `{"type":"appcues","name":"A Appcues","credentials":{"account_id":"demo","api_key":"demo-key","api_secret":"demo-secret"},"settings":{"send_events":true}}`)
	connApp := field(body, "connection", "connection_id")
	body = r.ok(t, "POST", "/v1/syncs", a.admin, `{"segment_id":"`+segA+`","connection_id":"`+connApp+`","schedule":"SYNC_SCHEDULE_ONE_TIME"}`)
	syncA := field(body, "sync", "sync_id")
	waitFor(t, 30*time.Second, func() bool {
		_, b := r.do(t, "GET", "/v1/syncs/"+syncA, a.member, "")
		return field(b, "sync", "last_status") == "SYNC_RUN_STATUS_SUCCEEDED"
	}, "A's sync to succeed")
	if got := len(appcuesHolders(sim, "[seghub] A churn risk")); got != 2 {
		t.Fatalf("A's sync delivered %d members", got)
	}

	// An experience targeting the segment (targeting must know it first).
	waitFor(t, 20*time.Second, func() bool {
		_, b := r.do(t, "GET", "/v1/targeting/segments/"+segA+"/members/"+alice, a.member, "")
		return b["is_member"] == true
	}, "targeting to index A's segment")
	body = r.ok(t, "POST", "/v1/experiences", a.member, `{"name":"A onboarding tour","type":"EXPERIENCE_TYPE_PRODUCT_TOUR","audience":{"match":{"conditions":[{"operator":"OPERATOR_IN_SEGMENT","segment_id":"`+segA+`"}]}}}`)
	expA := field(body, "experience", "experience_id")

	// Events: an analytics connection, a route to it and a tracked event.
	body = r.ok(t, "POST", "/v1/connections", a.admin, `{"type":"analytics","name":"A Analytics","credentials":{"app_id":"x"}}`)
	connAn := field(body, "connection", "connection_id")
	body = r.ok(t, "POST", "/v1/event-routes", a.admin, `{"connection_id":"`+connAn+`"}`)
	routeA := field(body, "route", "route_id")
	// One event analytics refuses, so A has a dead letter; then one delivered.
	sim.SetFaults(destsim.Faults{Rate5xx: 1})
	r.ok(t, "POST", "/v1/events:track", a.member, `{"event":{"event_id":"a-dead-1","source":"api","user_id":"`+alice+`","name":"A Lost Event"}}`)
	var deadA string
	waitFor(t, 60*time.Second, func() bool {
		_, b := r.do(t, "GET", "/v1/dead-letters", a.member, "")
		dl, _ := b["dead_letters"].([]any)
		if len(dl) == 1 {
			deadA = field(dl[0].(map[string]any), "dead_letter_id")
		}
		return deadA != ""
	}, "A's dead letter")
	sim.SetFaults(destsim.Faults{})
	r.ok(t, "POST", "/v1/events:track", a.member, `{"event":{"event_id":"a-evt-1","source":"api","user_id":"`+alice+`","name":"A Secret Event"}}`)
	waitFor(t, 30*time.Second, func() bool { return len(sim.Snapshot().Analytics["x"]) == 1 }, "A's event in analytics")

	// A Heap source that has pushed one segment.
	body = r.ok(t, "POST", "/v1/connections", a.admin, `{"type":"heap","name":"A Heap"}`)
	connHeap, heapSecret := field(body, "connection", "connection_id"), field(body, "signing_secret")
	wb := webhookBody("heap-a", "A heap cohort", "task-a", 1, page{n: 1, add: []string{alice}})
	if code, b := r.post(t, "/webhooks/heap/"+connHeap, destinations.Sign(heapSecret, time.Now(), wb), wb); code != 200 || b["applied"] != true {
		t.Fatalf("A heap webhook: %d %v", code, b)
	}
	if code, _ := r.post(t, "/webhooks/heap/"+connHeap, destinations.Sign("whsec_not-a7", time.Now(), wb), wb); code != 403 {
		t.Fatalf("A heap webhook with a bad signature: %d", code)
	}
	segHeap := ""
	_, body = r.do(t, "GET", "/v1/segments", a.member, "")
	for _, s := range body["segments"].([]any) {
		if m := s.(map[string]any); m["external_id"] == "heap-a" {
			segHeap = m["segment_id"].(string)
		}
	}
	if segHeap == "" {
		t.Fatalf("A's heap segment missing: %v", body)
	}
	waitFor(t, 20*time.Second, func() bool {
		_, b := r.do(t, "GET", "/v1/targeting/users/"+alice+"/segments", a.member, "")
		return len(b["segment_ids"].([]any)) == 2
	}, "targeting to index A's heap segment")

	// What A sees of its own resources, to compare after B's attempts.
	aReads := []string{
		"/v1/segments", "/v1/segments/" + segA, "/v1/segments/" + segHeap, "/v1/segments/" + segA + "/members", "/v1/users/" + alice, "/v1/users/bob-a7",
		"/v1/connections", "/v1/connections/" + connApp, "/v1/connections/" + connAn, "/v1/connections/" + connHeap, "/v1/sources/" + connHeap + "/sync-tasks",
		"/v1/syncs", "/v1/syncs/" + syncA, "/v1/syncs/" + syncA + "/runs", "/v1/experiences", "/v1/experiences/" + expA,
		"/v1/event-routes", "/v1/dead-letters?include_replayed=true", "/v1/api-keys", "/v1/environments",
		"/v1/targeting/segments", "/v1/targeting/segments/" + segA + "/members/" + alice, "/v1/targeting/users/" + alice + "/segments",
		"/v1/targeting/users/" + alice + "/experiences", "/v1/experiences/" + expA + "/users/" + alice,
	}
	snapshot := func() map[string]string {
		out := map[string]string{}
		for _, p := range aReads {
			code, raw := r.exchange(t, "GET", p, a.admin, "")
			if code != 200 {
				t.Fatalf("A reads %s: %d %s", p, code, raw)
			}
			out[p] = canonical(raw)
		}
		return out
	}
	before := snapshot()
	if !strings.Contains(before["/v1/targeting/users/"+alice+"/experiences"], expA) {
		t.Fatalf("A's tour is not eligible for %s; the comparison would prove little: %s", alice, before["/v1/targeting/users/"+alice+"/experiences"])
	}

	// B's own segment, to mix with A's ids in references.
	body = r.ok(t, "POST", "/v1/segments", b.member, `{"name":"B segment","visibility":"VISIBILITY_PUBLIC"}`)
	segB := field(body, "segment", "segment_id")
	waitFor(t, 20*time.Second, func() bool {
		code, _ := r.do(t, "GET", "/v1/targeting/segments", b.member, "")
		return code == 200
	}, "targeting to load B's index")

	// Anything of A that must never reach B.
	aMarks := []string{a.env, segA, segHeap, connApp, connAn, connHeap, syncA, expA, routeA, deadA, a.memberKeyID, alice, "bob-a7",
		"A churn risk", "tenant A only", "A Appcues", "A Analytics", "A Heap", "A heap cohort", "heap-a", "A onboarding tour", "alice@tenant-a.example", "ac-alice", "A Secret Event", "a-evt-1", "A Lost Event", "a-dead-1", "task-a"}
	// An id that exists nowhere, of the same shape, for each of A's ids.
	bogus := map[string]string{alice: "nobody-q9", "bob-a7": "nobody-r4"}
	for _, id := range []string{segA, segHeap, connApp, connAn, connHeap, syncA, expA, routeA, deadA, a.memberKeyID} {
		prefix, _, _ := strings.Cut(id, "_")
		bogus[id] = ids.New(prefix)
	}
	swap := func(s string, ids map[string]string) string {
		for from, to := range ids {
			s = strings.ReplaceAll(s, from, to)
		}
		return s
	}
	unswapped := map[string]string{}
	for from, to := range bogus {
		unswapped[to] = from
	}

	q := func(m, p, body string) isoProbe { return isoProbe{method: m, path: p, body: body} }
	admin := func(m, p, body string) isoProbe { return isoProbe{method: m, path: p, body: body, adminOnly: true} }
	list := func(p string) isoProbe { return isoProbe{method: "GET", path: p, list: true} }
	probes := []isoProbe{
		// Reads.
		q("GET", "/v1/users/"+alice, ""),
		q("GET", "/v1/segments/"+segA, ""),
		q("GET", "/v1/segments/"+segHeap, ""),
		q("GET", "/v1/segments/"+segA+"/members", ""),
		q("GET", "/v1/segments/"+segA+"/members/"+alice, ""),
		q("GET", "/v1/connections/"+connApp, ""),
		q("GET", "/v1/connections/"+connAn, ""),
		q("GET", "/v1/connections/"+connHeap, ""),
		q("GET", "/v1/syncs/"+syncA, ""),
		q("GET", "/v1/syncs/"+syncA+"/runs", ""),
		q("POST", "/v1/syncs/"+syncA+":dryRun", `{}`),
		q("GET", "/v1/experiences/"+expA, ""),
		q("GET", "/v1/experiences/"+expA+"/users/"+alice, ""),
		q("GET", "/v1/targeting/segments/"+segA+"/members/"+alice, ""),
		q("POST", "/v1/targeting:batchCheck", `{"checks":[{"user_id":"`+alice+`","segment_id":"`+segA+`"}]}`),
		// Writes.
		q("DELETE", "/v1/users/"+alice, ""),
		q("PATCH", "/v1/segments/"+segA, `{"name":"renamed by B","visibility":"VISIBILITY_PRIVATE"}`),
		q("POST", "/v1/segments/"+segA+"/members:add", `{"user_ids":["intruder"]}`),
		q("POST", "/v1/segments/"+segA+"/members:remove", `{"user_ids":["`+alice+`"]}`),
		q("DELETE", "/v1/segments/"+segHeap, ""),
		q("PATCH", "/v1/experiences/"+expA, `{"name":"renamed by B","enabled":false}`),
		q("DELETE", "/v1/experiences/"+expA, ""),
		q("POST", "/v1/experiences", `{"name":"B probe","type":"EXPERIENCE_TYPE_PRODUCT_TOUR","audience":{"match":{"conditions":[{"operator":"OPERATOR_IN_SEGMENT","segment_id":"`+segA+`"}]}}}`),
		admin("PATCH", "/v1/connections/"+connApp, `{"name":"renamed by B","settings":{"send_events":false}}`),
		admin("PATCH", "/v1/connections/"+connApp, `{"credentials":{"account_id":"demo","api_key":"demo-key","api_secret":"demo-secret"}}`),
		admin("DELETE", "/v1/connections/"+connApp, ""),
		admin("DELETE", "/v1/connections/"+connAn, ""),
		admin("DELETE", "/v1/connections/"+connHeap, ""),
		admin("PATCH", "/v1/syncs/"+syncA, `{"schedule":"SYNC_SCHEDULE_RECURRING"}`),
		admin("POST", "/v1/syncs/"+syncA+":run", `{}`),
		admin("POST", "/v1/syncs/"+syncA+":disable", `{"clear_destination":true}`),
		admin("POST", "/v1/syncs", `{"segment_id":"`+segA+`","connection_id":"`+connApp+`","schedule":"SYNC_SCHEDULE_ONE_TIME"}`),
		admin("POST", "/v1/syncs", `{"segment_id":"`+segB+`","connection_id":"`+connApp+`","schedule":"SYNC_SCHEDULE_ONE_TIME"}`),
		admin("POST", "/v1/event-routes", `{"connection_id":"`+connAn+`"}`),
		admin("DELETE", "/v1/event-routes/"+routeA, ""),
		admin("POST", "/v1/dead-letters:replay", `{"dead_letter_ids":["`+deadA+`"]}`),
		admin("POST", "/v1/api-keys/"+a.memberKeyID+":revoke", `{}`),
		// Lists: B's own data only.
		list("/v1/segments"), list("/v1/segments?visibility=VISIBILITY_PUBLIC&non_empty=true"),
		list("/v1/connections"), list("/v1/connections?type=appcues"), list("/v1/connections?type=heap"),
		list("/v1/syncs"), list("/v1/syncs?segment_id=" + segA), list("/v1/syncs?connection_id=" + connApp),
		list("/v1/experiences"), list("/v1/experiences?type=EXPERIENCE_TYPE_PRODUCT_TOUR"),
		list("/v1/event-routes"), list("/v1/event-sinks"), list("/v1/dead-letters?include_replayed=true"), list("/v1/dead-letters?connection_id=" + connAn),
		list("/v1/targeting/segments"), list("/v1/targeting/users/" + alice + "/segments"), list("/v1/targeting/users/" + alice + "/experiences"),
		list("/v1/whoami"), list("/v1/sources/" + connHeap + "/sync-tasks"),
		// Replaying "every dead letter of a connection" is a filter too.
		{method: "POST", path: "/v1/dead-letters:replay", body: `{"connection_id":"` + connAn + `"}`, list: true, adminOnly: true},
		{method: "GET", path: "/v1/api-keys?include_revoked=true", list: true, adminOnly: true},
		{method: "GET", path: "/v1/environments", list: true, adminOnly: true},
	}
	for _, who := range []struct{ role, key string }{{"member", b.member}, {"admin", b.admin}} {
		for _, p := range probes {
			name := fmt.Sprintf("B %s: %s %s %s", who.role, p.method, p.path, p.body)
			code, raw := r.exchange(t, p.method, p.path, who.key, p.body)
			// What the same request gets with ids that exist nowhere.
			bcode, braw := r.exchange(t, p.method, swap(p.path, bogus), who.key, swap(p.body, bogus))
			want := 404
			switch {
			case p.adminOnly && who.role == "member":
				want = 403
			case p.list:
				want = 200
			}
			// Creating an experience names A's segment only in its audience,
			// which is refused as a bad argument.
			if p.method == "POST" && p.path == "/v1/experiences" {
				want = 400
			}
			if code != want {
				t.Errorf("%s = %d %s, want %d", name, code, raw, want)
			}
			if got, nowhere := canonical(raw), swap(canonical(braw), unswapped); code != bcode || got != nowhere {
				t.Errorf("%s answers differently for A's ids than for ids that exist nowhere:\n  A's ids:  %d %s\n  nowhere:  %d %s", name, code, got, bcode, nowhere)
			}
			// Error messages may echo the ids B sent; nothing else of A.
			for _, m := range aMarks {
				if !strings.Contains(p.path+p.body, m) && strings.Contains(string(raw), m) {
					t.Errorf("%s leaks %q: %s", name, m, raw)
				}
			}
		}
	}
	if _, body := r.do(t, "GET", "/v1/environments", b.admin, ""); len(body["environments"].([]any)) != 1 {
		t.Errorf("B's admin lists environments other than its own: %v", body)
	}

	// gRPC-only membership RPCs: the streamed replace and the membership
	// feed (the service role's one RPC) with A's segment.
	for role, key := range map[string]string{"admin": b.admin, "member": b.member, "service": b.service} {
		conn, err := grpc.NewClient(r.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithPerRPCCredentials(bearerCreds(key)))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		cl := segmentsyncv1.NewSegmentSyncServiceClient(conn)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if role != "service" {
			st, err := cl.ReplaceMembers(ctx)
			if err != nil {
				t.Fatal(err)
			}
			_ = st.Send(&segmentsyncv1.ReplaceMembersRequest{SegmentId: segA, UserIds: []string{"intruder"}})
			if _, err := st.CloseAndRecv(); status.Code(err) != codes.NotFound {
				t.Errorf("B %s ReplaceMembers on A's segment: %v, want NotFound", role, err)
			}
		}
		want := codes.NotFound
		if role == "member" {
			want = codes.PermissionDenied
		}
		w, err := cl.WatchMembership(ctx, &segmentsyncv1.WatchMembershipRequest{SegmentIds: []string{segA}, IncludeUsers: true})
		if err == nil {
			_, err = w.Recv()
		}
		if status.Code(err) != want {
			t.Errorf("B %s WatchMembership of A's segment: %v, want %v", role, err, want)
		}
		if role == "member" {
			continue
		}
		// Unfiltered, and asking to resume A's feed: B's own state only.
		w, err = cl.WatchMembership(ctx, &segmentsyncv1.WatchMembershipRequest{IncludeUsers: true, AfterSequence: map[string]int64{a.env: 1}})
		if err != nil {
			t.Fatal(err)
		}
		for {
			m, err := w.Recv()
			if err != nil {
				t.Fatalf("B %s feed: %v", role, err)
			}
			if m.GetEnvironmentId() != b.env {
				t.Errorf("B %s feed carries environment %q: %v", role, m.GetEnvironmentId(), m)
			}
			for _, mark := range aMarks {
				if strings.Contains(m.String(), mark) {
					t.Errorf("B %s feed carries %q: %v", role, mark, m)
				}
			}
			if m.GetCaughtUp() != nil {
				break
			}
		}
	}

	// B uses the same user id for a user of its own: B's user, in B's
	// segment, never A's.
	r.ok(t, "POST", "/v1/users:upsert", b.member, `{"users":[{"user_id":"`+alice+`","properties":{"email":{"string_value":"someone-else@tenant-b.example"}}}]}`)
	r.ok(t, "POST", "/v1/segments/"+segB+"/members:add", b.member, `{"user_ids":["`+alice+`"]}`)
	r.ok(t, "POST", "/v1/events:track", b.member, `{"event":{"event_id":"b-evt-1","source":"api","user_id":"`+alice+`","name":"B Event"}}`)
	_, body = r.do(t, "GET", "/v1/users/"+alice, b.member, "")
	if field(body, "user", "properties", "email", "string_value") != "someone-else@tenant-b.example" || fmt.Sprint(body["segment_ids"]) != "["+segB+"]" {
		t.Errorf("B's own %s = %v", alice, body)
	}
	waitFor(t, 20*time.Second, func() bool {
		_, b := r.do(t, "GET", "/v1/targeting/users/"+alice+"/segments", b.member, "")
		return fmt.Sprint(b["segment_ids"]) == "["+segB+"]"
	}, "targeting to show B's user in B's segment only")
	// A later event of A's reaches analytics; B's, which has no route, never.
	r.ok(t, "POST", "/v1/events:track", a.member, `{"event":{"event_id":"a-evt-2","source":"api","user_id":"`+alice+`","name":"A Secret Event"}}`)
	waitFor(t, 30*time.Second, func() bool { return len(sim.Snapshot().Analytics["x"]) >= 2 }, "A's second event in analytics")
	for _, e := range sim.Snapshot().Analytics["x"] {
		if e["idempotency_key"] == "b-evt-1" || e["event"] == "B Event" {
			t.Errorf("B's event reached A's analytics: %v", e)
		}
	}

	// A is as it was.
	after := snapshot()
	for _, p := range aReads {
		if before[p] != after[p] {
			t.Errorf("A's %s changed:\n  before: %s\n  after:  %s", p, before[p], after[p])
		}
	}
	if code, _ := r.do(t, "GET", "/v1/whoami", a.member, ""); code != 200 {
		t.Errorf("A's member key stopped working: %d", code)
	}
	if got := len(appcuesHolders(sim, "[seghub] A churn risk")); got != 2 {
		t.Errorf("A's Appcues audience holds %d members after B's attempts", got)
	}
}

// recorder makes REST requests and keeps every answer, to be searched for
// secrets later.
type recorder struct {
	r *running
	t *testing.T

	mu        sync.Mutex
	responses []kept
}

// kept is one answer: the request it answered (which may carry a secret of
// the caller's, e.g. an OAuth code) and the body that must not.
type kept struct{ request, body string }

func (c *recorder) keep(what string, raw []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.responses = append(c.responses, kept{what, string(raw)})
}

// do is running.do, recorded.
func (c *recorder) do(method, path, key, body string) (int, map[string]any) {
	c.t.Helper()
	code, raw := c.r.exchange(c.t, method, path, key, body)
	c.keep(method+" "+path, raw)
	var out map[string]any
	_ = json.Unmarshal(raw, &out)
	return code, out
}

// once is a request whose answer shows a secret by design (a key, a signing
// secret); it is not kept.
func (c *recorder) once(method, path, key, body string) map[string]any {
	c.t.Helper()
	return c.r.ok(c.t, method, path, key, body)
}

// ok is do for a request that must answer 200.
func (c *recorder) ok(method, path, key, body string) map[string]any {
	c.t.Helper()
	code, out := c.do(method, path, key, body)
	if code != 200 {
		c.t.Fatalf("%s %s: %d %v", method, path, code, out)
	}
	return out
}

// signed posts a webhook and keeps the answer.
func (c *recorder) signed(path, header, sig string, body []byte) (int, map[string]any) {
	c.t.Helper()
	req, _ := http.NewRequest("POST", "http://"+c.r.httpAddr+path, bytes.NewReader(body))
	if sig != "" {
		req.Header.Set(header, sig)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	c.keep("POST "+path, raw)
	var out map[string]any
	_ = json.Unmarshal(raw, &out)
	return resp.StatusCode, out
}

// get fetches a page with no key and keeps it.
func (c *recorder) get(path string) int {
	c.t.Helper()
	resp, err := http.Get("http://" + c.r.httpAddr + path)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	c.keep("GET "+path, raw)
	return resp.StatusCode
}

// tokenTap wraps the simulator and notes every OAuth token and code it
// hands out, so the test knows them without seghub telling.
type tokenTap struct {
	sim http.Handler
	mu  sync.Mutex
	got []string
}

func (tp *tokenTap) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rec := httptest.NewRecorder()
	tp.sim.ServeHTTP(rec, r)
	if strings.HasPrefix(r.URL.Path, "/oauth/") && strings.HasSuffix(r.URL.Path, "/token") {
		var tok struct {
			Access  string `json:"access_token"`
			Refresh string `json:"refresh_token"`
		}
		_ = json.Unmarshal(rec.Body.Bytes(), &tok)
		tp.add(tok.Access, tok.Refresh)
	}
	if loc, err := url.Parse(rec.Header().Get("Location")); err == nil {
		tp.add(loc.Query().Get("code"))
	}
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	w.WriteHeader(rec.Code)
	_, _ = w.Write(rec.Body.Bytes())
}

func (tp *tokenTap) add(s ...string) {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	for _, v := range s {
		if v != "" {
			tp.got = append(tp.got, v)
		}
	}
}

func (tp *tokenTap) tokens() []string {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	return append([]string(nil), tp.got...)
}

// TestNoSecretsInLogsOrResponses runs keys, API-key and OAuth connections,
// syncs, events and signed webhooks, through good paths and failing ones
// (bad signatures, unknown and revoked keys, refused credentials at
// connect time, a destination that stops accepting the stored secret, an
// OAuth refresh refused), with debug logs on, and then searches every
// response, the whole log and stdout for each secret involved: API keys,
// destination credentials (also as the Basic header Appcues receives), OAuth
// client secret, codes and tokens, webhook signing secrets and seghub's own
// internal and encryption keys. Only the answers that show a secret once by
// design are exempt.
func TestNoSecretsInLogsOrResponses(t *testing.T) {
	sim := destsim.New(destsim.DemoCredentials())
	tap := &tokenTap{sim: sim}
	srv := httptest.NewServer(tap)
	defer srv.Close()
	dir := t.TempDir()
	var cfg *config.Config
	r := start(t, dir, func(c *config.Config) {
		c.AppcuesURL, c.CommandBarURL, c.AnalyticsURL = srv.URL, srv.URL, srv.URL
		c.LogLevel, cfg = "debug", c
	})
	c := &recorder{r: r, t: t}
	root := keyPattern.FindString(r.stdout.String())

	// Keys: made, used, revoked, invented.
	body := c.once("POST", "/v1/api-keys", root, `{"name":"member","role":"ROLE_MEMBER"}`)
	member := field(body, "secret")
	body = c.once("POST", "/v1/api-keys", root, `{"name":"service","role":"ROLE_SERVICE"}`)
	service := field(body, "secret")
	body = c.once("POST", "/v1/api-keys", root, `{"name":"short-lived","role":"ROLE_MEMBER"}`)
	revoked, revokedID := field(body, "secret"), field(body, "api_key", "id")
	body = c.once("POST", "/v1/environments", root, `{"name":"Other"}`)
	otherAdmin := field(body, "admin_secret")
	invented := "sghk_" + ids.Secret(32)
	c.ok("GET", "/v1/whoami", member, "")
	c.ok("POST", "/v1/api-keys/"+revokedID+":revoke", root, `{}`)
	waitFor(t, 15*time.Second, func() bool { code, _ := c.do("GET", "/v1/whoami", revoked, ""); return code == 401 }, "the revoked key to be refused")
	for _, k := range []string{invented, revoked} {
		if code, _ := c.do("GET", "/v1/segments", k, ""); code != 401 {
			t.Fatalf("unknown key accepted: %d", code)
		}
	}
	if code, _ := c.do("GET", "/v1/api-keys", member, ""); code != 403 {
		t.Fatalf("member on an admin route: %d", code)
	}
	c.ok("GET", "/v1/api-keys?include_revoked=true", root, "")
	c.ok("GET", "/v1/environments", otherAdmin, "")
	if code, _ := c.do("GET", "/v1/whoami", service, ""); code != 200 {
		t.Fatalf("service whoami: %d", code)
	}

	// Appcues: refused credentials, then the right ones; then rotated.
	if code, b := c.do("POST", "/v1/connections", root, `{"type":"appcues","name":"Appcues","credentials":{"account_id":"demo","api_key":"demo-key","api_secret":"not-the-secret-8k2"}}`); code < 400 || code >= 500 {
		t.Fatalf("refused appcues credentials: %d %v", code, b)
	}
	body = c.once("POST", "/v1/connections", root, `{"type":"appcues","name":"Appcues","credentials":{"account_id":"demo","api_key":"demo-key","api_secret":"demo-secret"},"settings":{"send_events":true}}`)
	appcues, appcuesSigning := field(body, "connection", "connection_id"), field(body, "signing_secret")
	body = c.once("POST", "/v1/connections", root, `{"type":"heap","name":"Heap"}`)
	heap, heapSigning := field(body, "connection", "connection_id"), field(body, "signing_secret")
	body = c.once("POST", "/v1/connections", root, `{"type":"analytics","name":"Analytics","credentials":{"app_id":"sec-app"}}`)
	analytics := field(body, "connection", "connection_id")
	c.ok("POST", "/v1/event-routes", root, `{"connection_id":"`+analytics+`"}`)

	// CommandBar by OAuth; the callback page shows the signing secret once.
	flow := r.startOAuth(t, root, `{"type":"commandbar","name":"CommandBar","account":"org-1","settings":{"send_events":true}}`)
	cb := flow.Callback
	resp, err := flow.Browser.Get(cb.String())
	if err != nil {
		t.Fatal(err)
	}
	html, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	cbSigning := regexp.MustCompile(`id="signing-secret">([^<]+)<`).FindSubmatch(html)
	cbHook := regexp.MustCompile(`/webhooks/commandbar/(conn_[a-z0-9]+)`).FindSubmatch(html)
	if resp.StatusCode != 200 || cbSigning == nil || cbHook == nil {
		t.Fatalf("callback page: %d %s", resp.StatusCode, html)
	}
	commandbar := string(cbHook[1])
	// A replayed callback (the code is single-use) fails; its page is kept.
	if code := c.get(cb.RequestURI()); code == 200 {
		t.Fatalf("replayed OAuth callback accepted")
	}
	c.ok("GET", "/v1/connections", root, "")
	for _, id := range []string{appcues, heap, analytics, commandbar} {
		c.ok("GET", "/v1/connections/"+id, member, "")
	}

	// Users and a segment synced to Appcues and CommandBar.
	var users []string
	for i := range 5 {
		users = append(users, fmt.Sprintf(`{"user_id":"s%d","properties":{"appcuesUserID":{"string_value":"ac-s%d"}}}`, i, i))
	}
	c.ok("POST", "/v1/users:upsert", member, `{"users":[`+strings.Join(users, ",")+`]}`)
	body = c.ok("POST", "/v1/segments", member, `{"name":"Secret keepers"}`)
	seg := field(body, "segment", "segment_id")
	c.ok("POST", "/v1/segments/"+seg+"/members:add", member, `{"user_ids":["s0","s1","s2","s3","s4"]}`)
	body = c.ok("POST", "/v1/syncs", root, `{"segment_id":"`+seg+`","connection_id":"`+appcues+`","schedule":"SYNC_SCHEDULE_ONE_TIME"}`)
	appcuesSync := field(body, "sync", "sync_id")
	body = c.ok("POST", "/v1/syncs", root, `{"segment_id":"`+seg+`","connection_id":"`+commandbar+`","identity_property":"user_id","schedule":"SYNC_SCHEDULE_ONE_TIME"}`)
	cbSync := field(body, "sync", "sync_id")
	lastStatus := func(sync string) string {
		_, b := c.do("GET", "/v1/syncs/"+sync, member, "")
		return field(b, "sync", "last_status")
	}
	waitFor(t, 30*time.Second, func() bool { return lastStatus(appcuesSync) == "SYNC_RUN_STATUS_SUCCEEDED" }, "the Appcues sync")
	waitFor(t, 30*time.Second, func() bool { return lastStatus(cbSync) == "SYNC_RUN_STATUS_SUCCEEDED" }, "the CommandBar sync")
	c.ok("POST", "/v1/syncs/"+appcuesSync+":dryRun", member, `{}`)

	// Events: the API, signed Appcues and CommandBar webhooks, a Heap segment
	// webhook, and refused signatures.
	c.ok("POST", "/v1/events:track", member, `{"event":{"event_id":"sec-1","source":"api","user_id":"s1","name":"Key Rotated"}}`)
	c.ok("POST", "/v1/events:trackBatch", member, `{"events":[{"source":"api","user_id":"s2","name":"Thing"},{"source":"api","name":"No user"}]}`)
	ev := []byte(`[{"id":"ac-sec-1","name":"appcues:flow_started","timestamp":1795400000000,"user_id":"s3","attributes":{"flowId":"f-1","flowName":"Tour"}}]`)
	if code, b := c.signed("/webhooks/appcues/"+appcues, "X-Seghub-Signature", destinations.Sign(appcuesSigning, time.Now(), ev), ev); code != 200 || b["accepted"] != float64(1) {
		t.Fatalf("appcues webhook: %d %v", code, b)
	}
	cbEv := []byte(`[{"id":"cb-sec-1","event":"opened","userId":"s4","timestamp":"2026-11-23T10:00:00Z"}]`)
	if code, b := c.signed("/webhooks/commandbar/"+commandbar, "X-Seghub-Signature", destinations.Sign(string(cbSigning[1]), time.Now(), cbEv), cbEv); code != 200 {
		t.Fatalf("commandbar webhook: %d %v", code, b)
	}
	wb := webhookBody("heap-sec", "Heap: secret", "task-s", 1, page{n: 1, add: []string{"s0"}})
	if code, b := c.signed("/webhooks/heap/"+heap, "Heap-Hash", destinations.Sign(heapSigning, time.Now(), wb), wb); code != 200 {
		t.Fatalf("heap webhook: %d %v", code, b)
	}
	for _, bad := range []struct{ path, header, sig string }{
		{"/webhooks/heap/" + heap, "Heap-Hash", destinations.Sign("whsec_wrong", time.Now(), wb)},
		{"/webhooks/heap/" + heap, "Heap-Hash", destinations.Sign(heapSigning, time.Now().Add(-time.Hour), wb)},
		{"/webhooks/appcues/" + appcues, "X-Seghub-Signature", "ts:1,hmac:" + appcuesSigning},
		{"/webhooks/appcues/" + appcues, "X-Seghub-Signature", appcuesSigning},
	} {
		if code, b := c.signed(bad.path, bad.header, bad.sig, ev); code != 403 {
			t.Fatalf("bad signature on %s: %d %v", bad.path, code, b)
		}
	}
	waitFor(t, 30*time.Second, func() bool { return len(sim.Snapshot().Analytics["sec-app"]) >= 4 }, "events in analytics")

	// Failures at the destination: Appcues stops accepting the stored
	// secret; CommandBar's tokens expire and the refresh is refused.
	sim.SetCredentials(destsim.Credentials{AppcuesAccounts: map[string]string{"demo": "demo-key:rotated-secret-5q1"}, OAuthClients: map[string]string{cfg.CommandBarClientID: cfg.CommandBarClientSecret}})
	sim.ExpireTokens()
	sim.SetFaults(destsim.Faults{RefuseRefresh: true})
	c.ok("POST", "/v1/segments/"+seg+"/members:remove", member, `{"user_ids":["s4"]}`)
	for _, s := range []string{appcuesSync, cbSync} {
		c.ok("POST", "/v1/syncs/"+s+":run", root, `{}`)
	}
	failed := func(sync string) bool {
		s := lastStatus(sync)
		return s == "SYNC_RUN_STATUS_FAILED" || s == "SYNC_RUN_STATUS_PARTIAL"
	}
	waitFor(t, 60*time.Second, func() bool { return failed(appcuesSync) && failed(cbSync) }, "both syncs to fail at the destination")
	if sim.Snapshot().Counters["rejected"] == 0 {
		t.Fatal("the simulator refused nothing; the failure path was not taken")
	}
	// The new secret, given to seghub, works again.
	c.ok("PATCH", "/v1/connections/"+appcues, root, `{"credentials":{"account_id":"demo","api_key":"demo-key","api_secret":"rotated-secret-5q1"}}`)
	c.ok("POST", "/v1/syncs/"+appcuesSync+":run", root, `{}`)
	waitFor(t, 30*time.Second, func() bool { return lastStatus(appcuesSync) == "SYNC_RUN_STATUS_SUCCEEDED" }, "the Appcues sync with the rotated secret")
	for _, s := range []string{appcuesSync, cbSync} {
		c.ok("GET", "/v1/syncs/"+s+"/runs", member, "")
	}
	for _, p := range []string{"/v1/syncs", "/v1/connections", "/v1/event-sinks", "/v1/dead-letters", "/v1/sources/" + heap + "/sync-tasks", "/v1/segments"} {
		c.ok("GET", p, member, "")
	}
	for _, p := range []string{"/healthz", "/readyz", "/metrics", "/openapi.json"} {
		if code := c.get(p); code != 200 {
			t.Fatalf("%s: %d", p, code)
		}
	}

	// The secrets involved.
	readKey := func(name string) string {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(b))
	}
	secrets := map[string]string{
		"bootstrap admin key": root, "member key": member, "service key": service, "revoked key": revoked,
		"invented key": invented, "other environment's admin key": otherAdmin,
		"Appcues api_secret": "demo-secret", "Appcues api_key": "demo-key", "refused api_secret": "not-the-secret-8k2", "rotated api_secret": "rotated-secret-5q1",
		"Appcues Basic credentials":  base64.StdEncoding.EncodeToString([]byte("demo-key:demo-secret")),
		"rotated Basic credentials":  base64.StdEncoding.EncodeToString([]byte("demo-key:rotated-secret-5q1")),
		"CommandBar client secret":   cfg.CommandBarClientSecret,
		"Appcues signing secret":     appcuesSigning,
		"Heap signing secret":        heapSigning,
		"CommandBar signing secret":  string(cbSigning[1]),
		"internal key":               readKey("internal.key"),
		"credentials encryption key": readKey("secret.key"),
	}
	toks := tap.tokens()
	if len(toks) < 3 {
		t.Fatalf("OAuth handed out only %d codes/tokens: the OAuth paths were not exercised", len(toks))
	}
	for i, tok := range toks {
		secrets[fmt.Sprintf("OAuth code/token %d", i)] = tok
	}
	for name, s := range secrets {
		if len(s) < 8 {
			t.Fatalf("%s %q is too short to search for", name, s)
		}
	}

	logs := r.stderr.String()
	if !strings.Contains(logs, `"level":"DEBUG"`) || !strings.Contains(logs, `"msg":"rpc"`) {
		t.Fatalf("the captured log holds no debug RPC lines; nothing was searched:\n%.2000s", logs)
	}
	stdout := r.stdout.String()
	if strings.Count(stdout, root) != 1 {
		t.Fatalf("stdout shows the admin key %d times", strings.Count(stdout, root))
	}
	stdout = strings.Replace(stdout, root, "<the one-time admin key>", 1)
	c.mu.Lock()
	responses := append([]kept(nil), c.responses...)
	c.mu.Unlock()
	if len(responses) < 40 {
		t.Fatalf("only %d responses kept", len(responses))
	}
	// The destinations' refusals reached the answers that were searched.
	for _, want := range []string{"Appcues refused the connection's credentials", "CommandBar refused the connection's credentials", "Appcues refused these credentials"} {
		found := false
		for _, resp := range responses {
			found = found || strings.Contains(resp.body, want)
		}
		if !found {
			t.Errorf("no answer says %q; the failure path was not searched", want)
		}
	}
	names := make([]string, 0, len(secrets))
	for n := range secrets {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		s := secrets[name]
		if i := strings.Index(logs, s); i >= 0 {
			t.Errorf("the log holds the %s: …%s…", name, excerpt(logs, i, len(s)))
		}
		if i := strings.Index(stdout, s); i >= 0 {
			t.Errorf("stdout holds the %s: …%s…", name, excerpt(stdout, i, len(s)))
		}
		for _, resp := range responses {
			if i := strings.Index(resp.body, s); i >= 0 {
				t.Errorf("the answer to %s holds the %s: …%s…", resp.request, name, excerpt(resp.body, i, len(s)))
			}
		}
	}
}

func excerpt(s string, i, n int) string {
	from, to := max(0, i-200), min(len(s), i+n+200)
	return s[from:to]
}

// selfSignedCert writes a certificate for 127.0.0.1 and localhost and its
// key to dir, and returns their paths and a pool that trusts it.
func selfSignedCert(t *testing.T, dir string) (string, string, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "seghub test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		DNSNames:     []string{"localhost"},
		IsCA:         true,

		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certPath, keyPath := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return certPath, keyPath, pool
}

// TestTLS serves gRPC and REST over TLS with --tls-cert/--tls-key: clients
// trusting the certificate get in, plaintext clients on the same ports do
// not, and the gateway still reaches the services it forwards to.
func TestTLS(t *testing.T) {
	certPath, keyPath, pool := selfSignedCert(t, t.TempDir())
	r := start(t, t.TempDir(), func(c *config.Config) { c.TLSCert, c.TLSKey = certPath, keyPath })
	adminKey := keyPattern.FindString(r.stdout.String())
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	// gRPC over TLS, with the admin key.
	conn, err := grpc.NewClient(r.grpcAddr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool})), grpc.WithPerRPCCredentials(bearerCreds(adminKey)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	envs, err := adminv1.NewAdminServiceClient(conn).ListEnvironments(ctx, &adminv1.ListEnvironmentsRequest{})
	if err != nil || len(envs.GetEnvironments()) != 1 {
		t.Fatalf("ListEnvironments over TLS: %v %v", envs, err)
	}
	if hr, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil || hr.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health over TLS: %v %v", hr, err)
	}
	// Plaintext gRPC to the same port is not served.
	plain, err := grpc.NewClient(r.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	pctx, pcancel := context.WithTimeout(ctx, 3*time.Second)
	defer pcancel()
	if _, err := healthpb.NewHealthClient(plain).Check(pctx, &healthpb.HealthCheckRequest{}); status.Code(err) != codes.Unavailable && status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("plaintext gRPC on the TLS port: %v, want it refused", err)
	}

	// REST over HTTPS.
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	get := func(client *http.Client, scheme, path, key string) (int, string, error) {
		req, _ := http.NewRequest("GET", scheme+"://"+r.httpAddr+path, nil)
		if key != "" {
			req.Header.Set("Authorization", "Bearer "+key)
		}
		resp, err := client.Do(req)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), nil
	}
	if code, b, err := get(hc, "https", "/healthz", ""); err != nil || code != 200 {
		t.Fatalf("https /healthz: %d %s %v", code, b, err)
	}
	// Ready once targeting's membership feed (over TLS too) has opened.
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		code, b, err := get(hc, "https", "/readyz", "")
		if err == nil && code == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("https /readyz: %d %s %v", code, b, err)
		}
	}
	// An authenticated call goes gateway → gRPC (over TLS too) and back.
	code, b, err := get(hc, "https", "/v1/whoami", adminKey)
	if err != nil || code != 200 || !strings.Contains(b, "ROLE_ADMIN") {
		t.Fatalf("https whoami: %d %s %v", code, b, err)
	}
	if code, b, err := get(hc, "https", "/v1/environments", ""); err != nil || code != 401 {
		t.Fatalf("https without a key: %d %s %v", code, b, err)
	}
	// A client that does not trust the certificate stops at the handshake.
	var uerr *tls.CertificateVerificationError
	if _, _, err := get(&http.Client{Timeout: 10 * time.Second}, "https", "/healthz", ""); !errors.As(err, &uerr) {
		t.Fatalf("untrusted certificate: %v, want a verification error", err)
	}
	// Plain HTTP to the same port gets nothing of the API.
	if code, b, err := get(&http.Client{Timeout: 10 * time.Second}, "http", "/v1/whoami", adminKey); err == nil && (code != 400 || strings.Contains(b, "ROLE_ADMIN")) {
		t.Fatalf("plain http on the TLS port: %d %s", code, b)
	}
}
