// Package client is targeting's in-process Go client: a replica of one
// environment's membership index, fed by segmentsync's WatchMembership (the
// protocol targeting replicas follow), answering membership and experience
// questions in-process, and falling back to the targeting RPCs until it has
// loaded. flagd's in-process provider and Unleash Edge are the models.
//
// The connection's key must be allowed WatchMembership (a service or admin
// key) and, for the fallback and the experience list, the targeting reads (an
// admin or member key): an admin key serves both, or pass a member-key
// connection as Options.Reads beside a service-key connection.
package client

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"

	segmentsyncv1 "github.com/seghub/seghub/gen/seghub/segmentsync/v1"
	targetingv1 "github.com/seghub/seghub/gen/seghub/targeting/v1"
	"github.com/seghub/seghub/pkg/apperr"
	"github.com/seghub/seghub/services/targeting/internal/audience"
	"github.com/seghub/seghub/services/targeting/internal/index"
)

// Options tune a Client; the zero value is usable.
type Options struct {
	// Reads is the connection for the fallback RPCs and the experience list
	// (default: the feed's connection).
	Reads grpc.ClientConnInterface
	// ExperienceRefresh is how often the experiences are re-read (default
	// 5 s; RefreshExperiences re-reads at once).
	ExperienceRefresh time.Duration
	// MinBackoff and MaxBackoff bound the wait between reconnections of the
	// feed (default 100 ms and 5 s).
	MinBackoff, MaxBackoff time.Duration
	// Logger receives feed interruptions and refresh failures (default: discard).
	Logger *slog.Logger
}

// Result is an experience's evaluation for one user: the service's
// EvaluateExperience answer.
type Result struct {
	// Eligible tells whether the user is in the audience and the experience is enabled.
	Eligible bool
	// DecidedBy is the deciding condition's path, "everyone" or "disabled".
	DecidedBy string
	// Reason says why, in words.
	Reason string
	// IndexVersion is the membership version the answer was computed from.
	IndexVersion int64
}

// Client is an in-process replica of one environment's targeting index.
// Its methods are safe for concurrent use.
type Client struct {
	rpc targetingv1.TargetingServiceClient
	ix  *index.Index
	log *slog.Logger
	// env is the replica's environment, set by the feed's first message.
	env atomic.Pointer[index.Env]
	// live is true while the feed's stream has caught up and not broken;
	// staleSince is when it last stopped being live (unix ns).
	live       atomic.Bool
	staleSince atomic.Int64
	loaded     chan struct{}
	loadOnce   sync.Once

	experiences atomic.Pointer[experienceSet]
	refresh     chan chan error

	cancel  context.CancelFunc
	stopped <-chan struct{}
	wg      sync.WaitGroup
}

// experienceSet is the environment's experiences, compiled.
type experienceSet struct {
	byID map[string]*compiledExperience
}

type compiledExperience struct {
	x       *targetingv1.Experience
	program *audience.Program
}

// New starts a client on conn: it begins loading at once and keeps
// following until Close.
func New(conn grpc.ClientConnInterface, o Options) (*Client, error) {
	if conn == nil {
		return nil, errors.New("targeting client: a connection is required")
	}
	reads := o.Reads
	if reads == nil {
		reads = conn
	}
	if o.ExperienceRefresh <= 0 {
		o.ExperienceRefresh = 5 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &Client{
		rpc:     targetingv1.NewTargetingServiceClient(reads),
		ix:      index.New(),
		log:     o.Logger,
		loaded:  make(chan struct{}),
		refresh: make(chan chan error),
		cancel:  cancel,
		stopped: ctx.Done(),
	}
	c.staleSince.Store(time.Now().UnixNano())
	c.wg.Add(2)
	go func() {
		defer c.wg.Done()
		_ = index.FollowWith(ctx, segmentsyncv1.NewSegmentSyncServiceClient(conn), c.ix, index.FollowOptions{
			Log: o.Logger, Applied: c.applied, Broken: c.broken, MinBackoff: o.MinBackoff, MaxBackoff: o.MaxBackoff,
		})
	}()
	go func() {
		defer c.wg.Done()
		c.refreshLoop(ctx, o.ExperienceRefresh)
	}()
	return c, nil
}

// Close stops following; answers after Close come from the last state held.
func (c *Client) Close() error {
	c.cancel()
	c.wg.Wait()
	c.broken(nil)
	return nil
}

func (c *Client) applied(m *segmentsyncv1.WatchMembershipResponse) {
	if c.env.Load() == nil {
		c.env.Store(c.ix.Env(m.GetEnvironmentId()))
	}
	if m.GetCaughtUp() != nil {
		c.live.Store(true)
		c.loadOnce.Do(func() { close(c.loaded) })
	}
}

func (c *Client) broken(error) {
	if c.live.Swap(false) {
		c.staleSince.Store(time.Now().UnixNano())
	}
}

// Ready reports whether the replica has loaded its environment (answers are
// then in-process, also while the feed reconnects).
func (c *Client) Ready() bool {
	select {
	case <-c.loaded:
		return true
	default:
		return false
	}
}

// WaitReady waits until the replica has loaded or ctx ends.
func (c *Client) WaitReady(ctx context.Context) error {
	select {
	case <-c.loaded:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("targeting client: index not loaded: %w", ctx.Err())
	}
}

// Version is the membership version (the environment's change sequence)
// the replica serves; 0 until it has loaded.
func (c *Client) Version() int64 {
	e := c.env.Load()
	if e == nil {
		return 0
	}
	var v int64
	e.Read(func(view index.View) {
		if view.CaughtUp() {
			v = view.Version()
		}
	})
	return v
}

// Staleness is how long the replica has not been following live changes:
// 0 while its feed is connected and caught up (changes arrive as they are
// written), otherwise the time since it last was (or since New, before it
// first loaded). Answers may miss changes made within that time.
func (c *Client) Staleness() time.Duration {
	if c.live.Load() {
		return 0
	}
	return time.Since(time.Unix(0, c.staleSince.Load()))
}

// view runs fn on the replica when it has loaded; false sends the caller to
// the RPC.
func (c *Client) view(fn func(v index.View)) bool {
	e := c.env.Load()
	if e == nil {
		return false
	}
	ok := false
	e.Read(func(v index.View) {
		if ok = v.CaughtUp(); ok {
			fn(v)
		}
	})
	return ok
}

func segmentNotFound(id string) error { return apperr.NotFound("segment %q not found", id) }

// maxIDLength is the service's bound on ids.
const maxIDLength = 256

// checkID refuses what the service refuses, with its message.
func checkID(field, v string) error {
	// Ids start with a visible ASCII byte nearly always: skip the scan.
	if len(v) > 0 && len(v) <= maxIDLength && v[0] > ' ' && v[0] < 0x7f {
		return nil
	}
	if strings.TrimSpace(v) == "" {
		return apperr.Invalid(field, "is required")
	}
	if len(v) > maxIDLength {
		return apperr.Invalid(field, fmt.Sprintf("must be at most %d bytes", maxIDLength))
	}
	return nil
}

// IsMember tells whether user is in segment, like CheckMembership: an
// unknown user is not a member; an unknown segment is NotFound. In-process
// once loaded, without allocating.
func (c *Client) IsMember(ctx context.Context, segmentID, userID string) (bool, error) {
	if err := checkID("segment_id", segmentID); err != nil {
		return false, err
	}
	if err := checkID("user_id", userID); err != nil {
		return false, err
	}
	var member, known bool
	if c.view(func(v index.View) { member, known = v.IsMember(userID, segmentID) }) {
		if !known {
			return false, segmentNotFound(segmentID)
		}
		return member, nil
	}
	r, err := c.rpc.CheckMembership(ctx, &targetingv1.CheckMembershipRequest{SegmentId: segmentID, UserId: userID})
	if err != nil {
		return false, err
	}
	return r.GetIsMember(), nil
}

// Segments lists the segments user is in, sorted, like ListUserSegments.
func (c *Client) Segments(ctx context.Context, userID string) ([]string, error) {
	if err := checkID("user_id", userID); err != nil {
		return nil, err
	}
	var out []string
	if c.view(func(v index.View) { out = v.UserSegments(userID) }) {
		return out, nil
	}
	r, err := c.rpc.ListUserSegments(ctx, &targetingv1.ListUserSegmentsRequest{UserId: userID})
	if err != nil {
		return nil, err
	}
	return r.GetSegmentIds(), nil
}

// Evaluate tells whether user may see an experience and which condition
// decided, like EvaluateExperience; an unknown experience is NotFound.
func (c *Client) Evaluate(ctx context.Context, experienceID, userID string) (Result, error) {
	if err := checkID("experience_id", experienceID); err != nil {
		return Result{}, err
	}
	if err := checkID("user_id", userID); err != nil {
		return Result{}, err
	}
	// An experience not in the last read may be newer than it: the RPC knows.
	if xs := c.experiences.Load(); xs != nil {
		if cx, ok := xs.byID[experienceID]; ok {
			var r Result
			if c.view(func(v index.View) { r = evaluate(cx, v, userID) }) {
				return r, nil
			}
		}
	}
	r, err := c.rpc.EvaluateExperience(ctx, &targetingv1.EvaluateExperienceRequest{ExperienceId: experienceID, UserId: userID})
	if err != nil {
		return Result{}, err
	}
	return Result{Eligible: r.GetEligible(), DecidedBy: r.GetDecidedBy(), Reason: r.GetReason(), IndexVersion: r.GetIndexVersion()}, nil
}

// evaluate answers as the service's EvaluateExperience does.
func evaluate(cx *compiledExperience, v index.View, userID string) Result {
	if !cx.x.GetEnabled() {
		return Result{Eligible: false, DecidedBy: "disabled", Reason: "the experience is disabled", IndexVersion: v.Version()}
	}
	r := cx.program.Eval(v, userID)
	return Result{Eligible: r.Eligible, DecidedBy: r.DecidedBy, Reason: r.Reason, IndexVersion: v.Version()}
}

// RefreshExperiences re-reads the environment's experiences now (after a
// change the caller made, say); it returns the read's error.
func (c *Client) RefreshExperiences(ctx context.Context) error {
	done := make(chan error, 1)
	select {
	case c.refresh <- done:
	case <-c.stopped:
		return errors.New("targeting client: closed")
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// refreshLoop reads the experiences every interval and on demand.
func (c *Client) refreshLoop(ctx context.Context, interval time.Duration) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		err := c.loadExperiences(ctx)
		if err != nil && ctx.Err() == nil {
			c.log.Warn("targeting client: reading experiences failed; keeping the last read", "error", err.Error())
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case done := <-c.refresh:
			done <- c.loadExperiences(ctx)
		}
	}
}

// maxExperiencePages bounds one read of the experience list (1000 a page).
const maxExperiencePages = 100

func (c *Client) loadExperiences(ctx context.Context) error {
	set := &experienceSet{byID: map[string]*compiledExperience{}}
	token := ""
	for page := 0; ; page++ {
		if page == maxExperiencePages {
			return fmt.Errorf("targeting client: more than %d experiences; refusing to hold them", maxExperiencePages*1000)
		}
		r, err := c.rpc.ListExperiences(ctx, &targetingv1.ListExperiencesRequest{PageSize: 1000, PageToken: token})
		if err != nil {
			return fmt.Errorf("targeting client: list experiences: %w", err)
		}
		for _, x := range r.GetExperiences() {
			// The service validated it on write; segments deleted since
			// simply never match, as in the service.
			p, err := audience.Compile(x.GetAudience(), func(string) bool { return true })
			if err != nil {
				return fmt.Errorf("targeting client: experience %s: %w", x.GetExperienceId(), err)
			}
			set.byID[x.GetExperienceId()] = &compiledExperience{x: x, program: p}
		}
		if token = r.GetNextPageToken(); token == "" {
			break
		}
	}
	c.experiences.Store(set)
	return nil
}
