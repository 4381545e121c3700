// Package membership holds the roaring-bitmap helpers shared by segmentsync,
// targeting and the sync engine: a segment's members, or what a destination
// holds, is a bitmap of dense user ids.
package membership

import (
	"fmt"

	"github.com/RoaringBitmap/roaring/v2"
)

// Encode serialises b in roaring's portable format (run-optimised first).
func Encode(b *roaring.Bitmap) []byte {
	if b == nil {
		b = roaring.New()
	}
	b.RunOptimize()
	out, err := b.ToBytes()
	if err != nil {
		// ToBytes writes to memory; it cannot fail short of a roaring bug.
		panic(fmt.Sprintf("roaring encode: %v", err))
	}
	return out
}

// Decode parses a portable roaring bitmap; nil or empty input is the empty set.
func Decode(data []byte) (*roaring.Bitmap, error) {
	b := roaring.New()
	if len(data) == 0 {
		return b, nil
	}
	if _, err := b.FromBuffer(append([]byte(nil), data...)); err != nil {
		return nil, fmt.Errorf("decode membership bitmap: %w", err)
	}
	return b, nil
}

// Diff returns what to send to bring delivered to current: adds = current
// ANDNOT delivered, removes = delivered ANDNOT current.
func Diff(current, delivered *roaring.Bitmap) (adds, removes *roaring.Bitmap) {
	return roaring.AndNot(current, delivered), roaring.AndNot(delivered, current)
}

// Apply returns base with adds added and removes removed (removes win when
// an id is in both, as the later operation).
func Apply(base, adds, removes *roaring.Bitmap) *roaring.Bitmap {
	out := base.Clone()
	if adds != nil {
		out.Or(adds)
	}
	if removes != nil {
		out.AndNot(removes)
	}
	return out
}
