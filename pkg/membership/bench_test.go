package membership

import (
	"math/rand/v2"
	"testing"

	"github.com/RoaringBitmap/roaring/v2"
)

// BenchmarkDiff10M diffs two 10 M-member states (dense ids of 11 M users,
// 1 % churn between them): what a sync run computes before sending.
func BenchmarkDiff10M(b *testing.B) {
	r := rand.New(rand.NewPCG(1, 2))
	delivered := roaring.New()
	delivered.AddRange(0, 10_000_000)
	current := delivered.Clone()
	for i := 0; i < 50_000; i++ {
		current.Remove(uint32(r.IntN(10_000_000)))
		current.Add(10_000_000 + uint32(r.IntN(1_000_000)))
	}
	b.ResetTimer()
	for b.Loop() {
		adds, removes := Diff(current, delivered)
		if adds.IsEmpty() || removes.IsEmpty() {
			b.Fatal("empty diff")
		}
	}
}

// BenchmarkDiff10MRandom diffs two random 10 M-member states over 20 M users.
func BenchmarkDiff10MRandom(b *testing.B) {
	r := rand.New(rand.NewPCG(3, 4))
	a, c := roaring.New(), roaring.New()
	for a.GetCardinality() < 10_000_000 {
		a.Add(uint32(r.IntN(20_000_000)))
	}
	for c.GetCardinality() < 10_000_000 {
		c.Add(uint32(r.IntN(20_000_000)))
	}
	b.ResetTimer()
	for b.Loop() {
		Diff(c, a)
	}
}
