package audience

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	segmentsyncv1 "github.com/seghub/seghub/gen/seghub/segmentsync/v1"
	targetingv1 "github.com/seghub/seghub/gen/seghub/targeting/v1"
)

// fakeIndex is a tiny Reader: users by id with properties, and segments.
type fakeIndex struct {
	users    map[string]uint32
	props    map[uint32]map[string]*segmentsyncv1.PropertyValue
	segments map[string]map[string]bool
}

func (f *fakeIndex) IsMember(u, s string) (bool, bool) {
	m, ok := f.segments[s]
	return ok && m[u], ok
}
func (f *fakeIndex) Dense(u string) (uint32, bool) { d, ok := f.users[u]; return d, ok }
func (f *fakeIndex) Property(d uint32, n string) (*segmentsyncv1.PropertyValue, bool) {
	p, ok := f.props[d][n]
	return p, ok
}

func pstr(s string) *segmentsyncv1.PropertyValue {
	return &segmentsyncv1.PropertyValue{Kind: &segmentsyncv1.PropertyValue_StringValue{StringValue: s}}
}
func pnum(n float64) *segmentsyncv1.PropertyValue {
	return &segmentsyncv1.PropertyValue{Kind: &segmentsyncv1.PropertyValue_NumberValue{NumberValue: n}}
}

func inSeg(s string) *targetingv1.Condition {
	return &targetingv1.Condition{Operator: targetingv1.Operator_OPERATOR_IN_SEGMENT, SegmentId: s}
}
func notInSeg(s string) *targetingv1.Condition {
	return &targetingv1.Condition{Operator: targetingv1.Operator_OPERATOR_NOT_IN_SEGMENT, SegmentId: s}
}
func prop(name string, op targetingv1.Operator, v any) *targetingv1.Condition {
	c := &targetingv1.Condition{Operator: op, Property: name}
	switch x := v.(type) {
	case string:
		c.Value = &targetingv1.Condition_StringValue{StringValue: x}
	case float64:
		c.Value = &targetingv1.Condition_NumberValue{NumberValue: x}
	case bool:
		c.Value = &targetingv1.Condition_BoolValue{BoolValue: x}
	case time.Time:
		c.Value = &targetingv1.Condition_TimestampValue{TimestampValue: timestamppb.New(x)}
	}
	return c
}
func group(op targetingv1.Combinator, conds []*targetingv1.Condition, groups ...*targetingv1.ConditionGroup) *targetingv1.ConditionGroup {
	return &targetingv1.ConditionGroup{Combinator: op, Conditions: conds, Groups: groups}
}

const (
	AND = targetingv1.Combinator_COMBINATOR_AND
	OR  = targetingv1.Combinator_COMBINATOR_OR
)

func TestEvaluate(t *testing.T) {
	t.Parallel()
	signup := time.Date(2026, 10, 1, 0, 0, 0, 0, time.UTC)
	idx := &fakeIndex{
		users: map[string]uint32{"ann": 1, "bob": 2},
		props: map[uint32]map[string]*segmentsyncv1.PropertyValue{
			1: {"plan": pstr("trial-pro"), "seats": pnum(3), "signed_up": {Kind: &segmentsyncv1.PropertyValue_TimestampValue{TimestampValue: timestamppb.New(signup)}}, "admin": {Kind: &segmentsyncv1.PropertyValue_BoolValue{BoolValue: true}}},
			2: {"plan": pstr("enterprise"), "seats": pnum(250)},
		},
		segments: map[string]map[string]bool{"trial": {"ann": true}, "churn": {"bob": true}},
	}
	cases := []struct {
		name     string
		audience *targetingv1.Audience
		user     string
		eligible bool
		decided  string
	}{
		{"everyone", &targetingv1.Audience{Everyone: true}, "nobody", true, "everyone"},
		{"in segment", &targetingv1.Audience{Match: group(0, []*targetingv1.Condition{inSeg("trial")})}, "ann", true, "match.conditions[0]"},
		{"not in segment", &targetingv1.Audience{Match: group(0, []*targetingv1.Condition{inSeg("trial")})}, "bob", false, "match.conditions[0]"},
		{"unknown user is in no segment", &targetingv1.Audience{Match: group(0, []*targetingv1.Condition{notInSeg("trial")})}, "ghost", true, "match.conditions[0]"},
		{"AND: first false decides", &targetingv1.Audience{Match: group(AND, []*targetingv1.Condition{inSeg("trial"), prop("seats", targetingv1.Operator_OPERATOR_GREATER_THAN, 10.0)})}, "ann", false, "match.conditions[1]"},
		{"OR: first true decides", &targetingv1.Audience{Match: group(OR, []*targetingv1.Condition{inSeg("churn"), prop("plan", targetingv1.Operator_OPERATOR_CONTAINS, "trial")})}, "ann", true, "match.conditions[1]"},
		{"equals string", &targetingv1.Audience{Match: group(0, []*targetingv1.Condition{prop("plan", targetingv1.Operator_OPERATOR_EQUALS, "enterprise")})}, "bob", true, "match.conditions[0]"},
		{"equals is typed", &targetingv1.Audience{Match: group(0, []*targetingv1.Condition{prop("seats", targetingv1.Operator_OPERATOR_EQUALS, "3")})}, "ann", false, "match.conditions[0]"},
		{"not equals on missing property", &targetingv1.Audience{Match: group(0, []*targetingv1.Condition{prop("admin", targetingv1.Operator_OPERATOR_NOT_EQUALS, true)})}, "bob", true, "match.conditions[0]"},
		{"not equals on equal value", &targetingv1.Audience{Match: group(0, []*targetingv1.Condition{prop("admin", targetingv1.Operator_OPERATOR_NOT_EQUALS, true)})}, "ann", false, "match.conditions[0]"},
		{"less than number", &targetingv1.Audience{Match: group(0, []*targetingv1.Condition{prop("seats", targetingv1.Operator_OPERATOR_LESS_THAN, 5.0)})}, "ann", true, "match.conditions[0]"},
		{"greater than timestamp", &targetingv1.Audience{Match: group(0, []*targetingv1.Condition{prop("signed_up", targetingv1.Operator_OPERATOR_GREATER_THAN, signup.Add(-time.Hour))})}, "ann", true, "match.conditions[0]"},
		{"comparison with a missing property", &targetingv1.Audience{Match: group(0, []*targetingv1.Condition{prop("signed_up", targetingv1.Operator_OPERATOR_LESS_THAN, signup)})}, "bob", false, "match.conditions[0]"},
		{"exists", &targetingv1.Audience{Match: group(0, []*targetingv1.Condition{prop("admin", targetingv1.Operator_OPERATOR_EXISTS, nil)})}, "ann", true, "match.conditions[0]"},
		{"exists for unknown user", &targetingv1.Audience{Match: group(0, []*targetingv1.Condition{prop("admin", targetingv1.Operator_OPERATOR_EXISTS, nil)})}, "ghost", false, "match.conditions[0]"},
		{"nested: trial AND (seats<5 OR enterprise)", &targetingv1.Audience{Match: group(AND, []*targetingv1.Condition{inSeg("trial")}, group(OR, []*targetingv1.Condition{prop("plan", targetingv1.Operator_OPERATOR_EQUALS, "enterprise"), prop("seats", targetingv1.Operator_OPERATOR_LESS_THAN, 5.0)}))}, "ann", true, "match.groups[0].conditions[1]"},
		{"nested fails in group", &targetingv1.Audience{Match: group(OR, []*targetingv1.Condition{inSeg("churn")}, group(AND, []*targetingv1.Condition{inSeg("trial"), prop("seats", targetingv1.Operator_OPERATOR_GREATER_THAN, 100.0)}))}, "ann", false, "match.groups[0].conditions[1]"},
	}
	exists := func(s string) bool { _, ok := idx.segments[s]; return ok }
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, err := Compile(c.audience, exists)
			if err != nil {
				t.Fatal(err)
			}
			r := p.Eval(idx, c.user)
			if r.Eligible != c.eligible || r.DecidedBy != c.decided || r.Reason == "" {
				t.Fatalf("Eval(%s) = %+v, want eligible=%v decided by %s", c.user, r, c.eligible, c.decided)
			}
		})
	}
}

func TestCompileRejects(t *testing.T) {
	t.Parallel()
	exists := func(s string) bool { return s == "trial" }
	deep := group(0, []*targetingv1.Condition{inSeg("trial")})
	for i := 0; i < MaxDepth; i++ {
		deep = group(AND, nil, deep)
	}
	many := make([]*targetingv1.Condition, MaxConditions+1)
	for i := range many {
		many[i] = inSeg("trial")
	}
	cases := []struct {
		name     string
		audience *targetingv1.Audience
		mention  string
	}{
		{"missing", nil, "audience"},
		{"neither everyone nor match", &targetingv1.Audience{}, "audience.match"},
		{"both", &targetingv1.Audience{Everyone: true, Match: group(0, []*targetingv1.Condition{inSeg("trial")})}, "not both"},
		{"empty group", &targetingv1.Audience{Match: group(AND, nil)}, "at least one"},
		{"unknown segment", &targetingv1.Audience{Match: group(0, []*targetingv1.Condition{inSeg("seg_gone")})}, `audience.match.conditions[0].segment_id: unknown segment "seg_gone"`},
		{"no combinator for two", &targetingv1.Audience{Match: group(0, []*targetingv1.Condition{inSeg("trial"), inSeg("trial")})}, "combinator"},
		{"no operator", &targetingv1.Audience{Match: group(0, []*targetingv1.Condition{{SegmentId: "trial"}})}, "operator"},
		{"property without name", &targetingv1.Audience{Match: group(0, []*targetingv1.Condition{prop("", targetingv1.Operator_OPERATOR_EXISTS, nil)})}, "property"},
		{"contains a number", &targetingv1.Audience{Match: group(0, []*targetingv1.Condition{prop("plan", targetingv1.Operator_OPERATOR_CONTAINS, 1.0)})}, "string_value"},
		{"less than a string", &targetingv1.Audience{Match: group(0, []*targetingv1.Condition{prop("plan", targetingv1.Operator_OPERATOR_LESS_THAN, "x")})}, "number_value"},
		{"equals without value", &targetingv1.Audience{Match: group(0, []*targetingv1.Condition{prop("plan", targetingv1.Operator_OPERATOR_EQUALS, nil)})}, "value"},
		{"too deep", &targetingv1.Audience{Match: deep}, "nest"},
		{"too many", &targetingv1.Audience{Match: group(OR, many)}, "at most"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Compile(c.audience, exists)
			if err == nil || !strings.Contains(err.Error(), c.mention) {
				t.Fatalf("Compile = %v, want an error mentioning %q", err, c.mention)
			}
		})
	}
}

func BenchmarkEvaluate(b *testing.B) {
	idx := &fakeIndex{users: map[string]uint32{"ann": 1}, props: map[uint32]map[string]*segmentsyncv1.PropertyValue{1: {"seats": pnum(3)}}, segments: map[string]map[string]bool{"trial": {"ann": true}, "churn": {}}}
	p, err := Compile(benchAudience(), func(string) bool { return true })
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if !p.Eval(idx, "ann").Eligible {
			b.Fatal("not eligible")
		}
	}
}
