package gateway

import (
	"context"
	"net/http"
	"regexp"
	"strings"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
)

// REST spans are named by route template ("POST /v1/syncs/{sync_id}:run"),
// not by the ServeMux pattern the gateway is mounted at ("/v1/"): the
// grpc-gateway handler that matched notes its template in a holder the
// request carries, and namedRoutes hands it to otelhttp as the request's
// pattern, which otelhttp reads for the span name and http.route.

type routeKey struct{}

// routeHolder receives the template of the grpc-gateway route that matched.
type routeHolder struct{ template string }

// namedRoutes sits between otelhttp and the mux: after next served r, r's
// pattern is the grpc-gateway route template when one matched, else the
// ServeMux pattern (webhooks, /healthz, ...).
func namedRoutes(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rh := &routeHolder{}
		inner := r.WithContext(context.WithValue(r.Context(), routeKey{}, rh))
		next.ServeHTTP(w, inner)
		r.Pattern = inner.Pattern
		if rh.template != "" {
			r.Pattern = r.Method + " " + rh.template
		}
		// The route without the method a ServeMux pattern may start with.
		if i := strings.IndexByte(r.Pattern, '/'); i >= 0 {
			trace.SpanFromContext(r.Context()).SetAttributes(attribute.String("http.route", r.Pattern[i:]))
		}
	})
}

// noteRoute is the grpc-gateway middleware that records the matched route.
func noteRoute(next runtime.HandlerFunc) runtime.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request, params map[string]string) {
		if rh, ok := r.Context().Value(routeKey{}).(*routeHolder); ok {
			if p, ok := runtime.HTTPPattern(r.Context()); ok {
				rh.template = routeTemplate(p.String())
			}
		}
		next(w, r, params)
	}
}

// captureAny is a single-segment capture as Pattern.String writes it.
var captureAny = regexp.MustCompile(`\{([^={}]+)=\*\}`)

// routeTemplate turns "/v1/syncs/{sync_id=*}:run" into the template the
// contract declares, "/v1/syncs/{sync_id}:run".
func routeTemplate(p string) string { return captureAny.ReplaceAllString(p, "{$1}") }
