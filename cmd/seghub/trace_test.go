package main

import (
	"context"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	collectortracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"

	"github.com/seghub/seghub/pkg/config"
	"github.com/seghub/seghub/pkg/destinations"
	"github.com/seghub/seghub/services/destsim"
)

// otlpReceiver is an OTLP/gRPC trace collector: it keeps every span
// exported to it.
type otlpReceiver struct {
	collectortracepb.UnimplementedTraceServiceServer
	mu    sync.Mutex
	spans []*tracepb.Span
}

func (o *otlpReceiver) Export(_ context.Context, req *collectortracepb.ExportTraceServiceRequest) (*collectortracepb.ExportTraceServiceResponse, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, rs := range req.GetResourceSpans() {
		for _, ss := range rs.GetScopeSpans() {
			o.spans = append(o.spans, ss.GetSpans()...)
		}
	}
	return &collectortracepb.ExportTraceServiceResponse{}, nil
}

// startReceiver serves an OTLP receiver on a loopback port.
func startReceiver(t *testing.T) (*otlpReceiver, string) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rcv := &otlpReceiver{}
	s := grpc.NewServer()
	collectortracepb.RegisterTraceServiceServer(s, rcv)
	go func() { _ = s.Serve(lis) }()
	t.Cleanup(s.Stop)
	return rcv, lis.Addr().String()
}

// received is a snapshot of the spans received, indexed.
type received struct {
	spans  []*tracepb.Span
	byID   map[string]*tracepb.Span
	byName map[string][]*tracepb.Span
}

func (o *otlpReceiver) snapshot() received {
	o.mu.Lock()
	defer o.mu.Unlock()
	r := received{spans: append([]*tracepb.Span(nil), o.spans...), byID: map[string]*tracepb.Span{}, byName: map[string][]*tracepb.Span{}}
	for _, s := range r.spans {
		r.byID[hex.EncodeToString(s.GetSpanId())] = s
		r.byName[s.GetName()] = append(r.byName[s.GetName()], s)
	}
	return r
}

// children are the spans whose parent is p.
func (r received) children(p *tracepb.Span) []*tracepb.Span {
	var out []*tracepb.Span
	for _, s := range r.spans {
		if string(s.GetParentSpanId()) == string(p.GetSpanId()) && string(s.GetTraceId()) == string(p.GetTraceId()) {
			out = append(out, s)
		}
	}
	return out
}

// root is the span of s's trace with no parent (nil if not received).
func (r received) root(s *tracepb.Span) *tracepb.Span {
	for s != nil && len(s.GetParentSpanId()) > 0 {
		s = r.byID[hex.EncodeToString(s.GetParentSpanId())]
	}
	return s
}

func attr(kvs []*commonpb.KeyValue, key string) *commonpb.AnyValue {
	for _, kv := range kvs {
		if kv.GetKey() == key {
			return kv.GetValue()
		}
	}
	return nil
}

func attrString(kvs []*commonpb.KeyValue, key string) string { return attr(kvs, key).GetStringValue() }
func attrInt(kvs []*commonpb.KeyValue, key string) int64     { return attr(kvs, key).GetIntValue() }

// waitSpans polls the receiver until check passes (spans arrive in the
// exporter's batches), failing with check's last complaint.
func waitSpans(t *testing.T, rcv *otlpReceiver, what string, check func(received) error) received {
	t.Helper()
	var err error
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		r := rcv.snapshot()
		if err = check(r); err == nil {
			return r
		}
	}
	t.Fatalf("%s: %v", what, err)
	return received{}
}

// oneShot429 lets the simulator inject 429s (with Retry-After) until the
// first one is answered, then clears the faults: exactly one request is
// refused and retried.
type oneShot429 struct {
	sim   *destsim.Sim
	armed sync.Mutex
	on    bool
}

func (o *oneShot429) arm() {
	o.armed.Lock()
	defer o.armed.Unlock()
	o.on = true
	o.sim.SetFaults(destsim.Faults{Rate429: 1, RetryAfter: 1, TokenTTL: 3600})
}

func (o *oneShot429) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rec := &answerRecorder{ResponseWriter: w, status: http.StatusOK}
	o.sim.ServeHTTP(rec, r)
	o.armed.Lock()
	defer o.armed.Unlock()
	if o.on && rec.status == http.StatusTooManyRequests {
		o.on = false
		o.sim.SetFaults(destsim.Faults{RetryAfter: 1, TokenTTL: 3600})
	}
}

// The all-in-one exports over OTLP/gRPC (sampling everything) the trace
// shapes operators rely on. A sync run: its own trace whose root links to
// the SyncNow request's span (itself under the REST span named by route
// template), batches under the root, and under each batch an HTTP client
// span per request to the simulator, the 429 and its retry visible. An
// Appcues webhook event relayed to analytics: one trace from the webhook
// through storage to the analytics sink's delivery.
func TestTracesOverOTLP(t *testing.T) {
	rcv, addr := startReceiver(t)
	sim := &oneShot429{sim: destsim.New(destsim.DemoCredentials())}
	srv := httptest.NewServer(sim)
	defer srv.Close()
	simHost := strings.Split(strings.TrimPrefix(srv.URL, "http://"), ":")[0]
	r := start(t, t.TempDir(), func(c *config.Config) {
		c.AppcuesURL, c.CommandBarURL, c.AnalyticsURL = srv.URL, srv.URL, srv.URL
		c.OTLPEndpoint, c.TraceSample = addr, 1
	})
	key := keyPattern.FindString(r.stdout.String())
	ok := func(method, path, body string) map[string]any {
		t.Helper()
		code, out := r.do(t, method, path, key, body)
		if code != 200 {
			t.Fatalf("%s %s: %d %v", method, path, code, out)
		}
		return out
	}

	// --- a sync run -------------------------------------------------------
	ac := ok("POST", "/v1/connections", `{"type":"appcues","name":"Appcues","credentials":{"account_id":"demo","api_key":"demo-key","api_secret":"demo-secret"},"settings":{"send_events":true}}`)
	appcues := ac["connection"].(map[string]any)["connection_id"].(string)
	secret := ac["signing_secret"].(string)
	var users []string
	for i := range 4 {
		users = append(users, fmt.Sprintf(`{"user_id":"tu-%d","properties":{"appcuesUserID":{"string_value":"ac-t%d"}}}`, i, i))
	}
	ok("POST", "/v1/users:upsert", `{"users":[`+strings.Join(users, ",")+`]}`)
	seg := ok("POST", "/v1/segments", `{"name":"Traced"}`)["segment"].(map[string]any)["segment_id"].(string)
	ok("POST", "/v1/segments/"+seg+"/members:add", `{"user_ids":["tu-0","tu-1"]}`)
	syncID := ok("POST", "/v1/syncs", `{"segment_id":"`+seg+`","connection_id":"`+appcues+`","schedule":"SYNC_SCHEDULE_ONE_TIME"}`)["sync"].(map[string]any)["sync_id"].(string)
	waitRun := func(runID string) map[string]any {
		t.Helper()
		var run map[string]any
		waitFor(t, 60*time.Second, func() bool {
			for _, x := range ok("GET", "/v1/syncs/"+syncID+"/runs", "")["runs"].([]any) {
				if m := x.(map[string]any); m["run_id"] == runID && m["status"] != "SYNC_RUN_STATUS_QUEUED" && m["status"] != "SYNC_RUN_STATUS_RUNNING" {
					run = m
					return true
				}
			}
			return false
		}, "run "+runID)
		return run
	}
	first := ok("GET", "/v1/syncs/"+syncID+"/runs", "")["runs"].([]any)[0].(map[string]any)
	waitRun(first["run_id"].(string))

	// Two more members, sent while the simulator answers the first request
	// 429 with Retry-After: 1.
	ok("POST", "/v1/segments/"+seg+"/members:add", `{"user_ids":["tu-2","tu-3"]}`)
	sim.arm()
	runID := ok("POST", "/v1/syncs/"+syncID+":run", `{}`)["run"].(map[string]any)["run_id"].(string)
	run := waitRun(runID)
	if run["status"] != "SYNC_RUN_STATUS_SUCCEEDED" || run["added"] != "2" {
		t.Fatalf("run = %v", run)
	}
	traceID := run["trace_id"].(string)
	waitSpans(t, rcv, "sync run trace", func(rs received) error {
		var root *tracepb.Span
		for _, s := range rs.byName["sync.run"] {
			if hex.EncodeToString(s.GetTraceId()) == traceID {
				root = s
			}
		}
		if root == nil {
			return fmt.Errorf("no sync.run span in trace %s", traceID)
		}
		if len(root.GetParentSpanId()) > 0 || attrString(root.GetAttributes(), "run.id") != runID {
			return fmt.Errorf("sync.run is not the root of run %s: %v", runID, root)
		}
		// The link: to the SyncNow request's gRPC span, under the REST span
		// named by the route template.
		var queuedBy *tracepb.Span
		for _, l := range root.GetLinks() {
			if s := rs.byID[hex.EncodeToString(l.GetSpanId())]; s != nil && string(s.GetTraceId()) == string(l.GetTraceId()) {
				queuedBy = s
			}
		}
		if queuedBy == nil || !strings.HasSuffix(queuedBy.GetName(), "/SyncNow") {
			return fmt.Errorf("sync.run links %v, not to a received SyncNow span", root.GetLinks())
		}
		if rest := rs.root(queuedBy); rest == nil || rest.GetName() != "POST /v1/syncs/{sync_id}:run" ||
			attrString(rest.GetAttributes(), "http.route") != "/v1/syncs/{sync_id}:run" {
			return fmt.Errorf("the SyncNow span's trace starts at %v, want the REST span POST /v1/syncs/{sync_id}:run", rest)
		}
		batches := rs.children(root)
		var calls []*tracepb.Span
		retries := 0
		for _, b := range batches {
			if b.GetName() != "sync.batch" {
				continue
			}
			for _, ev := range b.GetEvents() {
				if ev.GetName() == destinations.EventRetry && attr(ev.GetAttributes(), "retry_after.seconds").GetDoubleValue() == 1 &&
					attrInt(ev.GetAttributes(), "http.response.status_code") == 429 {
					retries++
				}
			}
			for _, c := range rs.children(b) {
				if c.GetKind() == tracepb.Span_SPAN_KIND_CLIENT {
					calls = append(calls, c)
				}
			}
		}
		// Two identities: two PATCHes, one of them refused once: three calls.
		statuses := map[int64]int{}
		attempts := map[int64]int{}
		for _, c := range calls {
			a := c.GetAttributes()
			if attrString(a, "server.address") != simHost || attrString(a, "http.request.method") != "PATCH" || attrInt(a, "http.request.body.size") == 0 {
				return fmt.Errorf("client span %s %v", c.GetName(), a)
			}
			statuses[attrInt(a, "http.response.status_code")]++
			attempts[attrInt(a, "destination.attempt")]++
		}
		if len(calls) != 3 || statuses[429] != 1 || statuses[200] != 2 || attempts[2] != 1 || retries != 1 {
			return fmt.Errorf("%d client spans under %d batches, statuses %v, attempts %v, %d retry events; want 3 calls (one 429 retried once)", len(calls), len(batches), statuses, attempts, retries)
		}
		return nil
	})

	// --- an event, Appcues webhook to analytics ---------------------------
	an := ok("POST", "/v1/connections", `{"type":"analytics","name":"Analytics","credentials":{"app_id":"app-9"}}`)
	analytics := an["connection"].(map[string]any)["connection_id"].(string)
	ok("POST", "/v1/event-routes", `{"connection_id":"`+analytics+`"}`)
	body := []byte(`{"events":[{"id":"ac-trace-1","name":"appcues:flow_started","timestamp":1795400000000,"user_id":"tu-0","attributes":{"flowId":"f-1","flowName":"Onboarding"}}]}`)
	if code, out := r.postEvents(t, "/webhooks/appcues/"+appcues, destinations.Sign(secret, time.Now(), body), body); code != 200 {
		t.Fatalf("webhook: %d %v", code, out)
	}
	waitSpans(t, rcv, "event trace", func(rs received) error {
		var deliver *tracepb.Span
		for _, s := range rs.byName["sink.deliver"] {
			a := s.GetAttributes()
			if attrString(a, "event.id") == "ac-trace-1" && attrString(a, "sink.connection_id") == analytics && attrString(a, "delivery.outcome") == "delivered" {
				deliver = s
			}
		}
		if deliver == nil {
			return fmt.Errorf("no delivered sink.deliver span for ac-trace-1 to %s", analytics)
		}
		// Up the one trace: delivery → store → the webhook's REST span.
		var chain []string
		for s := deliver; s != nil; s = rs.byID[hex.EncodeToString(s.GetParentSpanId())] {
			chain = append(chain, s.GetName())
			if len(s.GetParentSpanId()) == 0 {
				break
			}
		}
		joined := strings.Join(chain, " ← ")
		if chain[len(chain)-1] != "POST /webhooks/appcues/{connection_id}" || !strings.Contains(joined, "events.store") {
			return fmt.Errorf("event trace %s: want the webhook's span at the root and events.store on the way", joined)
		}
		// The delivery links to the batch that holds the HTTP call.
		for _, l := range deliver.GetLinks() {
			b := rs.byID[hex.EncodeToString(l.GetSpanId())]
			if b == nil || b.GetName() != "sink.batch" {
				continue
			}
			for _, c := range rs.children(b) {
				if c.GetKind() == tracepb.Span_SPAN_KIND_CLIENT && attrInt(c.GetAttributes(), "http.response.status_code") == 200 &&
					strings.HasSuffix(attrString(c.GetAttributes(), "url.full"), "/api/track") {
					return nil
				}
			}
			return fmt.Errorf("sink.batch %v has no 200 /api/track client span", b.GetAttributes())
		}
		return fmt.Errorf("sink.deliver links %v: no received sink.batch", deliver.GetLinks())
	})
}
