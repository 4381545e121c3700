package gateway

import (
	"strings"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

// A REST request's server span is named by its route template, whatever
// the ids in the path, and carries it as http.route; the gateway's own
// ServeMux routes keep their patterns. Before, every REST span was
// "POST /v1/".
func TestRESTSpanNamedByRouteTemplate(t *testing.T) {
	g := newTestGateway(t)
	rec := tracetest.NewSpanRecorder()
	g.env.P.Telemetry.Tracer.RegisterSpanProcessor(rec)
	for _, tc := range []struct{ method, path, body, name, route string }{
		{"GET", "/v1/targeting/segments/s-9/members/u-1", "", "GET /v1/targeting/segments/{segment_id}/members/{user_id}", "/v1/targeting/segments/{segment_id}/members/{user_id}"},
		{"GET", "/v1/targeting/users/u-2/segments", "", "GET /v1/targeting/users/{user_id}/segments", "/v1/targeting/users/{user_id}/segments"},
		{"GET", "/healthz", "", "GET /healthz", "/healthz"},
	} {
		g.serve(tc.method, tc.path, g.env.A.Admin, strings.NewReader(tc.body), int64(len(tc.body)))
		var got []string
		found := false
		for _, s := range rec.Ended() {
			if s.SpanKind() != trace.SpanKindServer || s.InstrumentationScope().Name != "go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp" {
				continue
			}
			got = append(got, s.Name())
			route := ""
			for _, kv := range s.Attributes() {
				if kv.Key == attribute.Key("http.route") {
					route = kv.Value.AsString()
				}
			}
			if s.Name() == tc.name && route == tc.route {
				found = true
			}
		}
		if !found {
			t.Fatalf("%s %s: no server span %q with http.route %q; spans %q", tc.method, tc.path, tc.name, tc.route, got)
		}
	}
}
