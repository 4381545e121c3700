package segmentsync_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	segmentsyncv1 "github.com/seghub/seghub/gen/seghub/segmentsync/v1"
	"github.com/seghub/seghub/pkg/app/apptest"
)

// ListSegments' name_contains searches every segment server-side, ignoring
// case, with LIKE's wildcards taken literally, and pages like the full list.
func TestListSegmentsNameContains(t *testing.T) {
	names := []string{"Trial users", "trial_expired", "Paid (annual)", "100% active", "Churn risk", "TRIAL week 2", "Paid monthly"}
	cases := []struct {
		search string
		want   []string // in list order (by name)
	}{
		{"", []string{"100% active", "Churn risk", "Paid (annual)", "Paid monthly", "TRIAL week 2", "Trial users", "trial_expired"}},
		{"trial", []string{"TRIAL week 2", "Trial users", "trial_expired"}},
		{"  Trial ", []string{"TRIAL week 2", "Trial users", "trial_expired"}},
		{"_", []string{"trial_expired"}},
		{"%", []string{"100% active"}},
		{"(annual", []string{"Paid (annual)"}},
		{"paid", []string{"Paid (annual)", "Paid monthly"}},
		{"nothing like it", nil},
	}
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			e := startService(t, apptest.Options{Postgres: b.postgres})
			ctx := apptest.Context(t, 60*time.Second)
			c := client(e, e.A.Member)
			for _, n := range names {
				if _, err := c.CreateSegment(ctx, &segmentsyncv1.CreateSegmentRequest{Name: n}); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := client(e, e.B.Member).CreateSegment(ctx, &segmentsyncv1.CreateSegmentRequest{Name: "Trial elsewhere"}); err != nil {
				t.Fatal(err)
			}
			for _, tc := range cases {
				got := pages(t, func(token string) ([]string, string, error) {
					resp, err := c.ListSegments(ctx, &segmentsyncv1.ListSegmentsRequest{NameContains: tc.search, PageSize: 2, PageToken: token})
					var out []string
					for _, s := range resp.GetSegments() {
						out = append(out, s.GetName())
					}
					return out, resp.GetNextPageToken(), err
				})
				if !slices.Equal(got, tc.want) {
					t.Errorf("name_contains %q: %q, want %q", tc.search, got, tc.want)
				}
			}
			_, err := c.ListSegments(ctx, &segmentsyncv1.ListSegmentsRequest{NameContains: strings.Repeat("x", 201)})
			wantCode(t, err, codes.InvalidArgument, "200")
			_, err = c.ListSegments(ctx, &segmentsyncv1.ListSegmentsRequest{NameContains: "a\x00b"})
			wantCode(t, err, codes.InvalidArgument, "control")
		})
	}
}
