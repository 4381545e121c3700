package segmentsync_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	segmentsyncv1 "github.com/seghub/seghub/gen/seghub/segmentsync/v1"
	"github.com/seghub/seghub/pkg/app/apptest"
	"github.com/seghub/seghub/pkg/apperr"
	"github.com/seghub/seghub/pkg/config"
)

// streamReplace sends ids in chunks and returns the server's answer, also
// when the server ends the stream early (Send then reports only io.EOF).
func streamReplace(ctx context.Context, c segmentsyncv1.SegmentSyncServiceClient, sid string, ids []string, chunk int) (*segmentsyncv1.ReplaceMembersResponse, error) {
	st, err := c.ReplaceMembers(ctx)
	if err != nil {
		return nil, err
	}
	for i := 0; i < len(ids); i += chunk {
		req := &segmentsyncv1.ReplaceMembersRequest{UserIds: ids[i:min(i+chunk, len(ids))]}
		if i == 0 {
			req.SegmentId = sid
		}
		if err := st.Send(req); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return nil, err
		}
	}
	return st.CloseAndRecv()
}

func userIDs(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%06d", prefix, i)
	}
	return out
}

// TestReplaceMembersStreamLimits: a ReplaceMembers stream over its distinct
// ids or its bytes of ids is refused as a size error naming the limit, and
// nothing of it is applied.
func TestReplaceMembersStreamLimits(t *testing.T) {
	const maxIDs, maxBytes = 1000, 24000
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			e := startService(t, apptest.Options{Postgres: b.postgres, Configure: func(c *config.Config) {
				c.ReplaceMembersMaxIDs, c.ReplaceMembersMaxBytes = maxIDs, maxBytes
			}})
			ctx := apptest.Context(t, 60*time.Second)
			c := client(e, e.A.Member)
			seg, err := c.CreateSegment(ctx, &segmentsyncv1.CreateSegmentRequest{Name: "Bounded"})
			if err != nil {
				t.Fatal(err)
			}
			sid := seg.GetSegment().GetSegmentId()
			base, err := streamReplace(ctx, c, sid, userIDs("keep", maxIDs), 300) // exactly at the limit: allowed
			if err != nil || base.GetMemberCount() != maxIDs {
				t.Fatalf("replace at the limit = %v, %v", base, err)
			}

			for name, tc := range map[string]struct {
				ids  []string
				want string
			}{
				"one id over":     {userIDs("over", maxIDs+1), "at most 1000 distinct user ids (replace-members-max-ids)"},
				"bytes of ids":    {userIDs(strings.Repeat("long", 10), 600), "at most 24000 bytes of user ids (replace-members-max-bytes)"},
				"duplicate bytes": {userIDs("dup", 1)[:1:1], "at most 24000 bytes"},
			} {
				if name == "duplicate bytes" {
					// One distinct id, sent again and again: the bytes bound it.
					for len(tc.ids)*len(tc.ids[0]) <= maxBytes {
						tc.ids = append(tc.ids, tc.ids[0])
					}
				}
				_, err := streamReplace(ctx, c, sid, tc.ids, 250)
				st := status.Convert(err)
				if st.Code() != codes.InvalidArgument || !apperr.IsTooLarge(st) || !strings.Contains(st.Message(), tc.want) || !strings.Contains(st.Message(), "nothing was applied") {
					t.Errorf("%s: %v; want InvalidArgument, a size refusal naming %q", name, err, tc.want)
				}
				got, err := c.GetSegment(ctx, &segmentsyncv1.GetSegmentRequest{SegmentId: sid})
				if err != nil || got.GetSegment().GetVersion() != base.GetVersion() || got.GetSegment().GetMemberCount() != maxIDs {
					t.Errorf("%s changed the segment: %v, %v (was version %d)", name, got, err, base.GetVersion())
				}
				_, err = c.GetUser(ctx, &segmentsyncv1.GetUserRequest{UserId: tc.ids[0]})
				wantCode(t, err, codes.NotFound, "")
			}
		})
	}
}
