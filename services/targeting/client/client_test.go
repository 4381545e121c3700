package client_test

import (
	"context"
	"fmt"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"pgregory.net/rapid"

	segmentsyncv1 "github.com/seghub/seghub/gen/seghub/segmentsync/v1"
	targetingv1 "github.com/seghub/seghub/gen/seghub/targeting/v1"
	"github.com/seghub/seghub/pkg/app/apptest"
	"github.com/seghub/seghub/pkg/config"
	"github.com/seghub/seghub/services/segmentsync"
	"github.com/seghub/seghub/services/targeting"
	"github.com/seghub/seghub/services/targeting/client"
)

// process starts segmentsync and targeting in one test process.
func process(t testing.TB, o apptest.Options) *apptest.Env {
	t.Helper()
	o.NeedBus = true
	e := apptest.New(t, o)
	ss, err := segmentsync.New(context.Background(), e.P)
	if err != nil {
		t.Fatal(err)
	}
	tg, err := targeting.New(context.Background(), e.P)
	if err != nil {
		t.Fatal(err)
	}
	e.Add(ss, tg)
	e.Start()
	return e
}

// calls counts the RPCs a client connection makes, and can hold back its
// membership feed.
type calls struct {
	mu      sync.Mutex
	n       map[string]int
	watches []*segmentsyncv1.WatchMembershipRequest
	gate    chan struct{}
}

const watchMethod = "/seghub.segmentsync.v1.SegmentSyncService/WatchMembership"

func (c *calls) count(method string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[method]
}

func (c *calls) lastWatch() *segmentsyncv1.WatchMembershipRequest {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.watches) == 0 {
		return nil
	}
	return c.watches[len(c.watches)-1]
}

type recordingStream struct {
	grpc.ClientStream
	c *calls
}

func (s recordingStream) SendMsg(m any) error {
	if r, ok := m.(*segmentsyncv1.WatchMembershipRequest); ok {
		s.c.mu.Lock()
		s.c.watches = append(s.c.watches, r)
		s.c.mu.Unlock()
	}
	return s.ClientStream.SendMsg(m)
}

type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}
func (bearer) RequireTransportSecurity() bool { return false }

// dial connects to addr with key, recording into c.
func dial(t *testing.T, addr, key string, c *calls) *grpc.ClientConn {
	t.Helper()
	c.n = map[string]int{}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithPerRPCCredentials(bearer(key)),
		grpc.WithUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			c.mu.Lock()
			c.n[method]++
			c.mu.Unlock()
			return invoker(ctx, method, req, reply, cc, opts...)
		}),
		grpc.WithStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
			if method == watchMethod && c.gate != nil {
				select {
				case <-c.gate:
				case <-ctx.Done():
					return nil, ctx.Err()
				}
			}
			s, err := streamer(ctx, desc, cc, method, opts...)
			if err != nil {
				return nil, err
			}
			return recordingStream{ClientStream: s, c: c}, nil
		}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func newClient(t *testing.T, conn grpc.ClientConnInterface) *client.Client {
	t.Helper()
	c, err := client.New(conn, client.Options{MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// fataler is what eventually needs of *testing.T and *rapid.T.
type fataler interface {
	Helper()
	Fatal(args ...any)
}

// eventually retries fn until it returns nil, failing after 20 s (a bound
// on waiting, not a speed assertion).
func eventually(t fataler, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// world is the property test's fixed pool of users, segments and experiences.
type world struct {
	ss          segmentsyncv1.SegmentSyncServiceClient
	tg          targetingv1.TargetingServiceClient
	users       []string
	segments    []string
	marker      string
	experiences []string
	markers     int
}

func num(v float64) map[string]*segmentsyncv1.PropertyValue {
	return map[string]*segmentsyncv1.PropertyValue{"seats": {Kind: &segmentsyncv1.PropertyValue_NumberValue{NumberValue: v}}}
}

// audienceGen draws audiences over the world's segments and a "seats" property.
func (w *world) audienceGen() *rapid.Generator[*targetingv1.Audience] {
	cond := rapid.Custom(func(t *rapid.T) *targetingv1.Condition {
		switch rapid.IntRange(0, 4).Draw(t, "kind") {
		case 0:
			return &targetingv1.Condition{Operator: targetingv1.Operator_OPERATOR_IN_SEGMENT, SegmentId: rapid.SampledFrom(w.segments).Draw(t, "seg")}
		case 1:
			return &targetingv1.Condition{Operator: targetingv1.Operator_OPERATOR_NOT_IN_SEGMENT, SegmentId: rapid.SampledFrom(w.segments).Draw(t, "seg")}
		case 2:
			return &targetingv1.Condition{Operator: targetingv1.Operator_OPERATOR_LESS_THAN, Property: "seats", Value: &targetingv1.Condition_NumberValue{NumberValue: float64(rapid.IntRange(0, 10).Draw(t, "n"))}}
		case 3:
			return &targetingv1.Condition{Operator: targetingv1.Operator_OPERATOR_GREATER_THAN, Property: "seats", Value: &targetingv1.Condition_NumberValue{NumberValue: float64(rapid.IntRange(0, 10).Draw(t, "n"))}}
		default:
			return &targetingv1.Condition{Operator: targetingv1.Operator_OPERATOR_EXISTS, Property: "seats"}
		}
	})
	return rapid.Custom(func(t *rapid.T) *targetingv1.Audience {
		if rapid.IntRange(0, 5).Draw(t, "everyone") == 0 {
			return &targetingv1.Audience{Everyone: true}
		}
		g := &targetingv1.ConditionGroup{
			Combinator: rapid.SampledFrom([]targetingv1.Combinator{targetingv1.Combinator_COMBINATOR_AND, targetingv1.Combinator_COMBINATOR_OR}).Draw(t, "comb"),
			Conditions: rapid.SliceOfN(cond, 1, 3).Draw(t, "conds"),
		}
		if rapid.Bool().Draw(t, "nested") {
			g.Groups = []*targetingv1.ConditionGroup{{Combinator: targetingv1.Combinator_COMBINATOR_OR, Conditions: rapid.SliceOfN(cond, 1, 2).Draw(t, "inner")}}
		}
		return &targetingv1.Audience{Match: g}
	})
}

// replace makes users the whole membership of seg (a client stream).
func (w *world) replace(ctx context.Context, seg string, users []string) error {
	st, err := w.ss.ReplaceMembers(ctx)
	if err != nil {
		return err
	}
	if err := st.Send(&segmentsyncv1.ReplaceMembersRequest{SegmentId: seg, UserIds: users}); err != nil {
		return err
	}
	_, err = st.CloseAndRecv()
	return err
}

// change makes one random change through the service's API.
func (w *world) change(ctx context.Context, t *rapid.T) (experiencesChanged bool) {
	seg := rapid.SampledFrom(w.segments).Draw(t, "segment")
	some := rapid.SliceOfNDistinct(rapid.SampledFrom(w.users), 0, 5, rapid.ID[string]).Draw(t, "users")
	var err error
	switch rapid.IntRange(0, 5).Draw(t, "op") {
	case 0:
		if len(some) > 0 {
			_, err = w.ss.AddMembers(ctx, &segmentsyncv1.AddMembersRequest{SegmentId: seg, UserIds: some})
		}
	case 1:
		if len(some) > 0 {
			_, err = w.ss.RemoveMembers(ctx, &segmentsyncv1.RemoveMembersRequest{SegmentId: seg, UserIds: some})
		}
	case 2:
		err = w.replace(ctx, seg, some)
	case 3:
		u := rapid.SampledFrom(w.users).Draw(t, "user")
		_, err = w.ss.UpsertUsers(ctx, &segmentsyncv1.UpsertUsersRequest{Users: []*segmentsyncv1.User{{UserId: u, Properties: num(float64(rapid.IntRange(0, 10).Draw(t, "seats")))}}})
	case 4:
		x := rapid.SampledFrom(w.experiences).Draw(t, "experience")
		_, err = w.tg.UpdateExperience(ctx, &targetingv1.UpdateExperienceRequest{ExperienceId: x, Audience: w.audienceGen().Draw(t, "audience")})
		experiencesChanged = true
	case 5:
		x := rapid.SampledFrom(w.experiences).Draw(t, "experience")
		enabled := rapid.Bool().Draw(t, "enabled")
		_, err = w.tg.UpdateExperience(ctx, &targetingv1.UpdateExperienceRequest{ExperienceId: x, Enabled: &enabled})
		experiencesChanged = true
	}
	if err != nil {
		t.Fatalf("change: %v", err)
	}
	return experiencesChanged
}

// serviceVersion writes a marker after the changes and waits until the
// service answers it: the feed is ordered, so the service has then applied
// every change before it. It returns the version the service answered with.
func (w *world) serviceVersion(ctx context.Context, t fataler) int64 {
	w.markers++
	m := fmt.Sprintf("marker-%d", w.markers)
	if _, err := w.ss.AddMembers(ctx, &segmentsyncv1.AddMembersRequest{SegmentId: w.marker, UserIds: []string{m}}); err != nil {
		t.Fatal(err)
	}
	var v int64
	eventually(t, func() error {
		r, err := w.tg.CheckMembership(ctx, &targetingv1.CheckMembershipRequest{SegmentId: w.marker, UserId: m})
		if err != nil || !r.GetIsMember() {
			return fmt.Errorf("service has not applied marker %s: %v, %v", m, r, err)
		}
		v = r.GetIndexVersion()
		return nil
	})
	return v
}

// same compares every answer of c with the service's.
func (w *world) same(ctx context.Context, c *client.Client) error {
	users := append(slices.Clone(w.users), "nobody")
	for _, u := range users {
		for _, s := range append(slices.Clone(w.segments), "seg_missing") {
			got, gerr := c.IsMember(ctx, s, u)
			want, werr := w.tg.CheckMembership(ctx, &targetingv1.CheckMembershipRequest{SegmentId: s, UserId: u})
			if status.Code(gerr) != status.Code(werr) || got != want.GetIsMember() {
				return fmt.Errorf("IsMember(%s, %s) = %v, %v; service %v, %v", s, u, got, gerr, want.GetIsMember(), werr)
			}
		}
		got, err := c.Segments(ctx, u)
		if err != nil {
			return err
		}
		want, err := w.tg.ListUserSegments(ctx, &targetingv1.ListUserSegmentsRequest{UserId: u})
		if err != nil {
			return err
		}
		if !slices.Equal(got, want.GetSegmentIds()) {
			return fmt.Errorf("Segments(%s) = %v; service %v", u, got, want.GetSegmentIds())
		}
		for _, x := range append(slices.Clone(w.experiences), "exp_missing") {
			got, gerr := c.Evaluate(ctx, x, u)
			want, werr := w.tg.EvaluateExperience(ctx, &targetingv1.EvaluateExperienceRequest{ExperienceId: x, UserId: u})
			if status.Code(gerr) != status.Code(werr) || got.Eligible != want.GetEligible() || got.DecidedBy != want.GetDecidedBy() ||
				got.Reason != want.GetReason() || (werr == nil && got.IndexVersion != want.GetIndexVersion()) {
				return fmt.Errorf("Evaluate(%s, %s) = %+v, %v; service %v, %v", x, u, got, gerr, want, werr)
			}
		}
	}
	return nil
}

// Once the client's version reaches the service's, every answer equals the
// service's, whatever memberships, properties and audiences did meanwhile.
func TestClientAnswersAsTheService(t *testing.T) {
	e := process(t, apptest.Options{})
	ctx := apptest.Context(t, 10*time.Minute)
	admin := e.Dial(e.A.Admin)
	w := &world{ss: segmentsyncv1.NewSegmentSyncServiceClient(admin), tg: targetingv1.NewTargetingServiceClient(admin)}
	for i := range 8 {
		w.users = append(w.users, fmt.Sprintf("user-%d", i))
	}
	if _, err := w.ss.UpsertUsers(ctx, &segmentsyncv1.UpsertUsersRequest{Users: []*segmentsyncv1.User{{UserId: "user-0", Properties: num(3)}, {UserId: "user-1"}}}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"Trial", "Paying", "Churned", "marker"} {
		sg, err := w.ss.CreateSegment(ctx, &segmentsyncv1.CreateSegmentRequest{Name: name})
		if err != nil {
			t.Fatal(err)
		}
		if name == "marker" {
			w.marker = sg.GetSegment().GetSegmentId()
		} else {
			w.segments = append(w.segments, sg.GetSegment().GetSegmentId())
		}
	}
	w.serviceVersion(ctx, t) // the service knows the segments before audiences name them
	for i := range 3 {
		x, err := w.tg.CreateExperience(ctx, &targetingv1.CreateExperienceRequest{Name: fmt.Sprintf("tour %d", i), Type: targetingv1.ExperienceType_EXPERIENCE_TYPE_PRODUCT_TOUR,
			Audience: &targetingv1.Audience{Match: &targetingv1.ConditionGroup{Conditions: []*targetingv1.Condition{{Operator: targetingv1.Operator_OPERATOR_IN_SEGMENT, SegmentId: w.segments[i]}}}}})
		if err != nil {
			t.Fatal(err)
		}
		w.experiences = append(w.experiences, x.GetExperience().GetExperienceId())
	}
	c := newClient(t, e.Dial(e.A.Admin))
	if err := c.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	rapid.Check(t, func(rt *rapid.T) {
		experiencesChanged := false
		for range rapid.IntRange(1, 6).Draw(rt, "changes") {
			experiencesChanged = w.change(ctx, rt) || experiencesChanged
		}
		v := w.serviceVersion(ctx, rt)
		eventually(rt, func() error {
			if got := c.Version(); got < v {
				return fmt.Errorf("client at version %d, service at %d", got, v)
			}
			return nil
		})
		if experiencesChanged {
			if err := c.RefreshExperiences(ctx); err != nil {
				rt.Fatal(err)
			}
		}
		if c.Staleness() != 0 {
			rt.Fatalf("a connected, caught-up client reports staleness %v", c.Staleness())
		}
		if err := w.same(ctx, c); err != nil {
			rt.Fatal(err)
		}
	})
}

// While the feed has not loaded, answers come from the RPCs; once loaded,
// from the replica, with the same values.
func TestClientFallsBackWhileLoading(t *testing.T) {
	e := process(t, apptest.Options{})
	ctx := apptest.Context(t, time.Minute)
	admin := e.Dial(e.A.Admin)
	ss := segmentsyncv1.NewSegmentSyncServiceClient(admin)
	tg := targetingv1.NewTargetingServiceClient(admin)
	sg, err := ss.CreateSegment(ctx, &segmentsyncv1.CreateSegmentRequest{Name: "Trial"})
	if err != nil {
		t.Fatal(err)
	}
	sid := sg.GetSegment().GetSegmentId()
	if _, err := ss.AddMembers(ctx, &segmentsyncv1.AddMembersRequest{SegmentId: sid, UserIds: []string{"ann"}}); err != nil {
		t.Fatal(err)
	}
	eventually(t, func() error {
		r, err := tg.CheckMembership(ctx, &targetingv1.CheckMembershipRequest{SegmentId: sid, UserId: "ann"})
		if err != nil || !r.GetIsMember() {
			return fmt.Errorf("service not ready: %v, %v", r, err)
		}
		return nil
	})
	x, err := tg.CreateExperience(ctx, &targetingv1.CreateExperienceRequest{Name: "tour", Type: targetingv1.ExperienceType_EXPERIENCE_TYPE_PRODUCT_TOUR,
		Audience: &targetingv1.Audience{Match: &targetingv1.ConditionGroup{Conditions: []*targetingv1.Condition{{Operator: targetingv1.Operator_OPERATOR_IN_SEGMENT, SegmentId: sid}}}}})
	if err != nil {
		t.Fatal(err)
	}
	xid := x.GetExperience().GetExperienceId()

	rec := &calls{gate: make(chan struct{})}
	// No periodic re-read of experiences: the last step counts the RPCs an
	// experience newer than the client's last read costs, and a re-read
	// landing in between would answer it locally.
	c, err := client.New(dial(t, e.Addr, e.A.Admin, rec), client.Options{MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond, ExperienceRefresh: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ask := func() {
		t.Helper()
		if m, err := c.IsMember(ctx, sid, "ann"); err != nil || !m {
			t.Fatalf("IsMember(ann) = %v, %v", m, err)
		}
		if m, err := c.IsMember(ctx, sid, "bob"); err != nil || m {
			t.Fatalf("IsMember(bob) = %v, %v", m, err)
		}
		if _, err := c.IsMember(ctx, "seg_missing", "ann"); status.Code(err) != codes.NotFound {
			t.Fatalf("unknown segment: %v", err)
		}
		if s, err := c.Segments(ctx, "ann"); err != nil || !slices.Equal(s, []string{sid}) {
			t.Fatalf("Segments(ann) = %v, %v", s, err)
		}
		if r, err := c.Evaluate(ctx, xid, "ann"); err != nil || !r.Eligible || r.DecidedBy != "match.conditions[0]" {
			t.Fatalf("Evaluate(ann) = %+v, %v", r, err)
		}
	}
	ask()
	if c.Ready() || c.Version() != 0 || c.Staleness() == 0 {
		t.Fatalf("held-back feed: ready %v, version %d, staleness %v", c.Ready(), c.Version(), c.Staleness())
	}
	const check = "/seghub.targeting.v1.TargetingService/CheckMembership"
	if n := rec.count(check); n != 3 {
		t.Fatalf("loading client made %d CheckMembership calls, want 3 (one per question)", n)
	}
	if n := rec.count("/seghub.targeting.v1.TargetingService/EvaluateExperience"); n != 1 {
		t.Fatalf("loading client made %d EvaluateExperience calls, want 1", n)
	}

	close(rec.gate)
	if err := c.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	eventually(t, func() error { return c.RefreshExperiences(ctx) })
	before := map[string]int{}
	for _, m := range []string{check, "/seghub.targeting.v1.TargetingService/ListUserSegments", "/seghub.targeting.v1.TargetingService/EvaluateExperience"} {
		before[m] = rec.count(m)
	}
	ask()
	for m, n := range before {
		if got := rec.count(m); got != n {
			t.Fatalf("loaded client still calls %s (%d → %d)", m, n, got)
		}
	}
	if c.Version() == 0 || c.Staleness() != 0 {
		t.Fatalf("loaded client: version %d, staleness %v", c.Version(), c.Staleness())
	}

	// An experience newer than the client's last read is asked of the
	// service, not called unknown.
	y, err := tg.CreateExperience(ctx, &targetingv1.CreateExperienceRequest{Name: "new tour", Type: targetingv1.ExperienceType_EXPERIENCE_TYPE_PRODUCT_TOUR, Audience: &targetingv1.Audience{Everyone: true}})
	if err != nil {
		t.Fatal(err)
	}
	evaluations := rec.count("/seghub.targeting.v1.TargetingService/EvaluateExperience")
	if r, err := c.Evaluate(ctx, y.GetExperience().GetExperienceId(), "bob"); err != nil || !r.Eligible || r.DecidedBy != "everyone" {
		t.Fatalf("Evaluate(new experience) = %+v, %v", r, err)
	}
	if got := rec.count("/seghub.targeting.v1.TargetingService/EvaluateExperience"); got != evaluations+1 {
		t.Fatalf("new experience: %d EvaluateExperience calls, want 1", got-evaluations)
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// A server restart breaks the feed: the client keeps answering from what it
// holds, reports growing staleness, reconnects with backoff and resumes from
// its version (no second snapshot), then sees changes made after the restart.
func TestClientResumesAfterServerRestart(t *testing.T) {
	dir := t.TempDir()
	addr := freeAddr(t)
	fixed := func(c *config.Config) { c.GRPCAddr = addr }
	e1 := process(t, apptest.Options{DataDir: dir, Configure: fixed})
	ctx := apptest.Context(t, time.Minute)
	key := e1.A.Admin
	ss := segmentsyncv1.NewSegmentSyncServiceClient(e1.Dial(key))
	sg, err := ss.CreateSegment(ctx, &segmentsyncv1.CreateSegmentRequest{Name: "Trial"})
	if err != nil {
		t.Fatal(err)
	}
	sid := sg.GetSegment().GetSegmentId()
	if _, err := ss.AddMembers(ctx, &segmentsyncv1.AddMembersRequest{SegmentId: sid, UserIds: []string{"ann"}}); err != nil {
		t.Fatal(err)
	}
	rec := &calls{}
	c := newClient(t, dial(t, addr, key, rec))
	if err := c.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	eventually(t, func() error {
		if m, err := c.IsMember(ctx, sid, "ann"); err != nil || !m {
			return fmt.Errorf("ann not yet a member: %v, %v", m, err)
		}
		return nil
	})
	v1 := c.Version()

	e1.Stop()
	eventually(t, func() error {
		if c.Staleness() == 0 {
			return fmt.Errorf("feed of a stopped server still reported live")
		}
		return nil
	})
	if m, err := c.IsMember(ctx, sid, "ann"); err != nil || !m {
		t.Fatalf("while the server is down, IsMember(ann) = %v, %v (want the held answer)", m, err)
	}
	rec.mu.Lock()
	watches := len(rec.watches)
	rec.mu.Unlock()

	e2 := process(t, apptest.Options{DataDir: dir, Configure: fixed})
	ss2 := segmentsyncv1.NewSegmentSyncServiceClient(e2.Dial(key))
	if _, err := ss2.AddMembers(ctx, &segmentsyncv1.AddMembersRequest{SegmentId: sid, UserIds: []string{"bob"}}); err != nil {
		t.Fatal(err)
	}
	eventually(t, func() error {
		if m, err := c.IsMember(ctx, sid, "bob"); err != nil || !m {
			return fmt.Errorf("bob, added after the restart, not yet a member: %v, %v", m, err)
		}
		return nil
	})
	if c.Version() <= v1 || c.Staleness() != 0 {
		t.Fatalf("after resuming: version %d (was %d), staleness %v", c.Version(), v1, c.Staleness())
	}
	rec.mu.Lock()
	n := len(rec.watches)
	rec.mu.Unlock()
	last := rec.lastWatch()
	if n <= watches {
		t.Fatalf("no new WatchMembership call after the restart")
	}
	if got := last.GetAfterSequence()[e1.A.EnvironmentID]; got < v1 {
		t.Fatalf("resumed with after_sequence %v, want ≥ %d for %s (a resume, not a fresh snapshot)", last.GetAfterSequence(), v1, e1.A.EnvironmentID)
	}
}

// Close ends the background work; a closed client still answers from what
// it holds.
func TestClientClose(t *testing.T) {
	if _, err := client.New(nil, client.Options{}); err == nil {
		t.Fatal("New(nil) succeeded")
	}
	e := process(t, apptest.Options{})
	ctx := apptest.Context(t, time.Minute)
	c, err := client.New(e.Dial(e.A.Admin), client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	var stopped atomic.Bool
	go func() { _ = c.Close(); stopped.Store(true) }()
	eventually(t, func() error {
		if !stopped.Load() {
			return fmt.Errorf("Close has not returned")
		}
		return nil
	})
	if _, err := c.IsMember(ctx, "seg_missing", "ann"); status.Code(err) != codes.NotFound {
		t.Fatalf("closed client: %v", err)
	}
	if _, err := c.IsMember(ctx, "", "ann"); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("blank segment: %v", err)
	}
	if err := c.RefreshExperiences(ctx); err == nil {
		t.Fatal("RefreshExperiences after Close succeeded")
	}
}
