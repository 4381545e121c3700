package server

import (
	"google.golang.org/protobuf/proto"

	targetingv1 "github.com/seghub/seghub/gen/seghub/targeting/v1"
	"github.com/seghub/seghub/pkg/apperr"
)

// CleanIdentifiers is the lookups' fast identifier check for
// grpcserver.Server.SkipCleanIdentifiers: true when every id of a
// CheckMembership or batch request is free of control characters and valid
// UTF-8 (exactly what grpcserver.CheckIdentifiers asks of an id). False sends
// the request through the full check, which names the offending fields.
func CleanIdentifiers(m proto.Message) bool {
	switch r := m.(type) {
	case *targetingv1.CheckMembershipRequest:
		return cleanID(r.GetSegmentId()) && cleanID(r.GetUserId())
	case *targetingv1.BatchCheckRequest:
		return cleanChecks(r.GetChecks())
	case *targetingv1.BatchCheckStreamRequest:
		// packed_user_ids is bytes, which the full check skips: the server
		// checks those ids as it splits them.
		return cleanID(r.GetPackedSegmentId()) && cleanChecks(r.GetChecks())
	}
	return false
}

// LookupRequests are the messages CleanIdentifiers knows.
func LookupRequests() []proto.Message {
	return []proto.Message{&targetingv1.CheckMembershipRequest{}, &targetingv1.BatchCheckRequest{}, &targetingv1.BatchCheckStreamRequest{}}
}

func cleanChecks(cs []*targetingv1.MembershipCheck) bool {
	for _, c := range cs {
		if c == nil || !cleanID(c.GetUserId()) || !cleanID(c.GetSegmentId()) {
			return false
		}
	}
	return true
}

// cleanID scans bytes: printable ASCII is clean at once; anything else is
// left to apperr.IdentifierProblem.
func cleanID(s string) bool {
	for i := 0; i < len(s); i++ {
		if b := s[i]; b < 0x20 || b >= 0x7f {
			return apperr.IdentifierProblem(s) == ""
		}
	}
	return true
}
