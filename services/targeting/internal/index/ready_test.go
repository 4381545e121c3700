package index

import (
	"errors"
	"strings"
	"testing"

	segmentsyncv1 "github.com/seghub/seghub/gen/seghub/segmentsync/v1"
)

// The index is ready once its feed is open and every environment it holds
// has caught up; until then it says which step is missing.
func TestReadyOnceFeedOpenAndCaughtUp(t *testing.T) {
	ix := New()
	if err := ix.Ready(); err == nil || !strings.Contains(err.Error(), "not opened yet") {
		t.Fatalf("fresh index: %v", err)
	}
	ix.feed.set(false, errors.New("connection refused"))
	if err := ix.Ready(); err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("feed down: %v", err)
	}
	ix.feed.set(true, nil)
	for _, m := range []*segmentsyncv1.WatchMembershipResponse{snapshotStart(1), users(2, "u1")} {
		if err := ix.Apply(m); err != nil {
			t.Fatal(err)
		}
	}
	if err := ix.Ready(); err == nil || !strings.Contains(err.Error(), "env (at sequence") {
		t.Fatalf("mid-snapshot: %v", err)
	}
	if err := ix.Apply(caughtUp(3)); err != nil {
		t.Fatal(err)
	}
	if err := ix.Ready(); err != nil {
		t.Fatalf("caught up: %v", err)
	}
}
