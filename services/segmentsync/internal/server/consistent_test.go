package server

import (
	"context"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	segmentsyncv1 "github.com/seghub/seghub/gen/seghub/segmentsync/v1"
	"github.com/seghub/seghub/pkg/auth"
	pkgstore "github.com/seghub/seghub/pkg/store"
	"github.com/seghub/seghub/pkg/store/storetest"
	"github.com/seghub/seghub/services/segmentsync/internal/store"
)

// A computed segment's first evaluation commits its members and its LIVE
// state together. GetSegment and ListSegments read the segment and its
// state in two reads; the evaluation is made to land between them, and the
// answer must still not be LIVE with the count from before it (the bench
// once read member_count 0 in COMPUTE_STATE_LIVE).
func TestSegmentNotLiveWithACountFromBeforeItsEvaluation(t *testing.T) {
	for name, open := range map[string]func(testing.TB) *pkgstore.DB{"sqlite": storetest.SQLite, "postgres": storetest.Postgres} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ctx := auth.WithPrincipal(context.Background(), auth.Principal{EnvironmentID: "env_a"})
			st, err := store.Open(ctx, open(t), nil)
			if err != nil {
				t.Fatal(err)
			}
			s := New(st, nil, nil, nil, StreamLimits{})
			var rule segmentsyncv1.SegmentRule
			if err := protojson.Unmarshal([]byte(`{"property":{"property":"plan","operator":"PROPERTY_OPERATOR_EQUALS","value":{"string_value":"pro"}}}`), &rule); err != nil {
				t.Fatal(err)
			}
			if _, _, err := st.UpsertUsers(ctx, "env_a", []store.UserUpsert{{ID: "ann", Props: map[string]*store.Prop{"plan": {Kind: store.PropString, S: "pro"}}}}); err != nil {
				t.Fatal(err)
			}
			read := map[string]func(id string) (*segmentsyncv1.Segment, error){
				"GetSegment": func(id string) (*segmentsyncv1.Segment, error) {
					r, err := s.GetSegment(ctx, &segmentsyncv1.GetSegmentRequest{SegmentId: id})
					return r.GetSegment(), err
				},
				"ListSegments": func(id string) (*segmentsyncv1.Segment, error) {
					r, err := s.ListSegments(ctx, &segmentsyncv1.ListSegmentsRequest{})
					for _, sg := range r.GetSegments() {
						if sg.GetSegmentId() == id {
							return sg, err
						}
					}
					return nil, err
				},
			}
			for rpc, read := range read {
				created, err := st.CreateComputedSegment(ctx, "env_a", "Pro "+rpc, "", store.Public, &rule)
				if err != nil {
					t.Fatal(err)
				}
				evaluated := 0
				s.betweenReads = func() {
					if evaluated == 0 {
						if evaluated, err = st.InitComputedSegments(ctx, time.Now()); err != nil {
							t.Fatal(err)
						}
					}
				}
				sg, err := read(created.ID)
				s.betweenReads = nil
				if err != nil || sg == nil {
					t.Fatalf("%s: %v %v", rpc, sg, err)
				}
				if evaluated != 1 {
					t.Fatalf("%s: the first evaluation did not run between the reads (%d segments made live)", rpc, evaluated)
				}
				if sg.GetComputeState() == segmentsyncv1.ComputeState_COMPUTE_STATE_LIVE && sg.GetMemberCount() != 1 {
					t.Errorf("%s: LIVE with member_count %d, from before the first evaluation (want 1)", rpc, sg.GetMemberCount())
				}
			}
		})
	}
}
