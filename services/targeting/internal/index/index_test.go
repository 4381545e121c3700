package index

import (
	"fmt"
	"strings"
	"testing"

	"github.com/RoaringBitmap/roaring/v2"

	segmentsyncv1 "github.com/seghub/seghub/gen/seghub/segmentsync/v1"
	"github.com/seghub/seghub/pkg/membership"
)

func snapshotStart(seq int64) *segmentsyncv1.WatchMembershipResponse {
	return &segmentsyncv1.WatchMembershipResponse{EnvironmentId: "env", Sequence: seq, Event: &segmentsyncv1.WatchMembershipResponse_SnapshotStart{SnapshotStart: &segmentsyncv1.SnapshotStart{}}}
}

func caughtUp(seq int64) *segmentsyncv1.WatchMembershipResponse {
	return &segmentsyncv1.WatchMembershipResponse{EnvironmentId: "env", Sequence: seq, Event: &segmentsyncv1.WatchMembershipResponse_CaughtUp{CaughtUp: &segmentsyncv1.CaughtUp{}}}
}

func users(seq int64, names ...string) *segmentsyncv1.WatchMembershipResponse {
	b := &segmentsyncv1.UserBatch{}
	for i, n := range names {
		b.Users = append(b.Users, &segmentsyncv1.User{UserId: n, DenseId: uint32(i + 1)})
	}
	return &segmentsyncv1.WatchMembershipResponse{EnvironmentId: "env", Sequence: seq, Event: &segmentsyncv1.WatchMembershipResponse_Users{Users: b}}
}

func segment(seq int64, id string, dense ...uint32) *segmentsyncv1.WatchMembershipResponse {
	return &segmentsyncv1.WatchMembershipResponse{EnvironmentId: "env", Sequence: seq, Event: &segmentsyncv1.WatchMembershipResponse_Segment{Segment: &segmentsyncv1.SegmentState{
		Segment: &segmentsyncv1.Segment{SegmentId: id, Name: id}, Members: membership.Encode(roaring.BitmapOf(dense...))}}}
}

func change(seq int64, id string, added ...uint32) *segmentsyncv1.WatchMembershipResponse {
	return &segmentsyncv1.WatchMembershipResponse{EnvironmentId: "env", Sequence: seq, Event: &segmentsyncv1.WatchMembershipResponse_Change{Change: &segmentsyncv1.MembershipChange{
		SegmentId: id, Added: membership.Encode(roaring.BitmapOf(added...)), Removed: membership.Encode(roaring.New())}}}
}

// state describes what readers of env see: "v<version> caught-up|loading
// <segment>=<members>…".
func state(ix *Index) string {
	var out string
	ix.Read("env", func(v View) {
		word := "loading"
		if v.CaughtUp() {
			word = "caught-up"
		}
		parts := []string{fmt.Sprintf("v%d %s", v.Version(), word)}
		for _, s := range v.Segments() {
			parts = append(parts, s.ID+"="+strings.Join(v.Members(s.ID), "+"))
		}
		out = strings.Join(parts, " ")
	})
	return out
}

// A snapshot is applied whole: while one streams in (a resync after a gap, or
// segmentsync re-snapshotting an environment that has no changes yet) readers
// keep answering from the last complete state instead of being refused or
// seeing half of the new one; a fresh replica answers nothing until its first
// snapshot is complete; a stream broken mid-snapshot leaves no trace of it.
func TestSnapshotsApplyWhole(t *testing.T) {
	t.Parallel()
	ix := New()
	steps := []struct {
		apply   *segmentsyncv1.WatchMembershipResponse
		abandon bool // the stream breaks before apply
		want    string
	}{
		{apply: snapshotStart(5), want: "v0 loading"},
		{apply: users(5, "ann", "bob"), want: "v0 loading"},
		{apply: segment(5, "trial", 1), want: "v0 loading"},
		{apply: caughtUp(5), want: "v5 caught-up trial=ann"},
		{apply: change(6, "trial", 2), want: "v6 caught-up trial=ann+bob"},
		// Re-snapshot: the old state serves until the new one is complete.
		{apply: snapshotStart(8), want: "v6 caught-up trial=ann+bob"},
		{apply: users(8, "ann", "bob", "cat"), want: "v6 caught-up trial=ann+bob"},
		{apply: segment(8, "trial", 3), want: "v6 caught-up trial=ann+bob"},
		{apply: change(9, "trial", 2), want: "v6 caught-up trial=ann+bob"},
		{apply: caughtUp(9), want: "v9 caught-up trial=bob+cat"},
		// An environment with nothing in it is re-snapshotted without a gap.
		{apply: snapshotStart(9), want: "v9 caught-up trial=bob+cat"},
		// The stream breaks mid-snapshot; the resumed feed replays changes
		// on top of what readers saw, not on the abandoned half.
		{abandon: true, apply: change(10, "trial", 1), want: "v10 caught-up trial=ann+bob+cat"},
		{apply: caughtUp(10), want: "v10 caught-up trial=ann+bob+cat"},
	}
	for i, s := range steps {
		if s.abandon {
			ix.AbandonSnapshots()
		}
		if err := ix.Apply(s.apply); err != nil {
			t.Fatal(err)
		}
		if got := state(ix); got != s.want {
			t.Fatalf("step %d (%v): readers see %q, want %q", i, s.apply.GetEvent(), got, s.want)
		}
	}
	if c := ix.Cursors()["env"]; c != 10 {
		t.Fatalf("resumes after %d, want 10", c)
	}
}
