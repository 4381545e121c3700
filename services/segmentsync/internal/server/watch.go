package server

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/grpc/codes"

	segmentsyncv1 "github.com/seghub/seghub/gen/seghub/segmentsync/v1"
	"github.com/seghub/seghub/pkg/apperr"
	"github.com/seghub/seghub/pkg/auth"
	"github.com/seghub/seghub/pkg/membership"
	"github.com/seghub/seghub/services/segmentsync/internal/store"
)

// SubjectPrefix is the NATS subject space of membership wake-ups; the
// message is only a nudge, the change log is the truth.
const SubjectPrefix = "seghub.membership."

// Watcher wakes WatchMembership streams when the change log grows: through
// NATS when there is a bus (so writes of any replica wake every replica's
// watchers), in-process otherwise, with polling as the safety net.
type Watcher struct {
	store *store.Store
	nc    *nats.Conn
	poll  time.Duration

	mu   sync.Mutex
	subs map[chan struct{}]struct{}
}

// NewWatcher returns a Watcher; nc may be nil.
func NewWatcher(st *store.Store, nc *nats.Conn) *Watcher {
	return &Watcher{store: st, nc: nc, poll: time.Second, subs: map[chan struct{}]struct{}{}}
}

// Notify is the store's after-commit hook.
func (w *Watcher) Notify(env string, seq int64) {
	if w.nc != nil {
		if err := w.nc.Publish(SubjectPrefix+env, []byte(nil)); err == nil {
			return
		}
	}
	w.wake()
}

func (w *Watcher) wake() {
	w.mu.Lock()
	for c := range w.subs {
		select {
		case c <- struct{}{}:
		default:
		}
	}
	w.mu.Unlock()
}

// Run relays NATS wake-ups to local streams until ctx ends.
func (w *Watcher) Run(ctx context.Context) error {
	if w.nc == nil {
		<-ctx.Done()
		return nil
	}
	sub, err := w.nc.Subscribe(SubjectPrefix+">", func(*nats.Msg) { w.wake() })
	if err != nil {
		return err
	}
	<-ctx.Done()
	_ = sub.Unsubscribe()
	return nil
}

func (w *Watcher) subscribe() (chan struct{}, func()) {
	c := make(chan struct{}, 1)
	w.mu.Lock()
	w.subs[c] = struct{}{}
	w.mu.Unlock()
	return c, func() {
		w.mu.Lock()
		delete(w.subs, c)
		w.mu.Unlock()
	}
}

const (
	userBatchSize = 1000
	// userChunkSize and chunkPropBytes bound a UserChunk: ids are ~20 bytes
	// a user, properties are bounded by their stored size.
	userChunkSize  = 16384
	chunkPropBytes = 1 << 20
	changeBatch    = 500
	envRefreshTick = 5 * time.Second
)

// feed is one WatchMembership stream's state.
type feed struct {
	s            *Server
	stream       segmentsyncv1.SegmentSyncService_WatchMembershipServer
	filter       map[string]bool
	includeUsers bool
	packedUsers  bool
	cursor       map[string]int64
	caughtUp     map[string]bool
}

func (f *feed) watches(segmentID string) bool {
	return len(f.filter) == 0 || f.filter[segmentID]
}

func (f *feed) send(env string, seq int64, m *segmentsyncv1.WatchMembershipResponse) error {
	m.EnvironmentId, m.Sequence = env, seq
	return f.stream.Send(m)
}

// WatchMembership implements SegmentSyncService.
func (s *Server) WatchMembership(req *segmentsyncv1.WatchMembershipRequest, stream segmentsyncv1.SegmentSyncService_WatchMembershipServer) error {
	ctx := stream.Context()
	p, _ := auth.FromContext(ctx)
	if req.GetAllEnvironments() && !p.Internal {
		return apperr.PermissionDenied("all_environments is reserved for seghub's own components (the internal key)")
	}
	f := &feed{s: s, stream: stream, filter: map[string]bool{}, includeUsers: req.GetIncludeUsers(), packedUsers: req.GetPackedUsers(), cursor: map[string]int64{}, caughtUp: map[string]bool{}}
	for _, id := range req.GetSegmentIds() {
		if strings.TrimSpace(id) == "" {
			return apperr.Invalid("segment_ids", "must not hold blank ids")
		}
		f.filter[id] = true
	}
	for env, seq := range req.GetAfterSequence() {
		if seq < 0 {
			return apperr.Invalid("after_sequence", "sequences are not negative")
		}
		f.cursor[env] = seq
	}
	if !req.GetAllEnvironments() && len(f.filter) > 0 {
		for id := range f.filter {
			if _, err := s.store.GetSegment(ctx, p.EnvironmentID, id, false); err != nil {
				return err
			}
		}
	}
	wake, unsubscribe := s.watcher.subscribe()
	defer unsubscribe()
	envs := []string{p.EnvironmentID}
	var lastEnvRefresh time.Time
	poll := time.NewTicker(s.watcher.poll)
	defer poll.Stop()
	for {
		if req.GetAllEnvironments() && time.Since(lastEnvRefresh) > envRefreshTick {
			var err error
			if envs, err = s.store.Environments(ctx); err != nil {
				return err
			}
			lastEnvRefresh = time.Now()
		}
		for _, env := range envs {
			if err := f.advance(ctx, env); err != nil {
				return err
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-wake:
		case <-poll.C:
		}
	}
}

// advance brings the stream up to date for env: a snapshot when needed, then
// the log's new entries, then CaughtUp the first time.
func (f *feed) advance(ctx context.Context, env string) error {
	st := f.s.store
	cur, known := f.cursor[env]
	if !known || cur == 0 {
		if err := f.snapshot(ctx, env); err != nil {
			return err
		}
	} else if !f.caughtUp[env] {
		head, err := st.Head(ctx, env)
		if err != nil {
			return err
		}
		oldest, err := st.OldestSeq(ctx, env)
		if err != nil {
			return err
		}
		// Ahead of the store, or behind what the log still holds: resync.
		if cur > head || (cur < head && (oldest == 0 || oldest > cur+1)) {
			if err := f.snapshot(ctx, env); err != nil {
				return err
			}
		}
	}
	for {
		changes, err := st.Changes(ctx, env, f.cursor[env], changeBatch)
		if err != nil {
			return err
		}
		users, err := f.usersOf(ctx, env, changes)
		if err != nil {
			return err
		}
		for _, c := range changes {
			if err := f.apply(ctx, c, users); err != nil {
				return err
			}
			f.cursor[env] = c.Seq
		}
		if len(changes) < changeBatch {
			break
		}
	}
	if !f.caughtUp[env] {
		f.caughtUp[env] = true
		return f.send(env, f.cursor[env], &segmentsyncv1.WatchMembershipResponse{Event: &segmentsyncv1.WatchMembershipResponse_CaughtUp{CaughtUp: &segmentsyncv1.CaughtUp{}}})
	}
	return nil
}

// snapshot sends env's current state labelled with the head read first:
// state read later is newer, and replaying the log from that head on top of
// it converges to the same state, so no consistent read is needed.
func (f *feed) snapshot(ctx context.Context, env string) error {
	st := f.s.store
	head, err := st.Head(ctx, env)
	if err != nil {
		return err
	}
	f.caughtUp[env] = false
	if err := f.send(env, head, &segmentsyncv1.WatchMembershipResponse{Event: &segmentsyncv1.WatchMembershipResponse_SnapshotStart{SnapshotStart: &segmentsyncv1.SnapshotStart{}}}); err != nil {
		return err
	}
	if f.includeUsers && f.packedUsers {
		var after uint32
		for {
			users, err := st.LeanUsersPage(ctx, env, after, userChunkSize, chunkPropBytes)
			if err != nil {
				return err
			}
			if len(users) == 0 {
				break
			}
			if err := f.send(env, head, userChunk(users)); err != nil {
				return err
			}
			after = users[len(users)-1].Dense
		}
	} else if f.includeUsers {
		var after uint32
		for {
			users, err := st.UsersPage(ctx, env, after, userBatchSize)
			if err != nil {
				return err
			}
			if len(users) == 0 {
				break
			}
			batch := &segmentsyncv1.UserBatch{Users: make([]*segmentsyncv1.User, len(users))}
			for i, u := range users {
				batch.Users[i] = UserToPB(u)
			}
			if err := f.send(env, head, &segmentsyncv1.WatchMembershipResponse{Event: &segmentsyncv1.WatchMembershipResponse_Users{Users: batch}}); err != nil {
				return err
			}
			after = users[len(users)-1].Dense
		}
	}
	segs, err := st.Segments(ctx, env, true)
	if err != nil {
		return err
	}
	for _, sg := range segs {
		if !f.watches(sg.ID) {
			continue
		}
		if err := f.send(env, head, segmentState(sg)); err != nil {
			return err
		}
	}
	f.cursor[env] = head
	return nil
}

// userChunk packs users (in dense order) into one UserChunk message.
func userChunk(users []store.LeanUser) *segmentsyncv1.WatchMembershipResponse {
	c := &segmentsyncv1.UserChunk{DenseIds: make([]uint32, len(users)), UserIds: make([]string, len(users))}
	for i, u := range users {
		c.DenseIds[i], c.UserIds[i] = u.Dense, u.ID
		if len(u.Props) > 0 {
			pb := &segmentsyncv1.UserProperties{DenseId: u.Dense, Properties: make(map[string]*segmentsyncv1.PropertyValue, len(u.Props))}
			for k, v := range u.Props {
				pb.Properties[k] = PropToPB(v)
			}
			c.Properties = append(c.Properties, pb)
		}
	}
	return &segmentsyncv1.WatchMembershipResponse{Event: &segmentsyncv1.WatchMembershipResponse_UserChunk{UserChunk: c}}
}

// leanChunks splits users (in dense order) into runs that fit a UserChunk.
func leanChunks(users []*store.User, fn func([]store.LeanUser) error) error {
	chunk := make([]store.LeanUser, 0, min(len(users), userChunkSize))
	bytes := 0
	for _, u := range users {
		lu := store.LeanUser{Dense: u.Dense, ID: u.ID}
		if len(u.Props) > 0 {
			lu.Props = u.Props
			for k, v := range u.Props {
				bytes += len(k) + len(v.S) + 16
			}
		}
		chunk = append(chunk, lu)
		if len(chunk) == userChunkSize || bytes >= chunkPropBytes {
			if err := fn(chunk); err != nil {
				return err
			}
			chunk, bytes = chunk[:0], 0
		}
	}
	if len(chunk) == 0 {
		return nil
	}
	return fn(chunk)
}

func segmentState(sg *store.Segment) *segmentsyncv1.WatchMembershipResponse {
	return &segmentsyncv1.WatchMembershipResponse{Event: &segmentsyncv1.WatchMembershipResponse_Segment{Segment: &segmentsyncv1.SegmentState{Segment: SegmentToPB(sg), Members: membership.Encode(sg.Members)}}}
}

// usersOf reads the users of every users entry of changes at once: a feed
// behind by many small user changes (one per AddMembers of new ids) makes
// one read per 500 users instead of one per change.
func (f *feed) usersOf(ctx context.Context, env string, changes []store.Change) (map[uint32]*store.User, error) {
	if !f.includeUsers {
		return nil, nil
	}
	var dense []uint32
	for _, c := range changes {
		if c.Kind == store.KindUsers {
			dense = append(dense, c.Added.ToArray()...)
		}
	}
	if len(dense) == 0 {
		return nil, nil
	}
	users, err := f.s.store.UsersByDense(ctx, env, dense)
	if err != nil {
		return nil, err
	}
	out := make(map[uint32]*store.User, len(users))
	for _, u := range users {
		out[u.Dense] = u
	}
	return out, nil
}

func (f *feed) apply(ctx context.Context, c store.Change, byDense map[uint32]*store.User) error {
	st := f.s.store
	switch c.Kind {
	case store.KindUsers:
		if !f.includeUsers {
			return nil
		}
		// In dense order, users deleted since left out, as UsersByDense does.
		var users []*store.User
		for _, d := range c.Added.ToArray() {
			if u, ok := byDense[d]; ok {
				users = append(users, u)
			}
		}
		if f.packedUsers {
			// One message even when every user was deleted since, as below.
			if len(users) == 0 {
				return f.send(c.Env, c.Seq, userChunk(nil))
			}
			return leanChunks(users, func(chunk []store.LeanUser) error { return f.send(c.Env, c.Seq, userChunk(chunk)) })
		}
		for i := 0; i == 0 || i < len(users); i += userBatchSize {
			chunk := users[i:min(i+userBatchSize, len(users))]
			batch := &segmentsyncv1.UserBatch{Users: make([]*segmentsyncv1.User, len(chunk))}
			for j, u := range chunk {
				batch.Users[j] = UserToPB(u)
			}
			if err := f.send(c.Env, c.Seq, &segmentsyncv1.WatchMembershipResponse{Event: &segmentsyncv1.WatchMembershipResponse_Users{Users: batch}}); err != nil {
				return err
			}
		}
	case store.KindUsersDeleted:
		var userIDs []string
		_ = json.Unmarshal([]byte(c.Detail), &userIDs)
		return f.send(c.Env, c.Seq, &segmentsyncv1.WatchMembershipResponse{Event: &segmentsyncv1.WatchMembershipResponse_UsersDeleted{UsersDeleted: &segmentsyncv1.UsersDeleted{DenseIds: c.Removed.ToArray(), UserIds: userIDs}}})
	case store.KindSegment:
		if !f.watches(c.SegmentID) {
			return nil
		}
		sg, err := st.GetSegment(ctx, c.Env, c.SegmentID, true)
		if apperr.Code(err) == codes.NotFound { // deleted later; its deletion follows in the log
			return nil
		}
		if err != nil {
			return err
		}
		return f.send(c.Env, c.Seq, segmentState(sg))
	case store.KindMembership:
		if !f.watches(c.SegmentID) {
			return nil
		}
		return f.send(c.Env, c.Seq, &segmentsyncv1.WatchMembershipResponse{Event: &segmentsyncv1.WatchMembershipResponse_Change{Change: &segmentsyncv1.MembershipChange{
			SegmentId: c.SegmentID, Version: c.Version, Added: membership.Encode(c.Added), Removed: membership.Encode(c.Removed)}}})
	case store.KindSegmentDeleted:
		if !f.watches(c.SegmentID) {
			return nil
		}
		return f.send(c.Env, c.Seq, &segmentsyncv1.WatchMembershipResponse{Event: &segmentsyncv1.WatchMembershipResponse_SegmentDeleted{SegmentDeleted: &segmentsyncv1.SegmentDeleted{SegmentId: c.SegmentID}}})
	}
	return nil
}
