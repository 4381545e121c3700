package eventrelay_test

import (
	"cmp"
	"context"
	crand "crypto/rand"
	"encoding/base64"
	"fmt"
	"math/rand/v2"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	connectorv1 "github.com/seghub/seghub/gen/seghub/connector/v1"
	eventrelayv1 "github.com/seghub/seghub/gen/seghub/eventrelay/v1"
	segmentsyncv1 "github.com/seghub/seghub/gen/seghub/segmentsync/v1"
	"github.com/seghub/seghub/pkg/app/apptest"
	"github.com/seghub/seghub/pkg/config"
	"github.com/seghub/seghub/pkg/destinations"
	"github.com/seghub/seghub/services/connector"
	"github.com/seghub/seghub/services/destsim"
	"github.com/seghub/seghub/services/eventrelay"
	"github.com/seghub/seghub/services/segmentsync"
)

// analyticsApp is the analytics app id events are delivered to.
const analyticsApp = "app-1"

type relayOpts struct {
	external    bool
	postgres    bool
	dbURL       string // a database to share (a second replica)
	secretKey   string // shared by replicas, as SEGHUB_SECRET_KEY is
	dataDir     string
	namespace   string // bus namespace to reuse (restart on external NATS)
	maxAttempts int
	maxAge      time.Duration
	traced      bool // requests start sampled traces (span tests)
	wrapAttach  func(eventrelay.AttachFunc) eventrelay.AttachFunc
	// sims to reuse across a restart
	analytics, appcues *destsim.Sim
	analyticsURL       string
	appcuesURL         string
}

// relayFixture is one seghub process with connector, segmentsync and
// eventrelay, analytics and Appcues each on a simulator of their own (so one
// can be down while the other is up).
type relayFixture struct {
	e                  *apptest.Env
	o                  relayOpts
	analytics, appcues *destsim.Sim
	ev, evAdmin        eventrelayv1.EventRelayServiceClient
	conn               connectorv1.ConnectorServiceClient
	ss                 segmentsyncv1.SegmentSyncServiceClient
}

func startRelay(t *testing.T, o relayOpts) *relayFixture {
	t.Helper()
	f := &relayFixture{analytics: o.analytics, appcues: o.appcues}
	if f.analytics == nil {
		f.analytics, f.appcues = destsim.New(destsim.DemoCredentials()), destsim.New(destsim.DemoCredentials())
		a, b := httptest.NewServer(f.analytics), httptest.NewServer(f.appcues)
		t.Cleanup(a.Close)
		t.Cleanup(b.Close)
		o.analytics, o.appcues, o.analyticsURL, o.appcuesURL = f.analytics, f.appcues, a.URL, b.URL
	}
	if o.maxAttempts == 0 {
		o.maxAttempts, o.maxAge = 1000, time.Hour
	}
	f.e = apptest.New(t, apptest.Options{NeedBus: true, TraceRequests: o.traced, ExternalNATS: o.external, Postgres: o.postgres, DatabaseURL: o.dbURL, DataDir: o.dataDir, Configure: func(c *config.Config) {
		c.AnalyticsURL, c.AppcuesURL, c.CommandBarURL = o.analyticsURL, o.appcuesURL, o.appcuesURL
		c.DeliveryMaxAttempts, c.DeliveryMaxAge = o.maxAttempts, o.maxAge
		if o.namespace != "" {
			c.BusNamespace = o.namespace
		}
		if o.secretKey != "" {
			c.SecretKey = o.secretKey
		}
	}})
	o.dataDir, o.namespace, o.dbURL = f.e.Config.DataDir, f.e.Config.BusNamespace, f.e.Config.DatabaseURL
	f.o = o
	ctx := context.Background()
	cn, err := connector.New(ctx, f.e.P)
	if err != nil {
		t.Fatal(err)
	}
	ss, err := segmentsync.New(ctx, f.e.P)
	if err != nil {
		t.Fatal(err)
	}
	er, err := eventrelay.NewWithOptions(ctx, f.e.P, eventrelay.Options{
		// Each failed request goes back to the sink, which retries per user.
		AdapterConfig: func(c *destinations.Config) { c.MaxAttempts, c.MaxBackoff = 1, 10*time.Millisecond },
		Rate:          func(destinations.Type) (int, int) { return 600_000, 10_000 },
		Backoff:       func(int) time.Duration { return 20 * time.Millisecond },
		Refresh:       200 * time.Millisecond,
		WrapAttach:    o.wrapAttach,
	})
	if err != nil {
		t.Fatal(err)
	}
	f.e.Add(cn, ss, er)
	f.e.Start()
	f.ev = eventrelayv1.NewEventRelayServiceClient(f.e.Dial(f.e.A.Member))
	f.evAdmin = eventrelayv1.NewEventRelayServiceClient(f.e.Dial(f.e.A.Admin))
	f.conn = connectorv1.NewConnectorServiceClient(f.e.Dial(f.e.A.Admin))
	f.ss = segmentsyncv1.NewSegmentSyncServiceClient(f.e.Dial(f.e.A.Member))
	return f
}

// restart stops the process and starts it again on the same data, bus and
// simulators.
func (f *relayFixture) restart(t *testing.T) *relayFixture {
	t.Helper()
	f.e.Stop()
	return startRelay(t, f.o)
}

func (f *relayFixture) connect(t *testing.T, ctx context.Context, typ string, sendEvents bool) string {
	t.Helper()
	creds := map[string]string{"app_id": analyticsApp}
	if typ == "appcues" {
		creds = map[string]string{"account_id": "demo", "api_key": "demo-key", "api_secret": "demo-secret"}
	}
	r, err := f.conn.CreateConnection(ctx, &connectorv1.CreateConnectionRequest{Type: typ, Name: typ + " " + fmt.Sprint(rand.Int()), Credentials: creds,
		Settings: &connectorv1.ConnectionSettings{SendEvents: sendEvents}})
	if err != nil {
		t.Fatal(err)
	}
	return r.GetConnection().GetConnectionId()
}

func (f *relayFixture) setSendEvents(t *testing.T, ctx context.Context, conn string, on bool) {
	t.Helper()
	if _, err := f.conn.UpdateConnection(ctx, &connectorv1.UpdateConnectionRequest{ConnectionId: conn, Settings: &connectorv1.ConnectionSettings{SendEvents: on}}); err != nil {
		t.Fatal(err)
	}
}

func (f *relayFixture) route(t *testing.T, ctx context.Context, conn string, sources ...string) string {
	t.Helper()
	r, err := f.evAdmin.CreateRoute(ctx, &eventrelayv1.CreateRouteRequest{ConnectionId: conn, Sources: sources})
	if err != nil {
		t.Fatal(err)
	}
	return r.GetRoute().GetRouteId()
}

// apiEvent is an "api" source event with a sequence number n.
func apiEvent(id, user string, n int) *eventrelayv1.Event {
	p, _ := structpb.NewStruct(map[string]any{"n": n})
	return &eventrelayv1.Event{EventId: id, Source: "api", UserId: user, Name: "Seq", Properties: p}
}

func (f *relayFixture) track(t *testing.T, ctx context.Context, events []*eventrelayv1.Event) {
	t.Helper()
	for i := 0; i < len(events); i += 500 {
		r, err := f.ev.TrackBatch(ctx, &eventrelayv1.TrackBatchRequest{Events: events[i:min(i+500, len(events))]})
		if err != nil {
			t.Fatal(err)
		}
		if len(r.GetRejected()) > 0 {
			t.Fatalf("rejected: %v", r.GetRejected())
		}
	}
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not reached after %v; %s", what, d, state)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// analyticsEvents is what the analytics simulator holds.
func (f *relayFixture) analyticsEvents() []map[string]any {
	return f.analytics.Snapshot().Analytics[analyticsApp]
}

func (f *relayFixture) appcuesEvents() []map[string]any {
	return f.appcues.Snapshot().AppcuesEvents["demo"]
}

// probe calls send(0), send(1), ... every 200 ms until arrived, for at most
// 60 s: for a change that takes effect after a refresh.
func probe(t *testing.T, ctx context.Context, what string, send func(i int), arrived func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for i := 0; !arrived(); i++ {
		if time.Now().After(deadline) || ctx.Err() != nil {
			t.Fatalf("%s: nothing arrived after %d tries", what, i)
		}
		send(i)
		for end := time.Now().Add(200 * time.Millisecond); time.Now().Before(end) && !arrived(); {
			time.Sleep(10 * time.Millisecond)
		}
	}
}

func waitCount(t *testing.T, what string, n int, get func() []map[string]any) []map[string]any {
	t.Helper()
	var got []map[string]any
	waitFor(t, 60*time.Second, what, func() (bool, string) {
		got = get()
		return len(got) >= n, fmt.Sprintf("%d of %d", len(got), n)
	})
	return got
}

// perUserOrder checks that each user's "n" properties arrive 0, 1, 2, ...
// exactly once.
func perUserOrder(t *testing.T, events []map[string]any, identity, props string, users, each int) {
	t.Helper()
	next := map[string]int{}
	for _, e := range events {
		u, _ := e[identity].(string)
		p, _ := e[props].(map[string]any)
		n, _ := p["n"].(float64)
		if int(n) != next[u] {
			t.Fatalf("user %s: got event %v, want %d (duplicate or out of order)", u, n, next[u])
		}
		next[u]++
	}
	if len(next) != users {
		t.Fatalf("%d users delivered, want %d", len(next), users)
	}
	for u, n := range next {
		if n != each {
			t.Fatalf("user %s: %d events, want %d", u, n, each)
		}
	}
}

// interleaved is users × each api events, every user's in order, users
// shuffled together.
func interleaved(prefix string, users, each int) []*eventrelayv1.Event {
	next := make([]int, users)
	var out []*eventrelayv1.Event
	for len(out) < users*each {
		u := rand.IntN(users)
		if next[u] == each {
			continue
		}
		out = append(out, apiEvent(fmt.Sprintf("%s-u%d-%d", prefix, u, next[u]), fmt.Sprintf("u%d", u), next[u]))
		next[u]++
	}
	return out
}

func TestSchemasAndValidation(t *testing.T) {
	f := startRelay(t, relayOpts{})
	ctx := apptest.Context(t, 60*time.Second)
	an := f.connect(t, ctx, "analytics", false)
	f.route(t, ctx, an)

	sc, err := f.ev.ListEventSchemas(ctx, &eventrelayv1.ListEventSchemasRequest{Source: "appcues"})
	if err != nil || len(sc.GetSchemas()) != 16 {
		t.Fatalf("appcues schemas: %d, %v", len(sc.GetSchemas()), err)
	}
	sc, err = f.ev.ListEventSchemas(ctx, &eventrelayv1.ListEventSchemasRequest{Source: "commandbar"})
	if err != nil || len(sc.GetSchemas()) != 16 {
		t.Fatalf("commandbar schemas: %d, %v", len(sc.GetSchemas()), err)
	}

	// A wire name and wire properties leave under the display names.
	props, _ := structpb.NewStruct(map[string]any{"flowId": "f-1", "flowName": "Onboarding", "appcuesUserID": "ac-9"})
	tr, err := f.ev.Track(ctx, &eventrelayv1.TrackRequest{Event: &eventrelayv1.Event{Source: "appcues", UserId: "u1", Name: "appcues:flow_started", Properties: props}})
	if err != nil || !strings.HasPrefix(tr.GetEventId(), "evt_") {
		t.Fatalf("track: %v %v", tr, err)
	}
	got := waitCount(t, "flow started in analytics", 1, f.analyticsEvents)
	p, _ := got[0]["properties"].(map[string]any)
	if got[0]["event"] != "Flow Started" || p["Flow ID"] != "f-1" || p["Flow Name"] != "Onboarding" || p["flowId"] != nil || got[0]["idempotency_key"] != tr.GetEventId() {
		t.Fatalf("delivered %v", got[0])
	}

	bad := []struct {
		name  string
		event *eventrelayv1.Event
		field string
	}{
		{"no user", &eventrelayv1.Event{Source: "api", Name: "x"}, "event.user_id"},
		{"unknown commandbar event", &eventrelayv1.Event{Source: "commandbar", UserId: "u", Name: "teleported"}, "event.name"},
		{"unknown source", &eventrelayv1.Event{Source: "mixpanel", UserId: "u", Name: "x"}, "event.source"},
		{"property of the wrong type", &eventrelayv1.Event{Source: "appcues", UserId: "u", Name: "appcues:nps_score", Properties: mustStruct(map[string]any{"score": "nine"})}, "event.properties.NPS Score"},
		{"score out of range", &eventrelayv1.Event{Source: "appcues", UserId: "u", Name: "NPS Score Submitted", Properties: mustStruct(map[string]any{"score": 11})}, "event.properties.NPS Score"},
		{"unknown connection", &eventrelayv1.Event{Source: "commandbar", ConnectionId: "cn_nope", UserId: "u", Name: "opened"}, "event.connection_id"},
		{"connection of another type", &eventrelayv1.Event{Source: "commandbar", ConnectionId: an, UserId: "u", Name: "opened"}, "event.connection_id"},
	}
	for _, tc := range bad {
		_, err := f.ev.Track(ctx, &eventrelayv1.TrackRequest{Event: tc.event})
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("%s: %v (want InvalidArgument naming %s)", tc.name, err, tc.field)
		}
	}

	// In a batch, good events are stored and each bad one is reported.
	var header metadata.MD
	b, err := f.ev.TrackBatch(ctx, &eventrelayv1.TrackBatchRequest{Events: []*eventrelayv1.Event{
		{Source: "commandbar", UserId: "u2", Name: "opened"},
		{Source: "commandbar", UserId: "u2", Name: "teleported"},
		{Source: "appcues", UserId: "u2", Name: "Form Submitted", Properties: mustStruct(map[string]any{"flowId": "f", "formId": true})},
		{Source: "api", UserId: "u2", Name: "Plan Upgraded"},
	}}, grpc.Header(&header))
	if got := header.Get("seghub-events-rejected"); len(got) != 1 || got[0] != "2" {
		t.Errorf("partly refused batch answered header %v; want seghub-events-rejected: 2", header)
	}
	if err != nil || len(b.GetEventIds()) != 2 || len(b.GetRejected()) != 2 || b.GetRejected()[0].GetIndex() != 1 || b.GetRejected()[0].GetField() != "name" ||
		b.GetRejected()[1].GetIndex() != 2 || b.GetRejected()[1].GetField() != "properties.Form ID" {
		t.Fatalf("mixed batch: %v %v", b, err)
	}
	waitCount(t, "batch's good events", 3, f.analyticsEvents)
	_, err = f.ev.TrackBatch(ctx, &eventrelayv1.TrackBatchRequest{Events: []*eventrelayv1.Event{{Source: "api", Name: "x"}, {Source: "api", UserId: "u"}}})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "events[0].user_id") || !strings.Contains(err.Error(), "events[1].name") {
		t.Fatalf("all-bad batch: %v", err)
	}
	_, err = f.ev.TrackBatch(ctx, &eventrelayv1.TrackBatchRequest{Events: interleaved("big", 1, 1001)})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "at most 1000") {
		t.Fatalf("oversized batch: %v", err)
	}
	time.Sleep(300 * time.Millisecond)
	if n := len(f.analyticsEvents()); n != 3 {
		t.Fatalf("refused events reached analytics: %d events", n)
	}
	// A route only to a type that takes events, and only by admins.
	if _, err := f.ev.CreateRoute(ctx, &eventrelayv1.CreateRouteRequest{ConnectionId: an}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("member creating a route: %v", err)
	}
}

func mustStruct(m map[string]any) *structpb.Struct {
	s, err := structpb.NewStruct(m)
	if err != nil {
		panic(err)
	}
	return s
}

func TestStreamTrackAcksInOrderAndDeduplicates(t *testing.T) {
	f := startRelay(t, relayOpts{})
	ctx := apptest.Context(t, 60*time.Second)
	f.route(t, ctx, f.connect(t, ctx, "analytics", false))

	st, err := f.ev.StreamTrack(ctx)
	if err != nil {
		t.Fatal(err)
	}
	events := interleaved("st", 10, 30)
	// Every event is sent twice, in separate messages: stored once.
	var msgs [][]*eventrelayv1.Event
	for i := 0; i < len(events); i += 50 {
		msgs = append(msgs, events[i:i+50], events[i:i+50])
	}
	msgs = append(msgs, []*eventrelayv1.Event{{Source: "api", Name: "no user"}})
	go func() {
		for i, m := range msgs {
			if err := st.Send(&eventrelayv1.StreamTrackRequest{Sequence: uint64(i + 1), Events: m}); err != nil {
				return
			}
		}
		_ = st.CloseSend()
	}()
	var accepted, dups uint32
	for i := range msgs {
		r, err := st.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if r.GetSequence() != uint64(i+1) {
			t.Fatalf("ack %d has sequence %d", i+1, r.GetSequence())
		}
		accepted += r.GetAccepted()
		dups += r.GetDuplicates()
		if i == len(msgs)-1 && (len(r.GetRejected()) != 1 || r.GetRejected()[0].GetField() != "user_id") {
			t.Fatalf("last ack: %v", r)
		}
	}
	if accepted != 300 || dups != 300 {
		t.Fatalf("accepted %d, duplicates %d; want 300 and 300", accepted, dups)
	}
	// Tracked again through the unary API: still a duplicate.
	again, err := f.ev.Track(ctx, &eventrelayv1.TrackRequest{Event: events[0]})
	if err != nil || !again.GetDuplicate() {
		t.Fatalf("repeat: %v %v", again, err)
	}
	got := waitCount(t, "streamed events", 300, f.analyticsEvents)
	time.Sleep(300 * time.Millisecond)
	perUserOrder(t, f.analyticsEvents(), "identity", "properties", 10, 30)
	if len(got) != 300 {
		t.Fatalf("delivered %d", len(got))
	}
}

// Order per user holds while the destination fails 40 % of requests, and
// every event arrives exactly once.
func TestOrderPerUserAcrossRetries(t *testing.T) {
	f := startRelay(t, relayOpts{})
	ctx := apptest.Context(t, 120*time.Second)
	f.route(t, ctx, f.connect(t, ctx, "analytics", false))
	ac := f.connect(t, ctx, "appcues", true)
	f.route(t, ctx, ac)
	faults := destsim.Faults{Rate429: 0.2, Rate5xx: 0.2, RetryAfter: 0}
	f.analytics.SetFaults(faults)
	f.appcues.SetFaults(faults)

	f.track(t, ctx, interleaved("ord", 20, 25))
	waitCount(t, "analytics", 500, f.analyticsEvents)
	waitCount(t, "appcues", 500, f.appcuesEvents)
	time.Sleep(300 * time.Millisecond)
	perUserOrder(t, f.analyticsEvents(), "identity", "properties", 20, 25)
	perUserOrder(t, f.appcuesEvents(), "user_id", "attributes", 20, 25)
	// Analytics takes the 500 events in a handful of bulk requests, which may
	// all succeed; Appcues takes one request per event, so faults certainly
	// hit it.
	if c := f.appcues.Snapshot().Counters; c["injected_429"]+c["injected_5xx"] == 0 {
		t.Fatalf("no faults were injected at Appcues: %v", c)
	}
}

// A down destination holds only its own sink: analytics gets everything
// meanwhile, and the destination catches up, in order, once it is back.
func TestDownDestinationDoesNotDelayOthers(t *testing.T) {
	f := startRelay(t, relayOpts{})
	ctx := apptest.Context(t, 120*time.Second)
	f.route(t, ctx, f.connect(t, ctx, "analytics", false))
	ac := f.connect(t, ctx, "appcues", true)
	f.route(t, ctx, ac)
	f.appcues.SetFaults(destsim.Faults{Rate5xx: 1})

	start := time.Now()
	f.track(t, ctx, interleaved("down", 10, 20))
	waitCount(t, "analytics while appcues is down", 200, f.analyticsEvents)
	took := time.Since(start)
	if n := len(f.appcuesEvents()); n != 0 {
		t.Fatalf("appcues took %d events while down", n)
	}
	waitFor(t, 10*time.Second, "appcues sink shows its retries", func() (bool, string) {
		s, err := f.ev.ListSinks(ctx, &eventrelayv1.ListSinksRequest{})
		if err != nil {
			return false, err.Error()
		}
		for _, k := range s.GetSinks() {
			if k.GetConnectionId() == ac {
				return k.GetRetryingUsers() == 10 && k.GetBacklog() == 200 && strings.Contains(k.GetLastError(), "50"), fmt.Sprint(k)
			}
		}
		return false, fmt.Sprint(s.GetSinks())
	})
	// The gauges say the same: the down sink is 200 events and some time
	// behind, retrying; analytics is caught up.
	waitFor(t, 10*time.Second, "the sink gauges", func() (bool, string) {
		g := gatherSinks(t, f.e.P.Telemetry.Registry)
		return g["seghub_sink_backlog "+ac] == 200 && g["seghub_sink_lag_seconds "+ac] > 0 && g["seghub_events_retried_total "+ac] > 0 &&
			g["seghub_events_delivered_total "+ac] == 0, fmt.Sprint(g)
	})
	// Analytics had everything while Appcues still held nothing and kept
	// failing: the down sink held back no one else.
	t.Logf("analytics had all 200 events %v after ingest began, Appcues down", took)
	f.appcues.SetFaults(destsim.Faults{})
	waitCount(t, "appcues after recovery", 200, f.appcuesEvents)
	time.Sleep(300 * time.Millisecond)
	perUserOrder(t, f.appcuesEvents(), "user_id", "attributes", 10, 20)
}

// Events flow on only while the source's send_events is on, and reach a
// destination only while the destination's send_events is on.
func TestSendEventsOff(t *testing.T) {
	f := startRelay(t, relayOpts{})
	ctx := apptest.Context(t, 60*time.Second)
	an := f.connect(t, ctx, "analytics", false)
	f.route(t, ctx, an)
	source := f.connect(t, ctx, "appcues", false) // Appcues as the events' source
	ev := func(id string) *eventrelayv1.Event {
		return &eventrelayv1.Event{EventId: id, Source: "appcues", ConnectionId: source, UserId: "u1", Name: "Flow Completed", Properties: mustStruct(map[string]any{"flowId": "f"})}
	}
	f.track(t, ctx, []*eventrelayv1.Event{ev("off-1"), ev("off-2")})
	// A routed API event of the same user after them: once it is delivered,
	// the sink has decided on the two before it (one consumer per
	// partition, in stream order; a user's events share one partition).
	f.track(t, ctx, []*eventrelayv1.Event{apiEvent("mark-1", "u1", 0)})
	waitCount(t, "the marker after the events sent while off", 1, f.analyticsEvents)
	f.setSendEvents(t, ctx, source, true)
	// The sink re-reads its connection every Refresh: send until one
	// arrives rather than guess how long that takes on a busy machine.
	probe(t, ctx, "an event sent while on", func(i int) {
		f.track(t, ctx, []*eventrelayv1.Event{ev(fmt.Sprint("on-", i))})
	}, func() bool { return len(f.analyticsEvents()) > 1 })
	time.Sleep(300 * time.Millisecond)
	for _, e := range f.analyticsEvents() {
		if k, _ := e["idempotency_key"].(string); strings.HasPrefix(k, "off-") {
			t.Fatalf("analytics holds %s, sent while send_events was off: %v", k, f.analyticsEvents())
		}
	}
	before := len(f.analyticsEvents())

	// A destination sink: its own send_events decides.
	dest := f.connect(t, ctx, "appcues", false)
	f.route(t, ctx, dest, "api")
	f.track(t, ctx, []*eventrelayv1.Event{apiEvent("d-off", "u2", 0)})
	waitCount(t, "analytics has the api event", before+1, f.analyticsEvents)
	time.Sleep(500 * time.Millisecond)
	if n := len(f.appcuesEvents()); n != 0 {
		t.Fatalf("forwarded to Appcues with send_events off: %d", n)
	}
	f.setSendEvents(t, ctx, dest, true)
	probe(t, ctx, "an event forwarded with send_events on", func(i int) {
		f.track(t, ctx, []*eventrelayv1.Event{apiEvent(fmt.Sprint("d-on-", i), "u2", 0)})
	}, func() bool { return len(f.appcuesEvents()) > 0 })
	time.Sleep(300 * time.Millisecond)
	got := f.appcuesEvents()
	for _, e := range got {
		if e["name"] != "Seq" || e["user_id"] != "u2" {
			t.Fatalf("appcues holds %v", got)
		}
	}

	// A user with an Appcues identity is sent under it.
	if _, err := f.ss.UpsertUsers(ctx, &segmentsyncv1.UpsertUsersRequest{Users: []*segmentsyncv1.User{{UserId: "u3",
		Properties: map[string]*segmentsyncv1.PropertyValue{"appcuesUserID": {Kind: &segmentsyncv1.PropertyValue_StringValue{StringValue: "ac-3"}}}}}}); err != nil {
		t.Fatal(err)
	}
	f.track(t, ctx, []*eventrelayv1.Event{apiEvent("d-mapped", "u3", 0)})
	// Users are in different partitions, so a late probe of u2 may land
	// after it: look for u3's event by who it was sent as.
	waitFor(t, 30*time.Second, "forwarded under the Appcues identity", func() (bool, string) {
		got := f.appcuesEvents()
		for _, e := range got {
			if e["user_id"] == "u3" {
				t.Fatalf("forwarded as u3, want the user's appcuesUserID ac-3: %v", got)
			}
			if e["user_id"] == "ac-3" {
				return true, ""
			}
		}
		return false, fmt.Sprint(got)
	})
}

func TestDeadLettersAndReplay(t *testing.T) {
	f := startRelay(t, relayOpts{maxAttempts: 3, maxAge: 300 * time.Millisecond})
	ctx := apptest.Context(t, 60*time.Second)
	an := f.connect(t, ctx, "analytics", false)
	f.route(t, ctx, an)
	f.analytics.SetFaults(destsim.Faults{Rate5xx: 1})
	f.track(t, ctx, interleaved("dl", 3, 4))

	var dls []*eventrelayv1.DeadLetter
	waitFor(t, 30*time.Second, "dead letters", func() (bool, string) {
		r, err := f.ev.ListDeadLetters(ctx, &eventrelayv1.ListDeadLettersRequest{ConnectionId: an})
		if err != nil {
			return false, err.Error()
		}
		dls = r.GetDeadLetters()
		return len(dls) == 12, fmt.Sprint(len(dls))
	})
	for _, d := range dls {
		// Not before both limits: at least 3 attempts and 300 ms of failures.
		age := d.GetDeadTime().AsTime().Sub(d.GetFirstAttemptTime().AsTime())
		if d.GetAttempts() < 3 || age < 300*time.Millisecond || !strings.Contains(d.GetReason(), "HTTP 5") || d.GetEvent().GetUserId() == "" {
			t.Fatalf("dead letter %v (after %v)", d, age)
		}
	}
	// Paginated.
	p1, err := f.ev.ListDeadLetters(ctx, &eventrelayv1.ListDeadLettersRequest{ConnectionId: an, PageSize: 5})
	if err != nil || len(p1.GetDeadLetters()) != 5 || p1.GetNextPageToken() == "" {
		t.Fatalf("page 1: %v %v", p1, err)
	}
	p2, err := f.ev.ListDeadLetters(ctx, &eventrelayv1.ListDeadLettersRequest{ConnectionId: an, PageSize: 10, PageToken: p1.GetNextPageToken()})
	if err != nil || len(p2.GetDeadLetters()) != 7 || p2.GetNextPageToken() != "" {
		t.Fatalf("page 2: %v %v", p2, err)
	}

	if _, err := f.ev.ReplayDeadLetters(ctx, &eventrelayv1.ReplayDeadLettersRequest{ConnectionId: an}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("member replaying: %v", err)
	}
	if _, err := f.evAdmin.ReplayDeadLetters(ctx, &eventrelayv1.ReplayDeadLettersRequest{DeadLetterIds: []string{"dl_nope"}}); status.Code(err) != codes.NotFound {
		t.Fatalf("unknown dead letter: %v", err)
	}
	f.analytics.SetFaults(destsim.Faults{})
	// One first, then the rest of the sink's.
	r, err := f.evAdmin.ReplayDeadLetters(ctx, &eventrelayv1.ReplayDeadLettersRequest{DeadLetterIds: []string{dls[0].GetDeadLetterId()}})
	if err != nil || r.GetReplayed() != 1 {
		t.Fatalf("replay one: %v %v", r, err)
	}
	waitCount(t, "one replayed event", 1, f.analyticsEvents)
	r, err = f.evAdmin.ReplayDeadLetters(ctx, &eventrelayv1.ReplayDeadLettersRequest{ConnectionId: an})
	if err != nil || r.GetReplayed() != 11 {
		t.Fatalf("replay the rest: %v %v", r, err)
	}
	waitCount(t, "replayed events", 12, f.analyticsEvents)
	time.Sleep(300 * time.Millisecond)
	if n := len(f.analyticsEvents()); n != 12 {
		t.Fatalf("analytics holds %d events after replay; want 12", n)
	}
	left, _ := f.ev.ListDeadLetters(ctx, &eventrelayv1.ListDeadLettersRequest{ConnectionId: an})
	all, _ := f.ev.ListDeadLetters(ctx, &eventrelayv1.ListDeadLettersRequest{ConnectionId: an, IncludeReplayed: true})
	if len(left.GetDeadLetters()) != 0 || len(all.GetDeadLetters()) != 12 || all.GetDeadLetters()[0].GetReplayTime() == nil {
		t.Fatalf("after replay: pending %d, all %d", len(left.GetDeadLetters()), len(all.GetDeadLetters()))
	}
	// Replaying twice sends nothing again.
	if r, err := f.evAdmin.ReplayDeadLetters(ctx, &eventrelayv1.ReplayDeadLettersRequest{ConnectionId: an}); err != nil || r.GetReplayed() != 0 {
		t.Fatalf("second replay: %v %v", r, err)
	}
}

// Events acknowledged before a stop are all delivered after the restart,
// on embedded and on external JetStream.
func TestRestartDeliversEveryAckedEvent(t *testing.T) {
	for _, ext := range []bool{false, true} {
		t.Run(map[bool]string{false: "embedded", true: "external"}[ext], func(t *testing.T) {
			f := startRelay(t, relayOpts{external: ext})
			ctx := apptest.Context(t, 120*time.Second)
			f.route(t, ctx, f.connect(t, ctx, "analytics", false))
			// Slow the destination so the stop comes mid-delivery.
			f.analytics.SetFaults(destsim.Faults{LatencyMS: 50})
			const users, each = 50, 40
			f.track(t, ctx, interleaved("rs", users, each))
			waitCount(t, "some delivered before the stop", 1, f.analyticsEvents)
			before := len(f.analyticsEvents())
			f = f.restart(t)
			f.analytics.SetFaults(destsim.Faults{})
			waitCount(t, "every acknowledged event after restart", users*each, f.analyticsEvents)
			time.Sleep(300 * time.Millisecond)
			t.Logf("%d of %d delivered before the restart", before, users*each)
			perUserOrder(t, f.analyticsEvents(), "identity", "properties", users, each)
		})
	}
}

func TestIdentityAttach(t *testing.T) {
	f := startRelay(t, relayOpts{})
	ctx := apptest.Context(t, 60*time.Second)
	f.track(t, ctx, []*eventrelayv1.Event{
		{Source: "appcues", UserId: "u-att", Name: "appcues:step_completed", Properties: mustStruct(map[string]any{"flowId": "f", "appcuesUserID": "ac-77"})},
		{Source: "appcues", UserId: "u-self", Name: "Flow Started", Properties: mustStruct(map[string]any{"flowId": "f"})},
	})
	for user, want := range map[string]string{"u-att": "ac-77", "u-self": "u-self"} {
		waitFor(t, 20*time.Second, "appcuesUserID on "+user, func() (bool, string) {
			u, err := f.ss.GetUser(ctx, &segmentsyncv1.GetUserRequest{UserId: user})
			if err != nil {
				return false, err.Error()
			}
			return u.GetUser().GetProperties()["appcuesUserID"].GetStringValue() == want, fmt.Sprint(u.GetUser().GetProperties())
		})
	}
}

// Two replicas on one database and JetStream: both ingest, and both deliver,
// each the partitions (users) it owns; when one stops, the other takes its
// partitions over, and every user's events arrive once and in order.
func TestReplicasShareDelivery(t *testing.T) {
	key := make([]byte, 32)
	_, _ = crand.Read(key)
	f1 := startRelay(t, relayOpts{external: true, postgres: true, secretKey: base64.StdEncoding.EncodeToString(key)})
	o := f1.o
	o.dataDir = "" // its own files; the database and the bus are shared
	f2 := startRelay(t, o)
	ctx := apptest.Context(t, 120*time.Second)
	f1.route(t, ctx, f1.connect(t, ctx, "analytics", false))
	replicas := []eventrelayv1.EventRelayServiceClient{f1.ev, eventrelayv1.NewEventRelayServiceClient(f2.e.Dial(f1.e.A.Member))}
	delivered := func(c eventrelayv1.EventRelayServiceClient) uint64 {
		s, err := c.ListSinks(ctx, &eventrelayv1.ListSinksRequest{})
		if err != nil || len(s.GetSinks()) != 1 || s.GetSinks()[0].GetType() != "analytics" {
			t.Fatalf("sinks: %v %v", s, err)
		}
		return s.GetSinks()[0].GetDelivered()
	}

	// Batches alternate between the replicas; 64 users spread over the 16
	// partitions, so each replica's half of them has users.
	const users, each = 64, 10
	events := interleaved("rep", users, each)
	half := len(events) / 2
	for i := 0; i < half; i += 40 {
		if _, err := replicas[(i/40)%2].TrackBatch(ctx, &eventrelayv1.TrackBatchRequest{Events: events[i:min(i+40, half)]}); err != nil {
			t.Fatal(err)
		}
	}
	waitCount(t, "events ingested by both replicas", half, f1.analyticsEvents)
	// Both deliver once the partitions are shared (ingest may start before).
	waitFor(t, 30*time.Second, "both replicas delivering", func() (bool, string) {
		d1, d2 := delivered(replicas[0]), delivered(replicas[1])
		return d1 > 0 && d2 > 0 && d1+d2 >= uint64(half), fmt.Sprintf("delivered %d by the first, %d by the second", d1, d2)
	})
	// One replica stops; the other takes its partitions over.
	leaving, survivor := f1, replicas[1]
	if rand.IntN(2) == 0 {
		leaving, survivor = f2, replicas[0]
	}
	before := delivered(survivor)
	leaving.e.Stop()
	for i := half; i < len(events); i += 40 {
		if _, err := survivor.TrackBatch(ctx, &eventrelayv1.TrackBatchRequest{Events: events[i:min(i+40, len(events))]}); err != nil {
			t.Fatal(err)
		}
	}
	waitCount(t, "events after the takeover", len(events), f1.analyticsEvents)
	time.Sleep(300 * time.Millisecond)
	perUserOrder(t, f1.analyticsEvents(), "identity", "properties", users, each)
	if n := delivered(survivor) - before; n < uint64(len(events)-half) {
		t.Fatalf("the surviving replica delivered %d after the stop, want at least the %d sent after it", n, len(events)-half)
	}
}

// ListRoutes pages oldest first: walking next_page_token returns every route
// of the environment once, in (create time, id) order.
func TestListRoutesPages(t *testing.T) {
	f := startRelay(t, relayOpts{})
	ctx := apptest.Context(t, 30*time.Second)
	an := f.connect(t, ctx, "analytics", false)
	type created struct {
		at int64
		id string
	}
	var want []created
	for _, src := range []string{"api", "appcues", "commandbar", "api", "appcues"} {
		r, err := f.evAdmin.CreateRoute(ctx, &eventrelayv1.CreateRouteRequest{ConnectionId: an, Sources: []string{src}})
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, created{r.GetRoute().GetCreateTime().AsTime().UnixMicro(), r.GetRoute().GetRouteId()})
	}
	// Routes created in the same microsecond are ordered by id.
	slices.SortFunc(want, func(a, b created) int {
		if a.at != b.at {
			return cmp.Compare(a.at, b.at)
		}
		return strings.Compare(a.id, b.id)
	})
	var got []string
	req := &eventrelayv1.ListRoutesRequest{PageSize: 2}
	for pages := 1; ; pages++ {
		r, err := f.ev.ListRoutes(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		if len(r.GetRoutes()) > 2 || pages > 3 {
			t.Fatalf("page %d holds %d routes", pages, len(r.GetRoutes()))
		}
		for _, rt := range r.GetRoutes() {
			got = append(got, rt.GetRouteId())
		}
		if r.GetNextPageToken() == "" {
			break
		}
		req.PageToken = r.GetNextPageToken()
	}
	var wantIDs []string
	for _, c := range want {
		wantIDs = append(wantIDs, c.id)
	}
	if !slices.Equal(got, wantIDs) {
		t.Fatalf("pages = %v, want %v", got, wantIDs)
	}
	// page_size 0 is one default page, as before pagination.
	if all, err := f.ev.ListRoutes(ctx, &eventrelayv1.ListRoutesRequest{}); err != nil || len(all.GetRoutes()) != 5 || all.GetNextPageToken() != "" {
		t.Fatalf("default page = %v, %v", all, err)
	}
	if _, err := f.ev.ListRoutes(ctx, &eventrelayv1.ListRoutesRequest{PageToken: "garbage!"}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("ListRoutes(garbage token) = %v, want InvalidArgument", err)
	}
}

// A route can deliver its events under another name (Heap's Snapshot
// workaround: Appcues.track("any name")); other routes keep the event's own.
func TestRouteDeliversAs(t *testing.T) {
	for _, pg := range []bool{false, true} {
		t.Run(map[bool]string{false: "sqlite", true: "postgres"}[pg], func(t *testing.T) {
			f := startRelay(t, relayOpts{postgres: pg})
			ctx := apptest.Context(t, 60*time.Second)
			an := f.connect(t, ctx, "analytics", false)
			f.route(t, ctx, an)
			dest := f.connect(t, ctx, "appcues", true)
			if _, err := f.evAdmin.CreateRoute(ctx, &eventrelayv1.CreateRouteRequest{ConnectionId: dest, Sources: []string{"api"}, DeliverAs: "\x1b[31mSeq"}); status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "deliver_as") {
				t.Fatalf("control character in deliver_as: %v", err)
			}
			r, err := f.evAdmin.CreateRoute(ctx, &eventrelayv1.CreateRouteRequest{ConnectionId: dest, EventNames: []string{"Seq"}, DeliverAs: " Checkout Seen "})
			if err != nil || r.GetRoute().GetDeliverAs() != "Checkout Seen" {
				t.Fatalf("route with deliver_as: %v %v", r, err)
			}
			list, err := f.ev.ListRoutes(ctx, &eventrelayv1.ListRoutesRequest{})
			if err != nil || len(list.GetRoutes()) != 2 || list.GetRoutes()[1].GetDeliverAs() != "Checkout Seen" {
				t.Fatalf("routes: %v %v", list, err)
			}
			f.track(t, ctx, []*eventrelayv1.Event{apiEvent("r-1", "u1", 0), {EventId: "r-2", Source: "api", UserId: "u1", Name: "Other"}})
			got := waitCount(t, "renamed at appcues", 1, f.appcuesEvents)
			if got[0]["name"] != "Checkout Seen" {
				t.Fatalf("appcues received %v; want the event named Checkout Seen", got[0])
			}
			an2 := waitCount(t, "both at analytics", 2, f.analyticsEvents)
			for _, e := range an2 {
				if e["event"] != "Seq" && e["event"] != "Other" {
					t.Fatalf("analytics received %v under a route's rename", e)
				}
			}
			time.Sleep(300 * time.Millisecond)
			if n := len(f.appcuesEvents()); n != 1 {
				t.Fatalf("appcues holds %d events; only Seq is routed there", n)
			}
		})
	}
}

// A source connection with send_events on reaches every analytics connection
// of its environment with no route; events without a source connection, or
// of one with send_events off, still need one.
func TestSourceEventsReachAnalyticsWithoutRoute(t *testing.T) {
	for _, pg := range []bool{false, true} {
		t.Run(map[bool]string{false: "sqlite", true: "postgres"}[pg], func(t *testing.T) {
			f := startRelay(t, relayOpts{postgres: pg})
			ctx := apptest.Context(t, 60*time.Second)
			f.connect(t, ctx, "analytics", false)
			on, off := f.connect(t, ctx, "appcues", true), f.connect(t, ctx, "appcues", false)
			ev := func(id, conn string) *eventrelayv1.Event {
				return &eventrelayv1.Event{EventId: id, Source: "appcues", ConnectionId: conn, UserId: "u1", Name: "appcues:flow_error"}
			}
			f.track(t, ctx, []*eventrelayv1.Event{ev("s-1", on), ev("off-1", off), apiEvent("api-1", "u1", 0)})
			waitCount(t, "the source's event at analytics", 1, f.analyticsEvents)
			time.Sleep(500 * time.Millisecond)
			if got := f.analyticsEvents(); len(got) != 1 || got[0]["idempotency_key"] != "s-1" || got[0]["event"] != "Flow Error" {
				t.Fatalf("analytics holds %v; want only s-1 as Flow Error", got)
			}
			if r, err := f.ev.ListRoutes(ctx, &eventrelayv1.ListRoutesRequest{}); err != nil || len(r.GetRoutes()) != 0 {
				t.Fatalf("routes: %v %v (none created)", r, err)
			}
			// An analytics connection added later takes the events from then on.
			if _, err := f.conn.CreateConnection(ctx, &connectorv1.CreateConnectionRequest{Type: "analytics", Name: "second analytics", Credentials: map[string]string{"app_id": "app-second"}}); err != nil {
				t.Fatal(err)
			}
			second := func() []map[string]any { return f.analytics.Snapshot().Analytics["app-second"] }
			f.track(t, ctx, []*eventrelayv1.Event{ev("s-2", on)})
			waitCount(t, "s-2 at the first analytics connection", 2, f.analyticsEvents)
			waitCount(t, "s-2 at the second analytics connection", 1, second)
			time.Sleep(500 * time.Millisecond)
			if got := second(); len(got) != 1 || got[0]["idempotency_key"] != "s-2" {
				t.Fatalf("the second connection holds %v; want only s-2 (s-1 came before it)", got)
			}
		})
	}
}

// gatherSinks reads the per-sink series of reg as "name sink" → value.
func gatherSinks(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() != "sink" {
					continue
				}
				v := m.GetGauge().GetValue() + m.GetCounter().GetValue()
				out[mf.GetName()+" "+l.GetValue()] += v
			}
		}
	}
	return out
}
