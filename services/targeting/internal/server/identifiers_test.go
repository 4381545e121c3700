package server

import (
	"slices"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"pgregory.net/rapid"

	targetingv1 "github.com/seghub/seghub/gen/seghub/targeting/v1"
	"github.com/seghub/seghub/pkg/grpcserver"
)

// The fast check agrees with the full one: it never passes a request the
// full check refuses (and passes the clean ones, or it would be no faster).
func TestCleanIdentifiersAgrees(t *testing.T) {
	// Printable ASCII, and the bytes and runes the full check cares about.
	pieces := []string{"a", "Z", "0", ":", " ", "é", "用", "\x00", "\x01", "\t", "\n", "\x1f", "\x7f", "\u0085", "\u009f", "\u2028", "\u2029", "\xff", "\xc3", "\xe2\x80"}
	id := rapid.Custom(func(t *rapid.T) string {
		var s string
		for _, p := range rapid.SliceOfN(rapid.SampledFrom(pieces), 0, 6).Draw(t, "pieces") {
			s += p
		}
		return s
	})
	rapid.Check(t, func(t *rapid.T) {
		var m proto.Message
		switch rapid.IntRange(0, 2).Draw(t, "kind") {
		case 0:
			m = &targetingv1.CheckMembershipRequest{SegmentId: id.Draw(t, "segment"), UserId: id.Draw(t, "user")}
		default:
			var checks []*targetingv1.MembershipCheck
			for range rapid.IntRange(0, 4).Draw(t, "checks") {
				checks = append(checks, &targetingv1.MembershipCheck{SegmentId: id.Draw(t, "segment"), UserId: id.Draw(t, "user")})
			}
			if rapid.Bool().Draw(t, "stream") {
				m = &targetingv1.BatchCheckStreamRequest{Checks: checks, PackedSegmentId: id.Draw(t, "packedSegment")}
			} else {
				m = &targetingv1.BatchCheckRequest{Checks: checks}
			}
		}
		fast, full := CleanIdentifiers(m), grpcserver.CheckIdentifiers(m) == nil
		if fast != full {
			t.Fatalf("%v: fast check says clean=%v, full check clean=%v", m, fast, full)
		}
	})
}

// CleanIdentifiers reads the fields below; a field added to one of these
// messages must be added there too (or the fast check would skip it).
func TestCleanIdentifiersKnowsEveryField(t *testing.T) {
	want := map[protoreflect.FullName][]string{
		"seghub.targeting.v1.CheckMembershipRequest": {"segment_id", "user_id"},
		"seghub.targeting.v1.BatchCheckRequest":      {"checks"},
		// packed_user_ids (bytes) is checked by the server as it splits it.
		"seghub.targeting.v1.BatchCheckStreamRequest": {"checks", "packed_segment_id", "packed_user_ids"},
		"seghub.targeting.v1.MembershipCheck":         {"segment_id", "user_id"},
	}
	for _, m := range append(LookupRequests(), &targetingv1.MembershipCheck{}) {
		d := m.ProtoReflect().Descriptor()
		var got []string
		for i := range d.Fields().Len() {
			got = append(got, string(d.Fields().Get(i).Name()))
		}
		slices.Sort(got)
		if !slices.Equal(got, want[d.FullName()]) {
			t.Errorf("%s has fields %v; CleanIdentifiers checks %v", d.FullName(), got, want[d.FullName()])
		}
	}
}
