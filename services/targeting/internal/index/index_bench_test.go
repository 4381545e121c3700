package index

import (
	"math/rand/v2"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/RoaringBitmap/roaring/v2"

	segmentsyncv1 "github.com/seghub/seghub/gen/seghub/segmentsync/v1"
	"github.com/seghub/seghub/pkg/membership"
)

func heap() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// BenchmarkIndexMemory loads 10 segments × 1 M members (each a random half
// of 2 M users) and reports the heap held by the segment bitmaps and by the
// user dictionary separately.
func BenchmarkIndexMemory(b *testing.B) {
	const users, segments, members = 2_000_000, 10, 1_000_000
	for b.Loop() {
		ix := New()
		before := heap()
		batch := &segmentsyncv1.UserBatch{}
		for d := uint32(1); d <= users; d++ {
			batch.Users = append(batch.Users, &segmentsyncv1.User{UserId: "user:" + strconv.Itoa(int(d)), DenseId: d})
			if len(batch.Users) == 10000 {
				_ = ix.Apply(&segmentsyncv1.WatchMembershipResponse{EnvironmentId: "env", Sequence: 1, Event: &segmentsyncv1.WatchMembershipResponse_Users{Users: batch}})
				batch = &segmentsyncv1.UserBatch{}
			}
		}
		batch = nil
		withUsers := heap()
		r := rand.New(rand.NewPCG(1, 2))
		for s := 0; s < segments; s++ {
			bm := roaring.New()
			for bm.GetCardinality() < members {
				bm.Add(uint32(r.IntN(users)) + 1)
			}
			_ = ix.Apply(&segmentsyncv1.WatchMembershipResponse{EnvironmentId: "env", Sequence: 2, Event: &segmentsyncv1.WatchMembershipResponse_Segment{Segment: &segmentsyncv1.SegmentState{
				Segment: &segmentsyncv1.Segment{SegmentId: "seg" + strconv.Itoa(s), Name: strconv.Itoa(s), Visibility: segmentsyncv1.Visibility_VISIBILITY_PUBLIC}, Members: membership.Encode(bm)}}})
		}
		done := heap()
		var bitmapBytes uint64
		ix.Read("env", func(v View) { bitmapBytes = v.MemoryBytes() })
		b.ReportMetric(float64(done-withUsers)/(1<<20), "MB-segments-heap")
		b.ReportMetric(float64(bitmapBytes)/(1<<20), "MB-segments-bitmaps")
		b.ReportMetric(float64(withUsers-before)/(1<<20), "MB-user-dictionary-2M")
		b.ReportMetric(float64(withUsers-before)/users, "B-user-dictionary/user")
		runtime.KeepAlive(ix)
	}
}

// BenchmarkCheck is one in-process membership decision (no gRPC).
func BenchmarkCheck(b *testing.B) {
	ix := New()
	batch := &segmentsyncv1.UserBatch{}
	bm := roaring.New()
	for d := uint32(1); d <= 100000; d++ {
		batch.Users = append(batch.Users, &segmentsyncv1.User{UserId: "user:" + strconv.Itoa(int(d)), DenseId: d})
		if d%2 == 0 {
			bm.Add(d)
		}
	}
	_ = ix.Apply(&segmentsyncv1.WatchMembershipResponse{EnvironmentId: "env", Sequence: 1, Event: &segmentsyncv1.WatchMembershipResponse_Users{Users: batch}})
	_ = ix.Apply(&segmentsyncv1.WatchMembershipResponse{EnvironmentId: "env", Sequence: 2, Event: &segmentsyncv1.WatchMembershipResponse_Segment{Segment: &segmentsyncv1.SegmentState{Segment: &segmentsyncv1.Segment{SegmentId: "s"}, Members: membership.Encode(bm)}}})
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			i++
			ix.Read("env", func(v View) { v.IsMember("user:"+strconv.Itoa(i%100000), "s") })
		}
	})
}

// processCPU is the process's user+system CPU time: on a shared machine wall
// time per op also counts other processes' turns.
func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkMembersOf is one decision of a packed batch (1 000 random users of
// 200 000 against a segment of 100 000 of them), next to the same decisions
// one IsMember at a time.
func BenchmarkMembersOf(b *testing.B) {
	const users, batch = 200_000, 1000
	ix := New()
	ub := &segmentsyncv1.UserBatch{}
	bm := roaring.New()
	for d := uint32(1); d <= users/2; d++ {
		ub.Users = append(ub.Users, &segmentsyncv1.User{UserId: "user:" + strconv.Itoa(int(d)), DenseId: d})
		bm.Add(d)
	}
	_ = ix.Apply(&segmentsyncv1.WatchMembershipResponse{EnvironmentId: "env", Sequence: 1, Event: &segmentsyncv1.WatchMembershipResponse_Users{Users: ub}})
	_ = ix.Apply(&segmentsyncv1.WatchMembershipResponse{EnvironmentId: "env", Sequence: 2, Event: &segmentsyncv1.WatchMembershipResponse_Segment{Segment: &segmentsyncv1.SegmentState{Segment: &segmentsyncv1.Segment{SegmentId: "s"}, Members: membership.Encode(bm)}}})
	r := rand.New(rand.NewPCG(5, 6))
	batches := make([][][]byte, 64)
	for i := range batches {
		for range batch {
			batches[i] = append(batches[i], []byte("user:"+strconv.Itoa(r.IntN(users)+1)))
		}
	}
	bits := make([]byte, batch/8)
	b.Run("MembersOf", func(b *testing.B) {
		i := 0
		c0 := processCPU()
		for b.Loop() {
			clear(bits)
			ix.Read("env", func(v View) {
				s, _ := v.Segment("s")
				v.MembersOf(s, batches[i%len(batches)], bits)
			})
			i++
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*batch), "ns/decision")
		b.ReportMetric(float64((processCPU()-c0).Nanoseconds())/float64(b.N*batch), "cpu-ns/decision")
	})
	b.Run("one-at-a-time", func(b *testing.B) {
		// MembersOf's work without the look-ahead: each lookup waits for its
		// own misses.
		i := 0
		c0 := processCPU()
		for b.Loop() {
			ix.Read("env", func(v View) {
				s, _ := v.Segment("s")
				t := v.e.users
				for j, id := range batches[i%len(batches)] {
					if d, ok := t.dense(string(id)); ok && s.Members.Contains(d) {
						bits[j>>3] |= 1 << (j & 7)
					}
				}
			})
			i++
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*batch), "ns/decision")
		b.ReportMetric(float64((processCPU()-c0).Nanoseconds())/float64(b.N*batch), "cpu-ns/decision")
	})
	b.Run("IsMember", func(b *testing.B) {
		i := 0
		c0 := processCPU()
		for b.Loop() {
			ix.Read("env", func(v View) {
				for j, id := range batches[i%len(batches)] {
					if m, _ := v.IsMember(string(id), "s"); m {
						bits[j>>3] |= 1 << (j & 7)
					}
				}
			})
			i++
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*batch), "ns/decision")
		b.ReportMetric(float64((processCPU()-c0).Nanoseconds())/float64(b.N*batch), "cpu-ns/decision")
	})
}

// mapsDict is the dictionary layout dict replaced, kept here as the
// baseline of BenchmarkUserDictionary.
type mapsDict struct {
	users map[string]uint32
	names map[uint32]string
}

// BenchmarkUserDictionary times one lookup each way over 1 M users, for the
// two maps of strings the index used to keep and for dict.
func BenchmarkUserDictionary(b *testing.B) {
	const users = 1_000_000
	ids := make([]string, users)
	for i := range ids {
		ids[i] = "user:" + strconv.Itoa(i+1)
	}
	m := mapsDict{users: map[string]uint32{}, names: map[uint32]string{}}
	dt := newDict()
	for i, id := range ids {
		m.users[id], m.names[uint32(i+1)] = uint32(i+1), id
		if err := dt.set(id, uint32(i+1)); err != nil {
			b.Fatal(err)
		}
	}
	// A shuffled order so that lookups do not walk memory in insertion order,
	// and copies of the ids as a request brings them (the maps would
	// otherwise compare a key with itself by pointer).
	r := rand.New(rand.NewPCG(3, 4))
	order := r.Perm(users)
	queries := make([]string, users)
	for i, id := range ids {
		queries[i] = strings.Clone(id)
	}
	var sink uint32
	var sinkS string
	b.Run("maps/id-to-dense", func(b *testing.B) {
		i := 0
		for b.Loop() {
			sink += m.users[queries[order[i%users]]]
			i++
		}
	})
	b.Run("dict/id-to-dense", func(b *testing.B) {
		i := 0
		for b.Loop() {
			d, _ := dt.dense(queries[order[i%users]])
			sink += d
			i++
		}
	})
	b.Run("maps/dense-to-id", func(b *testing.B) {
		i := 0
		for b.Loop() {
			sinkS = m.names[uint32(order[i%users])+1]
			i++
		}
	})
	b.Run("dict/dense-to-id", func(b *testing.B) {
		i := 0
		for b.Loop() {
			sinkS, _ = dt.name(uint32(order[i%users]) + 1)
			i++
		}
	})
	runtime.KeepAlive(sink)
	runtime.KeepAlive(sinkS)
}
