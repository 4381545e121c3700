// Package eventrelay is the eventrelay service: events from engagement
// tools (Appcues, CommandBar) and the API are validated against their
// source's schema, stored in JetStream before they are acknowledged, and
// delivered to analytics and to destinations' track APIs, one durable
// consumer per sink and user partition (partitions shared out among the
// replicas), in per-user order, with dead letters and replay.
package eventrelay

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	connectorv1 "github.com/seghub/seghub/gen/seghub/connector/v1"
	eventrelayv1 "github.com/seghub/seghub/gen/seghub/eventrelay/v1"
	segmentsyncv1 "github.com/seghub/seghub/gen/seghub/segmentsync/v1"
	"github.com/seghub/seghub/pkg/app"
	"github.com/seghub/seghub/pkg/auth"
	"github.com/seghub/seghub/pkg/destinations"
	"github.com/seghub/seghub/pkg/grpcserver"
	"github.com/seghub/seghub/pkg/ratelimit"
	"github.com/seghub/seghub/services/eventrelay/internal/relay"
	"github.com/seghub/seghub/services/eventrelay/internal/schema"
	"github.com/seghub/seghub/services/eventrelay/internal/server"
	"github.com/seghub/seghub/services/eventrelay/internal/store"
)

// upsertLimit is segmentsync's UpsertUsers batch limit.
const upsertLimit = 1000

// Service is the eventrelay service.
type Service struct {
	p          *app.Platform
	server     *server.Server
	sinks      *relay.Manager
	identities *relay.Identities
}

// Options adjust the service for tests and benchmarks.
type Options struct {
	// AdapterConfig adjusts destination adapters (e.g. shorter retries).
	AdapterConfig func(*destinations.Config)
	// Rate overrides destinations' rate limits.
	Rate func(t destinations.Type) (perMinute, burst int)
	// Backoff between delivery attempts of one user's events, and between
	// tries of an identity attach message alone.
	Backoff func(attempt int) time.Duration
	// Refresh is how often sinks re-read connections and routes.
	Refresh time.Duration
	// WrapAttach wraps the identity attacher's call to segmentsync (tests
	// inject failures with it).
	WrapAttach func(next AttachFunc) AttachFunc
}

// AttachFunc sets appcuesUserID on users of env (user id → Appcues id).
type AttachFunc = func(ctx context.Context, env string, byUser map[string]string) error

// New builds the service on p (which must have JetStream).
func New(ctx context.Context, p *app.Platform) (*Service, error) {
	return NewWithOptions(ctx, p, Options{})
}

// NewWithOptions is New with test and benchmark options.
func NewWithOptions(ctx context.Context, p *app.Platform, o Options) (*Service, error) {
	if p.Bus == nil {
		return nil, fmt.Errorf("eventrelay needs JetStream (embedded or SEGHUB_NATS_URL)")
	}
	db, err := store.Open(ctx, p.DB)
	if err != nil {
		return nil, err
	}
	if err := ratelimit.Migrate(ctx, p.DB); err != nil {
		return nil, err
	}
	// Our own JetStream context: StreamTrack keeps many publishes in flight.
	js, err := jetstream.New(p.Bus.Conn, jetstream.WithPublishAsyncMaxPending(64<<10))
	if err != nil {
		return nil, err
	}
	layout := relay.NewLayout(p.Config.BusNamespace).WithPartitions(p.Config.EventPartitions)
	st, err := relay.EnsureStream(ctx, js, relay.StreamOptions{DedupWindow: p.Config.EventDedupWindow, MaxAge: p.Config.EventRetention, Layout: layout})
	if err != nil {
		return nil, err
	}
	resolve := func(ctx context.Context, env, id string) (*connectorv1.ResolveConnectionResponse, error) {
		conn, err := p.Conn(app.Connector)
		if err != nil {
			return nil, err
		}
		if env != "" {
			ctx = auth.ForEnvironment(ctx, env)
		}
		return connectorv1.NewConnectorServiceClient(conn).ResolveConnection(ctx, &connectorv1.ResolveConnectionRequest{ConnectionId: id})
	}
	rate := func(t destinations.Type) (int, int) { return p.Config.DestinationRate(t.Name, t.RatePerMinute) }
	if o.Rate != nil {
		rate = o.Rate
	}
	mo := relay.ManagerOptions{
		Stream: st, Layout: layout, Store: db, Resolve: resolve, BaseURL: p.Config.DestinationURL, Egress: p.Egress,
		Limiter: func(conn string, t destinations.Type) destinations.Limiter {
			perMinute, burst := rate(t)
			// The connection's one bucket, shared with sync runs and every process.
			return ratelimit.New(p.DB, "connection:"+conn, perMinute, burst)
		},
		Report: func(ctx context.Context, env, id string, s connectorv1.ConnectionStatus, msg string) {
			conn, err := p.Conn(app.Connector)
			if err == nil {
				_, err = connectorv1.NewConnectorServiceClient(conn).ReportConnectionStatus(auth.ForEnvironment(ctx, env), &connectorv1.ReportConnectionStatusRequest{ConnectionId: id, Status: s, Message: msg})
			}
			if err != nil {
				p.Logger.Warn("report connection status", "connection_id", id, "error", err.Error())
			}
		},
		AdapterConfig: o.AdapterConfig,
		UserProperty: func(ctx context.Context, env, user, property string) (string, error) {
			conn, err := p.Conn(app.SegmentSync)
			if err != nil {
				return "", err
			}
			r, err := segmentsyncv1.NewSegmentSyncServiceClient(conn).GetUser(auth.ForEnvironment(ctx, env), &segmentsyncv1.GetUserRequest{UserId: user})
			if status.Code(err) == codes.NotFound {
				return "", nil
			}
			return r.GetUser().GetProperties()[property].GetStringValue(), err
		},
		AnalyticsConnections: func(ctx context.Context, env string) (map[string]time.Time, error) {
			conn, err := p.Conn(app.Connector)
			if err != nil {
				return nil, err
			}
			out := map[string]time.Time{}
			req := &connectorv1.ListConnectionsRequest{Type: "analytics", PageSize: 1000}
			for {
				r, err := connectorv1.NewConnectorServiceClient(conn).ListConnections(auth.ForEnvironment(ctx, env), req)
				if status.Code(err) == codes.NotFound {
					return out, nil // the environment is gone
				}
				if err != nil {
					return nil, err
				}
				for _, c := range r.GetConnections() {
					out[c.GetConnectionId()] = c.GetCreateTime().AsTime()
				}
				if req.PageToken = r.GetNextPageToken(); req.PageToken == "" {
					return out, nil
				}
			}
		},
		MaxAttempts: p.Config.DeliveryMaxAttempts,
		MaxAge:      p.Config.DeliveryMaxAge,
		Backoff:     o.Backoff,
		Refresh:     o.Refresh,
		Logger:      p.Logger,
		Tracer:      p.Telemetry.Tracer.Tracer(relay.TracerScope),
		Metrics:     p.Telemetry.Metrics,
	}
	s := &Service{p: p, sinks: relay.NewManager(mo)}
	if err := p.Telemetry.Metrics.ObserveSinks(s.sinks.SinkStates); err != nil {
		return nil, err
	}
	attach := func(ctx context.Context, env string, byUser map[string]string) error {
		return attachAppcuesIDs(ctx, p, env, byUser)
	}
	if o.WrapAttach != nil {
		attach = o.WrapAttach(attach)
	}
	s.identities, err = relay.NewIdentities(ctx, st, layout, relay.IdentityOptions{
		Attach: attach, DeadLetters: db, MaxAttempts: p.Config.IdentityAttachMaxAttempts, MaxAge: p.Config.DeliveryMaxAge, Backoff: o.Backoff, Log: p.Logger,
	})
	if err != nil {
		return nil, err
	}
	s.server = server.New(schema.Default(), relay.NewPublisher(js, layout, p.Telemetry.Tracer.Tracer(relay.TracerScope)), st, db, s.sinks, resolve, p.Telemetry.Metrics.EventsIngested, p.Telemetry.Metrics.EventRejected)
	return s, nil
}

// attachAppcuesIDs sets appcuesUserID through segmentsync's users API.
func attachAppcuesIDs(ctx context.Context, p *app.Platform, env string, byUser map[string]string) error {
	conn, err := p.Conn(app.SegmentSync)
	if err != nil {
		return err
	}
	cl := segmentsyncv1.NewSegmentSyncServiceClient(conn)
	users := make([]string, 0, len(byUser))
	for u := range byUser {
		users = append(users, u)
	}
	sort.Strings(users)
	for i := 0; i < len(users); i += upsertLimit {
		var batch []*segmentsyncv1.User
		for _, u := range users[i:min(i+upsertLimit, len(users))] {
			batch = append(batch, &segmentsyncv1.User{UserId: u, Properties: map[string]*segmentsyncv1.PropertyValue{
				"appcuesUserID": {Kind: &segmentsyncv1.PropertyValue_StringValue{StringValue: byUser[u]}}}})
		}
		if _, err := cl.UpsertUsers(auth.ForEnvironment(ctx, env), &segmentsyncv1.UpsertUsersRequest{Users: batch}); err != nil {
			return err
		}
	}
	return nil
}

// Register implements app.Service.
func (s *Service) Register(g *grpcserver.Server) {
	eventrelayv1.RegisterEventRelayServiceServer(g.Server, s.server)
}

// Run delivers to sinks and attaches identities until ctx ends.
func (s *Service) Run(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- s.identities.Run(ctx) }()
	err := s.sinks.Run(ctx)
	if ierr := <-errc; err == nil {
		err = ierr
	}
	return err
}
