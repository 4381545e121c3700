package destsim_test

import (
	"context"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/seghub/seghub/pkg/destinations"
	"github.com/seghub/seghub/services/destsim"
)

func identities(prefix string, from, to int) []destinations.Identity {
	var out []destinations.Identity
	for i := from; i < to; i++ {
		id := fmt.Sprintf("%s%d", prefix, i)
		out = append(out, destinations.Identity{UserID: "u" + id, ID: id})
	}
	return out
}

// loopback is the egress policy these tests need: the simulator listens on
// loopback, which destinations may not reach by default.
var loopback = func() *destinations.Egress {
	e, err := destinations.NewEgress("127.0.0.0/8,::1")
	if err != nil {
		panic(err)
	}
	return e
}()

func fastRetries(c destinations.Config) destinations.Config {
	c.MaxAttempts = 30
	c.MaxBackoff = 20 * time.Millisecond
	return c
}

// Each adapter, against the simulator answering 30 % of calls with 429 or
// 5xx, ends in exactly the intended state.
func TestAdaptersUnderFaults(t *testing.T) {
	creds := destsim.DemoCredentials()
	creds.WebhookSecrets = map[string]string{"/hooks/segments": "s3cret"}
	sim, srv := startSim(t, creds)
	sim.SetFaults(destsim.Faults{Rate429: 0.15, Rate5xx: 0.15, RetryAfter: 0})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	deliver := func(t *testing.T, a destinations.Adapter, b destinations.SegmentBatch) destinations.BatchResult {
		t.Helper()
		res, err := a.(destinations.Segments).DeliverSegment(ctx, b)
		if err != nil {
			t.Fatalf("%s: %v", a.Type().Name, err)
		}
		return res
	}

	t.Run("appcues", func(t *testing.T) {
		a, err := destinations.New("appcues", fastRetries(destinations.Config{Egress: loopback, BaseURL: srv.URL, Credentials: map[string]string{"account_id": "demo", "api_key": "demo-key", "api_secret": "demo-secret"}}))
		if err != nil {
			t.Fatal(err)
		}
		if err := a.Check(ctx); err != nil {
			t.Fatal(err)
		}
		// Bulk import for a large batch, PATCH for a small one.
		deliver(t, a, destinations.SegmentBatch{SegmentID: "seg_1", DisplayName: "Trial", Add: identities("ac-", 0, 300), IdempotencyKey: "b1"})
		for i := 0; i < 10; i++ {
			deliver(t, a, destinations.SegmentBatch{SegmentID: "seg_1", DisplayName: "Trial", Add: identities("ac-", 300+i*5, 305+i*5), Remove: identities("ac-", i*5, i*5+5), IdempotencyKey: fmt.Sprint("b2-", i)})
		}
		st := sim.Snapshot().Appcues["demo"]
		in := 0
		for _, p := range st {
			if p["[seghub] Trial"] == true {
				in++
			}
		}
		if in != 300 || st["ac-0"]["[seghub] Trial"] != false || st["ac-349"]["[seghub] Trial"] != true {
			t.Fatalf("appcues holds %d members (ac-0 %v, ac-304 %v)", in, st["ac-0"], st["ac-304"])
		}
		ev := []destinations.Event{{ID: "e1", Identity: "ac-1", Name: "Flow Started", Timestamp: time.Now(), Properties: map[string]any{"flowId": "f1"}}}
		if err := a.(destinations.Events).Track(ctx, ev); err != nil {
			t.Fatal(err)
		}
		if err := a.(destinations.Events).Track(ctx, ev); err != nil { // a retry after an ack
			t.Fatal(err)
		}
		if n := len(sim.Snapshot().AppcuesEvents["demo"]); n != 1 {
			t.Fatalf("appcues events = %d, want 1 (idempotency key)", n)
		}
	})

	t.Run("commandbar", func(t *testing.T) {
		// A token as the OAuth flow would have obtained it.
		tok := tokenFor(t, srv.URL)
		a, err := destinations.New("commandbar", fastRetries(destinations.Config{Egress: loopback, BaseURL: srv.URL, Credentials: map[string]string{"org_id": "org-1", "access_token": tok}}))
		if err != nil {
			t.Fatal(err)
		}
		deliver(t, a, destinations.SegmentBatch{DisplayName: "Power users", Add: identities("cb-", 0, 400), IdempotencyKey: "c1"})
		deliver(t, a, destinations.SegmentBatch{DisplayName: "Power users", Remove: identities("cb-", 0, 100), IdempotencyKey: "c2"})
		in := 0
		for _, u := range sim.Snapshot().CommandBar["org-1"] {
			if u["Power users"] == true {
				in++
			}
		}
		if in != 300 {
			t.Fatalf("commandbar members = %d, want 300", in)
		}
	})

	t.Run("abtasty", func(t *testing.T) {
		a, err := destinations.New("abtasty", fastRetries(destinations.Config{Egress: loopback, BaseURL: srv.URL, Credentials: map[string]string{"account_identifier": "acc-9", "client_id": "seghub", "client_secret": "seghub-secret"}}))
		if err != nil {
			t.Fatal(err)
		}
		batch := destinations.SegmentBatch{DisplayName: "Trial", Add: append(identities("v-", 0, 50), destinations.Identity{UserID: "bad", ID: "Not A Visitor!"}), IdempotencyKey: "a1"}
		res := deliver(t, a, batch)
		if len(res.Failed) != 1 || res.Failed[0].ID != "Not A Visitor!" {
			t.Fatalf("failed = %+v, want the invalid visitor id reported", res.Failed)
		}
		deliver(t, a, destinations.SegmentBatch{DisplayName: "Trial", Remove: identities("v-", 0, 10), IdempotencyKey: "a2"})
		if n := len(sim.Snapshot().ABTasty["acc-9"]["Trial"]); n != 40 {
			t.Fatalf("abtasty segment holds %d, want 40", n)
		}
	})

	t.Run("analytics", func(t *testing.T) {
		a, err := destinations.New("analytics", fastRetries(destinations.Config{Egress: loopback, BaseURL: srv.URL, Credentials: map[string]string{"app_id": "app-1"}}))
		if err != nil {
			t.Fatal(err)
		}
		var evs []destinations.Event
		for i := 0; i < 2500; i++ {
			evs = append(evs, destinations.Event{ID: fmt.Sprint("ev-", i), Identity: fmt.Sprint("u", i%7), Name: "Flow Started", Timestamp: time.Now()})
		}
		if err := a.(destinations.Events).Track(ctx, evs); err != nil {
			t.Fatal(err)
		}
		if err := a.(destinations.Events).Track(ctx, evs[:1000]); err != nil { // redelivery
			t.Fatal(err)
		}
		if n := len(sim.Snapshot().Analytics["app-1"]); n != 2500 {
			t.Fatalf("analytics events = %d, want 2500 exactly once", n)
		}
	})

	t.Run("webhook", func(t *testing.T) {
		a, err := destinations.New("webhook", fastRetries(destinations.Config{Egress: loopback, Credentials: map[string]string{"url": srv.URL + "/hooks/segments"}, SigningSecret: "s3cret"}))
		if err != nil {
			t.Fatal(err)
		}
		// One run of three pages, then a run that adds some and removes some.
		for page, ids := range [][]destinations.Identity{identities("w-", 0, 100), identities("w-", 100, 200), identities("w-", 200, 250)} {
			deliver(t, a, destinations.SegmentBatch{SegmentID: "seg_1", DisplayName: "Trial", Add: ids, Page: page + 1, TotalPages: 3, TaskID: "run_1"})
		}
		deliver(t, a, destinations.SegmentBatch{SegmentID: "seg_1", DisplayName: "Trial", Add: identities("w-", 250, 260), Remove: identities("w-", 0, 50), Page: 1, TotalPages: 1, TaskID: "run_2"})

		st := sim.Snapshot()
		seg := st.WebhookSegments["/hooks/segments"]["seg_1"]
		want := map[string]bool{}
		for _, id := range identities("w-", 50, 260) {
			want[id.ID] = true
		}
		if seg == nil || seg.Name != "Trial" || !reflect.DeepEqual(seg.Members, want) {
			t.Fatalf("webhook segment = %+v, want Trial with w-50..w-259 (%d members)", seg, len(want))
		}
		// Faulted requests never reach the receiver: exactly the four
		// deliveries were accepted, each with its signature checked.
		if len(st.Webhooks) != 4 || st.Counters["webhook_verified"] != 4 || st.Counters["webhook_bad_signature"] != 0 {
			t.Fatalf("deliveries = %d, counters = %v; want 4 verified, none refused", len(st.Webhooks), st.Counters)
		}
		for _, d := range st.Webhooks {
			if !d.Verified || !strings.HasPrefix(d.Signature, "ts:") {
				t.Fatalf("delivery %+v not verified", d)
			}
		}
	})
	c := sim.Snapshot().Counters
	if c["injected_429"] == 0 || c["injected_5xx"] == 0 {
		t.Fatalf("no faults were injected: %v", c)
	}
	t.Logf("simulator counters: %v", c)
}

func TestAdapterErrorsClassified(t *testing.T) {
	sim, srv := startSim(t, destsim.DemoCredentials())
	ctx := context.Background()
	bad, _ := destinations.New("appcues", destinations.Config{Egress: loopback, BaseURL: srv.URL, Credentials: map[string]string{"account_id": "demo", "api_key": "demo-key", "api_secret": "wrong"}})
	if err := bad.Check(ctx); destinations.KindOf(err) != destinations.AuthFailed {
		t.Fatalf("wrong secret: %v, want an auth failure", err)
	}
	expired, _ := destinations.New("commandbar", destinations.Config{Egress: loopback, BaseURL: srv.URL, Credentials: map[string]string{"org_id": "o", "access_token": "at_expired"}})
	if _, err := expired.(destinations.Segments).DeliverSegment(ctx, destinations.SegmentBatch{DisplayName: "x", Add: identities("a", 0, 1)}); destinations.KindOf(err) != destinations.AuthFailed {
		t.Fatalf("expired token: %v", err)
	}
	an, _ := destinations.New("analytics", destinations.Config{Egress: loopback, BaseURL: srv.URL, Credentials: map[string]string{"app_id": "a"}, MaxAttempts: 2, MaxBackoff: time.Millisecond})
	sim.SetFaults(destsim.Faults{Rate5xx: 1})
	err := an.(destinations.Events).Track(ctx, []destinations.Event{{ID: "1", Identity: "u", Name: "x", Timestamp: time.Now()}})
	if destinations.KindOf(err) != destinations.Retryable {
		t.Fatalf("persistent 5xx: %v, want retryable after attempts", err)
	}
	if _, err := destinations.New("appcues", destinations.Config{Egress: loopback, Credentials: map[string]string{"account_id": "demo"}}); err == nil {
		t.Fatal("missing credentials accepted")
	}
}
