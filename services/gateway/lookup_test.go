package gateway

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	targetingv1 "github.com/seghub/seghub/gen/seghub/targeting/v1"
	"github.com/seghub/seghub/pkg/app"
	"github.com/seghub/seghub/pkg/app/apptest"
	"github.com/seghub/seghub/pkg/apperr"
	"github.com/seghub/seghub/pkg/auth"
)

// lookupFake answers CheckMembership by the user id, so that every answer
// shape (member or not, versions, each error, headers) can be asked for.
type lookupFake struct {
	targetingv1.UnimplementedTargetingServiceServer
}

func (lookupFake) CheckMembership(ctx context.Context, req *targetingv1.CheckMembershipRequest) (*targetingv1.CheckMembershipResponse, error) {
	switch req.GetUserId() {
	case "member":
		return &targetingv1.CheckMembershipResponse{IsMember: true, IndexVersion: 9007199254740993}, nil
	case "missing":
		return nil, apperr.NotFound("segment %q not found", req.GetSegmentId())
	case "invalid":
		return nil, apperr.Invalid("user_id", "is not an id")
	case "limited":
		st, _ := status.New(codes.ResourceExhausted, "rate limited").WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(1500 * time.Millisecond)})
		return nil, st.Err()
	case "unavailable":
		return nil, apperr.Unavailable("this targeting replica is still loading its index; retry shortly")
	case "headers":
		_ = grpc.SetHeader(ctx, metadata.Pairs("x-extra", "one", "x-extra", "two"))
		return &targetingv1.CheckMembershipResponse{IndexVersion: 3}, nil
	case "env":
		// The environment the server's chain resolved from the key.
		return &targetingv1.CheckMembershipResponse{IsMember: auth.MustEnvironment(ctx) == req.GetSegmentId(), IndexVersion: 1}, nil
	}
	return &targetingv1.CheckMembershipResponse{}, nil
}

// The lookup route's own handler answers every request as grpc-gateway's
// generic route does (status, JSON, content type, Retry-After, forwarded
// metadata headers), over the network and in-process; requests it does not
// take (escapes, bodies, HEAD, gRPC headers) go the generic way.
func TestLookupRouteAnswersAsGRPCGateway(t *testing.T) {
	for _, local := range []bool{false, true} {
		t.Run(map[bool]string{false: "network", true: "in-process"}[local], func(t *testing.T) {
			e := apptest.New(t, apptest.Options{})
			if local {
				targetingv1.RegisterTargetingServiceServer(e.Server, lookupFake{})
				e.P.SetLocal(app.Targeting, e.Server.InProcess())
			} else {
				targetingv1.RegisterTargetingServiceServer(e.Server.Server, lookupFake{})
			}
			e.Start()
			g, err := New(context.Background(), e.P)
			if err != nil {
				t.Fatal(err)
			}
			// The reference is the gateway's REST routing as it was: ServeMux
			// (which redirects unclean paths) in front of grpc-gateway.
			generic := http.NewServeMux()
			generic.Handle(restPrefix, g.guardREST(g.gw))
			fast := g.Handler()
			// A plain lookup does reach the route's own handler.
			plainReq := httptest.NewRequest("GET", "/v1/targeting/segments/seg_1/members/member", nil)
			if h, _ := g.mux.Handler(plainReq); !plain(plainReq) || reflect.TypeOf(h) != reflect.TypeOf(&lookupHandler{}) {
				t.Fatalf("a plain lookup is served by %T (plain: %v)", h, plain(plainReq))
			}
			type req struct {
				method, path, key string
				header            map[string]string
				body              string
			}
			var reqs []req
			for _, key := range []string{e.A.Member, e.A.Admin, e.A.Service, "", "sghk_0123456789abcdefghijklmnopqrstuv", "Basic abc"} {
				for _, user := range []string{"member", "nobody", "missing", "invalid", "limited", "unavailable", "headers"} {
					reqs = append(reqs, req{method: "GET", path: "/v1/targeting/segments/seg_1/members/" + user, key: key})
				}
			}
			reqs = append(reqs,
				req{method: "GET", path: "/v1/targeting/segments/" + e.A.EnvironmentID + "/members/env", key: e.A.Member},
				req{method: "GET", path: "/v1/targeting/segments/" + e.A.EnvironmentID + "/members/env", key: e.B.Member},
				req{method: "GET", path: "/v1/targeting/segments/seg_1/members/member?x=1&user_id=nobody", key: e.A.Member},
				req{method: "GET", path: "/v1/targeting/segments/seg_1/members/mem%62er", key: e.A.Member},
				req{method: "GET", path: "/v1/targeting/segments/seg_1/members/a%2Fb", key: e.A.Member},
				req{method: "GET", path: "/v1/targeting/segments/seg_1/members/" + strings.Repeat("u", 300), key: e.A.Member},
				req{method: "GET", path: "/v1/targeting/segments/seg_1/members/member", key: e.A.Member, body: `{"x":1}`},
				req{method: "HEAD", path: "/v1/targeting/segments/seg_1/members/member", key: e.A.Member},
				req{method: "GET", path: "/v1/targeting/segments/seg_1/members/member", key: e.A.Member, header: map[string]string{"Grpc-Timeout": "bad"}},
				req{method: "GET", path: "/v1/targeting/segments/seg_1/members/member", key: e.A.Member, header: map[string]string{"Grpc-Metadata-X-Extra": "sent"}},
				req{method: "GET", path: "/v1/targeting/segments/seg_1/members/headers", key: e.A.Member, header: map[string]string{"TE": "trailers"}},
				req{method: "GET", path: "/v1/targeting/segments/seg_1/members/member", header: map[string]string{"X-Api-Key": e.A.Member}},
				req{method: "GET", path: "/v1/targeting/segments/seg_1/members/member", key: e.A.Member, header: map[string]string{"Traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"}},
				req{method: "GET", path: "/v1/targeting/segments/seg_1/members/missing", key: e.A.Member, header: map[string]string{"Traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}},
				req{method: "GET", path: "/v1/targeting/segments/seg_1/members/./x", key: e.A.Member},
				req{method: "GET", path: "/v1/targeting/segments//members/member", key: e.A.Member},
				req{method: "GET", path: "/v1/targeting/segments/seg_1/members/", key: e.A.Member},
				req{method: "GET", path: "/v1/targeting/segments/seg_1/members/member/extra", key: e.A.Member},
			)
			for _, rq := range reqs {
				serve := func(h http.Handler) *httptest.ResponseRecorder {
					var r *http.Request
					if rq.body != "" {
						r = httptest.NewRequest(rq.method, rq.path, strings.NewReader(rq.body))
					} else {
						r = httptest.NewRequest(rq.method, rq.path, nil)
					}
					switch {
					case strings.HasPrefix(rq.key, "Basic "):
						r.Header.Set("Authorization", rq.key)
					case rq.key != "":
						r.Header.Set("Authorization", "Bearer "+rq.key)
					}
					for k, v := range rq.header {
						r.Header.Set(k, v)
					}
					rec := httptest.NewRecorder()
					h.ServeHTTP(rec, r)
					return rec
				}
				got, want := serve(fast), serve(generic)
				name := rq.method + " " + rq.path + " " + rq.key[:min(len(rq.key), 12)]
				if got.Code != want.Code {
					t.Errorf("%s: status %d, grpc-gateway %d (%s / %s)", name, got.Code, want.Code, got.Body, want.Body)
					continue
				}
				var gb, wb any
				gerr, werr := json.Unmarshal(got.Body.Bytes(), &gb), json.Unmarshal(want.Body.Bytes(), &wb)
				if (gerr == nil) != (werr == nil) || !reflect.DeepEqual(gb, wb) {
					t.Errorf("%s: body %s, grpc-gateway %s", name, got.Body, want.Body)
				}
				for _, h := range []string{"Content-Type", "Retry-After", "Grpc-Metadata-X-Extra", "Www-Authenticate"} {
					if g, w := got.Header().Values(h), want.Header().Values(h); !reflect.DeepEqual(g, w) {
						t.Errorf("%s: header %s %q, grpc-gateway %q", name, h, g, w)
					}
				}
			}
		})
	}
}

// Lookups served without otelhttp's span work record the HTTP server metrics
// otelhttp records: the same series (every attribute equal), so requests of
// both paths count together.
func TestUntracedLookupsRecordOtelHTTPMetrics(t *testing.T) {
	e := apptest.New(t, apptest.Options{})
	targetingv1.RegisterTargetingServiceServer(e.Server, lookupFake{})
	e.P.SetLocal(app.Targeting, e.Server.InProcess())
	e.Start()
	g, err := New(context.Background(), e.P)
	if err != nil {
		t.Fatal(err)
	}
	h := g.Handler()
	if _, ok := h.(*untracedLookups); !ok {
		t.Fatalf("the handler is a %T: root spans are sampled?", h)
	}
	serve := func(user string, traceparent bool) int {
		r := httptest.NewRequest("GET", "/v1/targeting/segments/seg_1/members/"+user, nil)
		r.Header.Set("Authorization", "Bearer "+e.A.Member)
		if traceparent {
			// Not sampled, but trace context: otelhttp's path.
			r.Header.Set("Traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00")
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		return rec.Code
	}
	for i := range 6 {
		if code := serve("member", i%2 == 0); code != 200 {
			t.Fatalf("member: %d", code)
		}
		if code := serve("missing", i%3 == 0); code != 404 {
			t.Fatalf("missing: %d", code)
		}
	}
	rec := httptest.NewRecorder()
	e.P.Telemetry.MetricsHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	for _, name := range []string{"http_server_request_duration_seconds_count", "http_server_request_body_size_bytes_count", "http_server_response_body_size_bytes_count"} {
		series := map[string]string{}
		for _, line := range strings.Split(rec.Body.String(), "\n") {
			if strings.HasPrefix(line, name+"{") && strings.Contains(line, `http_route="/v1/targeting/segments/{segment_id}/members/{user_id}"`) {
				labels, value, _ := strings.Cut(line, "} ")
				series[labels] = value
			}
		}
		// One series per status, each counting both paths' requests.
		if len(series) != 2 {
			t.Fatalf("%s: %d series for the lookup route, want 2 (200, 404): %v", name, len(series), series)
		}
		for labels, value := range series {
			if value != "6" {
				t.Errorf("%s%s} = %s, want 6 (3 + 3 through each path)", name, labels, value)
			}
		}
	}
}
