package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	targetingv1 "github.com/seghub/seghub/gen/seghub/targeting/v1"
	"github.com/seghub/seghub/pkg/app/apptest"
	"github.com/seghub/seghub/pkg/apperr"
	"github.com/seghub/seghub/pkg/config"
	"github.com/seghub/seghub/pkg/openapiroutes"
)

const (
	testRESTLimit  = 256 << 10
	testGRPCLimit  = 128 << 10
	testHeapLimit  = 96 << 10
	testEventLimit = 24 << 10
)

// fakeTargeting answers a few targeting RPCs with the errors and zero values
// the REST mapping must render; batchChecks counts calls that got through.
type fakeTargeting struct {
	targetingv1.UnimplementedTargetingServiceServer
	batchChecks atomic.Int32
}

func (f *fakeTargeting) CheckMembership(context.Context, *targetingv1.CheckMembershipRequest) (*targetingv1.CheckMembershipResponse, error) {
	return &targetingv1.CheckMembershipResponse{IsMember: false, IndexVersion: 0}, nil
}

func (f *fakeTargeting) BatchCheck(_ context.Context, req *targetingv1.BatchCheckRequest) (*targetingv1.BatchCheckResponse, error) {
	f.batchChecks.Add(1)
	return &targetingv1.BatchCheckResponse{}, nil
}

// ListUserSegments is rate limited: ResourceExhausted with a retry delay.
func (f *fakeTargeting) ListUserSegments(context.Context, *targetingv1.ListUserSegmentsRequest) (*targetingv1.ListUserSegmentsResponse, error) {
	st, _ := status.New(codes.ResourceExhausted, "rate limited: 100 lookups a second").
		WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(2500 * time.Millisecond)})
	return nil, st.Err()
}

// ListTargetableSegments hits a quota: ResourceExhausted without a delay.
func (f *fakeTargeting) ListTargetableSegments(context.Context, *targetingv1.ListTargetableSegmentsRequest) (*targetingv1.ListTargetableSegmentsResponse, error) {
	return nil, apperr.ResourceExhausted("at most 10 recurring syncs")
}

type testGateway struct {
	env     *apptest.Env
	handler http.Handler
	fake    *fakeTargeting
}

// newTestGateway serves the gateway over a process with only admin and a fake
// targeting behind it, with small limits so that tests move little data.
func newTestGateway(t *testing.T) *testGateway {
	t.Helper()
	e := apptest.New(t, apptest.Options{TraceRequests: true, Configure: func(c *config.Config) {
		c.RESTMaxBody = testRESTLimit
		c.GRPCMaxMessage = testGRPCLimit
		c.WebhookMaxBody = map[string]int64{"heap": testHeapLimit, "segment_webhook": testHeapLimit, "appcues": testEventLimit, "commandbar": testEventLimit}
	}})
	fake := &fakeTargeting{}
	targetingv1.RegisterTargetingServiceServer(e.Server.Server, fake)
	e.Start()
	g, err := New(context.Background(), e.P)
	if err != nil {
		t.Fatal(err)
	}
	return &testGateway{env: e, handler: g.Handler(), fake: fake}
}

// countingBody is a request body of n bytes that records how much was read;
// it starts like JSON so that a decoder keeps reading.
type countingBody struct {
	n, read int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	if b.read >= b.n {
		return 0, io.EOF
	}
	k := min(int64(len(p)), b.n-b.read)
	for i := range p[:k] {
		p[i] = 'x'
		if b.read+int64(i) < 6 {
			p[i] = `{"a":"`[b.read+int64(i)]
		}
	}
	b.read += k
	return int(k), nil
}

func (g *testGateway) serve(method, path, key string, body io.Reader, length int64) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, path, body)
	req.ContentLength = length
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	rec := httptest.NewRecorder()
	g.handler.ServeHTTP(rec, req)
	return rec
}

func wantTooLarge(t *testing.T, what string, rec *httptest.ResponseRecorder, limit int64) {
	t.Helper()
	if rec.Code != http.StatusRequestEntityTooLarge {
		t.Errorf("%s: %d %s, want 413", what, rec.Code, rec.Body)
		return
	}
	if msg := rec.Body.String(); !strings.Contains(msg, config.FormatSize(limit)) || !strings.Contains(msg, fmt.Sprint(limit)) {
		t.Errorf("%s: 413 without the limit (%d) in %s", what, limit, msg)
	}
}

// TestRESTBodyLimitEveryRoute: on every REST route an oversized body is
// refused 413 naming the limit, reading no more than the limit; a request
// without a valid key is refused 401 before its body is read.
func TestRESTBodyLimitEveryRoute(t *testing.T) {
	g := newTestGateway(t)
	key := g.env.A.Admin
	for _, r := range openapiroutes.Every(t) {
		path := r.Fill("x1")
		what := r.Method + " " + path
		// Declared too large: refused before reading.
		body := &countingBody{n: testRESTLimit + 1}
		wantTooLarge(t, what+" (Content-Length)", g.serve(r.Method, path, key, body, body.n), testRESTLimit)
		if body.read != 0 {
			t.Errorf("%s: read %d bytes of a body declared too large", what, body.read)
		}
		// Without a key, or with an unknown one: 401, body unread.
		for _, k := range []string{"", "sghk_00000000000000000000000000000000"} {
			body = &countingBody{n: 8 * testRESTLimit}
			rec := g.serve(r.Method, path, k, body, -1)
			if rec.Code != http.StatusUnauthorized || body.read != 0 {
				t.Errorf("%s with key %q: %d after reading %d bytes, want 401 with nothing read", what, k, rec.Code, body.read)
			}
		}
		if !r.HasBody() {
			continue
		}
		// Streamed without a length: refused once the limit is crossed.
		body = &countingBody{n: 8 * testRESTLimit}
		wantTooLarge(t, what+" (streamed)", g.serve(r.Method, path, key, body, -1), testRESTLimit)
		if body.read > testRESTLimit+64<<10 {
			t.Errorf("%s: read %d bytes of a streamed body over the %d limit", what, body.read, testRESTLimit)
		}
	}
}

// A well-formed request followed by padding past the limit is refused and
// never reaches the service (grpc-gateway drains the body after decoding).
func TestRESTBodyOverLimitAfterValidJSON(t *testing.T) {
	g := newTestGateway(t)
	body := `{"checks":[{"user_id":"u","segment_id":"s"}]}` + strings.Repeat(" ", testRESTLimit)
	rec := g.serve("POST", "/v1/targeting:batchCheck", g.env.A.Member, strings.NewReader(body), -1)
	wantTooLarge(t, "valid JSON then padding", rec, testRESTLimit)
	if n := g.fake.batchChecks.Load(); n != 0 {
		t.Fatalf("BatchCheck was called %d times for a refused body", n)
	}
	rec = g.serve("POST", "/v1/targeting:batchCheck", g.env.A.Member, strings.NewReader(`{"checks":[{"user_id":"u","segment_id":"s"}]}`), -1)
	if rec.Code != http.StatusOK || g.fake.batchChecks.Load() != 1 {
		t.Fatalf("a small body: %d %s, calls %d", rec.Code, rec.Body, g.fake.batchChecks.Load())
	}
}

// TestRESTErrorStatuses: size refusals are 413 (gRPC's own message limit
// too), rate limits stay 429 with Retry-After, quotas 429 without one.
func TestRESTErrorStatuses(t *testing.T) {
	g := newTestGateway(t)
	key := g.env.A.Member

	// Under the REST limit but over the gRPC message limit.
	big := &targetingv1.BatchCheckRequest{}
	var checks []string
	for i := 0; i < 1500; i++ {
		user := fmt.Sprintf("user-%095d", i)
		big.Checks = append(big.Checks, &targetingv1.MembershipCheck{UserId: user, SegmentId: "seg_0001"})
		checks = append(checks, `{"user_id":"`+user+`","segment_id":"seg_0001"}`)
	}
	body := `{"checks":[` + strings.Join(checks, ",") + `]}`
	if len(body) >= testRESTLimit || proto.Size(big) <= testGRPCLimit {
		t.Fatalf("body of %d bytes (%d in protobuf) does not fall between the limits", len(body), proto.Size(big))
	}
	rec := g.serve("POST", "/v1/targeting:batchCheck", key, strings.NewReader(body), int64(len(body)))
	if rec.Code != http.StatusRequestEntityTooLarge || !strings.Contains(rec.Body.String(), "larger than max") {
		t.Errorf("over the gRPC message limit: %d %s, want 413", rec.Code, rec.Body)
	}

	// gRPC callers that send more than the server takes get the same kind.
	conn, err := grpc.NewClient(g.env.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, err = targetingv1.NewTargetingServiceClient(conn).BatchCheck(context.Background(), big)
	if st := status.Convert(err); st.Code() != codes.ResourceExhausted || !apperr.IsTooLarge(st) {
		t.Errorf("gRPC over the message limit: %v, want a size refusal", err)
	}

	rec = g.serve("GET", "/v1/targeting/users/u1/segments", key, http.NoBody, 0)
	if rec.Code != http.StatusTooManyRequests || rec.Header().Get("Retry-After") != "3" {
		t.Errorf("rate limited: %d, Retry-After %q; want 429 with Retry-After 3 (2.5 s rounded up)", rec.Code, rec.Header().Get("Retry-After"))
	}
	rec = g.serve("GET", "/v1/targeting/segments", key, http.NoBody, 0)
	if rec.Code != http.StatusTooManyRequests || rec.Header().Get("Retry-After") != "" {
		t.Errorf("quota: %d, Retry-After %q; want 429 without Retry-After", rec.Code, rec.Header().Get("Retry-After"))
	}
}

// TestRESTSendsZeroValues: false and zero fields are present in REST JSON.
func TestRESTSendsZeroValues(t *testing.T) {
	g := newTestGateway(t)
	rec := g.serve("GET", "/v1/targeting/segments/seg_1/members/u1", g.env.A.Member, http.NoBody, 0)
	var out map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil || rec.Code != http.StatusOK {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
	if v, ok := out["is_member"]; !ok || v != false {
		t.Errorf("is_member missing or not false: %s", rec.Body)
	}
	if _, ok := out["index_version"]; !ok {
		t.Errorf("index_version 0 missing: %s", rec.Body)
	}
}

// TestWebhookBodyLimits: each webhook route has its own limit, refused 413
// naming it, whether declared or streamed; a body under it goes on.
func TestWebhookBodyLimits(t *testing.T) {
	g := newTestGateway(t)
	limits := map[string]int64{"heap": testHeapLimit, "segment_webhook": testHeapLimit, "appcues": testEventLimit, "commandbar": testEventLimit}
	for _, src := range config.WebhookSources {
		path := "/webhooks/" + src + "/conn_x1"
		limit := limits[src]
		body := &countingBody{n: limit + 1}
		wantTooLarge(t, src+" (Content-Length)", g.serve("POST", path, "", body, body.n), limit)
		if body.read != 0 {
			t.Errorf("%s: read %d bytes of a body declared too large", src, body.read)
		}
		body = &countingBody{n: 4 * limit}
		wantTooLarge(t, src+" (streamed)", g.serve("POST", path, "", body, -1), limit)
		if body.read > limit+64<<10 {
			t.Errorf("%s: read %d bytes over the %d limit", src, body.read, limit)
		}
		// Between the two limits: only the event routes refuse it.
		mid := bytes.Repeat([]byte("x"), (testEventLimit+testHeapLimit)/2)
		rec := g.serve("POST", path, "", bytes.NewReader(mid), int64(len(mid)))
		if tooLarge := rec.Code == http.StatusRequestEntityTooLarge; tooLarge != (limit == testEventLimit) {
			t.Errorf("%s: %d bytes answered %d (limit %d)", src, len(mid), rec.Code, limit)
		}
	}
}

// The x-api-key header, which the auth error message offers, works over REST
// too: the gateway checks it and forwards it.
func TestRESTAcceptsXAPIKey(t *testing.T) {
	g := newTestGateway(t)
	req := httptest.NewRequest("GET", "/v1/targeting/segments/seg_1/members/u1", nil)
	req.Header.Set("X-Api-Key", g.env.A.Member)
	rec := httptest.NewRecorder()
	g.handler.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		t.Fatalf("x-api-key: %d %s", rec.Code, rec.Body)
	}
}
