package index

import (
	"math/rand/v2"
	"runtime"
	"strconv"
	"testing"

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
