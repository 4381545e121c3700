package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/seghub/seghub/pkg/config"
	"github.com/seghub/seghub/pkg/destinations"
	"github.com/seghub/seghub/services/destsim"
)

// postEvents posts a tool's event webhook signed the way seghub documents.
func (r *running) postEvents(t *testing.T, path, sig string, body []byte) (int, map[string]any) {
	t.Helper()
	return r.postSigned(t, path, "X-Seghub-Signature", sig, body)
}

// connectCommandBar runs the OAuth flow against the simulator through the
// gateway's callback and returns the connection id and the signing secret
// the callback page shows once.
func (r *running) connectCommandBar(t *testing.T, key string) (string, string) {
	t.Helper()
	flow := r.startOAuth(t, key, `{"type":"commandbar","name":"CommandBar","account":"org-1","settings":{"send_events":true}}`)
	page, err := flow.Browser.Get(flow.Callback.String())
	if err != nil {
		t.Fatal(err)
	}
	defer page.Body.Close()
	html, _ := io.ReadAll(page.Body)
	secret := regexp.MustCompile(`id="signing-secret">([^<]+)<`).FindSubmatch(html)
	hook := regexp.MustCompile(`/webhooks/commandbar/(conn_[a-z0-9]+)`).FindSubmatch(html)
	if page.StatusCode != 200 || secret == nil || hook == nil {
		t.Fatalf("callback page: %d %s", page.StatusCode, html)
	}
	return string(hook[1]), string(secret[1])
}

// Events in through the gateway: signed Appcues and CommandBar webhooks and
// the REST track API, out to analytics under the delivered names.
func TestEventWebhooksAndREST(t *testing.T) {
	sim := destsim.New(destsim.DemoCredentials())
	srv := httptest.NewServer(sim)
	defer srv.Close()
	r := start(t, t.TempDir(), func(c *config.Config) {
		c.AppcuesURL, c.CommandBarURL, c.AnalyticsURL = srv.URL, srv.URL, srv.URL
	})
	key := keyPattern.FindString(r.stdout.String())

	code, body := r.do(t, "POST", "/v1/connections", key, `{"type":"analytics","name":"Analytics","credentials":{"app_id":"app-9"}}`)
	if code != 200 {
		t.Fatalf("analytics connection: %d %v", code, body)
	}
	analytics := body["connection"].(map[string]any)["connection_id"].(string)
	if code, body = r.do(t, "POST", "/v1/event-routes", key, `{"connection_id":"`+analytics+`"}`); code != 200 {
		t.Fatalf("route: %d %v", code, body)
	}
	code, body = r.do(t, "POST", "/v1/connections", key, `{"type":"appcues","name":"Appcues","credentials":{"account_id":"demo","api_key":"demo-key","api_secret":"demo-secret"},"settings":{"send_events":true}}`)
	if code != 200 || body["signing_secret"] == nil {
		t.Fatalf("appcues connection: %d %v", code, body)
	}
	appcues, secret := body["connection"].(map[string]any)["connection_id"].(string), body["signing_secret"].(string)
	path := "/webhooks/appcues/" + appcues

	// Appcues' webhook shape, wire names; a batch of two.
	good := []byte(`{"events":[
		{"id":"ac-evt-1","name":"appcues:flow_started","timestamp":1795400000000,"user_id":"user-1","attributes":{"flowId":"f-1","flowName":"Onboarding"},"context":{"url":"https://app.example.com/home"}},
		{"id":"ac-evt-2","name":"appcues:nps_score","timestamp":1795400001000,"user_id":"user-1","attributes":{"score":9}}]}`)
	refused := map[string]struct {
		sig  string
		body []byte
		code int
		want string
	}{
		"no signature":   {"", good, 403, "Invalid signature"},
		"wrong secret":   {destinations.Sign("whsec_other", time.Now(), good), good, 403, "Invalid signature"},
		"stale":          {destinations.Sign(secret, time.Now().Add(-6*time.Minute), good), good, 403, "Invalid signature"},
		"signed other":   {destinations.Sign(secret, time.Now(), []byte(`{}`)), good, 403, "Invalid signature"},
		"not JSON":       {"", []byte(`{"events":[`), 400, "malformed JSON"},
		"no user":        {"", []byte(`{"name":"appcues:flow_exploded"}`), 400, `events[0].user_id`},
		"flow id a bool": {"", []byte(`{"name":"appcues:flow_started","user_id":"u","attributes":{"flowId":true}}`), 400, "Flow ID"},
	}
	for name, tc := range refused {
		sig := tc.sig
		if sig == "" && tc.code == 400 {
			sig = destinations.Sign(secret, time.Now(), tc.body)
		}
		code, body := r.postEvents(t, path, sig, tc.body)
		if code != tc.code || !strings.Contains(fmt.Sprint(body["error"]), tc.want) {
			t.Errorf("%s: %d %v (want %d %q)", name, code, body, tc.code, tc.want)
		}
	}
	if code, body := r.postEvents(t, "/webhooks/appcues/conn_unknown", destinations.Sign(secret, time.Now(), good), good); code != 403 {
		t.Fatalf("unknown connection: %d %v", code, body)
	}
	code, body = r.postEvents(t, path, destinations.Sign(secret, time.Now(), good), good)
	if code != 200 || body["accepted"] != float64(2) {
		t.Fatalf("signed webhook: %d %v", code, body)
	}
	// Properties are sent "when provided" and events beyond the documented
	// sixteen pass through; a partly refused batch says so and is counted.
	mixed := []byte(`[
		{"id":"ac-evt-3","name":"appcues:flow_error","user_id":"user-1","attributes":{"flowId":"f-1","error":"selector not found"}},
		{"id":"ac-evt-4","name":"appcues:form_submitted","user_id":"user-1","attributes":{"stepId":"s-1"}},
		{"id":"ac-evt-5","name":"appcues:flow_started","user_id":"user-1","attributes":{"flowId":true}}]`)
	code, body = r.postEvents(t, path, destinations.Sign(secret, time.Now(), mixed), mixed)
	if rj, _ := body["rejected"].([]any); code != 200 || body["status"] != "partial" || body["accepted"] != float64(2) || len(rj) != 1 ||
		fmt.Sprint(rj[0]) != "map[field:properties.Flow ID index:2 reason:must be a string]" {
		t.Fatalf("partly refused webhook: %d %v", code, body)
	}
	// Delivered again (a tool's retry): stored once.
	if code, body = r.postEvents(t, path, destinations.Sign(secret, time.Now(), good), good); code != 200 || body["duplicates"] != float64(2) {
		t.Fatalf("repeated webhook: %d %v", code, body)
	}

	// CommandBar through OAuth; its webhook shape.
	cb, cbSecret := r.connectCommandBar(t, key)
	cbBody := []byte(`[{"id":"cb-1","event":"opened","userId":"user-2","timestamp":"2026-11-23T10:00:00Z","metadata":{"trigger":"keyboard"}},{"id":"cb-2","event":"teleported","userId":"user-2"}]`)
	code, body = r.postEvents(t, "/webhooks/commandbar/"+cb, destinations.Sign(cbSecret, time.Now(), cbBody), cbBody)
	if code != 200 || body["accepted"] != float64(1) || len(body["rejected"].([]any)) != 1 {
		t.Fatalf("commandbar webhook: %d %v", code, body)
	}

	// REST track and schemas.
	if code, body = r.do(t, "POST", "/v1/events:track", key, `{"event":{"event_id":"api-1","source":"api","user_id":"user-3","name":"Plan Upgraded","properties":{"plan":"pro"}}}`); code != 200 || body["event_id"] != "api-1" {
		t.Fatalf("track: %d %v", code, body)
	}
	if code, body = r.do(t, "POST", "/v1/events:track", key, `{"event":{"source":"api","name":"No user"}}`); code != 400 || !strings.Contains(fmt.Sprint(body), "user_id") {
		t.Fatalf("bad track: %d %v", code, body)
	}
	batch, _ := http.NewRequest("POST", "http://"+r.httpAddr+"/v1/events:trackBatch",
		strings.NewReader(`{"events":[{"source":"commandbar","user_id":"user-3","name":"nudge_shown"},{"source":"commandbar","user_id":"user-3","name":"nope"}]}`))
	batch.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(batch)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	body = nil
	_ = json.Unmarshal(raw, &body)
	if resp.StatusCode != 200 || len(body["event_ids"].([]any)) != 1 || len(body["rejected"].([]any)) != 1 || resp.Header.Get("Grpc-Metadata-Seghub-Events-Rejected") != "1" {
		t.Fatalf("track batch: %d %v %v", resp.StatusCode, resp.Header, body)
	}
	// Refused events are counted by source and field class, never by the
	// caller's names (unknown sources and property names stay out of labels).
	metrics, _ := http.Get("http://" + r.httpAddr + "/metrics")
	mb, _ := io.ReadAll(metrics.Body)
	metrics.Body.Close()
	for _, want := range []string{
		`seghub_events_rejected_total{otel_scope_name="seghub",otel_scope_schema_url="",otel_scope_version="",reason="properties",source="appcues"} 2`,
		`seghub_events_rejected_total{otel_scope_name="seghub",otel_scope_schema_url="",otel_scope_version="",reason="name",source="commandbar"} 2`,
		`seghub_events_rejected_total{otel_scope_name="seghub",otel_scope_schema_url="",otel_scope_version="",reason="user_id",source="api"} 1`,
	} {
		if !strings.Contains(string(mb), want) {
			t.Errorf("/metrics lacks %s:\n%s", want, grepLines(string(mb), "events_rejected"))
		}
	}
	if code, body = r.do(t, "GET", "/v1/event-schemas?source=appcues", key, ""); code != 200 || len(body["schemas"].([]any)) != 16 {
		t.Fatalf("schemas: %d %v", code, body)
	}

	// Everything accepted reaches analytics once, under delivered names.
	want := map[string]string{"ac-evt-1": "Flow Started", "ac-evt-2": "NPS Score Submitted", "ac-evt-3": "Flow Error", "ac-evt-4": "Form Submitted", "cb-1": "opened", "api-1": "Plan Upgraded"}
	deadline := time.Now().Add(30 * time.Second)
	var got []map[string]any
	for {
		got = sim.Snapshot().Analytics["app-9"]
		if len(got) >= 7 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if len(got) != 7 {
		t.Fatalf("analytics holds %d events: %v", len(got), got)
	}
	delivered := map[string]bool{}
	for _, e := range got {
		id, _ := e["idempotency_key"].(string)
		if name, ok := want[id]; ok && e["event"] != name {
			t.Errorf("event %s delivered as %v, want %q", id, e["event"], name)
		}
		delivered[id] = true
		if id == "ac-evt-1" {
			p := e["properties"].(map[string]any)
			if p["Flow ID"] != "f-1" || p["pageUrl"] != "https://app.example.com/home" {
				t.Errorf("flow started properties: %v", p)
			}
		}
	}
	for id := range want {
		if !delivered[id] {
			t.Errorf("event %s accepted but not delivered: %v", id, got)
		}
	}
	// The Appcues user id (the webhook's user_id) was attached to the user
	// for syncs to use.
	deadline = time.Now().Add(20 * time.Second)
	for {
		code, body = r.do(t, "GET", "/v1/users/user-1", key, "")
		if code == 200 && fmt.Sprint(body["user"].(map[string]any)["properties"]) == "map[appcuesUserID:map[string_value:user-1]]" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("user-1: %d %v", code, body)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if code, body = r.do(t, "GET", "/v1/event-sinks", key, ""); code != 200 || len(body["sinks"].([]any)) != 1 {
		t.Fatalf("sinks: %d %v", code, body)
	}
}
