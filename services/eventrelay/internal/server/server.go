// Package server is the EventRelayService: ingest (validated, stored in
// JetStream before it answers), routes, sinks and dead letters.
package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	connectorv1 "github.com/seghub/seghub/gen/seghub/connector/v1"
	eventrelayv1 "github.com/seghub/seghub/gen/seghub/eventrelay/v1"
	"github.com/seghub/seghub/pkg/apperr"
	"github.com/seghub/seghub/pkg/auth"
	"github.com/seghub/seghub/pkg/destinations"
	"github.com/seghub/seghub/pkg/ids"
	"github.com/seghub/seghub/pkg/paging"
	"github.com/seghub/seghub/services/eventrelay/internal/relay"
	"github.com/seghub/seghub/services/eventrelay/internal/schema"
	"github.com/seghub/seghub/services/eventrelay/internal/store"
)

// Limits.
const (
	// MaxBatchEvents bounds TrackBatch and each StreamTrack message.
	MaxBatchEvents = 1000
	// MaxReplay bounds one ReplayDeadLetters call.
	MaxReplay = 10000
	// SignatureTolerance is how far a webhook's timestamp may be from now.
	SignatureTolerance = 5 * time.Minute
	// streamDepth is how many StreamTrack messages may wait for JetStream's
	// acknowledgements while the next ones are validated and published.
	streamDepth = 8
)

// Resolver resolves a connection with its credentials. env "" resolves by id
// alone (webhooks name their connection; it names its environment).
type Resolver func(ctx context.Context, env, connectionID string) (*connectorv1.ResolveConnectionResponse, error)

// Server implements EventRelayService.
type Server struct {
	eventrelayv1.UnimplementedEventRelayServiceServer
	schema   *schema.Schema
	pub      *relay.Publisher
	stream   jetstream.Stream
	store    *store.Store
	sinks    *relay.Manager
	resolve  Resolver
	now      func() time.Time
	ingested func(source string, n int)
	rejected func(source, class string)
	// sourceEnvs caches the environments already recorded as forwarding.
	sourceEnvs sync.Map
}

// New returns the server. ingested observes stored event counts and rejected
// each refused event (metrics).
func New(sc *schema.Schema, pub *relay.Publisher, st jetstream.Stream, db *store.Store, sinks *relay.Manager, resolve Resolver, ingested func(source string, n int), rejected func(source, class string)) *Server {
	if ingested == nil {
		ingested = func(string, int) {}
	}
	if rejected == nil {
		rejected = func(string, string) {}
	}
	return &Server{schema: sc, pub: pub, stream: st, store: db, sinks: sinks, resolve: resolve, now: time.Now, ingested: ingested, rejected: rejected}
}

// RejectedHeader is the response header (gRPC metadata; Grpc-Metadata-… over
// REST) that counts a batch's refused events, so that a caller reading only
// the status learns its batch was partly refused.
const RejectedHeader = "seghub-events-rejected"

// rejectionClass is a rejection's field without the caller's property name
// ("properties.plan" → "properties"): a metric label of bounded cardinality.
func rejectionClass(field string) string {
	class, _, _ := strings.Cut(field, ".")
	return class
}

// metricSource is an event's source as a metric label: a known source or
// "unknown", never the caller's text.
func (s *Server) metricSource(source string) string {
	source = strings.ToLower(strings.TrimSpace(source))
	if source == "" {
		return schema.API
	}
	for _, known := range s.schema.Sources() {
		if source == known {
			return source
		}
	}
	return "unknown"
}

// reportRejected sets RejectedHeader when some of a stored batch's events
// were refused.
func reportRejected(ctx context.Context, b *batch) {
	if len(b.rejected) > 0 {
		_ = grpc.SetHeader(ctx, metadata.Pairs(RejectedHeader, strconv.Itoa(len(b.rejected))))
	}
}

// batch is one call's events on their way to JetStream.
type batch struct {
	envs     []*relay.Envelope
	ids      []string
	rejected []*eventrelayv1.Rejection
	// fromSource: some events come from a source connection that forwards.
	fromSource bool
}

// prepare validates events and builds their envelopes. via is set for a
// webhook: the connection the events arrived through.
func (s *Server) prepare(ctx context.Context, env string, events []*eventrelayv1.Event, via *connectorv1.ResolveConnectionResponse) (*batch, error) {
	now := s.now()
	b := &batch{}
	conns := map[string]*connectorv1.ResolveConnectionResponse{}
	if via != nil {
		conns[via.GetConnection().GetConnectionId()] = via
	}
	for i, ev := range events {
		reject := func(field, reason string) {
			b.rejected = append(b.rejected, &eventrelayv1.Rejection{Index: uint32(i), Field: field, Reason: reason})
			s.rejected(s.metricSource(ev.GetSource()), rejectionClass(field))
		}
		if ev == nil {
			reject("event", "is empty")
			continue
		}
		in := schema.Input{ID: ev.GetEventId(), Source: ev.GetSource(), ConnectionID: ev.GetConnectionId(), UserID: ev.GetUserId(), Name: ev.GetName()}
		if ev.GetTimestamp() != nil {
			if err := ev.GetTimestamp().CheckValid(); err != nil {
				reject("timestamp", "is not a valid time")
				continue
			}
			in.Time = ev.GetTimestamp().AsTime()
		}
		if ev.GetProperties() != nil {
			in.Properties = ev.GetProperties().AsMap()
		}
		n, ferr := s.schema.Validate(in, now)
		if ferr != nil {
			reject(ferr.Field, ferr.Reason)
			continue
		}
		forward := true
		if n.ConnectionID != "" {
			c, ok := conns[n.ConnectionID]
			if !ok {
				rc, err := s.resolve(ctx, env, n.ConnectionID)
				if err != nil {
					reject("connection_id", fmt.Sprintf("connection %q not found in this environment", n.ConnectionID))
					continue
				}
				conns[n.ConnectionID], c = rc, rc
			}
			if t := c.GetConnection().GetType(); t != n.Source {
				reject("connection_id", fmt.Sprintf("connection %q is a %s connection; this is a %s event", n.ConnectionID, t, n.Source))
				continue
			}
			// The source's "send events" toggle decides whether its events flow on.
			forward = c.GetConnection().GetSettings().GetSendEvents()
			b.fromSource = b.fromSource || forward
		}
		if n.ID == "" {
			n.ID = ids.New("evt")
		}
		b.envs = append(b.envs, &relay.Envelope{ID: n.ID, Env: env, Source: n.Source, Conn: n.ConnectionID, User: n.UserID, Name: n.Name,
			Time: n.Time.UnixMicro(), Props: n.Properties, Forward: forward, AppcuesUserID: n.AppcuesUserID, Received: now.UnixMicro()})
		b.ids = append(b.ids, n.ID)
	}
	if b.fromSource {
		if err := s.markSourceEnv(ctx, env, now); err != nil {
			return nil, err
		}
	}
	return b, nil
}

// markSourceEnv records, before its first forwarded event is stored, that
// env's source connections forward events: its analytics connections then
// take them with no route.
func (s *Server) markSourceEnv(ctx context.Context, env string, now time.Time) error {
	if _, ok := s.sourceEnvs.Load(env); ok {
		return nil
	}
	if err := s.store.MarkSourceEnv(ctx, env, now); err != nil {
		return unavailable(err)
	}
	s.sourceEnvs.Store(env, true)
	return nil
}

// store publishes a prepared batch and waits until JetStream holds it.
func (s *Server) storeBatch(ctx context.Context, b *batch) (uint32, error) {
	if len(b.envs) == 0 {
		return 0, nil
	}
	dups, err := s.pub.Publish(ctx, b.envs)
	if err != nil {
		return 0, unavailable(err)
	}
	return s.count(b.envs, dups), nil
}

// count reports how many of envs were duplicates and counts the others as
// ingested, per source (a batch usually has one).
func (s *Server) count(envs []*relay.Envelope, dups []bool) uint32 {
	var n uint32
	stored := map[string]int{}
	for i, d := range dups {
		if d {
			n++
		} else if i < len(envs) {
			stored[s.metricSource(envs[i].Source)]++
		}
	}
	for src, k := range stored {
		s.ingested(src, k)
	}
	return n
}

func unavailable(err error) error {
	return apperr.Unavailable("events not stored (%v); retry with the same event ids", err)
}

// allRejected is InvalidArgument naming each rejected event and field.
func allRejected(field string, rs []*eventrelayv1.Rejection) error {
	vs := make([]*errdetails.BadRequest_FieldViolation, 0, len(rs))
	for _, r := range rs {
		vs = append(vs, apperr.Violation(fmt.Sprintf("%s[%d].%s", field, r.GetIndex(), r.GetField()), r.GetReason()))
	}
	return apperr.InvalidFields(vs...)
}

// Track implements EventRelayService.
func (s *Server) Track(ctx context.Context, req *eventrelayv1.TrackRequest) (*eventrelayv1.TrackResponse, error) {
	env := auth.MustEnvironment(ctx)
	if req.GetEvent() == nil {
		return nil, apperr.Invalid("event", "is required")
	}
	b, err := s.prepare(ctx, env, []*eventrelayv1.Event{req.GetEvent()}, nil)
	if err != nil {
		return nil, err
	}
	if len(b.rejected) > 0 {
		r := b.rejected[0]
		return nil, apperr.Invalid("event."+r.GetField(), r.GetReason())
	}
	dups, err := s.storeBatch(ctx, b)
	if err != nil {
		return nil, err
	}
	return &eventrelayv1.TrackResponse{EventId: b.ids[0], Duplicate: dups > 0}, nil
}

func checkBatchSize(field string, n int) error {
	switch {
	case n == 0:
		return apperr.Invalid(field, "must hold at least one event")
	case n > MaxBatchEvents:
		return apperr.TooLarge(field, fmt.Sprintf("has %d events; at most %d a batch", n, MaxBatchEvents))
	}
	return nil
}

// TrackBatch implements EventRelayService: good events are stored, each bad
// one reported; only when every event is bad is the call refused.
func (s *Server) TrackBatch(ctx context.Context, req *eventrelayv1.TrackBatchRequest) (*eventrelayv1.TrackBatchResponse, error) {
	env := auth.MustEnvironment(ctx)
	if err := checkBatchSize("events", len(req.GetEvents())); err != nil {
		return nil, err
	}
	b, err := s.prepare(ctx, env, req.GetEvents(), nil)
	if err != nil {
		return nil, err
	}
	if len(b.envs) == 0 {
		return nil, allRejected("events", b.rejected)
	}
	dups, err := s.storeBatch(ctx, b)
	if err != nil {
		return nil, err
	}
	reportRejected(ctx, b)
	return &eventrelayv1.TrackBatchResponse{EventIds: b.ids, Rejected: b.rejected, Duplicates: dups}, nil
}

// StreamTrack implements EventRelayService. Each message is answered, in
// order, once JetStream holds its events; the next messages are validated
// and published meanwhile.
func (s *Server) StreamTrack(stream eventrelayv1.EventRelayService_StreamTrackServer) error {
	ctx := stream.Context()
	env := auth.MustEnvironment(ctx)
	type inflight struct {
		seq      uint64
		pending  *relay.Pending
		envs     []*relay.Envelope
		rejected []*eventrelayv1.Rejection
		err      error
	}
	queue := make(chan inflight, streamDepth)
	acked := make(chan error, 1)
	go func() {
		var err error
		for f := range queue {
			if err != nil {
				continue // drain; the stream is ending
			}
			if f.err != nil {
				err = f.err
				continue
			}
			resp := &eventrelayv1.StreamTrackResponse{Sequence: f.seq, Rejected: f.rejected}
			if f.pending != nil {
				dups, werr := f.pending.Wait(ctx)
				if werr != nil {
					err = unavailable(werr)
					continue
				}
				resp.Duplicates = s.count(f.envs, dups)
				resp.Accepted = uint32(len(dups)) - resp.Duplicates
			}
			if serr := stream.Send(resp); serr != nil {
				err = serr
			}
		}
		acked <- err
	}()
	var recvErr error
	for {
		req, err := stream.Recv()
		if err != nil {
			if !errors.Is(err, io.EOF) {
				recvErr = err
			}
			break
		}
		f := inflight{seq: req.GetSequence()}
		if f.err = checkBatchSize(fmt.Sprintf("sequence %d: events", req.GetSequence()), len(req.GetEvents())); f.err == nil {
			b, perr := s.prepare(ctx, env, req.GetEvents(), nil)
			if perr != nil {
				f.err = perr
			} else if f.rejected = b.rejected; len(b.envs) > 0 {
				f.envs = b.envs
				if f.pending, err = s.pub.Start(ctx, b.envs); err != nil {
					f.err = unavailable(err)
				}
			}
		}
		queue <- f
		if f.err != nil {
			break
		}
	}
	close(queue)
	if err := <-acked; err != nil {
		return err
	}
	return recvErr
}

// ReceiveEventWebhook implements EventRelayService: a tool's signed event
// webhook for a source connection.
func (s *Server) ReceiveEventWebhook(ctx context.Context, req *eventrelayv1.ReceiveEventWebhookRequest) (*eventrelayv1.ReceiveEventWebhookResponse, error) {
	invalid := apperr.PermissionDenied("Invalid signature")
	rc, err := s.resolve(ctx, "", req.GetConnectionId())
	if err != nil {
		if apperr.Code(err) == codes.NotFound {
			return nil, invalid // reveal nothing about which connections exist
		}
		return nil, err
	}
	source := rc.GetConnection().GetType()
	if source != schema.Appcues && source != schema.CommandBar {
		return nil, invalid
	}
	if !destinations.Verify(rc.GetSigningSecret(), req.GetSignature(), req.GetBody(), s.now(), SignatureTolerance) {
		return nil, invalid
	}
	inputs, err := schema.ParseWebhook(source, req.GetBody())
	if errors.Is(err, schema.ErrTooManyEvents) {
		return nil, apperr.TooLarge("body", err.Error())
	}
	if err != nil {
		return nil, apperr.Invalid("body", err.Error())
	}
	events := make([]*eventrelayv1.Event, len(inputs))
	for i, in := range inputs {
		ev := &eventrelayv1.Event{EventId: in.ID, Source: source, ConnectionId: req.GetConnectionId(), UserId: in.UserID, Name: in.Name}
		if !in.Time.IsZero() {
			ev.Timestamp = timestamppb.New(in.Time)
		}
		if len(in.Properties) > 0 {
			p, err := structpb.NewStruct(in.Properties)
			if err != nil {
				return nil, apperr.Invalid(fmt.Sprintf("events[%d].properties", i), err.Error())
			}
			ev.Properties = p
		}
		events[i] = ev
	}
	b, err := s.prepare(ctx, rc.GetEnvironmentId(), events, rc)
	if err != nil {
		return nil, err
	}
	if len(b.envs) == 0 {
		return nil, allRejected("events", b.rejected)
	}
	dups, err := s.storeBatch(ctx, b)
	if err != nil {
		return nil, err
	}
	reportRejected(ctx, b)
	return &eventrelayv1.ReceiveEventWebhookResponse{Accepted: uint32(len(b.envs)) - dups, Rejected: b.rejected, Duplicates: dups}, nil
}

// ListEventSchemas implements EventRelayService.
func (s *Server) ListEventSchemas(_ context.Context, req *eventrelayv1.ListEventSchemasRequest) (*eventrelayv1.ListEventSchemasResponse, error) {
	if src := req.GetSource(); src != "" && src != schema.Appcues && src != schema.CommandBar && src != schema.API {
		return nil, apperr.Invalid("source", fmt.Sprintf("unknown source %q", src))
	}
	out := &eventrelayv1.ListEventSchemasResponse{}
	for _, e := range s.schema.Events(req.GetSource()) {
		es := &eventrelayv1.EventSchema{Source: e.Source, Name: e.Name, Aliases: e.Aliases}
		for _, p := range e.Properties {
			es.Properties = append(es.Properties, &eventrelayv1.PropertySchema{Name: p.Name, WireName: p.Wire, Type: p.Type, Required: p.Required})
		}
		out.Schemas = append(out.Schemas, es)
	}
	return out, nil
}

// CreateRoute implements EventRelayService.
func (s *Server) CreateRoute(ctx context.Context, req *eventrelayv1.CreateRouteRequest) (*eventrelayv1.CreateRouteResponse, error) {
	env := auth.MustEnvironment(ctx)
	if req.GetConnectionId() == "" {
		return nil, apperr.Invalid("connection_id", "is required: the analytics or destination connection to send events to")
	}
	rc, err := s.resolve(ctx, env, req.GetConnectionId())
	if err != nil {
		if apperr.Code(err) == codes.NotFound || status.Code(err) == codes.NotFound {
			return nil, apperr.NotFound("connection %q not found", req.GetConnectionId())
		}
		return nil, err
	}
	if t, ok := destinations.Lookup(rc.GetConnection().GetType()); !ok || !t.EventsOut {
		return nil, apperr.FailedPrecondition("connection %q is a %s connection, which has no track API to send events to (use an analytics or Appcues connection)", req.GetConnectionId(), rc.GetConnection().GetType())
	}
	for i, src := range req.GetSources() {
		if src != schema.Appcues && src != schema.CommandBar && src != schema.API {
			return nil, apperr.Invalid(fmt.Sprintf("sources[%d]", i), fmt.Sprintf("unknown source %q (appcues, commandbar or api)", src))
		}
	}
	for i, n := range req.GetEventNames() {
		if strings.TrimSpace(n) == "" || len(n) > schema.MaxNameLen {
			return nil, apperr.Invalid(fmt.Sprintf("event_names[%d]", i), fmt.Sprintf("must be 1 to %d characters", schema.MaxNameLen))
		}
	}
	deliverAs := strings.TrimSpace(req.GetDeliverAs())
	if p := apperr.IdentifierProblem(req.GetDeliverAs()); p != "" {
		return nil, apperr.Invalid("deliver_as", p)
	}
	if len(deliverAs) > schema.MaxNameLen {
		return nil, apperr.Invalid("deliver_as", fmt.Sprintf("must be at most %d characters", schema.MaxNameLen))
	}
	r := &store.Route{Env: env, ConnectionID: req.GetConnectionId(), Sources: req.GetSources(), EventNames: s.deliveredNames(req.GetEventNames()), DeliverAs: deliverAs}
	if err := s.store.CreateRoute(ctx, r); err != nil {
		return nil, err
	}
	s.sinks.Kick()
	return &eventrelayv1.CreateRouteResponse{Route: routePB(*r)}, nil
}

// deliveredNames maps wire names ("appcues:flow_started") to the delivered
// display names routes match on.
func (s *Server) deliveredNames(names []string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = strings.TrimSpace(n)
		if e, ok := s.schema.Lookup(schema.Appcues, out[i]); ok {
			out[i] = e.Name
		}
	}
	return out
}

func routePB(r store.Route) *eventrelayv1.Route {
	return &eventrelayv1.Route{RouteId: r.ID, ConnectionId: r.ConnectionID, Sources: r.Sources, EventNames: r.EventNames, DeliverAs: r.DeliverAs, CreateTime: timestamppb.New(r.Created)}
}

// routeCursor is ListRoutes' page token: the last route returned, in
// (created_at, id) order; Created is in microseconds, as stored.
type routeCursor struct {
	Created int64  `json:"c"`
	ID      string `json:"i"`
}

// ListRoutes implements EventRelayService.
func (s *Server) ListRoutes(ctx context.Context, req *eventrelayv1.ListRoutesRequest) (*eventrelayv1.ListRoutesResponse, error) {
	var cur routeCursor
	size, err := paging.Parse(req.GetPageSize(), req.GetPageToken(), &cur)
	if err != nil {
		return nil, err
	}
	rs, err := s.store.RoutesPage(ctx, auth.MustEnvironment(ctx), cur.Created, cur.ID, size+1)
	if err != nil {
		return nil, err
	}
	out := &eventrelayv1.ListRoutesResponse{}
	if len(rs) > size {
		rs = rs[:size]
		last := rs[size-1]
		out.NextPageToken = paging.Encode(routeCursor{Created: last.Created.UnixMicro(), ID: last.ID})
	}
	for _, r := range rs {
		out.Routes = append(out.Routes, routePB(r))
	}
	return out, nil
}

// DeleteRoute implements EventRelayService.
func (s *Server) DeleteRoute(ctx context.Context, req *eventrelayv1.DeleteRouteRequest) (*eventrelayv1.DeleteRouteResponse, error) {
	if req.GetRouteId() == "" {
		return nil, apperr.Invalid("route_id", "is required")
	}
	if err := s.store.DeleteRoute(ctx, auth.MustEnvironment(ctx), req.GetRouteId()); err != nil {
		return nil, err
	}
	s.sinks.Kick()
	return &eventrelayv1.DeleteRouteResponse{}, nil
}

// ListSinks implements EventRelayService.
func (s *Server) ListSinks(ctx context.Context, _ *eventrelayv1.ListSinksRequest) (*eventrelayv1.ListSinksResponse, error) {
	env := auth.MustEnvironment(ctx)
	out := &eventrelayv1.ListSinksResponse{}
	// Every routed connection is a sink; the counters of its delivery are
	// known to the replica delivering (this one, or another behind the
	// gateway), backlog and dead letters to all.
	routes, err := s.store.Routes(ctx, env)
	if err != nil {
		return nil, err
	}
	local := map[string]relay.SinkInfo{}
	for _, si := range s.sinks.Sinks(env) {
		local[si.ConnectionID] = si
	}
	seen := map[string]bool{}
	for _, r := range routes {
		if seen[r.ConnectionID] {
			continue
		}
		seen[r.ConnectionID] = true
		si, ok := local[r.ConnectionID]
		sk := &eventrelayv1.Sink{ConnectionId: r.ConnectionID, Type: si.Type, Delivered: si.Stats.Delivered, RetryingUsers: uint32(si.Stats.RetryingUsers), LastError: si.Stats.LastError}
		if !ok || sk.Type == "" {
			if rc, err := s.resolve(ctx, env, r.ConnectionID); err == nil {
				sk.Type = rc.GetConnection().GetType()
			}
		}
		if !si.Stats.LastDelivery.IsZero() {
			sk.LastDeliveryTime = timestamppb.New(si.Stats.LastDelivery)
		}
		if n, err := s.sinks.Backlog(ctx, r.ConnectionID); err == nil {
			sk.Backlog = n
		}
		if n, err := s.store.CountDeadLetters(ctx, env, r.ConnectionID); err == nil {
			sk.DeadLetters = n
		}
		out.Sinks = append(out.Sinks, sk)
	}
	sort.Slice(out.Sinks, func(i, j int) bool { return out.Sinks[i].GetConnectionId() < out.Sinks[j].GetConnectionId() })
	return out, nil
}

// EventPB turns a stored envelope back into the API's event.
func EventPB(raw []byte) (*eventrelayv1.Event, error) {
	var e relay.Envelope
	if err := json.Unmarshal(raw, &e); err != nil {
		return nil, err
	}
	ev := &eventrelayv1.Event{EventId: e.ID, Source: e.Source, ConnectionId: e.Conn, UserId: e.User, Name: e.Name, Timestamp: timestamppb.New(time.UnixMicro(e.Time))}
	if len(e.Props) > 0 {
		p, err := structpb.NewStruct(e.Props)
		if err != nil {
			return nil, err
		}
		ev.Properties = p
	}
	return ev, nil
}

func ts(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

// ListDeadLetters implements EventRelayService.
func (s *Server) ListDeadLetters(ctx context.Context, req *eventrelayv1.ListDeadLettersRequest) (*eventrelayv1.ListDeadLettersResponse, error) {
	dls, next, err := s.store.DeadLetters(ctx, store.DeadLetterFilter{Env: auth.MustEnvironment(ctx), ConnectionID: req.GetConnectionId(),
		IncludeReplayed: req.GetIncludeReplayed(), PageSize: int(min(req.GetPageSize(), 1000)), PageToken: req.GetPageToken()})
	if err != nil {
		return nil, err
	}
	out := &eventrelayv1.ListDeadLettersResponse{NextPageToken: next}
	for _, d := range dls {
		ev, err := EventPB(d.Envelope)
		if err != nil {
			return nil, apperr.Internal(err, "dead letter %s is undecodable", d.ID)
		}
		out.DeadLetters = append(out.DeadLetters, &eventrelayv1.DeadLetter{DeadLetterId: d.ID, ConnectionId: d.ConnectionID, Event: ev, Reason: d.Reason,
			Attempts: uint32(d.Attempts), FirstAttemptTime: ts(d.FirstAttempt), DeadTime: ts(d.Dead), ReplayTime: ts(d.Replayed)})
	}
	return out, nil
}

// ReplayDeadLetters implements EventRelayService: each dead letter is
// republished for its sink alone, once.
func (s *Server) ReplayDeadLetters(ctx context.Context, req *eventrelayv1.ReplayDeadLettersRequest) (*eventrelayv1.ReplayDeadLettersResponse, error) {
	env := auth.MustEnvironment(ctx)
	if len(req.GetDeadLetterIds()) > MaxReplay {
		return nil, apperr.TooLarge("dead_letter_ids", fmt.Sprintf("has %d ids; at most %d a call", len(req.GetDeadLetterIds()), MaxReplay))
	}
	dls, _, err := s.store.DeadLetters(ctx, store.DeadLetterFilter{Env: env, ConnectionID: req.GetConnectionId(), IDs: req.GetDeadLetterIds(), PageSize: MaxReplay})
	if err != nil {
		return nil, err
	}
	if len(req.GetDeadLetterIds()) > 0 && len(dls) < len(req.GetDeadLetterIds()) {
		found := map[string]bool{}
		for _, d := range dls {
			found[d.ID] = true
		}
		for _, id := range req.GetDeadLetterIds() {
			if !found[id] {
				return nil, apperr.NotFound("dead letter %q not found, or already replayed", id)
			}
		}
	}
	var n uint32
	for _, d := range dls {
		// Publish first, then mark: a crash between the two leaves the letter
		// listed, and replaying it again republishes under the same message
		// id, which JetStream drops as a duplicate within its dedup window
		// (past it, the event is delivered again under its own event id,
		// which sinks send as the Idempotency-Key).
		if err := s.pub.Republish(ctx, env, d.ConnectionID, replayMsgID(d.ID), d.Envelope, d.TraceParent); err != nil {
			return nil, apperr.Unavailable("replayed %d; the rest could not be stored (%v): call again", n, err)
		}
		ok, err := s.store.MarkReplayed(ctx, env, d.ID, s.now())
		if err != nil {
			return nil, apperr.Internal(err, "replayed %d; dead letter %s was republished but not recorded as replayed: call again (within the event dedup window the second copy is dropped)", n, d.ID)
		}
		// !ok: a concurrent call recorded it; JetStream kept one copy.
		if ok {
			n++
		}
	}
	return &eventrelayv1.ReplayDeadLettersResponse{Replayed: n}, nil
}

// replayMsgID is the JetStream message id a dead letter is republished
// under, so republishing it twice stores it once.
func replayMsgID(deadLetterID string) string { return "replay/" + deadLetterID }
