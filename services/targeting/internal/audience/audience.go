// Package audience validates and compiles experience audiences (everyone, or
// AND/OR groups of segment and user-property conditions) into closures that
// evaluate against the membership index without allocation on the hot path.
//
// A hand-written evaluator rather than CEL: audiences are a small fixed
// grammar, and compiled closures answer 2.5-3x faster than the same audience
// compiled to CEL, with the deciding condition's path for free (see
// BenchmarkEvaluateVsCEL).
package audience

import (
	"fmt"
	"strings"

	segmentsyncv1 "github.com/seghub/seghub/gen/seghub/segmentsync/v1"
	targetingv1 "github.com/seghub/seghub/gen/seghub/targeting/v1"
	"github.com/seghub/seghub/pkg/apperr"
)

// Limits on an audience.
const (
	MaxConditions = 100
	MaxDepth      = 8
)

// Reader is what evaluation needs from the index.
type Reader interface {
	IsMember(userID, segmentID string) (member, known bool)
	Dense(userID string) (uint32, bool)
	Property(dense uint32, name string) (*segmentsyncv1.PropertyValue, bool)
}

// Result is an evaluation's answer.
type Result struct {
	Eligible  bool
	DecidedBy string
	Reason    string
}

type user struct {
	id    string
	dense uint32
	known bool
	r     Reader
}

type node func(u *user) Result

// Program is a compiled audience.
type Program struct {
	everyone bool
	root     node
}

// Eval evaluates the audience for a user.
func (p *Program) Eval(r Reader, userID string) Result {
	if p.everyone {
		return Result{Eligible: true, DecidedBy: "everyone", Reason: "the audience is everyone"}
	}
	u := &user{id: userID, r: r}
	u.dense, u.known = r.Dense(userID)
	return p.root(u)
}

// Compile validates a and compiles it. segmentExists tells whether a segment
// id names a segment of the environment.
func Compile(a *targetingv1.Audience, segmentExists func(string) bool) (*Program, error) {
	if a == nil {
		return nil, apperr.Invalid("audience", "is required: set everyone or match")
	}
	if a.GetEveryone() {
		if a.GetMatch() != nil {
			return nil, apperr.Invalid("audience", "set either everyone or match, not both")
		}
		return &Program{everyone: true}, nil
	}
	if a.GetMatch() == nil {
		return nil, apperr.Invalid("audience.match", "is required unless everyone is set")
	}
	c := &compiler{segmentExists: segmentExists}
	root, err := c.group("audience.match", "match", a.GetMatch(), 1)
	if err != nil {
		return nil, err
	}
	return &Program{root: root}, nil
}

type compiler struct {
	segmentExists func(string) bool
	count         int
}

func (c *compiler) group(field, path string, g *targetingv1.ConditionGroup, depth int) (node, error) {
	if depth > MaxDepth {
		return nil, apperr.Invalid(field, fmt.Sprintf("groups nest at most %d deep", MaxDepth))
	}
	n := len(g.GetConditions()) + len(g.GetGroups())
	if n == 0 {
		return nil, apperr.Invalid(field, "a group needs at least one condition or group")
	}
	and := true
	switch g.GetCombinator() {
	case targetingv1.Combinator_COMBINATOR_OR:
		and = false
	case targetingv1.Combinator_COMBINATOR_AND:
	case targetingv1.Combinator_COMBINATOR_UNSPECIFIED:
		if n > 1 {
			return nil, apperr.Invalid(field+".combinator", "must be COMBINATOR_AND or COMBINATOR_OR when a group has more than one member")
		}
	default:
		return nil, apperr.Invalid(field+".combinator", "unknown combinator")
	}
	children := make([]node, 0, n)
	for i, cond := range g.GetConditions() {
		ch, err := c.condition(fmt.Sprintf("%s.conditions[%d]", field, i), fmt.Sprintf("%s.conditions[%d]", path, i), cond)
		if err != nil {
			return nil, err
		}
		children = append(children, ch)
	}
	for i, sub := range g.GetGroups() {
		ch, err := c.group(fmt.Sprintf("%s.groups[%d]", field, i), fmt.Sprintf("%s.groups[%d]", path, i), sub, depth+1)
		if err != nil {
			return nil, err
		}
		children = append(children, ch)
	}
	if and {
		return func(u *user) Result {
			var last Result
			for _, ch := range children {
				last = ch(u)
				if !last.Eligible {
					return last
				}
			}
			return last
		}, nil
	}
	return func(u *user) Result {
		var last Result
		for _, ch := range children {
			last = ch(u)
			if last.Eligible {
				return last
			}
		}
		return last
	}, nil
}

func (c *compiler) condition(field, path string, cond *targetingv1.Condition) (node, error) {
	c.count++
	if c.count > MaxConditions {
		return nil, apperr.Invalid(field, fmt.Sprintf("an audience holds at most %d conditions", MaxConditions))
	}
	op := cond.GetOperator()
	switch op {
	case targetingv1.Operator_OPERATOR_IN_SEGMENT, targetingv1.Operator_OPERATOR_NOT_IN_SEGMENT:
		seg := cond.GetSegmentId()
		if strings.TrimSpace(seg) == "" {
			return nil, apperr.Invalid(field+".segment_id", "segment conditions name a segment")
		}
		if !c.segmentExists(seg) {
			return nil, apperr.Invalid(field+".segment_id", fmt.Sprintf("unknown segment %q", seg))
		}
		if cond.GetValue() != nil || cond.GetProperty() != "" {
			return nil, apperr.Invalid(field, "segment conditions take no property or value")
		}
		in := op == targetingv1.Operator_OPERATOR_IN_SEGMENT
		yes := Result{Eligible: true, DecidedBy: path}
		no := Result{Eligible: false, DecidedBy: path}
		if in {
			yes.Reason, no.Reason = "user is in segment "+seg, "user is not in segment "+seg
		} else {
			yes.Reason, no.Reason = "user is not in segment "+seg, "user is in segment "+seg
		}
		return func(u *user) Result {
			m, _ := u.r.IsMember(u.id, seg)
			if m == in {
				return yes
			}
			return no
		}, nil
	case targetingv1.Operator_OPERATOR_UNSPECIFIED:
		return nil, apperr.Invalid(field+".operator", "is required")
	}
	prop := cond.GetProperty()
	if strings.TrimSpace(prop) == "" {
		return nil, apperr.Invalid(field+".property", "property conditions name a user property")
	}
	if cond.GetSegmentId() != "" {
		return nil, apperr.Invalid(field+".segment_id", "property conditions take no segment")
	}
	test, err := propertyTest(field, op, cond)
	if err != nil {
		return nil, err
	}
	yes := Result{Eligible: true, DecidedBy: path, Reason: fmt.Sprintf("%s %s holds", prop, opWord(op))}
	no := Result{Eligible: false, DecidedBy: path, Reason: fmt.Sprintf("%s %s does not hold", prop, opWord(op))}
	return func(u *user) Result {
		var v *segmentsyncv1.PropertyValue
		ok := false
		if u.known {
			v, ok = u.r.Property(u.dense, prop)
		}
		if test(v, ok) {
			return yes
		}
		return no
	}, nil
}

func opWord(op targetingv1.Operator) string {
	return strings.ToLower(strings.TrimPrefix(op.String(), "OPERATOR_"))
}

// propertyTest builds the comparison of one property condition.
func propertyTest(field string, op targetingv1.Operator, cond *targetingv1.Condition) (func(*segmentsyncv1.PropertyValue, bool) bool, error) {
	switch op {
	case targetingv1.Operator_OPERATOR_EXISTS:
		if cond.GetValue() != nil {
			return nil, apperr.Invalid(field, "exists takes no value")
		}
		return func(_ *segmentsyncv1.PropertyValue, ok bool) bool { return ok }, nil
	case targetingv1.Operator_OPERATOR_EQUALS, targetingv1.Operator_OPERATOR_NOT_EQUALS:
		if cond.GetValue() == nil {
			return nil, apperr.Invalid(field, "equals and not_equals need a value")
		}
		eq := equals(cond)
		if op == targetingv1.Operator_OPERATOR_EQUALS {
			return func(v *segmentsyncv1.PropertyValue, ok bool) bool { return ok && eq(v) }, nil
		}
		// A missing property is not equal to anything.
		return func(v *segmentsyncv1.PropertyValue, ok bool) bool { return !ok || !eq(v) }, nil
	case targetingv1.Operator_OPERATOR_LESS_THAN, targetingv1.Operator_OPERATOR_GREATER_THAN:
		less := op == targetingv1.Operator_OPERATOR_LESS_THAN
		switch val := cond.GetValue().(type) {
		case *targetingv1.Condition_NumberValue:
			want := val.NumberValue
			return func(v *segmentsyncv1.PropertyValue, ok bool) bool {
				n, isNum := v.GetKind().(*segmentsyncv1.PropertyValue_NumberValue)
				if !ok || !isNum {
					return false
				}
				if less {
					return n.NumberValue < want
				}
				return n.NumberValue > want
			}, nil
		case *targetingv1.Condition_TimestampValue:
			if err := val.TimestampValue.CheckValid(); err != nil {
				return nil, apperr.Invalid(field+".timestamp_value", err.Error())
			}
			want := val.TimestampValue.AsTime()
			return func(v *segmentsyncv1.PropertyValue, ok bool) bool {
				t, isTime := v.GetKind().(*segmentsyncv1.PropertyValue_TimestampValue)
				if !ok || !isTime {
					return false
				}
				got := t.TimestampValue.AsTime()
				if less {
					return got.Before(want)
				}
				return got.After(want)
			}, nil
		}
		return nil, apperr.Invalid(field, "less_than and greater_than compare with a number_value or timestamp_value")
	case targetingv1.Operator_OPERATOR_CONTAINS:
		s, isStr := cond.GetValue().(*targetingv1.Condition_StringValue)
		if !isStr {
			return nil, apperr.Invalid(field, "contains needs a string_value")
		}
		want := s.StringValue
		return func(v *segmentsyncv1.PropertyValue, ok bool) bool {
			str, isStr := v.GetKind().(*segmentsyncv1.PropertyValue_StringValue)
			return ok && isStr && strings.Contains(str.StringValue, want)
		}, nil
	}
	return nil, apperr.Invalid(field+".operator", "unknown operator")
}

func equals(cond *targetingv1.Condition) func(*segmentsyncv1.PropertyValue) bool {
	switch val := cond.GetValue().(type) {
	case *targetingv1.Condition_StringValue:
		return func(v *segmentsyncv1.PropertyValue) bool {
			s, ok := v.GetKind().(*segmentsyncv1.PropertyValue_StringValue)
			return ok && s.StringValue == val.StringValue
		}
	case *targetingv1.Condition_NumberValue:
		return func(v *segmentsyncv1.PropertyValue) bool {
			n, ok := v.GetKind().(*segmentsyncv1.PropertyValue_NumberValue)
			return ok && n.NumberValue == val.NumberValue
		}
	case *targetingv1.Condition_BoolValue:
		return func(v *segmentsyncv1.PropertyValue) bool {
			b, ok := v.GetKind().(*segmentsyncv1.PropertyValue_BoolValue)
			return ok && b.BoolValue == val.BoolValue
		}
	case *targetingv1.Condition_TimestampValue:
		want := val.TimestampValue.AsTime()
		return func(v *segmentsyncv1.PropertyValue) bool {
			t, ok := v.GetKind().(*segmentsyncv1.PropertyValue_TimestampValue)
			return ok && t.TimestampValue.AsTime().Equal(want)
		}
	}
	return func(*segmentsyncv1.PropertyValue) bool { return false }
}
