package index

import (
	"strings"
	"testing"

	segmentsyncv1 "github.com/seghub/seghub/gen/seghub/segmentsync/v1"
)

func chunk(seq int64, c *segmentsyncv1.UserChunk) *segmentsyncv1.WatchMembershipResponse {
	return &segmentsyncv1.WatchMembershipResponse{EnvironmentId: "env", Sequence: seq, Event: &segmentsyncv1.WatchMembershipResponse_UserChunk{UserChunk: c}}
}

func plan(p string) map[string]*segmentsyncv1.PropertyValue {
	return map[string]*segmentsyncv1.PropertyValue{"plan": {Kind: &segmentsyncv1.PropertyValue_StringValue{StringValue: p}}}
}

// A packed UserChunk sets users and properties as UserBatch does: users of
// the chunk without properties hold none afterwards (a later chunk clears
// what an earlier one set); a chunk whose arrays disagree or whose properties
// name users outside it is refused and changes nothing.
func TestUserChunksApplyLikeBatches(t *testing.T) {
	t.Parallel()
	ix := New()
	for _, m := range []*segmentsyncv1.WatchMembershipResponse{
		snapshotStart(3),
		chunk(3, &segmentsyncv1.UserChunk{DenseIds: []uint32{1, 2, 3}, UserIds: []string{"ann", "bob", "cat"},
			Properties: []*segmentsyncv1.UserProperties{{DenseId: 1, Properties: plan("pro")}, {DenseId: 3, Properties: plan("free")}}}),
		segment(3, "trial", 1, 3),
		caughtUp(3),
	} {
		if err := ix.Apply(m); err != nil {
			t.Fatal(err)
		}
	}
	if got := state(ix); got != "v3 caught-up trial=ann+cat" {
		t.Fatalf("after the snapshot: %q", got)
	}
	props := func() string {
		var out []string
		ix.Read("env", func(v View) {
			for _, id := range []string{"ann", "bob", "cat", "dan", "eve"} {
				d, ok := v.Dense(id)
				if !ok {
					out = append(out, id+":-")
					continue
				}
				p, ok := v.Property(d, "plan")
				if !ok {
					out = append(out, id+":none")
					continue
				}
				out = append(out, id+":"+p.GetStringValue())
			}
		})
		return strings.Join(out, " ")
	}
	if got := props(); got != "ann:pro bob:none cat:free dan:- eve:-" {
		t.Fatalf("properties after the snapshot: %q", got)
	}
	// Live: ann loses her properties, bob gains some, dan is new.
	if err := ix.Apply(chunk(4, &segmentsyncv1.UserChunk{DenseIds: []uint32{1, 2, 4}, UserIds: []string{"ann", "bob", "dan"},
		Properties: []*segmentsyncv1.UserProperties{{DenseId: 2, Properties: plan("team")}}})); err != nil {
		t.Fatal(err)
	}
	if got := props(); got != "ann:none bob:team cat:free dan:none eve:-" {
		t.Fatalf("properties after a live chunk: %q", got)
	}
	for name, bad := range map[string]*segmentsyncv1.UserChunk{
		"arrays of different lengths": {DenseIds: []uint32{5, 6}, UserIds: []string{"eve"}},
		"properties of another user":  {DenseIds: []uint32{5}, UserIds: []string{"eve"}, Properties: []*segmentsyncv1.UserProperties{{DenseId: 9, Properties: plan("x")}}},
	} {
		if err := ix.Apply(chunk(5, bad)); err == nil || !strings.Contains(err.Error(), "user chunk") {
			t.Errorf("%s: Apply = %v, want a user chunk error", name, err)
		}
		if got := props(); got != "ann:none bob:team cat:free dan:none eve:-" {
			t.Errorf("%s changed the index: %q", name, got)
		}
	}
}
