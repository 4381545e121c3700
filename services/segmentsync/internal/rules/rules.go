// Package rules validates computed segments' rules and evaluates them for one
// user from its properties and its per-condition event aggregates (per-day
// counts, first and last times). It knows nothing of SQL or JetStream: the
// store feeds it facts, so the incremental path, the window pass and the
// preview evaluate the same way.
package rules

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strings"
	"time"

	segmentsyncv1 "github.com/seghub/seghub/gen/seghub/segmentsync/v1"
	"github.com/seghub/seghub/pkg/apperr"
)

// Limits on a rule.
const (
	MaxConditions = 50
	MaxDepth      = 6
	MaxFilters    = 10
	MaxWindowDays = 365
	MaxTimes      = 1_000_000
)

// dayMicros is one UTC day in unix microseconds.
const dayMicros = int64(24 * time.Hour / time.Microsecond)

// Day is the UTC day number (days since 1970-01-01) of a unix-microsecond time.
func Day(micros int64) int32 {
	d := micros / dayMicros
	if micros < 0 && micros%dayMicros != 0 {
		d--
	}
	return int32(d)
}

// Today is t's UTC day number.
func Today(t time.Time) int32 { return Day(t.UnixMicro()) }

// EventTime is the time an event counts at: its timestamp, or when seghub
// received it if that is earlier (a clock running ahead on the sender's side
// must not put an event into days that have not come yet).
func EventTime(ts, received int64) int64 {
	if received > 0 && received < ts {
		return received
	}
	return ts
}

// Value is a user property value (store.Prop without the dependency).
type Value struct {
	Kind byte // 's', 'n', 'b', 't'
	S    string
	N    float64
	B    bool
	T    int64 // unix microseconds
}

// DayCount is a user's number of events of one condition on one day.
type DayCount struct {
	Day int32
	N   int64
}

// Agg is a user's aggregate of one event condition.
type Agg struct {
	Days        []DayCount // ascending by day
	First, Last int64      // unix microseconds
}

// Facts is what evaluating one user needs.
type Facts struct {
	// Prop returns a user property.
	Prop func(name string) (Value, bool)
	// Agg returns the user's aggregate of a condition key; nil when the user
	// never did a matching event.
	Agg func(key string) *Agg
}

// Filter is one event property equality.
type Filter struct {
	Property string  `json:"p"`
	Kind     byte    `json:"k"`
	S        string  `json:"s,omitempty"`
	N        float64 `json:"n,omitempty"`
	B        bool    `json:"b,omitempty"`
}

// Cond is what selects the events of an event condition; conditions with the
// same source, name and filters share one key and one aggregate.
type Cond struct {
	Key    string   `json:"-"`
	Source string   `json:"src"`
	Name   string   `json:"name"`
	Where  []Filter `json:"where,omitempty"`
}

// Matches tells whether an event belongs to the condition.
func (c *Cond) Matches(source, name string, props map[string]any) bool {
	if source != c.Source || name != c.Name {
		return false
	}
	for _, f := range c.Where {
		v, ok := props[f.Property]
		if !ok {
			return false
		}
		switch f.Kind {
		case 's':
			if s, ok := v.(string); !ok || s != f.S {
				return false
			}
		case 'n':
			if n, ok := v.(float64); !ok || n != f.N {
				return false
			}
		case 'b':
			if b, ok := v.(bool); !ok || b != f.B {
				return false
			}
		}
	}
	return true
}

// ParseCond reads a condition stored by Encode.
func ParseCond(key, definition string) (*Cond, error) {
	var c Cond
	if err := json.Unmarshal([]byte(definition), &c); err != nil {
		return nil, fmt.Errorf("rules: condition %s: %w", key, err)
	}
	c.Key = key
	return &c, nil
}

// Encode is the condition's canonical definition (its key is its hash).
func (c *Cond) Encode() string {
	b, _ := json.Marshal(c)
	return string(b)
}

// Window is a sliding count window of a condition: the pass moves users
// whose buckets leave it.
type Window struct {
	Key  string
	Days int32
}

// Program is a compiled rule.
type Program struct {
	root    node
	conds   map[string]*Cond
	windows map[Window]bool
	props   bool
}

// UsesProperties tells whether the rule reads user properties (a full
// evaluation of a rule that does not need not read them).
func (p *Program) UsesProperties() bool { return p.props }

// Conds returns the program's event conditions, by key order.
func (p *Program) Conds() []*Cond {
	out := make([]*Cond, 0, len(p.conds))
	for _, c := range p.conds {
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out
}

// Windows returns the program's sliding windows.
func (p *Program) Windows() []Window {
	out := make([]Window, 0, len(p.windows))
	for w := range p.windows {
		out = append(out, w)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Key != out[j].Key {
			return out[i].Key < out[j].Key
		}
		return out[i].Days < out[j].Days
	})
	return out
}

// Eval tells whether the rule holds for a user on day today.
func (p *Program) Eval(f Facts, today int32) bool { return p.root(f, today) }

type node func(f Facts, today int32) bool

// Compile validates r (errors name the field under "rule") and compiles it.
func Compile(r *segmentsyncv1.SegmentRule) (*Program, error) {
	if r == nil {
		return nil, apperr.Invalid("rule", "is required")
	}
	c := &compiler{p: &Program{conds: map[string]*Cond{}, windows: map[Window]bool{}}}
	root, err := c.rule("rule", r, 1)
	if err != nil {
		return nil, err
	}
	c.p.root = root
	return c.p, nil
}

type compiler struct {
	p     *Program
	count int
}

func (c *compiler) rule(field string, r *segmentsyncv1.SegmentRule, depth int) (node, error) {
	if r == nil {
		return nil, apperr.Invalid(field, "is empty: set one of all, any, not, property or event")
	}
	if depth > MaxDepth {
		return nil, apperr.Invalid(field, fmt.Sprintf("rules nest at most %d deep", MaxDepth))
	}
	set := 0
	for _, b := range []bool{len(r.GetAll()) > 0, len(r.GetAny()) > 0, r.GetNot() != nil, r.GetProperty() != nil, r.GetEvent() != nil} {
		if b {
			set++
		}
	}
	if set != 1 {
		return nil, apperr.Invalid(field, fmt.Sprintf("set exactly one of all, any, not, property or event (%d set)", set))
	}
	switch {
	case len(r.GetAll()) > 0, len(r.GetAny()) > 0:
		and, list, name := true, r.GetAll(), "all"
		if len(list) == 0 {
			and, list, name = false, r.GetAny(), "any"
		}
		if len(list) > MaxConditions {
			return nil, apperr.Invalid(field+"."+name, fmt.Sprintf("holds at most %d rules", MaxConditions))
		}
		children := make([]node, len(list))
		for i, sub := range list {
			ch, err := c.rule(fmt.Sprintf("%s.%s[%d]", field, name, i), sub, depth+1)
			if err != nil {
				return nil, err
			}
			children[i] = ch
		}
		if and {
			return func(f Facts, today int32) bool {
				for _, ch := range children {
					if !ch(f, today) {
						return false
					}
				}
				return true
			}, nil
		}
		return func(f Facts, today int32) bool {
			for _, ch := range children {
				if ch(f, today) {
					return true
				}
			}
			return false
		}, nil
	case r.GetNot() != nil:
		ch, err := c.rule(field+".not", r.GetNot(), depth+1)
		if err != nil {
			return nil, err
		}
		return func(f Facts, today int32) bool { return !ch(f, today) }, nil
	case r.GetProperty() != nil:
		if err := c.counted(field); err != nil {
			return nil, err
		}
		c.p.props = true
		return property(field+".property", r.GetProperty())
	default:
		if err := c.counted(field); err != nil {
			return nil, err
		}
		return c.event(field+".event", r.GetEvent())
	}
}

func (c *compiler) counted(field string) error {
	c.count++
	if c.count > MaxConditions {
		return apperr.Invalid(field, fmt.Sprintf("a rule holds at most %d conditions", MaxConditions))
	}
	return nil
}

func checkName(field, v string, max int) error {
	if strings.TrimSpace(v) == "" {
		return apperr.Invalid(field, "is required")
	}
	if len(v) > max {
		return apperr.Invalid(field, fmt.Sprintf("must be at most %d bytes", max))
	}
	if p := apperr.TextProblem(v); p != "" {
		return apperr.Invalid(field, p)
	}
	return nil
}

func property(field string, pc *segmentsyncv1.PropertyCondition) (node, error) {
	if err := checkName(field+".property", pc.GetProperty(), 128); err != nil {
		return nil, err
	}
	name := pc.GetProperty()
	val := pc.GetValue()
	op := pc.GetOperator()
	var test func(v Value, ok bool) bool
	switch op {
	case segmentsyncv1.PropertyOperator_PROPERTY_OPERATOR_UNSPECIFIED:
		return nil, apperr.Invalid(field+".operator", "is required")
	case segmentsyncv1.PropertyOperator_PROPERTY_OPERATOR_EXISTS:
		if val != nil {
			return nil, apperr.Invalid(field+".value", "exists takes no value")
		}
		test = func(_ Value, ok bool) bool { return ok }
	default:
		want, err := value(field+".value", val)
		if err != nil {
			return nil, err
		}
		switch op {
		case segmentsyncv1.PropertyOperator_PROPERTY_OPERATOR_EQUALS:
			test = func(v Value, ok bool) bool { return ok && equal(v, want) }
		case segmentsyncv1.PropertyOperator_PROPERTY_OPERATOR_NOT_EQUALS:
			test = func(v Value, ok bool) bool { return !ok || !equal(v, want) }
		case segmentsyncv1.PropertyOperator_PROPERTY_OPERATOR_LESS_THAN, segmentsyncv1.PropertyOperator_PROPERTY_OPERATOR_GREATER_THAN:
			if want.Kind != 'n' && want.Kind != 't' {
				return nil, apperr.Invalid(field+".value", "less_than and greater_than compare with a number_value or timestamp_value")
			}
			less := op == segmentsyncv1.PropertyOperator_PROPERTY_OPERATOR_LESS_THAN
			test = func(v Value, ok bool) bool {
				if !ok || v.Kind != want.Kind {
					return false
				}
				if want.Kind == 'n' {
					return less && v.N < want.N || !less && v.N > want.N
				}
				return less && v.T < want.T || !less && v.T > want.T
			}
		case segmentsyncv1.PropertyOperator_PROPERTY_OPERATOR_CONTAINS:
			if want.Kind != 's' {
				return nil, apperr.Invalid(field+".value", "contains needs a string_value")
			}
			test = func(v Value, ok bool) bool { return ok && v.Kind == 's' && strings.Contains(v.S, want.S) }
		default:
			return nil, apperr.Invalid(field+".operator", "unknown operator")
		}
	}
	return func(f Facts, _ int32) bool {
		v, ok := f.Prop(name)
		return test(v, ok)
	}, nil
}

func equal(a, b Value) bool {
	if a.Kind != b.Kind {
		return false
	}
	switch a.Kind {
	case 's':
		return a.S == b.S
	case 'n':
		return a.N == b.N
	case 'b':
		return a.B == b.B
	case 't':
		return a.T == b.T
	}
	return false
}

func value(field string, v *segmentsyncv1.PropertyValue) (Value, error) {
	switch k := v.GetKind().(type) {
	case *segmentsyncv1.PropertyValue_StringValue:
		if len(k.StringValue) > 4096 {
			return Value{}, apperr.Invalid(field+".string_value", "must be at most 4096 bytes")
		}
		return Value{Kind: 's', S: k.StringValue}, nil
	case *segmentsyncv1.PropertyValue_NumberValue:
		if math.IsNaN(k.NumberValue) || math.IsInf(k.NumberValue, 0) {
			return Value{}, apperr.Invalid(field+".number_value", "must be finite")
		}
		return Value{Kind: 'n', N: k.NumberValue}, nil
	case *segmentsyncv1.PropertyValue_BoolValue:
		return Value{Kind: 'b', B: k.BoolValue}, nil
	case *segmentsyncv1.PropertyValue_TimestampValue:
		if err := k.TimestampValue.CheckValid(); err != nil {
			return Value{}, apperr.Invalid(field+".timestamp_value", err.Error())
		}
		return Value{Kind: 't', T: k.TimestampValue.AsTime().UnixMicro()}, nil
	case *segmentsyncv1.PropertyValue_NullValue:
		return Value{}, apperr.Invalid(field+".null_value", "a condition compares with a value, not null (use not with exists)")
	}
	return Value{}, apperr.Invalid(field, "is required for this operator")
}

func parseDate(field, s string) (int32, error) {
	t, err := time.Parse("2006-01-02", s)
	if err != nil {
		return 0, apperr.Invalid(field, "must be a date YYYY-MM-DD")
	}
	return Today(t), nil
}

func (c *compiler) event(field string, ec *segmentsyncv1.EventCondition) (node, error) {
	if err := checkName(field+".source", ec.GetSource(), 64); err != nil {
		return nil, err
	}
	if err := checkName(field+".name", ec.GetName(), 256); err != nil {
		return nil, err
	}
	if len(ec.GetWhere()) > MaxFilters {
		return nil, apperr.Invalid(field+".where", fmt.Sprintf("holds at most %d filters", MaxFilters))
	}
	cond := &Cond{Source: ec.GetSource(), Name: ec.GetName()}
	seenProps := map[string]bool{}
	for i, w := range ec.GetWhere() {
		wf := fmt.Sprintf("%s.where[%d]", field, i)
		if err := checkName(wf+".property", w.GetProperty(), 128); err != nil {
			return nil, err
		}
		if seenProps[w.GetProperty()] {
			return nil, apperr.Invalid(wf+".property", fmt.Sprintf("%q is filtered twice", w.GetProperty()))
		}
		seenProps[w.GetProperty()] = true
		f := Filter{Property: w.GetProperty()}
		switch v := w.GetValue().(type) {
		case *segmentsyncv1.EventPropertyFilter_StringValue:
			if len(v.StringValue) > 1024 {
				return nil, apperr.Invalid(wf+".string_value", "must be at most 1024 bytes")
			}
			f.Kind, f.S = 's', v.StringValue
		case *segmentsyncv1.EventPropertyFilter_NumberValue:
			if math.IsNaN(v.NumberValue) || math.IsInf(v.NumberValue, 0) {
				return nil, apperr.Invalid(wf+".number_value", "must be finite")
			}
			f.Kind, f.N = 'n', v.NumberValue
		case *segmentsyncv1.EventPropertyFilter_BoolValue:
			f.Kind, f.B = 'b', v.BoolValue
		default:
			return nil, apperr.Invalid(wf, "set one of string_value, number_value or bool_value")
		}
		cond.Where = append(cond.Where, f)
	}
	sort.Slice(cond.Where, func(i, j int) bool { return cond.Where[i].Property < cond.Where[j].Property })
	sum := sha256.Sum256([]byte(cond.Encode()))
	cond.Key = hex.EncodeToString(sum[:12])
	c.p.conds[cond.Key] = cond
	key := cond.Key

	counting := ec.GetCountOperator() != segmentsyncv1.CountOperator_COUNT_OPERATOR_UNSPECIFIED
	seen := ec.GetSeen() != segmentsyncv1.SeenOperator_SEEN_OPERATOR_UNSPECIFIED
	switch {
	case counting && seen:
		return nil, apperr.Invalid(field, "set count_operator or seen, not both")
	case !counting && !seen:
		return nil, apperr.Invalid(field+".count_operator", "set count_operator (with times) or seen (with seen_time)")
	case seen:
		if ec.GetTimes() != 0 || ec.GetWithinDays() != 0 || ec.GetStartDate() != "" || ec.GetEndDate() != "" {
			return nil, apperr.Invalid(field, "a seen condition takes no times, within_days, start_date or end_date")
		}
		if ec.GetSeenTime() == nil {
			return nil, apperr.Invalid(field+".seen_time", "is required with seen")
		}
		if err := ec.GetSeenTime().CheckValid(); err != nil {
			return nil, apperr.Invalid(field+".seen_time", err.Error())
		}
		at := ec.GetSeenTime().AsTime().UnixMicro()
		op := ec.GetSeen()
		if op < segmentsyncv1.SeenOperator_SEEN_OPERATOR_FIRST_BEFORE || op > segmentsyncv1.SeenOperator_SEEN_OPERATOR_LAST_AFTER {
			return nil, apperr.Invalid(field+".seen", "unknown seen operator")
		}
		return func(f Facts, _ int32) bool {
			a := f.Agg(key)
			if a == nil {
				return false
			}
			switch op {
			case segmentsyncv1.SeenOperator_SEEN_OPERATOR_FIRST_BEFORE:
				return a.First < at
			case segmentsyncv1.SeenOperator_SEEN_OPERATOR_FIRST_AFTER:
				return a.First >= at
			case segmentsyncv1.SeenOperator_SEEN_OPERATOR_LAST_BEFORE:
				return a.Last < at
			default:
				return a.Last >= at
			}
		}, nil
	}
	if ec.GetSeenTime() != nil {
		return nil, apperr.Invalid(field+".seen_time", "is only for seen conditions")
	}
	op := ec.GetCountOperator()
	if op > segmentsyncv1.CountOperator_COUNT_OPERATOR_EXACTLY {
		return nil, apperr.Invalid(field+".count_operator", "unknown count operator")
	}
	times := int64(ec.GetTimes())
	if times > MaxTimes {
		return nil, apperr.Invalid(field+".times", fmt.Sprintf("must be 0..%d", MaxTimes))
	}
	if op == segmentsyncv1.CountOperator_COUNT_OPERATOR_AT_LEAST && times == 0 {
		return nil, apperr.Invalid(field+".times", "at least 0 times holds for everyone: use 1 or more")
	}
	// The counted days: [lo, hi], relative to today when within > 0.
	within := int32(ec.GetWithinDays())
	lo, hi := int32(math.MinInt32), int32(math.MaxInt32)
	switch {
	case within != 0:
		if within < 1 || within > MaxWindowDays {
			return nil, apperr.Invalid(field+".within_days", fmt.Sprintf("must be 1..%d", MaxWindowDays))
		}
		if ec.GetStartDate() != "" || ec.GetEndDate() != "" {
			return nil, apperr.Invalid(field+".within_days", "set within_days or start_date and end_date, not both")
		}
		c.p.windows[Window{Key: key, Days: within}] = true
	case ec.GetStartDate() != "" || ec.GetEndDate() != "":
		var err error
		if lo, err = parseDate(field+".start_date", ec.GetStartDate()); err != nil {
			return nil, err
		}
		if hi, err = parseDate(field+".end_date", ec.GetEndDate()); err != nil {
			return nil, err
		}
		if hi < lo {
			return nil, apperr.Invalid(field+".end_date", "must not be before start_date")
		}
	}
	return func(f Facts, today int32) bool {
		from, to := lo, hi
		if within > 0 {
			from = today - within + 1
		}
		var n int64
		if a := f.Agg(key); a != nil {
			for _, d := range a.Days {
				if d.Day >= from && d.Day <= to {
					n += d.N
				}
			}
		}
		switch op {
		case segmentsyncv1.CountOperator_COUNT_OPERATOR_AT_LEAST:
			return n >= times
		case segmentsyncv1.CountOperator_COUNT_OPERATOR_AT_MOST:
			return n <= times
		default:
			return n == times
		}
	}, nil
}
