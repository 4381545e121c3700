// Package gateway serves seghub's REST/JSON API: grpc-gateway handlers for
// every service, the merged OpenAPI document, health, readiness and metrics.
// It holds no business logic; callers' keys are forwarded to gRPC as-is.
package gateway

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/seghub/seghub/gen/openapi"
	adminv1 "github.com/seghub/seghub/gen/seghub/admin/v1"
	connectorv1 "github.com/seghub/seghub/gen/seghub/connector/v1"
	eventrelayv1 "github.com/seghub/seghub/gen/seghub/eventrelay/v1"
	segmentsyncv1 "github.com/seghub/seghub/gen/seghub/segmentsync/v1"
	targetingv1 "github.com/seghub/seghub/gen/seghub/targeting/v1"
	"github.com/seghub/seghub/pkg/app"
	"github.com/seghub/seghub/pkg/config"
	"github.com/seghub/seghub/pkg/grpcserver"
	"github.com/seghub/seghub/web"
)

// Route mounts extra HTTP handlers (OAuth callback, inbound webhooks) that
// services provide; the gateway only routes to them.
type Route struct {
	Pattern string
	Handler http.Handler
}

// restPrefix is where grpc-gateway's routes are mounted.
const restPrefix = "/v1/"

// Gateway is the REST front door.
type Gateway struct {
	p      *app.Platform
	mux    *http.ServeMux
	gw     *runtime.ServeMux
	health map[string]healthpb.HealthClient
	lookup *lookupHandler
}

// registrar registers one service's generated gateway handlers on a conn.
type registrar func(ctx context.Context, mux *runtime.ServeMux, conn *grpc.ClientConn) error

// Registrations maps each service to its generated handler registration.
// Services add their entry when their contract gains HTTP routes.
var registrations = map[string][]registrar{
	app.Admin:       {adminv1.RegisterAdminServiceHandler},
	app.Connector:   {connectorv1.RegisterConnectorServiceHandler},
	app.EventRelay:  {eventrelayv1.RegisterEventRelayServiceHandler},
	app.SegmentSync: {segmentsyncv1.RegisterSegmentSyncServiceHandler},
	app.Targeting:   {targetingv1.RegisterTargetingServiceHandler},
}

// New builds the gateway on p's connections. extra routes are mounted as-is.
func New(ctx context.Context, p *app.Platform, extra ...Route) (*Gateway, error) {
	g := &Gateway{p: p, mux: http.NewServeMux(), health: map[string]healthpb.HealthClient{}}
	g.gw = runtime.NewServeMux(
		runtime.WithMarshalerOption(runtime.MIMEWildcard, &runtime.HTTPBodyMarshaler{Marshaler: strictJSON{&runtime.JSONPb{
			// Zero values are sent (is_member: false, counts of 0), so that
			// a client never reads a missing field as an error.
			MarshalOptions:   protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true},
			UnmarshalOptions: protojson.UnmarshalOptions{DiscardUnknown: false},
		}, p.Config.RESTMaxBody}}),
		runtime.WithMetadata(browserNonceMetadata),
		runtime.WithErrorHandler(g.httpError),
		runtime.WithIncomingHeaderMatcher(forwardHeader),
		runtime.WithMiddlewares(noteRoute),
	)
	for svc, regs := range registrations {
		conn, err := p.PlainConn(svc)
		if err != nil {
			return nil, err
		}
		g.health[svc] = healthpb.NewHealthClient(conn)
		if local, reg := p.Local(svc), localRegistrations[svc]; local != nil && reg != nil {
			if err := reg(ctx, g.gw, local); err != nil {
				return nil, err
			}
			continue
		}
		for _, r := range regs {
			if err := r(ctx, g.gw, conn); err != nil {
				return nil, err
			}
		}
	}
	for _, svc := range []string{app.Connector, app.SegmentSync, app.EventRelay, app.Targeting} {
		if _, ok := g.health[svc]; !ok {
			conn, err := p.PlainConn(svc)
			if err != nil {
				return nil, err
			}
			g.health[svc] = healthpb.NewHealthClient(conn)
		}
	}
	g.mux.Handle(restPrefix, g.guardREST(g.gw))
	if err := g.mountLookup(); err != nil {
		return nil, err
	}
	g.mux.Handle("POST /v1/connections:authorize", g.guardREST(http.HandlerFunc(g.startAuthorization)))
	g.mux.HandleFunc("GET /openapi.json", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(openapi.JSON)
	})
	// /healthz answers from this process alone, calling nothing: liveness.
	g.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	g.mux.HandleFunc("GET /readyz", g.readyz)
	g.mux.Handle("GET /metrics", p.Telemetry.MetricsHandler())
	g.mux.HandleFunc("GET /oauth/callback", g.oauthCallback)
	if err := g.mountOFREP(); err != nil {
		return nil, err
	}
	for _, src := range config.WebhookSources {
		service, call := app.EventRelay, webhookCall(eventWebhook)
		if src == "heap" || src == "segment_webhook" {
			service, call = app.SegmentSync, segmentWebhook
		}
		g.mux.HandleFunc("POST /webhooks/"+src+"/{connection_id}", g.webhook(src, service, call))
	}
	for _, r := range extra {
		g.mux.Handle(r.Pattern, r.Handler)
	}
	ui, err := console(web.Dist())
	if err != nil {
		return nil, err
	}
	// The console answers below /; the API's own patterns are more specific,
	// and console() refuses the reserved prefixes and methods other than GET.
	g.mux.Handle("/", ui)
	return g, nil
}

// Handler is the gateway wrapped in OpenTelemetry, so the HTTP → gRPC hop is
// one trace.
func (g *Gateway) Handler() http.Handler {
	// A fixed server name: otherwise each Host header a caller sends becomes
	// a metric series.
	_, port, err := net.SplitHostPort(g.p.Config.HTTPAddr)
	if err != nil || port == "" {
		port = "8080"
	}
	server := net.JoinHostPort("seghub", port)
	traced := otelhttp.NewHandler(namedRoutes(g.mux), "gateway", otelhttp.WithTracerProvider(g.p.Telemetry.Tracer), otelhttp.WithMeterProvider(g.p.Telemetry.Meter),
		otelhttp.WithServerName(server))
	if g.p.Telemetry.RootSpansSampled {
		return traced
	}
	m, err := newHTTPMetrics(g.p.Telemetry.Meter, server)
	if err != nil {
		g.p.Logger.Warn("lookups keep otelhttp's full path: HTTP metrics", "error", err)
		return traced
	}
	return &untracedLookups{traced: traced, lookup: g.lookup, m: m}
}

// serviceReadiness is one service's part of /readyz.
type serviceReadiness struct {
	Status string `json:"status"`
	// Reason is why the service is not ready (empty when it is).
	Reason string `json:"reason,omitempty"`
	// Dependencies map each dependency to "ok" or why it is not ready.
	Dependencies map[string]string `json:"dependencies,omitempty"`
}

// readiness is the /readyz answer.
type readiness struct {
	Status   string                      `json:"status"`
	Services map[string]serviceReadiness `json:"services"`
}

// readyz answers 200 when every service reports SERVING through gRPC health
// with each of its dependencies (database, schema migrations, NATS,
// targeting's index) ready; else 503 naming the service, the dependency and
// why.
func (g *Gateway) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
	defer cancel()
	out := readiness{Status: "ready", Services: make(map[string]serviceReadiness, len(g.health))}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for svc, hc := range g.health {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sr := checkService(ctx, svc, hc)
			mu.Lock()
			defer mu.Unlock()
			out.Services[svc] = sr
			if sr.Status != healthpb.HealthCheckResponse_SERVING.String() {
				out.Status = "not ready"
			}
		}()
	}
	wg.Wait()
	code := http.StatusOK
	if out.Status != "ready" {
		code = http.StatusServiceUnavailable
	}
	writeJSON(w, code, out)
}

// checkService asks svc's gRPC health, which checks its dependencies.
func checkService(ctx context.Context, svc string, hc healthpb.HealthClient) serviceReadiness {
	var md metadata.MD
	resp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: svc}, grpc.Header(&md))
	if err != nil {
		return serviceReadiness{Status: "UNREACHABLE", Reason: status.Convert(err).Message()}
	}
	sr := serviceReadiness{Status: resp.GetStatus().String()}
	var failing []string
	for _, v := range md.Get(grpcserver.DependencyHeader) {
		name, state, _ := strings.Cut(v, "=")
		if sr.Dependencies == nil {
			sr.Dependencies = map[string]string{}
		}
		sr.Dependencies[name] = state
		if state != "ok" {
			failing = append(failing, name+": "+state)
		}
	}
	if len(failing) > 0 {
		sort.Strings(failing)
		sr.Reason = strings.Join(failing, "; ")
	} else if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		sr.Reason = "health reports " + resp.GetStatus().String()
	}
	return sr
}

// runtimeStatus is the HTTP status REST gives a gRPC error.
func runtimeStatus(err error) int {
	code, _ := httpStatus(status.Convert(err))
	return code
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
