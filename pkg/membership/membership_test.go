package membership

import (
	"testing"

	"github.com/RoaringBitmap/roaring/v2"
	"pgregory.net/rapid"
)

func bitmapGen() *rapid.Generator[*roaring.Bitmap] {
	return rapid.Custom(func(t *rapid.T) *roaring.Bitmap {
		ids := rapid.SliceOf(rapid.Uint32Range(0, 5000)).Draw(t, "ids")
		return roaring.BitmapOf(ids...)
	})
}

// Sending the diff to a destination holding `delivered` leaves it holding
// exactly `current`, and the diff sends nothing twice.
func TestDiffBringsDeliveredToCurrent(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		current, delivered := bitmapGen().Draw(t, "current"), bitmapGen().Draw(t, "delivered")
		adds, removes := Diff(current, delivered)
		if got := Apply(delivered, adds, removes); !got.Equals(current) {
			t.Fatalf("apply(diff) = %v, want %v", got, current)
		}
		if roaring.And(adds, delivered).GetCardinality() != 0 {
			t.Fatal("an add the destination already holds")
		}
		if roaring.And(removes, current).GetCardinality() != 0 {
			t.Fatal("a removal of a current member")
		}
	})
}

func TestEncodeDecode(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		b := bitmapGen().Draw(t, "b")
		got, err := Decode(Encode(b))
		if err != nil || !got.Equals(b) {
			t.Fatalf("round trip = %v, %v", got, err)
		}
	})
	if b, err := Decode(nil); err != nil || !b.IsEmpty() {
		t.Fatalf("nil = %v, %v", b, err)
	}
	if _, err := Decode([]byte{1, 2, 3}); err == nil {
		t.Fatal("garbage decoded")
	}
}
