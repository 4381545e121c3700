package gateway

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	targetingv1 "github.com/seghub/seghub/gen/seghub/targeting/v1"
)

func TestTargetingKey(t *testing.T) {
	t.Parallel()
	cases := []struct {
		body, user, code string
	}{
		{`{"context":{"targetingKey":"u1","plan":"pro"}}`, "u1", ""},
		{``, "", ofrepTargetingKeyMissing},
		{`{}`, "", ofrepTargetingKeyMissing},
		{`{"context":{}}`, "", ofrepTargetingKeyMissing},
		{`{"context":{"targetingKey":null}}`, "", ofrepTargetingKeyMissing},
		{`{"context":{"targetingKey":"  "}}`, "", ofrepTargetingKeyMissing},
		{`{"context":{"targetingKey":7}}`, "", ofrepInvalidContext},
		{`{"context":{"targetingKey":"a\u0000b"}}`, "", ofrepInvalidContext},
		{`{"context":{"targetingKey":"` + strings.Repeat("x", 257) + `"}}`, "", ofrepInvalidContext},
		{`{"context":"u1"}`, "", ofrepInvalidContext},
		{`[1]`, "", ofrepInvalidContext},
	}
	for _, c := range cases {
		user, err := targetingKey([]byte(c.body))
		switch {
		case c.code == "" && (err != nil || user != c.user):
			t.Errorf("%s: %q %v, want %q", c.body, user, err, c.user)
		case c.code != "" && (err == nil || err.ErrorCode != c.code || err.status != http.StatusBadRequest):
			t.Errorf("%s: %q %+v, want 400 %s", c.body, user, err, c.code)
		}
	}
}

func TestETagRoundTrip(t *testing.T) {
	t.Parallel()
	scope := ofrepScope("env_a", "u1")
	if scope == ofrepScope("env_b", "u1") || scope == ofrepScope("env_a", "u2") {
		t.Fatal("the scope does not tell environments or users apart")
	}
	tag := ofrepETag{index: 42, experiences: "abc.3", scope: scope, answer: "h1"}
	for _, header := range []string{tag.String(), "W/" + tag.String(), `"x", ` + tag.String(), `"1-a-b-c", ` + tag.String()} {
		got, ok := matchingETag(header, scope)
		if !ok || got != tag {
			t.Errorf("If-None-Match %s: %+v %v, want %+v", header, got, ok, tag)
		}
	}
	for _, header := range []string{"", "*", `"42-abc.3-` + scope + `"`, `"0-abc.3-` + scope + `-h1"`, `"x-abc.3-` + scope + `-h1"`, tag.String()[:10], strings.Repeat(tag.String()+",", 200)} {
		if got, ok := matchingETag(header, scope); ok {
			t.Errorf("If-None-Match %.80s matched: %+v", header, got)
		}
	}
	if _, ok := matchingETag(tag.String(), ofrepScope("env_a", "u2")); ok {
		t.Error("u1's tag matched u2's answer")
	}
}

func TestExperienceFlagReasons(t *testing.T) {
	t.Parallel()
	cases := []struct {
		x      *targetingv1.ExperienceEvaluation
		reason string
		value  bool
	}{
		{&targetingv1.ExperienceEvaluation{Enabled: true, Eligible: true, DecidedBy: "match.conditions[0]"}, "TARGETING_MATCH", true},
		{&targetingv1.ExperienceEvaluation{Enabled: true, Eligible: true, DecidedBy: "everyone"}, "STATIC", true},
		{&targetingv1.ExperienceEvaluation{Enabled: true, Eligible: false, DecidedBy: "match.conditions[1]"}, "DEFAULT", false},
		{&targetingv1.ExperienceEvaluation{Enabled: false, DecidedBy: "disabled"}, "DISABLED", false},
	}
	for _, c := range cases {
		f := experienceFlag(c.x, 0)
		if f.Reason != c.reason || f.Value != c.value || f.Metadata.DecidedBy != c.x.GetDecidedBy() {
			t.Errorf("%v: %+v, want %s %v", c.x, f, c.reason, c.value)
		}
	}
	if f := segmentFlag(&targetingv1.SegmentEvaluation{SegmentId: "seg_1", IsMember: true}, 0); f.Key != "segment:seg_1" || f.Reason != "TARGETING_MATCH" || !f.Value {
		t.Errorf("segment flag: %+v", f)
	}
}

func TestOFREPStatusErrors(t *testing.T) {
	t.Parallel()
	limited, _ := status.New(codes.ResourceExhausted, "slow down").WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(3 * time.Second)})
	cases := []struct {
		err        error
		code       int
		errorCode  string
		retryAfter string
	}{
		{status.Error(codes.Unauthenticated, "no key"), 401, "", ""},
		{status.Error(codes.PermissionDenied, "not this key"), 403, "", ""},
		{status.Error(codes.NotFound, "no such"), 404, ofrepFlagNotFound, ""},
		{status.Error(codes.InvalidArgument, "user_id: bad"), 400, ofrepInvalidContext, ""},
		{limited.Err(), 429, ofrepGeneral, "3"},
		{status.Error(codes.ResourceExhausted, "slow down"), 429, ofrepGeneral, "1"},
		{status.Error(codes.Unavailable, "loading"), 503, ofrepGeneral, "1"},
		{status.Error(codes.Internal, "internal error"), 500, ofrepGeneral, ""},
	}
	for _, c := range cases {
		e := ofrepStatusError(c.err, "k")
		if e.status != c.code || e.ErrorCode != c.errorCode || e.retryAfter != c.retryAfter {
			t.Errorf("%v: %d %q retry %q, want %d %q retry %q", c.err, e.status, e.ErrorCode, e.retryAfter, c.code, c.errorCode, c.retryAfter)
		}
	}
}
