package destsim_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/seghub/seghub/pkg/destinations"
	"github.com/seghub/seghub/services/destsim"
)

// events returns n bulk-track events of app, spread over identities.
func events(prefix string, n, identities int) []map[string]any {
	out := make([]map[string]any, n)
	for i := range out {
		out[i] = map[string]any{"identity": fmt.Sprintf("u%d", i%identities), "event": "Flow Started", "timestamp": time.Now().UTC().Format(time.RFC3339), "idempotency_key": fmt.Sprintf("%s-%d", prefix, i)}
	}
	return out
}

// wantRateLimited checks a 429 with a usable Retry-After within period.
func wantRateLimited(t *testing.T, a answer, limit string, period time.Duration) {
	t.Helper()
	secs, err := strconv.Atoi(a.retryAfter)
	if a.status != 429 || err != nil || secs < 1 || time.Duration(secs)*time.Second > period {
		t.Fatalf("answer = %d, Retry-After %q; want 429 with Retry-After within %v", a.status, a.retryAfter, period)
	}
	if msg, _ := a.body["error"].(string); !strings.Contains(msg, limit) {
		t.Fatalf("error = %q, want it to name the limit %q", msg, limit)
	}
}

// The analytics track API's documented limits, with its own answers; a
// refused request stores nothing.
func TestAnalyticsLimits(t *testing.T) {
	t.Parallel()
	sim, srv := startSim(t, destsim.DemoCredentials())
	track := srv.URL + "/api/track"
	stored := func(app string) int { return len(sim.Snapshot().Analytics[app]) }

	t.Run("1000 events per request", func(t *testing.T) {
		a := postJSON(t, track, nil, map[string]any{"app_id": "app-big", "events": events("big", 1001, 100)})
		if msg, _ := a.body["error"].(string); a.status != 400 || !strings.Contains(msg, "at most 1000 events per request") {
			t.Fatalf("1001 events: %d %v, want 400 naming the limit", a.status, a.body)
		}
		if n := stored("app-big"); n != 0 {
			t.Fatalf("refused request stored %d events", n)
		}
		if a := postJSON(t, track, nil, map[string]any{"app_id": "app-big", "events": events("big", 1000, 100)}); a.status != 200 || stored("app-big") != 1000 {
			t.Fatalf("1000 events: %d, stored %d; want all accepted", a.status, stored("app-big"))
		}
	})

	t.Run("15000 events per minute per app", func(t *testing.T) {
		for i := 0; i < 15; i++ {
			if a := postJSON(t, track, nil, map[string]any{"app_id": "app-rate", "events": events(fmt.Sprint("r", i), 1000, 50)}); a.status != 200 {
				t.Fatalf("request %d within the limit: %d %v", i, a.status, a.body)
			}
		}
		wantRateLimited(t, postJSON(t, track, nil, map[string]any{"app_id": "app-rate", "events": events("over", 1, 1)}), "15000 events per minute per app", time.Minute)
		if n := stored("app-rate"); n != 15000 {
			t.Fatalf("stored %d, want the 15000 within the limit", n)
		}
		// Another app has its own budget.
		if a := postJSON(t, track, nil, map[string]any{"app_id": "app-other", "events": events("o", 10, 1)}); a.status != 200 {
			t.Fatalf("another app: %d %v", a.status, a.body)
		}
	})

	t.Run("1000 events per minute per identity", func(t *testing.T) {
		if a := postJSON(t, track, nil, map[string]any{"app_id": "app-hot", "events": events("hot", 1000, 1)}); a.status != 200 {
			t.Fatalf("1000 events of one identity: %d %v", a.status, a.body)
		}
		// One more event for u0 refuses the whole request, u1's event too.
		mixed := []map[string]any{{"identity": "u1", "event": "x", "idempotency_key": "hot-u1"}, {"identity": "u0", "event": "x", "idempotency_key": "hot-u0"}}
		wantRateLimited(t, postJSON(t, track, nil, map[string]any{"app_id": "app-hot", "events": mixed}), "1000 events per minute per identity", time.Minute)
		if a := postJSON(t, track, nil, map[string]any{"app_id": "app-hot", "events": mixed[:1]}); a.status != 200 || stored("app-hot") != 1001 {
			t.Fatalf("another identity: %d, stored %d; want accepted, 1001 stored", a.status, stored("app-hot"))
		}
	})

	t.Run("30 requests per 30 s per identity", func(t *testing.T) {
		single := func(identity string, i int) answer {
			return postJSON(t, track, nil, map[string]any{"app_id": "app-single", "identity": identity, "event": "Flow Started", "idempotency_key": fmt.Sprint(identity, i)})
		}
		for i := 0; i < 30; i++ {
			if a := single("u1", i); a.status != 200 {
				t.Fatalf("request %d within the limit: %d %v", i, a.status, a.body)
			}
		}
		wantRateLimited(t, single("u1", 30), "30 requests per 30s per identity", 30*time.Second)
		if a := single("u2", 0); a.status != 200 {
			t.Fatalf("another identity: %d %v", a.status, a.body)
		}
		got := sim.Snapshot().Analytics["app-single"]
		if len(got) != 31 || got[0]["identity"] != "u1" || got[0]["event"] != "Flow Started" || got[30]["identity"] != "u2" {
			t.Fatalf("stored %d single events (first %v), want 30 of u1 then u2's", len(got), got[0])
		}
	})
	if n := sim.Snapshot().Counters["rate_limited"]; !t.Failed() && n != 3 {
		t.Fatalf("rate_limited = %d, want 3 (one per limit)", n)
	}
}

func TestCommandBarIdentifyLimit(t *testing.T) {
	t.Parallel()
	sim, srv := startSim(t, destsim.DemoCredentials())
	auth := map[string]string{"Authorization": bearer(t, srv.URL)}
	rows := func(n int) []map[string]any {
		out := make([]map[string]any, n)
		for i := range out {
			out[i] = map[string]any{"id": fmt.Sprint("cb-", i), "properties": map[string]any{"Trial": true}}
		}
		return out
	}
	a := postJSON(t, srv.URL+"/api/org-1/bulk-identify/", auth, rows(501))
	if msg, _ := a.body["detail"].(string); a.status != 400 || !strings.Contains(msg, "at most 500 users per request") {
		t.Fatalf("501 users: %d %v, want 400 naming the limit", a.status, a.body)
	}
	if n := len(sim.Snapshot().CommandBar["org-1"]); n != 0 {
		t.Fatalf("refused request identified %d users", n)
	}
	if a := postJSON(t, srv.URL+"/api/org-1/bulk-identify/", auth, rows(500)); a.status != 200 || len(sim.Snapshot().CommandBar["org-1"]) != 500 {
		t.Fatalf("500 users: %d, stored %d", a.status, len(sim.Snapshot().CommandBar["org-1"]))
	}
}

// A receiver with a signing secret refuses what it cannot verify; the
// longest configured path prefix picks the secret.
func TestWebhookSignatureRefused(t *testing.T) {
	t.Parallel()
	creds := destsim.DemoCredentials()
	creds.WebhookSecrets = map[string]string{"/hooks/": "global", "/hooks/acme": "acme-secret"}
	sim, srv := startSim(t, creds)
	ctx := context.Background()
	batch := destinations.SegmentBatch{SegmentID: "seg_9", DisplayName: "Churn risk", Add: identities("w-", 0, 3), Page: 1, TotalPages: 1, TaskID: "run_9"}
	deliver := func(path, secret string) error {
		a, err := destinations.New("webhook", destinations.Config{Egress: loopback, Credentials: map[string]string{"url": srv.URL + path}, SigningSecret: secret, MaxAttempts: 3, MaxBackoff: time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		_, err = a.(destinations.Segments).DeliverSegment(ctx, batch)
		return err
	}
	members := func(path string) map[string]bool {
		if seg := sim.Snapshot().WebhookSegments[path]["seg_9"]; seg != nil {
			return seg.Members
		}
		return nil
	}

	for _, tc := range []struct{ path, secret string }{
		{"/hooks/acme", "s3cret"},
		{"/hooks/acme", "global"}, // the longer prefix's secret applies
		{"/hooks/other", "acme-secret"},
		{"/hooks/acme", ""},
	} {
		err := deliver(tc.path, tc.secret)
		var de *destinations.Error
		if !errors.As(err, &de) || de.Kind != destinations.AuthFailed || de.Status != 401 || !strings.Contains(de.Message, "signature does not match") {
			t.Fatalf("%s signed with %q: %v, want a 401 auth failure", tc.path, tc.secret, err)
		}
	}
	st := sim.Snapshot()
	if len(st.Webhooks) != 0 || len(st.WebhookSegments) != 0 || st.Counters["webhook_bad_signature"] != 4 {
		t.Fatalf("refused deliveries changed state: %d deliveries, segments %v, counters %v", len(st.Webhooks), st.WebhookSegments, st.Counters)
	}

	// Hand-made requests: tampered, stale, unsigned, malformed.
	body, _ := json.Marshal(map[string]any{"action_type": "segment.users.sync", "data": map[string]any{"segment": map[string]string{"id": "seg_9", "name": "x"}, "add": []map[string]string{{"id": "intruder"}}}})
	other := bytes.Replace(body, []byte("intruder"), []byte("intruder2"), 1)
	for name, tc := range map[string]struct {
		sig  string
		body []byte
		why  string
	}{
		"tampered":  {destinations.Sign("acme-secret", time.Now(), body), other, "does not match"},
		"stale":     {destinations.Sign("acme-secret", time.Now().Add(-10*time.Minute), body), body, "tolerance"},
		"unsigned":  {"", body, "missing"},
		"malformed": {"sha256=abc", body, "malformed"},
	} {
		h := map[string]string{}
		if tc.sig != "" {
			h["X-Seghub-Signature"] = tc.sig
		}
		a := post(t, srv.URL+"/hooks/acme", h, tc.body)
		if msg, _ := a.body["message"].(string); a.status != 401 || !strings.Contains(msg, tc.why) {
			t.Fatalf("%s: %d %v, want 401 saying %q", name, a.status, a.body, tc.why)
		}
	}
	if m := members("/hooks/acme"); m != nil {
		t.Fatalf("refused requests changed membership: %v", m)
	}

	// Correctly signed deliveries, per path and through the global prefix.
	for path, secret := range map[string]string{"/hooks/acme": "acme-secret", "/hooks/acme/eu": "acme-secret", "/hooks/other": "global"} {
		if err := deliver(path, secret); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if want := map[string]bool{"w-0": true, "w-1": true, "w-2": true}; !reflect.DeepEqual(members(path), want) {
			t.Fatalf("%s members = %v, want %v", path, members(path), want)
		}
	}
	if st := sim.Snapshot(); len(st.Webhooks) != 3 || st.Counters["webhook_verified"] != 3 {
		t.Fatalf("deliveries %d, counters %v; want 3 verified", len(st.Webhooks), st.Counters)
	}
}

// A receiver without a configured secret accepts unsigned deliveries (as
// the demo's does) and still keeps the membership they describe.
func TestWebhookWithoutSecretAccepts(t *testing.T) {
	t.Parallel()
	sim, srv := startSim(t, destsim.DemoCredentials())
	a, err := destinations.New("webhook", destinations.Config{Egress: loopback, Credentials: map[string]string{"url": srv.URL + "/hooks/demo"}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, b := range []destinations.SegmentBatch{
		{SegmentID: "seg_1", DisplayName: "Trial", Add: identities("d-", 0, 5)},
		{SegmentID: "seg_1", DisplayName: "Trial", Remove: identities("d-", 0, 2)},
	} {
		if _, err := a.(destinations.Segments).DeliverSegment(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	st := sim.Snapshot()
	if want := map[string]bool{"d-2": true, "d-3": true, "d-4": true}; !reflect.DeepEqual(st.WebhookSegments["/hooks/demo"]["seg_1"].Members, want) {
		t.Fatalf("members = %v, want %v", st.WebhookSegments["/hooks/demo"]["seg_1"].Members, want)
	}
	if len(st.Webhooks) != 2 || st.Webhooks[0].Verified {
		t.Fatalf("deliveries = %+v, want 2 accepted unverified", st.Webhooks)
	}
}

// AddUserProperties lands (and merges) user properties in analytics,
// through injected faults.
func TestAnalyticsAddUserProperties(t *testing.T) {
	t.Parallel()
	sim, srv := startSim(t, destsim.DemoCredentials())
	sim.SetFaults(destsim.Faults{Rate429: 0.15, Rate5xx: 0.15, RetryAfter: 0})
	a, err := destinations.New("analytics", fastRetries(destinations.Config{Egress: loopback, BaseURL: srv.URL, Credentials: map[string]string{"app_id": "app-1"}}))
	if err != nil {
		t.Fatal(err)
	}
	props, ok := a.(interface {
		AddUserProperties(context.Context, map[string]map[string]any) error
	})
	if !ok {
		t.Fatal("the analytics adapter has no AddUserProperties")
	}
	ctx := context.Background()
	if err := props.AddUserProperties(ctx, map[string]map[string]any{
		"u1": {"appcuesUserID": "ac-1", "plan": "pro"},
		"u2": {"appcuesUserID": "ac-2"},
	}); err != nil {
		t.Fatal(err)
	}
	if err := props.AddUserProperties(ctx, map[string]map[string]any{"u1": {"plan": "enterprise"}}); err != nil {
		t.Fatal(err)
	}
	want := map[string]map[string]any{
		"u1": {"appcuesUserID": "ac-1", "plan": "enterprise"},
		"u2": {"appcuesUserID": "ac-2"},
	}
	if got := sim.Snapshot().AnalyticsUsers["app-1"]; !reflect.DeepEqual(got, want) {
		t.Fatalf("analytics users = %v, want %v", got, want)
	}
}

// The AB Tasty adapter reuses its client-credentials token while it lives,
// replaces it before the expires_in the server gave, and recovers from a
// token revoked early without calling the credentials refused.
func TestABTastyTokenExpiry(t *testing.T) {
	t.Parallel()
	sim, srv := startSim(t, destsim.DemoCredentials())
	sim.SetFaults(destsim.Faults{TokenTTL: 2})
	a, err := destinations.New("abtasty", destinations.Config{Egress: loopback, BaseURL: srv.URL, Credentials: map[string]string{"account_identifier": "acc-t", "client_id": "seghub", "client_secret": "seghub-secret"}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	deliver := func(b destinations.SegmentBatch) error {
		b.DisplayName = "Trial"
		_, err := a.(destinations.Segments).DeliverSegment(ctx, b)
		return err
	}
	counters := func() (issued, rejected int) {
		c := sim.Snapshot().Counters
		return c["tokens_issued"], c["rejected"]
	}
	must := func(step string, err error, wantIssued, wantRejected int) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", step, err)
		}
		if issued, rejected := counters(); issued != wantIssued || rejected != wantRejected {
			t.Fatalf("%s: tokens issued %d, requests refused %d; want %d and %d", step, issued, rejected, wantIssued, wantRejected)
		}
	}

	must("first batch", deliver(destinations.SegmentBatch{Add: identities("v-", 0, 10)}), 1, 0)
	must("second batch, token still valid", deliver(destinations.SegmentBatch{Add: identities("v-", 10, 20)}), 1, 0)
	time.Sleep(2100 * time.Millisecond) // past expires_in: the first token is dead at the server
	must("after expiry", deliver(destinations.SegmentBatch{Remove: identities("v-", 0, 5)}), 2, 0)

	sim.ExpireTokens()
	must("after an early revocation", deliver(destinations.SegmentBatch{Add: identities("v-", 20, 21)}), 3, 1)

	want := map[string]bool{}
	for _, id := range identities("v-", 5, 21) {
		want[id.ID] = true
	}
	if got := sim.Snapshot().ABTasty["acc-t"]["Trial"]; !reflect.DeepEqual(got, want) {
		t.Fatalf("segment = %v, want v-5..v-20", got)
	}

	// Client credentials revoked too: now it is an auth failure.
	revoked := destsim.DemoCredentials()
	revoked.OAuthClients = map[string]string{"seghub": "rotated"}
	sim.SetCredentials(revoked)
	sim.ExpireTokens()
	if err := deliver(destinations.SegmentBatch{Add: identities("v-", 30, 31)}); destinations.KindOf(err) != destinations.AuthFailed {
		t.Fatalf("revoked client: %v, want an auth failure", err)
	}
}

// Limits can be lowered or lifted (benchmarks lift quotas), in code or at
// /_sim/limits, and a zero Limits restores the documented ones.
func TestSetLimits(t *testing.T) {
	t.Parallel()
	sim, srv := startSim(t, destsim.DemoCredentials())
	track := srv.URL + "/api/track"

	sim.SetLimits(destsim.Limits{AnalyticsMaxEvents: -1, AnalyticsPerMinute: 1500})
	if a := postJSON(t, track, nil, map[string]any{"app_id": "app-l", "events": events("l", 1200, 10)}); a.status != 200 {
		t.Fatalf("1200 events with the per-request limit lifted: %d %v", a.status, a.body)
	}
	wantRateLimited(t, postJSON(t, track, nil, map[string]any{"app_id": "app-l", "events": events("m", 301, 301)}), "1500 events per minute per app", time.Minute)

	if a := postJSON(t, srv.URL+"/_sim/limits", nil, map[string]any{"commandbar_max_identify": 2}); a.status != 204 {
		t.Fatalf("POST /_sim/limits: %d", a.status)
	}
	auth := map[string]string{"Authorization": bearer(t, srv.URL)}
	three := []map[string]any{{"id": "a"}, {"id": "b"}, {"id": "c"}}
	if a := postJSON(t, srv.URL+"/api/org-1/bulk-identify/", auth, three); a.status != 400 || !strings.Contains(fmt.Sprint(a.body["detail"]), "at most 2 users") {
		t.Fatalf("3 users over a limit of 2: %d %v", a.status, a.body)
	}

	sim.SetLimits(destsim.Limits{})
	if a := postJSON(t, srv.URL+"/api/org-1/bulk-identify/", auth, three); a.status != 200 {
		t.Fatalf("3 users with the default limit: %d %v", a.status, a.body)
	}
	if a := postJSON(t, track, nil, map[string]any{"app_id": "app-d", "events": events("d", 1001, 10)}); a.status != 400 {
		t.Fatalf("1001 events with the default limit: %d", a.status)
	}
}
