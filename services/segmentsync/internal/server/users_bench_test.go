package server

import (
	"context"
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"
	"reflect"
	"sort"
	"testing"
	"time"

	"github.com/RoaringBitmap/roaring/v2"

	segmentsyncv1 "github.com/seghub/seghub/gen/seghub/segmentsync/v1"
	"github.com/seghub/seghub/pkg/auth"
	pkgstore "github.com/seghub/seghub/pkg/store"
	"github.com/seghub/seghub/services/segmentsync/internal/store"
)

var (
	benchUsers    = flag.Int("users", 1_000_000, "BenchmarkUserLookups: users in the environment")
	benchSegments = flag.Int("segments", 500, "BenchmarkUserLookups: segments in the environment")
)

// population is an environment of users u0000000… and random segments over
// them: one segment of every user, the others uniformly random subsets whose
// sizes are log-uniform between users/1000 and users/10 (on 1 M users and 500
// segments: about 12 M memberships, 12 a user).
type population struct {
	env      string
	users    int
	segments []string
	members  []*roaring.Bitmap // of user numbers, per segment
}

func userName(i int) string { return fmt.Sprintf("u%07d", i) }

func populate(ctx context.Context, st *store.Store, users, segments int, seed uint64) (*population, error) {
	rng := rand.New(rand.NewPCG(seed, seed))
	p := &population{env: "env_bench", users: users}
	all := make([]string, users)
	for i := range all {
		all[i] = userName(i)
	}
	lo, hi := max(1, users/1000), max(2, users/10)
	for s := 0; s < segments; s++ {
		sg, err := st.CreateSegment(ctx, p.env, fmt.Sprintf("segment %03d", s), "", store.Public, "")
		if err != nil {
			return nil, err
		}
		m := roaring.New()
		if s == 0 {
			m.AddRange(0, uint64(users))
		} else {
			size := int(math.Exp(math.Log(float64(lo)) + rng.Float64()*(math.Log(float64(hi))-math.Log(float64(lo)))))
			for int(m.GetCardinality()) < size {
				m.Add(uint32(rng.IntN(users)))
			}
		}
		ids := make([]string, 0, m.GetCardinality())
		for _, i := range m.ToArray() {
			ids = append(ids, all[i])
		}
		// Batches of AddMembers' size: the first segment creates the users.
		for i := 0; i < len(ids); i += MaxIDsPerCall / 2 {
			if _, err := st.ChangeMembers(ctx, p.env, sg.ID, ids[i:min(i+MaxIDsPerCall/2, len(ids))], nil); err != nil {
				return nil, err
			}
		}
		p.segments = append(p.segments, sg.ID)
		p.members = append(p.members, m)
	}
	return p, nil
}

// segmentsOf is the model's answer: the ids of the segments holding user i.
func (p *population) segmentsOf(i int) []string {
	var out []string
	for s, m := range p.members {
		if m.Contains(uint32(i)) {
			out = append(out, p.segments[s])
		}
	}
	sort.Strings(out)
	return out
}

func openStore(tb testing.TB) *store.Store {
	tb.Helper()
	db, err := pkgstore.Open(context.Background(), filepath.Join(tb.TempDir(), "seghub.db"))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { db.Close() })
	st, err := store.Open(context.Background(), db, nil)
	if err != nil {
		tb.Fatal(err)
	}
	return st
}

// The benchmark's population at a small scale: GetUser answers every user's
// segments as the model has them, and DeleteUser removes exactly those.
func TestUserLookupsMatchPopulation(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := openStore(t)
	p, err := populate(ctx, st, 3000, 40, 1)
	if err != nil {
		t.Fatal(err)
	}
	srv := New(st, nil, nil, nil, StreamLimits{})
	actx := auth.WithPrincipal(ctx, auth.Principal{EnvironmentID: p.env})
	for i := 0; i < p.users; i++ {
		r, err := srv.GetUser(actx, &segmentsyncv1.GetUserRequest{UserId: userName(i)})
		if err != nil {
			t.Fatal(err)
		}
		if got, want := r.GetSegmentIds(), p.segmentsOf(i); !reflect.DeepEqual(got, want) {
			t.Fatalf("GetUser(%s) segments = %v, want %v", userName(i), got, want)
		}
	}
	for i := 0; i < p.users; i += 7 {
		r, err := srv.DeleteUser(actx, &segmentsyncv1.DeleteUserRequest{UserId: userName(i)})
		if err != nil {
			t.Fatal(err)
		}
		if got, want := r.GetSegmentIds(), p.segmentsOf(i); !reflect.DeepEqual(got, want) {
			t.Fatalf("DeleteUser(%s) removed from %v, want %v", userName(i), got, want)
		}
	}
}

// BenchmarkUserLookups measures the GetUser and DeleteUser handlers (server
// time, no network) on SQLite in an environment of -users users and
// -segments random segments (see population). Not part of make test:
//
//	go test -run '^$' -bench UserLookups -benchtime 2000x ./internal/server/
func BenchmarkUserLookups(b *testing.B) {
	ctx := context.Background()
	st := openStore(b)
	t0 := time.Now()
	p, err := populate(ctx, st, *benchUsers, *benchSegments, 1)
	if err != nil {
		b.Fatal(err)
	}
	var memberships uint64
	for _, m := range p.members {
		memberships += m.GetCardinality()
	}
	b.Logf("built %d users, %d segments, %d memberships in %v", p.users, len(p.segments), memberships, time.Since(t0).Round(time.Second))
	srv := New(st, nil, nil, nil, StreamLimits{})
	actx := auth.WithPrincipal(ctx, auth.Principal{EnvironmentID: p.env})
	rng := rand.New(rand.NewPCG(2, 2))
	b.Run("GetUser", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			if _, err := srv.GetUser(actx, &segmentsyncv1.GetUserRequest{UserId: userName(rng.IntN(p.users))}); err != nil {
				b.Fatal(err)
			}
		}
	})
	deleted := map[int]bool{}
	b.Run("DeleteUser", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			u := rng.IntN(p.users)
			for deleted[u] {
				u = rng.IntN(p.users)
			}
			deleted[u] = true
			if _, err := srv.DeleteUser(actx, &segmentsyncv1.DeleteUserRequest{UserId: userName(u)}); err != nil {
				b.Fatal(err)
			}
		}
	})
}
