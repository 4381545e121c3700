package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/seghub/seghub/pkg/config"
	"github.com/seghub/seghub/pkg/destinations"
	"github.com/seghub/seghub/services/destsim"
)

// scrape is one /metrics exposition: series (name and labels) → value.
type scrape struct {
	text   string
	series []sample
}

type sample struct {
	name   string
	labels map[string]string
	value  float64
}

var labelPair = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"`)

func (r *running) scrape(t *testing.T) scrape {
	t.Helper()
	resp, err := http.Get("http://" + r.httpAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	s := scrape{text: string(b)}
	for _, line := range strings.Split(s.text, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		sp := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[sp+1:], 64)
		if err != nil {
			t.Fatalf("unparsable sample %q", line)
		}
		head, labels := line[:sp], map[string]string{}
		name := head
		if i := strings.IndexByte(head, '{'); i >= 0 {
			name = head[:i]
			for _, m := range labelPair.FindAllStringSubmatch(head[i:], -1) {
				labels[m[1]] = m[2]
			}
		}
		s.series = append(s.series, sample{name: name, labels: labels, value: v})
	}
	return s
}

// sum adds the series of name whose labels include want (label=value pairs).
func (s scrape) sum(name string, want ...string) float64 {
	var total float64
	for _, x := range s.series {
		if x.name != name {
			continue
		}
		ok := true
		for i := 0; i+1 < len(want); i += 2 {
			if x.labels[want[i]] != want[i+1] {
				ok = false
				break
			}
		}
		if ok {
			total += x.value
		}
	}
	return total
}

// has reports whether any series of name exists.
func (s scrape) has(name string) bool {
	for _, x := range s.series {
		if x.name == name {
			return true
		}
	}
	return false
}

// The issue's /metrics test: a scenario with failures — a sync failing on
// 5xx, one rate-limited with Retry-After, one refused credentials, an event
// dead-lettered, a refused webhook page, lookups of each result — then the
// scrape carries exactly those counts. It ends by checking that every
// metric the Grafana dashboard and the alert rules name is exported.
func TestOperationsMetricsScenario(t *testing.T) {
	sim := destsim.New(destsim.DemoCredentials())
	srv := httptest.NewServer(sim)
	defer srv.Close()
	r := start(t, t.TempDir(), func(c *config.Config) {
		c.AppcuesURL, c.AnalyticsURL = srv.URL, srv.URL
		// An event is given up on after its second failed attempt.
		c.DeliveryMaxAttempts, c.DeliveryMaxAge = 2, time.Millisecond
	})
	key := keyPattern.FindString(r.stdout.String())
	mustDo := func(method, path, body string) map[string]any {
		t.Helper()
		code, out := r.do(t, method, path, key, body)
		if code != 200 {
			t.Fatalf("%s %s: %d %v", method, path, code, out)
		}
		return out
	}
	waitMetric := func(what string, ok func(s scrape) bool) scrape {
		t.Helper()
		var s scrape
		waitFor(t, 60*time.Second, func() bool { s = r.scrape(t); return ok(s) }, what)
		return s
	}

	// A public segment of three users, two with an Appcues identity.
	seg := mustDo("POST", "/v1/segments", `{"name":"Trial"}`)["segment"].(map[string]any)["segment_id"].(string)
	mustDo("POST", "/v1/users:upsert", `{"users":[
		{"user_id":"u1","properties":{"appcuesUserID":{"string_value":"ac-1"}}},
		{"user_id":"u2","properties":{"appcuesUserID":{"string_value":"ac-2"}}},
		{"user_id":"u3"}]}`)
	mustDo("POST", "/v1/segments/"+seg+"/members:add", `{"user_ids":["u1","u2","u3"]}`)
	appcues := mustDo("POST", "/v1/connections", `{"type":"appcues","name":"Appcues","credentials":{"account_id":"demo","api_key":"demo-key","api_secret":"demo-secret"},"settings":{"send_events":true}}`)
	appcuesID := appcues["connection"].(map[string]any)["connection_id"].(string)
	appcuesSecret := appcues["signing_secret"].(string)

	// Run 1: the destination answers 503 to every attempt.
	sim.SetFaults(destsim.Faults{Rate5xx: 1})
	syncID := mustDo("POST", "/v1/syncs", `{"segment_id":"`+seg+`","connection_id":"`+appcuesID+`","schedule":"SYNC_SCHEDULE_ONE_TIME"}`)["sync"].(map[string]any)["sync_id"].(string)
	runs := func(outcome string) func(s scrape) bool {
		return func(s scrape) bool {
			return s.sum("seghub_sync_runs_total", "destination_type", "appcues", "outcome", outcome) >= 1
		}
	}
	s := waitMetric("the 5xx run to be counted failed", runs("failed"))
	injected := sim.Snapshot().Counters
	if got := s.sum("seghub_destination_requests_total", "destination_type", "appcues", "status_class", "5xx", "code", "503"); got != float64(injected["injected_5xx"]) || got < 2 {
		t.Fatalf("503 requests counted %v, the simulator answered %d", got, injected["injected_5xx"])
	}
	if got := s.sum("seghub_sync_consecutive_failures", "connection_id", appcuesID, "destination_type", "appcues"); got != 1 {
		t.Fatalf("consecutive failures after one failed run = %v", got)
	}

	// Run 2: every attempt is rate-limited with Retry-After: 1.
	sim.SetFaults(destsim.Faults{Rate429: 1, RetryAfter: 1})
	mustDo("POST", "/v1/syncs/"+syncID+":run", `{}`)
	s = waitMetric("the rate-limited run to be counted failed", func(s scrape) bool {
		return s.sum("seghub_sync_runs_total", "destination_type", "appcues", "outcome", "failed") == 2
	})
	injected = sim.Snapshot().Counters
	n429 := s.sum("seghub_destination_requests_total", "destination_type", "appcues", "code", "429")
	if n429 != float64(injected["injected_429"]) || n429 < 2 {
		t.Fatalf("429 requests counted %v, the simulator answered %d", n429, injected["injected_429"])
	}
	// Every 429 but the last was followed by a one-second wait.
	if got := s.sum("seghub_destination_rate_limit_wait_seconds_total", "destination_type", "appcues", "reason", "retry_after"); got < n429-1 {
		t.Fatalf("Retry-After waits counted %vs after %v answers of Retry-After: 1", got, n429)
	}
	if got := s.sum("seghub_sync_consecutive_failures", "connection_id", appcuesID); got != 2 {
		t.Fatalf("consecutive failures after two failed runs = %v", got)
	}

	// Run 3 succeeds: two added, one unmatched (no appcuesUserID).
	sim.SetFaults(destsim.Faults{})
	mustDo("POST", "/v1/syncs/"+syncID+":run", `{}`)
	s = waitMetric("the clean run to be counted", runs("succeeded"))
	for _, c := range []struct {
		result string
		want   float64
	}{{"added", 2}, {"removed", 0}, {"failed", 0}, {"unmatched", 3}} { // one unmatched per run
		if got := s.sum("seghub_sync_identities_total", "destination_type", "appcues", "result", c.result); got != c.want {
			t.Errorf("identities %s = %v, want %v", c.result, got, c.want)
		}
	}
	if got := s.sum("seghub_sync_run_duration_seconds_count", "destination_type", "appcues"); got != 3 {
		t.Errorf("run durations recorded = %v, want 3", got)
	}
	if got := s.sum("seghub_sync_consecutive_failures", "connection_id", appcuesID); got != 0 {
		t.Errorf("consecutive failures after a success = %v", got)
	}
	if got := s.sum("seghub_destination_requests_total", "destination_type", "appcues", "status_class", "2xx"); got < 1 {
		t.Errorf("2xx requests = %v", got)
	}

	// Lookups: a member, a non-member, an unknown segment.
	waitFor(t, 30*time.Second, func() bool {
		_, b := r.do(t, "GET", "/v1/targeting/segments/"+seg+"/members/u1", key, "")
		return b["is_member"] == true
	}, "targeting to see u1")
	before := r.scrape(t)
	r.do(t, "GET", "/v1/targeting/segments/"+seg+"/members/u1", key, "")
	r.do(t, "GET", "/v1/targeting/segments/"+seg+"/members/nobody", key, "")
	r.do(t, "GET", "/v1/targeting/segments/seg_unknown/members/u1", key, "")
	mustDo("POST", "/v1/targeting:batchCheck", `{"checks":[{"segment_id":"`+seg+`","user_id":"u2"},{"segment_id":"`+seg+`","user_id":"nobody"},{"segment_id":"`+seg+`","user_id":"u3"}]}`)
	s = r.scrape(t)
	for result, want := range map[string]float64{"member": 3, "not_member": 2, "error": 1} {
		if got := s.sum("seghub_targeting_lookups_total", "result", result) - before.sum("seghub_targeting_lookups_total", "result", result); got != want {
			t.Errorf("lookups %s = %v, want %v", result, got, want)
		}
	}
	if !s.has("seghub_targeting_index_staleness_seconds") {
		t.Error("no index staleness")
	}

	// A refused and an accepted inbound segment page.
	heap := mustDo("POST", "/v1/connections", `{"type":"heap","name":"Heap"}`)
	heapID := heap["connection"].(map[string]any)["connection_id"].(string)
	hook := heap["connection"].(map[string]any)["webhook_path"].(string)
	wb := webhookBody("heap-1", "Heap: churn", "task-1", 1, page{n: 1, add: []string{"u1"}})
	if code, _ := r.post(t, hook, destinations.Sign("not-the-secret", time.Now(), wb), wb); code != 403 {
		t.Fatalf("badly signed page: %d", code)
	}
	if code, b := r.post(t, hook, destinations.Sign(heap["signing_secret"].(string), time.Now(), wb), wb); code != 200 {
		t.Fatalf("signed page: %d %v", code, b)
	}
	s = r.scrape(t)
	for result, want := range map[string]float64{"rejected": 1, "accepted": 1} {
		if got := s.sum("seghub_inbound_requests_total", "connection_id", heapID, "result", result); got != want {
			t.Errorf("inbound pages %s = %v, want %v", result, got, want)
		}
	}

	// Events: an analytics sink that fails until the event is dead-lettered,
	// then delivers the next one; one event refused at ingestion.
	analytics := mustDo("POST", "/v1/connections", `{"type":"analytics","name":"Analytics","credentials":{"app_id":"ops"}}`)["connection"].(map[string]any)["connection_id"].(string)
	mustDo("POST", "/v1/event-routes", `{"connection_id":"`+analytics+`"}`)
	path := "/webhooks/appcues/" + appcuesID
	sim.SetFaults(destsim.Faults{Rate5xx: 1})
	ev := func(id string) []byte {
		return []byte(`{"id":"` + id + `","name":"appcues:flow_started","user_id":"u1","attributes":{"flowId":"f-1","flowName":"Tour"}}`)
	}
	if code, b := r.postEvents(t, path, destinations.Sign(appcuesSecret, time.Now(), ev("ev-dead")), ev("ev-dead")); code != 200 {
		t.Fatalf("event: %d %v", code, b)
	}
	sink := []string{"sink", analytics, "destination_type", "analytics"}
	s = waitMetric("the failing event to be dead-lettered", func(s scrape) bool {
		return s.sum("seghub_events_dead_lettered_total", sink...) == 1
	})
	if got := s.sum("seghub_events_retried_total", sink...); got != 1 {
		t.Errorf("retried = %v, want 1 (two attempts, the second gives up)", got)
	}
	sim.SetFaults(destsim.Faults{})
	if code, b := r.postEvents(t, path, destinations.Sign(appcuesSecret, time.Now(), ev("ev-ok")), ev("ev-ok")); code != 200 {
		t.Fatalf("event: %d %v", code, b)
	}
	bad := []byte(`{"id":"ev-bad","name":"appcues:flow_started","user_id":"u1","attributes":{"flowId":true}}`)
	r.postEvents(t, path, destinations.Sign(appcuesSecret, time.Now(), bad), bad)
	s = waitMetric("the second event delivered and the sink caught up", func(s scrape) bool {
		return s.sum("seghub_events_delivered_total", sink...) == 1 && s.has("seghub_sink_backlog") && s.sum("seghub_sink_backlog", sink...) == 0
	})
	if got := s.sum("seghub_events_ingested_total", "source", "appcues"); got != 2 {
		t.Errorf("ingested appcues events = %v, want 2", got)
	}
	if got := s.sum("seghub_events_rejected_total", "source", "appcues"); got != 1 {
		t.Errorf("rejected appcues events = %v, want 1", got)
	}
	if got := s.sum("seghub_events_delivery_lag_seconds_count", sink...); got != 1 {
		t.Errorf("delivery lags recorded = %v, want 1", got)
	}
	if got := s.sum("seghub_sink_lag_seconds", sink...); got != 0 {
		t.Errorf("lag of a caught-up sink = %v", got)
	}

	// Run 4: the destination refuses the credentials: needs re-auth.
	if got := s.sum("seghub_connections_needing_reauth", "destination_type", "appcues"); got != 0 {
		t.Fatalf("needing re-auth before any refusal = %v", got)
	}
	sim.SetFaults(destsim.Faults{Rate401: 1})
	mustDo("POST", "/v1/segments/"+seg+"/members:remove", `{"user_ids":["u2"]}`)
	mustDo("POST", "/v1/syncs/"+syncID+":run", `{}`)
	s = waitMetric("the refused connection to need re-auth", func(s scrape) bool {
		return s.sum("seghub_connections_needing_reauth", "destination_type", "appcues") == 1 &&
			s.sum("seghub_sync_runs_total", "destination_type", "appcues", "outcome", "failed") == 3
	})
	if got := s.sum("seghub_destination_requests_total", "destination_type", "appcues", "code", "401"); got != 1 {
		t.Errorf("401 requests = %v, want 1 (credentials refused are not retried)", got)
	}
	sim.SetFaults(destsim.Faults{})

	checkDeployedMetricsExported(t, s)
}

// metricName finds the seghub metric names a PromQL expression uses.
var metricName = regexp.MustCompile(`\bseghub_[a-z0-9_]+`)

// checkDeployedMetricsExported fails for every metric the Grafana
// dashboard, the Prometheus rules or the README's operations queries name
// that s does not carry (a histogram's _bucket, _sum and _count are its
// series).
func checkDeployedMetricsExported(t *testing.T, s scrape) {
	t.Helper()
	names := map[string][]string{} // metric → where it is used
	dash, err := os.ReadFile(filepath.Join("..", "..", "deploy", "grafana", "seghub.json"))
	if err != nil {
		t.Fatal(err)
	}
	var doc any
	if err := json.Unmarshal(dash, &doc); err != nil {
		t.Fatalf("dashboard JSON: %v", err)
	}
	var walk func(v any, where string)
	walk = func(v any, where string) {
		switch x := v.(type) {
		case map[string]any:
			if title, ok := x["title"].(string); ok {
				where = title
			}
			for k, c := range x {
				if s, ok := c.(string); ok && k == "expr" {
					for _, n := range metricName.FindAllString(s, -1) {
						names[n] = append(names[n], "panel "+where)
					}
					continue
				}
				walk(c, where)
			}
		case []any:
			for _, c := range x {
				walk(c, where)
			}
		}
	}
	walk(doc, "dashboard")
	raw, err := os.ReadFile(filepath.Join("..", "..", "deploy", "prometheus", "alerts.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var rules struct {
		Groups []struct {
			Rules []struct {
				Alert  string `yaml:"alert"`
				Record string `yaml:"record"`
				Expr   string `yaml:"expr"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(raw, &rules); err != nil {
		t.Fatalf("alerts.yml: %v", err)
	}
	recorded := map[string]bool{}
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			recorded[r.Record] = true
			for _, n := range metricName.FindAllString(r.Expr, -1) {
				names[n] = append(names[n], "rule "+r.Alert+r.Record)
			}
		}
	}
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	ops := regexp.MustCompile("(?s)\n## Operations\n(.*?)\n## ").FindSubmatch(readme)
	if ops == nil {
		t.Fatal(`README.md has no "## Operations" section`)
	}
	for _, block := range regexp.MustCompile("(?s)```promql\n(.*?)```").FindAllSubmatch(ops[1], -1) {
		for _, n := range metricName.FindAllString(string(block[1]), -1) {
			names[n] = append(names[n], "README Operations")
		}
	}
	if len(names) < 10 {
		t.Fatalf("the dashboard and rules name only %d seghub metrics: %v", len(names), names)
	}
	var missing []string
	for n, where := range names {
		if recorded[n] {
			continue // a recording rule's own output
		}
		if s.has(n) {
			continue
		}
		missing = append(missing, fmt.Sprintf("%s (used by %s)", n, strings.Join(where, ", ")))
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Fatalf("metrics named in deploy/ but not exported by the all-in-one after the scenario:\n%s", strings.Join(missing, "\n"))
	}
}
