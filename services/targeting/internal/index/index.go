// Package index is targeting's in-memory membership index: per environment,
// a user dictionary (user id → dense id, with properties) and one roaring
// bitmap per segment, kept equal to segmentsync by applying its
// WatchMembership feed in order.
package index

import (
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/RoaringBitmap/roaring/v2"

	segmentsyncv1 "github.com/seghub/seghub/gen/seghub/segmentsync/v1"
	"github.com/seghub/seghub/pkg/membership"
)

// Segment is one segment's index entry.
type Segment struct {
	ID      string
	Name    string
	Public  bool
	Version int64
	Members *roaring.Bitmap
}

// Env is one environment's index. Readers take the read lock only for the
// few map and bitmap lookups of one answer.
type Env struct {
	mu       sync.RWMutex
	version  int64
	caughtUp bool
	users    *dict
	props    map[uint32]map[string]*segmentsyncv1.PropertyValue
	segments map[string]*Segment
	// applied is when the feed last changed this environment (staleness).
	applied time.Time
	// staging is a snapshot being received, swapped in whole at CaughtUp so
	// readers never see half of one (it costs a second copy meanwhile).
	staging *Env
}

func newEnv() *Env {
	return &Env{users: newDict(), props: map[uint32]map[string]*segmentsyncv1.PropertyValue{}, segments: map[string]*Segment{}}
}

// Index holds every environment this replica serves.
type Index struct {
	mu   sync.RWMutex
	envs map[string]*Env
	feed feedState
}

// New returns an empty index.
func New() *Index { return &Index{envs: map[string]*Env{}} }

// Env returns env's index, or nil when nothing is known of it yet.
func (ix *Index) Env(env string) *Env {
	ix.mu.RLock()
	e := ix.envs[env]
	ix.mu.RUnlock()
	return e
}

func (ix *Index) envFor(env string) *Env {
	if e := ix.Env(env); e != nil {
		return e
	}
	ix.mu.Lock()
	defer ix.mu.Unlock()
	e, ok := ix.envs[env]
	if !ok {
		e = newEnv()
		ix.envs[env] = e
	}
	return e
}

// Cursors returns the sequence reached per environment, for resuming the feed.
func (ix *Index) Cursors() map[string]int64 {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	out := make(map[string]int64, len(ix.envs))
	for id, e := range ix.envs {
		e.mu.RLock()
		if e.version > 0 {
			out[id] = e.version
		}
		e.mu.RUnlock()
	}
	return out
}

// Versions returns each environment's version and whether it caught up.
func (ix *Index) Versions() map[string]Version {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	out := make(map[string]Version, len(ix.envs))
	for id, e := range ix.envs {
		e.mu.RLock()
		out[id] = Version{Sequence: e.version, CaughtUp: e.caughtUp}
		e.mu.RUnlock()
	}
	return out
}

// Version is what a replica serves for one environment.
type Version struct {
	Sequence int64
	CaughtUp bool
}

// Apply applies one feed message.
func (ix *Index) Apply(m *segmentsyncv1.WatchMembershipResponse) error {
	e := ix.envFor(m.GetEnvironmentId())
	e.mu.Lock()
	defer e.mu.Unlock()
	switch m.GetEvent().(type) {
	case *segmentsyncv1.WatchMembershipResponse_SnapshotStart:
		// Until the snapshot is complete, readers keep the last complete
		// state (a fresh replica has none and stays not caught up).
		e.staging = newEnv()
	case *segmentsyncv1.WatchMembershipResponse_CaughtUp:
		if st := e.staging; st != nil {
			e.users, e.props, e.segments, e.staging = st.users, st.props, st.segments, nil
		}
		e.caughtUp = true
	}
	target := e
	if e.staging != nil {
		target = e.staging
	}
	if err := target.apply(m); err != nil {
		return err
	}
	target.version = m.GetSequence()
	e.applied = time.Now()
	return nil
}

// AppliedAt returns when each environment last applied a feed message
// (nothing before its first snapshot completes).
func (ix *Index) AppliedAt() map[string]time.Time {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	out := make(map[string]time.Time, len(ix.envs))
	for id, e := range ix.envs {
		e.mu.RLock()
		if e.caughtUp {
			out[id] = e.applied
		}
		e.mu.RUnlock()
	}
	return out
}

// AbandonSnapshots drops snapshots left incomplete by a broken feed: the
// resumed feed continues from what readers see, not from the half received.
func (ix *Index) AbandonSnapshots() {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	for _, e := range ix.envs {
		e.mu.Lock()
		e.staging = nil
		e.mu.Unlock()
	}
}

// apply applies a feed message's data to e.
func (e *Env) apply(m *segmentsyncv1.WatchMembershipResponse) error {
	switch ev := m.GetEvent().(type) {
	case *segmentsyncv1.WatchMembershipResponse_Users:
		for _, u := range ev.Users.GetUsers() {
			d := u.GetDenseId()
			if err := e.users.set(u.GetUserId(), d); err != nil {
				return err
			}
			if len(u.GetProperties()) > 0 {
				e.props[d] = u.GetProperties()
			} else {
				delete(e.props, d)
			}
		}
	case *segmentsyncv1.WatchMembershipResponse_UserChunk:
		c := ev.UserChunk
		dense, ids, props := c.GetDenseIds(), c.GetUserIds(), c.GetProperties()
		if len(ids) != len(dense) {
			return fmt.Errorf("user chunk: %d user ids for %d dense ids", len(ids), len(dense))
		}
		// Properties come in dense order, for users of the chunk: checked
		// before anything changes, so a bad chunk leaves the index as it was.
		k := 0
		for _, d := range dense {
			if k < len(props) && props[k].GetDenseId() == d {
				k++
			}
		}
		if k != len(props) {
			return fmt.Errorf("user chunk: properties of %d users are not in dense order or not of the chunk's users", len(props)-k)
		}
		k = 0
		for i, d := range dense {
			if err := e.users.set(ids[i], d); err != nil {
				return err
			}
			if k < len(props) && props[k].GetDenseId() == d {
				if p := props[k].GetProperties(); len(p) > 0 {
					e.props[d] = p
				} else {
					delete(e.props, d)
				}
				k++
			} else {
				delete(e.props, d)
			}
		}
	case *segmentsyncv1.WatchMembershipResponse_UsersDeleted:
		for _, d := range ev.UsersDeleted.GetDenseIds() {
			e.users.remove(d)
			delete(e.props, d)
			for _, s := range e.segments {
				s.Members.Remove(d)
			}
		}
	case *segmentsyncv1.WatchMembershipResponse_Segment:
		members, err := membership.Decode(ev.Segment.GetMembers())
		if err != nil {
			return err
		}
		sg := ev.Segment.GetSegment()
		e.segments[sg.GetSegmentId()] = &Segment{ID: sg.GetSegmentId(), Name: sg.GetName(), Public: sg.GetVisibility() != segmentsyncv1.Visibility_VISIBILITY_PRIVATE, Version: sg.GetVersion(), Members: members}
	case *segmentsyncv1.WatchMembershipResponse_Change:
		s := e.segments[ev.Change.GetSegmentId()]
		if s == nil {
			// A change for a segment this replica has not seen (created
			// before a filtered snapshot): it will arrive as SegmentState.
			break
		}
		added, err := membership.Decode(ev.Change.GetAdded())
		if err != nil {
			return err
		}
		removed, err := membership.Decode(ev.Change.GetRemoved())
		if err != nil {
			return err
		}
		s.Members.Or(added)
		s.Members.AndNot(removed)
		s.Version = ev.Change.GetVersion()
	case *segmentsyncv1.WatchMembershipResponse_SegmentDeleted:
		delete(e.segments, ev.SegmentDeleted.GetSegmentId())
	}
	return nil
}

// View is a read of one environment under its read lock; it must not be
// kept after the callback returns.
type View struct{ e *Env }

// Read runs fn with a consistent view of env (an empty view when the
// environment is unknown).
func (ix *Index) Read(env string, fn func(v View)) {
	e := ix.Env(env)
	if e == nil {
		fn(View{e: emptyEnv})
		return
	}
	e.Read(fn)
}

// Read runs fn with a consistent view of e. Holders of an *Env (the
// in-process client) skip the environment lookup of Index.Read.
func (e *Env) Read(fn func(v View)) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	fn(View{e: e})
}

var emptyEnv = newEnv()

// Version is the environment sequence this view reflects.
func (v View) Version() int64 { return v.e.version }

// CaughtUp reports whether the replica has applied the feed's backlog.
func (v View) CaughtUp() bool { return v.e.caughtUp }

// Dense returns the dense id of a user.
func (v View) Dense(userID string) (uint32, bool) {
	d, ok := v.e.users.dense(userID)
	return d, ok
}

// Segment returns a segment's entry.
func (v View) Segment(id string) (*Segment, bool) {
	s, ok := v.e.segments[id]
	return s, ok
}

// IsMember answers a membership check; known is false for an unknown segment.
func (v View) IsMember(userID, segmentID string) (member, known bool) {
	s, ok := v.e.segments[segmentID]
	if !ok {
		return false, false
	}
	d, ok := v.e.users.dense(userID)
	return ok && s.Members.Contains(d), true
}

// MembersOf sets bit i of bits (byte i/8, bit i%8 from the least
// significant) when ids[i] is a member of s, and returns how many are; bits
// holds at least ceil(len(ids)/8) bytes, zeroed. It does not allocate.
func (v View) MembersOf(s *Segment, ids [][]byte, bits []byte) int {
	n := 0
	v.e.users.denseMany(ids, func(i int, d uint32) {
		if s.Members.Contains(d) {
			bits[i>>3] |= 1 << (i & 7)
			n++
		}
	})
	return n
}

// Property returns a user's property.
func (v View) Property(dense uint32, name string) (*segmentsyncv1.PropertyValue, bool) {
	p, ok := v.e.props[dense][name]
	return p, ok
}

// UserSegments lists the segments a user is in, sorted.
func (v View) UserSegments(userID string) []string {
	d, ok := v.e.users.dense(userID)
	if !ok {
		return nil
	}
	var out []string
	for id, s := range v.e.segments {
		if s.Members.Contains(d) {
			out = append(out, id)
		}
	}
	sort.Strings(out)
	return out
}

// Segments lists every segment, sorted by name.
func (v View) Segments() []*Segment {
	out := make([]*Segment, 0, len(v.e.segments))
	for _, s := range v.e.segments {
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool {
		return out[i].Name < out[j].Name || (out[i].Name == out[j].Name && out[i].ID < out[j].ID)
	})
	return out
}

// Members returns a copy of a segment's members as user ids (tests, debugging).
func (v View) Members(segmentID string) []string {
	s, ok := v.e.segments[segmentID]
	if !ok {
		return nil
	}
	out := make([]string, 0, s.Members.GetCardinality())
	it := s.Members.Iterator()
	for it.HasNext() {
		name, _ := v.e.users.name(it.Next())
		out = append(out, name)
	}
	sort.Strings(out)
	return out
}

// MemoryBytes estimates the bitmaps' in-memory size.
func (v View) MemoryBytes() uint64 {
	var n uint64
	for _, s := range v.e.segments {
		n += s.Members.GetSizeInBytes()
	}
	return n
}
